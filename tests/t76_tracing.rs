//! Request tracing: every request has an ID (`x-request-id`, the client's or a
//! new one), echoed in the answer, carried on the forward to the owner and on
//! the replica writes, and logged with the route by every node it touched.
//!
//! This test binary installs a JSON log subscriber that keeps every line, so
//! that it can read what the (in-process) nodes logged.

mod common;

use common::{http, http_with};
use crustyring::client;
use crustyring::proto::dht::{self, OperationType};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// Every log line of this test binary, as JSON.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// The log lines whose fields mention `id`.
    fn lines_with(&self, id: &str) -> Vec<serde_json::Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .filter(|l| l.contains(id))
            .map(|l| serde_json::from_str(l).expect("a JSON log line"))
            .collect()
    }
}

fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .json()
            .with_env_filter("crustyring=debug")
            .with_writer(move || writer.clone())
            .init();
        captured
    })
}

/// A key the node at `entry` does not own, so its requests are forwarded.
async fn key_owned_elsewhere(entry: &str) -> String {
    for i in 0.. {
        let key = format!("traced-{i}");
        let owner = http("GET", &format!("{entry}/ring/owner/{key}"), b"")
            .await
            .json();
        if owner["owner"]["addr"] != entry {
            return key;
        }
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_follows_the_request_to_the_owner_and_its_replicas() {
    let logs = logs();
    let cluster = common::cluster(3).await;
    let entry = cluster.addrs()[0].clone();
    common::await_routing_tables(&cluster.addrs()).await;
    let key = key_owned_elsewhere(&entry).await;

    let id = "trace-me-4711";
    let put = http_with(
        "PUT",
        &format!("{entry}/keys/{key}"),
        b"v",
        &[("x-request-id", id)],
    )
    .await;
    assert_eq!(put.status, 201);
    assert_eq!(put.header("x-request-id").as_deref(), Some(id), "echoed");
    assert_eq!(put.header("x-crusty-hops").as_deref(), Some("1"));

    let lines = logs.lines_with(id);
    let answered = |interface: &str| {
        lines.iter().any(|l| {
            l["fields"]["message"] == "answered"
                && l["fields"]["request_id"] == id
                && l["fields"]["interface"] == interface
                && l["fields"]["outcome"] == "ok"
        })
    };
    assert!(answered("http"), "the entry node logs it: {lines:#?}");
    assert!(
        answered("peer"),
        "the owner logs the forward under the same ID: {lines:#?}"
    );
    let entry_line = lines
        .iter()
        .find(|l| l["fields"]["interface"] == "http")
        .unwrap();
    assert_eq!(entry_line["fields"]["hops"], 1, "logged with its route");
    assert_eq!(
        entry_line["fields"]["owner"],
        put.header("x-crusty-owner").unwrap().as_str()
    );
    let replicas = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "taking replica writes")
        .count();
    assert_eq!(replicas, 2, "both replicas name the request: {lines:#?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_an_id_and_a_bad_one_is_refused() {
    logs();
    let cluster = common::cluster(1).await;
    let node = &cluster.addrs()[0];

    let made_up = http("GET", &format!("{node}/keys/nothing"), b"").await;
    assert_eq!(made_up.status, 404);
    let made_up = made_up.header("x-request-id").expect("an ID is made up");
    assert_eq!(made_up.len(), 16);

    let long = "x".repeat(129);
    for bad in [long.as_str(), "a,b", ""] {
        let refused = http_with(
            "PUT",
            &format!("{node}/keys/k"),
            b"v",
            &[("x-request-id", bad)],
        )
        .await;
        assert_eq!(refused.status, 400, "{bad:?}");
        assert!(
            String::from_utf8_lossy(&refused.body).contains("x-request-id"),
            "the problem names the header"
        );
    }
    assert_eq!(
        http("GET", &format!("{node}/keys/k"), b"").await.status,
        404,
        "nothing written"
    );

    // gRPC: the same ID in the response metadata.
    let mut c = common::connect(node).await;
    let mut request = tonic::Request::new(dht::Query {
        ty: OperationType::Set as i32,
        key: b"k".to_vec(),
        value: Some(b"v".to_vec()),
        ..dht::Query::default()
    });
    request
        .metadata_mut()
        .insert("x-request-id", "grpc-42".parse().unwrap());
    let answer = c.query_dht(request).await.unwrap();
    assert_eq!(answer.metadata().get("x-request-id").unwrap(), "grpc-42");
    let mut request = tonic::Request::new(dht::Query {
        ty: OperationType::Get as i32,
        key: b"k".to_vec(),
        value: None,
        ..dht::Query::default()
    });
    request
        .metadata_mut()
        .insert("x-request-id", "a,b".parse().unwrap());
    let refused = c.query_dht(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("x-request-id"),
        "{}",
        refused.message()
    );
    let read = client::query(&mut c, OperationType::Get, b"k", None)
        .await
        .unwrap();
    assert_eq!(read.value.as_deref(), Some(&b"v"[..]));
    cluster.shutdown().await;
}
