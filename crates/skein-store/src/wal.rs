//! Write-ahead log: append-only segment files of length-prefixed, CRC32C-checked records.
//!
//! Record layout: `len: u32 LE | crc32c(payload): u32 LE | payload`. The payload is an OTLP
//! `ExportTraceServiceRequest` in protobuf — the WAL reuses the wire codec instead of a format
//! of its own.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::{pending, StoreError};

pub const HEADER_LEN: usize = 8;
/// A record larger than this is treated as corruption on replay (requests are capped far below).
pub const MAX_RECORD: u32 = 1 << 30;

pub fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016}.wal"))
}

/// Sequence numbers of the segments in `dir`, oldest first.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| StoreError::io("listing WAL segments", dir, e))? {
        let entry = entry.map_err(|e| StoreError::io("listing WAL segments", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(seq) = name.strip_suffix(".wal").and_then(|s| s.parse::<u64>().ok()) {
            // Something else named like a segment (a directory) is no segment of ours.
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                out.push(seq);
            } else {
                tracing::warn!(path = %entry.path().display(), "ignoring a WAL entry that is not a file");
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// A record's frame: the length and CRC-32C of its payload, which is `parts` joined (a record
/// can be a prefix and a client's own bytes, written side by side without joining them).
pub fn record_header(parts: &[&[u8]]) -> [u8; HEADER_LEN] {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let crc = parts.iter().fold(0, |crc, p| crc32c::crc32c_append(crc, p));
    let mut h = [0; HEADER_LEN];
    h[..4].copy_from_slice(&(len as u32).to_le_bytes());
    h[4..].copy_from_slice(&crc.to_le_bytes());
    h
}

pub fn encode_record(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&record_header(&[payload]));
    out.extend_from_slice(payload);
}

/// The segment being appended to.
pub struct Segment {
    pub seq: u64,
    file: File,
    pub len: u64,
    /// Length right after the segment was opened (and a pending snapshot written into it).
    pub base_len: u64,
    path: PathBuf,
    /// A failed append left bytes past `len` that could not be cut off yet.
    damaged: bool,
}

impl Segment {
    pub fn create(dir: &Path, seq: u64) -> Result<Segment, StoreError> {
        let path = segment_path(dir, seq);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| StoreError::io("creating WAL segment", &path, e))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        // Make the new file's name durable too.
        sync_dir(dir)?;
        Ok(Segment {
            seq,
            file,
            len,
            base_len: len,
            path,
            damaged: false,
        })
    }

    /// Appends already-framed records and makes them durable with one fdatasync.
    pub fn append_durable(&mut self, framed: &[u8]) -> Result<(), StoreError> {
        self.append_durable_vectored(&mut [IoSlice::new(framed)]).map(|_| ())
    }

    /// Like `append_durable`, for records given as a run of slices (each frame, then its
    /// payload's parts), written with vectored writes instead of being copied into one buffer
    /// first. Returns the bytes written.
    ///
    /// A failed append (a full disk, an I/O error) is cut off the segment again: replay stops
    /// at the first damaged record, so bytes left behind would hide every record acknowledged
    /// after them. While that cut fails, appends are refused.
    pub fn append_durable_vectored(&mut self, slices: &mut [IoSlice<'_>]) -> Result<u64, StoreError> {
        if self.damaged {
            self.cut_to_len()?;
        }
        match self.write_and_sync(slices) {
            Ok(total) => {
                self.len += total;
                Ok(total)
            }
            Err(e) => {
                if let Err(cut) = self.cut_to_len() {
                    tracing::error!(error = %cut, "cannot cut a failed WAL append off; appends are refused until it can");
                }
                Err(e)
            }
        }
    }

    /// Truncates the file back to `len`, what was made durable and acknowledged.
    fn cut_to_len(&mut self) -> Result<(), StoreError> {
        self.damaged = true;
        self.file
            .set_len(self.len)
            .and_then(|_| self.file.sync_data())
            .map_err(|e| StoreError::io("cutting a failed append off the WAL", &self.path, e))?;
        self.damaged = false;
        Ok(())
    }

    fn write_and_sync(&mut self, mut slices: &mut [IoSlice<'_>]) -> Result<u64, StoreError> {
        // At most this many slices per call (Linux's IOV_MAX).
        const MAX_SLICES: usize = 1024;
        let total: u64 = slices.iter().map(|s| s.len() as u64).sum();
        while !slices.is_empty() {
            let upto = slices.len().min(MAX_SLICES);
            match self.file.write_vectored(&slices[..upto]) {
                Ok(0) => {
                    let e = io::Error::new(io::ErrorKind::WriteZero, "wrote nothing");
                    return Err(StoreError::io("writing WAL", &self.path, e));
                }
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(StoreError::io("writing WAL", &self.path, e)),
            }
        }
        self.file
            .sync_data()
            .map_err(|e| StoreError::io("syncing WAL", &self.path, e))?;
        Ok(total)
    }
}

pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("syncing directory", dir, e))
}

/// What replaying one segment found.
#[derive(Debug, Default)]
pub struct Replay {
    pub records: Vec<Vec<u8>>,
    /// Bytes cut off the end because the last record was torn (a crash mid-append).
    pub truncated_bytes: u64,
    /// Damaged stretches inside the segment, as (offset, bytes): intact records follow each,
    /// so they are not a torn tail but damage on disk. Skipped; the records after them kept.
    pub damaged: Vec<(u64, u64)>,
}

/// The segment's payload at `pos` if an intact record starts there, and where it ends.
/// An empty record counts as damage: none is ever written, and zeroed space parses as one.
fn record_at(data: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let header = data.get(pos..pos + HEADER_LEN)?;
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    if len == 0 || len > MAX_RECORD {
        return None;
    }
    let start = pos + HEADER_LEN;
    let payload = data.get(start..start + len as usize)?;
    (crc32c::crc32c(payload) == crc).then_some((payload, start + len as usize))
}

/// The first intact record after damage at `from`. Only offsets whose payload starts like one
/// of ours (an OTLP request's first field, or our own record mark and kind) are checked, which
/// keeps the CRC work to about the segment's size.
fn next_intact_record(data: &[u8], from: usize) -> Option<usize> {
    (from..data.len().saturating_sub(HEADER_LEN)).find(|&p| {
        let looks_like_ours = match data.get(p + HEADER_LEN..p + HEADER_LEN + 2) {
            Some([0x0a, _]) => true,
            Some([pending::RECORD_MARK, kind]) => {
                [pending::PENDING, pending::DECISIONS, pending::SNAPSHOT].contains(kind)
            }
            _ => false,
        };
        looks_like_ours && record_at(data, p).is_some()
    })
}

/// Reads every intact record of the newest segment, never fatal.
///
/// A torn tail (nothing intact after the first damaged record: the crash came mid-append, so
/// nothing in it was acknowledged) is truncated. Damage with intact records after it — a disk
/// that lost or flipped bytes of acknowledged records — is skipped and the records after it
/// are kept, not cut off with the tail.
pub fn replay_segment(path: &Path) -> Result<Replay, StoreError> {
    replay_segment_at(path, true)
}

/// Like [`replay_segment`]; for a segment that is not the newest (`newest` false), a damaged
/// tail is damage like any other, not a torn append: appends only ever went to the newest
/// segment, so bytes missing from an older one were acknowledged. It is reported in
/// `damaged`, and the segment is left as it is.
pub fn replay_segment_at(path: &Path, newest: bool) -> Result<Replay, StoreError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| StoreError::io("opening WAL segment", path, e))?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)
        .map_err(|e| StoreError::io("reading WAL segment", path, e))?;
    let mut replay = Replay::default();
    let mut pos = 0usize;
    while pos < data.len() {
        if let Some((payload, end)) = record_at(&data, pos) {
            replay.records.push(payload.to_vec());
            pos = end;
            continue;
        }
        let Some(next) = next_intact_record(&data, pos + 1) else {
            break;
        };
        replay.damaged.push((pos as u64, (next - pos) as u64));
        pos = next;
    }
    if pos < data.len() && !newest {
        replay.damaged.push((pos as u64, (data.len() - pos) as u64));
    } else if pos < data.len() {
        replay.truncated_bytes = (data.len() - pos) as u64;
        file.set_len(pos as u64)
            .and_then(|_| file.seek(SeekFrom::End(0)).map(|_| ()))
            .and_then(|_| file.sync_all())
            .map_err(|e| StoreError::io("truncating torn WAL tail", path, e))?;
    }
    Ok(replay)
}

