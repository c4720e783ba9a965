//! numeric: binary wire format, text output, and exact conversion to decimals.
//!
//! Binary `numeric` (`numeric_send`): `ndigits: i16, weight: i16, sign: u16,
//! dscale: u16`, then `ndigits` base-10000 digits (`i16`, 0..=9999), most significant
//! first. Digit `i` is worth `10000^(weight - i)`. `sign` is 0x0000 (+), 0x4000 (-),
//! 0xC000 (NaN), 0xD000 (+Infinity), 0xF000 (-Infinity). `dscale` is the number of
//! decimal digits shown after the point.

use arrow::datatypes::i256;

pub(crate) const NUMERIC_POS: u16 = 0x0000;
pub(crate) const NUMERIC_NEG: u16 = 0x4000;
pub(crate) const NUMERIC_NAN: u16 = 0xC000;
pub(crate) const NUMERIC_PINF: u16 = 0xD000;
pub(crate) const NUMERIC_NINF: u16 = 0xF000;
const DSCALE_MASK: u16 = 0x3FFF;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Special {
    NaN,
    PosInf,
    NegInf,
}

impl Special {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Special::NaN => "NaN",
            Special::PosInf => "Infinity",
            Special::NegInf => "-Infinity",
        }
    }
}

/// A finite numeric in binary form (borrowed digits).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BinNumeric<'a> {
    pub weight: i16,
    pub negative: bool,
    pub dscale: u16,
    /// Big-endian i16 digits.
    digits: &'a [u8],
}

impl BinNumeric<'_> {
    fn ndigits(&self) -> usize {
        self.digits.len() / 2
    }
    #[inline]
    fn digit(&self, i: usize) -> u16 {
        u16::from_be_bytes([self.digits[2 * i], self.digits[2 * i + 1]])
    }
    /// Digit at index `i` (may be outside 0..ndigits: then 0).
    #[inline]
    fn digit_at(&self, i: i64) -> u16 {
        if i >= 0 && (i as usize) < self.ndigits() {
            self.digit(i as usize)
        } else {
            0
        }
    }
}

pub(crate) fn parse_binary(v: &[u8]) -> Result<Result<BinNumeric<'_>, Special>, &'static str> {
    if v.len() < 8 {
        return Err("shorter than the 8-byte numeric header");
    }
    let ndigits = i16::from_be_bytes([v[0], v[1]]);
    let weight = i16::from_be_bytes([v[2], v[3]]);
    let sign = u16::from_be_bytes([v[4], v[5]]);
    let dscale = u16::from_be_bytes([v[6], v[7]]);
    if ndigits < 0 {
        return Err("negative digit count");
    }
    if v.len() != 8 + 2 * ndigits as usize {
        return Err("length does not match the digit count");
    }
    let negative = match sign {
        NUMERIC_POS => false,
        NUMERIC_NEG => true,
        NUMERIC_NAN => return Ok(Err(Special::NaN)),
        NUMERIC_PINF => return Ok(Err(Special::PosInf)),
        NUMERIC_NINF => return Ok(Err(Special::NegInf)),
        _ => return Err("invalid sign field"),
    };
    if dscale & DSCALE_MASK != dscale {
        return Err("invalid display scale");
    }
    let n = BinNumeric {
        weight,
        negative,
        dscale,
        digits: &v[8..],
    };
    for i in 0..n.ndigits() {
        if n.digit(i) > 9999 {
            return Err("base-10000 digit out of range");
        }
    }
    Ok(Ok(n))
}

