//! TLS over real sockets: a whole cluster (registry, joins, replication,
//! forwards, repair after a SIGKILL) runs over TLS with certificates from a test
//! CA; its ports refuse plaintext gRPC and HTTP; clients verify the nodes with
//! the CA and refuse a node the CA did not sign.

use crate::common;

use crustyring::client;
use crustyring::cluster::{ClusterOptions, LocalCluster};
use crustyring::node::NodeConfig;
use crustyring::proto::dht::OperationType;
use crustyring::security::{Credentials, Required, Secret, Tls};
use std::sync::Arc;
use std::time::Duration;

/// PEM files of a test CA and of a certificate it signed for 127.0.0.1 and
/// localhost, in a directory removed on drop.
struct Pki {
    dir: common::TempDir,
}

impl Pki {
    fn new(name: &str) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir = common::TempDir::new(name);
        std::fs::create_dir_all(dir.path()).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "crustyring test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let pki = Pki { dir };
        std::fs::write(pki.path("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(pki.path("node.pem"), cert.pem()).unwrap();
        std::fs::write(pki.path("node.key"), key.serialize_pem()).unwrap();
        pki
    }

    fn path(&self, file: &str) -> String {
        format!("{}/{file}", self.dir.path())
    }

    /// A node's settings: serve with the signed certificate, verify with the CA.
    fn tls(&self) -> Tls {
        let p = |f: &str| std::path::PathBuf::from(self.path(f));
        Tls::load(
            Some(&p("node.pem")),
            Some(&p("node.key")),
            Some(&p("ca.pem")),
        )
        .unwrap()
    }

    /// A client's settings: verify with the CA.
    fn client(&self) -> Tls {
        Tls::load(None, None, Some(std::path::Path::new(&self.path("ca.pem")))).unwrap()
    }
}

/// One HTTP/1.1 request over TLS, verified with the CA in `ca_pem`.
async fn https(method: &str, url: &str, body: &[u8], ca_pem: &str) -> (u16, Vec<u8>) {
    use http_body_util::{BodyExt, Full};
    use tokio_rustls::rustls::{self, pki_types::CertificateDer, pki_types::pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let uri: hyper::Uri = url.parse().unwrap();
    let tcp = tokio::net::TcpStream::connect((uri.host().unwrap(), uri.port_u16().unwrap()))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from(uri.host().unwrap().to_string()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("the node's certificate verifies with the CA");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::builder()
        .method(method)
        .uri(uri.path_and_query().unwrap().as_str())
        .header("host", uri.authority().unwrap().as_str())
        .body(Full::new(hyper::body::Bytes::copy_from_slice(body)))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body.to_vec())
}

#[tokio::test]
async fn a_cluster_serves_and_replicates_over_tls_and_refuses_plaintext() {
    let pki = Pki::new("t86-pki");
    let options = ClusterOptions {
        node: NodeConfig {
            tls: pki.tls(),
            security: Required {
                cluster_secret: Some(
                    Secret::new("cluster secret", "tls-cluster-secret-1").unwrap(),
                ),
                client_token: None,
            },
            ..NodeConfig::default()
        },
        ..ClusterOptions::default()
    };
    let mut cluster = LocalCluster::start(options).await.unwrap();
    assert!(
        cluster.registry.starts_with("https://"),
        "{}",
        cluster.registry
    );
    for _ in 0..3 {
        cluster.add_node(0).await.expect("joins over TLS");
    }
    let addrs = cluster.addrs();
    assert!(
        addrs.iter().all(|a| a.starts_with("https://127.0.0.1:")),
        "{addrs:?}"
    );

    // gRPC over TLS, verified with the CA, routed to each key's owner.
    let credentials = Credentials::client(None, &pki.client());
    let mut ring =
        client::RingClient::new_with(vec![addrs[0].clone()], true, credentials.clone()).await;
    assert_eq!(ring.members(), 3, "the ring is learned over TLS");
    for i in 0..20 {
        let key = format!("k{i}");
        ring.query(OperationType::Set, key.as_bytes(), Some(b"v"))
            .await
            .unwrap();
    }
    // Every node answers every key (forwarding over TLS), and holds three
    // copies' worth between them (replication over TLS).
    for addr in &addrs {
        let mut c = client::connect_with(addr, &credentials).await.unwrap();
        for i in 0..20 {
            let r = client::query(&mut c, OperationType::Get, format!("k{i}").as_bytes(), None)
                .await
                .unwrap();
            assert_eq!(r.value.as_deref(), Some(&b"v"[..]), "k{i} through {addr}");
        }
    }
    let member = Credentials::member(
        &Required {
            cluster_secret: Some(Secret::new("cluster secret", "tls-cluster-secret-1").unwrap()),
            client_token: None,
        },
        &pki.client(),
    );
    common::eventually(Duration::from_secs(10), "60 copies of 20 keys", || {
        let (addrs, member) = (addrs.clone(), member.clone());
        async move {
            let ring = client::ring_with(&addrs[0], 10, &member)
                .await
                .map_err(|e| e.to_string())?;
            let copies: u64 = ring.iter().map(|i| i.keys).sum();
            (copies == 60)
                .then_some(())
                .ok_or(format!("{copies} copies"))
        }
    })
    .await;

    // REST over TLS.
    let ca = pki.path("ca.pem");
    let (status, _) = https("PUT", &format!("{}/keys/rest", addrs[1]), b"over tls", &ca).await;
    assert_eq!(status, 201);
    let (status, body) = https("GET", &format!("{}/keys/rest?raw=true", addrs[2]), b"", &ca).await;
    assert_eq!((status, body.as_slice()), (200, &b"over tls"[..]));

    // Plaintext to a TLS port: no answer, over HTTP or gRPC.
    let plain = addrs[0].replace("https://", "http://");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<hyper::body::Bytes>>();
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        client.get(format!("{plain}/keys/rest").parse().unwrap()),
    )
    .await
    .expect("refused at once");
    assert!(refused.is_err(), "plaintext HTTP was answered: {refused:?}");
    let refused = match client::connect(&plain).await {
        Err(e) => e.to_string(),
        Ok(mut c) => client::query(&mut c, OperationType::Get, b"rest", None)
            .await
            .expect_err("plaintext gRPC was answered")
            .to_string(),
    };
    assert!(!refused.is_empty());

    // An https address without a CA to verify it is refused before connecting.
    let e = client::connect(&addrs[0]).await.unwrap_err().to_string();
    assert!(e.contains("--tls-ca"), "{e}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_client_refuses_a_node_its_ca_did_not_sign() {
    let (real, other) = (Pki::new("t86-real"), Pki::new("t86-other"));
    let options = ClusterOptions {
        node: NodeConfig {
            tls: real.tls(),
            ..NodeConfig::default()
        },
        ..ClusterOptions::default()
    };
    let mut cluster = LocalCluster::start(options).await.unwrap();
    cluster.add_node(0).await.unwrap();
    let addr = cluster.addrs()[0].clone();
    let wrong_ca = Credentials::client(None, &other.client());
    let refused = match client::connect_with(&addr, &wrong_ca).await {
        Err(e) => e.to_string(),
        Ok(mut c) => client::query(&mut c, OperationType::Get, b"k", None)
            .await
            .expect_err("a node signed by another CA was trusted")
            .to_string(),
    };
    assert!(!refused.is_empty());
    let right_ca = Credentials::client(None, &real.client());
    let mut c = client::connect_with(&addr, &right_ca).await.unwrap();
    client::query(&mut c, OperationType::Get, b"k", None)
        .await
        .expect("the right CA verifies the node");
    cluster.shutdown().await;
}

#[test]
fn processes_over_tls_repair_the_ring_after_a_sigkill() {
    let pki = Pki::new("t86-processes");
    let (cert, key, ca) = (
        pki.path("node.pem"),
        pki.path("node.key"),
        pki.path("ca.pem"),
    );
    let tls = ["--tls-cert", &cert, "--tls-key", &key, "--tls-ca", &ca];
    let mut registry_args = vec!["--port", "0"];
    registry_args.extend_from_slice(&tls[..4]);
    let registry = common::registry_process_with(&registry_args);
    assert!(registry.addr.starts_with("https://"), "{}", registry.addr);
    let nodes: Vec<common::Proc> = (0..3)
        .map(|_| common::dht_process(&registry.addr, &tls))
        .collect();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_crustyring"))
            .args(args)
            .args(["--node", &nodes[0].addr, "--tls-ca", &ca])
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    assert_eq!(cli(&["put", "k", "v"]).1, "created k");
    // The batch command speaks HTTP/1.1 over TLS, verified with the same CA.
    let (ok, out, err) = cli(&["batch", "get", "k", "put", "b", "1"]);
    assert!(
        ok && out == "get \"k\": \"v\"\nput \"b\": created",
        "{out} {err}"
    );
    nodes[2].signal("KILL");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let member = Credentials::client(None, &pki.client());
    runtime.block_on(common::eventually(
        Duration::from_secs(20),
        "two serving nodes after the kill",
        || {
            let (addr, member) = (nodes[0].addr.clone(), member.clone());
            async move {
                let ring = client::ring_with(&addr, 10, &member)
                    .await
                    .map_err(|e| e.to_string())?;
                (ring.len() == 2)
                    .then_some(())
                    .ok_or(format!("{} nodes", ring.len()))
            }
        },
    ));
    let (ok, out, err) = cli(&["get", "k"]);
    assert!(ok && out == "v", "{out} {err}");
}

#[test]
fn the_local_cluster_prints_examples_that_carry_its_ca_and_token() {
    let pki = Pki::new("t86-cluster");
    let token_file = pki.path("client.token");
    std::fs::write(&token_file, "client-token-for-t86\n").unwrap();
    let (cert, key, ca) = (
        pki.path("node.pem"),
        pki.path("node.key"),
        pki.path("ca.pem"),
    );
    let args = [
        "cluster",
        "--port",
        "0",
        "--nodes",
        "1",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-ca",
        &ca,
        "--client-token-file",
        &token_file,
    ];
    let mut cluster = common::Proc::start(env!("CARGO_BIN_EXE_crustyring"), &args, "registry");
    let printed = cluster.read_until("Ctrl-C stops the cluster").join("\n");
    let node = printed
        .lines()
        .filter(|l| l.trim_start().starts_with("node"))
        .find_map(|l| l.split_whitespace().find(|w| w.starts_with("https://")))
        .expect("the node's https address")
        .to_string();
    assert!(
        printed.contains(&format!(
            "curl --cacert {ca} -H \"Authorization: Bearer $CRUSTY_CLIENT_TOKEN\" {node}/keys/1"
        )),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("get 1 --node {node} --tls-ca {ca}")),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("grpcurl -cacert {ca} -H")),
        "{printed}"
    );
    assert!(
        !printed.contains("client-token-for-t86"),
        "the token is never printed"
    );
    // The printed CLI example works as printed, with the token exported.
    let put = std::process::Command::new(env!("CARGO_BIN_EXE_crustyring"))
        .args(["put", "1", "v", "--node", &node, "--tls-ca", &ca])
        .env("CRUSTY_CLIENT_TOKEN", "client-token-for-t86")
        .output()
        .unwrap();
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
}
