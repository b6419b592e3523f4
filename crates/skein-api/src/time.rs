//! RFC 3339 timestamps without a date-time dependency (days-from-civil arithmetic).

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parses `2024-05-01T12:00:00Z`, `2024-05-01T12:00:00.123456789+02:00` … into unix ns.
pub fn parse_rfc3339(s: &str) -> Result<u64, String> {
    let err = || format!("invalid RFC 3339 time {s:?} (expected e.g. 2024-05-01T12:00:00Z)");
    let b = s.trim().as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ') {
        return Err(err());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        std::str::from_utf8(&b[r])
            .ok()
            .and_then(|x| x.parse().ok())
            .ok_or_else(err)
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)? as u32, num(8..10)? as u32);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(err());
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = std::str::from_utf8(&b[start..i]).map_err(|_| err())?;
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
        nanos = digits.parse().map_err(|_| err())?;
    }
    let offset_secs = match b.get(i) {
        Some(b'Z') | Some(b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if b.len() == i + 6 && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let o = oh * 3600 + om * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return Err(err()),
    };
    let secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset_secs;
    if secs < 0 {
        return Err(format!("time {s:?} is before 1970, which spans cannot carry"));
    }
    (secs as u64)
        .checked_mul(1_000_000_000)
        .and_then(|ns| ns.checked_add(nanos as u64))
        .ok_or_else(|| format!("time {s:?} is after 2554, past what nanosecond timestamps hold"))
}

/// Formats unix ns as `2024-05-01T12:00:00.123456789Z`.
pub fn format_rfc3339(ns: u64) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let nanos = ns % 1_000_000_000;
    let (y, m, d) = civil_from_days(secs.div_euclid(86400));
    let sod = secs.rem_euclid(86400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z").unwrap(), 0);
        let t = parse_rfc3339("2024-02-29T23:59:58.5+01:00").unwrap();
        assert_eq!(format_rfc3339(t), "2024-02-29T22:59:58.500000000Z");
        assert_eq!(
            parse_rfc3339(&format_rfc3339(1_700_000_000_123_456_789)).unwrap(),
            1_700_000_000_123_456_789
        );
        assert!(parse_rfc3339("yesterday").is_err());
        assert!(parse_rfc3339("2024-13-01T00:00:00Z").is_err());
        // Valid RFC 3339 that nanoseconds since 1970 cannot hold: said so, not "invalid".
        assert!(parse_rfc3339("1969-12-31T23:59:59Z")
            .unwrap_err()
            .contains("before 1970"));
        assert!(parse_rfc3339("9999-12-31T23:59:59Z")
            .unwrap_err()
            .contains("after 2554"));
        assert!(parse_rfc3339("2554-01-01T00:00:00Z").is_ok());
    }

    proptest::proptest! {
        /// Query strings carry these from anyone: any text is a time or an error, never a
        /// panic, and every time formats and parses back to itself.
        #[test]
        fn any_text_is_a_time_or_an_error(s in "[0-9T:.+Zz -]{0,40}|\\PC{0,40}") {
            if let Ok(ns) = parse_rfc3339(&s) {
                proptest::prop_assert_eq!(parse_rfc3339(&format_rfc3339(ns)), Ok(ns));
            }
        }

        #[test]
        fn every_time_round_trips(ns in 0u64..u64::MAX) {
            proptest::prop_assert_eq!(parse_rfc3339(&format_rfc3339(ns)), Ok(ns));
        }
    }
}
