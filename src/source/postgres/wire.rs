//! A PostgreSQL frontend connection on `postgres-protocol` over tokio:
//! startup (with `replication=database` when asked), authentication
//! (trust, cleartext, MD5, SCRAM-SHA-256), simple queries and the CopyBoth
//! stream that logical replication uses. tokio-postgres cannot do CopyBoth,
//! so this is ours; ordinary catalog queries still go through tokio-postgres.

use bytes::{Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::{ErrorFields, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Duration, Instant};

use crate::config::{PgConnInfo, SslMode};
use crate::secret::redact;
use crate::source::error::{PgServerError, SourceError};

const READ_CHUNK: usize = 64 * 1024;
/// No PostgreSQL message is larger: the server's own buffers stop at 1 GiB.
/// A length field above it is a broken or hostile server, not a big row.
pub const MAX_MESSAGE_LEN: usize = 1 << 30;
/// Buffer reserved ahead of the bytes that have arrived: a frame's claimed
/// length never decides an allocation by itself.
const MAX_READ_AHEAD: usize = 1 << 20;

/// Result rows of a simple query, as text (None = NULL).
#[derive(Debug, Default)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl QueryResult {
    /// The value of `column` in the first row.
    pub fn first(&self, column: &str) -> Option<&str> {
        let idx = self.columns.iter().position(|c| c == column)?;
        self.rows.first()?.get(idx)?.as_deref()
    }
}

/// The byte stream under a connection: plain TCP or TLS.
trait PgIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> PgIo for T {}

/// The SSLRequest code (1234 << 16 | 5679).
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// One frontend connection. Frames are read into one buffer and split off
/// without copying; CopyData payloads are handed out as `Bytes`.
///
/// Reads time out (`read_timeout`) whenever an answer is due: in the middle
/// of a frame, and after [`PgWire::expect_reply`] (a status update asking
/// for a keepalive). A server that is simply quiet (no changes, or a long
/// CREATE_REPLICATION_SLOT) is not an error.
pub struct PgWire {
    stream: Box<dyn PgIo>,
    read_buf: BytesMut,
    write_buf: BytesMut,
    in_copy_both: bool,
    read_timeout: Duration,
    last_heard: Instant,
    reply_asked_at: Option<Instant>,
}

