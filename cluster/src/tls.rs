//! Mutual TLS on the cluster port (`[cluster.tls]`): every node presents a certificate
//! signed by the cluster's CA and accepts only peers that do, so knowing the cookie is no
//! longer enough to join, and nobody on the path reads or forges cluster traffic.
//!
//! Handshakes run here, not in `ractor_cluster`'s listener, which handshakes one connection
//! at a time without a deadline (a peer that opens a socket and sends nothing would stall
//! every join behind it). Each accepted socket gets its own task, a deadline and a place
//! under [`MAX_HANDSHAKES`]; only an authenticated stream reaches the node server, whose
//! cookie check then runs as it does without TLS.

use bourse_config::{ClusterTls, ConfigError};
use ractor::ActorRef;
use ractor_cluster::{NetworkStream, NodeServerMessage};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::rustls::crypto::{CryptoProvider, aws_lc_rs};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// How long a peer has to complete the TLS handshake, either way.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Handshakes in flight on one node; a connection beyond them waits in the kernel's
/// backlog, so a flood of half-open sockets costs bounded memory.
pub const MAX_HANDSHAKES: usize = 64;

/// This node's TLS identity and trust, loaded once at start-up.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

fn pem_err(key: &str, path: &Path, what: impl std::fmt::Display) -> ConfigError {
    ConfigError::new(
        format!("cluster.tls.{key}"),
        format!("{}: {what}", path.display()),
    )
}

fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(key, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(key, path, e))?;
    if certs.is_empty() {
        return Err(pem_err(key, path, "holds no PEM certificate"));
    }
    Ok(certs)
}

impl Tls {
    /// Reads the certificate, key and CA files; an unreadable or mismatched file is an
    /// error naming its key.
    pub fn load(files: &ClusterTls) -> Result<Self, ConfigError> {
        let provider: Arc<CryptoProvider> = Arc::new(aws_lc_rs::default_provider());
        let chain = certificates("cert", &files.cert)?;
        let key =
            PrivateKeyDer::from_pem_file(&files.key).map_err(|e| pem_err("key", &files.key, e))?;
        let mut roots = RootCertStore::empty();
        for ca in certificates("ca", &files.ca)? {
            roots.add(ca).map_err(|e| pem_err("ca", &files.ca, e))?;
        }
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| pem_err("ca", &files.ca, e))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::new("cluster.tls", e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| pem_err("key", &files.key, e))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::new("cluster.tls", e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| pem_err("key", &files.key, e))?;
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// For the node server's own listener, which with TLS on listens only on loopback
    /// and still demands a client certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }
}

/// Accepts peers on the cluster port: each socket handshakes in its own task within
/// [`HANDSHAKE_TIMEOUT`]; an authenticated stream goes to the node server, a refused one
/// is logged with the peer's address and the reason. Ends when the node server stops.
pub async fn serve(listener: TcpListener, server: ActorRef<NodeServerMessage>, tls: Tls) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "cluster port: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if server.get_status() != ractor::ActorStatus::Running {
            return;
        }
        let server = server.clone();
        let acceptor = tls.acceptor.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            let local = match stream.local_addr() {
                Ok(a) => a,
                Err(_) => return,
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let _ = server.cast(NodeServerMessage::ConnectionOpened {
                        stream: Box::new(NetworkStream::TlsServer {
                            peer_addr: peer,
                            local_addr: local,
                            stream,
                        }),
                        is_server: true,
                    });
                }
                Ok(Err(e)) => refused(peer, &e.to_string()),
                Err(_) => refused(peer, "no TLS handshake within 5 s"),
            }
        });
    }
}

fn refused(peer: SocketAddr, why: &str) {
    crate::metrics::PEERS_REFUSED
        .with_label_values(&["tls"])
        .inc();
    if crate::said::first_this_minute(format!("tls {} {why}", peer.ip())) {
        tracing::warn!(%peer, reason = %why, "cluster peer refused: TLS handshake failed (no certificate from the cluster's CA?); said once a minute per address and reason, counted in bourse_cluster_peers_refused_total");
    }
}

/// The name a peer's certificate must carry for `addr` (`ip:port` or `host:port`).
fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok(ServerName::IpAddress(sa.ip().into()));
    }
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    ServerName::try_from(host.to_string()).map_err(|e| format!("'{addr}': {e}"))
}

/// Why a dial failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialError {
    /// The port refused the connection: nothing listens there (the node's process is gone).
    pub refused: bool,
    pub message: String,
}

impl DialError {
    fn io(e: &std::io::Error) -> Self {
        DialError {
            refused: e.kind() == std::io::ErrorKind::ConnectionRefused,
            message: e.to_string(),
        }
    }

    fn other(message: String) -> Self {
        DialError {
            refused: false,
            message,
        }
    }
}

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Opens a session to the node at `addr`, over TLS when `tls` is set; gives up after
/// [`HANDSHAKE_TIMEOUT`] (a blackholed peer would otherwise hold the dial for minutes).
pub async fn dial(
    server: &ActorRef<NodeServerMessage>,
    addr: &str,
    tls: Option<&Tls>,
) -> Result<(), DialError> {
    let dialing = async {
        match tls {
            None => ractor_cluster::client_connect(server, addr)
                .await
                .map_err(|e| match e {
                    ractor_cluster::ClientConnectErr::Socket(e) => DialError::io(&e),
                    e => DialError::other(e.to_string()),
                }),
            Some(tls) => {
                let name = server_name(addr).map_err(DialError::other)?;
                let stream = TcpStream::connect(addr)
                    .await
                    .map_err(|e| DialError::io(&e))?;
                let _ = stream.set_nodelay(true);
                let (peer_addr, local_addr) = (
                    stream.peer_addr().map_err(|e| DialError::io(&e))?,
                    stream.local_addr().map_err(|e| DialError::io(&e))?,
                );
                let stream = tls
                    .connector
                    .connect(name, stream)
                    .await
                    .map_err(|e| DialError::other(format!("TLS handshake: {e}")))?;
                server
                    .cast(NodeServerMessage::ConnectionOpened {
                        stream: Box::new(NetworkStream::TlsClient {
                            peer_addr,
                            local_addr,
                            stream,
                        }),
                        is_server: false,
                    })
                    .map_err(|e| DialError::other(e.to_string()))
            }
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, dialing)
        .await
        .map_err(|_| {
            DialError::other(format!(
                "no answer within {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            ))
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_verified_by_the_host_they_are_dialed_at() {
        assert!(matches!(
            server_name("10.0.0.7:7000"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("[::1]:7000"),
            Ok(ServerName::IpAddress(_))
        ));
        assert_eq!(
            server_name("node2.bourse:7000").map(|n| n.to_str().into_owned()),
            Ok("node2.bourse".to_string())
        );
        assert!(server_name("bad name:7000").is_err());
    }

    #[test]
    fn missing_and_empty_files_name_their_key() {
        let dir = std::env::temp_dir().join(format!("bourse-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let files = ClusterTls {
            cert: empty.clone(),
            key: dir.join("missing.key"),
            ca: empty,
        };
        let err = Tls::load(&files).unwrap_err();
        assert_eq!(err.key, "cluster.tls.cert", "{err}");
        assert!(err.reason.contains("no PEM certificate"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
