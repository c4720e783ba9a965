//! Tests against pgoutput bytes captured from PostgreSQL 15
//! (tests/fixtures/pgoutput/*.hex, made by scripts/capture-pgoutput.sh) and
//! against hand-built messages. No server needed.

use super::*;

fn unhex(s: &str) -> Vec<u8> {
    let s = s.trim().as_bytes();
    assert!(s.len().is_multiple_of(2), "odd hex length");
    s.chunks(2)
        .map(|p| {
            let d = |c: u8| (c as char).to_digit(16).expect("hex digit") as u8;
            (d(p[0]) << 4) | d(p[1])
        })
        .collect()
}

/// The messages of a fixture file: one hex line each, `#` lines are comments.
fn lines(text: &str) -> Vec<Bytes> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| Bytes::from(unhex(l)))
        .collect()
}

macro_rules! fixture {
    ($name:literal) => {
        lines(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/pgoutput/",
            $name,
            ".hex"
        )))
    };
}

/// Every fixture with the protocol version it was captured with.
fn all_fixtures() -> Vec<(&'static str, u32, Vec<Bytes>)> {
    vec![
        ("relation_types_v2", 2, fixture!("relation_types_v2")),
        ("insert_text_v1", 1, fixture!("insert_text_v1")),
        ("insert_binary_v2", 2, fixture!("insert_binary_v2")),
        ("insert_text_v2", 2, fixture!("insert_text_v2")),
        ("insert_binary_v3", 3, fixture!("insert_binary_v3")),
        ("update_v2", 2, fixture!("update_v2")),
        ("toast_unchanged_v2", 2, fixture!("toast_unchanged_v2")),
        ("delete_v2", 2, fixture!("delete_v2")),
        ("truncate_v2", 2, fixture!("truncate_v2")),
        ("message_v2", 2, fixture!("message_v2")),
        ("origin_v2", 2, fixture!("origin_v2")),
        ("stream_commit_v2", 2, fixture!("stream_commit_v2")),
        ("stream_abort_v2", 2, fixture!("stream_abort_v2")),
        ("stream_abort_cold_v2", 2, fixture!("stream_abort_cold_v2")),
        (
            "stream_subxact_abort_v2",
            2,
            fixture!("stream_subxact_abort_v2"),
        ),
        ("two_phase_v3", 3, fixture!("two_phase_v3")),
    ]
}

fn decode_all(proto: u32, msgs: &[Bytes]) -> Vec<PgOutputMessage> {
    let mut d = PgOutputDecoder::new(proto);
    let out = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| {
            d.decode(m.clone())
                .unwrap_or_else(|e| panic!("message {i} ({:02x?}): {e}", &m[..m.len().min(16)]))
        })
        .collect();
    assert_eq!(d.stream_xid(), None, "fixture ends inside a streamed block");
    out
}

fn bin(t: &TupleData, i: usize) -> &[u8] {
    match t.get(i) {
        Some(TupleValue::Binary(b)) => b,
        other => panic!("column {i}: expected binary, got {other:?}"),
    }
}

fn text(t: &TupleData, i: usize) -> &str {
    match t.get(i) {
        Some(TupleValue::Text(b)) => std::str::from_utf8(b).unwrap(),
        other => panic!("column {i}: expected text, got {other:?}"),
    }
}

fn i32_at(t: &TupleData, i: usize) -> i32 {
    i32::from_be_bytes(bin(t, i).try_into().unwrap())
}

/// Checks Begin ... Commit framing of a plain transaction: final_lsn and
/// commit_lsn agree, commit timestamps agree, end_lsn is past commit_lsn.
/// Returns the xid.
fn check_txn(begin: &PgOutputMessage, commit: &PgOutputMessage) -> u32 {
    let PgOutputMessage::Begin {
        final_lsn,
        commit_ts,
        xid,
    } = begin
    else {
        panic!("expected Begin, got {begin:?}")
    };
    let PgOutputMessage::Commit {
        flags,
        commit_lsn,
        end_lsn,
        commit_ts: ts2,
    } = commit
    else {
        panic!("expected Commit, got {commit:?}")
    };
    assert_eq!(final_lsn, commit_lsn);
    assert!(end_lsn > commit_lsn);
    assert_eq!(commit_ts, ts2);
    assert_eq!(*flags, 0);
    *xid
}

fn relation(m: &PgOutputMessage) -> &RelationBody {
    match m {
        PgOutputMessage::Relation(r) => r,
        other => panic!("expected Relation, got {other:?}"),
    }
}

fn insert(m: &PgOutputMessage) -> (Option<u32>, u32, &TupleData) {
    match m {
        PgOutputMessage::Insert { xid, rel_id, new } => (*xid, *rel_id, new),
        other => panic!("expected Insert, got {other:?}"),
    }
}

