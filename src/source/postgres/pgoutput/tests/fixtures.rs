//! Decoding every message of the PG15 fixtures, asserting concrete values.

use super::*;

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
    assert_eq!(m.len(), 9);
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
    // then the transaction that flushed it
    check_txn(&m[6], &m[8]);
    assert_eq!(insert(&m[7]).2.get(1), Some(TupleValue::Binary(b"two")));
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
