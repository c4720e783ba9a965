//! Unchanged TOAST values: PostgreSQL does not resend a large value an update
//! left alone (`_unchanged_cols`), the column holds NULL there, and writing that
//! NULL would erase the value. Before the insert each such cell is filled with
//! the value of the same key's latest earlier row in the same batch, else with
//! the value ClickHouse holds for the key (one batched lookup per batch).

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::{cast, interleave};
use arrow::datatypes::{DataType, UInt16Type, UInt64Type, UInt8Type};
use arrow::error::ArrowError;
use arrow::row::{RowConverter, SortField};
use arrow::util::display::{ArrayFormatter, FormatOptions};

use super::quote_ch_ident;
use crate::core::meta;

/// Cells to fill: per row, the source column indexes not sent.
pub struct Unchanged {
    pub rows: Vec<(usize, Vec<usize>)>,
}

/// Reads `_unchanged_cols`; `None` when no row has any.
pub fn unchanged(src: &RecordBatch) -> Option<Unchanged> {
    let col = src.column_by_name(meta::UNCHANGED)?;
    let list = col.as_list_opt::<i32>()?;
    let mut rows = Vec::new();
    for r in 0..list.len() {
        if list.is_null(r) {
            continue;
        }
        let v = list.value(r);
        if v.is_empty() {
            continue;
        }
        let idx: Vec<usize> = v
            .as_primitive::<UInt16Type>()
            .iter()
            .flatten()
            .map(usize::from)
            .collect();
        if !idx.is_empty() {
            rows.push((r, idx));
        }
    }
    (!rows.is_empty()).then_some(Unchanged { rows })
}

/// A cell filled from the same batch, or still to be read from ClickHouse.
pub struct Plan {
    /// Per encoded column touched: (array 0 = itself, 1 = fetched; row).
    pub picks: HashMap<usize, Vec<(usize, usize)>>,
    /// (row, source column) to read from ClickHouse.
    pub pending: Vec<(usize, usize)>,
    pub keys: arrow::row::Rows,
    /// The row whose key finds a row's earlier value: itself, or for an
    /// update that moved the key, the delete of the old key just before it.
    pub lookup_row: Vec<usize>,
    /// (row, source column) filled from an earlier row of this batch. After a
    /// restart such a row may be a replay whose earlier row is superseded
    /// (its value moot), so these are checked against ClickHouse as well.
    pub chained: Vec<(usize, usize)>,
}

/// Fills from earlier rows of the same key; leaves the rest in `pending`.
pub fn plan_in_batch(
    enc: &RecordBatch,
    origin: &[Option<usize>],
    key_cols: &[usize],
    is_deleted: &[bool],
    versions: &[u64],
    u: &Unchanged,
) -> Result<Plan, ArrowError> {
    let keys = key_rows(enc, key_cols)?;
    let n = enc.num_rows();
    let mut per_row: HashMap<usize, &Vec<usize>> = HashMap::new();
    for (r, cols) in &u.rows {
        per_row.insert(*r, cols);
    }
    let mut picks: HashMap<usize, Vec<(usize, usize)>> = HashMap::new();
    let mut pending = Vec::new();
    let mut chained = Vec::new();
    let mut last: HashMap<arrow::row::Row<'_>, usize> = HashMap::new();
    let mut lookup_row: Vec<usize> = (0..n).collect();
    // The last delete: its row and the chain its key had before it.
    let mut removed: Option<(usize, Option<usize>)> = None;
    for r in 0..n {
        let k = keys.row(r);
        if is_deleted[r] {
            removed = Some((r, last.remove(&k)));
            continue;
        }
        // An update that moves the key arrives as a delete of the old key
        // directly followed by the new row, with the same version: values it
        // left unchanged belong to the old key.
        let moved_from = match removed.take() {
            Some((d, prev)) if d + 1 == r && versions[d] == versions[r] => {
                lookup_row[r] = d;
                Some(prev)
            }
            _ => None,
        };
        if let Some(cols) = per_row.get(&r) {
            for &c in cols.iter() {
                let earlier = match moved_from {
                    Some(prev) => prev,
                    None => last.get(&k).copied(),
                };
                match earlier.as_ref() {
                    Some(&prev) => {
                        chained.push((r, c));
                        for (j, o) in origin.iter().enumerate() {
                            if *o == Some(c) {
                                let p = picks
                                    .entry(j)
                                    .or_insert_with(|| (0..n).map(|i| (0, i)).collect());
                                p[r] = p[prev];
                            }
                        }
                    }
                    None => pending.push((r, c)),
                }
            }
        }
        last.insert(k, r);
    }
    drop(last);
    Ok(Plan {
        picks,
        pending,
        keys,
        lookup_row,
        chained,
    })
}

