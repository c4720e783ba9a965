//! Synthetic but valid PostgreSQL wire data for the micro-benchmarks:
//! pgoutput messages (protocol 1, binary values, as sluice requests them)
//! and binary COPY streams, for a narrow pgbench-like table and a wide
//! 30-column mixed-type table. Values are deterministic (no RNG) and vary
//! per row so decoders cannot shortcut.

use std::collections::{HashMap, HashSet};

use bytes::{BufMut, Bytes, BytesMut};
use sluice::config::TableName;
use sluice::source::postgres::assembler::CatalogCache;
use sluice::source::postgres::types::{oid, ColumnDecoder, PgType, TypeOptions};

/// Seconds between 1970-01-01 and 2000-01-01 (PostgreSQL's epoch).
const PG_EPOCH_SECS: i64 = 946_684_800;

#[derive(Debug, Clone, Copy)]
pub enum Ty {
    Int2,
    Int4,
    Int8,
    Float8,
    Bool,
    /// numeric(18,4)
    Numeric,
    /// text of this many bytes
    Text(usize),
    Timestamptz,
    Uuid,
    Jsonb,
}

impl Ty {
    fn oid(self) -> u32 {
        match self {
            Ty::Int2 => oid::INT2,
            Ty::Int4 => oid::INT4,
            Ty::Int8 => oid::INT8,
            Ty::Float8 => oid::FLOAT8,
            Ty::Bool => oid::BOOL,
            Ty::Numeric => oid::NUMERIC,
            Ty::Text(_) => oid::TEXT,
            Ty::Timestamptz => oid::TIMESTAMPTZ,
            Ty::Uuid => oid::UUID,
            Ty::Jsonb => oid::JSONB,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Ty::Int2 => "int2",
            Ty::Int4 => "int4",
            Ty::Int8 => "int8",
            Ty::Float8 => "float8",
            Ty::Bool => "bool",
            Ty::Numeric => "numeric",
            Ty::Text(_) => "text",
            Ty::Timestamptz => "timestamptz",
            Ty::Uuid => "uuid",
            Ty::Jsonb => "jsonb",
        }
    }

    fn typmod(self) -> i32 {
        match self {
            Ty::Numeric => ((18 << 16) | 4) + 4,
            _ => -1,
        }
    }

    /// The binary send format of this type's value for row `r`, column `c`.
    fn value(self, r: u64, c: usize, out: &mut Vec<u8>) {
        let x = r.wrapping_mul(2_654_435_761).wrapping_add(c as u64 * 97);
        match self {
            Ty::Int2 => out.extend_from_slice(&((x % 30_000) as i16).to_be_bytes()),
            Ty::Int4 => out.extend_from_slice(&((x % 2_000_000_000) as i32).to_be_bytes()),
            Ty::Int8 => out.extend_from_slice(&(r as i64).to_be_bytes()),
            Ty::Float8 => {
                out.extend_from_slice(&((x % 1_000_000) as f64 / 7.0).to_bits().to_be_bytes())
            }
            Ty::Bool => out.push((x & 1) as u8),
            Ty::Numeric => numeric_scale4((x % 100_000_000_000) as i64 - 50_000_000_000, out),
            Ty::Text(n) => {
                let start = out.len();
                out.extend_from_slice(format!("row-{r}-col-{c}-").as_bytes());
                while out.len() - start < n {
                    out.push(b'a' + ((out.len() - start + x as usize) % 26) as u8);
                }
                out.truncate(start + n.max(1));
            }
            Ty::Timestamptz => {
                // 2024-01-01 + r ms, in microseconds since 2000-01-01.
                let us = (1_704_067_200 - PG_EPOCH_SECS) * 1_000_000 + r as i64 * 1000;
                out.extend_from_slice(&us.to_be_bytes());
            }
            Ty::Uuid => {
                out.extend_from_slice(&x.to_be_bytes());
                out.extend_from_slice(&r.to_be_bytes());
            }
            Ty::Jsonb => {
                out.push(1);
                out.extend_from_slice(
                    format!("{{\"k\": {r}, \"tag\": \"t{}\"}}", x % 100).as_bytes(),
                );
            }
        }
    }
}

