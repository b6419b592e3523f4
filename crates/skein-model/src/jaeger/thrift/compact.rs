//! Thrift compact protocol: zigzag varints, field ids as deltas packed with the type into one
//! byte, bool field values folded into the field header.

use super::MAX_DEPTH;
use super::{
    check_count, take, MessageHeader, MessageType, ProtocolReader, ProtocolWriter, Result, TType, ThriftError,
};

const PROTOCOL_ID: u8 = 0x82;
const VERSION: u8 = 1;
const VERSION_MASK: u8 = 0x1f;

const TYPE_BOOL_TRUE: u8 = 1;
const TYPE_BOOL_FALSE: u8 = 2;

fn ttype(b: u8) -> Option<TType> {
    Some(match b {
        TYPE_BOOL_TRUE | TYPE_BOOL_FALSE => TType::Bool,
        3 => TType::Byte,
        4 => TType::I16,
        5 => TType::I32,
        6 => TType::I64,
        7 => TType::Double,
        8 => TType::Binary,
        9 => TType::List,
        10 => TType::Set,
        11 => TType::Map,
        12 => TType::Struct,
        _ => return None,
    })
}

fn type_nibble(t: TType) -> u8 {
    match t {
        TType::Bool => TYPE_BOOL_TRUE,
        TType::Byte => 3,
        TType::I16 => 4,
        TType::I32 => 5,
        TType::I64 => 6,
        TType::Double => 7,
        TType::Binary => 8,
        TType::List => 9,
        TType::Set => 10,
        TType::Map => 11,
        TType::Struct => 12,
    }
}

fn zigzag_decode(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn zigzag_encode(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub struct CompactReader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Field ids are deltas from the previous field of the same struct.
    last_field_id: i16,
    outer_field_ids: Vec<i16>,
    /// A bool field's value travels in its header.
    pending_bool: Option<bool>,
}

impl<'a> CompactReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        CompactReader {
            buf,
            pos: 0,
            last_field_id: 0,
            outer_field_ids: Vec::new(),
            pending_bool: None,
        }
    }

    fn byte(&mut self, what: &str) -> Result<u8> {
        Ok(take(self.buf, &mut self.pos, 1, what)?[0])
    }

    /// An unsigned LEB128 varint of at most `max_bytes` bytes.
    fn varint(&mut self, max_bytes: usize, what: &str) -> Result<u64> {
        let at = self.pos;
        let mut out = 0u64;
        for i in 0..max_bytes {
            let b = self.byte(what)?;
            out |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err(ThriftError::new(
            format!("{what} varint longer than {max_bytes} bytes"),
            at,
        ))
    }

    fn element_type(&mut self, nibble: u8) -> Result<TType> {
        ttype(nibble).ok_or_else(|| self.error(format!("unknown element type {nibble}")))
    }
}

