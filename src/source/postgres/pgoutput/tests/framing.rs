//! Replication CopyData framing: XLogData, keepalive, standby status.

use super::*;

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