#[test]
fn relation_and_types_binary() {
    let m = decode_all(2, &fixture!("relation_types_v2"));
    assert_eq!(m.len(), 7);
    check_txn(&m[0], &m[6]);
    let PgOutputMessage::Type {
        xid: None,
        type_oid: mood_oid,
        namespace,
        name,
    } = &m[1]
    else {
        panic!("{:?}", m[1])
    };
    assert_eq!((namespace.as_str(), name.as_str()), ("Sales Ops", "mood"));
    let PgOutputMessage::Type {
        type_oid: pair_oid,
        name,
        ..
    } = &m[2]
    else {
        panic!("{:?}", m[2])
    };
    assert_eq!(name, "money_pair");

    let rel = relation(&m[3]);
    assert_eq!(rel.xid, None);
    assert_eq!(rel.namespace, "Sales Ops");
    assert_eq!(rel.name, "Order.Items Mixed");
    assert_eq!(rel.replica_identity, ReplicaIdentity::Default);
    let cols: Vec<(&str, u32, i32, bool)> = rel
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.type_oid, c.type_modifier, c.is_key()))
        .collect();
    assert_eq!(
        cols,
        vec![
            ("id", 23, -1, true),
            ("Qty", 20, -1, false),
            ("price", 1700, (10 << 16 | 2) + 4, false),
            ("note", 1043, 20 + 4, false),
            ("created", 1184, -1, false),
            ("flag", 16, -1, false),
            ("payload", 17, -1, false),
            ("tags", 1009, -1, false),
            ("uid", 2950, -1, false),
            ("doc", 3802, -1, false),
            ("m", *mood_oid, -1, false),
            ("total", *pair_oid, -1, false),
        ]
    );

    // binary 'true': every column is 'b', enums and composites included.
    let (xid, rel_id, row) = insert(&m[4]);
    assert_eq!((xid, rel_id), (None, rel.rel_id));
    assert_eq!(row.len(), 12);
    assert!(row.iter().all(|v| v.kind() == ValueKind::Binary));
    assert_eq!(bin(row, 0), [0, 0, 0, 0x2a]);
    assert_eq!(bin(row, 1), 9_000_000_000i64.to_be_bytes());
    assert_eq!(bin(row, 3), b"hello");
    assert_eq!(bin(row, 5), [1]);
    assert_eq!(bin(row, 6), [0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(
        bin(row, 8),
        unhex("a0eebc999c0b4ef8bb6d6bb9bd380a11").as_slice()
    );
    assert_eq!(bin(row, 9), b"\x01{\"k\": [1, 2]}"); // jsonb: version byte 1
    assert_eq!(bin(row, 10), b"happy"); // enum send = label
    assert_eq!(row.bytes(3).unwrap(), Bytes::from_static(b"hello"));

    let (_, _, row) = insert(&m[5]);
    assert_eq!(i32_at(row, 0), 43);
    assert_eq!(bin(row, 1), (-1i64).to_be_bytes());
    for i in 2..12 {
        assert_eq!(row.get(i), Some(TupleValue::Null), "column {i}");
        assert_eq!(row.bytes(i), None);
    }
    assert_eq!(row.get(12), None);
}

#[test]
fn insert_text_protocol_v1() {
    let m = decode_all(1, &fixture!("insert_text_v1"));
    assert_eq!(m.len(), 7);
    check_txn(&m[0], &m[6]);
    assert_eq!(relation(&m[3]).name, "Order.Items Mixed");
    let (xid, _, row) = insert(&m[4]);
    assert_eq!(xid, None);
    let values: Vec<&str> = (0..row.len()).map(|i| text(row, i)).collect();
    assert_eq!(
        values,
        [
            "42",
            "9000000000",
            "12.34",
            "hello",
            "2024-01-02 03:04:05.123456+00",
            "t",
            "\\xdeadbeef",
            "{a,NULL,\"c d\"}",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "{\"k\": [1, 2]}",
            "happy",
            "(5.50,EUR)",
        ]
    );
    let (_, _, row) = insert(&m[5]);
    assert_eq!((text(row, 0), text(row, 1)), ("43", "-1"));
    assert!((2..12).all(|i| row.kind(i) == Some(ValueKind::Null)));
}

#[test]
fn insert_binary_and_text_v2_v3() {
    for (name, proto, msgs, binary) in [
        ("v2 binary", 2, fixture!("insert_binary_v2"), true),
        ("v2 text", 2, fixture!("insert_text_v2"), false),
        ("v3 binary", 3, fixture!("insert_binary_v3"), true),
    ] {
        let m = decode_all(proto, &msgs);
        check_txn(&m[0], m.last().unwrap());
        let rel = relation(&m[1]);
        assert_eq!(
            (rel.namespace.as_str(), rel.name.as_str()),
            ("public", "items")
        );
        let names: Vec<_> = rel.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "name", "qty"], "{name}");
        let (_, rel_id, row) = insert(&m[2]);
        assert_eq!(rel_id, rel.rel_id);
        if binary {
            assert_eq!(row.get(0), Some(TupleValue::Binary(&[0, 0, 0, 0x2a])));
            assert_eq!(row.get(1), Some(TupleValue::Binary(b"hello")));
            assert_eq!(bin(row, 2), 7i64.to_be_bytes());
        } else {
            assert_eq!(row.get(0), Some(TupleValue::Text(b"42")));
            assert_eq!(row.get(1), Some(TupleValue::Text(b"hello")));
            assert_eq!(row.get(2), Some(TupleValue::Text(b"7")));
            let (_, _, row2) = insert(&m[3]);
            assert_eq!(row2.get(1), Some(TupleValue::Null));
            assert_eq!(row2.get(2), Some(TupleValue::Text(b"-2")));
        }
    }
}

#[test]
fn updates_without_old_with_key_and_full() {
    let m = decode_all(2, &fixture!("update_v2"));
    assert_eq!(m.len(), 11);
    let items = relation(&m[1]);
    // 1: plain update, key unchanged => no old tuple.
    check_txn(&m[0], &m[3]);
    let PgOutputMessage::Update {
        xid: None,
        rel_id,
        old: None,
        new,
    } = &m[2]
    else {
        panic!("{:?}", m[2])
    };
    assert_eq!(*rel_id, items.rel_id);
    assert_eq!((i32_at(new, 0), bin(new, 1)), (1, &b"one"[..]));
    assert_eq!(bin(new, 2), 11i64.to_be_bytes());

    // 2: primary key 2 -> 100 => old key 'K' with the old id, others NULL.
    check_txn(&m[4], &m[6]);
    let PgOutputMessage::Update {
        old: Some(old @ OldTuple::Key(_)),
        new,
        ..
    } = &m[5]
    else {
        panic!("{:?}", m[5])
    };
    assert!(old.is_key());
    let k = old.tuple();
    assert_eq!(k.len(), 3);
    assert_eq!(bin(k, 0), [0, 0, 0, 2]);
    assert_eq!(k.kind(1), Some(ValueKind::Null));
    assert_eq!(k.kind(2), Some(ValueKind::Null));
    assert_eq!((i32_at(new, 0), bin(new, 1)), (100, &b"hundred"[..]));

    // 3: REPLICA IDENTITY FULL => old full row 'O'; all columns flagged key.
    check_txn(&m[7], &m[10]);
    let full = relation(&m[8]);
    assert_eq!(full.name, "items_full");
    assert_eq!(full.replica_identity, ReplicaIdentity::Full);
    assert!(full.columns.iter().all(RelationColumn::is_key));
    let PgOutputMessage::Update {
        rel_id,
        old: Some(OldTuple::Full(old)),
        new,
        ..
    } = &m[9]
    else {
        panic!("{:?}", m[9])
    };
    assert_eq!(*rel_id, full.rel_id);
    assert_eq!((i32_at(old, 0), bin(old, 1)), (2, &b"two"[..]));
    assert_eq!(bin(old, 2), 20i64.to_be_bytes());
    assert_eq!(bin(new, 2), 21i64.to_be_bytes());
}

