//! Query-string helpers: repeated keys, Go-style durations and clear errors.

use skein_model::units::parse_duration;

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
        keys.iter().find_map(|k| self.get(k))
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
            Some((k, v)) => parse_duration(v)
                .map(|d| Some(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
                .map_err(|e| format!("parameter {k}: {e}")),
        }
    }
}