/// Appends PostgreSQL's text output of a finite numeric (`numeric_out`: all integer
/// digits, exactly `dscale` fraction digits).
pub(crate) fn write_text(n: &BinNumeric<'_>, out: &mut String) {
    if n.negative {
        out.push('-');
    }
    let weight = i64::from(n.weight);
    if weight < 0 {
        out.push('0');
    } else {
        for i in 0..=weight {
            let d = n.digit_at(i);
            if i == 0 {
                push_u16(out, d);
            } else {
                push_4(out, d);
            }
        }
    }
    let mut left = usize::from(n.dscale);
    if left > 0 {
        out.push('.');
        let mut i = weight + 1;
        while left > 0 {
            let d = n.digit_at(i);
            let digits = [d / 1000, d / 100 % 10, d / 10 % 10, d % 10];
            for x in digits.iter().take(left.min(4)) {
                out.push((b'0' + *x as u8) as char);
            }
            left = left.saturating_sub(4);
            i += 1;
        }
    }
}

fn push_u16(out: &mut String, d: u16) {
    if d >= 1000 {
        push_4(out, d);
    } else if d >= 100 {
        out.push((b'0' + (d / 100) as u8) as char);
        out.push((b'0' + (d / 10 % 10) as u8) as char);
        out.push((b'0' + (d % 10) as u8) as char);
    } else if d >= 10 {
        out.push((b'0' + (d / 10) as u8) as char);
        out.push((b'0' + (d % 10) as u8) as char);
    } else {
        out.push((b'0' + d as u8) as char);
    }
}

fn push_4(out: &mut String, d: u16) {
    out.push((b'0' + (d / 1000) as u8) as char);
    out.push((b'0' + (d / 100 % 10) as u8) as char);
    out.push((b'0' + (d / 10 % 10) as u8) as char);
    out.push((b'0' + (d % 10) as u8) as char);
}

/// Integer types that can hold an unscaled decimal.
pub(crate) trait DecInt: Copy {
    const ZERO: Self;
    fn mul10_add(self, d: u8) -> Self;
    fn mul10000_add(self, d: u16) -> Self;
    fn mul_pow10(self, n: u32) -> Self;
    fn neg(self) -> Self;
}

impl DecInt for i128 {
    const ZERO: Self = 0;
    #[inline]
    fn mul10_add(self, d: u8) -> Self {
        self * 10 + i128::from(d)
    }
    #[inline]
    fn mul10000_add(self, d: u16) -> Self {
        self * 10_000 + i128::from(d)
    }
    fn mul_pow10(self, n: u32) -> Self {
        self * 10i128.pow(n)
    }
    fn neg(self) -> Self {
        -self
    }
}

impl DecInt for i256 {
    const ZERO: Self = i256::ZERO;
    #[inline]
    fn mul10_add(self, d: u8) -> Self {
        self.wrapping_mul(i256::from_i128(10))
            .wrapping_add(i256::from_i128(i128::from(d)))
    }
    #[inline]
    fn mul10000_add(self, d: u16) -> Self {
        self.wrapping_mul(i256::from_i128(10_000))
            .wrapping_add(i256::from_i128(i128::from(d)))
    }
    fn mul_pow10(self, n: u32) -> Self {
        self.wrapping_mul(i256::from_i128(10).wrapping_pow(n))
    }
    fn neg(self) -> Self {
        self.wrapping_neg()
    }
}

/// Why a numeric does not fit a decimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FitError {
    /// More significant digits than the precision allows.
    Precision,
    /// Nonzero digits beyond the scale (would need rounding).
    Scale,
}

impl FitError {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            FitError::Precision => "too many digits for the precision",
            FitError::Scale => "more fraction digits than the scale (no rounding)",
        }
    }
}

/// Accumulates decimal digits (most significant first, consecutive powers of ten) into
/// an unscaled integer for `Decimal(precision, scale)`, without rounding.
/// Precision is checked before any arithmetic, so the integer type never overflows
/// (10^38 < i128::MAX, 10^76 < i256::MAX).
struct Acc<T> {
    acc: T,
    nd: u32,
    /// Scaled exponent of the last digit taken into `acc`.
    last: Option<i64>,
    precision: u32,
    scale: i64,
}

impl<T: DecInt> Acc<T> {
    fn new(precision: u8, scale: i8) -> Self {
        Acc {
            acc: T::ZERO,
            nd: 0,
            last: None,
            precision: u32::from(precision),
            scale: i64::from(scale),
        }
    }

