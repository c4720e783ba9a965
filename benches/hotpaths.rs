//! Micro-benchmarks of sluice's hot paths, each on a narrow (4 columns,
//! pgbench_accounts-like) and a wide (30 mixed-type columns) table:
//!
//! - `pgoutput_decode`: XLogData payloads -> `PgOutputMessage` (changes/s, MB/s)
//! - `copy_binary`: binary COPY bytes -> Arrow columns (rows/s, MB/s)
//! - `assemble`: decoded messages -> per-table Arrow batches through
//!   `Assembler` (changes/s)
//! - `arrow_ipc`: a batch -> Arrow IPC stream (ClickHouse `FORMAT
//!   ArrowStream` body; rows/s, MB/s of output)
//! - `envelope`: a batch -> Debezium JSON envelope + key per row (rows/s,
//!   MB/s of output)
//!
//! Inputs are synthesized (benches/synth): valid wire bytes, deterministic
//! values. Run: `cargo bench --bench hotpaths` (a few minutes on 2 cores);
//! one group: `cargo bench --bench hotpaths -- copy_binary`.

mod synth;

use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sluice::core::{SinkItem, TableBatch};
use sluice::sink::kafka::envelope::{EnvelopeEncoder, SourceInfo};
use sluice::source::postgres::assembler::Assembler;
use sluice::source::postgres::copy_binary::CopyBinaryDecoder;
use sluice::source::postgres::lsn::Lsn;
use sluice::source::postgres::pgoutput::{PgOutputDecoder, PgOutputMessage};
use sluice::source::postgres::types::TypeOptions;
use synth::Table;

/// Changes per pgoutput stream / rows per batch.
const CHANGES: u64 = 20_000;
/// Rows per transaction in the synthetic stream.
const PER_TXN: u64 = 10;
/// Chunk size fed to the COPY parser (tokio-postgres hands over one
/// CopyData message per row; 64 KiB chunks are the pessimistic case of
/// tuples straddling chunk boundaries).
const COPY_CHUNK: usize = 64 * 1024;

fn tables() -> [Table; 2] {
    [Table::narrow(), Table::wide()]
}

fn configure(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
}

fn changes_in(msgs: &[Bytes]) -> u64 {
    msgs.iter()
        .filter(|m| matches!(m.first(), Some(b'I' | b'U' | b'D')))
        .count() as u64
}

fn pgoutput_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("pgoutput_decode");
    configure(&mut g);
    for t in tables() {
        let msgs = t.stream(CHANGES, PER_TXN);
        let bytes: u64 = msgs.iter().map(|m| m.len() as u64).sum();
        let changes = changes_in(&msgs);
        let run = |msgs: &[Bytes]| {
            let mut d = PgOutputDecoder::new(1);
            let mut n = 0u64;
            for m in msgs {
                let msg = d.decode(m.clone()).expect("valid message");
                if matches!(
                    msg,
                    PgOutputMessage::Insert { .. }
                        | PgOutputMessage::Update { .. }
                        | PgOutputMessage::Delete { .. }
                ) {
                    n += 1;
                }
            }
            n
        };
        assert_eq!(run(&msgs), changes);
        g.throughput(Throughput::Elements(changes));
        g.bench_function(format!("{}/changes", t.name), |b| b.iter(|| run(&msgs)));
        g.throughput(Throughput::Bytes(bytes));
        g.bench_function(format!("{}/bytes", t.name), |b| b.iter(|| run(&msgs)));
    }
    g.finish();
}

fn copy_binary(c: &mut Criterion) {
    let mut g = c.benchmark_group("copy_binary");
    configure(&mut g);
    for t in tables() {
        let stream = t.copy_binary(CHANGES);
        let run = |stream: &[u8]| {
            let mut cols = t.decoders(CHANGES as usize);
            let mut d = CopyBinaryDecoder::new(cols.len());
            for chunk in stream.chunks(COPY_CHUNK) {
                d.feed(chunk, &mut cols).expect("valid COPY data");
            }
            let rows = d.finish().expect("complete stream");
            let arrays: Vec<_> = cols.iter_mut().map(|c| c.finish()).collect();
            (rows, arrays.len())
        };
        assert_eq!(run(&stream).0, CHANGES);
        g.throughput(Throughput::Elements(CHANGES));
        g.bench_function(format!("{}/rows", t.name), |b| b.iter(|| run(&stream)));
        g.throughput(Throughput::Bytes(stream.len() as u64));
        g.bench_function(format!("{}/bytes", t.name), |b| b.iter(|| run(&stream)));
    }
    g.finish();
}