#[test]
fn unchanged_toast_is_not_null() {
    let m = decode_all(2, &fixture!("toast_unchanged_v2"));
    assert_eq!(m.len(), 4);
    check_txn(&m[0], &m[3]);
    assert_eq!(relation(&m[1]).columns[2].name, "body");
    let PgOutputMessage::Update { old: None, new, .. } = &m[2] else {
        panic!("{:?}", m[2])
    };
    assert_eq!(i32_at(new, 1), 2);
    assert_eq!(new.get(2), Some(TupleValue::UnchangedToast));
    assert_ne!(new.get(2), Some(TupleValue::Null));
    assert_eq!(new.kind(2), Some(ValueKind::UnchangedToast));
    assert_eq!(new.bytes(2), None);
    assert!(new.has_unchanged_toast());
    // the 100 kB value is not on the wire
    assert!(fixture!("toast_unchanged_v2")[2].len() < 64);
}

#[test]
fn deletes_with_key_and_full_identity() {
    let m = decode_all(2, &fixture!("delete_v2"));
    assert_eq!(m.len(), 8);
    check_txn(&m[0], &m[3]);
    let PgOutputMessage::Delete {
        xid: None,
        rel_id,
        old: OldTuple::Key(k),
    } = &m[2]
    else {
        panic!("{:?}", m[2])
    };
    assert_eq!(*rel_id, relation(&m[1]).rel_id);
    assert_eq!(i32_at(k, 0), 1);
    assert_eq!(k.get(1), Some(TupleValue::Null));

    check_txn(&m[4], &m[7]);
    let PgOutputMessage::Delete {
        rel_id,
        old: OldTuple::Full(o),
        ..
    } = &m[6]
    else {
        panic!("{:?}", m[6])
    };
    assert_eq!(*rel_id, relation(&m[5]).rel_id);
    assert_eq!((i32_at(o, 0), bin(o, 1)), (2, &b"two"[..]));
    assert_eq!(bin(o, 2), 20i64.to_be_bytes());
}

#[test]
fn truncate_several_tables_with_options() {
    let m = decode_all(2, &fixture!("truncate_v2"));
    assert_eq!(m.len(), 10);
    check_txn(&m[0], &m[5]);
    let ids: Vec<u32> = m[1..4].iter().map(|r| relation(r).rel_id).collect();
    let names: Vec<&str> = m[1..4].iter().map(|r| relation(r).name.as_str()).collect();
    assert_eq!(names, ["parent", "other", "child"]); // child via CASCADE
    let PgOutputMessage::Truncate {
        xid: None,
        options,
        rel_ids,
    } = &m[4]
    else {
        panic!("{:?}", m[4])
    };
    assert_eq!(*options, TRUNCATE_CASCADE | TRUNCATE_RESTART_IDENTITY);
    assert!(m[4].truncate_cascade() && m[4].truncate_restart_identity());
    assert_eq!(rel_ids, &ids);

    check_txn(&m[6], &m[9]);
    let lone = relation(&m[7]);
    assert_eq!(lone.name, "lone");
    assert_eq!(
        m[8],
        PgOutputMessage::Truncate {
            xid: None,
            options: 0,
            rel_ids: vec![lone.rel_id]
        }
    );
    assert!(!m[8].truncate_cascade() && !m[8].truncate_restart_identity());
}

#[test]
fn logical_messages() {
    let m = decode_all(2, &fixture!("message_v2"));
    assert_eq!(m.len(), 6);
    check_txn(&m[0], &m[4]);
    let PgOutputMessage::Message {
        xid: None,
        transactional: true,
        lsn,
        prefix,
        content,
    } = &m[3]
    else {
        panic!("{:?}", m[3])
    };
    assert_eq!(prefix, "sluice");
    assert_eq!(content.as_ref(), b"in a transaction");
    assert!(*lsn > 0);
    // the non-transactional one arrives on its own, after the commit
    let PgOutputMessage::Commit { end_lsn, .. } = m[4] else {
        unreachable!()
    };
    let PgOutputMessage::Message {
        xid: None,
        transactional: false,
        lsn,
        prefix,
        content,
    } = &m[5]
    else {
        panic!("{:?}", m[5])
    };
    assert_eq!(prefix, "sluice.nontx");
    assert_eq!(content.as_ref(), [0x00, 0xff, 0x01]);
    assert!(*lsn >= end_lsn);
}

#[test]
fn origin_message() {
    let m = decode_all(2, &fixture!("origin_v2"));
    assert_eq!(m.len(), 5);
    check_txn(&m[0], &m[4]);
    assert_eq!(
        m[1],
        PgOutputMessage::Origin {
            origin_lsn: 0x0ABC_DEF0,
            name: "sluice origin".into()
        }
    );
    // pg_replication_origin_xact_setup's timestamp becomes the commit time
    let PgOutputMessage::Begin { commit_ts, .. } = m[0] else {
        unreachable!()
    };
    assert_eq!(commit_ts + PG_EPOCH_UNIX_MICROS, 1_704_164_645_000_000);
    let (_, _, row) = insert(&m[3]);
    assert_eq!(bin(row, 1), b"from origin");
}

/// Splits a decoded stream into (StreamStart xid, messages of the block).
fn blocks(m: &[PgOutputMessage]) -> Vec<(u32, bool, Vec<&PgOutputMessage>)> {
    let mut out = Vec::new();
    let mut cur: Option<(u32, bool, Vec<&PgOutputMessage>)> = None;
    for msg in m {
        match msg {
            PgOutputMessage::StreamStart { xid, first_segment } => {
                assert!(cur.is_none());
                cur = Some((*xid, *first_segment, Vec::new()));
            }
            PgOutputMessage::StreamStop => out.push(cur.take().expect("stop without start")),
            other => {
                if let Some((_, _, v)) = cur.as_mut() {
                    v.push(other);
                }
            }
        }
    }
    assert!(cur.is_none());
    out
}

fn change_xid(m: &PgOutputMessage) -> Option<u32> {
    match m {
        PgOutputMessage::Relation(r) => r.xid,
        PgOutputMessage::Type { xid, .. }
        | PgOutputMessage::Insert { xid, .. }
        | PgOutputMessage::Update { xid, .. }
        | PgOutputMessage::Delete { xid, .. }
        | PgOutputMessage::Truncate { xid, .. }
        | PgOutputMessage::Message { xid, .. } => *xid,
        other => panic!("not a change: {other:?}"),
    }
}