    /// One digit `d` worth `10^power`.
    #[inline]
    fn push(&mut self, d: u8, power: i64) -> Result<(), FitError> {
        let se = power + self.scale;
        if se >= 0 {
            if self.nd > 0 || d != 0 {
                self.nd += 1;
                if self.nd > self.precision {
                    return Err(FitError::Precision);
                }
                self.acc = self.acc.mul10_add(d);
            }
            self.last = Some(se);
            Ok(())
        } else if d != 0 {
            Err(FitError::Scale)
        } else {
            Ok(())
        }
    }

    /// A whole base-10000 digit whose lowest decimal digit is worth `10^low`, when that
    /// digit is inside the scale (`low + scale >= 0`): one multiply instead of four.
    #[inline]
    fn push_group(&mut self, d: u16, low: i64) -> Result<(), FitError> {
        let se = low + self.scale;
        debug_assert!(se >= 0);
        if self.nd > 0 {
            self.nd += 4;
        } else if d != 0 {
            self.nd = match d {
                1000.. => 4,
                100.. => 3,
                10.. => 2,
                _ => 1,
            };
        }
        if self.nd > self.precision {
            return Err(FitError::Precision);
        }
        if self.nd > 0 {
            self.acc = self.acc.mul10000_add(d);
        }
        self.last = Some(se);
        Ok(())
    }

    fn finish(self, negative: bool) -> Result<T, FitError> {
        if self.nd == 0 {
            return Ok(T::ZERO);
        }
        let pad = self.last.unwrap_or(0);
        if i64::from(self.nd) + pad > i64::from(self.precision) {
            return Err(FitError::Precision);
        }
        let v = self.acc.mul_pow10(pad as u32);
        Ok(if negative { v.neg() } else { v })
    }
}

/// Exact conversion of a binary numeric to an unscaled `Decimal(precision, scale)` value.
pub(crate) fn binary_to_decimal<T: DecInt>(
    n: &BinNumeric<'_>,
    precision: u8,
    scale: i8,
) -> Result<T, FitError> {
    let mut acc = Acc::<T>::new(precision, scale);
    let weight = i64::from(n.weight);
    // Quick reject: the leading digit group alone is above the precision.
    if n.ndigits() > 0
        && n.digit(0) != 0
        && (weight + 1) * 4 - 3 + i64::from(scale) > i64::from(precision)
    {
        return Err(FitError::Precision);
    }
    for i in 0..n.ndigits() {
        let d = n.digit(i);
        let top = 4 * (weight - i as i64) + 3;
        if top - 3 + i64::from(scale) >= 0 {
            acc.push_group(d, top - 3)?;
            continue;
        }
        acc.push((d / 1000) as u8, top)?;
        acc.push((d / 100 % 10) as u8, top - 1)?;
        acc.push((d / 10 % 10) as u8, top - 2)?;
        acc.push((d % 10) as u8, top - 3)?;
    }
    acc.finish(n.negative)
}

/// A numeric in text form (`-123.4500`, `NaN`, `Infinity`, `-Infinity`).
pub(crate) enum TextNumeric<'a> {
    Finite {
        negative: bool,
        int: &'a [u8],
        frac: &'a [u8],
    },
    Special(Special),
}

