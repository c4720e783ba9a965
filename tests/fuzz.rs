//! Bounded property-based fuzzing of every parser that reads bytes from a
//! server or a user: the pgoutput decoder, replication framing (XLogData,
//! keepalives), the COPY binary parser, each binary (and text) type decoder
//! into Arrow, the TOML config loader, and ClickHouse error parsing.
//!
//! Inputs are captured fixtures (tests/fixtures/) and valid encodings made
//! here, mutated: bit flips, bytes set to 0x00/0x7f/0xff, truncation, junk
//! appended, and 4-byte fields set huge. Properties:
//! - no panic (a panic fails the case, and proptest shrinks it);
//! - no allocation driven by an unchecked length field: the largest single
//!   allocation while handling one input stays under a bound set by the
//!   input's size (a counting allocator, per thread);
//! - malformed input gives an error whose message is not empty.
//!
//! `SLUICE_FUZZ_CASES` sets the cases per target (default below, sized for
//! a debug build on 2 cores in well under a minute); executions per target
//! are printed (`cargo test --test fuzz -- --nocapture`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use sluice::source::postgres::copy_binary::CopyBinaryDecoder;
use sluice::source::postgres::pgoutput::parse_copy_data;
use sluice::source::postgres::pgoutput::PgOutputDecoder;
use sluice::source::postgres::types::ColumnDecoder;
use sluice::source::postgres::types::{arrow_type, oid, PgType, PgTypeKind, TypeOptions};

const DEFAULT_CASES: u32 = 20_000;

// ------------------------------------------------------------ allocations

struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(layout.size())));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(new_size)));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and fails the case if any single allocation in it exceeded
/// what `input_len` bytes can justify.
fn bounded<T>(input_len: usize, f: impl FnOnce() -> T) -> Result<T, TestCaseError> {
    LARGEST.with(|l| l.set(0));
    let out = f();
    let largest = LARGEST.with(|l| l.get());
    // Generous for real growth (Arrow builders, buffers doubling), far
    // below what a length field of 0x7fffffff would ask for.
    let bound = 64 * input_len + (8 << 20);
    if largest > bound {
        return Err(TestCaseError::fail(format!(
            "one allocation of {largest} bytes for {input_len} input bytes"
        )));
    }
    Ok(out)
}

// ------------------------------------------------------------ mutations

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Truncate(Index),
    Append(Vec<u8>),
    /// A 4-byte big-endian field set to a huge or negative value.
    HugeField(Index, u32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (
            any::<Index>(),
            prop_oneof![Just(0u8), Just(0x7f), Just(0xff), any::<u8>()]
        )
            .prop_map(|(i, v)| Mutation::SetByte(i, v)),
        any::<Index>().prop_map(Mutation::Truncate),
        prop::collection::vec(any::<u8>(), 1..24).prop_map(Mutation::Append),
        (
            any::<Index>(),
            prop_oneof![
                Just(0x7fff_ffffu32),
                Just(0xffff_ffff),
                Just(0x8000_0000),
                Just(0x4000_0001),
                any::<u32>()
            ]
        )
            .prop_map(|(i, v)| Mutation::HugeField(i, v)),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..4)
}

fn apply(data: &[u8], muts: &[Mutation]) -> Vec<u8> {
    let mut v = data.to_vec();
    for m in muts {
        match m {
            Mutation::FlipBit(i, b) if !v.is_empty() => {
                let at = i.index(v.len());
                v[at] ^= 1 << b;
            }
            Mutation::SetByte(i, x) if !v.is_empty() => {
                let at = i.index(v.len());
                v[at] = *x;
            }
            Mutation::Truncate(i) => {
                let len = i.index(v.len() + 1);
                v.truncate(len);
            }
            Mutation::Append(extra) => v.extend_from_slice(extra),
            Mutation::HugeField(i, x) if v.len() >= 4 => {
                let at = i.index(v.len() - 3);
                v[at..at + 4].copy_from_slice(&x.to_be_bytes());
            }
            _ => {}
        }
    }
    v
}

// ------------------------------------------------------------ runner

