//! `sluice check` for the PostgreSQL source: server settings, permissions,
//! slot, tables and their keys, publication. Changes nothing.

use super::catalog::{self, ReplicaIdentity};
use crate::config::{OnSlotLost, PostgresSourceConfig};
use crate::core::health::Report;

pub async fn healthcheck(cfg: &PostgresSourceConfig) -> Report {
    let mut report = Report::default();
    check(cfg, &mut report).await;
    report
}

async fn check(cfg: &PostgresSourceConfig, report: &mut Report) {
    let subject = "postgres";
    let client = match catalog::connect(&cfg.conn).await {
        Ok(c) => c,
        Err(e) => {
            report.fail(subject, e.to_string());
            return;
        }
    };
    let settings = match catalog::server_settings(&client).await {
        Ok(s) => s,
        Err(e) => {
            report.fail(subject, e.to_string());
            return;
        }
    };
    report.ok(
        subject,
        format!(
            "reachable at {} (PostgreSQL {}), credentials accepted",
            cfg.conn, settings.version
        ),
    );
    if settings.wal_level == "logical" {
        report.ok(subject, "wal_level = logical");
    } else {
        report.fail(
            subject,
            format!(
                "wal_level is '{}' but logical replication needs 'logical': run ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL",
                settings.wal_level
            ),
        );
    }
    if settings.version_num < 140000 {
        report.fail(
            subject,
            format!(
                "PostgreSQL {} is too old: sluice needs 14 or newer",
                settings.version
            ),
        );
    }

    if cfg.heartbeat_interval.is_some() {
        match client
            .query_one(
                // The text variant (PostgreSQL 17 added a fourth argument).
                "SELECT coalesce(bool_or(has_function_privilege(oid, 'EXECUTE')), false)
                 FROM pg_proc WHERE proname = 'pg_logical_emit_message'
                   AND proargtypes[2] = 'text'::regtype",
                &[],
            )
            .await
        {
            Ok(row) if row.get::<_, bool>(0) => {
                report.ok(subject, "heartbeat: may call pg_logical_emit_message")
            }
            Ok(_) => report.fail(
                subject,
                format!(
                    "heartbeat: user {:?} may not call pg_logical_emit_message: grant it EXECUTE on the function's text variant, or set source.postgres.heartbeat_interval = \"0s\"",
                    cfg.conn.user
                ),
            ),
            Err(e) => report.fail(subject, format!("heartbeat: {e}")),
        }
    }

    let slot = catalog::slot(&client, &cfg.slot).await;
    let slot_exists = matches!(slot, Ok(Some(_)));
    match slot {
        Ok(Some(s)) => {
            if s.plugin.as_deref() != Some("pgoutput") {
                report.fail(subject, format!("slot \"{}\" exists but uses plugin {:?}, not pgoutput: drop it or choose another slot name", cfg.slot, s.plugin.unwrap_or_default()));
            } else if s.database.as_deref() != Some(cfg.conn.dbname.as_str()) {
                report.fail(
                    subject,
                    format!(
                        "slot \"{}\" belongs to database {:?}, not {:?}",
                        cfg.slot,
                        s.database.unwrap_or_default(),
                        cfg.conn.dbname
                    ),
                );
            } else if s.wal_status.as_deref() == Some("lost") {
                if cfg.on_slot_lost == OnSlotLost::Resync {
                    report.ok(subject, format!("slot \"{}\" was invalidated (WAL removed, see max_slot_wal_keep_size); `sluice run` recreates it and copies every table again (on_slot_lost = \"resync\")", cfg.slot));
                } else {
                    report.fail(subject, format!("slot \"{}\" was invalidated (WAL removed, see max_slot_wal_keep_size): drop it with `sluice drop` and resync, or set source.postgres.on_slot_lost = \"resync\"", cfg.slot));
                }
            } else if let Some(pid) = s.active_pid {
                report.fail(
                    subject,
                    format!(
                        "slot \"{}\" is in use by another process (pid {pid})",
                        cfg.slot
                    ),
                );
            } else {
                report.ok(
                    subject,
                    format!(
                        "slot \"{}\" exists (confirmed up to {})",
                        cfg.slot,
                        s.confirmed_flush_lsn
                            .map(|l| l.to_string())
                            .unwrap_or_else(|| "-".into())
                    ),
                );
            }
        }
        Ok(None) if !cfg.create_slot => report.fail(
            subject,
            format!(
                "slot \"{}\" does not exist and create_slot = false",
                cfg.slot
            ),
        ),
        Ok(None) => {}
        Err(e) => report.fail(subject, e.to_string()),
    }
    if !slot_exists {
        let free = settings.max_replication_slots - settings.used_replication_slots;
        if free > 0 {
            report.ok(
                subject,
                format!(
                    "max_replication_slots has room ({} of {} used)",
                    settings.used_replication_slots, settings.max_replication_slots
                ),
            );
        } else {
            report.fail(
                subject,
                format!(
                    "max_replication_slots is full ({} of {} used): raise it or drop unused slots",
                    settings.used_replication_slots, settings.max_replication_slots
                ),
            );
        }
    }
    if settings.used_wal_senders < settings.max_wal_senders {
        report.ok(
            subject,
            format!(
                "max_wal_senders has room ({} of {} used)",
                settings.used_wal_senders, settings.max_wal_senders
            ),
        );
    } else {
        report.fail(
            subject,
            format!(
                "max_wal_senders is full ({} of {} used): raise it",
                settings.used_wal_senders, settings.max_wal_senders
            ),
        );
    }

    let role = match catalog::current_role(&client).await {
        Ok(r) => r,
        Err(e) => {
            report.fail(subject, e.to_string());
            return;
        }
    };
    if role.superuser || role.replication {
        report.ok(subject, format!("user \"{}\" may replicate", cfg.conn.user));
    } else {
        report.fail(
            subject,
            format!(
                "user \"{}\" may not replicate: ALTER ROLE {} WITH REPLICATION",
                cfg.conn.user,
                crate::config::quote_ident(&cfg.conn.user)
            ),
        );
    }

    let mut all_owned = true;
    for t in &cfg.tables {
        match catalog::table_info(&client, t).await {
            Ok(None) => report.fail(subject, format!("table {t} does not exist")),
            Ok(Some(info)) => {
                all_owned &= info.owned_by_current_user;
                let user = crate::config::quote_ident(&cfg.conn.user);
                match catalog::read_privileges(&client, t).await {
                    Ok((false, _)) => report.fail(subject, format!(
                        "user \"{}\" lacks USAGE on schema {}: GRANT USAGE ON SCHEMA {} TO {user}",
                        cfg.conn.user, t.schema, crate::config::quote_ident(&t.schema)
                    )),
                    Ok((true, false)) => report.fail(subject, format!(
                        "user \"{}\" lacks SELECT on {t} (the snapshot reads it): GRANT SELECT ON {} TO {user}",
                        cfg.conn.user, t.quoted()
                    )),
                    Ok((true, true)) => {}
                    Err(e) => report.fail(subject, format!("table {t}: {e}")),
                }
                if !info.primary_key.is_empty() {
                    report.ok(
                        subject,
                        format!(
                            "table {t} exists, primary key ({})",
                            info.primary_key.join(", ")
                        ),
                    );
                } else if info.replica_identity == ReplicaIdentity::Full {
                    report.ok(subject, format!("table {t} exists, no primary key but REPLICA IDENTITY FULL (replicated as a multiset, see tables_without_key)"));
                } else if info.identifies_rows() {
                    report.ok(subject, format!("table {t} exists, replica identity index"));
                } else {
                    report.fail(subject, format!(
                        "table {t} has no primary key: updates and deletes cannot be replicated; add a primary key or run ALTER TABLE {} REPLICA IDENTITY FULL",
                        t.quoted()
                    ));
                }
            }
            Err(e) => report.fail(subject, format!("table {t}: {e}")),
        }
    }

    match catalog::publication(&client, &cfg.publication).await {
        Ok(Some(p)) => {
            let missing: Vec<String> = cfg.tables.iter().filter(|t| !p.all_tables && !p.tables.contains(t)).map(|t| t.to_string()).collect();
            let partitioned = if p.via_root {
                Vec::new()
            } else {
                catalog::partitioned_tables(&client, &cfg.tables).await.unwrap_or_default()
            };
            if !partitioned.is_empty() {
                let names: Vec<String> = partitioned.iter().map(|t| t.to_string()).collect();
                let what = format!(
                    "publication \"{}\" does not set publish_via_partition_root, but {} {} partitioned (its changes would arrive under the partitions' names)",
                    cfg.publication,
                    names.join(", "),
                    if names.len() == 1 { "is" } else { "are" }
                );
                if cfg.create_publication && (role.superuser || all_owned) {
                    report.ok(subject, format!("{what}; sluice run sets it"));
                } else {
                    report.fail(subject, format!("{what}: ALTER PUBLICATION {} SET (publish_via_partition_root = true)", crate::config::quote_ident(&cfg.publication)));
                }
            }
            if missing.is_empty() {
                report.ok(subject, format!("publication \"{}\" covers the tables", cfg.publication));
            } else if cfg.create_publication && (role.superuser || all_owned) {
                report.ok(subject, format!("publication \"{}\" lacks {}; sluice run adds them", cfg.publication, missing.join(", ")));
            } else {
                report.fail(subject, format!("publication \"{}\" does not include {}", cfg.publication, missing.join(", ")));
            }
        }
        Ok(None) if !cfg.create_publication => report.fail(subject, format!("publication \"{}\" does not exist and create_publication = false", cfg.publication)),
        Ok(None) if role.superuser || (all_owned && role.can_create_in_db) => {
            report.ok(subject, format!("publication \"{}\" does not exist yet; sluice run creates it", cfg.publication))
        }
        Ok(None) => report.fail(subject, format!(
            "publication \"{}\" does not exist and user \"{}\" cannot create it (needs CREATE on the database and ownership of the tables): create it as the owner",
            cfg.publication, cfg.conn.user
        )),
        Err(e) => report.fail(subject, e.to_string()),
    }
}