/// numeric(18,4) binary: `units` in 1/10000.
fn numeric_scale4(units: i64, out: &mut Vec<u8>) {
    let neg = units < 0;
    let mut int = units.unsigned_abs() / 10_000;
    let frac = (units.unsigned_abs() % 10_000) as i16;
    let mut groups = Vec::new();
    while int > 0 {
        groups.push((int % 10_000) as i16);
        int /= 10_000;
    }
    groups.reverse();
    let weight = groups.len() as i16 - 1;
    let mut digits = groups;
    digits.push(frac);
    // Strip leading zero groups (none by construction) and trailing zeros.
    while digits.last() == Some(&0) {
        digits.pop();
    }
    let (weight, digits) = if digits.is_empty() {
        (0, digits)
    } else if weight < 0 {
        (-1, digits)
    } else {
        (weight, digits)
    };
    out.extend_from_slice(&(digits.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&(if neg { 0x4000u16 } else { 0 }).to_be_bytes());
    out.extend_from_slice(&4i16.to_be_bytes());
    for d in digits {
        out.extend_from_slice(&d.to_be_bytes());
    }
}

pub struct Table {
    pub name: &'static str,
    pub rel_id: u32,
    /// Column 0 is the key.
    pub columns: Vec<(String, Ty)>,
}

impl Table {
    /// pgbench_accounts-like: aid int8 key, bid int4, abalance int4, filler text(84).
    pub fn narrow() -> Table {
        Table {
            name: "narrow",
            rel_id: 16_401,
            columns: vec![
                ("aid".into(), Ty::Int8),
                ("bid".into(), Ty::Int4),
                ("abalance".into(), Ty::Int4),
                ("filler".into(), Ty::Text(84)),
            ],
        }
    }

    /// 30 columns: int8 key, then ints, float8, numeric(18,4), text,
    /// timestamptz, uuid, jsonb, bool in rotation.
    pub fn wide() -> Table {
        let rot = [
            Ty::Int4,
            Ty::Float8,
            Ty::Numeric,
            Ty::Text(24),
            Ty::Timestamptz,
            Ty::Uuid,
            Ty::Jsonb,
            Ty::Bool,
            Ty::Int2,
            Ty::Int8,
        ];
        let mut columns = vec![("id".to_string(), Ty::Int8)];
        for i in 1..30 {
            let t = rot[(i - 1) % rot.len()];
            columns.push((format!("c{i}_{}", t.name()), t));
        }
        Table {
            name: "wide",
            rel_id: 16_402,
            columns,
        }
    }

    pub fn table_name(&self) -> TableName {
        TableName::new("public", self.name)
    }

    pub fn catalog(&self) -> CatalogCache {
        let mut types = HashMap::new();
        for (_, t) in &self.columns {
            types.insert(t.oid(), PgType::base(t.oid(), t.name()));
        }
        let not_null: HashSet<String> = [self.columns[0].0.clone()].into_iter().collect();
        CatalogCache {
            types,
            not_null: [(self.rel_id, not_null)].into_iter().collect(),
            ..CatalogCache::default()
        }
    }

    /// One ColumnDecoder per column.
    pub fn decoders(&self, capacity: usize) -> Vec<ColumnDecoder> {
        let opts = TypeOptions::default();
        self.columns
            .iter()
            .map(|(_, t)| {
                let mut pg = PgType::base(t.oid(), t.name());
                pg.typmod = t.typmod();
                let m = sluice::source::postgres::types::arrow_type(&pg, &opts).unwrap();
                ColumnDecoder::new(&m, capacity)
            })
            .collect()
    }

    /// The Relation message.
    pub fn relation(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(b'R');
        b.put_u32(self.rel_id);
        put_str(&mut b, "public");
        put_str(&mut b, self.name);
        b.put_u8(b'd');
        b.put_i16(self.columns.len() as i16);
        for (i, (name, t)) in self.columns.iter().enumerate() {
            b.put_u8(u8::from(i == 0));
            put_str(&mut b, name);
            b.put_u32(t.oid());
            b.put_i32(t.typmod());
        }
        b.freeze()
    }

    /// pgoutput TupleData ('b' values) of row `r`.
    fn tuple(&self, r: u64, b: &mut BytesMut, scratch: &mut Vec<u8>) {
        b.put_i16(self.columns.len() as i16);
        for (c, (_, t)) in self.columns.iter().enumerate() {
            scratch.clear();
            t.value(r, c, scratch);
            b.put_u8(b'b');
            b.put_i32(scratch.len() as i32);
            b.put_slice(scratch);
        }
    }

    fn key_tuple(&self, r: u64, b: &mut BytesMut, scratch: &mut Vec<u8>) {
        b.put_i16(self.columns.len() as i16);
        for (c, (_, t)) in self.columns.iter().enumerate() {
            if c == 0 {
                scratch.clear();
                t.value(r, c, scratch);
                b.put_u8(b'b');
                b.put_i32(scratch.len() as i32);
                b.put_slice(scratch);
            } else {
                b.put_u8(b'n');
            }
        }
    }

    /// A replication stream of `changes` row changes in transactions of
    /// `per_txn`: 70% inserts, 20% updates, 10% deletes. Returns (XLogData
    /// payloads in order, starting with the Relation; number of changes).
    pub fn stream(&self, changes: u64, per_txn: u64) -> Vec<Bytes> {
        let mut out = vec![self.relation()];
        let mut scratch = Vec::new();
        let mut lsn = 0x1_0000_0000u64;
        let ts = (1_704_067_200 - PG_EPOCH_SECS) * 1_000_000;
        let mut r = 0u64;
        let mut xid = 1000u32;
        while r < changes {
            let n = per_txn.min(changes - r);
            let mut b = BytesMut::new();
            b.put_u8(b'B');
            b.put_u64(lsn + n * 200 + 100);
            b.put_i64(ts + r as i64);
            b.put_u32(xid);
            out.push(b.freeze());
            for _ in 0..n {
                let mut b = BytesMut::new();
                match r % 10 {
                    0..=6 => {
                        b.put_u8(b'I');
                        b.put_u32(self.rel_id);
                        b.put_u8(b'N');
                        self.tuple(r, &mut b, &mut scratch);
                    }
                    7 | 8 => {
                        b.put_u8(b'U');
                        b.put_u32(self.rel_id);
                        b.put_u8(b'N');
                        self.tuple(r, &mut b, &mut scratch);
                    }
                    _ => {
                        b.put_u8(b'D');
                        b.put_u32(self.rel_id);
                        b.put_u8(b'K');
                        self.key_tuple(r, &mut b, &mut scratch);
                    }
                }
                out.push(b.freeze());
                r += 1;
                lsn += 200;
            }
            let mut b = BytesMut::new();
            b.put_u8(b'C');
            b.put_u8(0);
            b.put_u64(lsn + 100);
            b.put_u64(lsn + 200);
            b.put_i64(ts + r as i64);
            out.push(b.freeze());
            lsn += 200;
            xid += 1;
        }
        out
    }

    /// A `COPY ... TO STDOUT (FORMAT binary)` stream of `rows` rows.
    pub fn copy_binary(&self, rows: u64) -> Vec<u8> {
        let mut out = b"PGCOPY\n\xff\r\n\0".to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        let mut scratch = Vec::new();
        for r in 0..rows {
            out.extend_from_slice(&(self.columns.len() as i16).to_be_bytes());
            for (c, (_, t)) in self.columns.iter().enumerate() {
                scratch.clear();
                t.value(r, c, &mut scratch);
                out.extend_from_slice(&(scratch.len() as i32).to_be_bytes());
                out.extend_from_slice(&scratch);
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_slice(s.as_bytes());
    b.put_u8(0);
}
