use super::*;

fn unhex(s: &str) -> Vec<u8> {
    let s = s.trim().as_bytes();
    assert!(s.len() % 2 == 0, "odd hex length");
    s.chunks(2)
        .map(|p| {
            let d = |c: u8| (c as char).to_digit(16).expect("hex digit") as u8;
            d(p[0]) << 4 | d(p[1])
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

fn decode_all(proto: u32, msgs: &[Bytes]) -> Vec<PgOutputMessage> {
    let mut d = PgOutputDecoder::new(proto);
    msgs.iter()
        .enumerate()
        .map(|(i, m)| {
            d.decode(m.clone())
                .unwrap_or_else(|e| panic!("message {i} ({:02x?}): {e}", &m[..m.len().min(16)]))
        })
        .collect()
}

#[test]
fn dump() {
    for (name, proto, msgs) in [
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
        ("stream_subxact_abort_v2", 2, fixture!("stream_subxact_abort_v2")),
        ("two_phase_v3", 3, fixture!("two_phase_v3")),
    ] {
        println!("== {name}");
        let mut prev = String::new();
        for m in decode_all(proto, &msgs) {
            let s = format!("{m:?}");
            let k = m.name();
            if k == "Insert" && prev == "Insert" { continue; }
            prev = k.to_string();
            println!("  {}", &s[..s.len().min(600)]);
        }
    }
}
