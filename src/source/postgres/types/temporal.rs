//! date, time, timetz, timestamp[tz], interval: binary and ISO text forms.
//!
//! Binary forms: `date` i32 days since 2000-01-01 (i32::MAX / MIN = ±infinity);
//! `time` i64 microseconds since midnight; `timetz` i64 micros + i32 zone in seconds
//! *west* of UTC; `timestamp[tz]` i64 micros since 2000-01-01 00:00 (UTC for tz;
//! i64::MAX / MIN = ±infinity); `interval` i64 micros, i32 days, i32 months.

use std::fmt::Write;

/// Days from 1970-01-01 to 2000-01-01.
pub(crate) const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
pub(crate) const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
pub(crate) const MICROS_PER_DAY: i64 = 86_400_000_000;

pub(crate) type Res<T> = Result<T, &'static str>;

/// Days since 1970-01-01 of a proleptic Gregorian date (astronomical year: 1 BC = 0).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

pub(crate) fn date_from_binary(v: &[u8]) -> Res<i32> {
    let d = i32::from_be_bytes(v.try_into().map_err(|_| "date must be 4 bytes")?);
    match d {
        i32::MAX | i32::MIN => Ok(d),
        _ => d
            .checked_add(PG_EPOCH_DAYS)
            .filter(|x| *x != i32::MAX)
            .ok_or("date out of Date32 range"),
    }
}

pub(crate) fn timestamp_from_binary(v: &[u8]) -> Res<i64> {
    let t = i64::from_be_bytes(v.try_into().map_err(|_| "timestamp must be 8 bytes")?);
    match t {
        i64::MAX | i64::MIN => Ok(t),
        _ => t
            .checked_add(PG_EPOCH_MICROS)
            .filter(|x| *x != i64::MAX)
            .ok_or("timestamp out of the Arrow microsecond range"),
    }
}

pub(crate) fn time_from_binary(v: &[u8]) -> Res<i64> {
    let t = i64::from_be_bytes(v.try_into().map_err(|_| "time must be 8 bytes")?);
    if !(0..=MICROS_PER_DAY).contains(&t) {
        return Err("time outside 00:00:00..24:00:00");
    }
    Ok(t)
}

/// (months, days, nanoseconds)
pub(crate) fn interval_from_binary(v: &[u8]) -> Res<(i32, i32, i64)> {
    if v.len() != 16 {
        return Err("interval must be 16 bytes");
    }
    let micros = i64::from_be_bytes(v[0..8].try_into().unwrap());
    let days = i32::from_be_bytes(v[8..12].try_into().unwrap());
    let months = i32::from_be_bytes(v[12..16].try_into().unwrap());
    let nanos = micros
        .checked_mul(1000)
        .ok_or("interval time part overflows i64 nanoseconds")?;
    Ok((months, days, nanos))
}

/// Writes a time of day in PostgreSQL's form: `HH:MM:SS` plus the fraction without
/// trailing zeros.
fn write_time(out: &mut String, micros: i64) {
    let secs = micros / 1_000_000;
    let frac = micros % 1_000_000;
    let _ = write!(
        out,
        "{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    if frac != 0 {
        let mut f = frac;
        let mut width = 6;
        while f % 10 == 0 {
            f /= 10;
            width -= 1;
        }
        let _ = write!(out, ".{f:0width$}");
    }
}

/// Writes a UTC offset as PostgreSQL does: `+HH`, `+HH:MM` or `+HH:MM:SS`.
fn write_offset(out: &mut String, offset_secs: i32) {
    let sign = if offset_secs < 0 { '-' } else { '+' };
    let a = offset_secs.unsigned_abs();
    let (h, m, s) = (a / 3600, a / 60 % 60, a % 60);
    let _ = write!(out, "{sign}{h:02}");
    if m != 0 || s != 0 {
        let _ = write!(out, ":{m:02}");
    }
    if s != 0 {
        let _ = write!(out, ":{s:02}");
    }
}

