//! `POST /batch`: several operations in one request, each answered on its own,
//! sent to each owner in one call.

use crate::common;

use common::http;
use serde_json::{Value, json};
use std::collections::BTreeSet;

async fn batch(addr: &str, body: Value) -> common::HttpAnswer {
    http(
        "POST",
        &format!("{addr}/batch"),
        body.to_string().as_bytes(),
    )
    .await
}

fn metric(text: &[u8], series: &str) -> f64 {
    String::from_utf8_lossy(text)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_goes_to_each_owner_in_one_call_and_answers_each_operation() {
    let cluster = common::cluster(3).await;
    let addrs = cluster.addrs();
    common::await_routing_tables(&addrs).await;
    let entry = &addrs[0];
    let keys: Vec<String> = (0..30).map(|i| format!("b/{i}")).collect();
    let mut owners = BTreeSet::new();
    for k in &keys {
        let owner = http("GET", &format!("{entry}/ring/owner/{k}"), b"")
            .await
            .json();
        owners.insert(owner["owner"]["addr"].as_str().unwrap().to_string());
    }
    owners.remove(entry);
    let before = http("GET", &format!("{entry}/metrics"), b"").await.body;

    let puts: Vec<Value> = keys
        .iter()
        .map(|k| json!({"op": "put", "key": k, "value": k}))
        .collect();
    let answer = batch(entry, json!({ "ops": puts })).await;
    assert_eq!(answer.status, 200);
    let results = answer.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 30);
    assert!(
        results
            .iter()
            .all(|r| r["status"] == 201 && r["version"].is_string())
    );
    assert!(results.iter().all(|r| r["hops"].as_u64().unwrap() <= 1));

    let after = http("GET", &format!("{entry}/metrics"), b"").await.body;
    let calls = metric(&after, "crustyring_batch_calls_total")
        - metric(&before, "crustyring_batch_calls_total");
    assert_eq!(calls, owners.len() as f64, "one call per other owner");
    let forwards =
        metric(&after, "crustyring_forwards_total") - metric(&before, "crustyring_forwards_total");
    assert_eq!(forwards, 0.0, "no query forwarded on its own");

    let mixed = json!({ "ops": [
        {"op": "get", "key": "b/0"},
        {"op": "get", "key": "nothing"},
        {"op": "delete", "key": "b/1"},
        {"op": "put", "key": "b/2", "value": "x", "if_absent": true},
        {"op": "put", "key": "/wA=", "key_encoding": "base64", "value": "/wA=", "encoding": "base64", "ttl": "1h"},
        {"op": "put", "key": "bad", "value": "!!", "encoding": "base64"},
        {"op": "put", "key": "novalue"},
        {"op": "get", "key": ""},
    ]});
    let results = batch(&addrs[1], mixed).await.json()["results"]
        .as_array()
        .unwrap()
        .clone();
    let status: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(status, [200, 404, 200, 412, 201, 400, 400, 400]);
    assert_eq!(results[0]["value"], "b/0");
    assert_eq!(results[2]["value"], "b/1", "what the delete removed");
    assert!(results[5]["detail"].as_str().unwrap().contains("base64"));
    let raw = http("GET", &format!("{entry}/keys/%FF%00?raw=true"), b"").await;
    assert!(raw.header("x-crusty-ttl-ms").is_some());
    assert_eq!(
        (raw.status, raw.body),
        (200, vec![0xff, 0x00]),
        "bytes in and out"
    );
    assert_eq!(
        http("GET", &format!("{entry}/keys/b/1"), b"").await.status,
        404
    );
    // A refused operation before valid ones leaves their answers in place.
    let refused_first = json!({ "ops": [
        {"op": "put", "key": "no-value"},
        {"op": "get", "key": "b/3"},
        {"op": "get", "key": "b/4"},
    ]});
    let results = batch(entry, refused_first).await.json()["results"]
        .as_array()
        .unwrap()
        .clone();
    let status: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(status, [400, 200, 200]);
    assert_eq!(
        (&results[1]["value"], &results[2]["value"]),
        (&json!("b/3"), &json!("b/4"))
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_no_batch_is_refused() {
    let cluster = common::cluster(1).await;
    let node = &cluster.addrs()[0];
    let too_many: Vec<Value> = (0..1001)
        .map(|i| json!({"op": "get", "key": i.to_string()}))
        .collect();
    for body in [
        json!({"ops": []}),
        json!({ "ops": too_many }),
        json!({"ops": [{"op": "get", "key": "a", "color": "red"}]}),
        json!({"ops": [{"op": "fly", "key": "a"}]}),
        json!({"nope": 1}),
    ] {
        let answer = batch(node, body).await;
        assert_eq!(answer.status, 400);
        assert!(answer.json()["detail"].is_string());
    }
    assert_eq!(
        http("POST", &format!("{node}/batch"), b"not json")
            .await
            .status,
        400
    );
    assert_eq!(http("GET", &format!("{node}/batch"), b"").await.status, 405);
    cluster.shutdown().await;
}

/// `crustyring batch` against a real ring: exit status, stdout and stderr.
fn crustyring_batch(node: &str, args: &[&str], stdin: &str) -> (Option<i32>, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_crustyring"))
        .arg("batch")
        .args(args)
        .args(["--node", node])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_command_prints_each_answer_and_fails_when_one_does() {
    let cluster = common::cluster(3).await;
    let node = cluster.addrs()[1].clone();
    // The arguments, `|`-separated.
    let run = |args: &'static str, stdin: &'static str| {
        let node = node.clone();
        let args: Vec<&str> = args.split('|').collect();
        tokio::task::spawn_blocking(move || crustyring_batch(&node, &args, stdin))
    };
    let lines = |out: &str| out.lines().map(str::to_string).collect::<Vec<_>>();

    let (code, out, err) = run("put|a key|two words = one|put|n|-1|ttl=1h", "")
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        lines(&out),
        [r#"put "a key": created"#, r#"put "n": created"#]
    );
    let n = http("GET", &format!("{node}/keys/n"), b"").await;
    assert!(n.header("x-crusty-ttl-ms").is_some(), "ttl=1h applied");
    let version = |answer: &common::HttpAnswer| answer.header("etag").unwrap().replace('"', "");
    let a_key = http("GET", &format!("{node}/keys/a%20key"), b"").await;
    let (a_key, n) = (version(&a_key), version(&n));

    // A missing key and a failed condition fail the command; every answer is
    // printed, in order.
    let (code, out, err) = run(
        "get|a key|get|nothing|put|n|2|if-absent|get|n|--with-version",
        "",
    )
    .await
    .unwrap();
    assert_eq!(code, Some(1), "{out}{err}");
    let got = lines(&out);
    assert_eq!(got.len(), 4, "{out}");
    assert_eq!(
        got[0],
        format!(r#"get "a key": "two words = one" (version {a_key})"#)
    );
    assert_eq!(got[1], r#"get "nothing": not found"#);
    assert!(
        got[2].starts_with(
            r#"put "n": failed, 412 Precondition Failed: the condition does not hold"#
        ),
        "{out}"
    );
    assert_eq!(got[3], format!(r#"get "n": "-1" (version {n})"#));
    assert!(err.contains("2 of 4 operations failed"), "{err}");

    // A bad operation is a usage error, and nothing is sent.
    let (code, out, err) = run("put|fresh|1|fly|away", "").await.unwrap();
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(out.is_empty());
    assert!(
        err.contains("operation 2: `fly` is not an operation; write get KEY"),
        "{err}"
    );
    let (code, _, err) = run("get|n|ttl=1h", "").await.unwrap();
    assert_eq!(code, Some(2));
    assert!(err.contains("a time to live applies to put only"), "{err}");
    assert_eq!(
        http("GET", &format!("{node}/keys/fresh"), b"").await.status,
        404
    );

    // A POST /batch body on standard input, bytes included.
    let body = r#"{"ops": [{"op": "delete", "key": "a key"},
        {"op": "put", "key": "/wA=", "key_encoding": "base64", "value": "/w==", "encoding": "base64"}]}"#;
    let (code, out, err) = run("--json|-", body).await.unwrap();
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        lines(&out),
        [
            r#"delete "a key": deleted (was "two words = one")"#,
            "put 0xff00: created"
        ]
    );
    let raw = http("GET", &format!("{node}/keys/%FF%00?raw=true"), b"").await;
    assert_eq!(raw.body, [0xff]);
    let (code, out, _) = run("get|/wA=|--json|-", "").await.unwrap();
    assert_eq!(
        (code, out.as_str()),
        (Some(2), ""),
        "ops or --json, not both"
    );
    let (code, _, err) = run("--json|-", r#"{"ops": [{"op": "fly"}]}"#)
        .await
        .unwrap();
    assert_eq!(code, Some(2));
    assert!(
        err.contains("standard input: not a batch: unknown variant `fly`"),
        "{err}"
    );
    // A batch the node refuses as a whole (no operations): its reason.
    let (code, _, err) = run("--json|-", r#"{"ops": []}"#).await.unwrap();
    assert_eq!(code, Some(1));
    assert!(
        err.contains("the node answered 400: bad batch: 0 operations"),
        "{err}"
    );
    cluster.shutdown().await;
}
