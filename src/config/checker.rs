//! The problem collector every part of `validate()` shares, and checks used
//! by more than one config section.

use std::str::FromStr;

use super::*;

pub(super) type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;
pub(super) type FileReader<'a> = &'a dyn Fn(&str) -> Result<String, String>;

/// Collects problems so one run reports all of them, not just the first.
pub(super) struct Checker<'a> {
    pub(super) errors: Vec<String>,
    pub(super) env: EnvLookup<'a>,
    pub(super) read_file: FileReader<'a>,
}

impl Checker<'_> {
    pub(super) fn err(&mut self, key: &str, msg: impl std::fmt::Display) {
        self.errors.push(format!("{key}: {msg}"));
    }

    /// Interpolates `${ENV}` in an optional string value.
    pub(super) fn text(&mut self, key: &str, value: Option<&String>) -> Option<String> {
        let v = value?;
        match values::interpolate(v, self.env) {
            Ok(s) => Some(s),
            Err(e) => {
                self.err(key, e);
                None
            }
        }
    }

    pub(super) fn required(&mut self, key: &str, value: Option<&String>) -> Option<String> {
        match self.text(key, value) {
            Some(s) if s.trim().is_empty() => {
                self.err(key, "must not be empty");
                None
            }
            Some(s) => Some(s),
            None if value.is_none() => {
                self.err(key, "missing");
                None
            }
            None => None,
        }
    }

    /// A secret given inline (`key`) or as a file (`file_key`), not both.
    pub(super) fn secret(
        &mut self,
        key: &str,
        value: Option<&String>,
        file_key: &str,
        file: Option<&String>,
    ) -> Option<Secret> {
        match (value, file) {
            (Some(_), Some(_)) => {
                self.err(
                    file_key,
                    format!("set either {key} or {file_key}, not both"),
                );
                None
            }
            (Some(v), None) => self.text(key, Some(v)).map(Secret::new),
            (None, Some(f)) => {
                let path = self.text(file_key, Some(f))?;
                match (self.read_file)(&path) {
                    // A trailing newline in a secret file is never meant.
                    Ok(s) => Some(Secret::new(s.trim_end_matches(['\n', '\r']))),
                    Err(e) => {
                        self.err(file_key, format!("cannot read {path}: {e}"));
                        None
                    }
                }
            }
            (None, None) => None,
        }
    }
}

/// A PostgreSQL URL into connection info, naming `key` in its messages.
pub(super) fn pg_conn_info_at(
    c: &mut Checker<'_>,
    key: &str,
    url: &str,
    password: Option<Secret>,
    connect_timeout: std::time::Duration,
) -> Option<PgConnInfo> {
    // The parser's messages never echo the string, so no password can leak.
    let parsed = match tokio_postgres::Config::from_str(url) {
        Ok(p) => p,
        Err(e) => {
            c.err(key, format!("not a valid PostgreSQL connection URL ({e})"));
            return None;
        }
    };
    let host = match parsed.get_hosts() {
        [tokio_postgres::config::Host::Tcp(h)] => h.clone(),
        [] => {
            c.err(key, "names no host");
            return None;
        }
        [_] => {
            c.err(key, "unix sockets are not supported: use a TCP host");
            return None;
        }
        _ => {
            c.err(key, "names several hosts: give exactly one");
            return None;
        }
    };
    let port = parsed.get_ports().first().copied().unwrap_or(5432);
    let Some(user) = parsed.get_user().map(str::to_owned) else {
        c.err(key, "names no user (postgres://USER@host/db)");
        return None;
    };
    let dbname = parsed.get_dbname().unwrap_or(&user).to_owned();
    let url_password = parsed
        .get_password()
        .map(|p| Secret::new(String::from_utf8_lossy(p)));
    let ssl_mode = match parsed.get_ssl_mode() {
        tokio_postgres::config::SslMode::Disable => SslMode::Disable,
        tokio_postgres::config::SslMode::Prefer => SslMode::Prefer,
        _ => SslMode::Require,
    };
    Some(PgConnInfo {
        host,
        port,
        user,
        password: password.or(url_password),
        dbname,
        ssl_mode,
        application_name: parsed.get_application_name().unwrap_or("sluice").to_owned(),
        connect_timeout,
        read_timeout: DEFAULT_READ_TIMEOUT,
        ssl_root_cert: None,
    })
}
