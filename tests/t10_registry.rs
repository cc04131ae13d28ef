//! The registry over real sockets: SHA-256 IDs, closest-smaller referrals, listing.

mod common;

use crustyring::proto::registry::{ConnectionAddr, registry_client::RegistryClient};
use crustyring::registry::DEFAULT_SALT;
use crustyring::ring::node_position;

#[tokio::test]
async fn registry_assigns_sha256_ids_and_refers_to_the_closest_smaller_member() {
    let cluster = common::cluster(0).await;
    let mut registry = RegistryClient::connect(cluster.registry.clone())
        .await
        .unwrap();
    let mut assigned = Vec::new();
    for i in 0..6 {
        let addr = format!("http://127.0.0.1:{}", 40000 + i);
        let info = registry
            .register_node(ConnectionAddr { addr: addr.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.id, node_position(&addr, DEFAULT_SALT, 0).0);
        // The referral is the closest smaller ID among those registered before.
        let expected = assigned
            .iter()
            .filter(|(id, _)| *id < info.id)
            .max()
            .or_else(|| assigned.iter().max())
            .cloned();
        let got = info.neighbor.map(|n| (n.id, n.addr));
        assert_eq!(got, expected, "referral for member {i}");
        assigned.push((info.id, addr));
    }
    let listed = registry
        .get_connected_nodes(())
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assigned.sort();
    let listed: Vec<_> = listed.into_iter().map(|n| (n.id, n.addr)).collect();
    assert_eq!(listed, assigned);
    cluster.shutdown().await;
}

#[tokio::test]
async fn registry_refuses_an_address_that_is_not_a_url() {
    let cluster = common::cluster(0).await;
    let mut registry = RegistryClient::connect(cluster.registry.clone())
        .await
        .unwrap();
    for bad in ["", "127.0.0.1:5", "not a url"] {
        let err = registry
            .register_node(ConnectionAddr { addr: bad.into() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad:?}");
        // A heartbeat cannot slip such an address into the membership either.
        let err = registry
            .heartbeat(crustyring::proto::registry::Node {
                id: 7,
                addr: bad.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad:?}");
    }
    let members = registry.get_connected_nodes(()).await.unwrap().into_inner();
    assert!(members.nodes.is_empty());
    cluster.shutdown().await;
}
