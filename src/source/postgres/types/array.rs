//! Binary array format (`array_send`): `ndim: i32`, `has_nulls: i32`,
//! `element oid: u32`, then per dimension `(length: i32, lower bound: i32)`, then per
//! element `length: i32` (-1 = NULL) and that many bytes, in row-major order.

pub(crate) type Res<T> = Result<T, &'static str>;

/// Why a multi-dimensional array is refused: one list cannot hold its
/// shape, and flattening it would change the value.
pub(crate) const MULTI_DIMENSIONAL: &str = "a multi-dimensional array: sluice keeps one-dimensional arrays only (flattening would lose the shape); store such values as text or jsonb, then resync the table";

fn be_i32(v: &[u8], at: usize) -> Res<i32> {
    v.get(at..at + 4)
        .map(|b| i32::from_be_bytes(b.try_into().unwrap()))
        .ok_or("array truncated")
}

/// Calls `f` for every element; `None` for NULL elements. Refuses more than
/// one dimension ([`MULTI_DIMENSIONAL`]).
pub(crate) fn parse_array<E>(
    v: &[u8],
    mut f: impl FnMut(Option<&[u8]>) -> Result<(), E>,
    err: impl Fn(&'static str) -> E,
) -> Result<(), E> {
    let ndim = be_i32(v, 0).map_err(&err)?;
    be_i32(v, 4).map_err(&err)?; // has_nulls flag: informational
    be_i32(v, 8).map_err(&err)?; // element oid: a domain's oid for arrays of domains
    if !(0..=6).contains(&ndim) {
        return Err(err("bad number of array dimensions"));
    }
    if ndim > 1 {
        return Err(err(MULTI_DIMENSIONAL));
    }
    let mut pos = 12;
    let mut count: usize = if ndim == 0 { 0 } else { 1 };
    for _ in 0..ndim {
        let len = be_i32(v, pos).map_err(&err)?;
        pos += 8; // length, lower bound
        let len = usize::try_from(len).map_err(|_| err("negative array dimension"))?;
        count = count
            .checked_mul(len)
            .ok_or_else(|| err("array too large"))?;
    }
    if pos > v.len() {
        return Err(err("array truncated"));
    }
    // Each element needs at least its 4-byte length word.
    if count > (v.len() - pos) / 4 {
        return Err(err("array truncated"));
    }
    for _ in 0..count {
        let len = be_i32(v, pos).map_err(&err)?;
        pos += 4;
        if len < 0 {
            if len != -1 {
                return Err(err("bad array element length"));
            }
            f(None)?;
        } else {
            let end = pos + len as usize;
            let el = v
                .get(pos..end)
                .ok_or_else(|| err("array element truncated"))?;
            f(Some(el))?;
            pos = end;
        }
    }
    if pos != v.len() {
        return Err(err("junk after array elements"));
    }
    Ok(())
}
