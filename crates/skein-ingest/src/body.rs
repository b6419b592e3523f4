//! Request bodies shared by the HTTP receivers: content encodings with a size cap that holds
//! after decompression too (a 1 KiB gzip bomb must not become 1 GiB in memory).

use std::io::Read;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds the {limit}-byte limit ({key})")]
    TooLarge { limit: usize, key: &'static str },
    #[error("unsupported Content-Encoding {0:?} (supported: gzip, deflate, zstd, identity)")]
    UnsupportedEncoding(String),
    #[error("could not decompress {encoding} body: {source}")]
    Corrupt {
        encoding: &'static str,
        source: std::io::Error,
    },
}

/// Decodes `Content-Encoding` into plain bytes, refusing anything larger than `limit` (the
/// configuration key `limit_key`, named in the error).
pub fn decode(
    encoding: Option<&str>,
    body: bytes::Bytes,
    limit: usize,
    limit_key: &'static str,
) -> Result<bytes::Bytes, BodyError> {
    let enc = encoding.map(|e| e.trim().to_ascii_lowercase()).unwrap_or_default();
    let (name, reader): (&'static str, Box<dyn Read + '_>) = match enc.as_str() {
        "" | "identity" => {
            if body.len() > limit {
                return Err(BodyError::TooLarge { limit, key: limit_key });
            }
            return Ok(body);
        }
        "gzip" | "x-gzip" => ("gzip", Box::new(flate2::read::GzDecoder::new(&body[..]))),
        "deflate" => ("deflate", Box::new(flate2::read::ZlibDecoder::new(&body[..]))),
        "zstd" => (
            "zstd",
            Box::new(
                zstd::stream::read::Decoder::new(&body[..]).map_err(|source| BodyError::Corrupt {
                    encoding: "zstd",
                    source,
                })?,
            ),
        ),
        other => return Err(BodyError::UnsupportedEncoding(other.to_string())),
    };
    let mut out = Vec::with_capacity(body.len() * 4);
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|source| BodyError::Corrupt { encoding: name, source })?;
    if out.len() > limit {
        return Err(BodyError::TooLarge { limit, key: limit_key });
    }
    Ok(out.into())
}