pub(crate) fn parse_text(v: &[u8]) -> Result<TextNumeric<'_>, &'static str> {
    let s = v.trim_ascii();
    if s.eq_ignore_ascii_case(b"nan") {
        return Ok(TextNumeric::Special(Special::NaN));
    }
    let (negative, rest) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest.eq_ignore_ascii_case(b"infinity") || rest.eq_ignore_ascii_case(b"inf") {
        return Ok(TextNumeric::Special(if negative {
            Special::NegInf
        } else {
            Special::PosInf
        }));
    }
    let (int, frac) = match rest.iter().position(|&b| b == b'.') {
        Some(p) => (&rest[..p], &rest[p + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    if int.is_empty() && frac.is_empty() {
        return Err("no digits");
    }
    if !int.iter().chain(frac).all(u8::is_ascii_digit) {
        return Err("not a decimal number");
    }
    Ok(TextNumeric::Finite {
        negative,
        int,
        frac,
    })
}

pub(crate) fn text_to_decimal<T: DecInt>(
    negative: bool,
    int: &[u8],
    frac: &[u8],
    precision: u8,
    scale: i8,
) -> Result<T, FitError> {
    let mut acc = Acc::<T>::new(precision, scale);
    let int = &int[int.iter().position(|&b| b != b'0').unwrap_or(int.len())..];
    let n = int.len() as i64;
    if n + i64::from(scale) > i64::from(precision) {
        return Err(FitError::Precision);
    }
    for (i, &c) in int.iter().enumerate() {
        acc.push(c - b'0', n - 1 - i as i64)?;
    }
    for (i, &c) in frac.iter().enumerate() {
        acc.push(c - b'0', -1 - i as i64)?;
    }
    acc.finish(negative)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bin(ndigits: i16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&ndigits.to_be_bytes());
        v.extend_from_slice(&weight.to_be_bytes());
        v.extend_from_slice(&sign.to_be_bytes());
        v.extend_from_slice(&dscale.to_be_bytes());
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    fn text(v: &[u8]) -> String {
        let n = parse_binary(v).unwrap().unwrap();
        let mut s = String::new();
        write_text(&n, &mut s);
        s
    }

    #[test]
    fn text_output() {
        assert_eq!(text(&bin(0, 0, 0, 0, &[])), "0");
        assert_eq!(text(&bin(0, 0, 0, 2, &[])), "0.00");
        assert_eq!(text(&bin(0, 0, NUMERIC_NEG, 0, &[])), "-0");
        assert_eq!(text(&bin(1, -2, 0, 6, &[100])), "0.000001");
        assert_eq!(text(&bin(1, 2, 0, 0, &[7])), "700000000");
        assert_eq!(text(&bin(2, 0, NUMERIC_NEG, 3, &[12, 3400])), "-12.340");
    }

    #[test]
    fn decimal_fit() {
        let v = bin(2, 0, 0, 2, &[12, 3400]);
        let n = parse_binary(&v).unwrap().unwrap();
        assert_eq!(binary_to_decimal::<i128>(&n, 4, 2), Ok(1234));
        assert_eq!(binary_to_decimal::<i128>(&n, 5, 3), Ok(12340));
        assert_eq!(
            binary_to_decimal::<i128>(&n, 3, 2),
            Err(FitError::Precision)
        );
        assert_eq!(binary_to_decimal::<i128>(&n, 10, 1), Err(FitError::Scale));
        assert_eq!(binary_to_decimal::<i128>(&n, 10, 0), Err(FitError::Scale));
        let v = bin(1, 2, 0, 0, &[7]);
        let n = parse_binary(&v).unwrap().unwrap();
        assert_eq!(binary_to_decimal::<i128>(&n, 9, 0), Ok(700_000_000));
        assert_eq!(
            binary_to_decimal::<i128>(&n, 8, 0),
            Err(FitError::Precision)
        );
        assert_eq!(binary_to_decimal::<i128>(&n, 9, -8), Ok(7));
        let v = bin(1, 300, 0, 0, &[1]);
        let n = parse_binary(&v).unwrap().unwrap();
        assert_eq!(
            binary_to_decimal::<i256>(&n, 76, 0),
            Err(FitError::Precision)
        );
        assert_eq!(
            text_to_decimal::<i128>(true, b"0012", b"340", 4, 2),
            Ok(-1234)
        );
        assert_eq!(text_to_decimal::<i128>(false, b"", b"5", 1, 1), Ok(5));
        assert_eq!(
            text_to_decimal::<i128>(false, b"99", b"", 1, 0),
            Err(FitError::Precision)
        );
    }
}