pub(crate) fn timetz_binary_to_text(v: &[u8], out: &mut String) -> Res<()> {
    if v.len() != 12 {
        return Err("timetz must be 12 bytes");
    }
    let t = time_from_binary(&v[..8])?;
    let zone = i32::from_be_bytes(v[8..12].try_into().unwrap());
    if zone.unsigned_abs() > 15 * 3600 + 59 * 60 + 59 {
        return Err("timetz zone offset out of range");
    }
    write_time(out, t);
    // The stored zone is seconds west of UTC; the printed offset is east.
    write_offset(out, -zone);
    Ok(())
}

/// A small cursor over ASCII text.
struct Cur<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cur<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    /// An unsigned decimal of 1..=max_len digits.
    fn num(&mut self, max_len: usize) -> Res<i64> {
        let start = self.i;
        let mut v: i64 = 0;
        while let Some(c @ b'0'..=b'9') = self.peek() {
            if self.i - start >= max_len {
                return Err("number too long");
            }
            v = v * 10 + i64::from(c - b'0');
            self.i += 1;
        }
        if self.i == start {
            return Err("expected a number");
        }
        Ok(v)
    }
    fn exact(&mut self, n: usize) -> Res<i64> {
        let start = self.i;
        let v = self.num(n)?;
        if self.i - start != n {
            return Err("expected two digits");
        }
        Ok(v)
    }
    fn rest(&self) -> &'a [u8] {
        &self.s[self.i..]
    }
}

/// `HH:MM[:SS[.ffffff]]` -> micros, at most 24:00:00.
fn parse_time(c: &mut Cur<'_>) -> Res<i64> {
    let h = c.num(2)?;
    if !c.eat(b':') {
        return Err("expected HH:MM:SS");
    }
    let m = c.exact(2)?;
    let mut s = 0;
    let mut frac = 0;
    if c.eat(b':') {
        s = c.exact(2)?;
        if c.eat(b'.') {
            frac = parse_frac(c)?;
        }
    }
    if h > 24 || m > 59 || s > 60 {
        return Err("time field out of range");
    }
    let t = (h * 3600 + m * 60 + s) * 1_000_000 + frac;
    if t > MICROS_PER_DAY {
        return Err("time after 24:00:00");
    }
    Ok(t)
}

/// Fraction digits after '.' -> microseconds (at most 6 digits, never rounded).
fn parse_frac(c: &mut Cur<'_>) -> Res<i64> {
    let start = c.i;
    let mut v = 0;
    while let Some(d @ b'0'..=b'9') = c.peek() {
        if c.i - start >= 6 {
            return Err("more than 6 fraction digits");
        }
        v = v * 10 + i64::from(d - b'0');
        c.i += 1;
    }
    let n = c.i - start;
    if n == 0 {
        return Err("empty fraction");
    }
    Ok(v * 10i64.pow(6 - n as u32))
}

/// `[+-]HH[:MM[:SS]]` or `[+-]HHMM` -> seconds east of UTC.
fn parse_offset(c: &mut Cur<'_>) -> Res<Option<i64>> {
    let sign = match c.peek() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        Some(b'Z') => {
            c.i += 1;
            return Ok(Some(0));
        }
        _ => return Ok(None),
    };
    c.i += 1;
    let h = c.exact(2)?;
    let mut m = 0;
    let mut s = 0;
    if c.eat(b':') {
        m = c.exact(2)?;
        if c.eat(b':') {
            s = c.exact(2)?;
        }
    } else if matches!(c.peek(), Some(b'0'..=b'9')) {
        m = c.exact(2)?;
    }
    if m > 59 || s > 59 {
        return Err("bad UTC offset");
    }
    Ok(Some(sign * (h * 3600 + m * 60 + s)))
}

/// `YYYY-MM-DD` (year of any length) -> (year, month, day), before any BC suffix.
fn parse_ymd(c: &mut Cur<'_>) -> Res<(i64, u32, u32)> {
    let y = c.num(9)?;
    if !c.eat(b'-') {
        return Err("expected YYYY-MM-DD (DateStyle ISO)");
    }
    let m = c.exact(2)? as u32;
    if !c.eat(b'-') {
        return Err("expected YYYY-MM-DD (DateStyle ISO)");
    }
    let d = c.exact(2)? as u32;
    if !(1..=12).contains(&m) || d == 0 {
        return Err("month or day out of range");
    }
    Ok((y, m, d))
}

