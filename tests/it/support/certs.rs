//! Certificates made by the tests: a throwaway CA and a server certificate
//! signed by it, for TLS to PostgreSQL and to the ClickHouse stand-in.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::unique_name;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.pem`) and a server certificate for 127.0.0.1 and localhost
/// (`server.pem`, `server.key`), in a fresh directory readable by the
/// postgres user (PostgreSQL insists on a private key file).
pub fn make_test_certs() -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name("sluice_tls"));
    std::fs::create_dir_all(&dir).unwrap();
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=sluice test CA",
        ],
    );
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    // PostgreSQL (running as the postgres user) insists on a private key file.
    for (f, mode) in [
        ("server.key", "600"),
        ("server.pem", "644"),
        ("ca.pem", "644"),
    ] {
        Command::new("chown")
            .args(["postgres", dir.join(f).to_str().unwrap()])
            .status()
            .unwrap();
        Command::new("chmod")
            .args([mode, dir.join(f).to_str().unwrap()])
            .status()
            .unwrap();
    }
    Command::new("chmod")
        .args(["755", dir.to_str().unwrap()])
        .status()
        .unwrap();
    dir
}
