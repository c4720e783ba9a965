//! Never panic, whatever the input.

use super::*;

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
