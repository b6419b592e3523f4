//! The web UI, embedded in the binary and served on the query port.
