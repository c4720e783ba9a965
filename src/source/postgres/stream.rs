//! The replication session: opens the slot, reads the CopyBoth stream,
//! assembles micro-batches and confirms only what the sink made durable.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{mpsc, watch};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::assembler::{Assembler, CatalogCache, Step};
use super::catalog;
use super::lsn::Lsn;
use super::pgoutput::{
    encode_standby_status, parse_copy_data, PgOutputDecoder, PgOutputMessage, ReplicationMessage,
    PG_EPOCH_UNIX_MICROS,
};
use super::replication::{max_proto_version, ReplicationConnection, SlotSnapshot, StartOptions};
use super::setup::{
    all_binary, check_resumable, ensure_publication_and_slot, existing_slot, require_logical_wal,
    type_options,
};
use super::spill::{StreamSpill, DEFAULT_MEMORY_PER_TXN};
use crate::config::{BatchConfig, PostgresSourceConfig, TableName};
use crate::core::Flush;
use crate::source::{ChangeStream, SourceError};

/// How long shutdown waits for the sink to confirm the last flush.
const SHUTDOWN_ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Caught-up flushes come at most this often: a floor on batching when
/// single transactions arrive faster than this and the sink keeps up.
pub const MIN_FLUSH_INTERVAL: Duration = Duration::from_millis(10);
/// While the sink is busy (a flush sent and not yet durable), a batch of
/// complete transactions leaves at this many bytes instead of growing to
/// `max_rows`/`max_bytes`: waiting for room then pauses the reading, the
/// rest waits upstream, and memory does not depend on how long the sink
/// happens to stall. Smaller than `max_bytes` when that is smaller.
pub const SINK_BUSY_MAX_BYTES: u64 = 4 << 20;

/// Why a micro-batch left for the sink (logged and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushReason {
    /// Nothing more to read right now, a transaction is complete and the
    /// sink can take the batch: flushed at once.
    CaughtUp,
    MaxRows,
    MaxBytes,
    MaxDelay,
    /// Everything sent before is durable and more of the stream arrived
    /// before it caught up: the complete transactions leave at once.
    SinkIdle,
    /// The sink was busy and complete transactions reached
    /// [`SINK_BUSY_MAX_BYTES`]: sent as soon as there is room.
    SinkBusy,
    /// An idle slot's position moves to the server's WAL end.
    Idle,
    Shutdown,
}

impl FlushReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FlushReason::CaughtUp => "caught_up",
            FlushReason::MaxRows => "max_rows",
            FlushReason::MaxBytes => "max_bytes",
            FlushReason::MaxDelay => "max_delay",
            FlushReason::SinkIdle => "sink_idle",
            FlushReason::SinkBusy => "sink_busy",
            FlushReason::Idle => "idle",
            FlushReason::Shutdown => "shutdown",
        }
    }
}

/// Options beyond the config file.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Resume point (the checkpoint); `None` starts at the slot's confirmed position.
    pub resume: Option<Lsn>,
    /// The tables whose changes are wanted (a subset of the configured ones:
    /// stopped tables are left out).
    pub tables: Vec<TableName>,
    /// Create the publication and slot when missing (as configured); else
    /// the slot must exist and be resumable from `resume` (a pipeline
    /// reconnecting: a slot recreated behind its back would skip changes).
    pub ensure_slot: bool,
    /// Where streamed transactions spill.
    pub spill_dir: PathBuf,
    /// Confirm durable positions to PostgreSQL (false for `tail`).
    pub confirm: bool,
    /// Extra startup parameters for the replication connection.
    pub startup: Vec<(String, String)>,
}

/// One streaming session on one replication connection.
pub struct Session {
    cfg: PostgresSourceConfig,
    batch: BatchConfig,
    opts: SessionOptions,
    catalog: Client,
    repl: ReplicationConnection,
    decoder: PgOutputDecoder,
    proto_version: u32,
    assembler: Assembler,
    catalog_cache: CatalogCache,
    spill: StreamSpill,
    /// Highest WAL position received.
    received: Lsn,
    /// Highest position the sink confirmed durable.
    durable: Lsn,
    /// Highest checkpoint handed to the sink.
    requested: Lsn,
    last_idle_advance: Instant,
    buffered_since: Option<Instant>,
    buffered_wire_bytes: u64,
    /// A transaction completed since the last flush (its end may be saved).
    committed_pending: bool,
    last_flush: Instant,
}

