//! Cluster credentials and client tokens, over real sockets: a ring whose
//! members share a cluster secret works (joins, replication, forwards), every
//! node-to-node and registry call without the secret is refused and changes
//! nothing, a node without it cannot join, and the key API over HTTP and gRPC
//! needs the client token while probes and metrics stay open.

use crate::common;

use common::http_with;
use crustyring::client::{self, NodeClient};
use crustyring::cluster::{ClusterOptions, LocalCluster};
use crustyring::node::{Discovery, NodeConfig};
use crustyring::proto::dht::{self, dht_node_client::DhtNodeClient};
use crustyring::proto::registry::{self as pb, registry_client::RegistryClient};
use crustyring::security::{CLUSTER_SECRET_HEADER, Credentials, Required, Secret, Tls};
use crustyring::store::MemoryStore;
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

const CLUSTER_SECRET: &str = "cluster-secret-for-t84";
const CLIENT_TOKEN: &str = "client-token-for-t84";

fn required(token: bool) -> Required {
    Required {
        cluster_secret: Some(Secret::new("cluster secret", CLUSTER_SECRET).unwrap()),
        client_token: token.then(|| Secret::new("client token", CLIENT_TOKEN).unwrap()),
    }
}

async fn secured_cluster(n: usize, token: bool) -> LocalCluster {
    let options = ClusterOptions {
        node: NodeConfig {
            security: required(token),
            ..NodeConfig::default()
        },
        ..ClusterOptions::default()
    };
    let mut c = LocalCluster::start(options).await.expect("registry starts");
    for _ in 0..n {
        c.add_node(0).await.expect("a node with the secret joins");
    }
    c
}

fn token_client() -> Credentials {
    Credentials::client(
        Some(&Secret::new("client token", CLIENT_TOKEN).unwrap()),
        &Tls::default(),
    )
}

/// A member's credentials, as a node of the cluster sends them.
fn member() -> Credentials {
    Credentials::member(&required(false), &Tls::default())
}

async fn raw_channel(addr: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(addr.to_string())
        .unwrap()
        .connect()
        .await
        .expect("node reachable")
}

/// A client that sends `x-crusty-cluster-secret: <secret>` (or nothing).
async fn dht_with_secret(
    addr: &str,
    secret: Option<&'static str>,
) -> DhtNodeClient<
    tonic::service::interceptor::InterceptedService<
        Channel,
        impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone,
    >,
> {
    DhtNodeClient::with_interceptor(raw_channel(addr).await, move |mut r: tonic::Request<()>| {
        if let Some(s) = secret {
            r.metadata_mut()
                .insert(CLUSTER_SECRET_HEADER, s.parse().unwrap());
        }
        Ok(r)
    })
}

/// How many live keys each node stores, replicas included: what a refused
/// call must not change.
async fn stored(addrs: &[String]) -> Vec<u64> {
    let mut counts = Vec::new();
    for addr in addrs {
        let mut c = client::connect_with(addr, &member()).await.unwrap();
        counts.push(c.get_node_info(()).await.unwrap().into_inner().keys);
    }
    counts
}

fn entry(key: &[u8]) -> dht::KeyValueEntry {
    dht::KeyValueEntry {
        key: crustyring::ring::key_position(key).0,
        value: b"intruder".to_vec(),
        raw_key: Some(key.to_vec()),
        version_micros: u64::MAX / 2,
        version_node: 1,
        ..Default::default()
    }
}

