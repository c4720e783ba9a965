//! Text-format parsing helpers: bool, bytea, money, arrays.

pub(crate) type Res<T> = Result<T, &'static str>;

pub(crate) fn utf8(v: &[u8]) -> Res<&str> {
    std::str::from_utf8(v).map_err(|_| "not valid UTF-8")
}

pub(crate) fn parse_bool(v: &[u8]) -> Res<bool> {
    match v {
        b"t" | b"true" | b"TRUE" | b"y" | b"yes" | b"on" | b"1" => Ok(true),
        b"f" | b"false" | b"FALSE" | b"n" | b"no" | b"off" | b"0" => Ok(false),
        _ => Err("expected t or f"),
    }
}

pub(crate) fn parse_num<T: std::str::FromStr>(v: &[u8]) -> Res<T> {
    utf8(v)?
        .trim_ascii()
        .parse()
        .map_err(|_| "not a number of this type")
}

/// bytea text: hex (`\x0102`) or escape format (`a\\b\001`) -> `out`.
pub(crate) fn bytea_from_text(v: &[u8], out: &mut Vec<u8>) -> Res<()> {
    out.clear();
    if let Some(hex) = v.strip_prefix(b"\\x") {
        out.reserve(hex.len() / 2);
        let mut hi: Option<u8> = None;
        for &c in hex {
            if c.is_ascii_whitespace() {
                continue;
            }
            let d = (c as char).to_digit(16).ok_or("bad hex digit in bytea")? as u8;
            match hi.take() {
                None => hi = Some(d),
                Some(h) => out.push(h << 4 | d),
            }
        }
        if hi.is_some() {
            return Err("odd number of hex digits in bytea");
        }
        return Ok(());
    }
    let mut i = 0;
    while i < v.len() {
        let c = v[i];
        if c != b'\\' {
            out.push(c);
            i += 1;
        } else if v.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else if i + 3 < v.len() && v[i + 1..i + 4].iter().all(|d| (b'0'..=b'7').contains(d)) {
            let n = u32::from(v[i + 1] - b'0') * 64
                + u32::from(v[i + 2] - b'0') * 8
                + u32::from(v[i + 3] - b'0');
            out.push(u8::try_from(n).map_err(|_| "bad octal escape in bytea")?);
            i += 4;
        } else {
            return Err("bad escape in bytea");
        }
    }
    Ok(())
}

/// money text in any locale (`$1,234.56`, `-$1.00`, `($1.00)`, `1.234,56 €`) -> minor
/// units at `scale`. The last `.` or `,` followed by exactly `scale` digits is the
/// decimal point; every other non-digit is a symbol or group separator.
pub(crate) fn money_from_text(v: &[u8], scale: i8) -> Res<i64> {
    let scale = usize::try_from(scale).map_err(|_| "bad money scale")?;
    let s = v.trim_ascii();
    let negative = s.contains(&b'-') || (s.first() == Some(&b'(') && s.last() == Some(&b')'));
    let last_digit = s.iter().rposition(u8::is_ascii_digit).ok_or("no digits")?;
    let sep = s[..=last_digit]
        .iter()
        .rposition(|c| *c == b'.' || *c == b',');
    let frac_start = match sep {
        Some(p)
            if scale > 0
                && last_digit - p == scale
                && s[p + 1..=last_digit].iter().all(u8::is_ascii_digit) =>
        {
            Some(p)
        }
        _ => None,
    };
    let mut acc: i64 = 0;
    let mut frac_digits = 0;
    for (i, &c) in s.iter().enumerate() {
        if c.is_ascii_digit() {
            // Accumulate with the final sign so that i64::MIN is reachable.
            let d = i64::from(c - b'0');
            acc = acc
                .checked_mul(10)
                .and_then(|x| {
                    if negative {
                        x.checked_sub(d)
                    } else {
                        x.checked_add(d)
                    }
                })
                .ok_or("money out of range")?;
            if frac_start.is_some_and(|p| i > p) {
                frac_digits += 1;
            }
        }
    }
    for _ in frac_digits..scale {
        acc = acc.checked_mul(10).ok_or("money out of range")?;
    }
    Ok(acc)
}