/// Decoded messages of a table's stream (Relation first).
fn decoded(t: &Table) -> Vec<PgOutputMessage> {
    let mut d = PgOutputDecoder::new(1);
    t.stream(CHANGES, PER_TXN)
        .into_iter()
        .map(|m| d.decode(m).unwrap())
        .collect()
}

/// Runs messages through an Assembler; returns the flushed batches.
fn assemble(t: &Table, msgs: Vec<PgOutputMessage>) -> Vec<TableBatch> {
    let catalog = t.catalog();
    let mut a = Assembler::new(&[t.table_name()], TypeOptions::default(), Lsn(0));
    let mut wal = 0x1_0000_0000u64;
    for m in msgs {
        wal += 200;
        a.handle(m, Lsn(wal), &catalog).expect("valid change");
    }
    a.take_flush()
        .items
        .into_iter()
        .filter_map(|i| match i {
            SinkItem::Rows(b) => Some(b),
            SinkItem::Truncate(..) => None,
        })
        .collect()
}

fn assembler(c: &mut Criterion) {
    let mut g = c.benchmark_group("assemble");
    configure(&mut g);
    for t in tables() {
        let msgs = decoded(&t);
        let rows: usize = assemble(&t, msgs.clone())
            .iter()
            .map(|b| b.batch.num_rows())
            .sum();
        assert_eq!(rows as u64, CHANGES);
        g.throughput(Throughput::Elements(CHANGES));
        g.bench_function(format!("{}/changes", t.name), |b| {
            b.iter_batched(|| msgs.clone(), |m| assemble(&t, m), BatchSize::LargeInput)
        });
    }
    g.finish();
}

fn batch_of(t: &Table) -> TableBatch {
    let mut batches = assemble(t, decoded(t));
    assert_eq!(batches.len(), 1);
    batches.pop().unwrap()
}

fn ipc_stream(tb: &TableBatch) -> Vec<u8> {
    let mut out = Vec::with_capacity(tb.batch.get_array_memory_size());
    let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, tb.batch.schema_ref())
        .expect("schema encodes");
    w.write(&tb.batch).expect("batch encodes");
    w.finish().expect("stream ends");
    drop(w);
    out
}

fn arrow_ipc(c: &mut Criterion) {
    let mut g = c.benchmark_group("arrow_ipc");
    configure(&mut g);
    for t in tables() {
        let tb = batch_of(&t);
        let size = ipc_stream(&tb).len() as u64;
        g.throughput(Throughput::Elements(tb.batch.num_rows() as u64));
        g.bench_function(format!("{}/rows", t.name), |b| b.iter(|| ipc_stream(&tb)));
        g.throughput(Throughput::Bytes(size));
        g.bench_function(format!("{}/bytes", t.name), |b| b.iter(|| ipc_stream(&tb)));
    }
    g.finish();
}

fn envelopes(tb: &TableBatch, info: &SourceInfo, out: &mut Vec<u8>) -> usize {
    let enc = EnvelopeEncoder::new(tb, info).expect("batch has metadata");
    let mut total = 0;
    for row in 0..enc.num_rows() {
        out.clear();
        enc.write_key(row, out);
        enc.write_value(row, 1_704_067_200_000, out)
            .expect("valid op");
        total += out.len();
    }
    total
}

fn envelope(c: &mut Criterion) {
    let mut g = c.benchmark_group("envelope");
    configure(&mut g);
    let info = SourceInfo {
        db: "bench".into(),
        name: "bench".into(),
        unavailable_value: sluice::sink::kafka::envelope::UNAVAILABLE_VALUE.into(),
    };
    for t in tables() {
        let tb = batch_of(&t);
        let mut out = Vec::with_capacity(4096);
        let size = envelopes(&tb, &info, &mut out) as u64;
        g.throughput(Throughput::Elements(tb.batch.num_rows() as u64));
        g.bench_function(format!("{}/rows", t.name), |b| {
            b.iter(|| envelopes(&tb, &info, &mut out))
        });
        g.throughput(Throughput::Bytes(size));
        g.bench_function(format!("{}/bytes", t.name), |b| {
            b.iter(|| envelopes(&tb, &info, &mut out))
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    pgoutput_decode,
    copy_binary,
    assembler,
    arrow_ipc,
    envelope
);
criterion_main!(benches);