#[test]
fn streamed_transaction_commit() {
    let m = decode_all(2, &fixture!("stream_commit_v2"));
    let b = blocks(&m);
    assert!(b.len() >= 2, "expected several segments, got {}", b.len());
    let xid = b[0].0;
    assert!(b[0].1, "first block has first_segment");
    assert!(b[1..].iter().all(|(x, first, _)| *x == xid && !first));
    // every change in the blocks carries the streamed xid
    let mut ids = Vec::new();
    for (_, _, msgs) in &b {
        for c in msgs {
            assert_eq!(change_xid(c), Some(xid));
            if let PgOutputMessage::Insert { new, .. } = c {
                ids.push(i32_at(new, 0));
            }
        }
    }
    assert_eq!(ids, (1..=1000).collect::<Vec<_>>());
    let PgOutputMessage::Message {
        xid: Some(mx),
        transactional: true,
        content,
        ..
    } = b[0].2[0]
    else {
        panic!("{:?}", b[0].2[0])
    };
    assert_eq!((*mx, content.as_ref()), (xid, &b"streamed"[..]));
    assert_eq!(relation(b[0].2[1]).xid, Some(xid));
    let PgOutputMessage::StreamCommit {
        xid: cx,
        flags: 0,
        commit_lsn,
        end_lsn,
        ..
    } = m.last().unwrap()
    else {
        panic!("{:?}", m.last())
    };
    assert_eq!(*cx, xid);
    assert!(end_lsn > commit_lsn);
}

#[test]
fn streamed_transaction_abort() {
    let m = decode_all(2, &fixture!("stream_abort_v2"));
    // a committed warm-up transaction first, then the streamed aborted one
    check_txn(&m[0], &m[3]);
    let b = blocks(&m);
    assert_eq!(b.len(), 1);
    let (xid, true, msgs) = &b[0] else {
        panic!("first_segment not set")
    };
    assert!(msgs.iter().all(|c| change_xid(c) == Some(*xid)));
    let inserts = msgs
        .iter()
        .filter(|c| matches!(c, PgOutputMessage::Insert { .. }))
        .count();
    assert!(inserts > 100);
    let abort = m
        .iter()
        .find(|x| matches!(x, PgOutputMessage::StreamAbort { .. }))
        .unwrap();
    assert_eq!(
        *abort,
        PgOutputMessage::StreamAbort {
            xid: *xid,
            subxid: *xid,
            abort_lsn: None,
            abort_ts: None
        }
    );
    // the flushing transaction after it
    let n = m.len();
    check_txn(&m[n - 3], &m[n - 1]);

    // Cold caches: PG15 sends an empty block, then the abort.
    let m = decode_all(2, &fixture!("stream_abort_cold_v2"));
    let PgOutputMessage::StreamStart {
        xid,
        first_segment: true,
    } = m[0]
    else {
        panic!("{:?}", m[0])
    };
    assert_eq!(m[1], PgOutputMessage::StreamStop);
    assert_eq!(
        m[2],
        PgOutputMessage::StreamAbort {
            xid,
            subxid: xid,
            abort_lsn: None,
            abort_ts: None
        }
    );
    check_txn(&m[3], &m[6]);
}

#[test]
fn streamed_subtransaction_abort() {
    let m = decode_all(2, &fixture!("stream_subxact_abort_v2"));
    let b = blocks(&m);
    assert_eq!(b.len(), 2);
    let top = b[0].0;
    assert_eq!(b[1].0, top);
    let PgOutputMessage::StreamAbort {
        xid,
        subxid,
        abort_lsn: None,
        abort_ts: None,
    } = m
        .iter()
        .find(|x| matches!(x, PgOutputMessage::StreamAbort { .. }))
        .unwrap()
    else {
        unreachable!()
    };
    assert_eq!(*xid, top);
    assert_ne!(*subxid, top);
    // Changes carry the xid of the (sub)transaction that made them, not the
    // top-level one: row 1 (top), rows 1000..=1700 (savepoint, rolled back),
    // row 2 (the subtransaction ROLLBACK TO started afresh).
    let mut by_xid: Vec<(u32, i32)> = Vec::new();
    for (_, _, msgs) in &b {
        for c in msgs {
            if let PgOutputMessage::Insert { xid, new, .. } = c {
                by_xid.push((xid.unwrap(), i32_at(new, 0)));
            }
        }
    }
    assert_eq!(by_xid[0], (top, 1));
    let aborted: Vec<i32> = by_xid
        .iter()
        .filter(|(x, _)| x == subxid)
        .map(|&(_, v)| v)
        .collect();
    // Only the part streamed before ROLLBACK TO is on the wire (the rest was
    // still in the server's memory and is dropped there); the Stream Abort
    // tells the client to drop the part it received.
    assert!(
        aborted.len() > 100 && aborted.len() <= 701,
        "{}",
        aborted.len()
    );
    assert_eq!(
        aborted,
        (1000..1000 + aborted.len() as i32).collect::<Vec<_>>()
    );
    let (last_xid, last) = *by_xid.last().unwrap();
    assert_eq!(last, 2);
    assert!(last_xid != top && last_xid != *subxid);
    let PgOutputMessage::StreamCommit { xid, .. } = m.last().unwrap() else {
        panic!()
    };
    assert_eq!(*xid, top);
}

