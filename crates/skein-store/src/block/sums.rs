//! Checksums of a block's two Parquet files: a CRC-32C for every 4 KiB, kept in the block's
//! `sums` file and checked on every read. Parquet pages may carry a CRC, but parquet-rs (60)
//! does not write one, and a byte flipped inside a page that still decodes was served as
//! stored and copied on by merges. Reads come in whole chunks (a range is widened to the chunk
//! boundaries around it, ≤ 8 KiB more), so every byte a query uses has been checked.

use std::ops::Range;
use std::sync::Arc;

/// Bytes per checksum: about a Parquet page of this store's smaller columns, so widening a
/// page read to whole chunks costs little.
pub const CHUNK: u64 = 4096;
const MAGIC: &[u8; 4] = b"SKS1";

/// The checksums of one file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileSums {
    pub len: u64,
    pub crcs: Vec<u32>,
}

/// Checksums of a file being written, chunk by chunk as its bytes go by.
#[derive(Debug, Default)]
pub struct SumsWriter {
    sums: FileSums,
    /// CRC and length of the chunk being filled.
    open: (u32, u64),
}

impl SumsWriter {
    pub fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = ((CHUNK - self.open.1) as usize).min(bytes.len());
            self.open.0 = crc32c::crc32c_append(self.open.0, &bytes[..take]);
            self.open.1 += take as u64;
            self.sums.len += take as u64;
            bytes = &bytes[take..];
            if self.open.1 == CHUNK {
                self.sums.crcs.push(self.open.0);
                self.open = (0, 0);
            }
        }
    }

    pub fn finish(mut self) -> FileSums {
        if self.open.1 > 0 {
            self.sums.crcs.push(self.open.0);
        }
        self.sums
    }
}

impl FileSums {
    pub fn of(bytes: &[u8]) -> FileSums {
        let mut w = SumsWriter::default();
        w.update(bytes);
        w.finish()
    }

    /// The whole chunks around `range`, within the file.
    pub fn widened(&self, range: &Range<u64>) -> Range<u64> {
        let end = range.end.div_ceil(CHUNK).saturating_mul(CHUNK).min(self.len);
        range.start / CHUNK * CHUNK..end.max(range.end)
    }

    /// Checks `bytes`, read from the file at `at` (a chunk boundary, as `widened` gives),
    /// chunk by chunk. A read past what the sums cover (a file longer than written) fails.
    pub fn check(&self, at: u64, bytes: &[u8]) -> Result<(), String> {
        if !at.is_multiple_of(CHUNK) {
            return Err(format!("a checked read must start on a chunk boundary, not at {at}"));
        }
        for (i, chunk) in bytes.chunks(CHUNK as usize).enumerate() {
            let index = (at / CHUNK) as usize + i;
            let whole = (chunk.len() as u64 == CHUNK) || (index as u64 * CHUNK + chunk.len() as u64 == self.len);
            let Some(&want) = self.crcs.get(index).filter(|_| whole) else {
                return Err(format!(
                    "bytes {}..{} are not what the block's checksums cover ({} bytes)",
                    index as u64 * CHUNK,
                    index as u64 * CHUNK + chunk.len() as u64,
                    self.len
                ));
            };
            if crc32c::crc32c(chunk) != want {
                return Err(format!(
                    "checksum mismatch in bytes {}..{}: the file changed after it was written",
                    index as u64 * CHUNK,
                    index as u64 * CHUNK + chunk.len() as u64
                ));
            }
        }
        Ok(())
    }
}

/// The `sums` file: the data file's checksums, then the summary file's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BlockSums {
    pub data: Arc<FileSums>,
    pub summaries: Arc<FileSums>,
}

impl BlockSums {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 4 * (self.data.crcs.len() + self.summaries.crcs.len()) + 24);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(CHUNK as u32).to_le_bytes());
        for f in [&*self.data, &*self.summaries] {
            out.extend_from_slice(&f.len.to_le_bytes());
            out.extend_from_slice(&(f.crcs.len() as u32).to_le_bytes());
            for crc in &f.crcs {
                out.extend_from_slice(&crc.to_le_bytes());
            }
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<BlockSums> {
        let mut rest = bytes.strip_prefix(MAGIC)?;
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, tail) = rest.split_at_checked(n)?;
            rest = tail;
            Some(head)
        };
        if u32::from_le_bytes(take(4)?.try_into().ok()?) as u64 != CHUNK {
            return None;
        }
        let mut file = || -> Option<FileSums> {
            let len = u64::from_le_bytes(take(8)?.try_into().ok()?);
            let n = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
            if n as u64 != len.div_ceil(CHUNK) {
                return None;
            }
            let crcs = take(n.checked_mul(4)?)?
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            Some(FileSums { len, crcs })
        };
        let sums = BlockSums {
            data: Arc::new(file()?),
            summaries: Arc::new(file()?),
        };
        rest.is_empty().then_some(sums)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_sums_equal_whole_ones_and_catch_a_flipped_byte() {
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut w = SumsWriter::default();
        for piece in bytes.chunks(777) {
            w.update(piece);
        }
        let sums = w.finish();
        assert_eq!(sums, FileSums::of(&bytes));
        assert_eq!((sums.len, sums.crcs.len()), (10_000, 3));

        let range = 5_000..5_100;
        let wide = sums.widened(&range);
        assert_eq!(wide, 4096..8192);
        assert_eq!(
            sums.check(wide.start, &bytes[wide.start as usize..wide.end as usize]),
            Ok(())
        );
        // The last, short chunk.
        let tail = sums.widened(&(9_990..10_000));
        assert_eq!(tail, 8192..10_000);
        assert_eq!(sums.check(tail.start, &bytes[8192..]), Ok(()));
        let mut flipped = bytes.clone();
        flipped[5_050] ^= 0x10;
        let err = sums.check(4096, &flipped[4096..8192]).unwrap_err();
        assert!(err.contains("checksum mismatch in bytes 4096..8192"), "{err}");
        // A file that grew after it was written.
        assert!(sums.check(8192, &[0u8; 4096]).is_err());
    }

    #[test]
    fn the_sums_file_round_trips_and_refuses_damage() {
        let sums = BlockSums {
            data: Arc::new(FileSums::of(&[1u8; 9000])),
            summaries: Arc::new(FileSums::of(&[2u8; 100])),
        };
        let bytes = sums.to_bytes();
        assert_eq!(BlockSums::from_bytes(&bytes), Some(sums));
        assert_eq!(BlockSums::from_bytes(&bytes[..bytes.len() - 1]), None);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(BlockSums::from_bytes(&longer), None);
        assert_eq!(BlockSums::from_bytes(b"nope"), None);
    }
}
