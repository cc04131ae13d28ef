//! Real-browser tests: headless Chromium (Debian's) driven by playwright-core
//! (`tests/browser/`). `.ci/run` installs both; elsewhere, without them, these
//! tests say so and skip, unless `CI` is set, when they fail.

mod common;

use std::path::Path;
use std::process::Command;

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

fn run_node(script: &str, args: &[&str]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let out = Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .output()
        .expect("node runs");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{log}");
    assert!(out.status.success(), "{script} failed:\n{log}");
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
    let script = tokio::task::spawn_blocking(move || run_node("page.mjs", &[&base, &joined]));
    script.await.unwrap();
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
    tokio::task::spawn_blocking(move || run_node("swagger.mjs", &[&base]))
        .await
        .unwrap();
    cluster.shutdown().await;
}
