//! Apache Thrift, the two encodings Jaeger uses: the binary protocol (collector HTTP on 14268,
//! agent UDP on 6832) and the compact protocol (agent UDP on 6831). Our own small reader and
//! writer, with the Jaeger structs of jaeger.thrift and agent.thrift on top (`jaeger.rs`).
//!
//! Reading is strict about lengths: a declared length or element count larger than the bytes
//! left is an error before anything is allocated, and nesting is bounded, so hostile input
//! cannot make us allocate gigabytes or recurse without end.

mod binary;
mod compact;
mod jaeger;

pub use binary::{BinaryReader, BinaryWriter};
pub use compact::{CompactReader, CompactWriter};
pub use jaeger::{
    decode_batch, decode_emit_batch, encode_batch, encode_emit_batch, ClientStats, ThriftBatch, EMIT_BATCH,
};

/// Which thrift encoding a body or datagram uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Binary,
    Compact,
}

/// Thrift value types (the binary protocol's numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TType {
    Bool,
    Byte,
    Double,
    I16,
    I32,
    I64,
    Binary,
    Struct,
    Map,
    Set,
    List,
}

/// Thrift message types of the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Call = 1,
    Reply = 2,
    Exception = 3,
    Oneway = 4,
}

impl MessageType {
    fn from_u8(v: u8) -> Option<MessageType> {
        Some(match v {
            1 => MessageType::Call,
            2 => MessageType::Reply,
            3 => MessageType::Exception,
            4 => MessageType::Oneway,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageHeader {
    pub name: String,
    pub message_type: MessageType,
    pub seq_id: i32,
}

/// Why thrift input could not be read: what was wrong, where (field path), and at which byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message} (at byte {offset})", path_prefix(.path))]
pub struct ThriftError {
    pub path: String,
    pub message: String,
    pub offset: usize,
}

fn path_prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}

impl ThriftError {
    pub fn new(message: impl Into<String>, offset: usize) -> Self {
        ThriftError {
            path: String::new(),
            message: message.into(),
            offset,
        }
    }

    /// Prefixes the field path with `outer` (e.g. `Batch.spans[2]` then `.tags[0]`).
    pub fn within(mut self, outer: &str) -> Self {
        self.path = if self.path.is_empty() {
            outer.to_string()
        } else if self.path.starts_with('[') || self.path.starts_with('.') {
            format!("{outer}{}", self.path)
        } else {
            format!("{outer}.{}", self.path)
        };
        self
    }
}

pub type Result<T> = std::result::Result<T, ThriftError>;

/// Deepest nesting of structs/containers we follow (Jaeger's own structs nest four deep).
pub const MAX_DEPTH: usize = 32;

/// The operations the Jaeger structs need from a thrift protocol.
pub trait ProtocolReader<'a> {
    fn offset(&self) -> usize;
    fn remaining(&self) -> usize;
    fn read_message_begin(&mut self) -> Result<MessageHeader>;
    fn read_struct_begin(&mut self) -> Result<()>;
    fn read_struct_end(&mut self);
    /// The next field's type and id; `None` at the struct's end (STOP).
    fn read_field_begin(&mut self) -> Result<Option<(TType, i16)>>;
    fn read_bool(&mut self) -> Result<bool>;
    fn read_byte(&mut self) -> Result<i8>;
    fn read_i16(&mut self) -> Result<i16>;
    fn read_i32(&mut self) -> Result<i32>;
    fn read_i64(&mut self) -> Result<i64>;
    fn read_double(&mut self) -> Result<f64>;
    fn read_binary(&mut self) -> Result<&'a [u8]>;
    /// Element type and count of a list or set, the count already checked against the input.
    fn read_list_begin(&mut self) -> Result<(TType, usize)>;
    fn read_map_begin(&mut self) -> Result<(TType, TType, usize)>;

    fn error(&self, message: impl Into<String>) -> ThriftError {
        ThriftError::new(message, self.offset())
    }

    fn read_string(&mut self) -> Result<String> {
        let at = self.offset();
        let bytes = self.read_binary()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ThriftError::new("string is not valid UTF-8", at))
    }

    /// Skips a value of type `ty`, however deeply nested (up to [`MAX_DEPTH`]).
    fn skip(&mut self, ty: TType, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(self.error(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        match ty {
            TType::Bool => drop(self.read_bool()?),
            TType::Byte => drop(self.read_byte()?),
            TType::I16 => drop(self.read_i16()?),
            TType::I32 => drop(self.read_i32()?),
            TType::I64 => drop(self.read_i64()?),
            TType::Double => drop(self.read_double()?),
            TType::Binary => drop(self.read_binary()?),
            TType::Struct => {
                self.read_struct_begin()?;
                while let Some((t, _)) = self.read_field_begin()? {
                    self.skip(t, depth + 1)?;
                }
                self.read_struct_end();
            }
            TType::List | TType::Set => {
                let (t, n) = self.read_list_begin()?;
                for _ in 0..n {
                    self.skip(t, depth + 1)?;
                }
            }
            TType::Map => {
                let (k, v, n) = self.read_map_begin()?;
                for _ in 0..n {
                    self.skip(k, depth + 1)?;
                    self.skip(v, depth + 1)?;
                }
            }
        }
        Ok(())
    }
}

/// The operations the Jaeger structs need to write a thrift protocol.
pub trait ProtocolWriter {
    fn into_bytes(self) -> Vec<u8>;
    fn write_message_begin(&mut self, name: &str, message_type: MessageType, seq_id: i32);
    fn write_struct_begin(&mut self);
    /// Writes the STOP field and closes the struct.
    fn write_struct_end(&mut self);
    fn write_field_begin(&mut self, ty: TType, id: i16);
    fn write_bool(&mut self, v: bool);
    fn write_i32(&mut self, v: i32);
    fn write_i64(&mut self, v: i64);
    fn write_double(&mut self, v: f64);
    fn write_binary(&mut self, v: &[u8]);
    fn write_list_begin(&mut self, elem: TType, len: usize);
}

/// Shared by both readers: takes `n` bytes or fails naming how many were missing.
pub(crate) fn take<'a>(buf: &'a [u8], pos: &mut usize, n: usize, what: &str) -> Result<&'a [u8]> {
    let left = buf.len() - *pos;
    if n > left {
        return Err(ThriftError::new(
            format!("truncated: {what} needs {n} bytes, {left} left"),
            *pos,
        ));
    }
    let out = &buf[*pos..*pos + n];
    *pos += n;
    Ok(out)
}

/// Checks a declared element count against the bytes left: every element takes at least one
/// byte in both encodings, so a larger count can only be a lie.
pub(crate) fn check_count(count: i64, left: usize, at: usize, what: &str) -> Result<usize> {
    if count < 0 {
        return Err(ThriftError::new(format!("negative {what} size {count}"), at));
    }
    let count = count as u64;
    if count > left as u64 {
        return Err(ThriftError::new(
            format!("{what} claims {count} elements but only {left} bytes are left"),
            at,
        ));
    }
    Ok(count as usize)
}

#[cfg(test)]
mod tests;
