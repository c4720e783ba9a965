//! A broken or hostile "PostgreSQL" (a small TCP server in the test that
//! speaks just enough of the protocol): a message claiming 2 GiB, a stall in
//! the middle of a message, a silent server after a keepalive request, a
//! close mid-message and a server that never finishes the start-up. Each
//! ends in a clear, retryable error within the (shortened) timeouts, and
//! memory stays flat.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::*;
use sluice::source::postgres::replication::ReplicationConnection;
use sluice::source::postgres::SourceError;

const READ_TIMEOUT: Duration = Duration::from_secs(2);
const SSL_REQUEST_CODE: u32 = 80877103;

#[derive(Clone, Copy)]
enum Misbehaviour {
    /// Answers the first query with a RowDescription claiming ~2 GiB, then
    /// keeps sending junk as fast as the client reads it.
    HugeMessage,
    /// Half a RowDescription, then nothing (connection kept open).
    StallMidMessage,
    /// Half a RowDescription, then closes the connection.
    CloseMidMessage,
    /// Enters the replication stream (CopyBothResponse), then says nothing.
    SilentStream,
    /// Accepts the connection and never answers the start-up.
    NoStartup,
}

fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf)
        .expect("client sent less than expected");
    buf
}

/// Reads the start-up packet (answering an SSLRequest with 'N' first).
fn read_startup(s: &mut TcpStream) {
    loop {
        let len = u32::from_be_bytes(read_exact(s, 4).try_into().unwrap()) as usize;
        let body = read_exact(s, len - 4);
        if u32::from_be_bytes(body[..4].try_into().unwrap()) == SSL_REQUEST_CODE {
            s.write_all(b"N").unwrap();
            continue;
        }
        return;
    }
}

fn read_query(s: &mut TcpStream) -> String {
    let head = read_exact(s, 5);
    assert_eq!(head[0], b'Q', "expected a simple query");
    let len = u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
    String::from_utf8_lossy(&read_exact(s, len - 4)).into_owned()
}

/// Starts the server; its thread returns how many bytes it sent after the
/// start-up.
fn bad_server(how: Misbehaviour) -> (u16, JoinHandle<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        if let Misbehaviour::NoStartup = how {
            std::thread::sleep(READ_TIMEOUT * 3);
            return 0;
        }
        read_startup(&mut s);
        // AuthenticationOk, ReadyForQuery(idle).
        s.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0, b'Z', 0, 0, 0, 5, b'I'])
            .unwrap();
        let _query = read_query(&mut s);
        let half_row_description = [b'T', 0, 0, 0, 100, 0, 1, b'x', b'y'];
        match how {
            Misbehaviour::HugeMessage => {
                s.write_all(&[b'T', 0x7f, 0xff, 0xff, 0xf0]).unwrap();
                let junk = vec![0x55u8; 1 << 20];
                let mut sent = 5u64;
                // Until the client hangs up (or 3 GiB, far past the claim).
                while sent < 3 << 30 {
                    match s.write(&junk) {
                        Ok(n) if n > 0 => sent += n as u64,
                        _ => break,
                    }
                }
                sent
            }
            Misbehaviour::StallMidMessage => {
                s.write_all(&half_row_description).unwrap();
                std::thread::sleep(READ_TIMEOUT * 3);
                half_row_description.len() as u64
            }
            Misbehaviour::CloseMidMessage => {
                s.write_all(&half_row_description).unwrap();
                half_row_description.len() as u64
            }
            Misbehaviour::SilentStream => {
                // CopyBothResponse: text format, no columns.
                s.write_all(&[b'W', 0, 0, 0, 7, 0, 0, 0]).unwrap();
                std::thread::sleep(READ_TIMEOUT * 8);
                8
            }
            Misbehaviour::NoStartup => unreachable!(),
        }
    });
    (port, handle)
}

fn info(port: u16) -> sluice::config::PgConnInfo {
    let mut i = conn_info(&format!("postgres://postgres@127.0.0.1:{port}/postgres"));
    i.read_timeout = READ_TIMEOUT;
    i.connect_timeout = READ_TIMEOUT;
    i
}

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Connects and runs IDENTIFY_SYSTEM; returns the error and how long it took.
async fn identify_against(how: Misbehaviour) -> (SourceError, Duration, u64) {
    let (port, server) = bad_server(how);
    let start = Instant::now();
    let result = async {
        let mut conn = ReplicationConnection::connect(&info(port), &[]).await?;
        conn.identify_system().await.map(|_| conn)
    }
    .await;
    let took = start.elapsed();
    let err = match result {
        Ok(_) => panic!("the bad server was accepted"),
        Err(e) => e,
    };
    let sent = server.join().unwrap();
    (err, took, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_claiming_2_gib_is_refused_at_once_with_flat_memory() {
    let before = vm_rss_kib();
    let (err, took, sent) = identify_against(Misbehaviour::HugeMessage).await;
    let grown_mib = vm_rss_kib().saturating_sub(before) / 1024;
    let text = err.to_string();
    assert!(text.contains("claiming 2147483632 bytes"), "{text}");
    assert!(text.contains("maximum"), "{text}");
    assert!(err.is_retryable(), "{err:?}");
    assert!(took < READ_TIMEOUT, "took {took:?}");
    // The client hung up long before the claimed size arrived.
    assert!(sent < 256 << 20, "the client read {sent} bytes of junk");
    assert!(grown_mib < 128, "RSS grew by {grown_mib} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_in_the_middle_of_a_message_times_out() {
    let (err, took, _) = identify_against(Misbehaviour::StallMidMessage).await;
    let text = err.to_string();
    assert!(text.contains("in the middle of a message"), "{text}");
    assert!(text.contains("read_timeout"), "{text}");
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        took >= READ_TIMEOUT && took < READ_TIMEOUT * 3,
        "took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_in_the_middle_of_a_message_is_a_retryable_error() {
    let (err, took, _) = identify_against(Misbehaviour::CloseMidMessage).await;
    let text = err.to_string();
    assert!(
        text.contains("closed the connection in the middle of a message"),
        "{text}"
    );
    assert!(err.is_retryable(), "{err:?}");
    assert!(took < READ_TIMEOUT, "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_up_that_never_completes_times_out() {
    let (err, took, _) = identify_against(Misbehaviour::NoStartup).await;
    let text = err.to_string();
    assert!(text.contains("connect_timeout"), "{text}");
    assert!(err.is_retryable(), "{err:?}");
    assert!(took < READ_TIMEOUT * 3, "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replication_stream_that_goes_silent_after_a_keepalive_request_times_out() {
    let (port, server) = bad_server(Misbehaviour::SilentStream);
    let mut conn = ReplicationConnection::connect(&info(port), &[])
        .await
        .unwrap();
    conn.wire
        .start_copy_both("START_REPLICATION SLOT s LOGICAL 0/0")
        .await
        .unwrap();
    // Quiet with nothing asked: not an error (an idle database is quiet).
    let quiet = tokio::time::timeout(READ_TIMEOUT * 2, conn.wire.next_copy_data()).await;
    assert!(quiet.is_err(), "an idle stream must not time out by itself");
    conn.wire.expect_reply();
    let start = Instant::now();
    let err = conn.wire.next_copy_data().await.unwrap_err();
    let took = start.elapsed();
    let text = err.to_string();
    assert!(text.contains("after being asked for a keepalive"), "{text}");
    assert!(err.is_retryable(), "{err:?}");
    assert!(took < READ_TIMEOUT * 2, "took {took:?}");
    drop(conn);
    server.join().unwrap();
}
