//! TLS on the one port every node and registry serves (gRPC and HTTP alike),
//! and on the calls they make: a process with a certificate serves only TLS
//! (a plaintext connection fails its handshake and is closed) and advertises
//! `https://` addresses; a process with a CA verifies the servers it calls
//! against it. rustls, with the ring provider; certificates and keys in PEM.

use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig};

/// A process's TLS settings: none by default (plaintext). Cheap to clone:
/// every call a node makes carries one.
#[derive(Clone, Default)]
pub struct Tls {
    server: Option<Arc<rustls::ServerConfig>>,
    client: Option<Arc<ClientTlsConfig>>,
    /// The same trust as `client`, for plain HTTP/1.1 calls (the CLI's batch).
    connector: Option<tokio_rustls::TlsConnector>,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("could not read the {what} from {path}: {reason}")]
    Unreadable {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The certificate and key do not make a server configuration.
    #[error("the TLS certificate and key cannot be used together: {0}")]
    Mismatch(String),
    /// Only one of certificate and key was given.
    #[error("--tls-cert and --tls-key go together: give both or neither")]
    Incomplete,
}

impl Tls {
    /// Serve with the certificate chain in `cert` and the key in `key`, and
    /// verify called servers against the CA certificates in `ca` (each
    /// optional; the files are PEM).
    pub fn load(
        cert: Option<&Path>,
        key: Option<&Path>,
        ca: Option<&Path>,
    ) -> Result<Self, TlsError> {
        let server = match (cert, key) {
            (Some(cert), Some(key)) => Some(Arc::new(server_config(cert, key)?)),
            (None, None) => None,
            _ => return Err(TlsError::Incomplete),
        };
        let (client, connector) = match ca {
            Some(path) => {
                let pem = read("CA certificate", path)?;
                // Checked here, so that a bad file fails at start rather than
                // at the first call.
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| unreadable("CA certificate", path, e))?;
                    roots
                        .add(cert)
                        .map_err(|e| unreadable("CA certificate", path, e))?;
                }
                if roots.is_empty() {
                    return Err(unreadable("CA certificate", path, "no certificate in it"));
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let mut config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| TlsError::Mismatch(e.to_string()))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                (
                    Some(Arc::new(
                        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
                    )),
                    Some(tokio_rustls::TlsConnector::from(Arc::new(config))),
                )
            }
            None => (None, None),
        };
        Ok(Self {
            server,
            client,
            connector,
        })
    }

    /// Whether this process serves TLS.
    pub fn serves_tls(&self) -> bool {
        self.server.is_some()
    }

    /// The scheme of this process's own address: `https` when it serves TLS.
    pub fn scheme(&self) -> &'static str {
        if self.serves_tls() { "https" } else { "http" }
    }

    /// The acceptor for incoming connections, when this process serves TLS.
    pub fn acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.server.clone().map(tokio_rustls::TlsAcceptor::from)
    }

    /// The client configuration for gRPC calls to `https://` servers, if a CA
    /// was given.
    pub fn client(&self) -> Option<&ClientTlsConfig> {
        self.client.as_deref()
    }

    /// A connector for HTTP/1.1 calls to `https://` servers, if a CA was given.
    pub fn connector(&self) -> Option<&tokio_rustls::TlsConnector> {
        self.connector.as_ref()
    }
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("serves", &self.server.is_some())
            .field("verifies_with_ca", &self.client.is_some())
            .finish()
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let chain_pem = read("TLS certificate", cert)?;
    let chain = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable("TLS certificate", cert, e))?;
    if chain.is_empty() {
        return Err(unreadable("TLS certificate", cert, "no certificate in it"));
    }
    let key_pem = read("TLS key", key)?;
    let key_der =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| unreadable("TLS key", key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Mismatch(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    // gRPC needs HTTP/2; browsers and curl may speak either.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| unreadable(what, path, e))
}

fn unreadable(what: &'static str, path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::Unreadable {
        what,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, contents: &str) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("crustyring-tls-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn plaintext_is_the_default() {
        let tls = Tls::default();
        assert_eq!(tls.scheme(), "http");
        assert!(tls.acceptor().is_none() && tls.client().is_none());
    }

    #[test]
    fn bad_files_are_refused_at_start_with_their_names() {
        let junk = temp("junk.pem", "not a certificate");
        let e = Tls::load(None, None, Some(&junk)).unwrap_err().to_string();
        assert!(
            e.contains("CA certificate") && e.contains("junk.pem"),
            "{e}"
        );
        let e = Tls::load(Some(&junk), Some(&junk), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("TLS certificate"), "{e}");
        let missing = std::path::Path::new("/nonexistent/cert.pem");
        let e = Tls::load(Some(missing), Some(&junk), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/cert.pem"), "{e}");
        assert!(matches!(
            Tls::load(Some(&junk), None, None),
            Err(TlsError::Incomplete)
        ));
        std::fs::remove_file(junk).unwrap();
    }
}