fn cases() -> u32 {
    std::env::var("SLUICE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// Runs one target; panics with the shrunk input on a failure.
fn fuzz<S: Strategy>(
    target: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let cases = cases();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let executions = std::sync::atomic::AtomicU64::new(0);
    let result = runner.run(&strategy, |input| {
        executions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        test(input)
    });
    let executions = executions.into_inner();
    if let Err(e) = result {
        panic!("fuzz target {target}: {e}");
    }
    println!(
        "fuzz target {target}: {cases} cases, {executions} executions (with shrinking), no failure"
    );
}

fn error_says_something(e: &dyn std::fmt::Display) -> Result<(), TestCaseError> {
    if e.to_string().trim().is_empty() {
        return Err(TestCaseError::fail("an error without a message"));
    }
    Ok(())
}

// ------------------------------------------------------------ seeds

fn unhex(line: &str) -> Vec<u8> {
    (0..line.len() / 2)
        .map(|i| u8::from_str_radix(&line[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// Every captured pgoutput fixture: (protocol version, messages).
fn pgoutput_fixtures() -> Vec<(u32, Vec<Bytes>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pgoutput");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.extension().is_none_or(|e| e != "hex") {
            continue;
        }
        let proto = name
            .rsplit_once("_v")
            .and_then(|(_, v)| v.chars().next()?.to_digit(10))
            .unwrap_or(2);
        let text = std::fs::read_to_string(&path).unwrap();
        let msgs: Vec<Bytes> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| Bytes::from(unhex(l)))
            .collect();
        if !msgs.is_empty() {
            out.push((proto, msgs));
        }
    }
    assert!(out.len() >= 10, "fixtures missing in {}", dir.display());
    out
}

/// Binary encodings of values of each type decoder, valid as far as made here.
fn value_seeds(oid: u32) -> Vec<Vec<u8>> {
    let be = |v: &[u8]| v.to_vec();
    match oid {
        oid::BOOL => vec![be(&[1]), be(&[0])],
        oid::INT2 => vec![be(&7i16.to_be_bytes())],
        oid::INT4 | oid::DATE => vec![be(&123456i32.to_be_bytes())],
        oid::INT8 | oid::TIMESTAMP | oid::TIMESTAMPTZ | oid::TIME | oid::MONEY | oid::PG_LSN => {
            vec![be(&1_700_000_000_123_456i64.to_be_bytes())]
        }
        oid::FLOAT4 => vec![be(&1.5f32.to_be_bytes())],
        oid::FLOAT8 => vec![be(&2.25f64.to_be_bytes())],
        oid::UUID => vec![(0u8..16).collect()],
        oid::TIMETZ => vec![[1i64.to_be_bytes().as_slice(), &3600i32.to_be_bytes()].concat()],
        oid::INTERVAL => vec![[
            5_000_000i64.to_be_bytes().as_slice(),
            &3i32.to_be_bytes(),
            &2i32.to_be_bytes(),
        ]
        .concat()],
        // ndigits 2, weight 1, positive, dscale 2: 1234.56
        oid::NUMERIC => vec![be(&[0, 2, 0, 1, 0, 0, 0, 2, 0, 12, 13, 128])],
        oid::JSONB => vec![be(b"\x01{\"a\": [1, 2]}")],
        oid::INET | oid::CIDR => vec![be(&[2, 24, 1, 4, 10, 0, 0, 0])],
        oid::MACADDR => vec![be(&[1, 2, 3, 4, 5, 6])],
        oid::MACADDR8 => vec![be(&[1, 2, 3, 4, 5, 6, 7, 8])],
        _ => vec![be(b"some text \xc3\xa9")],
    }
}

/// A one-dimensional array of two int4 (one NULL) in the binary format.
fn int4_array() -> Vec<u8> {
    let mut v = Vec::new();
    for x in [1i32, 1, oid::INT4 as i32, 2, 1] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v.extend_from_slice(&4i32.to_be_bytes());
    v.extend_from_slice(&42i32.to_be_bytes());
    v.extend_from_slice(&(-1i32).to_be_bytes());
    v
}

const BASE_TYPES: &[(u32, &str)] = &[
    (oid::BOOL, "bool"),
    (oid::BYTEA, "bytea"),
    (oid::CHAR, "char"),
    (oid::NAME, "name"),
    (oid::INT8, "int8"),
    (oid::INT2, "int2"),
    (oid::INT4, "int4"),
    (oid::TEXT, "text"),
    (oid::OID, "oid"),
    (oid::JSON, "json"),
    (oid::XML, "xml"),
    (oid::CIDR, "cidr"),
    (oid::FLOAT4, "float4"),
    (oid::FLOAT8, "float8"),
    (oid::MACADDR8, "macaddr8"),
    (oid::MONEY, "money"),
    (oid::MACADDR, "macaddr"),
    (oid::INET, "inet"),
    (oid::BPCHAR, "bpchar"),
    (oid::VARCHAR, "varchar"),
    (oid::DATE, "date"),
    (oid::TIME, "time"),
    (oid::TIMESTAMP, "timestamp"),
    (oid::TIMESTAMPTZ, "timestamptz"),
    (oid::INTERVAL, "interval"),
    (oid::TIMETZ, "timetz"),
    (oid::NUMERIC, "numeric"),
    (oid::UUID, "uuid"),
    (oid::PG_LSN, "pg_lsn"),
    (oid::JSONB, "jsonb"),
];

/// Every type the decoders know: the base types, a numeric with a declared
/// precision, arrays of each base type, and a range (carried as text).
fn all_types() -> Vec<(PgType, Vec<Vec<u8>>)> {
    let mut out = Vec::new();
    for &(o, name) in BASE_TYPES {
        out.push((PgType::base(o, name), value_seeds(o)));
        let array = PgType {
            oid: 0,
            name: format!("_{name}"),
            typmod: -1,
            kind: PgTypeKind::Array {
                element: Box::new(PgType::base(o, name)),
            },
        };
        let seeds = if o == oid::INT4 {
            vec![int4_array()]
        } else {
            vec![int4_array(), vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]]
        };
        out.push((array, seeds));
    }
    let mut decimal = PgType::base(oid::NUMERIC, "numeric");
    decimal.typmod = ((12 << 16) | 2) + 4;
    out.push((decimal, value_seeds(oid::NUMERIC)));
    out.push((
        PgType {
            oid: 3904,
            name: "int4range".into(),
            typmod: -1,
            kind: PgTypeKind::Other,
        },
        vec![b"[1,5)".to_vec()],
    ));
    out
}

// ------------------------------------------------------------ targets

#[test]
fn fuzz_pgoutput_decoder() {
    let fixtures = pgoutput_fixtures();
    let n = fixtures.len();
    fuzz(
        "pgoutput",
        (0..n, any::<Index>(), mutations()),
        |(f, at, muts)| {
            let (proto, msgs) = &fixtures[f];
            let at = at.index(msgs.len());
            let mut decoder = PgOutputDecoder::new(*proto);
            // The stream as captured up to the mutated message, so the
            // decoder has its relations and stream state.
            for m in &msgs[..at] {
                let _ = decoder.decode(m.clone());
            }
            let bad = apply(&msgs[at], &muts);
            let len = bad.len();
            let result = bounded(len, || decoder.decode(Bytes::from(bad)))?;
            if let Err(e) = &result {
                error_says_something(e)?;
            }
            for m in &msgs[at + 1..] {
                let len = m.len();
                let _ = bounded(len, || decoder.decode(m.clone()))?;
            }
            Ok(())
        },
    );
}

#[test]
fn fuzz_replication_framing() {
    let payloads: Vec<Bytes> = pgoutput_fixtures()
        .into_iter()
        .flat_map(|(_, m)| m)
        .collect();
    let n = payloads.len();
    fuzz(
        "xlogdata_framing",
        (0..n, any::<bool>(), mutations()),
        |(i, keepalive, muts)| {
            let mut frame = Vec::new();
            if keepalive {
                frame.push(b'k');
                frame.extend_from_slice(&0x1_0000u64.to_be_bytes());
                frame.extend_from_slice(&7u64.to_be_bytes());
                frame.push(1);
            } else {
                frame.push(b'w');
                frame.extend_from_slice(&0x1_0000u64.to_be_bytes());
                frame.extend_from_slice(&0x2_0000u64.to_be_bytes());
                frame.extend_from_slice(&7u64.to_be_bytes());
                frame.extend_from_slice(&payloads[i]);
            }
            let bad = apply(&frame, &muts);
            let len = bad.len();
            let result = bounded(len, || parse_copy_data(Bytes::from(bad)))?;
            if let Err(e) = &result {
                error_says_something(e)?;
            }
            Ok(())
        },
    );
}

/// A COPY (FORMAT binary) stream of `rows` rows over `types`, from the seeds.
fn copy_stream(types: &[(PgType, Vec<Vec<u8>>)], rows: usize) -> Vec<u8> {
    let mut v = b"PGCOPY\n\xff\r\n\0".to_vec();
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    for r in 0..rows {
        v.extend_from_slice(&(types.len() as i16).to_be_bytes());
        for (c, (_, seeds)) in types.iter().enumerate() {
            if (r + c) % 5 == 4 {
                v.extend_from_slice(&(-1i32).to_be_bytes());
                continue;
            }
            let value = &seeds[r % seeds.len()];
            v.extend_from_slice(&(value.len() as i32).to_be_bytes());
            v.extend_from_slice(value);
        }
    }
    v.extend_from_slice(&(-1i16).to_be_bytes());
    v
}

#[test]
fn fuzz_copy_binary() {
    let all = all_types();
    let opts = TypeOptions::default();
    // A few column sets: narrow, temporal, numeric and arrays, text-ish.
    let picks: Vec<Vec<usize>> = vec![
        vec![4, 14, 6],
        vec![40, 42, 44, 46, 48, 50],
        vec![52, 60, 13, 8],
        vec![0, 2, 26, 28, 34, 36],
    ];
    let sets: Vec<Vec<(PgType, Vec<Vec<u8>>)>> = picks
        .iter()
        .map(|p| p.iter().map(|&i| all[i % all.len()].clone()).collect())
        .collect();
    let streams: Vec<Vec<u8>> = sets.iter().map(|s| copy_stream(s, 20)).collect();
    fuzz(
        "copy_binary",
        (0..sets.len(), mutations(), 1usize..9000),
        |(s, muts, chunk)| {
            let bad = apply(&streams[s], &muts);
            let len = bad.len();
            bounded(len, || -> Result<(), TestCaseError> {
                let mut decoders: Vec<ColumnDecoder> = sets[s]
                    .iter()
                    .map(|(t, _)| ColumnDecoder::new(&arrow_type(t, &opts).unwrap(), 64))
                    .collect();
                let mut copy = CopyBinaryDecoder::new(decoders.len());
                for piece in bad.chunks(chunk) {
                    match copy.feed(piece, &mut decoders) {
                        Ok(_) => {}
                        Err(e) => {
                            error_says_something(&e)?;
                            break;
                        }
                    }
                }
                if let Err(e) = copy.finish() {
                    error_says_something(&e)?;
                }
                for d in &mut decoders {
                    let _ = d.finish();
                }
                Ok(())
            })?
        },
    );
}

#[test]
fn fuzz_type_decoders() {
    let all = all_types();
    let opts = TypeOptions::default();
    let n = all.len();
    fuzz(
        "type_decoders",
        (
            0..n,
            any::<Index>(),
            prop_oneof![
                3 => mutations(),
                1 => Just(Vec::new()),
            ],
            prop_oneof![
                Just(None),
                prop::collection::vec(any::<u8>(), 0..48).prop_map(Some)
            ],
        ),
        |(t, seed, muts, random)| {
            let (ty, seeds) = &all[t];
            let mapping = arrow_type(ty, &opts).unwrap();
            let value = match random {
                Some(r) => r,
                None => apply(&seeds[seed.index(seeds.len())], &muts),
            };
            let len = value.len();
            bounded(len, || -> Result<(), TestCaseError> {
                let mut d = ColumnDecoder::new(&mapping, 4);
                if let Err(e) = d.append_binary(Some(&value)) {
                    error_says_something(&e)?;
                }
                if let Err(e) = d.append_text(Some(&value)) {
                    error_says_something(&e)?;
                }
                d.append_null();
                let _ = d.finish();
                Ok(())
            })?
        },
    );
}

#[test]
fn fuzz_config_loader() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut seeds = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            seeds.push(std::fs::read(&path).unwrap());
        }
    }
    assert!(!seeds.is_empty());
    let n = seeds.len();
    fuzz("config_toml", (0..n, mutations()), |(s, muts)| {
        let bad = apply(&seeds[s], &muts);
        let text = String::from_utf8_lossy(&bad).into_owned();
        let path = Path::new("fuzz.toml");
        let len = text.len();
        bounded(len, || -> Result<(), TestCaseError> {
            match sluice::config::parse(&text, path) {
                Err(e) => error_says_something(&e)?,
                Ok(raw) => {
                    let env = |_: &str| Some("from-env".to_string());
                    let read = |_: &str| Ok("from-file".to_string());
                    if let Err(e) = sluice::config::validate(&raw, &env, &read) {
                        error_says_something(&e)?;
                    }
                }
            }
            Ok(())
        })?
    });
}

