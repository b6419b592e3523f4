//! Query-string helpers: repeated keys, Go-style durations and clear errors.

use std::time::Duration;

/// A duration as Jaeger's query service reads it (Go's `time.ParseDuration`): one or more
/// number-and-unit pairs (`1h30m`, `1.5s`, `250us`), units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`,
/// plus `d` and `w` for lookbacks; a bare number is an error except `0`. Reading `500` as
/// seconds would silently find nothing for a client that meant milliseconds or microseconds.
pub fn parse_api_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut secs = 0f64;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: expected e.g. 100ms, 1.5s, 1h30m"))?;
        let scale = match skein_model::units::unit_seconds(unit) {
            Some(scale) => scale,
            None if unit.is_empty() => {
                return Err(format!("invalid duration {s:?}: missing unit (ns, us, ms, s, m, h, d)"))
            }
            None => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {unit:?} (ns, us, ms, s, m, h, d)"
                ))
            }
        };
        secs += n * scale;
        rest = after;
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("invalid duration {s:?}: too large"))
}

/// Query parameters in order, repeated keys kept (`tag=a:1&tag=b:2`).
#[derive(Debug, Default)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// The first non-empty value among several spellings of one parameter.
    pub fn any(&self, keys: &[&str]) -> Option<&str> {
        self.any_named(keys).map(|(_, v)| v)
    }

    /// Like `any`, with the spelling the client used (for errors that name it).
    pub fn any_named<'k>(&self, keys: &[&'k str]) -> Option<(&'k str, &str)> {
        keys.iter().find_map(|k| self.get(k).map(|v| (*k, v)))
    }

    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn u64(&self, key: &str) -> Result<Option<u64>, String> {
        self.get(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("parameter {key}={v:?} is not a non-negative integer"))
            })
            .transpose()
    }

    /// A duration such as `100ms`, `1.5s`, `2m` in nanoseconds.
    pub fn duration_ns(&self, keys: &[&str]) -> Result<Option<u64>, String> {
        match keys.iter().find_map(|k| self.get(k).map(|v| (k, v))) {
            None => Ok(None),
            Some((k, v)) => parse_api_duration(v)
                .map(|d| Some(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
                .map_err(|e| format!("parameter {k}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_jaeger_reads_them() {
        let ok = |s: &str| parse_api_duration(s).unwrap();
        assert_eq!(ok("100ms"), Duration::from_millis(100));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("250us"), Duration::from_micros(250));
        assert_eq!(ok("250µs"), Duration::from_micros(250));
        assert_eq!(ok("2d"), Duration::from_secs(2 * 86_400));
        assert_eq!(ok("0"), Duration::ZERO);
        let err = |s: &str| parse_api_duration(s).unwrap_err();
        assert!(err("500").contains("missing unit"), "a bare number is ambiguous");
        assert!(err("1.5").contains("missing unit"));
        assert!(err("1x").contains("unknown unit \"x\""));
        assert!(err("ms").contains("expected e.g."));
        assert!(err("").contains("empty"));
        assert!(err("-1s").contains("expected e.g."));
        assert!(err("99999999999999999h").contains("too large"));
    }

    proptest::proptest! {
        /// Any text is a duration or an error naming what was wrong, never a panic.
        #[test]
        fn any_text_is_a_duration_or_an_error(s in "[0-9.]{0,6}(ns|us|µs|ms|s|m|h|d|w|x)?[0-9.]{0,4}[a-zµ]{0,2}|\\PC{0,20}") {
            if let Err(e) = parse_api_duration(&s) {
                proptest::prop_assert!(e.contains("duration"), "{}", e);
            }
        }
    }
}
