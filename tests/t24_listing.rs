//! Listing: `GET /keys` and gRPC `ListKeys` return the ring's live keys in the
//! order of their positions, a page at a time from any node, with a cursor that
//! resumes exactly after the last key, even across a join between pages.

use crate::common;

use common::http;
use crustyring::client;
use crustyring::proto::dht::{self, OperationType};
use crustyring::ring::key_position;
use std::collections::BTreeSet;

/// Writes `k/0..n` (value = key) and `x/0..10` through `addr`, then deletes
/// `k/0..10`; the live `k/` keys.
async fn fill(addr: &str, n: usize) -> BTreeSet<String> {
    let mut c = client::RingClient::new(vec![addr.to_string()], true).await;
    for i in 0..n {
        let key = format!("k/{i}");
        c.query(OperationType::Set, key.as_bytes(), Some(key.as_bytes()))
            .await
            .unwrap();
    }
    for i in 0..10 {
        let key = format!("x/{i}");
        c.query(OperationType::Set, key.as_bytes(), Some(b"x"))
            .await
            .unwrap();
        c.query(OperationType::Delete, format!("k/{i}").as_bytes(), None)
            .await
            .unwrap();
    }
    (10..n).map(|i| format!("k/{i}")).collect()
}

/// Every page of `GET {addr}/keys?{query}` after `cursor`, the keys in order.
async fn pages(
    addr: &str,
    query: &str,
    mut cursor: Option<String>,
    max_pages: usize,
) -> (Vec<String>, Option<String>) {
    let mut keys = Vec::new();
    for _ in 0..max_pages {
        let url = match &cursor {
            Some(c) => format!("{addr}/keys?{query}&cursor={c}"),
            None => format!("{addr}/keys?{query}"),
        };
        let page = http("GET", &url, b"").await;
        assert_eq!(page.status, 200, "{}", String::from_utf8_lossy(&page.body));
        let page = page.json();
        for k in page["keys"].as_array().unwrap() {
            keys.push(k["key"].as_str().unwrap().to_string());
        }
        cursor = page["next"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    (keys, cursor)
}

fn in_ring_order(keys: &[String]) -> bool {
    keys.windows(2)
        .all(|w| (key_position(w[0].as_bytes()), &w[0]) < (key_position(w[1].as_bytes()), &w[1]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_from_any_node_list_every_live_key_once_in_ring_order() {
    let cluster = common::cluster(4).await;
    let addrs = cluster.addrs();
    let live = fill(&addrs[0], 200).await;

    let (keys, _) = pages(&addrs[2], "prefix=k/&limit=37", None, 100).await;
    assert_eq!(keys.len(), live.len(), "no key missed or repeated");
    assert_eq!(keys.iter().cloned().collect::<BTreeSet<_>>(), live);
    assert!(in_ring_order(&keys));

    let all = http(
        "GET",
        &format!("{}/keys?limit=1000&values=true", addrs[1]),
        b"",
    )
    .await
    .json();
    assert_eq!(all["keys"].as_array().unwrap().len(), live.len() + 10);
    assert_eq!(
        all["next"],
        serde_json::Value::Null,
        "one page held them all"
    );
    let first_k = all["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key"].as_str().unwrap().starts_with("k/"))
        .unwrap();
    assert_eq!(first_k["value"], first_k["key"], "values on request");
    assert_eq!(first_k["version"].as_str().unwrap().len(), 32);

    // gRPC: one stream, resumable from any key's cursor.
    let mut c = common::connect(&addrs[3]).await;
    let request = |cursor: String| dht::ListKeysRequest {
        prefix: b"k/".to_vec(),
        cursor,
        ..Default::default()
    };
    let mut stream = c
        .list_keys(request(String::new()))
        .await
        .unwrap()
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(k) = stream.message().await.unwrap() {
        streamed.push(k);
    }
    let names: Vec<String> = streamed
        .iter()
        .map(|k| String::from_utf8(k.key.clone()).unwrap())
        .collect();
    assert_eq!(names, keys, "the same keys in the same order");
    let mut rest = c
        .list_keys(request(streamed[99].cursor.clone()))
        .await
        .unwrap()
        .into_inner();
    let mut tail = Vec::new();
    while let Some(k) = rest.message().await.unwrap() {
        tail.push(String::from_utf8(k.key).unwrap());
    }
    assert_eq!(tail, names[100..], "resumed right after the cursor's key");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_between_pages_misses_and_repeats_nothing() {
    let mut cluster = common::cluster(2).await;
    let addrs = cluster.addrs();
    let live = fill(&addrs[0], 150).await;
    let (mut keys, cursor) = pages(&addrs[0], "prefix=k/&limit=40", None, 1).await;
    assert!(cursor.is_some());
    cluster.add_node(0).await.unwrap();
    cluster.add_node(0).await.unwrap();
    let (rest, end) = pages(&addrs[1], "prefix=k/&limit=40", cursor, 100).await;
    assert_eq!(end, None);
    keys.extend(rest);
    assert_eq!(keys.len(), live.len());
    assert_eq!(keys.iter().cloned().collect::<BTreeSet<_>>(), live);
    assert!(in_ring_order(&keys));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_listings_are_refused_with_what_is_wrong() {
    let cluster = common::cluster(1).await;
    let node = &cluster.addrs()[0];
    for (query, says) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("cursor=%21%21", "cursor"),
        ("cursor=AAAAAAAAAAd4", "cursor"),
    ] {
        let answer = http("GET", &format!("{node}/keys?{query}"), b"").await;
        assert_eq!(answer.status, 400, "{query}");
        assert!(
            answer.json()["detail"].as_str().unwrap().contains(says),
            "{query}"
        );
    }
    let mut c = common::connect(node).await;
    let bad = dht::ListKeysRequest {
        cursor: "nonsense".into(),
        ..Default::default()
    };
    assert_eq!(
        c.list_keys(bad).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    let zero = dht::ListRangeRequest {
        limit: 0,
        ..Default::default()
    };
    assert_eq!(
        c.list_range(zero).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    cluster.shutdown().await;
}
