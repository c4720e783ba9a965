//! Replication commands on a `replication=database` connection:
//! IDENTIFY_SYSTEM, CREATE_REPLICATION_SLOT, START_REPLICATION and the slot
//! queries sluice needs around them.

use super::lsn::Lsn;
use super::wire::PgWire;
use crate::config::{quote_ident, quote_literal, PgConnInfo};
use crate::source::error::SourceError;

/// What IDENTIFY_SYSTEM answers.
#[derive(Debug, Clone)]
pub struct SystemId {
    pub system_id: String,
    pub timeline: u32,
    pub xlogpos: Lsn,
    pub dbname: Option<String>,
}

/// A newly created logical slot.
#[derive(Debug, Clone)]
pub struct CreatedSlot {
    pub name: String,
    pub consistent_point: Lsn,
    /// Set when created with EXPORT_SNAPSHOT; valid until the next command on
    /// this connection.
    pub snapshot_name: Option<String>,
}

/// How to create a slot's snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotSnapshot {
    /// Export a snapshot for an initial copy under `SET TRANSACTION SNAPSHOT`.
    Export,
    NoExport,
}

/// Options of START_REPLICATION for pgoutput.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub proto_version: u32,
    pub publication: String,
    pub streaming: bool,
    pub binary: bool,
    pub messages: bool,
}

/// Server version as `server_version_num` (e.g. 150018).
pub type ServerVersion = u32;

/// The highest pgoutput protocol version a server speaks.
pub fn max_proto_version(server: ServerVersion) -> u32 {
    match server {
        v if v >= 160000 => 4,
        v if v >= 150000 => 3,
        v if v >= 140000 => 2,
        _ => 1,
    }
}

/// The START_REPLICATION command text. Identifiers are quoted; the
/// publication list is a string literal holding a quoted identifier.
pub fn start_replication_sql(slot: &str, start: Lsn, o: &StartOptions) -> String {
    let mut opts = vec![
        format!("proto_version '{}'", o.proto_version),
        format!(
            "publication_names {}",
            quote_literal(&quote_ident(&o.publication))
        ),
    ];
    if o.streaming && o.proto_version >= 2 {
        opts.push("streaming 'on'".into());
    }
    if o.binary {
        opts.push("binary 'true'".into());
    }
    if o.messages {
        opts.push("messages 'true'".into());
    }
    format!(
        "START_REPLICATION SLOT {} LOGICAL {} ({})",
        quote_ident(slot),
        start,
        opts.join(", ")
    )
}

pub struct ReplicationConnection {
    pub wire: PgWire,
}

impl ReplicationConnection {
    pub async fn connect(info: &PgConnInfo, extra: &[(&str, &str)]) -> Result<Self, SourceError> {
        Ok(ReplicationConnection {
            wire: PgWire::connect(info, true, extra).await?,
        })
    }

    pub async fn identify_system(&mut self) -> Result<SystemId, SourceError> {
        let r = self.wire.simple_query("IDENTIFY_SYSTEM").await?;
        let get = |c: &str| {
            r.first(c)
                .map(str::to_owned)
                .ok_or_else(|| SourceError::Protocol(format!("IDENTIFY_SYSTEM without {c}")))
        };
        Ok(SystemId {
            system_id: get("systemid")?,
            timeline: get("timeline")?
                .parse()
                .map_err(|_| SourceError::Protocol("bad timeline".into()))?,
            xlogpos: get("xlogpos")?.parse().map_err(SourceError::Protocol)?,
            dbname: r.first("dbname").map(str::to_owned),
        })
    }

    pub async fn create_slot(
        &mut self,
        name: &str,
        snapshot: SlotSnapshot,
    ) -> Result<CreatedSlot, SourceError> {
        // The pre-15 keyword syntax is still accepted by PostgreSQL 15-17 and
        // works on older servers too.
        let mode = match snapshot {
            SlotSnapshot::Export => "EXPORT_SNAPSHOT",
            SlotSnapshot::NoExport => "NOEXPORT_SNAPSHOT",
        };
        let sql = format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput {mode}",
            quote_ident(name)
        );
        let r = self.wire.simple_query(&sql).await?;
        Ok(CreatedSlot {
            name: name.to_owned(),
            consistent_point: r
                .first("consistent_point")
                .ok_or_else(|| {
                    SourceError::Protocol("slot created without consistent_point".into())
                })?
                .parse()
                .map_err(SourceError::Protocol)?,
            snapshot_name: r.first("snapshot_name").map(str::to_owned),
        })
    }

    /// Starts streaming; afterwards use `wire.next_copy_data()` and
    /// `wire.send_copy_data()`.
    pub async fn start(
        &mut self,
        slot: &str,
        start: Lsn,
        options: &StartOptions,
    ) -> Result<(), SourceError> {
        let sql = start_replication_sql(slot, start, options);
        tracing::debug!(%sql, "starting replication");
        self.wire.start_copy_both(&sql).await.map_err(|e| match e {
            SourceError::Server(ref s) if s.code == "55006" => SourceError::SlotInUse {
                slot: slot.to_owned(),
                pid: s.message.rsplit(' ').next().unwrap_or("?").to_owned(),
            },
            SourceError::Server(ref s) if s.code == "42704" => SourceError::SlotMissing {
                slot: slot.to_owned(),
            },
            SourceError::Server(ref s)
                if s.code == "55000" && s.message.contains("invalidated") =>
            {
                SourceError::SlotInvalidated {
                    slot: slot.to_owned(),
                    reason: s.detail.clone().unwrap_or_else(|| s.message.clone()),
                }
            }
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_sql_quotes_everything() {
        let o = StartOptions {
            proto_version: 2,
            publication: "my \"pub\"".into(),
            streaming: true,
            binary: true,
            messages: false,
        };
        assert_eq!(
            start_replication_sql("s1", Lsn(0x1_0000_0010), &o),
            "START_REPLICATION SLOT \"s1\" LOGICAL 1/10 (proto_version '2', publication_names '\"my \"\"pub\"\"\"', streaming 'on', binary 'true')"
        );
    }

    #[test]
    fn proto_versions() {
        assert_eq!(max_proto_version(130010), 1);
        assert_eq!(max_proto_version(140000), 2);
        assert_eq!(max_proto_version(150018), 3);
        assert_eq!(max_proto_version(170002), 4);
    }
}
