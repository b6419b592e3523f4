//! Shared by the decoder tests: damage done to an encoded body, subtrees grafted into a JSON
//! document, and what every decoder's output must satisfy whatever it was given.

// Each test file uses a part of this.
#![allow(dead_code)]

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;
use skein_model::Decoded;

pub mod micro_spans;

/// Modest case counts (the build machine is small; `PROPTEST_CASES=5000` for a deeper run) and
/// no regression files written next to this test: a failure prints its minimal input instead.
pub fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(128),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// One change to an encoded body; positions wrap around its length.
#[derive(Debug, Clone)]
pub enum Damage {
    Truncate(usize),
    SetByte(usize, u8),
    Insert(usize, Vec<u8>),
}

pub fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<usize>().prop_map(Damage::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Damage::SetByte(at, b)),
        (any::<usize>(), vec(any::<u8>(), 1..6)).prop_map(|(at, b)| Damage::Insert(at, b)),
    ]
}

/// `bytes` with the damages done in order.
pub fn damaged(mut bytes: Vec<u8>, damages: Vec<Damage>) -> Vec<u8> {
    for d in damages {
        let n = bytes.len().max(1);
        match d {
            Damage::Truncate(at) => bytes.truncate(at % n),
            Damage::SetByte(at, b) => {
                if let Some(x) = bytes.get_mut(at % n) {
                    *x = b;
                }
            }
            Damage::Insert(at, b) => {
                let at = (at % n).min(bytes.len());
                bytes.splice(at..at, b);
            }
        }
    }
    bytes
}

/// Finite numbers only: a `Value` cannot hold NaN or an infinity.
pub fn json_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO).prop_map(Value::from),
    ]
}

/// Replaces the subtree found by walking `path` (child index modulo the number of children)
/// with `replacement`.
pub fn graft(value: &mut Value, path: &[prop::sample::Index], replacement: Value) {
    let child = match (path.split_first(), &mut *value) {
        (Some((i, rest)), Value::Array(a)) if !a.is_empty() => Some((i.get_mut(a), rest)),
        (Some((i, rest)), Value::Object(m)) if !m.is_empty() => {
            let n = i.index(m.len());
            Some((m.values_mut().nth(n).expect("index below len"), rest))
        }
        _ => None,
    };
    match child {
        Some((child, rest)) => graft(child, rest, replacement),
        None => *value = replacement,
    }
}

/// Whatever a decoder accepts is well formed, and rejected indices are increasing.
pub fn check_decoded<E>(result: Result<Decoded, E>) -> Result<(), TestCaseError> {
    let Ok(decoded) = result else { return Ok(()) };
    for s in &decoded.batch.spans {
        prop_assert_ne!(s.trace_id, [0; 16]);
        prop_assert_ne!(s.span_id, [0; 8]);
        prop_assert!(s.end_unix_nano >= s.start_unix_nano);
    }
    prop_assert!(decoded.rejected.windows(2).all(|w| w[0].index < w[1].index));
    Ok(())
}