pub fn key_rows(b: &RecordBatch, key_cols: &[usize]) -> Result<arrow::row::Rows, ArrowError> {
    let fields = key_cols
        .iter()
        .map(|&i| SortField::new(b.column(i).data_type().clone()))
        .collect();
    let conv = RowConverter::new(fields)?;
    let cols: Vec<ArrayRef> = key_cols.iter().map(|&i| b.column(i).clone()).collect();
    conv.convert_columns(&cols)
}

/// `SELECT` of the latest version of each pending key, newest first, deleted
/// rows included (a later delete means the filled value no longer matters).
pub fn lookup_sql(
    table: &str,
    enc: &RecordBatch,
    key_cols: &[usize],
    want: &[usize],
    exprs: &HashMap<usize, String>,
    rows: &[usize],
) -> Result<String, ArrowError> {
    let schema = enc.schema();
    let name = |i: usize| quote_ch_ident(schema.field(i).name());
    let expr = |i: usize| exprs.get(&i).cloned().unwrap_or_else(|| name(i));
    let keys: Vec<String> = key_cols.iter().map(|&i| name(i)).collect();
    let key_list = keys.join(", ");
    let mut cols: Vec<String> = key_cols.iter().map(|&i| expr(i)).collect();
    cols.extend(want.iter().map(|&i| expr(i)));
    cols.push(quote_ch_ident(meta::VERSION));
    cols.push(quote_ch_ident(meta::IS_DELETED));
    let opts = FormatOptions::new()
        .with_null("NULL")
        .with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.6f"))
        .with_timestamp_tz_format(Some("%Y-%m-%d %H:%M:%S%.6f"));
    let fmts: Vec<ArrayFormatter<'_>> = key_cols
        .iter()
        .map(|&i| ArrayFormatter::try_new(enc.column(i).as_ref(), &opts))
        .collect::<Result<_, _>>()?;
    let mut tuples = Vec::with_capacity(rows.len());
    for &r in rows {
        let vals: Vec<String> = fmts
            .iter()
            .map(|f| quote_ch_string(&f.value(r).to_string()))
            .collect();
        tuples.push(if vals.len() == 1 {
            vals.into_iter().next().unwrap_or_default()
        } else {
            format!("({})", vals.join(", "))
        });
    }
    let lhs = if keys.len() == 1 {
        key_list.clone()
    } else {
        format!("({key_list})")
    };
    Ok(format!(
        "SELECT {} FROM {table} WHERE {lhs} IN ({}) ORDER BY {} DESC LIMIT 1 BY {key_list}",
        cols.join(", "),
        tuples.join(", "),
        quote_ch_ident(meta::VERSION),
    ))
}

/// A ClickHouse string literal.
pub fn quote_ch_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            _ => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A cell ClickHouse cannot supply.
#[derive(Debug)]
pub struct Missing {
    pub row: usize,
    pub column: usize,
}