/// Consumes an optional trailing " BC"; true when present.
fn eat_bc(c: &mut Cur<'_>) -> Res<bool> {
    let r = c.rest();
    if r.is_empty() {
        return Ok(false);
    }
    if r == b" BC" {
        c.i = c.s.len();
        return Ok(true);
    }
    if r == b" AD" {
        c.i = c.s.len();
        return Ok(false);
    }
    Err("trailing characters")
}

fn days_of(y: i64, m: u32, d: u32, bc: bool) -> Res<i64> {
    if y == 0 {
        return Err("year 0 does not exist");
    }
    let year = if bc { 1 - y } else { y };
    if d > days_in_month(year, m) {
        return Err("day out of range for the month");
    }
    Ok(days_from_civil(year, m, d))
}

/// Text date -> Date32 days (infinity sentinels as in binary).
pub(crate) fn date_from_text(v: &[u8]) -> Res<i32> {
    match v {
        b"infinity" => return Ok(i32::MAX),
        b"-infinity" => return Ok(i32::MIN),
        _ => {}
    }
    let mut c = Cur { s: v, i: 0 };
    let (y, m, d) = parse_ymd(&mut c)?;
    let bc = eat_bc(&mut c)?;
    let days = days_of(y, m, d, bc)?;
    i32::try_from(days)
        .ok()
        .filter(|x| *x != i32::MAX && *x != i32::MIN)
        .ok_or("date out of range")
}

/// Text timestamp -> micros since 1970 (UTC when `with_tz`).
pub(crate) fn timestamp_from_text(v: &[u8], with_tz: bool) -> Res<i64> {
    match v {
        b"infinity" => return Ok(i64::MAX),
        b"-infinity" => return Ok(i64::MIN),
        _ => {}
    }
    let mut c = Cur { s: v, i: 0 };
    let (y, m, d) = parse_ymd(&mut c)?;
    if !(c.eat(b' ') || c.eat(b'T')) {
        return Err("expected a space before the time");
    }
    let t = parse_time(&mut c)?;
    let off = parse_offset(&mut c)?;
    let bc = eat_bc(&mut c)?;
    let off = match (off, with_tz) {
        (Some(o), true) => o,
        (None, true) => return Err("timestamptz without a UTC offset (DateStyle must be ISO)"),
        (Some(_), false) => return Err("timestamp without time zone has a UTC offset"),
        (None, false) => 0,
    };
    let days = days_of(y, m, d, bc)?;
    let micros =
        i128::from(days) * i128::from(MICROS_PER_DAY) + i128::from(t) - i128::from(off) * 1_000_000;
    i64::try_from(micros)
        .ok()
        .filter(|x| *x != i64::MAX && *x != i64::MIN)
        .ok_or("timestamp out of the Arrow microsecond range")
}

pub(crate) fn time_from_text(v: &[u8]) -> Res<i64> {
    let mut c = Cur { s: v, i: 0 };
    let t = parse_time(&mut c)?;
    if !c.rest().is_empty() {
        return Err("trailing characters");
    }
    Ok(t)
}

