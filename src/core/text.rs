//! Text forms of Arrow values that no Arrow formatter gives the way
//! databases print them: UUIDs, ISO 8601 intervals and timestamps.

use arrow::datatypes::IntervalMonthDayNano;

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lower case.
pub fn format_uuid(b: &[u8]) -> String {
    let mut s = Vec::with_capacity(36);
    push_uuid(&mut s, b);
    String::from_utf8(s).expect("hex digits and dashes are ASCII")
}

/// A UUID's text form (as [`format_uuid`]) appended to `out`.
pub fn push_uuid(out: &mut Vec<u8>, b: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push(b'-');
        }
        out.push(HEX[usize::from(byte >> 4)]);
        out.push(HEX[usize::from(byte & 15)]);
    }
}

/// ISO 8601 duration, as PostgreSQL prints it under `IntervalStyle = iso_8601`:
/// `P1Y2M3DT4H5M6.5S`, each part signed on its own, `PT0S` for zero.
pub fn format_interval(v: IntervalMonthDayNano) -> String {
    let mut s = String::from("P");
    let (years, months) = (v.months / 12, v.months % 12);
    if years != 0 {
        s.push_str(&format!("{years}Y"));
    }
    if months != 0 {
        s.push_str(&format!("{months}M"));
    }
    if v.days != 0 {
        s.push_str(&format!("{}D", v.days));
    }
    let micros = v.nanoseconds / 1000;
    if micros != 0 {
        s.push('T');
        let neg = micros < 0;
        let m = micros.unsigned_abs();
        let (h, rem) = (m / 3_600_000_000, m % 3_600_000_000);
        let (mi, rem) = (rem / 60_000_000, rem % 60_000_000);
        let (sec, frac) = (rem / 1_000_000, rem % 1_000_000);
        let sign = if neg { "-" } else { "" };
        if h != 0 {
            s.push_str(&format!("{sign}{h}H"));
        }
        if mi != 0 {
            s.push_str(&format!("{sign}{mi}M"));
        }
        if sec != 0 || frac != 0 {
            if frac != 0 {
                let f = format!("{frac:06}");
                s.push_str(&format!("{sign}{sec}.{}S", f.trim_end_matches('0')));
            } else {
                s.push_str(&format!("{sign}{sec}S"));
            }
        }
    }
    if s == "P" {
        s.push_str("T0S");
    }
    s
}

/// ISO 8601 (`2024-01-31T12:00:00.000001Z` with a zone, no `Z` without);
/// the infinity sentinels print as `infinity` / `-infinity`.
pub fn format_timestamp_micros(v: i64, utc: bool) -> String {
    match v {
        i64::MAX => "infinity".into(),
        i64::MIN => "-infinity".into(),
        v => match arrow::temporal_conversions::timestamp_us_to_datetime(v) {
            Some(t) => {
                let base = t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
                if utc {
                    base + "Z"
                } else {
                    base
                }
            }
            None => v.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_in_iso_8601() {
        let iv = |months, days, micros: i64| IntervalMonthDayNano {
            months,
            days,
            nanoseconds: micros * 1000,
        };
        assert_eq!(format_interval(iv(0, 0, 0)), "PT0S");
        assert_eq!(
            format_interval(iv(14, 3, 4 * 3_600_000_000 + 5 * 60_000_000 + 6_500_000)),
            "P1Y2M3DT4H5M6.5S"
        );
        assert_eq!(
            format_interval(iv(-1, -2, -1_000_001)),
            "P-1M-2DT-1.000001S"
        );
        assert_eq!(format_interval(iv(0, 0, 60_000_000)), "PT1M");
    }

    #[test]
    fn uuids_as_text() {
        let b: Vec<u8> = (0u8..16).collect();
        assert_eq!(format_uuid(&b), "00010203-0405-0607-0809-0a0b0c0d0e0f");
    }
}
