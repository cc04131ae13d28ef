//! Who may call what: every path a node or registry serves is open (probes,
//! metrics, the page and the API's description), for clients, or for peers
//! only. The rule is a pure function of the path and the credentials a
//! request presents, so that it can be read and tested in one place; anything
//! not named as open or peer-only is for clients (closed by default).

use super::Secret;

/// Who may call a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: health, readiness, metrics, reflection, the page and the
    /// OpenAPI document with Swagger UI. None of these reads or changes keys.
    Open,
    /// Clients holding the client token (when one is set), and peers.
    Client,
    /// Members of the cluster only (when a cluster secret is set): the
    /// node-to-node and registry RPCs, which change the ring and move entries.
    Peer,
}

/// The node-to-node RPCs: they insert members, move or read whole arcs, and
/// write replicas, so only members may call them.
const PEER_RPCS: &[&str] = &[
    "RegisterAsNeighbor",
    "TransferKeys",
    "HandOff",
    "Replicate",
    "DigestRange",
    "ReadRange",
    "ListRange",
    "Batch",
    "ForwardBatch",
];

/// Paths anyone may fetch.
const OPEN_PATHS: &[&str] = &[
    "/",
    "/style.css",
    "/app.js",
    "/favicon.ico",
    "/openapi.json",
    "/healthz",
    "/readyz",
    "/metrics",
];

/// Prefixes of paths anyone may fetch.
const OPEN_PREFIXES: &[&str] = &[
    "/swagger-ui",
    "/grpc.health.v1.Health/",
    "/grpc.reflection.",
];

/// Who may call `path`.
pub fn access(path: &str) -> Access {
    if OPEN_PATHS.contains(&path) || OPEN_PREFIXES.iter().any(|p| path.starts_with(p)) {
        return Access::Open;
    }
    if path.starts_with("/registry.Registry/") {
        return Access::Peer;
    }
    match path.strip_prefix("/dht.DhtNode/") {
        Some(method) if PEER_RPCS.contains(&method) => Access::Peer,
        _ => Access::Client,
    }
}

/// What a request presented.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presented<'a> {
    /// The cluster secret header's value.
    pub cluster_secret: Option<&'a [u8]>,
    /// The bearer token of the `authorization` header.
    pub bearer: Option<&'a [u8]>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A peer-only call without the cluster secret.
    #[error(
        "this call is for members of the cluster only: send the cluster secret (x-crusty-cluster-secret)"
    )]
    NoClusterSecret,
    /// A peer-only call with a wrong cluster secret, or with a client token.
    #[error("this call is for members of the cluster only, and the cluster secret sent is wrong")]
    WrongClusterSecret,
    /// A client call without a token.
    #[error("this node requires a client token: send `authorization: Bearer <token>`")]
    NoToken,
    /// A client call with a wrong token.
    #[error("the client token sent is wrong")]
    WrongToken,
}

impl Refusal {
    /// Whether the caller proved nothing (as opposed to proving the wrong
    /// thing): `UNAUTHENTICATED` / 401 rather than `PERMISSION_DENIED` / 403.
    pub fn unauthenticated(self) -> bool {
        !matches!(self, Refusal::WrongClusterSecret)
    }
}

/// The credentials a node or registry requires.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Required {
    /// Required of peers, if set.
    pub cluster_secret: Option<Secret>,
    /// Required of clients, if set (peers pass with the cluster secret).
    pub client_token: Option<Secret>,
}

