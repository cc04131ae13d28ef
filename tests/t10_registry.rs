//! The registry over real sockets: balanced SHA-256 IDs, closest-smaller
//! referrals, saved IDs, listing.

use crate::common;

use crustyring::cluster::LocalCluster;
use crustyring::proto::registry::{ConnectionAddr, registry_client::RegistryClient};
use crustyring::registry::{DEFAULT_SALT, replay::replay};
use crustyring::ring::IdRule;
use tonic::transport::Channel;

/// A registry without nodes, and a client of it.
async fn registry_alone() -> (LocalCluster, RegistryClient<Channel>) {
    let cluster = common::cluster(0).await;
    let client = RegistryClient::connect(cluster.registry.clone())
        .await
        .expect("registry up");
    (cluster, client)
}

#[tokio::test]
async fn registry_assigns_the_balancing_rule_s_ids_and_refers_to_the_closest_smaller_member() {
    let (cluster, mut registry) = registry_alone().await;
    let addrs: Vec<String> = (0..6)
        .map(|i| format!("http://127.0.0.1:{}", 40000 + i))
        .collect();
    let predicted = replay(IdRule::new(DEFAULT_SALT, IdRule::DEFAULT_CHOICES), &addrs);
    let mut assigned = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let info = registry
            .register_node(ConnectionAddr {
                addr: addr.clone(),
                id: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.id, predicted[i].0, "ID of member {i}");
        // The referral is the closest smaller ID among those registered before.
        let expected = assigned
            .iter()
            .filter(|(id, _)| *id < info.id)
            .max()
            .or_else(|| assigned.iter().max())
            .cloned();
        let got = info.neighbor.map(|n| (n.id, n.addr));
        assert_eq!(got, expected, "referral for member {i}");
        assigned.push((info.id, addr.clone()));
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
    let (cluster, mut registry) = registry_alone().await;
    for bad in ["", "127.0.0.1:5", "not a url"] {
        let err = registry
            .register_node(ConnectionAddr {
                addr: bad.into(),
                id: None,
            })
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

#[tokio::test]
async fn a_node_that_holds_an_id_registers_that_id_and_no_other() {
    let (cluster, mut registry) = registry_alone().await;
    let mut register = async |addr: &str, id: Option<u64>| {
        let addr = addr.to_string();
        registry
            .register_node(ConnectionAddr { addr, id })
            .await
            .unwrap()
            .into_inner()
    };
    let first = register("http://127.0.0.1:40001", None).await;
    let saved = first.id.wrapping_add(1 << 63);
    let back = register("http://127.0.0.1:40002", Some(saved)).await;
    assert_eq!(back.id, saved);
    assert_eq!(back.neighbor.map(|n| n.id), Some(first.id));
    let listed = common::registry_ids(&cluster.registry).await;
    let mut expected = vec![
        (first.id, "http://127.0.0.1:40001".to_string()),
        (saved, "http://127.0.0.1:40002".to_string()),
    ];
    expected.sort();
    assert_eq!(listed, expected);
    cluster.shutdown().await;
}