#[test]
fn two_phase_protocol_v3() {
    let msgs = fixture!("two_phase_v3");
    let m = decode_all(3, &msgs);
    // 1: prepared, then committed
    let PgOutputMessage::BeginPrepare {
        prepare_lsn,
        end_lsn,
        prepare_ts,
        xid,
        gid,
    } = &m[0]
    else {
        panic!("{:?}", m[0])
    };
    assert_eq!(gid, "sluice gid 1");
    assert_eq!(
        insert(&m[2]).2.get(0),
        Some(TupleValue::Binary(&[0, 0, 0, 1]))
    );
    assert_eq!(
        m[3],
        PgOutputMessage::Prepare {
            flags: 0,
            prepare_lsn: *prepare_lsn,
            end_lsn: *end_lsn,
            prepare_ts: *prepare_ts,
            xid: *xid,
            gid: gid.clone()
        }
    );
    let PgOutputMessage::CommitPrepared {
        commit_lsn,
        end_lsn: c_end,
        xid: cx,
        gid: cg,
        ..
    } = &m[4]
    else {
        panic!("{:?}", m[4])
    };
    assert_eq!((cx, cg), (xid, gid));
    assert!(commit_lsn >= end_lsn && c_end > commit_lsn);

    // 2: prepared, then rolled back
    let PgOutputMessage::BeginPrepare {
        end_lsn, xid, gid, ..
    } = &m[5]
    else {
        panic!("{:?}", m[5])
    };
    assert_eq!(gid, "sluice gid 2");
    let PgOutputMessage::RollbackPrepared {
        prepare_end_lsn,
        rollback_end_lsn,
        prepare_ts,
        rollback_ts,
        xid: rx,
        gid: rg,
        ..
    } = &m[8]
    else {
        panic!("{:?}", m[8])
    };
    assert_eq!((prepare_end_lsn, rx, rg), (end_lsn, xid, gid));
    assert!(rollback_end_lsn > prepare_end_lsn && rollback_ts >= prepare_ts);

    // 3: a streamed transaction prepared ('p') then committed
    let b = blocks(&m);
    assert!(b.len() >= 2);
    let sx = b[0].0;
    let n = m.len();
    let PgOutputMessage::StreamPrepare { xid, gid, .. } = &m[n - 2] else {
        panic!("{:?}", m[n - 2])
    };
    assert_eq!((*xid, gid.as_str()), (sx, "sluice gid 3"));
    let PgOutputMessage::CommitPrepared { xid, .. } = &m[n - 1] else {
        panic!()
    };
    assert_eq!(*xid, sx);

    // a v2 decoder refuses two-phase messages
    let err = PgOutputDecoder::new(2).decode(msgs[0].clone()).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::UnexpectedMessage {
            message: "Begin Prepare",
            ..
        }
    ));
}

// ---------------------------------------------------------------- hand-built

#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn tag(t: u8) -> Self {
        Msg(vec![t])
    }
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn i16(mut self, v: i16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i32(mut self, v: i32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn raw(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
    fn str(self, s: &str) -> Self {
        self.raw(s.as_bytes()).u8(0)
    }
    fn b(self) -> Bytes {
        Bytes::from(self.0)
    }
}

fn dec(proto: u32, m: Msg) -> Result<PgOutputMessage, DecodeError> {
    PgOutputDecoder::new(proto).decode(m.b())
}

#[test]
fn empty_and_unknown() {
    let err = PgOutputDecoder::new(2).decode(Bytes::new()).unwrap_err();
    assert_eq!(
        err,
        DecodeError::Empty {
            context: "pgoutput"
        }
    );
    let err = dec(2, Msg::tag(b'Z')).unwrap_err();
    assert_eq!(err, DecodeError::UnknownTag { tag: b'Z' });
    assert!(err.to_string().contains("0x5a ('Z')"), "{err}");
    let err = dec(2, Msg::tag(0x01)).unwrap_err();
    assert!(err.to_string().contains("0x01"), "{err}");
}

#[test]
fn zero_column_tuples_and_relations() {
    let m = dec(1, Msg::tag(b'I').u32(7).u8(b'N').i16(0)).unwrap();
    let (xid, rel_id, new) = insert(&m);
    assert_eq!((xid, rel_id), (None, 7));
    assert!(new.is_empty() && new.get(0).is_none() && new.iter().next().is_none());

    let m = dec(1, Msg::tag(b'R').u32(9).str("").str("t").u8(b'n').i16(0)).unwrap();
    let r = relation(&m);
    assert_eq!(
        (r.namespace.as_str(), r.replica_identity, r.columns.len()),
        ("", ReplicaIdentity::Nothing, 0)
    );

    let m = dec(1, Msg::tag(b'T').i32(0).u8(0)).unwrap();
    assert_eq!(
        m,
        PgOutputMessage::Truncate {
            xid: None,
            options: 0,
            rel_ids: vec![]
        }
    );

    // Update with both tuples empty, Delete with an empty key
    let m = dec(1, Msg::tag(b'U').u32(1).u8(b'K').i16(0).u8(b'N').i16(0)).unwrap();
    assert!(
        matches!(m, PgOutputMessage::Update { old: Some(OldTuple::Key(ref k)), ref new, .. } if k.is_empty() && new.is_empty())
    );
    let m = dec(1, Msg::tag(b'D').u32(1).u8(b'O').i16(0)).unwrap();
    assert!(
        matches!(m, PgOutputMessage::Delete { old: OldTuple::Full(ref k), .. } if k.is_empty())
    );
}

#[test]
fn tuple_values_and_equality() {
    let m = dec(
        1,
        Msg::tag(b'I')
            .u32(1)
            .u8(b'N')
            .i16(5)
            .u8(b'n')
            .u8(b'u')
            .u8(b't')
            .i32(2)
            .raw(b"hi")
            .u8(b'b')
            .i32(0)
            .u8(b'b')
            .i32(4)
            .raw(&[0, 0, 0, 42]),
    )
    .unwrap();
    let (_, _, t) = insert(&m);
    let v: Vec<_> = t.iter().collect();
    assert_eq!(
        v,
        [
            TupleValue::Null,
            TupleValue::UnchangedToast,
            TupleValue::Text(b"hi"),
            TupleValue::Binary(b""),
            TupleValue::Binary(&[0, 0, 0, 42]),
        ]
    );
    assert_eq!(t.bytes(2).unwrap(), Bytes::from_static(b"hi"));
    assert_eq!(t.bytes(3).unwrap(), Bytes::new());
    assert_eq!(t.bytes(1), None);
    assert_eq!(t.get(4).unwrap().as_bytes(), Some(&[0u8, 0, 0, 42][..]));
    // equality ignores the surrounding message
    let m2 = dec(
        2,
        Msg::tag(b'I')
            .u32(99)
            .u8(b'N')
            .i16(5)
            .u8(b'n')
            .u8(b'u')
            .u8(b't')
            .i32(2)
            .raw(b"hi")
            .u8(b'b')
            .i32(0)
            .u8(b'b')
            .i32(4)
            .raw(&[0, 0, 0, 42]),
    )
    .unwrap();
    assert_eq!(t, insert(&m2).2);
    let dbg = format!("{t:?}");
    assert!(
        dbg.contains("UnchangedToast") && dbg.contains("Text(\"hi\")"),
        "{dbg}"
    );
}

#[test]
fn errors_name_message_and_field() {
    // Begin cut inside the commit timestamp
    let err = dec(2, Msg::tag(b'B').u64(1).u32(0)).unwrap_err();
    assert_eq!(
        err,
        DecodeError::Truncated {
            message: "Begin",
            field: "commit timestamp",
            offset: 9,
            needed: 8,
            available: 4
        }
    );
    assert!(err.to_string().contains("Begin") && err.to_string().contains("commit timestamp"));

    // bad tuple kind
    let err = dec(2, Msg::tag(b'I').u32(1).u8(b'N').i16(1).u8(b'x')).unwrap_err();
    assert_eq!(
        err,
        DecodeError::BadTupleKind {
            message: "Insert",
            field: "tuple column kind",
            byte: b'x'
        }
    );
    let err = dec(2, Msg::tag(b'U').u32(1).u8(b'Q')).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::BadTupleKind {
            message: "Update",
            byte: b'Q',
            ..
        }
    ));
    let err = dec(2, Msg::tag(b'D').u32(1).u8(b'N').i16(0)).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::BadTupleKind {
            message: "Delete",
            byte: b'N',
            ..
        }
    ));
    let err = dec(2, Msg::tag(b'U').u32(1).u8(b'K').i16(0).u8(b'K')).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::BadTupleKind {
            field: "new tuple marker",
            ..
        }
    ));

    // invalid UTF-8 in a relation name / column name
    let err = dec(
        2,
        Msg::tag(b'R')
            .u32(1)
            .str("s")
            .raw(&[0xff, 0xfe, 0])
            .u8(b'd')
            .i16(0),
    )
    .unwrap_err();
    assert_eq!(
        err,
        DecodeError::InvalidUtf8 {
            message: "Relation",
            field: "relation name"
        }
    );
    let err = dec(
        2,
        Msg::tag(b'R')
            .u32(1)
            .str("s")
            .str("t")
            .u8(b'd')
            .i16(1)
            .u8(0)
            .raw(&[0xc3, 0]),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        DecodeError::InvalidUtf8 {
            field: "column name",
            ..
        }
    ));

    // missing NUL
    let err = dec(2, Msg::tag(b'O').u64(1).raw(b"abc")).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::UnterminatedString {
            message: "Origin",
            field: "origin name",
            offset: 9
        }
    ));

    // replica identity
    let err = dec(2, Msg::tag(b'R').u32(1).str("s").str("t").u8(b'x').i16(0)).unwrap_err();
    assert_eq!(err, DecodeError::BadReplicaIdentity { byte: b'x' });

    // negative lengths
    let err = dec(2, Msg::tag(b'I').u32(1).u8(b'N').i16(-1)).unwrap_err();
    assert!(matches!(err, DecodeError::NegativeLength { value: -1, .. }));
    let err = dec(2, Msg::tag(b'I').u32(1).u8(b'N').i16(1).u8(b't').i32(-5)).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::NegativeLength {
            field: "tuple column length",
            value: -5,
            ..
        }
    ));
    let err = dec(2, Msg::tag(b'T').i32(-1).u8(0)).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::NegativeLength {
            message: "Truncate",
            ..
        }
    ));
    let err = dec(2, Msg::tag(b'M').u8(1).u64(1).str("p").i32(-1)).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::NegativeLength {
            message: "Message",
            ..
        }
    ));

    // a value length past the end, a huge column count with no data
    let err = dec(
        2,
        Msg::tag(b'I')
            .u32(1)
            .u8(b'N')
            .i16(1)
            .u8(b'b')
            .i32(100)
            .raw(b"ab"),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        DecodeError::Truncated {
            field: "tuple column value",
            needed: 100,
            available: 2,
            ..
        }
    ));
    let err = dec(2, Msg::tag(b'I').u32(1).u8(b'N').i16(i16::MAX)).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::Truncated {
            field: "tuple column kind",
            ..
        }
    ));
    let err = dec(2, Msg::tag(b'T').i32(i32::MAX).u8(0)).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::Truncated {
            field: "relation id",
            ..
        }
    ));

    // trailing bytes
    let err = dec(2, Msg::tag(b'I').u32(1).u8(b'N').i16(0).u8(0)).unwrap_err();
    assert_eq!(
        err,
        DecodeError::TrailingBytes {
            message: "Insert",
            count: 1
        }
    );
}