/// Interval text in IntervalStyle `postgres` (`1 year 2 mons -3 days 04:05:06.789`) or
/// `postgres_verbose` (`@ 1 year 2 mons 3 days 4 hours 5 mins 6.789 secs ago`).
/// -> (months, days, nanoseconds)
pub(crate) fn interval_from_text(v: &[u8]) -> Res<(i32, i32, i64)> {
    const OVF: &str = "interval field out of range";
    let s = std::str::from_utf8(v).map_err(|_| "not UTF-8")?;
    let mut months: i64 = 0;
    let mut days: i64 = 0;
    let mut micros: i64 = 0;
    let mut ago = false;
    let mut toks = s.split_ascii_whitespace();
    while let Some(tok) = toks.next() {
        if tok == "@" {
            continue;
        }
        if tok == "ago" {
            ago = true;
            continue;
        }
        if tok.contains(':') {
            let (neg, body) = match tok.as_bytes()[0] {
                b'-' => (true, &tok[1..]),
                b'+' => (false, &tok[1..]),
                _ => (false, tok),
            };
            let mut c = Cur {
                s: body.as_bytes(),
                i: 0,
            };
            let h = c.num(10)?;
            if !c.eat(b':') {
                return Err("bad time part");
            }
            let m = c.exact(2)?;
            let mut sec = 0;
            let mut frac = 0;
            if c.eat(b':') {
                sec = c.exact(2)?;
                if c.eat(b'.') {
                    frac = parse_frac(&mut c)?;
                }
            }
            if !c.rest().is_empty() || m > 59 || sec > 59 {
                return Err("bad time part");
            }
            let t = h
                .checked_mul(3_600_000_000)
                .and_then(|x| x.checked_add((m * 60 + sec) * 1_000_000 + frac))
                .ok_or(OVF)?;
            micros = micros.checked_add(if neg { -t } else { t }).ok_or(OVF)?;
            continue;
        }
        let unit = toks.next().ok_or("number without a unit")?;
        let unit = unit.trim_end_matches('s');
        if unit == "sec" || unit == "second" {
            let (neg, body) = match tok.as_bytes()[0] {
                b'-' => (true, &tok[1..]),
                b'+' => (false, &tok[1..]),
                _ => (false, tok),
            };
            let mut c = Cur {
                s: body.as_bytes(),
                i: 0,
            };
            let whole = c.num(18)?;
            let frac = if c.eat(b'.') { parse_frac(&mut c)? } else { 0 };
            if !c.rest().is_empty() {
                return Err("bad seconds");
            }
            let t = whole
                .checked_mul(1_000_000)
                .and_then(|x| x.checked_add(frac))
                .ok_or(OVF)?;
            micros = micros.checked_add(if neg { -t } else { t }).ok_or(OVF)?;
            continue;
        }
        let n: i64 = tok.parse().map_err(|_| "bad interval number")?;
        match unit {
            "year" => {
                months = n
                    .checked_mul(12)
                    .and_then(|x| x.checked_add(months))
                    .ok_or(OVF)?
            }
            "mon" | "month" => months = months.checked_add(n).ok_or(OVF)?,
            "day" => days = days.checked_add(n).ok_or(OVF)?,
            "hour" => {
                micros = n
                    .checked_mul(3_600_000_000)
                    .and_then(|x| x.checked_add(micros))
                    .ok_or(OVF)?
            }
            "min" | "minute" => {
                micros = n
                    .checked_mul(60_000_000)
                    .and_then(|x| x.checked_add(micros))
                    .ok_or(OVF)?
            }
            _ => return Err("unknown interval unit (IntervalStyle must be postgres)"),
        }
    }
    if ago {
        months = -months;
        days = -days;
        micros = -micros;
    }
    let months = i32::try_from(months).map_err(|_| OVF)?;
    let days = i32::try_from(days).map_err(|_| OVF)?;
    let nanos = micros
        .checked_mul(1000)
        .ok_or("interval time part overflows i64 nanoseconds")?;
    Ok((months, days, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 1, 1), 10957);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(
            days_from_civil(2024, 3, 1) - days_from_civil(2024, 2, 28),
            2
        );
    }

    #[test]
    fn text_forms() {
        assert_eq!(date_from_text(b"2000-01-01"), Ok(10957));
        assert_eq!(
            date_from_text(b"0001-12-31 BC"),
            Ok(days_from_civil(0, 12, 31) as i32)
        );
        assert!(date_from_text(b"2023-02-29").is_err());
        assert_eq!(time_from_text(b"24:00:00"), Ok(MICROS_PER_DAY));
        assert_eq!(time_from_text(b"00:00:00.5"), Ok(500_000));
        assert_eq!(
            timestamp_from_text(b"1970-01-01 05:30:00+05:30", true),
            Ok(0)
        );
        assert!(timestamp_from_text(b"1970-01-01 05:30:00", true).is_err());
        assert_eq!(
            interval_from_text(b"-1 years +2 mons -3 days -04:05:06.5"),
            Ok((
                -10,
                -3,
                -(4 * 3600 + 5 * 60 + 6) * 1_000_000_000 - 500_000_000
            ))
        );
        assert_eq!(
            interval_from_text(b"@ 1 year 2 hours 3.25 secs ago"),
            Ok((-12, 0, -7_203_250_000_000))
        );
        let mut s = String::new();
        write_offset(&mut s, -(3600 + 75));
        assert_eq!(s, "-01:01:15");
    }
}
