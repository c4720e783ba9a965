//! The one rustls client configuration of every TLS connection sluice makes
//! (PostgreSQL and ClickHouse): certificates are always verified, against the
//! public web roots plus an optional extra CA file (PEM).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// Why a TLS configuration could not be built; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsSetupError(pub String);

/// A rustls client configuration trusting the web roots plus `root_cert`
/// (`key` is the config key that named the file, for messages).
pub fn client_config(
    key: &str,
    root_cert: Option<&Path>,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = root_cert {
        let bad =
            |e: &dyn std::fmt::Display| TlsSetupError(format!("{key} {}: {e}", path.display()));
        let pem = std::fs::read(path).map_err(|e| bad(&format!("cannot read: {e}")))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad(&"holds no PEM certificate"));
        }
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_an_error_naming_key_and_file() {
        let e = client_config("x.ssl_root_cert", Some(Path::new("/nonexistent/ca.pem")))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("x.ssl_root_cert /nonexistent/ca.pem: cannot read"),
            "{e}"
        );
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), "not a certificate\n").unwrap();
        let e = client_config("k", Some(f.path())).unwrap_err().to_string();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        assert!(client_config("k", None).is_ok());
    }
}