#[test]
fn fuzz_clickhouse_error_parsing() {
    let seeds: Vec<&[u8]> = vec![
        b"Code: 516. DB::Exception: default: Authentication failed: password is incorrect. (AUTHENTICATION_FAILED) (version 24.3.1)",
        b"bad response: Code: 252. DB::Exception: Too many parts (300). (TOO_MANY_PARTS)",
        b"Code: 60. DB::Exception: Table db.t does not exist. (UNKNOWN_TABLE)",
        b"Code: ",
    ];
    let n = seeds.len();
    fuzz("clickhouse_errors", (0..n, mutations()), |(s, muts)| {
        let bad = apply(seeds[s], &muts);
        let text = String::from_utf8_lossy(&bad).into_owned();
        let len = text.len();
        bounded(len, || {
            if let Some(code) = sluice::sink::clickhouse::error_code(&text) {
                let _ = sluice::sink::clickhouse::is_retryable_code(code);
            }
        })?;
        Ok(())
    });
}

/// The allocation check is not vacuous: an allocation sized by a length
/// field, as a careless parser would make it, fails the case.
#[test]
fn the_allocation_bound_catches_a_length_driven_allocation() {
    let claimed = u32::from_be_bytes([0x7f, 0xff, 0xff, 0xff]) as usize;
    let caught = bounded(8, || Vec::<u8>::with_capacity(claimed).capacity());
    assert!(caught.is_err());
    assert!(bounded(8, || Vec::<u8>::with_capacity(4096).capacity()).is_ok());
}
