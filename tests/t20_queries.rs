//! Queries over real sockets, as clients of the original protocol send them.

use crate::common;

use crustyring::node::KEY_NOT_PRESENT;
use crustyring::proto::dht::{self, OperationType};
use crustyring::ring::key_position;
use tokio_stream::StreamExt;

#[tokio::test]
async fn the_original_readme_example_works_through_any_node() {
    let cluster = common::cluster(3).await;
    let addrs = cluster.addrs();
    let mut a = common::connect(&addrs[0]).await;
    let mut b = common::connect(&addrs[1]).await;
    let mut c = common::connect(&addrs[2]).await;

    // Set key "1" (as Postman sends {"ty": "Set", "key": "1", "value": ...}).
    let created = common::set(&mut a, b"1", b"Ru1nnAfPu3Ya4v").await;
    assert_eq!((created.error, created.value), (None, None));

    // Get it from another node.
    let got = common::get(&mut b, b"1").await;
    assert_eq!(got.value.as_deref(), Some(&b"Ru1nnAfPu3Ya4v"[..]));

    // Set again returns the previous value.
    let replaced = common::set(&mut c, b"1", b"second").await;
    assert_eq!(replaced.value.as_deref(), Some(&b"Ru1nnAfPu3Ya4v"[..]));

    // Delete returns the deleted value; Get then reports the original message.
    let deleted = crustyring::client::query(&mut b, OperationType::Delete, b"1", None)
        .await
        .unwrap();
    assert_eq!(deleted.value.as_deref(), Some(&b"second"[..]));
    let gone = common::get(&mut a, b"1").await;
    assert_eq!(gone.error.as_deref(), Some(KEY_NOT_PRESENT));
    assert_eq!(gone.value, None);
    let again = crustyring::client::query(&mut c, OperationType::Delete, b"1", None)
        .await
        .unwrap();
    assert_eq!(again.error.as_deref(), Some(KEY_NOT_PRESENT));
    cluster.shutdown().await;
}

#[tokio::test]
async fn binary_keys_and_empty_values_round_trip() {
    let cluster = common::cluster(2).await;
    let addrs = cluster.addrs();
    let mut a = common::connect(&addrs[0]).await;
    let mut b = common::connect(&addrs[1]).await;
    let key = [0u8, 255, 10, 13, 0];
    common::set(&mut a, &key, b"").await;
    let got = common::get(&mut b, &key).await;
    assert_eq!((got.error, got.value), (None, Some(Vec::new())));
    cluster.shutdown().await;
}

#[tokio::test]
async fn forward_query_by_position_reads_what_query_dht_wrote() {
    let cluster = common::cluster(3).await;
    let addrs = cluster.addrs();
    let mut a = common::connect(&addrs[0]).await;
    common::set(&mut a, b"k", b"v").await;
    for addr in &addrs {
        let mut c = common::connect(addr).await;
        // The original ForwardQuery carries only the position.
        let r = c
            .forward_query(dht::EncodedQuery {
                ty: OperationType::Get as i32,
                key: key_position(b"k").0,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.value.as_deref(), Some(&b"v"[..]), "via {addr}");
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn transfer_keys_streams_the_entries_of_the_arc_with_their_raw_keys() {
    let cluster = common::cluster(1).await;
    let addr = cluster.addrs()[0].clone();
    let mut c = common::connect(&addr).await;
    for i in 0..20 {
        common::set(&mut c, format!("key{i}").as_bytes(), b"v").await;
    }
    let me = cluster.nodes[0].me().id;
    let mut stream = c
        .transfer_keys(dht::NodeId { id: me.0 })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(entry) = stream.next().await {
        let entry = entry.unwrap();
        let raw = entry.raw_key.expect("raw key present");
        assert_eq!(key_position(&raw).0, entry.key);
        n += 1;
    }
    assert_eq!(n, 20);
    cluster.shutdown().await;
}

#[tokio::test]
async fn node_info_shows_each_nodes_view_and_the_ring_walk_closes() {
    let cluster = common::cluster(4).await;
    let ring = crustyring::client::ring(&cluster.addrs()[2], 100)
        .await
        .unwrap();
    assert_eq!(ring.len(), 4);
    let total: u64 = ring.iter().map(|i| i.keys).sum();
    assert_eq!(total, 0);
    for (i, info) in ring.iter().enumerate() {
        assert_eq!(info.state, "serving");
        let next = &ring[(i + 1) % ring.len()];
        assert_eq!(
            info.next.as_ref().unwrap().id,
            next.node.as_ref().unwrap().id
        );
        assert_eq!(
            next.prev.as_ref().unwrap().id,
            info.node.as_ref().unwrap().id
        );
    }
    cluster.shutdown().await;
}
