//! A Kafka broker reached over TLS: the suite's broker (tansu) does not
//! terminate TLS itself, so a small TLS-terminating proxy (tokio + rustls)
//! stands in front of an own broker instance, which speaks plaintext behind
//! it. The broker advertises the proxy's address, so every connection the
//! client makes from the cluster metadata goes through TLS too.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::copy_bidirectional;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use super::certs::make_test_certs;
use super::{KafkaOptions, OwnKafka};

/// Accepts TLS on its port and relays the plaintext to `upstream`; stops
/// (and drops every relayed connection) when dropped.
pub struct TlsProxy {
    pub port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsProxy {
    /// Serves on `listener` with the certificate and key (PEM) in `certs`
    /// (`server.pem`, `server.key`, as `make_test_certs` writes them).
    pub fn start(listener: TcpListener, certs: &Path, upstream: SocketAddr) -> TlsProxy {
        let pem = std::fs::read(certs.join("server.pem")).expect("server.pem");
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .expect("server.pem holds certificates");
        let key = std::fs::read(certs.join("server.key")).expect("server.key");
        let key = PrivateKeyDer::from_pem_slice(&key).expect("server.key holds a key");
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("the test certificate and key");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let serve = async {
                    loop {
                        let Ok((client, _)) = listener.accept().await else {
                            continue;
                        };
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            // A failed handshake (e.g. the client does not
                            // trust the CA) just closes the connection.
                            let Ok(mut tls) = acceptor.accept(client).await else {
                                return;
                            };
                            let Ok(mut broker) = TcpStream::connect(upstream).await else {
                                return;
                            };
                            let _ = copy_bidirectional(&mut tls, &mut broker).await;
                        });
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime ends the relayed connections.
        });
        TlsProxy {
            port,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An own broker behind a [`TlsProxy`]: clients use `brokers` with
/// `security.protocol=SSL` and `ssl.ca.location` = `ca`.
pub struct TlsKafka {
    /// The proxy's address (what the broker advertises).
    pub brokers: String,
    /// The CA that signed the proxy's certificate (PEM).
    pub ca: PathBuf,
    pub certs: PathBuf,
    // Dropped first: no relayed connection outlives the broker.
    proxy: TlsProxy,
    pub kafka: OwnKafka,
}

impl TlsKafka {
    pub fn start(authentication: bool) -> TlsKafka {
        let certs = make_test_certs();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy_port = listener.local_addr().unwrap().port();
        let kafka = OwnKafka::start_with(KafkaOptions {
            advertised_port: Some(proxy_port),
            authentication,
        });
        let proxy = TlsProxy::start(
            listener,
            &certs,
            SocketAddr::from(([127, 0, 0, 1], kafka.port)),
        );
        TlsKafka {
            brokers: format!("127.0.0.1:{proxy_port}"),
            ca: certs.join("ca.pem"),
            certs,
            proxy,
            kafka,
        }
    }

    /// librdkafka settings of a client that trusts the test CA.
    pub fn client_settings(&self) -> Vec<(String, String)> {
        vec![
            ("security.protocol".into(), "SSL".into()),
            ("ssl.ca.location".into(), self.ca.display().to_string()),
        ]
    }
}

impl Drop for TlsKafka {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.certs);
    }
}