/// Every field of every fixed-layout message reports itself when cut.
#[test]
fn truncated_in_each_field() {
    let cases: Vec<(u32, Msg, &[&str])> = vec![
        (
            1,
            Msg::tag(b'B').u64(1).u64(2).u32(3),
            &["final LSN", "commit timestamp", "xid"],
        ),
        (
            1,
            Msg::tag(b'C').u8(0).u64(1).u64(2).u64(3),
            &["flags", "commit LSN", "end LSN", "commit timestamp"],
        ),
        (
            1,
            Msg::tag(b'O').u64(1).str("o"),
            &["origin LSN", "origin name"],
        ),
        (
            1,
            Msg::tag(b'R')
                .u32(1)
                .str("s")
                .str("t")
                .u8(b'd')
                .i16(1)
                .u8(1)
                .str("c")
                .u32(23)
                .i32(-1),
            &[
                "relation id",
                "namespace",
                "relation name",
                "replica identity",
                "column count",
                "column flags",
                "column name",
                "column type oid",
                "column type modifier",
            ],
        ),
        (
            1,
            Msg::tag(b'Y').u32(1).str("s").str("t"),
            &["type oid", "namespace", "type name"],
        ),
        (
            1,
            Msg::tag(b'I')
                .u32(1)
                .u8(b'N')
                .i16(1)
                .u8(b't')
                .i32(1)
                .raw(b"x"),
            &[
                "relation id",
                "new tuple marker",
                "tuple column count",
                "tuple column kind",
                "tuple column length",
                "tuple column value",
            ],
        ),
        (
            1,
            Msg::tag(b'T').i32(1).u8(1).u32(5),
            &["relation count", "options", "relation id"],
        ),
        (
            1,
            Msg::tag(b'M').u8(1).u64(1).str("p").i32(1).raw(b"x"),
            &[
                "flags",
                "message LSN",
                "prefix",
                "content length",
                "content",
            ],
        ),
        (
            2,
            Msg::tag(b'S').u32(1).u8(1),
            &["xid", "first segment flag"],
        ),
        (
            2,
            Msg::tag(b'c').u32(1).u8(0).u64(1).u64(2).u64(3),
            &["xid", "flags", "commit LSN", "end LSN", "commit timestamp"],
        ),
        (
            2,
            Msg::tag(b'A').u32(1).u32(2),
            &["xid", "subtransaction xid"],
        ),
        (
            3,
            Msg::tag(b'b').u64(1).u64(2).u64(3).u32(4).str("g"),
            &["prepare LSN", "end LSN", "prepare timestamp", "xid", "gid"],
        ),
        (
            3,
            Msg::tag(b'r')
                .u8(0)
                .u64(1)
                .u64(2)
                .u64(3)
                .u64(4)
                .u32(5)
                .str("g"),
            &[
                "flags",
                "prepare end LSN",
                "rollback end LSN",
                "prepare timestamp",
                "rollback timestamp",
                "xid",
                "gid",
            ],
        ),
        (
            3,
            Msg::tag(b'K').u8(0).u64(1).u64(2).u64(3).u32(4).str("g"),
            &["flags", "commit LSN", "end LSN", "timestamp", "xid", "gid"],
        ),
    ];
    for (proto, msg, fields) in cases {
        let full = msg.b();
        PgOutputDecoder::new(proto)
            .decode(full.clone())
            .unwrap_or_else(|e| panic!("{:?}: {e}", full[0] as char));
        let mut seen = Vec::new();
        for cut in 1..full.len() {
            let err = PgOutputDecoder::new(proto)
                .decode(full.slice(..cut))
                .expect_err("a cut message must not decode");
            let field = match err {
                DecodeError::Truncated { field, .. }
                | DecodeError::UnterminatedString { field, .. } => field,
                other => panic!("{:?} cut at {cut}: {other}", full[0] as char),
            };
            if seen.last() != Some(&field) {
                seen.push(field);
            }
        }
        assert_eq!(seen, fields, "message {:?}", full[0] as char);
    }
}

