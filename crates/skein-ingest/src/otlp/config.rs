use serde::{Deserialize, Serialize};
use skein_model::units::serde_bytes;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// OTLP/gRPC listen address; empty disables the receiver.
    pub grpc_addr: String,
    /// OTLP/HTTP listen address; empty disables the receiver.
    pub http_addr: String,
    /// Largest request accepted, after decompression.
    #[serde(with = "serde_bytes")]
    pub max_request_bytes: u64,
    /// Origins allowed to post from browsers (CORS); `["*"]` allows any, `[]` none.
    pub cors_allowed_origins: Vec<String>,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            grpc_addr: "0.0.0.0:4317".into(),
            http_addr: "0.0.0.0:4318".into(),
            max_request_bytes: 16 << 20,
            cors_allowed_origins: vec!["*".into()],
        }
    }
}
