//! The HTTP/JSON gateway over real sockets: the keys API on the same path as gRPC,
//! the ring, problem+json errors, OpenAPI, Swagger UI and the page.

use crate::common;

use crustyring::node::{Limits, NodeConfig};
use crustyring::ring::key_position;
use std::time::Duration;

#[tokio::test]
async fn keys_are_created_replaced_read_and_deleted_with_the_right_codes() {
    let cluster = common::cluster(3).await;
    let base = cluster.addrs()[0].clone();
    let url = format!("{base}/keys/1");

    let created = common::http("PUT", &url, b"Ru1nnAfPu3Ya4v").await;
    assert_eq!(created.status, 201);
    assert_eq!(created.header("location").as_deref(), Some("/keys/1"));
    let body = created.json();
    assert_eq!(body["created"], true);
    assert_eq!(body["position"], key_position(b"1").to_hex());
    assert!(body["previous"].is_null());

    let replaced = common::http("PUT", &url, b"second").await;
    assert_eq!(replaced.status, 200);
    assert_eq!(replaced.json()["previous"]["value"], "Ru1nnAfPu3Ya4v");

    let read = common::http("GET", &url, b"").await;
    assert_eq!(read.status, 200);
    assert_eq!(
        read.header("content-type").as_deref(),
        Some("application/json")
    );
    let body = read.json();
    assert_eq!(
        (body["key"].as_str(), body["value"].as_str()),
        (Some("1"), Some("second"))
    );
    assert_eq!(body["encoding"], "utf8");

    let raw = common::http("GET", &format!("{url}?raw=true"), b"").await;
    assert_eq!((raw.status, raw.body.as_slice()), (200, &b"second"[..]));
    assert_eq!(common::http("HEAD", &url, b"").await.status, 200);

    let deleted = common::http("DELETE", &url, b"").await;
    assert_eq!(
        (deleted.status, deleted.json()["value"].as_str()),
        (200, Some("second"))
    );
    let gone = common::http("GET", &url, b"").await;
    assert_eq!(gone.status, 404);
    assert_eq!(
        gone.header("content-type").as_deref(),
        Some("application/problem+json")
    );
    assert!(
        gone.json()["detail"]
            .as_str()
            .unwrap()
            .contains("not present")
    );
    assert_eq!(common::http("DELETE", &url, b"").await.status, 404);
    assert_eq!(common::http("HEAD", &url, b"").await.status, 404);
    cluster.shutdown().await;
}

#[tokio::test]
async fn rest_and_grpc_are_one_store_whichever_node_each_enters_by() {
    let cluster = common::cluster(3).await;
    let addrs = cluster.addrs();
    // REST on one node, gRPC on another.
    assert_eq!(
        common::http("PUT", &format!("{}/keys/shared", addrs[0]), b"via rest")
            .await
            .status,
        201
    );
    let mut grpc = common::connect(&addrs[2]).await;
    assert_eq!(
        common::get(&mut grpc, b"shared").await.value.as_deref(),
        Some(&b"via rest"[..])
    );
    // gRPC on one node, REST on another.
    common::set(&mut grpc, b"other", b"via grpc").await;
    let read = common::http("GET", &format!("{}/keys/other", addrs[1]), b"").await;
    assert_eq!(read.json()["value"], "via grpc");
    cluster.shutdown().await;
}