/// Keeps a copy of a segment that replay found damaged, beside it (`<segment>.damaged`, which
/// replay ignores): the segment itself is deleted once its spans are in a block. A restart
/// before then finds the copy made (replay never changes what lies before a torn tail).
pub fn keep_damaged_copy(path: &Path) -> io::Result<PathBuf> {
    let mut copy = path.as_os_str().to_owned();
    copy.push(".damaged");
    let copy = PathBuf::from(copy);
    let same_length = |a: &Path, b: &Path| Ok::<_, io::Error>(fs::metadata(a)?.len() == fs::metadata(b)?.len());
    if !same_length(path, &copy).unwrap_or(false) {
        fs::copy(path, &copy)?;
    }
    Ok(copy)
}

pub fn remove_segment(dir: &Path, seq: u64) -> io::Result<()> {
    match fs::remove_file(segment_path(dir, seq)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the newest segment was being appended to: a cut-off end of an older one lost
    /// acknowledged records, so it is damage, reported and left in place for the copy.
    /// Segment 1 in `dir` with the records "first" and "second"; returns it and their frames.
    fn two_records(dir: &Path) -> (Segment, Vec<u8>) {
        let mut seg = Segment::create(dir, 1).unwrap();
        let mut framed = Vec::new();
        encode_record(b"first", &mut framed);
        encode_record(b"second", &mut framed);
        seg.append_durable(&framed).unwrap();
        (seg, framed)
    }

    #[test]
    fn a_cut_off_older_segment_is_damage_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (_, framed) = two_records(dir.path());
        let path = segment_path(dir.path(), 1);
        let cut = framed.len() as u64 - 3;
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let r = replay_segment_at(&path, false).unwrap();
        assert_eq!(r.records, vec![b"first".to_vec()]);
        assert_eq!((r.truncated_bytes, r.damaged), (0, vec![(13, cut - 13)]));
        assert_eq!(fs::metadata(&path).unwrap().len(), cut, "left as it is");
        // A directory named like a segment is not one.
        fs::create_dir(segment_path(dir.path(), 7)).unwrap();
        assert_eq!(list_segments(dir.path()).unwrap(), vec![1]);
    }

    #[test]
    fn torn_tail_is_truncated_and_intact_records_survive() {
        let dir = tempfile::tempdir().unwrap();
        let (mut seg, framed) = two_records(dir.path());
        // A torn third record: header promises 100 bytes, only 3 arrive.
        let mut torn = Vec::new();
        torn.extend_from_slice(&100u32.to_le_bytes());
        torn.extend_from_slice(&0u32.to_le_bytes());
        torn.extend_from_slice(b"abc");
        seg.append_durable(&torn).unwrap();
        let path = segment_path(dir.path(), 1);
        let r = replay_segment(&path).unwrap();
        assert_eq!(r.records, vec![b"first".to_vec(), b"second".to_vec()]);
        assert_eq!(r.truncated_bytes, 11);
        assert_eq!(fs::metadata(&path).unwrap().len(), framed.len() as u64);
        // A flipped bit in the second record's payload stops replay there.
        let mut data = fs::read(&path).unwrap();
        let last = data.len() - 1;
        data[last] ^= 1;
        fs::write(&path, &data).unwrap();
        let r = replay_segment(&path).unwrap();
        assert_eq!(r.records, vec![b"first".to_vec()]);
    }

    /// Payloads shaped like the records replay looks for after damage: an OTLP request's first
    /// field, or our own record mark and kind.
    fn payloads() -> Vec<Vec<u8>> {
        let otlp = |i: u8| [&[0x0a, 40][..], &[i; 40]].concat();
        vec![
            otlp(1),
            otlp(2),
            vec![crate::pending::RECORD_MARK, 2, 7, 7, 7],
            otlp(4),
            otlp(5),
        ]
    }

    fn segment_of(payloads: &[Vec<u8>]) -> (tempfile::TempDir, PathBuf, Vec<usize>) {
        let dir = tempfile::tempdir().unwrap();
        let mut framed = Vec::new();
        let mut offsets = Vec::new();
        for p in payloads {
            offsets.push(framed.len());
            encode_record(p, &mut framed);
        }
        let path = segment_path(dir.path(), 1);
        fs::write(&path, &framed).unwrap();
        (dir, path, offsets)
    }

    /// Damage with intact records after it is not a torn tail: only the damaged record is
    /// lost, whether a payload byte, a CRC or a length went bad, and the file is not cut.
    #[test]
    fn damage_inside_a_segment_loses_only_the_damaged_record() {
        let all = payloads();
        let without_second: Vec<Vec<u8>> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, p)| p.clone())
            .collect();
        let framed_len = HEADER_LEN + all[1].len();
        type Damage = fn(&mut [u8], usize);
        let damages: [(&str, Damage); 5] = [
            ("payload byte", |d, at| d[at + HEADER_LEN + 20] ^= 0x10),
            ("crc", |d, at| d[at + 5] ^= 1),
            ("length too long for the file", |d, at| d[at + 3] = 0x7f),
            ("length pointing into the next record", |d, at| d[at] += 9),
            ("zeroed", |d, at| d[at..at + 30].fill(0)),
        ];
        for (what, damage) in damages {
            let (_dir, path, offsets) = segment_of(&all);
            let mut data = fs::read(&path).unwrap();
            damage(&mut data, offsets[1]);
            fs::write(&path, &data).unwrap();
            let r = replay_segment(&path).unwrap();
            assert_eq!(r.records, without_second, "{what}");
            assert_eq!(r.damaged, vec![(offsets[1] as u64, framed_len as u64)], "{what}");
            assert_eq!(r.truncated_bytes, 0, "{what}");
            assert_eq!(fs::read(&path).unwrap(), data, "{what}: the segment is left as it was");
        }
    }

    /// Damage, then a torn tail: the damage is skipped, the tail cut off.
    #[test]
    fn damage_and_a_torn_tail_in_one_segment() {
        let all = payloads();
        let (_dir, path, offsets) = segment_of(&all);
        let mut data = fs::read(&path).unwrap();
        data[offsets[2] + HEADER_LEN + 3] ^= 0xff;
        let whole = data.len();
        data.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 0x0a, 9, 9]);
        data.extend_from_slice(&[0; 4096]);
        fs::write(&path, &data).unwrap();
        let r = replay_segment(&path).unwrap();
        assert_eq!(r.records, [&all[..2], &all[3..]].concat());
        assert_eq!(r.damaged, vec![(offsets[2] as u64, (offsets[3] - offsets[2]) as u64)]);
        assert_eq!(r.truncated_bytes, (data.len() - whole) as u64);
        assert_eq!(fs::metadata(&path).unwrap().len(), whole as u64);
    }

    /// A tail of zeroes (space a crash left allocated but unwritten) is a torn tail, not a run
    /// of empty records.
    #[test]
    fn a_zeroed_tail_is_torn() {
        let all = payloads();
        let (_dir, path, _) = segment_of(&all);
        let whole = fs::metadata(&path).unwrap().len();
        let mut data = fs::read(&path).unwrap();
        data.extend_from_slice(&[0; 8192]);
        fs::write(&path, &data).unwrap();
        let r = replay_segment(&path).unwrap();
        assert_eq!(r.records, all);
        assert!(r.damaged.is_empty());
        assert_eq!(r.truncated_bytes, 8192);
        assert_eq!(fs::metadata(&path).unwrap().len(), whole);
    }

    /// Records written as slices (frame, prefix, payload), more than one `writev` takes, come
    /// back whole and in order; a prefixed record is the same on disk as its joined payload.
    #[test]
    fn vectored_appends_write_every_record_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 1).unwrap();
        let payloads: Vec<Vec<u8>> = (0..1500u32).map(|i| format!("span batch {i}").into_bytes()).collect();
        let prefix: &[u8] = &[0, 1];
        let parts: Vec<[&[u8]; 2]> = payloads.iter().map(|p| [prefix, p.as_slice()]).collect();
        let headers: Vec<[u8; HEADER_LEN]> = parts.iter().map(|p| record_header(p)).collect();
        let mut slices: Vec<IoSlice<'_>> = Vec::new();
        for (h, p) in headers.iter().zip(&parts) {
            slices.push(IoSlice::new(h));
            slices.extend(p.iter().map(|p| IoSlice::new(p)));
        }
        assert!(slices.len() > 1024);
        let written = seg.append_durable_vectored(&mut slices).unwrap();
        let path = segment_path(dir.path(), 1);
        assert_eq!(fs::metadata(&path).unwrap().len(), written);
        assert_eq!(seg.len, written);
        let r = replay_segment(&path).unwrap();
        let joined: Vec<Vec<u8>> = payloads.iter().map(|p| [prefix, p].concat()).collect();
        assert_eq!(r.records, joined);
        assert_eq!(r.truncated_bytes, 0);
        let mut framed = Vec::new();
        encode_record(&joined[0], &mut framed);
        assert_eq!(&fs::read(&path).unwrap()[..framed.len()], framed.as_slice());
    }
}