impl Required {
    /// Whether a request to a path with `access` that presented `presented`
    /// may go on.
    pub fn admit(&self, access: Access, presented: Presented<'_>) -> Result<(), Refusal> {
        let is_peer = |s: &Secret| presented.cluster_secret.is_some_and(|p| s.matches(p));
        match access {
            Access::Open => Ok(()),
            Access::Peer => match &self.cluster_secret {
                None => Ok(()),
                Some(s) if is_peer(s) => Ok(()),
                Some(_) if presented.cluster_secret.is_none() && presented.bearer.is_none() => {
                    Err(Refusal::NoClusterSecret)
                }
                Some(_) => Err(Refusal::WrongClusterSecret),
            },
            Access::Client => match &self.client_token {
                None => Ok(()),
                Some(t) if presented.bearer.is_some_and(|b| t.matches(b)) => Ok(()),
                Some(_) if self.cluster_secret.as_ref().is_some_and(is_peer) => Ok(()),
                Some(_) if presented.bearer.is_none() => Err(Refusal::NoToken),
                Some(_) => Err(Refusal::WrongToken),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::new("test secret", s).unwrap()
    }

    #[test]
    fn probes_metrics_and_descriptions_are_open() {
        for path in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/",
            "/openapi.json",
            "/swagger-ui/index.html",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(access(path), Access::Open, "{path}");
        }
    }

    #[test]
    fn ring_changing_and_arc_reading_calls_are_for_peers() {
        for method in PEER_RPCS {
            assert_eq!(access(&format!("/dht.DhtNode/{method}")), Access::Peer);
        }
        for method in [
            "RegisterNode",
            "GetConnectedNodes",
            "Heartbeat",
            "Deregister",
            "JudgeDead",
        ] {
            assert_eq!(
                access(&format!("/registry.Registry/{method}")),
                Access::Peer
            );
        }
    }

    #[test]
    fn key_calls_and_anything_unknown_are_for_clients() {
        for path in [
            "/dht.DhtNode/QueryDht",
            "/dht.DhtNode/ForwardQuery",
            "/dht.DhtNode/GetNodeInfo",
            "/dht.DhtNode/ListKeys",
            "/dht.DhtNode/Watch",
            "/dht.DhtNode/NoSuchMethod",
            "/keys/a",
            "/keys",
            "/batch",
            "/ring",
            "/somewhere/else",
            "/healthz/../keys/a",
        ] {
            assert_eq!(access(path), Access::Client, "{path}");
        }
    }

    #[test]
    fn nothing_is_required_when_no_secret_is_set() {
        let open = Required::default();
        for a in [Access::Open, Access::Client, Access::Peer] {
            assert_eq!(open.admit(a, Presented::default()), Ok(()));
        }
    }

    #[test]
    fn peers_need_the_cluster_secret_and_a_client_token_is_not_it() {
        let r = Required {
            cluster_secret: Some(secret("cluster-secret-0123")),
            client_token: Some(secret("client-token-01234")),
        };
        let with = |cluster: Option<&'static str>, bearer: Option<&'static str>| Presented {
            cluster_secret: cluster.map(str::as_bytes),
            bearer: bearer.map(str::as_bytes),
        };
        assert_eq!(
            r.admit(Access::Peer, with(Some("cluster-secret-0123"), None)),
            Ok(())
        );
        assert_eq!(
            r.admit(Access::Peer, with(None, None)),
            Err(Refusal::NoClusterSecret)
        );
        assert_eq!(
            r.admit(Access::Peer, with(Some("cluster-secret-0124"), None)),
            Err(Refusal::WrongClusterSecret)
        );
        assert_eq!(
            r.admit(Access::Peer, with(None, Some("client-token-01234"))),
            Err(Refusal::WrongClusterSecret)
        );
        assert!(Refusal::NoClusterSecret.unauthenticated());
        assert!(!Refusal::WrongClusterSecret.unauthenticated());
    }

    #[test]
    fn clients_need_the_token_and_peers_pass_with_the_cluster_secret() {
        let r = Required {
            cluster_secret: Some(secret("cluster-secret-0123")),
            client_token: Some(secret("client-token-01234")),
        };
        let bearer = |b: &'static str| Presented {
            bearer: Some(b.as_bytes()),
            ..Presented::default()
        };
        assert_eq!(
            r.admit(Access::Client, bearer("client-token-01234")),
            Ok(())
        );
        assert_eq!(
            r.admit(Access::Client, Presented::default()),
            Err(Refusal::NoToken)
        );
        assert_eq!(
            r.admit(Access::Client, bearer("client-token-0123")),
            Err(Refusal::WrongToken)
        );
        let peer = Presented {
            cluster_secret: Some(b"cluster-secret-0123"),
            bearer: None,
        };
        assert_eq!(r.admit(Access::Client, peer), Ok(()));
        assert_eq!(r.admit(Access::Open, Presented::default()), Ok(()));
    }
}