#[tokio::test]
async fn percent_encoded_keys_round_trip_as_the_bytes_meant() {
    let cluster = common::cluster(2).await;
    let addrs = cluster.addrs();
    let mut grpc = common::connect(&addrs[1]).await;
    let cases: [(&str, &[u8]); 5] = [
        ("a%2Fb", b"a/b"),
        ("a/b/c", b"a/b/c"),
        ("hello%20w%C3%B6rld", "hello wörld".as_bytes()),
        ("%E2%9C%93%3F%23", "✓?#".as_bytes()),
        ("%FF%00bin", b"\xff\x00bin"),
    ];
    for (segment, key) in cases {
        let url = format!("{}/keys/{segment}", addrs[0]);
        assert_eq!(
            common::http("PUT", &url, segment.as_bytes()).await.status,
            201,
            "{segment}"
        );
        let r = common::get(&mut grpc, key).await;
        assert_eq!(
            r.value.as_deref(),
            Some(segment.as_bytes()),
            "gRPC read of {segment}"
        );
        let read = common::http("GET", &url, b"").await.json();
        assert_eq!(read["position"], key_position(key).to_hex());
        let expected_encoding = if std::str::from_utf8(key).is_ok() {
            "utf8"
        } else {
            "base64"
        };
        assert_eq!(read["key_encoding"], expected_encoding, "{segment}");
    }
    // The non-UTF-8 value comes back as base64, and raw.
    common::set(&mut grpc, b"binary", &[0xff, 0x00, 0x10]).await;
    let read = common::http("GET", &format!("{}/keys/binary", addrs[0]), b"")
        .await
        .json();
    assert_eq!(
        (read["value"].as_str(), read["encoding"].as_str()),
        (Some("/wAQ"), Some("base64"))
    );
    let raw = common::http("GET", &format!("{}/keys/binary?raw=true", addrs[0]), b"").await;
    assert_eq!(raw.body, vec![0xff, 0x00, 0x10]);
    assert_eq!(
        raw.header("content-type").as_deref(),
        Some("application/octet-stream")
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn the_ring_lists_every_node_and_names_each_keys_owner() {
    let cluster = common::cluster(4).await;
    let addrs = cluster.addrs();
    let ring = common::http("GET", &format!("{}/ring", addrs[1]), b"")
        .await
        .json();
    let nodes = ring["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 4);
    let total: f64 = nodes.iter().map(|n| n["share"].as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-9, "shares sum to {total}");
    // The ring's balance: the largest share over the mean (a quarter).
    let largest = nodes
        .iter()
        .map(|n| n["share"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!((ring["mean_share"].as_f64().unwrap() - 0.25).abs() < 1e-9);
    let ratio = ring["largest_share_ratio"].as_f64().unwrap();
    assert!(
        (ratio - largest / 0.25).abs() < 1e-9,
        "{ratio} vs {largest}"
    );
    for (i, n) in nodes.iter().enumerate() {
        let id = u64::from_str_radix(n["id"].as_str().unwrap(), 16).unwrap();
        assert_eq!(n["id_decimal"], id.to_string());
        assert_eq!(n["arc"]["start"], n["id"]);
        assert_eq!(n["arc"]["end"], nodes[(i + 1) % 4]["id"]);
        assert_eq!(n["state"], "serving");
    }
    for key in ["1", "alpha", "ü/ber"] {
        let encoded = key.replace('/', "%2F").replace('ü', "%C3%BC");
        common::http("PUT", &format!("{}/keys/{encoded}", addrs[0]), b"v").await;
        let owner = common::http("GET", &format!("{}/ring/owner/{encoded}", addrs[2]), b"")
            .await
            .json();
        assert_eq!(owner["position"], key_position(key.as_bytes()).to_hex());
        // The named owner and replicas are the nodes that store the key (once
        // anti-entropy and stray sweeps have settled the ring's fresh joins).
        let mut named: Vec<String> = std::iter::once(&owner["owner"])
            .chain(owner["replicas"].as_array().unwrap())
            .map(|n| n["addr"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(named.len(), 3, "an owner and two replicas: {owner}");
        named.sort();
        common::eventually(
            Duration::from_secs(20),
            "the named nodes hold the key",
            || {
                let mut holders: Vec<String> = cluster
                    .nodes
                    .iter()
                    .filter(|n| {
                        n.local_entries()
                            .unwrap()
                            .iter()
                            .any(|e| e.key == key.as_bytes())
                    })
                    .map(|n| n.me().addr)
                    .collect();
                holders.sort();
                let result = if holders == named {
                    Ok(())
                } else {
                    Err(format!("{key} is held by {holders:?}, not {named:?}"))
                };
                async move { result }
            },
        )
        .await;
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn every_failure_is_problem_json_with_an_actionable_detail() {
    let config = NodeConfig {
        limits: Limits {
            max_key_bytes: 16,
            max_value_bytes: 64,
        },
        ..NodeConfig::default()
    };
    let cluster = common::cluster_with(1, config).await;
    let base = cluster.addrs()[0].clone();
    let cases: Vec<(&str, String, Vec<u8>, u16, &str)> = vec![
        (
            "GET",
            format!("{base}/keys/a%G1"),
            vec![],
            400,
            "percent-encoding",
        ),
        ("GET", format!("{base}/keys/"), vec![], 400, "key is empty"),
        (
            "GET",
            format!("{base}/keys/{}", "k".repeat(17)),
            vec![],
            400,
            "limit is 16 bytes",
        ),
        (
            "PUT",
            format!("{base}/keys/k"),
            vec![b'x'; 65],
            413,
            "limit of 64 bytes",
        ),
        (
            "PUT",
            format!("{base}/keys/k"),
            vec![b'x'; 100_000],
            413,
            "limit of 64 bytes",
        ),
        (
            "GET",
            format!("{base}/keys/k?raw=maybe"),
            vec![],
            400,
            "raw",
        ),
        (
            "GET",
            format!("{base}/keys/absent"),
            vec![],
            404,
            "not present",
        ),
        (
            "POST",
            format!("{base}/keys/k"),
            vec![],
            405,
            "allowed: GET,HEAD,PUT,DELETE",
        ),
        (
            "GET",
            format!("{base}/nowhere"),
            vec![],
            404,
            "/swagger-ui/",
        ),
    ];
    for (method, url, body, status, says) in cases {
        let answer = common::http(method, &url, &body).await;
        assert_eq!(answer.status, status, "{method} {url}");
        assert_eq!(
            answer.header("content-type").as_deref(),
            Some("application/problem+json"),
            "{url}"
        );
        let problem = answer.json();
        assert_eq!(problem["status"], status);
        assert_eq!(problem["type"], "about:blank");
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains(says),
            "{method} {url}: {detail:?} should say {says:?}"
        );
    }
    // Nothing was written by the refused requests.
    assert_eq!(cluster.nodes[0].key_count(), 0);
    cluster.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_owner_is_503_and_a_silent_one_504() {
    let common::SilentOwner {
        cluster,
        node,
        key,
        server,
    } = common::silent_owner().await;
    let url = format!("{}/keys/{key}", node.addr);
    let silent = common::http("GET", &url, b"").await;
    assert_eq!(silent.status, 504);
    assert!(
        silent.json()["detail"]
            .as_str()
            .unwrap()
            .contains("did not answer within")
    );
    server.stop().await;
    let dead = common::http("PUT", &url, b"v").await;
    assert_eq!(dead.status, 503, "{}", String::from_utf8_lossy(&dead.body));
    assert!(
        dead.json()["detail"]
            .as_str()
            .unwrap()
            .contains("unreachable")
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn browsers_on_other_origins_may_call_the_api() {
    let cluster = common::cluster(1).await;
    let url = format!("{}/keys/1", cluster.addrs()[0]);
    let preflight = common::http_with(
        "OPTIONS",
        &url,
        b"",
        &[
            ("origin", "http://elsewhere.test"),
            ("access-control-request-method", "PUT"),
        ],
    )
    .await;
    assert!(preflight.status < 300);
    assert_eq!(
        preflight.header("access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert!(
        preflight
            .header("access-control-allow-methods")
            .unwrap()
            .contains("PUT")
    );
    common::http("PUT", &url, b"v").await;
    let cross = common::http_with("GET", &url, b"", &[("origin", "http://elsewhere.test")]).await;
    assert_eq!(cross.status, 200);
    assert_eq!(
        cross.header("access-control-allow-origin").as_deref(),
        Some("*")
    );
    let exposed = cross.header("access-control-expose-headers").unwrap();
    for name in ["etag", "x-crusty-hops", "x-crusty-owner", "x-request-id"] {
        assert!(exposed.contains(name), "{name} not exposed: {exposed}");
    }
    // Without an Origin header (curl, load tools) no CORS headers are made,
    // but the answer says it would differ for a cross-origin request, so that
    // no cache hands it to one.
    let plain = common::http("GET", &url, b"").await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("access-control-allow-origin"), None);
    assert_eq!(plain.header("vary").as_deref(), Some("origin"));
    // The server calls the key's handler directly for the plain request,
    // and through the router (with its CORS layer) for the cross-origin one:
    // the answers differ by CORS alone.
    let headers = [
        "content-type",
        "etag",
        "x-crusty-hops",
        "x-crusty-owner",
        "x-crusty-owner-id",
    ];
    for name in headers {
        assert!(plain.header(name).is_some(), "{name} missing");
        assert_eq!(plain.header(name), cross.header(name), "{name}");
    }
    assert_eq!(plain.body, cross.body);
    cluster.shutdown().await;
}

#[tokio::test]
async fn the_served_openapi_document_is_the_checked_in_one() {
    let cluster = common::cluster(1).await;
    let served = common::http("GET", &format!("{}/openapi.json", cluster.addrs()[0]), b"").await;
    let checked_in =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json")).unwrap();
    assert!(
        served.body == checked_in,
        "openapi/openapi.json is stale: regenerate it with `cargo run -- openapi > openapi/openapi.json`"
    );
    let doc = served.json();
    assert_eq!(doc["openapi"], "3.1.0");
    for (path, methods) in [
        ("/keys/{key}", &["get", "put", "delete"][..]),
        ("/ring", &["get"][..]),
        ("/ring/owner/{key}", &["get"][..]),
        ("/keys", &["get"][..]),
        ("/batch", &["post"][..]),
    ] {
        for m in methods {
            let op = &doc["paths"][path][m];
            assert!(op.is_object(), "{m} {path} documented");
            for (code, response) in op["responses"].as_object().unwrap() {
                if code.starts_with('4') || code.starts_with('5') {
                    assert!(
                        response["content"]["application/problem+json"].is_object(),
                        "{m} {path} {code}"
                    );
                }
            }
        }
    }
    for (path, m) in [("/metrics", "get"), ("/healthz", "get"), ("/readyz", "get")] {
        assert!(doc["paths"][path][m].is_object(), "{m} {path} documented");
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn swagger_ui_and_the_page_are_served_from_the_binary() {
    let cluster = common::cluster(1).await;
    let base = cluster.addrs()[0].clone();
    let ui = common::http("GET", &format!("{base}/swagger-ui/"), b"").await;
    assert_eq!(ui.status, 200);
    assert!(String::from_utf8_lossy(&ui.body).contains("swagger-ui"));
    let init = common::http(
        "GET",
        &format!("{base}/swagger-ui/swagger-initializer.js"),
        b"",
    )
    .await;
    assert!(String::from_utf8_lossy(&init.body).contains("/openapi.json"));
    let bundle = common::http(
        "GET",
        &format!("{base}/swagger-ui/swagger-ui-bundle.js"),
        b"",
    )
    .await;
    assert_eq!(bundle.status, 200);
    assert!(bundle.body.len() > 100_000);

    let page = common::http("GET", &format!("{base}/"), b"").await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(String::from_utf8_lossy(&page.body).contains("id=\"ring\""));
    for (asset, kind) in [("app.js", "text/javascript"), ("style.css", "text/css")] {
        let a = common::http("GET", &format!("{base}/{asset}"), b"").await;
        assert_eq!(a.status, 200);
        assert!(a.header("content-type").unwrap().starts_with(kind));
    }
    cluster.shutdown().await;
}