#[test]
fn stream_state_machine() {
    let start = |xid: u32, first: u8| Msg::tag(b'S').u32(xid).u8(first).b();
    let ins = |xid: u32| Msg::tag(b'I').u32(xid).u32(16).u8(b'N').i16(0).b();

    // protocol 1 has no streaming
    let err = PgOutputDecoder::new(1).decode(start(5, 1)).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::UnexpectedMessage {
            message: "Stream Start",
            ..
        }
    ));

    let mut d = PgOutputDecoder::new(2);
    assert!(matches!(
        d.decode(Msg::tag(b'E').b()),
        Err(DecodeError::UnexpectedMessage {
            message: "Stream Stop",
            ..
        })
    ));
    assert_eq!(
        d.decode(start(5, 1)).unwrap(),
        PgOutputMessage::StreamStart {
            xid: 5,
            first_segment: true
        }
    );
    assert_eq!(d.stream_xid(), Some(5));
    // nested start, begin, commit, stream commit/abort: refused, state kept
    for bad in [
        start(6, 0),
        Msg::tag(b'B').u64(1).u64(2).u32(3).b(),
        Msg::tag(b'C').u8(0).u64(1).u64(2).u64(3).b(),
        Msg::tag(b'c').u32(5).u8(0).u64(1).u64(2).u64(3).b(),
        Msg::tag(b'A').u32(5).u32(5).b(),
    ] {
        assert!(matches!(
            d.decode(bad),
            Err(DecodeError::UnexpectedMessage { .. })
        ));
        assert_eq!(d.stream_xid(), Some(5));
    }
    // a failed change decode keeps the state too
    assert!(d.decode(Msg::tag(b'I').u32(5).b()).is_err());
    assert_eq!(d.stream_xid(), Some(5));
    let m = d.decode(ins(5)).unwrap();
    let (xid, rel, _) = insert(&m);
    assert_eq!((xid, rel), (Some(5), 16));
    // an Insert without the xid is mis-framed inside a block
    assert!(d
        .decode(Msg::tag(b'I').u32(16).u8(b'N').i16(0).b())
        .is_err());
    assert_eq!(
        d.decode(Msg::tag(b'E').b()).unwrap(),
        PgOutputMessage::StreamStop
    );
    assert_eq!(d.stream_xid(), None);
    // outside a block the same bytes mean relation 5 then garbage
    assert!(matches!(
        d.decode(ins(5)),
        Err(DecodeError::BadTupleKind { .. })
    ));
    assert_eq!(
        d.decode(Msg::tag(b'c').u32(5).u8(0).u64(10).u64(20).u64(30).b())
            .unwrap(),
        PgOutputMessage::StreamCommit {
            xid: 5,
            flags: 0,
            commit_lsn: 10,
            end_lsn: 20,
            commit_ts: 30
        }
    );
    d.decode(start(7, 1)).unwrap();
    d.reset();
    assert_eq!(d.stream_xid(), None);
}

#[test]
fn stream_abort_parallel_fields_depend_on_options() {
    let plain = Msg::tag(b'A').u32(5).u32(6).b();
    let parallel = Msg::tag(b'A').u32(5).u32(6).u64(0x1234).u64(99).b();
    let want_plain = PgOutputMessage::StreamAbort {
        xid: 5,
        subxid: 6,
        abort_lsn: None,
        abort_ts: None,
    };
    for d in [
        PgOutputDecoder::new(2),
        PgOutputDecoder::new(4),
        PgOutputDecoder::new(3).with_parallel_streaming(true),
    ] {
        let mut d = d;
        assert_eq!(d.decode(plain.clone()).unwrap(), want_plain);
        assert!(matches!(
            d.decode(parallel.clone()),
            Err(DecodeError::TrailingBytes {
                message: "Stream Abort",
                count: 16
            })
        ));
    }
    let mut d = PgOutputDecoder::new(4).with_parallel_streaming(true);
    assert_eq!(d.proto_version(), 4);
    assert_eq!(
        d.decode(parallel).unwrap(),
        PgOutputMessage::StreamAbort {
            xid: 5,
            subxid: 6,
            abort_lsn: Some(0x1234),
            abort_ts: Some(99)
        }
    );
    assert!(matches!(
        d.decode(plain),
        Err(DecodeError::Truncated {
            field: "abort LSN",
            ..
        })
    ));
}

#[test]
fn message_names() {
    for (_, proto, msgs) in all_fixtures() {
        for m in decode_all(proto, &msgs) {
            assert!(!m.name().is_empty());
        }
    }
}

// --------------------------------------------------------------- robustness

