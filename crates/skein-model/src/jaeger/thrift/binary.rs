//! Thrift binary protocol: big-endian fixed-width integers, i32-length-prefixed binaries,
//! `type:u8 id:i16` field headers.

use super::{check_count, take, MessageHeader, MessageType, ProtocolReader, ProtocolWriter, Result, TType};

const VERSION_1: u32 = 0x8001_0000;
const VERSION_MASK: u32 = 0xffff_0000;

fn ttype(b: u8) -> Option<TType> {
    Some(match b {
        2 => TType::Bool,
        3 => TType::Byte,
        4 => TType::Double,
        6 => TType::I16,
        8 => TType::I32,
        10 => TType::I64,
        11 => TType::Binary,
        12 => TType::Struct,
        13 => TType::Map,
        14 => TType::Set,
        15 => TType::List,
        _ => return None,
    })
}

fn type_byte(t: TType) -> u8 {
    match t {
        TType::Bool => 2,
        TType::Byte => 3,
        TType::Double => 4,
        TType::I16 => 6,
        TType::I32 => 8,
        TType::I64 => 10,
        TType::Binary => 11,
        TType::Struct => 12,
        TType::Map => 13,
        TType::Set => 14,
        TType::List => 15,
    }
}

pub struct BinaryReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> BinaryReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        BinaryReader { buf, pos: 0 }
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(take(self.buf, &mut self.pos, N, what)?.try_into().expect("N bytes"))
    }

    fn element_type(&mut self) -> Result<TType> {
        let at = self.pos;
        let b = self.bytes::<1>("element type")?[0];
        ttype(b).ok_or_else(|| super::ThriftError::new(format!("unknown element type {b}"), at))
    }
}

impl<'a> ProtocolReader<'a> for BinaryReader<'a> {
    fn offset(&self) -> usize {
        self.pos
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn read_message_begin(&mut self) -> Result<MessageHeader> {
        let at = self.pos;
        let first = self.read_i32()?;
        let (name, message_type) = if first < 0 {
            // Strict: version word with the message type in its low byte.
            let word = first as u32;
            if word & VERSION_MASK != VERSION_1 {
                return Err(super::ThriftError::new(
                    format!("bad thrift binary version {:#x}", word & VERSION_MASK),
                    at,
                ));
            }
            (self.read_string()?, (word & 0xff) as u8)
        } else {
            // Old non-strict form: the name's length first, then the type byte.
            let n = check_count(first as i64, self.remaining(), at, "message name")?;
            let name = take(self.buf, &mut self.pos, n, "message name")?;
            let name = String::from_utf8(name.to_vec()).map_err(|_| self.error("message name is not UTF-8"))?;
            (name, self.bytes::<1>("message type")?[0])
        };
        let message_type = MessageType::from_u8(message_type)
            .ok_or_else(|| super::ThriftError::new(format!("unknown message type {message_type}"), at))?;
        let seq_id = self.read_i32()?;
        Ok(MessageHeader {
            name,
            message_type,
            seq_id,
        })
    }

    fn read_struct_begin(&mut self) -> Result<()> {
        Ok(())
    }

    fn read_struct_end(&mut self) {}

    fn read_field_begin(&mut self) -> Result<Option<(TType, i16)>> {
        let at = self.pos;
        let b = self.bytes::<1>("field header")?[0];
        if b == 0 {
            return Ok(None);
        }
        let t = ttype(b).ok_or_else(|| super::ThriftError::new(format!("unknown field type {b}"), at))?;
        let id = self.read_i16()?;
        Ok(Some((t, id)))
    }

    fn read_bool(&mut self) -> Result<bool> {
        Ok(self.bytes::<1>("bool")?[0] != 0)
    }

    fn read_byte(&mut self) -> Result<i8> {
        Ok(self.bytes::<1>("byte")?[0] as i8)
    }

    fn read_i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.bytes("i16")?))
    }

    fn read_i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.bytes("i32")?))
    }

    fn read_i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.bytes("i64")?))
    }

    fn read_double(&mut self) -> Result<f64> {
        Ok(f64::from_bits(u64::from_be_bytes(self.bytes("double")?)))
    }

    fn read_binary(&mut self) -> Result<&'a [u8]> {
        let at = self.pos;
        let len = self.read_i32()?;
        if len < 0 {
            return Err(super::ThriftError::new(format!("negative string length {len}"), at));
        }
        take(self.buf, &mut self.pos, len as usize, "string")
    }

    fn read_list_begin(&mut self) -> Result<(TType, usize)> {
        let at = self.pos;
        let t = self.element_type()?;
        let n = self.read_i32()?;
        Ok((t, check_count(n as i64, self.remaining(), at, "list")?))
    }

    fn read_map_begin(&mut self) -> Result<(TType, TType, usize)> {
        let at = self.pos;
        let k = self.element_type()?;
        let v = self.element_type()?;
        let n = self.read_i32()?;
        Ok((k, v, check_count(n as i64, self.remaining(), at, "map")?))
    }
}

#[derive(Default)]
pub struct BinaryWriter {
    buf: Vec<u8>,
}

impl BinaryWriter {
    pub fn new() -> Self {
        Self::default()
    }
}

impl ProtocolWriter for BinaryWriter {
    fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    fn write_message_begin(&mut self, name: &str, message_type: MessageType, seq_id: i32) {
        self.write_i32((VERSION_1 | message_type as u32) as i32);
        self.write_binary(name.as_bytes());
        self.write_i32(seq_id);
    }

    fn write_struct_begin(&mut self) {}

    fn write_struct_end(&mut self) {
        self.buf.push(0);
    }

    fn write_field_begin(&mut self, ty: TType, id: i16) {
        self.buf.push(type_byte(ty));
        self.buf.extend_from_slice(&id.to_be_bytes());
    }

    fn write_bool(&mut self, v: bool) {
        self.buf.push(v as u8);
    }

    fn write_i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    fn write_i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    fn write_double(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_bits().to_be_bytes());
    }

    fn write_binary(&mut self, v: &[u8]) {
        self.write_i32(v.len() as i32);
        self.buf.extend_from_slice(v);
    }

    fn write_list_begin(&mut self, elem: TType, len: usize) {
        self.buf.push(type_byte(elem));
        self.write_i32(len as i32);
    }
}