impl Session {
    /// Connects, prepares publication and slot, and starts replication.
    pub async fn start(
        cfg: &PostgresSourceConfig,
        batch: BatchConfig,
        opts: SessionOptions,
    ) -> Result<Session, SourceError> {
        let catalog_client = catalog::connect(&cfg.conn).await?;
        let settings = require_logical_wal(&catalog_client).await?;
        let startup: Vec<(&str, &str)> = opts
            .startup
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut repl = ReplicationConnection::connect(&cfg.conn, &startup).await?;
        if opts.ensure_slot {
            ensure_publication_and_slot(cfg, &catalog_client, &mut repl, SlotSnapshot::NoExport)
                .await?;
        } else {
            let slot = existing_slot(cfg, &catalog_client).await?;
            check_resumable(&cfg.slot, slot.as_ref(), opts.resume.unwrap_or(Lsn::ZERO))?;
        }
        if opts.confirm {
            // (Not for `tail`, which confirms nothing and keeps no state.)
            let partitions = super::partitions::file_for(&opts.spill_dir);
            super::partitions::check(&catalog_client, &partitions, &opts.tables).await?;
        }
        let proto_version = max_proto_version(settings.version_num).min(4);
        let type_opts = type_options(cfg);
        let binary = cfg.binary && all_binary(&catalog_client, &opts.tables, &type_opts).await?;
        let start = opts.resume.unwrap_or(Lsn::ZERO);
        let options = StartOptions {
            proto_version,
            publication: cfg.publication.clone(),
            streaming: true,
            binary,
            // Heartbeats are logical messages, consumed and never written;
            // without the option (PostgreSQL 14+) a transaction holding only
            // one is empty, and PostgreSQL 15+ skips empty transactions.
            messages: cfg.heartbeat_interval.is_some() && settings.version_num >= 140_000,
        };
        repl.start(&cfg.slot, start, &options).await?;
        tracing::info!(slot = %cfg.slot, start = %start, proto_version, "replication started");
        let now = Instant::now();
        Ok(Session {
            assembler: Assembler::new(&opts.tables, type_opts, start),
            cfg: cfg.clone(),
            batch,
            spill: StreamSpill::new(opts.spill_dir.clone(), DEFAULT_MEMORY_PER_TXN),
            opts,
            catalog: catalog_client,
            repl,
            decoder: PgOutputDecoder::new(proto_version),
            proto_version,
            catalog_cache: CatalogCache::default(),
            received: start,
            durable: start,
            requested: start,
            last_idle_advance: now,
            buffered_since: None,
            buffered_wire_bytes: 0,
            committed_pending: false,
            last_flush: now,
        })
    }

    /// Streams until shutdown or an error. Flushes go to `out`; `acks`
    /// carries the positions the sink made durable (and checkpointed).
    pub async fn run(
        self,
        out: mpsc::Sender<Flush<Lsn>>,
        acks: watch::Receiver<Lsn>,
        shutdown: CancellationToken,
    ) -> Result<(), SourceError> {
        let beat_stop = shutdown.child_token();
        let heartbeat = self
            .cfg
            .heartbeat_interval
            .filter(|_| self.opts.confirm)
            .map(|every| {
                tokio::spawn(super::heartbeat::run(
                    self.cfg.conn.clone(),
                    every,
                    beat_stop.clone(),
                ))
            });
        let result = self.run_loop(out, acks, shutdown).await;
        beat_stop.cancel();
        if let Some(h) = heartbeat {
            h.abort();
        }
        result
    }