/// Small deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Feeds every prefix of every fixture message, plus randomly corrupted
/// copies, to decoders in the state the real stream had at that point (and
/// in the opposite stream state, and under every protocol version): each
/// call must return, Ok or Err, never panic. A failed call must not change
/// the decoder state.
#[test]
fn never_panics_on_truncated_or_corrupt_fixtures() {
    let mut rng = Rng(0x5EED_CAFE_F00D_0001);
    let mut decoded = 0usize;
    for (name, proto, msgs) in all_fixtures() {
        let mut live = PgOutputDecoder::new(proto);
        for (i, msg) in msgs.iter().enumerate() {
            let mut states = vec![live];
            for v in 1..=4 {
                states.push(PgOutputDecoder::new(v).with_parallel_streaming(v == 4));
            }
            let mut streaming = PgOutputDecoder::new(2);
            streaming.decode(Msg::tag(b'S').u32(1).u8(1).b()).unwrap();
            states.push(streaming);

            let mut inputs: Vec<Bytes> = (0..msg.len()).map(|n| msg.slice(..n)).collect();
            for _ in 0..8 {
                let mut v = msg.to_vec();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(v.len());
                    v[at] = rng.next() as u8;
                }
                if rng.below(4) == 0 {
                    v.truncate(rng.below(v.len() + 1));
                }
                if rng.below(8) == 0 {
                    v.extend((0..rng.below(16)).map(|_| rng.next() as u8));
                }
                inputs.push(Bytes::from(v));
            }
            // random garbage after a real tag
            let garbage: Vec<u8> = std::iter::once(msg[0])
                .chain((0..rng.below(64)).map(|_| rng.next() as u8))
                .collect();
            inputs.push(Bytes::from(garbage));

            for input in &inputs {
                for state in &states {
                    let mut d = *state;
                    let before = d;
                    let r = std::panic::catch_unwind(move || {
                        let r = d.decode(input.clone());
                        (r, d)
                    });
                    let (r, after) = r.unwrap_or_else(|_| {
                        panic!("{name} message {i}: panicked on {:02x?}", &input[..])
                    });
                    if r.is_err() {
                        assert_eq!(after, before, "{name} message {i}: state changed on error");
                    }
                    // touch every value of a decoded row
                    if let Ok(PgOutputMessage::Insert { new, .. }) = &r {
                        for k in 0..new.len() + 1 {
                            let _ = (new.get(k), new.bytes(k));
                        }
                    }
                    decoded += 1;
                }
            }
            live.decode(msg.clone()).unwrap();
        }
    }
    assert!(decoded > 10_000);
}

#[test]
fn never_panics_on_random_bytes() {
    let mut rng = Rng(42);
    let tags = b"BCORYIUDTMSEcAbPKrpwkZ\0";
    for _ in 0..20_000 {
        let len = rng.below(48);
        let mut v: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if let Some(first) = v.first_mut() {
            *first = tags[rng.below(tags.len())];
        }
        let b = Bytes::from(v);
        for proto in 1..=4 {
            let mut d = PgOutputDecoder::new(proto).with_parallel_streaming(true);
            let _ = d.decode(b.clone());
        }
        let _ = parse_copy_data(b);
    }
}

// ------------------------------------------------------------ CopyData framing

#[test]
fn copy_data_xlogdata() {
    let payload = fixture!("insert_binary_v2")[2].clone();
    let frame = Msg::tag(b'w')
        .u64(0x16_B374_D848)
        .u64(0x16_B374_D900)
        .u64(-5i64 as u64)
        .raw(&payload)
        .b();
    let m = parse_copy_data(frame).unwrap();
    let ReplicationMessage::XLogData {
        wal_start,
        wal_end,
        server_clock,
        data,
    } = m
    else {
        panic!("{m:?}")
    };
    assert_eq!(
        (wal_start, wal_end, server_clock),
        (0x16_B374_D848, 0x16_B374_D900, -5)
    );
    assert_eq!(data, payload);
    let m = PgOutputDecoder::new(2).decode(data).unwrap();
    assert_eq!(bin(insert(&m).2, 0), [0, 0, 0, 42]);

    // an XLogData with an empty payload is well-formed framing
    let m = parse_copy_data(Msg::tag(b'w').u64(1).u64(2).u64(3).b()).unwrap();
    assert!(matches!(m, ReplicationMessage::XLogData { ref data, .. } if data.is_empty()));
}

#[test]
fn copy_data_keepalive() {
    for (flag, want) in [(0u8, false), (1, true), (2, true)] {
        let m = parse_copy_data(Msg::tag(b'k').u64(77).u64(88).u8(flag).b()).unwrap();
        assert_eq!(
            m,
            ReplicationMessage::PrimaryKeepalive {
                wal_end: 77,
                server_clock: 88,
                reply_requested: want
            }
        );
    }
    let err = parse_copy_data(Msg::tag(b'k').u64(77).u64(88).b()).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::Truncated {
            message: "Primary keepalive",
            field: "reply flag",
            ..
        }
    ));
    let err = parse_copy_data(Msg::tag(b'k').u64(77).u64(88).u8(0).u8(0).b()).unwrap_err();
    assert!(matches!(err, DecodeError::TrailingBytes { count: 1, .. }));
}

#[test]
fn copy_data_errors() {
    assert_eq!(
        parse_copy_data(Bytes::new()).unwrap_err(),
        DecodeError::Empty {
            context: "replication CopyData"
        }
    );
    let err = parse_copy_data(Bytes::from_static(b"r0000")).unwrap_err();
    assert_eq!(err, DecodeError::UnknownCopyDataTag { tag: b'r' });
    assert!(err.to_string().contains("'r'"));
    let frame = Msg::tag(b'w').u64(1).u64(2).u64(3).b();
    for cut in 1..frame.len() {
        assert!(matches!(
            parse_copy_data(frame.slice(..cut)),
            Err(DecodeError::Truncated {
                message: "XLogData",
                ..
            })
        ));
    }
}

#[test]
fn standby_status_update_layout() {
    let b = encode_standby_status(0x0102_0304_0506_0708, 0x10, 0x20, -2, true);
    assert_eq!(b.len(), 34);
    let mut want = vec![b'r'];
    want.extend_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
    want.extend_from_slice(&0x10u64.to_be_bytes());
    want.extend_from_slice(&0x20u64.to_be_bytes());
    want.extend_from_slice(&(-2i64).to_be_bytes());
    want.push(1);
    assert_eq!(b.as_ref(), want.as_slice());
    assert_eq!(*encode_standby_status(0, 0, 0, 0, false).last().unwrap(), 0);
}
