//! Who may talk to a node or registry: a cluster secret that peers must
//! present on the node-to-node and registry calls, and a client token that
//! clients must present on the key API. Both are optional (a local cluster on
//! one machine needs neither); the README's threat model says what they
//! protect and what they do not.
//!
//! - [`access`]: which paths are open, for clients, or for peers; the rule
//!   that admits or refuses a request (pure).
//! - [`crate::server`]'s gate applies it before any handler runs.
//! - [`Credentials`]: the client side, which adds a process's credentials to
//!   every gRPC call it makes.
//! - [`Secret`]: a checked, never-printed secret.
//! - [`Tls`]: TLS on the served port and on the calls a process makes.

pub mod access;
mod secret;
mod tls;

pub use access::Required;
pub use secret::{Secret, SecretError};
pub use tls::{Tls, TlsError};

use axum::http::{HeaderMap, HeaderValue, header};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// Why a process's security settings could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A secret.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// TLS.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The header peers send the cluster secret in.
pub const CLUSTER_SECRET_HEADER: &str = "x-crusty-cluster-secret";

/// What a process sends with each gRPC call it makes: the cluster secret (a
/// node or registry of a cluster that has one), the client token (a client,
/// or a node of a cluster whose clients need one, so that its forwards pass);
/// and the CA it verifies `https://` servers against.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    cluster_secret: Option<HeaderValue>,
    bearer: Option<HeaderValue>,
    tls: Tls,
}

impl Credentials {
    /// The credentials of a member of a cluster that requires `required`,
    /// trusting the CA of `tls`.
    pub fn member(required: &Required, tls: &Tls) -> Self {
        Self {
            cluster_secret: required.cluster_secret.as_ref().map(Secret::header_value),
            bearer: required.client_token.as_ref().map(bearer_value),
            tls: tls.clone(),
        }
    }

    /// The credentials of a client holding `token`, trusting the CA of `tls`.
    pub fn client(token: Option<&Secret>, tls: &Tls) -> Self {
        Self {
            cluster_secret: None,
            bearer: token.map(bearer_value),
            tls: tls.clone(),
        }
    }

    /// `endpoint`, set up to verify its server if its address is `https://`.
    /// Fails for an `https://` address without a CA to verify it with.
    pub fn secure(&self, endpoint: Endpoint) -> Result<Endpoint, String> {
        if endpoint.uri().scheme_str() != Some("https") {
            return Ok(endpoint);
        }
        let config = self.tls.client().cloned().ok_or_else(|| {
            format!(
                "{} is an https address, and no CA certificate was given to verify it with (--tls-ca)",
                endpoint.uri()
            )
        })?;
        endpoint.tls_config(config).map_err(|e| e.to_string())
    }

    /// The TLS settings calls are made with.
    pub fn tls(&self) -> &Tls {
        &self.tls
    }

    /// Adds these credentials to `headers`.
    pub fn add_to(&self, headers: &mut HeaderMap) {
        if let Some(v) = &self.cluster_secret {
            headers.insert(CLUSTER_SECRET_HEADER, v.clone());
        }
        if let Some(v) = &self.bearer {
            headers.insert(header::AUTHORIZATION, v.clone());
        }
    }
}

fn bearer_value(token: &Secret) -> HeaderValue {
    token.header_value_after("Bearer ")
}

impl Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        self.add_to(request.metadata_mut().as_mut());
        Ok(request)
    }
}

/// A gRPC channel that sends a process's [`Credentials`] with every call.
pub type AuthChannel = InterceptedService<Channel, Credentials>;