/// Applies the fetched rows (`fetched`: key columns, `want` columns, `_version`,
/// `_is_deleted`) to the plan and rebuilds the touched columns.
pub fn finish(
    enc: &RecordBatch,
    origin: &[Option<usize>],
    key_cols: &[usize],
    want: &[usize],
    versions: &[u64],
    mut plan: Plan,
    fetched: Option<&RecordBatch>,
) -> Result<Result<RecordBatch, Missing>, ArrowError> {
    let n = enc.num_rows();
    let mut fetched_cols: HashMap<usize, ArrayRef> = HashMap::new();
    if let Some(f) = fetched.filter(|f| f.num_rows() > 0) {
        // Cast the fetched key columns to the batch's types, then match rows.
        let nk = key_cols.len();
        let mut cast_keys = Vec::with_capacity(nk);
        for (pos, &i) in key_cols.iter().enumerate() {
            cast_keys.push(cast_to(f.column(pos), enc.column(i).data_type())?);
        }
        let fields = key_cols
            .iter()
            .map(|&i| SortField::new(enc.column(i).data_type().clone()))
            .collect();
        let conv = RowConverter::new(fields)?;
        let frows = conv.convert_columns(&cast_keys)?;
        let brows = {
            let cols: Vec<ArrayRef> = key_cols.iter().map(|&i| enc.column(i).clone()).collect();
            conv.convert_columns(&cols)?
        };
        let mut by_key: HashMap<arrow::row::Row<'_>, usize> = HashMap::new();
        for r in 0..f.num_rows() {
            by_key.entry(frows.row(r)).or_insert(r);
        }
        let fver = f.column(nk + want.len()).as_primitive::<UInt64Type>();
        let fdel = f.column(nk + want.len() + 1).as_primitive::<UInt8Type>();
        for (pos, &j) in want.iter().enumerate() {
            fetched_cols.insert(j, cast_to(f.column(nk + pos), enc.column(j).data_type())?);
        }
        let set_pick = |plan: &mut Plan, r: usize, c: usize, fr: usize| {
            for (j, o) in origin.iter().enumerate() {
                if *o == Some(c) {
                    let p = plan
                        .picks
                        .entry(j)
                        .or_insert_with(|| (0..n).map(|i| (0, i)).collect());
                    p[r] = (1, fr);
                }
            }
        };
        // Rows filled from an earlier row of the batch: if ClickHouse already
        // holds this row or a later one of its key (a replay), take that.
        for (r, c) in std::mem::take(&mut plan.chained) {
            if let Some(&fr) = by_key.get(&brows.row(r)) {
                if fver.value(fr) >= versions[r] && fdel.value(fr) == 0 {
                    set_pick(&mut plan, r, c, fr);
                }
            }
        }
        let pending = std::mem::take(&mut plan.pending);
        for (r, c) in pending {
            let v = versions[r];
            let own = by_key.get(&brows.row(r)).copied();
            let via_lookup = by_key.get(&brows.row(plan.lookup_row[r])).copied();
            let source = match own.map(|fr| (fr, fver.value(fr))) {
                // A replay after a restart: this very row was written before
                // (same value), or a later change of its key was, which
                // supersedes this row; take that value so rows of this batch
                // that copy from this one get it too. A later delete: moot.
                Some((fr, fv)) if fv >= v => (fdel.value(fr) == 0).then_some(fr),
                // First write: the key's (or, for a moved key, the old key's)
                // latest earlier row holds the value.
                _ => match via_lookup {
                    Some(fr) if fdel.value(fr) == 0 && fver.value(fr) < v => Some(fr),
                    _ => return Ok(Err(Missing { row: r, column: c })),
                },
            };
            if let Some(fr) = source {
                set_pick(&mut plan, r, c, fr);
            }
        }
        // Rows after a filled row take the filled value too.
        propagate(&mut plan);
    }
    if let Some(&(r, c)) = plan.pending.first() {
        return Ok(Err(Missing { row: r, column: c }));
    }
    let mut columns: Vec<ArrayRef> = enc.columns().to_vec();
    for (j, picks) in &plan.picks {
        let own = enc.column(*j).clone();
        let other = fetched_cols
            .get(j)
            .cloned()
            .unwrap_or_else(|| arrow::array::new_null_array(own.data_type(), 1));
        columns[*j] = interleave(&[own.as_ref(), other.as_ref()], picks)?;
    }
    Ok(Ok(RecordBatch::try_new(enc.schema(), columns)?))
}

/// After ClickHouse fills, later rows that copied an earlier row's pick
/// (itself pending at the time) copy the final pick.
fn propagate(plan: &mut Plan) {
    // In-batch copies were resolved at planning time as pointers to the
    // earlier row's own cell (0, prev); follow them to the final pick.
    for picks in plan.picks.values_mut() {
        for r in 0..picks.len() {
            let (a, src) = picks[r];
            if a == 0 && src != r {
                picks[r] = picks[src];
            }
        }
    }
}

fn cast_to(a: &ArrayRef, to: &DataType) -> Result<ArrayRef, ArrowError> {
    if a.data_type() == to {
        return Ok(a.clone());
    }
    cast(a, to)
}

pub fn decode_ipc(bytes: &[u8]) -> Result<Option<RecordBatch>, ArrowError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>()?;
    Ok(Some(arrow::compute::concat_batches(&schema, &batches)?))
}
