//! Real-browser tests: headless Chromium (Debian's) driven by playwright-core
//! (`tests/browser/`). `.ci/run` installs both; elsewhere, without them, these
//! tests say so and skip, unless `CI` is set, when they fail.

use crate::common;

use crustyring::node::NodeConfig;
use crustyring::security::{Required, Secret};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};

/// Whether the browser tooling is installed; panics in CI when it is not.
fn browser_available() -> bool {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let ready = dir.join("node_modules/playwright-core").is_dir() && Path::new(&chromium).exists();
    if !ready {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the browser tests: install chromium and `npm ci --prefix tests/browser`"
        );
        eprintln!("SKIPPED: browser tests need Chromium and `npm ci --prefix tests/browser`");
    }
    ready
}

/// Runs `script` with node, handing each line it prints to `ask` as it comes
/// (a scenario asks the test for what it cannot do from the browser), and
/// fails with its whole output if it fails.
async fn run_node(script: &str, args: &[&str], mut ask: impl AsyncFnMut(&str)) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let mut child = Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut log = String::new();
    while let Some(line) = lines.recv().await {
        println!("{line}");
        ask(&line).await;
        log.push_str(&line);
        log.push('\n');
    }
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .expect("node exits");
    log.push_str(&errors.join().unwrap());
    assert!(status.success(), "{script} failed:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_puts_and_gets_a_key_and_draws_every_node() {
    if !browser_available() {
        return;
    }
    let cluster = common::cluster(4).await;
    let base = cluster.addrs()[1].clone();
    let ids: Vec<String> = cluster.nodes.iter().map(|n| n.me().id.to_hex()).collect();
    let joined = ids.join(",");
    run_node("page.mjs", &[&base, &joined], async |_| {}).await;
    // The browser's write went through the same store gRPC reads.
    assert_eq!(
        cluster.nodes.iter().map(|n| n.key_count()).sum::<usize>(),
        0,
        "deleted at the end"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_renders_every_operation_and_try_it_out_works() {
    if !browser_available() {
        return;
    }
    let cluster = common::cluster(2).await;
    let base = cluster.addrs()[0].clone();
    run_node("swagger.mjs", &[&base], async |_| {}).await;
    cluster.shutdown().await;
}

const CLIENT_TOKEN: &str = "client-token-for-t75";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_asks_for_the_client_token_and_then_works_with_it() {
    if !browser_available() {
        return;
    }
    let config = NodeConfig {
        security: Required {
            cluster_secret: None,
            client_token: Some(Secret::new("client token", CLIENT_TOKEN).unwrap()),
        },
        ..NodeConfig::default()
    };
    let cluster = common::cluster_with(3, config).await;
    let addrs = cluster.addrs();
    let ids: Vec<String> = cluster.nodes.iter().map(|n| n.me().id.to_hex()).collect();
    let auth = format!("Bearer {CLIENT_TOKEN}");
    // The scenario's `ask put KEY VALUE`: a write through another node than
    // the page's, for its watch to show.
    let put_elsewhere = async |line: &str| {
        let Some((key, value)) = line
            .strip_prefix("ask put ")
            .and_then(|l| l.split_once(' '))
        else {
            return;
        };
        let url = format!("{}/keys/{key}", addrs[2]);
        let put =
            common::http_with("PUT", &url, value.as_bytes(), &[("authorization", &auth)]).await;
        assert_eq!(put.status, 200, "{}", String::from_utf8_lossy(&put.body));
    };
    run_node(
        "token.mjs",
        &[&addrs[0], &ids.join(","), CLIENT_TOKEN],
        put_elsewhere,
    )
    .await;
    assert_eq!(
        cluster.nodes.iter().map(|n| n.key_count()).sum::<usize>(),
        0,
        "deleted at the end"
    );
    cluster.shutdown().await;
}
