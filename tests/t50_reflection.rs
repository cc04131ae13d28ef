//! Server reflection (v1 and v1alpha) and the standard health service, as Postman
//! and grpcurl use them, on a node and on the registry.

use crate::common;

use prost::Message;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_reflection::pb::{v1, v1alpha};

async fn channel(addr: &str) -> Channel {
    Channel::from_shared(addr.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Lists services, fetches the file defining `symbol` and then each of its
/// dependencies by name, through reflection v1, as grpcurl does.
async fn reflect_v1(
    addr: &str,
    symbol: &str,
) -> (Vec<String>, Vec<prost_types::FileDescriptorProto>) {
    use v1::server_reflection_request::MessageRequest;
    let (services, mut files) = reflect_v1_with(
        addr,
        vec![
            MessageRequest::ListServices(String::new()),
            MessageRequest::FileContainingSymbol(symbol.to_string()),
        ],
    )
    .await;
    let deps: Vec<_> = files
        .iter()
        .flat_map(|f| f.dependency.clone())
        .map(MessageRequest::FileByFilename)
        .collect();
    files.extend(reflect_v1_with(addr, deps).await.1);
    (services, files)
}

async fn reflect_v1_with(
    addr: &str,
    requests: Vec<v1::server_reflection_request::MessageRequest>,
) -> (Vec<String>, Vec<prost_types::FileDescriptorProto>) {
    use v1::server_reflection_response::MessageResponse;
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel(addr).await);
    let requests: Vec<_> = requests
        .into_iter()
        .map(|m| v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(m),
        })
        .collect();
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let (mut services, mut files) = (Vec::new(), Vec::new());
    while let Some(r) = responses.message().await.unwrap() {
        match r.message_response.unwrap() {
            MessageResponse::ListServicesResponse(l) => {
                services.extend(l.service.into_iter().map(|s| s.name));
            }
            MessageResponse::FileDescriptorResponse(f) => {
                for bytes in f.file_descriptor_proto {
                    files.push(prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap());
                }
            }
            other => panic!("unexpected reflection answer {other:?}"),
        }
    }
    (services, files)
}

async fn list_v1alpha(addr: &str) -> Vec<String> {
    use v1alpha::server_reflection_request::MessageRequest;
    use v1alpha::server_reflection_response::MessageResponse;
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(channel(addr).await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    match responses
        .message()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
    {
        MessageResponse::ListServicesResponse(l) => l.service.into_iter().map(|s| s.name).collect(),
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test]
async fn a_node_describes_its_services_through_both_reflection_versions() {
    let cluster = common::cluster(1).await;
    let addr = cluster.addrs()[0].clone();
    let (services, files) = reflect_v1(&addr, "dht.DhtNode").await;
    for expected in [
        "dht.DhtNode",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            services.iter().any(|s| s == expected),
            "{expected} missing from {services:?}"
        );
    }
    // The file defining dht.DhtNode, with its imports, as a client needs them.
    let names: Vec<_> = files.iter().map(|f| f.name().to_string()).collect();
    assert!(names.contains(&"dht.proto".to_string()), "{names:?}");
    assert!(names.contains(&"registry.proto".to_string()), "{names:?}");
    assert!(
        names.contains(&"google/protobuf/empty.proto".to_string()),
        "{names:?}"
    );
    let dht = files.iter().find(|f| f.name() == "dht.proto").unwrap();
    let methods: Vec<_> = dht.service[0]
        .method
        .iter()
        .map(|m| m.name().to_string())
        .collect();
    for m in [
        "QueryDht",
        "ForwardQuery",
        "RegisterAsNeighbor",
        "TransferKeys",
    ] {
        assert!(
            methods.contains(&m.to_string()),
            "{m} missing from {methods:?}"
        );
    }
    let alpha = list_v1alpha(&addr).await;
    assert!(alpha.iter().any(|s| s == "dht.DhtNode"), "{alpha:?}");
    assert_eq!(
        common::grpc_health(&addr, "dht.DhtNode").await,
        ServingStatus::Serving as i32
    );
    assert_eq!(
        common::grpc_health(&addr, "").await,
        ServingStatus::Serving as i32
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn the_registry_serves_reflection_and_health_too() {
    let cluster = common::cluster(0).await;
    let (services, files) = reflect_v1(&cluster.registry, "registry.Registry").await;
    assert!(
        services.iter().any(|s| s == "registry.Registry"),
        "{services:?}"
    );
    assert!(files.iter().any(|f| f.name() == "registry.proto"));
    assert!(
        list_v1alpha(&cluster.registry)
            .await
            .iter()
            .any(|s| s == "registry.Registry")
    );
    assert_eq!(
        common::grpc_health(&cluster.registry, "registry.Registry").await,
        ServingStatus::Serving as i32
    );
    cluster.shutdown().await;
}
