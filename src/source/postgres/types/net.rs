//! uuid, inet/cidr, macaddr[8], pg_lsn: binary form -> PostgreSQL's text form.

use std::fmt::Write;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The standard lowercase text form of a UUID, `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub fn format_uuid(bytes: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s
}

/// UUID text (hyphens anywhere, optional braces, any case) -> bytes.
pub(crate) fn uuid_from_text(v: &[u8]) -> Result<[u8; 16], &'static str> {
    let v = match v {
        [b'{', inner @ .., b'}'] => inner,
        _ => v,
    };
    let mut out = [0u8; 16];
    let mut n = 0;
    for &c in v {
        if c == b'-' {
            continue;
        }
        let d = (c as char).to_digit(16).ok_or("not a hex digit")? as u8;
        if n >= 32 {
            return Err("more than 32 hex digits");
        }
        out[n / 2] |= if n % 2 == 0 { d << 4 } else { d };
        n += 1;
    }
    if n != 32 {
        return Err("fewer than 32 hex digits");
    }
    Ok(out)
}

/// `inet_send` / `cidr_send`: family (2 = IPv4, 3 = IPv6), bits, is_cidr, address
/// length, address bytes. Writes PostgreSQL's output: `/bits` omitted for an inet
/// whose mask is full; IPv6 with the longest run (>= 2) of zero groups as `::` and
/// embedded IPv4 for `::a.b.c.d` / `::ffff:a.b.c.d`.
pub(crate) fn inet_to_text(v: &[u8], out: &mut String) -> Result<(), &'static str> {
    if v.len() < 4 {
        return Err("shorter than the 4-byte inet header");
    }
    let (family, bits, is_cidr, nb) = (v[0], v[1], v[2] != 0, usize::from(v[3]));
    let addr = &v[4..];
    if addr.len() != nb {
        return Err("address length mismatch");
    }
    let max_bits = match (family, nb) {
        (2, 4) => 32,
        (3, 16) => 128,
        _ => return Err("unknown address family"),
    };
    if bits > max_bits {
        return Err("mask longer than the address");
    }
    if family == 2 {
        let _ = write!(out, "{}.{}.{}.{}", addr[0], addr[1], addr[2], addr[3]);
    } else {
        write_ipv6(addr, out);
    }
    if is_cidr || bits != max_bits {
        let _ = write!(out, "/{bits}");
    }
    Ok(())
}

fn write_ipv6(addr: &[u8], out: &mut String) {
    let mut w = [0u16; 8];
    for (i, x) in w.iter_mut().enumerate() {
        *x = u16::from_be_bytes([addr[2 * i], addr[2 * i + 1]]);
    }
    // Longest run of zero groups (first one wins a tie); runs of 1 are not compressed.
    let (mut best, mut best_len) = (usize::MAX, 0);
    let mut i = 0;
    while i < 8 {
        if w[i] == 0 {
            let start = i;
            while i < 8 && w[i] == 0 {
                i += 1;
            }
            if i - start > best_len {
                best = start;
                best_len = i - start;
            }
        } else {
            i += 1;
        }
    }
    if best_len < 2 {
        best = usize::MAX;
    }
    let mut i = 0;
    while i < 8 {
        if i == best {
            out.push(':');
            if best + best_len == 8 {
                out.push(':');
            }
            i += best_len;
            continue;
        }
        if i != 0 {
            out.push(':');
        }
        // Embedded IPv4: ::a.b.c.d (compat, not ::1 / ::) and ::ffff:a.b.c.d (mapped).
        if i == 6
            && best == 0
            && (best_len == 6 || (best_len == 7 && w[7] != 1) || (best_len == 5 && w[5] == 0xffff))
        {
            let _ = write!(out, "{}.{}.{}.{}", addr[12], addr[13], addr[14], addr[15]);
            return;
        }
        let _ = write!(out, "{:x}", w[i]);
        i += 1;
    }
}

/// `08:00:2b:01:02:03` (6 bytes) or `08:00:2b:01:02:03:04:05` (8 bytes).
pub(crate) fn mac_to_text(v: &[u8], len: usize, out: &mut String) -> Result<(), &'static str> {
    if v.len() != len {
        return Err(if len == 6 {
            "macaddr must be 6 bytes"
        } else {
            "macaddr8 must be 8 bytes"
        });
    }
    for (i, b) in v.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
    Ok(())
}

/// pg_lsn: u64 -> `XXXXXXXX/XXXXXXXX` (uppercase hex, no padding).
pub(crate) fn lsn_to_text(v: &[u8], out: &mut String) -> Result<(), &'static str> {
    let x = u64::from_be_bytes(v.try_into().map_err(|_| "pg_lsn must be 8 bytes")?);
    let _ = write!(out, "{:X}/{:X}", x >> 32, x & 0xffff_ffff);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(words: [u16; 8], bits: u8) -> String {
        let mut v = vec![3, bits, 0, 16];
        for w in words {
            v.extend_from_slice(&w.to_be_bytes());
        }
        let mut s = String::new();
        inet_to_text(&v, &mut s).unwrap();
        s
    }

    #[test]
    fn ipv6_forms() {
        assert_eq!(v6([0; 8], 128), "::");
        assert_eq!(v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "::1");
        assert_eq!(v6([1, 0, 0, 0, 0, 0, 0, 0], 128), "1::");
        assert_eq!(
            v6([0x2001, 0xdb8, 0, 1, 0, 0, 0, 1], 64),
            "2001:db8:0:1::1/64"
        );
        assert_eq!(
            v6([0x2001, 0xdb8, 1, 1, 1, 1, 0, 1], 128),
            "2001:db8:1:1:1:1:0:1"
        );
        assert_eq!(
            v6([0, 0, 0, 0, 0, 0xffff, 0x0102, 0x0304], 128),
            "::ffff:1.2.3.4"
        );
    }

    #[test]
    fn uuid_roundtrip() {
        let b = uuid_from_text(b"{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}").unwrap();
        assert_eq!(format_uuid(&b), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
        assert!(uuid_from_text(b"a0eebc99").is_err());
    }
}