    async fn run_loop(
        mut self,
        out: mpsc::Sender<Flush<Lsn>>,
        mut acks: watch::Receiver<Lsn>,
        shutdown: CancellationToken,
    ) -> Result<(), SourceError> {
        let mut tick = tokio::time::interval(self.cfg.status_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self
                .buffered_since
                .map(|t| tokio::time::Instant::from_std(t + self.batch.max_delay));
            // Adaptive batching: a completed transaction leaves as soon as
            // nothing more is readable (the branch below the read) and the
            // sink has room; while changes keep arriving they batch up, to
            // max_delay at most.
            let ready_at = self
                .committed_pending
                .then(|| tokio::time::Instant::from_std(self.last_flush + MIN_FLUSH_INTERVAL));
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                changed = acks.changed() => {
                    if changed.is_err() {
                        if shutdown.is_cancelled() {
                            // Told to stop, and that nothing more will be
                            // acknowledged (a held position).
                            break;
                        }
                        return Err(SourceError::NotReady("the sink stopped".into()));
                    }
                    let acked = *acks.borrow_and_update();
                    if acked > self.durable {
                        self.durable = acked;
                        self.send_status(false).await?;
                    }
                }
                // While idle, ask the server to answer with a keepalive: its
                // WAL end lets an idle slot advance (see maybe_idle_advance).
                // A server quiet for a whole interval is asked too, so a
                // dead one times out (the wire's read timeout).
                _ = tick.tick() => {
                    let idle = self.assembler.is_idle() && self.spill.is_empty();
                    let quiet = self.repl.wire.quiet_for() >= self.cfg.status_interval;
                    self.send_status(idle || quiet).await?;
                    if self.opts.confirm {
                        let file = super::partitions::file_for(&self.opts.spill_dir);
                        super::partitions::check(&self.catalog, &file, &self.opts.tables).await?;
                    }
                }
                _ = sleep_until_opt(deadline) => self.flush(&out, &mut acks, FlushReason::MaxDelay).await?,
                data = self.repl.wire.next_copy_data() => {
                    let Some(data) = data? else {
                        return Err(SourceError::Io(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the server ended the replication stream",
                        )));
                    };
                    self.on_copy_data(data, &out, &mut acks).await?;
                }
                // Polled only when no data was ready above: caught up.
                permit = reserve_at(ready_at, &out), if ready_at.is_some() => {
                    let permit = permit.map_err(|_| SourceError::NotReady("the sink stopped".into()))?;
                    if let Some(flush) = self.take_flush(FlushReason::CaughtUp) {
                        permit.send(flush);
                    }
                }
            }
        }
        self.shutdown(&out, &mut acks).await
    }

    async fn on_copy_data(
        &mut self,
        data: Bytes,
        out: &mpsc::Sender<Flush<Lsn>>,
        acks: &mut watch::Receiver<Lsn>,
    ) -> Result<(), SourceError> {
        match parse_copy_data(data).map_err(|e| SourceError::Decode(e.to_string()))? {
            ReplicationMessage::XLogData {
                wal_start,
                wal_end,
                data,
                ..
            } => {
                self.received = self.received.max(Lsn(wal_end));
                self.on_message(wal_start, data, out, acks).await?;
            }
            ReplicationMessage::PrimaryKeepalive {
                wal_end,
                server_clock,
                reply_requested,
            } => {
                self.received = self.received.max(Lsn(wal_end));
                let at = server_clock.saturating_add(PG_EPOCH_UNIX_MICROS);
                self.maybe_idle_advance(Lsn(wal_end), at, out, acks).await?;
                if reply_requested {
                    self.send_status(false).await?;
                }
            }
        }
        Ok(())
    }

    /// A flush was sent and is not durable yet.
    fn sink_busy(&self) -> bool {
        self.durable < self.requested
    }

    async fn on_message(
        &mut self,
        wal_start: u64,
        data: Bytes,
        out: &mpsc::Sender<Flush<Lsn>>,
        acks: &mut watch::Receiver<Lsn>,
    ) -> Result<(), SourceError> {
        // More of the stream came before it caught up: an idle sink takes
        // the complete transactions now rather than when it pauses.
        if self.committed_pending
            && !self.sink_busy()
            && self.last_flush.elapsed() >= MIN_FLUSH_INTERVAL
        {
            self.flush(out, acks, FlushReason::SinkIdle).await?;
        }
        let in_stream = self.decoder.stream_xid();
        let msg = self
            .decoder
            .decode(data.clone())
            .map_err(|e| SourceError::Decode(e.to_string()))?;
        match msg {
            PgOutputMessage::StreamStart { .. } | PgOutputMessage::StreamStop => {}
            PgOutputMessage::StreamAbort { xid, subxid, .. } => self.spill.abort(xid, subxid),
            PgOutputMessage::StreamCommit {
                xid,
                commit_lsn,
                end_lsn,
                commit_ts,
                ..
            } => {
                self.replay_stream(xid, commit_lsn, end_lsn, commit_ts, out, acks)
                    .await?;
            }
            msg if in_stream.is_some() => {
                // A change of an in-progress transaction: hold it until its
                // Stream Commit (or drop it at Stream Abort).
                let xid = in_stream.unwrap_or_default();
                drop(msg);
                self.spill.append(xid, wal_start, data)?;
            }
            msg => {
                self.apply(msg, data.len(), Lsn(wal_start), out, acks)
                    .await?
            }
        }
        Ok(())
    }

    async fn apply(
        &mut self,
        msg: PgOutputMessage,
        wire_len: usize,
        wal_start: Lsn,
        out: &mpsc::Sender<Flush<Lsn>>,
        acks: &mut watch::Receiver<Lsn>,
    ) -> Result<(), SourceError> {
        if let PgOutputMessage::Relation(body) = &msg {
            let missing = Assembler::missing_types(body, &self.catalog_cache.types);
            if !missing.is_empty() {
                catalog::resolve_types(&self.catalog, &missing, &mut self.catalog_cache.types)
                    .await?;
            }
            let not_null = catalog::not_null_columns(&self.catalog, body.rel_id).await?;
            self.catalog_cache.not_null.insert(body.rel_id, not_null);
            let multi_dim = catalog::multi_dim_columns(&self.catalog, body.rel_id).await?;
            self.catalog_cache.multi_dim.insert(body.rel_id, multi_dim);
            let keys = catalog::key_columns(&self.catalog, body.rel_id).await?;
            self.catalog_cache.keys.insert(body.rel_id, keys);
            if !self.catalog_cache.defaults.contains_key(&body.rel_id) {
                let generated = catalog::generated_columns(&self.catalog, body.rel_id).await?;
                let table =
                    crate::config::TableName::new(body.namespace.clone(), body.name.clone());
                if self.opts.tables.contains(&table) {
                    catalog::warn_generated(&table, &generated);
                }
            }
            let defaults = catalog::added_defaults(&self.catalog, body.rel_id).await?;
            self.catalog_cache.defaults.insert(body.rel_id, defaults);
        }
        if let Step::Committed { .. } =
            self.assembler.handle(msg, wal_start, &self.catalog_cache)?
        {
            self.committed_pending = true;
        }
        // Wire size approximates Arrow size closely enough for max_bytes,
        // and costs nothing to track.
        self.buffered_wire_bytes += wire_len as u64;
        if self.buffered_since.is_none() && !self.assembler.is_idle() {
            self.buffered_since = Some(Instant::now());
        }
        if self.assembler.buffered_rows() >= self.batch.max_rows {
            self.flush(out, acks, FlushReason::MaxRows).await?;
        } else if self.buffered_wire_bytes >= self.batch.max_bytes {
            self.flush(out, acks, FlushReason::MaxBytes).await?;
        } else if self.committed_pending
            && self.sink_busy()
            && self.buffered_wire_bytes >= SINK_BUSY_MAX_BYTES.min(self.batch.max_bytes)
        {
            self.flush(out, acks, FlushReason::SinkBusy).await?;
        }
        Ok(())
    }

    async fn replay_stream(
        &mut self,
        xid: u32,
        commit_lsn: u64,
        end_lsn: u64,
        commit_ts: i64,
        out: &mpsc::Sender<Flush<Lsn>>,
        acks: &mut watch::Receiver<Lsn>,
    ) -> Result<(), SourceError> {
        let (mut replay, aborted) = self.spill.take(xid)?;
        // The held messages carry the streamed-block xid prefix.
        let mut decoder = PgOutputDecoder::new(self.proto_version);
        decoder
            .decode(stream_start_message(xid))
            .map_err(|e| SourceError::Decode(e.to_string()))?;
        self.assembler.begin(commit_lsn, commit_ts);
        while let Some((wal_start, data)) = replay.next_message()? {
            let wire_len = data.len();
            let msg = decoder
                .decode(data)
                .map_err(|e| SourceError::Decode(e.to_string()))?;
            if message_xid(&msg).is_some_and(|x| aborted.contains(&x)) {
                continue;
            }
            self.apply(msg, wire_len, Lsn(wal_start), out, acks).await?;
        }
        self.assembler.commit(end_lsn);
        self.committed_pending = true;
        Ok(())
    }

    /// While nothing is buffered or in flight, confirm the server's WAL end
    /// (through the checkpoint) so an idle or filtered slot does not pin WAL.
    async fn maybe_idle_advance(
        &mut self,
        wal_end: Lsn,
        server_clock: i64,
        out: &mpsc::Sender<Flush<Lsn>>,
        acks: &mut watch::Receiver<Lsn>,
    ) -> Result<(), SourceError> {
        if !self.opts.confirm
            || self.durable < self.requested
            || !self.assembler.is_idle()
            || !self.spill.is_empty()
            || self.decoder.stream_xid().is_some()
            || self.last_idle_advance.elapsed() < self.cfg.status_interval
        {
            return Ok(());
        }
        if wal_end <= self.requested {
            // Nothing new on the server and everything before is durable:
            // caught up as of its clock (lag in seconds stays exact while
            // idle even without the heartbeat).
            self.last_idle_advance = Instant::now();
            let flush = Flush {
                source_time: Some(server_clock),
                ..Flush::default()
            };
            return self.send_flush(flush, out, acks).await;
        }
        self.last_idle_advance = Instant::now();
        tracing::debug!(lsn = %wal_end, "idle: advancing checkpoint to the server's WAL end");
        // Caught up with the server as of its clock: no lag.
        let flush = Flush {
            items: Vec::new(),
            position: Some(wal_end),
            source_time: Some(server_clock),
        };
        metrics::counter!(crate::metrics::SOURCE_FLUSHES, "reason" => FlushReason::Idle.as_str())
            .increment(1);
        self.send_flush(flush, out, acks).await
    }

    async fn flush(
        &mut self,
        out: &mpsc::Sender<Flush<Lsn>>,
        acks: &mut watch::Receiver<Lsn>,
        reason: FlushReason,
    ) -> Result<(), SourceError> {
        match self.take_flush(reason) {
            Some(flush) => self.send_flush(flush, out, acks).await,
            None => Ok(()),
        }
    }

    /// Everything buffered, as a flush; `None` when there is nothing.
    fn take_flush(&mut self, reason: FlushReason) -> Option<Flush<Lsn>> {
        self.buffered_since = None;
        self.buffered_wire_bytes = 0;
        self.committed_pending = false;
        self.last_flush = Instant::now();
        let flush = self.assembler.take_flush();
        if flush.items.is_empty() && flush.position.is_none() {
            return None;
        }
        if flush.rows() > 0 {
            tracing::debug!(reason = %reason.as_str(), rows = flush.rows(), "flush");
        }
        metrics::counter!(crate::metrics::SOURCE_FLUSHES, "reason" => reason.as_str()).increment(1);
        Some(flush)
    }

    /// Hands a flush to the sink, waiting for room (backpressure) while
    /// keeping the server's timeout at bay with status updates.
    async fn send_flush(
        &mut self,
        flush: Flush<Lsn>,
        out: &mpsc::Sender<Flush<Lsn>>,
        acks: &mut watch::Receiver<Lsn>,
    ) -> Result<(), SourceError> {
        if let Some(c) = flush.position {
            self.requested = self.requested.max(c);
        }
        let mut tick = tokio::time::interval(self.cfg.status_interval);
        tick.tick().await;
        // Gone when nothing more will be acknowledged (a held position).
        let mut acks_open = true;
        loop {
            tokio::select! {
                permit = out.reserve() => {
                    let permit = permit.map_err(|_| SourceError::NotReady("the sink stopped".into()))?;
                    permit.send(flush);
                    return Ok(());
                }
                changed = acks.changed(), if acks_open => {
                    if changed.is_err() {
                        acks_open = false;
                        continue;
                    }
                    let acked = *acks.borrow_and_update();
                    self.durable = self.durable.max(acked);
                }
                _ = tick.tick() => self.send_status(false).await?,
            }
        }
    }

    /// Standby status update: written = received, flushed = applied = durable.
    async fn send_status(&mut self, reply: bool) -> Result<(), SourceError> {
        let confirmed = if self.opts.confirm {
            self.durable
        } else {
            self.opts.resume.unwrap_or(Lsn::ZERO)
        };
        let msg = encode_standby_status(
            self.received.0,
            confirmed.0,
            confirmed.0,
            pg_now_micros(),
            reply,
        );
        if reply {
            self.repl.wire.expect_reply();
        }
        self.repl.wire.send_copy_data(msg).await
    }

    async fn shutdown(
        mut self,
        out: &mpsc::Sender<Flush<Lsn>>,
        acks: &mut watch::Receiver<Lsn>,
    ) -> Result<(), SourceError> {
        tracing::info!("source draining: flushing buffered changes");
        self.flush(out, acks, FlushReason::Shutdown).await?;
        let deadline = tokio::time::Instant::now() + SHUTDOWN_ACK_TIMEOUT;
        while self.opts.confirm && self.durable < self.requested {
            match tokio::time::timeout_at(deadline, acks.changed()).await {
                Ok(Ok(())) => self.durable = self.durable.max(*acks.borrow_and_update()),
                _ => break,
            }
        }
        self.send_status(false).await?;
        let _ = self.repl.wire.end_copy().await;
        tracing::info!(confirmed = %self.durable, "source stopped");
        Ok(())
    }
}

