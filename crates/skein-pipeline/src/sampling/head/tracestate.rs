//! OpenTelemetry consistent probability sampling in `tracestate` (the `ot` member's `th` and
//! `rv` sub-keys) and the 56-bit randomness of W3C Trace Context level 2 trace ids.
//!
//! All values are 56-bit integers: a rejection threshold `T` keeps a span iff its randomness
//! `R >= T`; `T = 0` keeps everything and [`NEVER`] (2^56, more than any `R`) nothing.

/// 2^56: the number of distinct randomness values, and the threshold that rejects all of them.
pub const NEVER: u64 = 1 << 56;

/// The W3C level 2 "random" trace flag: the trace id's right-most 7 bytes are random.
pub const RANDOM_FLAG: u32 = 0x02;

/// Hex digits of a full 56-bit value.
const DIGITS: usize = 14;

/// Significant hex digits kept when turning a probability into a threshold, counted after any
/// leading `f`s (the precision OpenTelemetry recommends SDKs use). Short `th` values, and every
/// node computes the same threshold from the same probability.
const PRECISION: usize = 4;

/// The sampling sub-keys of a span's `ot` tracestate member. Malformed values read as absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OtSampling {
    pub threshold: Option<u64>,
    pub randomness: Option<u64>,
}

/// The value of the first `ot` member of a W3C `tracestate` (`key=value` members separated by
/// commas, optional spaces or tabs around them).
fn ot_member(trace_state: &str) -> Option<&str> {
    trace_state.split(',').find_map(|member| {
        let (key, value) = member.trim_matches([' ', '\t']).split_once('=')?;
        (key == "ot").then_some(value)
    })
}

/// Reads `th` (1–14 hex digits, padded with trailing zeros) and `rv` (exactly 14 hex digits)
/// from `tracestate`. Anything malformed — a bad digit, a wrong length, an empty value — is
/// ignored (read as absent), never an error: the span is still stored.
pub fn parse(trace_state: &str) -> OtSampling {
    let mut out = OtSampling::default();
    let Some(ot) = ot_member(trace_state) else {
        return out;
    };
    for entry in ot.split(';') {
        let Some((key, value)) = entry.split_once(':') else {
            continue;
        };
        // Keys must be unique; the first occurrence counts.
        match key {
            "th" if out.threshold.is_none() => out.threshold = parse_threshold(value),
            "rv" if out.randomness.is_none() && value.len() == DIGITS => out.randomness = parse_hex(value),
            _ => {}
        }
    }
    out
}

fn parse_hex(digits: &str) -> Option<u64> {
    if digits.is_empty() || digits.len() > DIGITS || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

fn parse_threshold(value: &str) -> Option<u64> {
    parse_hex(value).map(|t| t << (4 * (DIGITS - value.len())))
}

/// `th`'s encoding: 14 hex digits without the trailing zeros (`0` for 100%).
pub fn encode_threshold(threshold: u64) -> String {
    let full = format!("{:014x}", threshold.min(NEVER - 1));
    let trimmed = full.trim_end_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.into()
    }
}

/// `trace_state` with the `ot` member's `th` set to `threshold` (or removed, for `None`); the
/// `ot` member moves to the front, as W3C asks of a modified member. Other sub-keys and members
/// are kept. `None` when the `ot` value would pass OpenTelemetry's 256-character limit.
pub fn with_threshold(trace_state: &str, threshold: Option<u64>) -> Option<String> {
    let old_ot = ot_member(trace_state).unwrap_or("");
    let mut ot = String::with_capacity(old_ot.len() + 20);
    if let Some(t) = threshold {
        ot.push_str("th:");
        ot.push_str(&encode_threshold(t));
    }
    for entry in old_ot.split(';').filter(|e| !e.is_empty() && !e.starts_with("th:")) {
        if !ot.is_empty() {
            ot.push(';');
        }
        ot.push_str(entry);
    }
    if ot.len() > 256 {
        return None;
    }
    let mut out = String::with_capacity(trace_state.len() + 24);
    if !ot.is_empty() {
        out.push_str("ot=");
        out.push_str(&ot);
    }
    let mut seen_ot = false;
    for member in trace_state.split(',') {
        let trimmed = member.trim_matches([' ', '\t']);
        if trimmed.is_empty() {
            continue;
        }
        // Only the first `ot` member is the one we read; later duplicates are left as they were.
        if !seen_ot && trimmed.split_once('=').is_some_and(|(k, _)| k == "ot") {
            seen_ot = true;
            continue;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(trimmed);
    }
    Some(out)
}

/// The least-significant 56 bits of the trace id: random in W3C level 2 trace ids, and in
/// practice in nearly every tracer's ids (Jaeger's and Zipkin's 64-bit ids are random in full).
pub fn trace_id_randomness(trace_id: &[u8; 16]) -> u64 {
    trace_id[9..].iter().fold(0u64, |acc, b| (acc << 8) | *b as u64)
}

/// The rejection threshold for keeping `probability` of all traces: `(1 - p) * 2^56`, rounded
/// to [`PRECISION`] significant hex digits. 1 (or more) gives 0, 0 (or less, or NaN) [`NEVER`].
pub fn probability_to_threshold(probability: f64) -> u64 {
    if probability >= 1.0 {
        return 0;
    }
    if probability.is_nan() || probability <= 0.0 {
        return NEVER;
    }
    // Keep at least one value in 2^56: any positive probability keeps something.
    let kept = ((probability * NEVER as f64).round() as u64).clamp(1, NEVER);
    round_threshold(NEVER - kept)
}

/// The probability a threshold keeps.
pub fn threshold_to_probability(threshold: u64) -> f64 {
    (NEVER - threshold.min(NEVER)) as f64 / NEVER as f64
}

fn round_threshold(threshold: u64) -> u64 {
    let leading_fs = (0..DIGITS)
        .take_while(|i| (threshold >> (4 * (DIGITS - 1 - i))) & 0xf == 0xf)
        .count();
    let digits = (leading_fs + PRECISION).min(DIGITS);
    if digits == DIGITS {
        return threshold;
    }
    let unit = 1u64 << (4 * (DIGITS - digits));
    let rounded = (threshold + unit / 2) & !(unit - 1);
    if rounded >= NEVER {
        // Rounding up would reject everything; round down instead.
        threshold & !(unit - 1)
    } else {
        rounded
    }
}