impl<'a> ProtocolReader<'a> for CompactReader<'a> {
    fn offset(&self) -> usize {
        self.pos
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn read_message_begin(&mut self) -> Result<MessageHeader> {
        let at = self.pos;
        let id = self.byte("protocol id")?;
        if id != PROTOCOL_ID {
            return Err(ThriftError::new(
                format!("not thrift compact: protocol id {id:#x}, want {PROTOCOL_ID:#x}"),
                at,
            ));
        }
        let vt = self.byte("version")?;
        if vt & VERSION_MASK != VERSION {
            return Err(ThriftError::new(
                format!("bad compact version {}", vt & VERSION_MASK),
                at,
            ));
        }
        let message_type = MessageType::from_u8(vt >> 5)
            .ok_or_else(|| ThriftError::new(format!("unknown message type {}", vt >> 5), at))?;
        let seq_id = self.varint(5, "sequence id")? as u32 as i32;
        let name = self.read_string()?;
        Ok(MessageHeader {
            name,
            message_type,
            seq_id,
        })
    }

    fn read_struct_begin(&mut self) -> Result<()> {
        if self.outer_field_ids.len() >= MAX_DEPTH {
            return Err(self.error(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        self.outer_field_ids.push(self.last_field_id);
        self.last_field_id = 0;
        Ok(())
    }

    fn read_struct_end(&mut self) {
        self.last_field_id = self.outer_field_ids.pop().unwrap_or(0);
    }

    fn read_field_begin(&mut self) -> Result<Option<(TType, i16)>> {
        let at = self.pos;
        let header = self.byte("field header")?;
        if header == 0 {
            return Ok(None);
        }
        let nibble = header & 0x0f;
        let t = ttype(nibble).ok_or_else(|| ThriftError::new(format!("unknown field type {nibble}"), at))?;
        let delta = header >> 4;
        let id = if delta == 0 {
            self.read_i16()?
        } else {
            self.last_field_id.wrapping_add(i16::from(delta))
        };
        self.last_field_id = id;
        if t == TType::Bool {
            self.pending_bool = Some(nibble == TYPE_BOOL_TRUE);
        }
        Ok(Some((t, id)))
    }

    fn read_bool(&mut self) -> Result<bool> {
        match self.pending_bool.take() {
            Some(v) => Ok(v),
            // Inside a list or map a bool is a byte of its own.
            None => Ok(self.byte("bool")? == TYPE_BOOL_TRUE),
        }
    }

    fn read_byte(&mut self) -> Result<i8> {
        Ok(self.byte("byte")? as i8)
    }

    fn read_i16(&mut self) -> Result<i16> {
        let at = self.pos;
        let v = zigzag_decode(self.varint(3, "i16")?);
        i16::try_from(v).map_err(|_| ThriftError::new(format!("i16 out of range: {v}"), at))
    }

    fn read_i32(&mut self) -> Result<i32> {
        let at = self.pos;
        let v = zigzag_decode(self.varint(5, "i32")?);
        i32::try_from(v).map_err(|_| ThriftError::new(format!("i32 out of range: {v}"), at))
    }

    fn read_i64(&mut self) -> Result<i64> {
        Ok(zigzag_decode(self.varint(10, "i64")?))
    }

    fn read_double(&mut self) -> Result<f64> {
        let b: [u8; 8] = take(self.buf, &mut self.pos, 8, "double")?.try_into().expect("8 bytes");
        Ok(f64::from_bits(u64::from_le_bytes(b)))
    }

    fn read_binary(&mut self) -> Result<&'a [u8]> {
        let at = self.pos;
        let len = self.varint(5, "string length")?;
        if len > self.remaining() as u64 {
            return Err(ThriftError::new(
                format!("truncated: string of {len} bytes, {} left", self.remaining()),
                at,
            ));
        }
        take(self.buf, &mut self.pos, len as usize, "string")
    }

    fn read_list_begin(&mut self) -> Result<(TType, usize)> {
        let at = self.pos;
        let header = self.byte("list header")?;
        let t = self.element_type(header & 0x0f)?;
        let size = match header >> 4 {
            15 => self.varint(5, "list size")?,
            n => u64::from(n),
        };
        Ok((t, check_count(size as i64, self.remaining(), at, "list")?))
    }

    fn read_map_begin(&mut self) -> Result<(TType, TType, usize)> {
        let at = self.pos;
        let size = self.varint(5, "map size")?;
        if size == 0 {
            return Ok((TType::Binary, TType::Binary, 0));
        }
        let kv = self.byte("map types")?;
        let k = self.element_type(kv >> 4)?;
        let v = self.element_type(kv & 0x0f)?;
        Ok((k, v, check_count(size as i64, self.remaining(), at, "map")?))
    }
}

#[derive(Default)]
pub struct CompactWriter {
    buf: Vec<u8>,
    last_field_id: i16,
    outer_field_ids: Vec<i16>,
    /// A bool field's header waits for its value.
    pending_bool_field: Option<i16>,
}

impl CompactWriter {
    pub fn new() -> Self {
        Self::default()
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn field_header(&mut self, nibble: u8, id: i16) {
        let delta = i32::from(id) - i32::from(self.last_field_id);
        if (1..=15).contains(&delta) {
            self.buf.push(((delta as u8) << 4) | nibble);
        } else {
            self.buf.push(nibble);
            self.varint(zigzag_encode(i64::from(id)));
        }
        self.last_field_id = id;
    }
}

impl ProtocolWriter for CompactWriter {
    fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    fn write_message_begin(&mut self, name: &str, message_type: MessageType, seq_id: i32) {
        self.buf.push(PROTOCOL_ID);
        self.buf.push(VERSION | ((message_type as u8) << 5));
        self.varint(u64::from(seq_id as u32));
        self.write_binary(name.as_bytes());
    }

    fn write_struct_begin(&mut self) {
        self.outer_field_ids.push(self.last_field_id);
        self.last_field_id = 0;
    }

    fn write_struct_end(&mut self) {
        self.buf.push(0);
        self.last_field_id = self.outer_field_ids.pop().unwrap_or(0);
    }

    fn write_field_begin(&mut self, ty: TType, id: i16) {
        if ty == TType::Bool {
            self.pending_bool_field = Some(id);
        } else {
            self.field_header(type_nibble(ty), id);
        }
    }

    fn write_bool(&mut self, v: bool) {
        let nibble = if v { TYPE_BOOL_TRUE } else { TYPE_BOOL_FALSE };
        match self.pending_bool_field.take() {
            Some(id) => self.field_header(nibble, id),
            None => self.buf.push(nibble),
        }
    }

    fn write_i32(&mut self, v: i32) {
        self.varint(zigzag_encode(i64::from(v)));
    }

    fn write_i64(&mut self, v: i64) {
        self.varint(zigzag_encode(v));
    }

    fn write_double(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_bits().to_le_bytes());
    }

    fn write_binary(&mut self, v: &[u8]) {
        self.varint(v.len() as u64);
        self.buf.extend_from_slice(v);
    }

    fn write_list_begin(&mut self, elem: TType, len: usize) {
        let nibble = type_nibble(elem);
        if len < 15 {
            self.buf.push(((len as u8) << 4) | nibble);
        } else {
            self.buf.push(0xf0 | nibble);
            self.varint(len as u64);
        }
    }
}