#[tokio::test]
async fn node_to_node_calls_without_the_cluster_secret_are_refused_and_change_nothing() {
    let cluster = secured_cluster(3, false).await;
    let addr = cluster.addrs()[0].clone();
    let mut member_client = client::connect_with(&addr, &member()).await.unwrap();
    let before_info = member_client.get_node_info(()).await.unwrap().into_inner();
    let before = stored(&cluster.addrs()).await;
    // A batch of one write of `key`, as a peer would send it after `hops`.
    let intruding = |key: &[u8], hops| dht::BatchRequest {
        queries: vec![dht::EncodedQuery {
            ty: dht::OperationType::Set as i32,
            key: crustyring::ring::key_position(key).0,
            value: Some(b"intruder".to_vec()),
            raw_key: Some(key.to_vec()),
            hops,
            ..Default::default()
        }],
    };

    for (secret, code) in [
        (None, Code::Unauthenticated),
        (Some("cluster-secret-for-t85"), Code::PermissionDenied),
    ] {
        let mut c = dht_with_secret(&addr, secret).await;
        let outcomes: Vec<(&str, Result<(), tonic::Status>)> = vec![
            (
                "Replicate",
                c.replicate(dht::ReplicateRequest {
                    entries: vec![entry(b"pushed")],
                })
                .await
                .map(drop),
            ),
            (
                "HandOff",
                c.hand_off(tokio_stream::iter(vec![dht::HandOffChunk {
                    entries: vec![entry(b"handed")],
                    last: true,
                    ..Default::default()
                }]))
                .await
                .map(drop),
            ),
            (
                "RegisterAsNeighbor",
                c.register_as_neighbor(dht::NeighborRegisterInfo {
                    ty: dht::NeighborType::Previous as i32,
                    id: before_info.node.as_ref().unwrap().id.wrapping_sub(1),
                    addr: "http://127.0.0.1:9".into(),
                })
                .await
                .map(drop),
            ),
            (
                "ReadRange",
                c.read_range(dht::RangeRequest {
                    start: 0,
                    end: u64::MAX,
                })
                .await
                .map(drop),
            ),
            (
                "DigestRange",
                c.digest_range(dht::DigestRequest {
                    start: 0,
                    end: u64::MAX,
                    buckets: 1,
                })
                .await
                .map(drop),
            ),
            (
                "ListRange",
                c.list_range(dht::ListRangeRequest {
                    start: 0,
                    end: u64::MAX,
                    ..Default::default()
                })
                .await
                .map(drop),
            ),
            (
                "TransferKeys",
                c.transfer_keys(dht::NodeId { id: 0 }).await.map(drop),
            ),
            ("Batch", c.batch(intruding(b"batched", 0)).await.map(drop)),
            (
                "ForwardBatch",
                c.forward_batch(intruding(b"forwarded", 1)).await.map(drop),
            ),
        ];
        for (rpc, outcome) in outcomes {
            let status = outcome.expect_err(rpc);
            assert_eq!(status.code(), code, "{rpc}: {status:?}");
            assert!(status.message().contains("cluster"), "{rpc}: {status:?}");
        }
    }
    // Nothing moved: the same entries everywhere, and the same neighbours.
    assert_eq!(stored(&cluster.addrs()).await, before);
    let after_info = member_client.get_node_info(()).await.unwrap().into_inner();
    assert_eq!(after_info.prev, before_info.prev);
    assert_eq!(after_info.next, before_info.next);
    for key in ["pushed", "handed", "batched", "forwarded"] {
        let r = client::query(
            &mut member_client,
            dht::OperationType::Get,
            key.as_bytes(),
            None,
        )
        .await
        .unwrap();
        assert_eq!(r.value, None, "{key} was not written");
    }

    // The same calls with the secret go through.
    let mut c = dht_with_secret(&addr, Some(CLUSTER_SECRET)).await;
    c.digest_range(dht::DigestRequest {
        start: 0,
        end: u64::MAX,
        buckets: 1,
    })
    .await
    .expect("a member may digest");
    cluster.shutdown().await;
}

