//! The integration tests, one binary so the heavy dependencies link once.
//! Every test talks to real servers (PostgreSQL, ClickHouse, Kafka) started
//! or reused by `support`; a server that cannot be reached fails the test.

mod support;

mod check_cmd;
mod clickhouse_sink;
mod e2e_clickhouse;
mod e2e_copy;
mod e2e_copy_position;
mod e2e_crash;
mod e2e_identifiers;
mod e2e_kafka;
mod e2e_kafka_crash;
mod e2e_kafka_outage;
mod e2e_latency;
mod e2e_lifecycle;
mod e2e_ops;
mod e2e_poll;
mod e2e_poll_kafka;
mod e2e_poll_reconcile;
mod e2e_restart;
mod e2e_shapes;
mod e2e_snapshot;
mod kafka_secure;
mod pg_auth;
mod pg_bad_server;
mod pg_idle;
mod pg_large_txn;
mod pg_slots;
mod pg_source;
mod pg_tls;
mod secure;
mod testbed;
