//! Node traffic between coordinator and workers (ractor_cluster: units,
//! prompts, heartbeats) over TLS with mutual authentication: both ends
//! present a certificate signed by the cluster's CA, and the cookie check
//! that ractor_cluster runs inside the tunnel stays as a second factor.
//!
//! The coordinator accepts node connections itself rather than through
//! ractor_cluster's listener, which runs each TLS handshake inside its
//! accept loop: one peer that opens a socket and sends nothing would hold
//! every later node out. Here each handshake runs on its own task with a
//! deadline, and a refused peer is logged with its address and the reason.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::ActorRef;
use ractor_cluster::node::{NodeEventSubscription, NodeServerSessionInformation};
use ractor_cluster::{BoxRead, BoxWrite, ClusterBidiStream, NodeServerMessage};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// How long a peer may take over the TLS handshake before it is dropped.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// Why node TLS could not be set up or a connection not made.
#[derive(Debug, thiserror::Error)]
pub enum NodeTlsError {
    #[error("{what}: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("node TLS: {0}")]
    Config(String),
    #[error("{addr}: {reason}")]
    Connect { addr: String, reason: String },
}

/// A node's TLS identity and the cluster CA it trusts, as PEM.
#[derive(Debug, Clone)]
pub struct NodeTlsPem {
    pub ca: Vec<u8>,
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

/// Both directions of one node's TLS: accepting peers and dialling them.
#[derive(Clone)]
pub struct NodeTls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeTls { .. }")
    }
}

fn pem_error(what: &'static str) -> impl Fn(rustls::pki_types::pem::Error) -> NodeTlsError {
    move |e| NodeTlsError::Pem {
        what,
        reason: e.to_string(),
    }
}