impl PgWire {
    /// Connects and authenticates. `replication` adds `replication=database`;
    /// `options` become extra startup parameters (e.g. `-c name=value` in `options`).
    pub async fn connect(
        info: &PgConnInfo,
        replication: bool,
        extra: &[(&str, &str)],
    ) -> Result<PgWire, SourceError> {
        let stream: Box<dyn PgIo> = match info.ssl_mode {
            SslMode::Disable => Box::new(tcp_connect(info).await?),
            SslMode::Require => Box::new(tls_connect(info).await?),
            SslMode::Prefer => match tls_connect(info).await {
                Ok(tls) => Box::new(tls),
                Err(SourceError::Tls(reason)) => {
                    tracing::warn!(%reason, "sslmode=prefer: continuing without TLS");
                    Box::new(tcp_connect(info).await?)
                }
                Err(e) => return Err(e),
            },
        };
        let mut wire = PgWire {
            stream,
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            write_buf: BytesMut::with_capacity(1024),
            in_copy_both: false,
            read_timeout: info.read_timeout,
            last_heard: Instant::now(),
            reply_asked_at: None,
        };
        let mut params: Vec<(&str, &str)> = vec![
            ("user", &info.user),
            ("database", &info.dbname),
            ("application_name", &info.application_name),
            ("client_encoding", "UTF8"),
            // Fixed output styles so text-format values parse the same everywhere.
            ("DateStyle", "ISO, MDY"),
            ("IntervalStyle", "postgres"),
            ("TimeZone", "UTC"),
            ("extra_float_digits", "3"),
        ];
        if replication {
            params.push(("replication", "database"));
        }
        params.extend_from_slice(extra);
        frontend::startup_message(params.iter().copied(), &mut wire.write_buf)?;
        // The whole start-up answers within the connect timeout.
        let startup = async {
            wire.flush().await?;
            wire.authenticate(info).await?;
            wire.wait_ready().await
        };
        match tokio::time::timeout(info.connect_timeout, startup).await {
            Ok(done) => done?,
            Err(_) => {
                return Err(SourceError::Connect {
                    addr: format!("{}:{}", info.host, info.port),
                    source: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                        "no answer to the start-up within {:?} (source.postgres.connect_timeout)",
                        info.connect_timeout
                    ),
                    ),
                })
            }
        }
        Ok(wire)
    }

    /// The caller asked the server for an answer (a status update with the
    /// reply flag): from now on a silent server times out.
    pub fn expect_reply(&mut self) {
        self.reply_asked_at.get_or_insert_with(Instant::now);
    }

    /// How long since the last byte arrived.
    pub fn quiet_for(&self) -> Duration {
        self.last_heard.elapsed()
    }

    async fn authenticate(&mut self, info: &PgConnInfo) -> Result<(), SourceError> {
        let need_password = || {
            info.password.clone().ok_or_else(|| SourceError::AuthFailed {
                user: info.user.clone(),
                message: "the server asks for a password but none is configured (put it in source.postgres.url, source.postgres.password or password_file)".into(),
            })
        };
        let mut scram: Option<ScramSha256> = None;
        loop {
            let msg = self.read_message().await?;
            match msg {
                Message::AuthenticationOk => return Ok(()),
                Message::AuthenticationCleartextPassword => {
                    let pw = need_password()?;
                    frontend::password_message(pw.expose().as_bytes(), &mut self.write_buf)?;
                    self.flush().await?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let pw = need_password()?;
                    let hash = postgres_protocol::authentication::md5_hash(
                        info.user.as_bytes(),
                        pw.expose().as_bytes(),
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut self.write_buf)?;
                    self.flush().await?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut has_scram = false;
                    while let Some(m) = mechanisms.next()? {
                        has_scram |= m == SCRAM_SHA_256;
                    }
                    if !has_scram {
                        return Err(SourceError::AuthUnsupported(
                            "SASL without SCRAM-SHA-256".into(),
                        ));
                    }
                    let pw = need_password()?;
                    // No TLS, so no channel binding.
                    let s = ScramSha256::new(pw.expose().as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response(
                        SCRAM_SHA_256,
                        s.message(),
                        &mut self.write_buf,
                    )?;
                    self.flush().await?;
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram.as_mut().ok_or_else(|| {
                        SourceError::Protocol("SASL continue before SASL start".into())
                    })?;
                    s.update(body.data()).map_err(|e| SourceError::AuthFailed {
                        user: info.user.clone(),
                        message: format!("SCRAM exchange failed: {e}"),
                    })?;
                    frontend::sasl_response(s.message(), &mut self.write_buf)?;
                    self.flush().await?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let s = scram.as_mut().ok_or_else(|| {
                        SourceError::Protocol("SASL final before SASL start".into())
                    })?;
                    s.finish(body.data()).map_err(|e| SourceError::AuthFailed {
                        user: info.user.clone(),
                        message: format!("server signature did not verify: {e}"),
                    })?;
                }
                Message::ErrorResponse(body) => {
                    let err = server_error(body.fields())?;
                    // 28xxx: invalid authorization / password.
                    if err.code.starts_with("28") {
                        let mut message = err.message.clone();
                        if let Some(pw) = &info.password {
                            message = redact(&message, pw);
                        }
                        return Err(SourceError::AuthFailed {
                            user: info.user.clone(),
                            message,
                        });
                    }
                    return Err(SourceError::Server(err));
                }
                Message::AuthenticationKerberosV5
                | Message::AuthenticationScmCredential
                | Message::AuthenticationGss
                | Message::AuthenticationSspi
                | Message::AuthenticationGssContinue(_) => {
                    return Err(SourceError::AuthUnsupported(
                        "Kerberos/GSSAPI/SSPI (use md5, scram-sha-256 or password in pg_hba.conf)"
                            .into(),
                    ))
                }
                Message::NoticeResponse(_) => {}
                _ => {
                    return Err(SourceError::Protocol(
                        "unexpected message during authentication".into(),
                    ))
                }
            }
        }
    }

    /// Reads until ReadyForQuery, failing on an ErrorResponse.
    async fn wait_ready(&mut self) -> Result<(), SourceError> {
        let mut error = None;
        loop {
            match self.read_message().await? {
                Message::ReadyForQuery(_) => {
                    return match error {
                        Some(e) => Err(SourceError::Server(e)),
                        None => Ok(()),
                    }
                }
                Message::ErrorResponse(body) => error = Some(server_error(body.fields())?),
                _ => {}
            }
        }
    }

    /// Runs one statement with the simple query protocol and collects text rows.
    pub async fn simple_query(&mut self, sql: &str) -> Result<QueryResult, SourceError> {
        frontend::query(sql, &mut self.write_buf)?;
        self.flush().await?;
        let mut result = QueryResult::default();
        let mut error = None;
        loop {
            match self.read_message().await? {
                Message::RowDescription(body) => {
                    let mut fields = body.fields();
                    while let Some(f) = fields.next()? {
                        result.columns.push(f.name().to_owned());
                    }
                }
                Message::DataRow(body) => {
                    let buf = body.buffer();
                    let mut ranges = body.ranges();
                    let mut row = Vec::with_capacity(result.columns.len());
                    while let Some(r) = ranges.next()? {
                        row.push(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()));
                    }
                    result.rows.push(row);
                }
                Message::ErrorResponse(body) => error = Some(server_error(body.fields())?),
                Message::ReadyForQuery(_) => {
                    return match error {
                        Some(e) => Err(SourceError::Server(e)),
                        None => Ok(result),
                    }
                }
                _ => {}
            }
        }
    }

    /// Sends a query that answers with CopyBothResponse (START_REPLICATION)
    /// and waits for that response.
    pub async fn start_copy_both(&mut self, sql: &str) -> Result<(), SourceError> {
        frontend::query(sql, &mut self.write_buf)?;
        self.flush().await?;
        loop {
            let (tag, mut frame) = self.read_frame().await?;
            match tag {
                b'W' => {
                    self.in_copy_both = true;
                    return Ok(());
                }
                b'E' => {
                    let err = parse_error_frame(&mut frame)?;
                    // The server follows an error with ReadyForQuery.
                    self.wait_ready().await.ok();
                    return Err(SourceError::Server(err));
                }
                b'N' | b'S' => {}
                other => {
                    return Err(SourceError::Protocol(format!(
                        "expected CopyBothResponse, got message '{}'",
                        other as char
                    )))
                }
            }
        }
    }

    /// The next CopyData payload of a CopyBoth stream; `None` when the server
    /// ends the copy. Cancel-safe: partial reads stay in the buffer.
    pub async fn next_copy_data(&mut self) -> Result<Option<Bytes>, SourceError> {
        loop {
            let (tag, mut frame) = self.read_frame().await?;
            match tag {
                b'd' => return Ok(Some(frame.split_off(5).freeze())),
                // CopyDone, or the statement's end (a server shutting down
                // may close the copy this way): the stream is over.
                b'c' | b'C' | b'Z' => {
                    self.in_copy_both = false;
                    return Ok(None);
                }
                b'E' => return Err(SourceError::Server(parse_error_frame(&mut frame)?)),
                b'N' | b'S' => {}
                other => {
                    return Err(SourceError::Protocol(format!(
                        "unexpected message '{}' in replication stream",
                        other as char
                    )))
                }
            }
        }
    }

    /// Sends one CopyData message (e.g. a standby status update).
    pub async fn send_copy_data(&mut self, payload: Bytes) -> Result<(), SourceError> {
        frontend::CopyData::new(payload)?.write(&mut self.write_buf);
        self.flush().await
    }

    /// Ends the CopyBoth stream from our side and drains until ReadyForQuery.
    pub async fn end_copy(&mut self) -> Result<(), SourceError> {
        if !self.in_copy_both {
            return Ok(());
        }
        frontend::copy_done(&mut self.write_buf);
        self.flush().await?;
        loop {
            let (tag, _) = self.read_frame().await?;
            match tag {
                b'c' => self.in_copy_both = false,
                b'Z' => return Ok(()),
                _ => {}
            }
        }
    }

    /// Politely closes the connection.
    pub async fn close(mut self) {
        frontend::terminate(&mut self.write_buf);
        let _ = self.flush().await;
    }

    async fn flush(&mut self) -> Result<(), SourceError> {
        self.stream.write_all(&self.write_buf).await?;
        self.write_buf.clear();
        Ok(())
    }

    /// Reads one whole frame: its tag and the frame bytes (tag and length
    /// included). The buffer grows as bytes arrive, never to a claimed length.
    async fn read_frame(&mut self) -> Result<(u8, BytesMut), SourceError> {
        loop {
            if self.read_buf.len() >= 5 {
                let len = u32::from_be_bytes(self.read_buf[1..5].try_into().unwrap()) as usize;
                check_frame_len(self.read_buf[0], len)?;
                let total = 1 + len;
                if self.read_buf.len() >= total {
                    let tag = self.read_buf[0];
                    return Ok((tag, self.read_buf.split_to(total)));
                }
                let missing = total - self.read_buf.len();
                self.read_buf
                    .reserve(missing.clamp(READ_CHUNK, MAX_READ_AHEAD));
            } else {
                self.read_buf.reserve(READ_CHUNK);
            }
            let mid_frame = !self.read_buf.is_empty();
            let deadline = if mid_frame {
                Some(self.last_heard + self.read_timeout)
            } else {
                self.reply_asked_at.map(|t| t + self.read_timeout)
            };
            let read = self.stream.read_buf(&mut self.read_buf);
            let n = match deadline {
                None => read.await?,
                Some(d) => match tokio::time::timeout_at(d, read).await {
                    Ok(n) => n?,
                    Err(_) => {
                        return Err(SourceError::Io(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!(
                                "the server sent nothing for {:?}{} (source.postgres.read_timeout); reconnecting",
                                self.read_timeout,
                                if mid_frame { " in the middle of a message" } else { " after being asked for a keepalive" }
                            ),
                        )))
                    }
                },
            };
            if n == 0 {
                return Err(SourceError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    if self.read_buf.is_empty() {
                        "server closed the connection"
                    } else {
                        "server closed the connection in the middle of a message"
                    },
                )));
            }
            self.last_heard = Instant::now();
            self.reply_asked_at = None;
        }
    }

    /// Reads one frame and parses it with postgres-protocol. CopyBoth ('W'),
    /// which that parser does not know, is handled by the callers above.
    async fn read_message(&mut self) -> Result<Message, SourceError> {
        let (tag, mut frame) = self.read_frame().await?;
        if tag == b'W' {
            return Err(SourceError::Protocol("unexpected CopyBothResponse".into()));
        }
        Message::parse(&mut frame)?
            .ok_or_else(|| SourceError::Protocol(format!("incomplete '{}' frame", tag as char)))
    }
}