#[tokio::test]
async fn the_registry_refuses_callers_without_the_cluster_secret() {
    let cluster = secured_cluster(2, false).await;
    let channel = raw_channel(&cluster.registry).await;
    let members = |mut c: RegistryClient<_>| async move {
        let nodes: pb::Nodes = c.get_connected_nodes(()).await.unwrap().into_inner();
        nodes.nodes.len()
    };
    let with_secret = RegistryClient::with_interceptor(channel.clone(), member());
    assert_eq!(members(with_secret.clone()).await, 2);

    let mut anonymous = RegistryClient::new(channel.clone());
    let refused = anonymous
        .register_node(pb::ConnectionAddr {
            addr: "http://127.0.0.1:9".into(),
            id: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let victim = cluster.nodes[0].me();
    let refused = anonymous
        .deregister(pb::Node {
            id: victim.id.0,
            addr: victim.addr.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let refused = anonymous.get_connected_nodes(()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    // Neither a new member nor a removed one.
    assert_eq!(members(with_secret).await, 2);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_node_without_the_cluster_secret_cannot_join() {
    let cluster = secured_cluster(1, false).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // The default join timeout is 30 s: a refusal must end the join at once
    // rather than be retried until then.
    let config = NodeConfig::default();
    let started = std::time::Instant::now();
    let joined = tokio::time::timeout(
        Duration::from_secs(20),
        crustyring::launch::start(
            listener,
            "127.0.0.1",
            Discovery::Registry(cluster.registry.clone()),
            config,
            Arc::new(MemoryStore::new()),
            std::future::pending(),
        ),
    )
    .await
    .expect("the join gives up within its timeout");
    let error = joined.expect_err("no join without the secret").to_string();
    assert!(error.contains("cluster secret"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let ring = client::ring_with(&cluster.addrs()[0], 10, &member())
        .await
        .unwrap();
    assert_eq!(ring.len(), 1, "the ring is unchanged");
    cluster.shutdown().await;
}

#[tokio::test]
async fn the_key_api_needs_the_client_token_and_probes_stay_open() {
    let cluster = secured_cluster(3, true).await;
    let addrs = cluster.addrs();
    let auth = format!("Bearer {CLIENT_TOKEN}");
    let with_token = [("authorization", auth.as_str())];

    // Written through one node, read through each: forwards and replicas
    // pass between members.
    let put = http_with("PUT", &format!("{}/keys/k", addrs[0]), b"v", &with_token).await;
    assert_eq!(put.status, 201, "{}", String::from_utf8_lossy(&put.body));
    for addr in &addrs {
        let got = http_with("GET", &format!("{addr}/keys/k?raw=true"), b"", &with_token).await;
        assert_eq!(
            (got.status, got.body.as_slice()),
            (200, &b"v"[..]),
            "{addr}"
        );
    }
    common::eventually(Duration::from_secs(10), "three copies of k", || {
        let addrs = addrs.clone();
        async move {
            let stores = stored(&addrs).await;
            (stores == vec![1, 1, 1])
                .then_some(())
                .ok_or(format!("{stores:?}"))
        }
    })
    .await;

    // Without it, or with a wrong one: 401, a problem, and a challenge.
    let anonymous = http_with("GET", &format!("{}/keys/k", addrs[1]), b"", &[]).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.header("content-type").as_deref(),
        Some("application/problem+json")
    );
    assert!(
        anonymous.json()["detail"]
            .as_str()
            .unwrap()
            .contains("Bearer")
    );
    assert!(
        anonymous
            .header("www-authenticate")
            .unwrap()
            .starts_with("Bearer")
    );
    let wrong = http_with(
        "PUT",
        &format!("{}/keys/k", addrs[1]),
        b"overwritten",
        &[("authorization", "Bearer client-token-for-t85")],
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert!(
        wrong
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    for path in ["/keys", "/batch", "/ring"] {
        let refused = http_with("GET", &format!("{}{path}", addrs[2]), b"", &[]).await;
        assert_eq!(refused.status, 401, "{path}");
    }

    // A browser's CORS preflight passes (it never carries credentials) and
    // learns that the token may be sent.
    let preflight = http_with(
        "OPTIONS",
        &format!("{}/keys/k", addrs[2]),
        b"",
        &[
            ("origin", "http://elsewhere.example"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "authorization"),
        ],
    )
    .await;
    assert_eq!(preflight.status, 200);
    let allowed = preflight
        .header("access-control-allow-headers")
        .unwrap_or_default();
    assert!(
        allowed.to_ascii_lowercase().contains("authorization"),
        "{allowed}"
    );

    // Probes, metrics and the API's description stay open.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json", "/"] {
        let open = http_with("GET", &format!("{}{path}", addrs[2]), b"", &[]).await;
        assert_eq!(open.status, 200, "{path}");
    }
    assert_eq!(common::grpc_health(&addrs[2], "").await, 1);

    // gRPC: the same rule.
    let mut anonymous: NodeClient = client::connect(&addrs[1]).await.unwrap();
    let refused = client::query(&mut anonymous, dht::OperationType::Get, b"k", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("client token"), "{refused}");
    let mut holder = client::connect_with(&addrs[1], &token_client())
        .await
        .unwrap();
    let read = client::query(&mut holder, dht::OperationType::Get, b"k", None)
        .await
        .unwrap();
    assert_eq!(read.value.as_deref(), Some(&b"v"[..]));
    // A client token does not open the node-to-node calls.
    let refused = holder
        .digest_range(dht::DigestRequest {
            start: 0,
            end: u64::MAX,
            buckets: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // The self-routing client learns the ring with the token.
    let mut ring = client::RingClient::new_with(vec![addrs[2].clone()], true, token_client()).await;
    assert_eq!(ring.members(), 3);
    let (read, hops) = ring
        .query(dht::OperationType::Get, b"k", None)
        .await
        .unwrap();
    assert_eq!((read.value.as_deref(), hops), (Some(&b"v"[..]), Some(0)));
    let unchanged = http_with(
        "GET",
        &format!("{}/keys/k?raw=true", addrs[0]),
        b"",
        &with_token,
    )
    .await;
    assert_eq!(unchanged.body, b"v", "the wrong token overwrote nothing");
    cluster.shutdown().await;
}

#[test]
fn the_binaries_take_their_secrets_from_files_and_the_cli_sends_the_token() {
    let dir = common::TempDir::new("t84-secrets");
    let secret_file = format!("{}/cluster-secret", dir.path());
    let token_file = format!("{}/client-token", dir.path());
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::write(&secret_file, format!("{CLUSTER_SECRET}\n")).unwrap();
    std::fs::write(&token_file, format!("{CLIENT_TOKEN}\n")).unwrap();
    let registry =
        common::registry_process_with(&["--port", "0", "--cluster-secret-file", &secret_file]);
    let flags = [
        "--cluster-secret-file",
        secret_file.as_str(),
        "--client-token-file",
        token_file.as_str(),
    ];
    let a = common::dht_process(&registry.addr, &flags);
    let b = common::dht_process(&registry.addr, &flags);
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_crustyring"))
            .args(args)
            .args(["--node", &b.addr])
            .env_remove("CRUSTY_CLIENT_TOKEN")
            .env_remove("CRUSTY_CLIENT_TOKEN_FILE")
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let put = cli(&["put", "k", "v", "--token-file", &token_file]);
    assert_eq!(put, (true, "created k".into(), String::new()), "{put:?}");
    let (ok, out, _) = cli(&["get", "k", "--token", CLIENT_TOKEN]);
    assert!(ok && out == "v", "{out}");
    let (ok, _, err) = cli(&["get", "k"]);
    assert!(!ok && err.contains("client token"), "{err}");
    // The batch command (over HTTP) sends it too.
    let (ok, out, err) = cli(&["batch", "get", "k", "--token-file", &token_file]);
    assert!(ok && out == r#"get "k": "v""#, "{out} {err}");
    let (ok, _, err) = cli(&["batch", "get", "k"]);
    assert!(
        !ok && err.contains("401") && err.contains("client token"),
        "{err}"
    );
    let (ok, out, _) = cli(&["ring", "--token-file", &token_file]);
    assert!(
        ok && out.lines().filter(|l| l.contains("serving")).count() == 2,
        "{out}"
    );
    drop((a, b));

    // A secret too short to resist guessing stops the process with the reason.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dht"))
        .args(["0", "--memory", "--new-ring", "--cluster-secret", "short"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("cluster secret") && err.contains("at least 16"),
        "{err}"
    );
}