impl NodeTls {
    /// Both configurations from PEM; a peer must present a certificate
    /// the CA signed, in either direction.
    pub fn from_pem(pem: &NodeTlsPem) -> Result<Self, NodeTlsError> {
        let ca = CertificateDer::pem_slice_iter(&pem.ca)
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_error("the cluster CA"))?;
        let chain = CertificateDer::pem_slice_iter(&pem.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_error("the node certificate"))?;
        if ca.is_empty() || chain.is_empty() {
            return Err(NodeTlsError::Pem {
                what: if ca.is_empty() {
                    "the cluster CA"
                } else {
                    "the node certificate"
                },
                reason: "no PEM certificate in it".into(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(&pem.key).map_err(pem_error("the node key"))?;
        let mut roots = RootCertStore::empty();
        for cert in ca {
            roots
                .add(cert)
                .map_err(|e| NodeTlsError::Config(format!("the cluster CA: {e}")))?;
        }
        let roots = Arc::new(roots);
        // One provider for every TLS config in the process (tonic is built
        // with aws-lc too); naming it avoids relying on a process default.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = |e: rustls::Error| NodeTlsError::Config(e.to_string());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .map_err(|e| NodeTlsError::Config(e.to_string()))?;
        let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(config)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(config)?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(config)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(config)?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// For a node server's own listener: it then refuses plain sockets.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// Dials the node at `addr` (`host:port`), checks its certificate
    /// against the CA and `host`, and hands the session to `node`.
    pub async fn connect(
        &self,
        node: &ActorRef<NodeServerMessage>,
        addr: &str,
    ) -> Result<(), NodeTlsError> {
        let failed = |reason: String| NodeTlsError::Connect {
            addr: addr.to_string(),
            reason,
        };
        let host = addr
            .rsplit_once(':')
            .map(|(host, _)| host.trim_start_matches('[').trim_end_matches(']'))
            .unwrap_or(addr);
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| failed(format!("{host:?} is not a host name: {e}")))?;
        ractor_cluster::client_connect_enc(node, addr, self.connector.clone(), name)
            .await
            .map_err(|e| match e {
                ractor_cluster::ClientConnectErr::Encryption(err) => {
                    failed(format!("TLS handshake refused: {err}"))
                }
                other => failed(other.to_string()),
            })
    }
}

/// A node connection that passed the TLS handshake, labelled with its
/// address for ractor_cluster's session records.
struct AcceptedNode {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: SocketAddr,
}

impl ClusterBidiStream for AcceptedNode {
    fn split(self: Box<Self>) -> (BoxRead, BoxWrite) {
        let (read, write) = tokio::io::split(self.stream);
        (Box::new(read), Box::new(write))
    }

    fn peer_label(&self) -> Option<String> {
        Some(self.peer.to_string())
    }
}

/// Accepts node connections on `listener` for `node` until the node stops:
/// each peer gets its own handshake with a deadline; peers without a
/// certificate from the cluster CA are refused and logged.
pub fn serve_nodes(
    listener: TcpListener,
    tls: &NodeTls,
    node: ActorRef<NodeServerMessage>,
) -> tokio::task::JoinHandle<()> {
    let acceptor = tls.acceptor();
    tokio::spawn(async move {
        loop {
            let (socket, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(%err, "node listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = socket.set_nodelay(true);
            let acceptor = acceptor.clone();
            let node = node.clone();
            tokio::spawn(async move {
                let stream = match tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(socket))
                    .await
                {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(err)) => {
                        tracing::warn!(%peer, reason = %err, "refused a node: TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(%peer, "refused a node: no TLS handshake within {}s", HANDSHAKE_DEADLINE.as_secs());
                        return;
                    }
                };
                let stream: Box<dyn ClusterBidiStream> = Box::new(AcceptedNode { stream, peer });
                let _ = node.cast(NodeServerMessage::ConnectionOpenedExternal {
                    stream,
                    is_server: true,
                });
            });
        }
    })
}

/// Logs incoming node sessions that ended before they authenticated: the
/// peer did not know the cookie (or spoke another protocol).
pub fn log_refused_sessions(node: &ActorRef<NodeServerMessage>) {
    let watch = SessionWatch::default();
    let _ = node.cast(NodeServerMessage::SubscribeToEvents {
        id: "seedling-session-watch".into(),
        subscription: Box::new(watch),
    });
}

#[derive(Default)]
struct SessionWatch {
    authenticated: Mutex<HashSet<u64>>,
}

impl NodeEventSubscription for SessionWatch {
    fn node_session_opened(&self, _: NodeServerSessionInformation) {}

    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        if let Ok(mut seen) = self.authenticated.lock() {
            seen.insert(ses.node_id);
        }
    }

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let was_authenticated = self
            .authenticated
            .lock()
            .map(|mut seen| seen.remove(&ses.node_id))
            .unwrap_or(true);
        if ses.is_server && !was_authenticated {
            tracing::warn!(peer = %ses.peer_addr, "refused a node: it did not pass the cookie check");
        } else {
            tracing::info!(peer = %ses.peer_addr, "node session closed");
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::pki;

    /// A node with a certificate from `issuer` that trusts `trusted`.
    fn node_trusting(
        trusted: &pki::CertifiedKey,
        issuer: &pki::CertifiedKey,
        name: &str,
    ) -> NodeTls {
        let issued = pki::issue(issuer, name, &["127.0.0.1".into()], 1).unwrap();
        NodeTls::from_pem(&NodeTlsPem {
            ca: trusted.cert.clone().into_bytes(),
            cert: issued.cert.into_bytes(),
            key: issued.key.into_bytes(),
        })
        .unwrap()
    }

    fn node(ca: &pki::CertifiedKey, name: &str) -> NodeTls {
        node_trusting(ca, ca, name)
    }

    /// One handshake on loopback: the server's result, and the client's
    /// (a client whose certificate the server refused learns it on read).
    async fn handshake(
        server: &NodeTls,
        client: TlsConnector,
    ) -> (Result<(), String>, Result<(), String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = server.acceptor();
        let serving = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut stream = acceptor.accept(socket).await.map_err(|e| e.to_string())?;
            stream
                .write_all(b"hello")
                .await
                .map_err(|e| e.to_string())?;
            stream.flush().await.map_err(|e| e.to_string())
        });
        let socket = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let client = async {
            let mut stream = client
                .connect(name, socket)
                .await
                .map_err(|e| e.to_string())?;
            let mut got = [0u8; 5];
            stream
                .read_exact(&mut got)
                .await
                .map_err(|e| e.to_string())?;
            if &got == b"hello" {
                Ok(())
            } else {
                Err(format!("read {got:?}"))
            }
        }
        .await;
        (serving.await.unwrap(), client)
    }

    #[tokio::test]
    async fn nodes_of_one_ca_talk_and_strangers_are_refused() {
        let ca = pki::new_ca(1).unwrap();
        let other_ca = pki::new_ca(1).unwrap();
        let coordinator = node(&ca, "coordinator");
        let worker = node(&ca, "worker");
        // A stranger who knows the (public) cluster CA but holds a
        // certificate of its own making.
        let stranger = node_trusting(&ca, &other_ca, "stranger");
        let foreign_coordinator = node(&other_ca, "coordinator");

        let (server, client) = handshake(&coordinator, worker.connector.clone()).await;
        assert_eq!((server, client), (Ok(()), Ok(())));

        // A certificate from another CA: the coordinator refuses it.
        let (server, client) = handshake(&coordinator, stranger.connector.clone()).await;
        let refused = server.unwrap_err();
        assert!(refused.contains("UnknownIssuer"), "{refused}");
        assert!(client.is_err());

        // No certificate at all.
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca.cert.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let anonymous = ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let (server, client) =
            handshake(&coordinator, TlsConnector::from(Arc::new(anonymous))).await;
        let refused = server.unwrap_err();
        assert!(refused.contains("certificate"), "{refused}");
        assert!(client.is_err());

        // A worker does not trust a coordinator from another CA either.
        let (_, client) = handshake(&foreign_coordinator, worker.connector.clone()).await;
        assert!(client.unwrap_err().contains("UnknownIssuer"));
    }

    #[test]
    fn unreadable_pem_names_the_file_it_came_from() {
        let ca = pki::new_ca(1).unwrap();
        let issued = pki::issue(&ca, "w", &["localhost".into()], 1).unwrap();
        let pem = NodeTlsPem {
            ca: ca.cert.clone().into_bytes(),
            cert: issued.cert.into_bytes(),
            key: b"not a key".to_vec(),
        };
        let err = NodeTls::from_pem(&pem).unwrap_err().to_string();
        assert!(err.starts_with("the node key"), "{err}");
        let err = NodeTls::from_pem(&NodeTlsPem {
            ca: Vec::new(),
            ..pem
        })
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("the cluster CA"), "{err}");
    }
}