async fn tcp_connect(info: &PgConnInfo) -> Result<TcpStream, SourceError> {
    let addr = format!("{}:{}", info.host, info.port);
    let stream = tokio::time::timeout(info.connect_timeout, TcpStream::connect(&addr))
        .await
        .map_err(|_| SourceError::Connect {
            addr: addr.clone(),
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
        })?
        .map_err(|source| SourceError::Connect {
            addr: addr.clone(),
            source,
        })?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// SSLRequest, then a verified TLS handshake. `SourceError::Tls` when the
/// server refuses TLS or its certificate does not verify.
async fn tls_connect(
    info: &PgConnInfo,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, SourceError> {
    let config = super::tls::client_config(info.ssl_root_cert.as_deref())?;
    let name = super::tls::server_name(&info.host)?;
    let mut tcp = tcp_connect(info).await?;
    tcp.write_all(&SSL_REQUEST).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    if answer[0] != b'S' {
        return Err(SourceError::Tls(format!(
            "the server at {}:{} does not accept TLS connections (ssl = off?)",
            info.host, info.port
        )));
    }
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| {
            SourceError::Tls(format!(
                "handshake with {}:{} failed: {e} (set source.postgres.ssl_root_cert to the CA that signed the server's certificate)",
                info.host, info.port
            ))
        })
}

/// A frame length the protocol allows: at least its own 4 bytes, at most
/// [`MAX_MESSAGE_LEN`]. An error here is retryable (reconnect), like any
/// connection that went bad.
fn check_frame_len(tag: u8, len: usize) -> Result<(), SourceError> {
    if len < 4 {
        return Err(SourceError::Protocol(format!("bad frame length {len}")));
    }
    if len > MAX_MESSAGE_LEN {
        return Err(SourceError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the server sent a '{}' message claiming {len} bytes, more than the {MAX_MESSAGE_LEN}-byte maximum of the protocol (a broken server or something else on that port)",
                tag.escape_ascii()
            ),
        )));
    }
    Ok(())
}