impl ChangeStream for Session {
    type Position = Lsn;

    async fn run(
        self,
        out: mpsc::Sender<Flush<Lsn>>,
        acks: watch::Receiver<Lsn>,
        shutdown: CancellationToken,
    ) -> Result<(), SourceError> {
        Session::run(self, out, acks, shutdown).await
    }
}

/// Room in the channel, not before `at`.
async fn reserve_at<'a>(
    at: Option<tokio::time::Instant>,
    out: &'a mpsc::Sender<Flush<Lsn>>,
) -> Result<mpsc::Permit<'a, Flush<Lsn>>, mpsc::error::SendError<()>> {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
    out.reserve().await
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn pg_now_micros() -> i64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    unix - PG_EPOCH_UNIX_MICROS
}

/// A Stream Start message, to put a replay decoder into streamed-block mode.
fn stream_start_message(xid: u32) -> Bytes {
    let mut b = BytesMut::with_capacity(6);
    b.put_u8(b'S');
    b.put_u32(xid);
    b.put_u8(0);
    b.freeze()
}

/// The (sub)transaction xid a streamed change carries.
fn message_xid(msg: &PgOutputMessage) -> Option<u32> {
    match msg {
        PgOutputMessage::Insert { xid, .. }
        | PgOutputMessage::Update { xid, .. }
        | PgOutputMessage::Delete { xid, .. }
        | PgOutputMessage::Truncate { xid, .. }
        | PgOutputMessage::Type { xid, .. }
        | PgOutputMessage::Message { xid, .. } => *xid,
        PgOutputMessage::Relation(b) => b.xid,
        _ => None,
    }
}