/// Parses an array literal (`{1,2,NULL,"a b"}`, `[0:1]={1,2}`, `{{1,2},{3,4}}`),
/// calling `f` for each element in row-major order (nested braces are flattened);
/// `None` for an unquoted NULL. `buf` holds de-escaped element text.
pub(crate) fn parse_array<E>(
    v: &[u8],
    buf: &mut Vec<u8>,
    mut f: impl FnMut(Option<&[u8]>) -> Result<(), E>,
    err: impl Fn(&'static str) -> E,
) -> Result<(), E> {
    let mut i = 0;
    let n = v.len();
    let skip_ws = |i: &mut usize| {
        while *i < n && v[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    // Optional dimension decoration `[lo:hi][lo:hi]=`.
    if i < n && v[i] == b'[' {
        let eq = v[i..]
            .iter()
            .position(|&c| c == b'=')
            .ok_or_else(|| err("bad array dimensions"))?;
        i += eq + 1;
        skip_ws(&mut i);
    }
    if i >= n || v[i] != b'{' {
        return Err(err("array literal must start with {"));
    }
    let mut depth = 0usize;
    // true when an element or a '}' was just completed (a delimiter may follow).
    loop {
        skip_ws(&mut i);
        if i >= n {
            return Err(err("unterminated array literal"));
        }
        match v[i] {
            b'{' => {
                depth += 1;
                if depth > 1 {
                    return Err(err(super::array::MULTI_DIMENSIONAL));
                }
                i += 1;
            }
            b'}' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| err("unbalanced braces"))?;
                i += 1;
                if depth == 0 {
                    skip_ws(&mut i);
                    if i != n {
                        return Err(err("junk after array literal"));
                    }
                    return Ok(());
                }
                skip_ws(&mut i);
                if i < n && v[i] == b',' {
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                buf.clear();
                loop {
                    match v.get(i) {
                        None => return Err(err("unterminated quoted array element")),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            let c = *v.get(i + 1).ok_or_else(|| err("dangling backslash"))?;
                            buf.push(c);
                            i += 2;
                        }
                        Some(&c) => {
                            buf.push(c);
                            i += 1;
                        }
                    }
                }
                f(Some(buf))?;
                skip_ws(&mut i);
                match v.get(i) {
                    Some(b',') => i += 1,
                    Some(b'}') => {}
                    _ => return Err(err("expected , or } after an array element")),
                }
            }
            _ => {
                if depth == 0 {
                    return Err(err("array element outside braces"));
                }
                buf.clear();
                let mut escaped = false;
                while i < n && !matches!(v[i], b',' | b'}' | b'{' | b'"') {
                    if v[i] == b'\\' {
                        escaped = true;
                        i += 1;
                        if i >= n {
                            return Err(err("dangling backslash"));
                        }
                    }
                    buf.push(v[i]);
                    i += 1;
                }
                if i >= n || matches!(v[i], b'{' | b'"') {
                    return Err(err("malformed array literal"));
                }
                while buf.last().is_some_and(u8::is_ascii_whitespace) {
                    buf.pop();
                }
                if buf.is_empty() {
                    return Err(err("empty unquoted array element"));
                }
                if !escaped && buf.eq_ignore_ascii_case(b"NULL") {
                    f(None)?;
                } else {
                    f(Some(buf))?;
                }
                if v[i] == b',' {
                    i += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elems(s: &str) -> Result<Vec<Option<String>>, &'static str> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        parse_array(
            s.as_bytes(),
            &mut buf,
            |e| {
                out.push(e.map(|b| String::from_utf8(b.to_vec()).unwrap()));
                Ok(())
            },
            |e| e,
        )?;
        Ok(out)
    }

    #[test]
    fn arrays() {
        let s = |x: &str| Some(x.to_string());
        assert_eq!(elems("{}"), Ok(vec![]));
        assert_eq!(
            elems(r#"{1,2,NULL,"a b","NULL","q\"x\\"}"#),
            Ok(vec![s("1"), s("2"), None, s("a b"), s("NULL"), s("q\"x\\")])
        );
        assert_eq!(
            elems("{{1,2},{3,4}}"),
            Err(super::super::array::MULTI_DIMENSIONAL)
        );
        assert_eq!(elems("[0:1]={ a , b }"), Ok(vec![s("a"), s("b")]));
        assert_eq!(elems(r#"{"",""}"#), Ok(vec![s(""), s("")]));
        assert!(elems("{1,2").is_err());
        assert!(elems("1,2}").is_err());
        assert!(elems("{1,2}x").is_err());
    }

    #[test]
    fn bytea_and_money() {
        let mut b = Vec::new();
        bytea_from_text(b"\\x01ff", &mut b).unwrap();
        assert_eq!(b, [1, 255]);
        bytea_from_text(b"a\\\\b\\001", &mut b).unwrap();
        assert_eq!(b, b"a\\b\x01");
        assert_eq!(money_from_text(b"$1,234.56", 2), Ok(123456));
        assert_eq!(money_from_text(b"-$1,234.50", 2), Ok(-123450));
        assert_eq!(money_from_text(b"($3.00)", 2), Ok(-300));
        assert_eq!(money_from_text(b"1.234,56 EUR", 2), Ok(123456));
        assert_eq!(money_from_text(b"$1,234", 2), Ok(123400));
    }
}