fn parse_error_frame(frame: &mut BytesMut) -> Result<PgServerError, SourceError> {
    match Message::parse(frame)? {
        Some(Message::ErrorResponse(body)) => server_error(body.fields()),
        _ => Err(SourceError::Protocol("malformed ErrorResponse".into())),
    }
}

fn server_error(mut fields: ErrorFields<'_>) -> Result<PgServerError, SourceError> {
    let mut e = PgServerError::default();
    while let Some(f) = fields.next()? {
        let v = String::from_utf8_lossy(f.value_bytes()).into_owned();
        match f.type_() {
            b'V' => e.severity = v,
            b'S' if e.severity.is_empty() => e.severity = v,
            b'C' => e.code = v,
            b'M' => e.message = v,
            b'D' => e.detail = Some(v),
            b'H' => e.hint = Some(v),
            _ => {}
        }
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lengths_are_bounded_before_anything_is_allocated() {
        assert!(check_frame_len(b'd', 4).is_ok());
        assert!(check_frame_len(b'd', MAX_MESSAGE_LEN).is_ok());
        let e = check_frame_len(b'd', 2 << 30).unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(e.to_string().contains("claiming 2147483648 bytes"), "{e}");
        assert!(matches!(
            check_frame_len(b'Z', 3),
            Err(SourceError::Protocol(_))
        ));
    }
}
