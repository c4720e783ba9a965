//! Hand-built messages: edge cases, errors, decoder state.

use super::*;

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
