//! Compare-and-set: every read answers the key's version (`ETag`, `version`);
//! a write on condition (`If-Match`, `If-None-Match: *`, gRPC `if_match` and
//! `if_absent`) applies only if the condition holds at the owner, and otherwise
//! changes nothing and says what the version is now (412 / FAILED_PRECONDITION).

use crate::common;

use common::{http, http_with};
use crustyring::client;
use crustyring::proto::dht::{self, OperationType};
use std::time::{Duration, Instant};

fn etag(answer: &common::HttpAnswer) -> String {
    answer.header("etag").expect("an ETag")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_writes_apply_only_on_the_version_they_name() {
    let cluster = common::cluster(3).await;
    let node = &cluster.addrs()[0];
    let url = format!("{node}/keys/cas-http");

    let created = http_with("PUT", &url, b"one", &[("if-none-match", "*")]).await;
    assert_eq!(created.status, 201);
    let v1 = etag(&created);
    assert_eq!(created.json()["version"], v1.trim_matches('"'));
    let read = http("GET", &url, b"").await;
    assert_eq!(etag(&read), v1, "a read answers the version written");
    assert_eq!(read.json()["version"], v1.trim_matches('"'));

    let again = http_with("PUT", &url, b"two", &[("if-none-match", "*")]).await;
    assert_eq!(again.status, 412, "create-only on a present key");
    assert_eq!(etag(&again), v1, "the 412 names the current version");

    let replaced = http_with("PUT", &url, b"two", &[("if-match", &v1)]).await;
    assert_eq!(replaced.status, 200);
    let v2 = etag(&replaced);
    assert_ne!(v2, v1);

    let stale = http_with("PUT", &url, b"three", &[("if-match", &v1)]).await;
    assert_eq!(stale.status, 412);
    assert_eq!(etag(&stale), v2);
    let stale_delete = http_with("DELETE", &url, b"", &[("if-match", &v1)]).await;
    assert_eq!(stale_delete.status, 412);
    assert_eq!(
        http("GET", &url, b"").await.json()["value"],
        "two",
        "nothing changed"
    );

    let unquoted = v2.trim_matches('"').to_string();
    let deleted = http_with("DELETE", &url, b"", &[("if-match", &unquoted)]).await;
    assert_eq!(deleted.status, 200);
    let gone = http_with("PUT", &url, b"four", &[("if-match", "*")]).await;
    assert_eq!(gone.status, 412, "If-Match: * needs the key present");
    assert_eq!(gone.header("etag"), None, "an absent key has no version");

    for (header, value) in [
        ("if-match", "W/\"abc\""),
        ("if-match", "\"a\", \"b\""),
        ("if-match", "not-a-version"),
        ("if-none-match", "\"abc\""),
    ] {
        let bad = http_with("PUT", &url, b"x", &[(header, value)]).await;
        assert_eq!(bad.status, 400, "{header}: {value}");
        assert!(bad.json()["detail"].as_str().unwrap().contains("condition"));
    }
    assert_eq!(
        http("GET", &url, b"").await.status,
        404,
        "no bad write landed"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_conditions_fail_with_failed_precondition_and_the_current_version() {
    let cluster = common::cluster(3).await;
    let mut c = common::connect(&cluster.addrs()[1]).await;
    let set = |value: &[u8], if_match: Option<String>, if_absent: bool| dht::Query {
        if_match,
        if_absent,
        ..client::request(OperationType::Set, b"cas-grpc", Some(value))
    };

    let first = c
        .query_dht(set(b"a", None, true))
        .await
        .unwrap()
        .into_inner();
    let v1 = first.version.expect("a write answers its version");
    let read = client::query(&mut c, OperationType::Get, b"cas-grpc", None)
        .await
        .unwrap();
    assert_eq!(read.version.as_deref(), Some(v1.as_str()));

    let refused = c.query_dht(set(b"b", None, true)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        refused.metadata().get("x-crusty-version").unwrap(),
        v1.as_str()
    );

    let second = c
        .query_dht(set(b"b", Some(v1.clone()), false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        second.value.as_deref(),
        Some(&b"a"[..]),
        "the replaced value"
    );
    let refused = c.query_dht(set(b"c", Some(v1), false)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        refused.metadata().get("x-crusty-version").unwrap(),
        second.version.unwrap().as_str()
    );

    let conditional_get = dht::Query {
        if_match: Some("*".into()),
        ..client::request(OperationType::Get, b"cas-grpc", None)
    };
    let refused = c.query_dht(conditional_get).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let read = client::query(&mut c, OperationType::Get, b"cas-grpc", None)
        .await
        .unwrap();
    assert_eq!(read.value.as_deref(), Some(&b"b"[..]));
    cluster.shutdown().await;
}

/// Reads the counter and writes it plus one on condition, until one write
/// applies; how many conditions failed on the way.
async fn increment(c: &mut client::RingClient, key: &[u8]) -> u32 {
    let mut lost = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "an increment took over 60 s");
        let (read, _) = c.query(OperationType::Get, key, None).await.unwrap();
        let n: u64 = String::from_utf8(read.value.unwrap())
            .unwrap()
            .parse()
            .unwrap();
        let write = dht::Query {
            if_match: read.version,
            ..client::request(
                OperationType::Set,
                key,
                Some((n + 1).to_string().as_bytes()),
            )
        };
        match c.send(write).await {
            Ok(_) => return lost,
            Err(client::ClientError::Status(s)) if s.code() == tonic::Code::FailedPrecondition => {
                lost += 1
            }
            Err(e) => panic!("increment failed: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_through_every_node_lose_none() {
    const WORKERS: usize = 6;
    const EACH: u64 = 15;
    let cluster = common::cluster(3).await;
    let addrs = cluster.addrs();
    let key = b"cas-counter";
    let mut c = common::connect(&addrs[0]).await;
    client::query(&mut c, OperationType::Set, key, Some(b"0"))
        .await
        .unwrap();

    let mut workers = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        // Through a node, not to the owner: the conditions travel on forwards.
        let mut c = client::RingClient::new(vec![addrs[w % addrs.len()].clone()], false).await;
        workers.spawn(async move {
            let mut lost = 0;
            for _ in 0..EACH {
                lost += increment(&mut c, key).await;
            }
            lost
        });
    }
    let mut conflicts = 0;
    while let Some(lost) = workers.join_next().await {
        conflicts += lost.unwrap();
    }
    let (read, _) = client::RingClient::new(vec![addrs[2].clone()], true)
        .await
        .query(OperationType::Get, key, None)
        .await
        .unwrap();
    let total = String::from_utf8(read.value.unwrap()).unwrap();
    assert_eq!(
        total,
        (WORKERS as u64 * EACH).to_string(),
        "every successful increment counted once"
    );
    assert!(
        conflicts > 0,
        "concurrent writers did meet failed conditions"
    );
    cluster.shutdown().await;
}
