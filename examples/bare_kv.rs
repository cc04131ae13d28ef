//! The yardstick for the HTTP gateway's speed: a bare axum server answering
//! `GET /keys/{key}` from a hash map (and `PUT` into it), with nothing of Crusty
//! Ring in the way. `bench/http_get.sh` measures the gateway against it.
//!
//! `cargo run --release --example bare_kv -- 24100`

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::serve::ListenerExt;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

type Map = Arc<RwLock<HashMap<String, Bytes>>>;

async fn read(State(map): State<Map>, Path(key): Path<String>) -> Result<Bytes, StatusCode> {
    let map = map.read().unwrap_or_else(|e| e.into_inner());
    map.get(&key).cloned().ok_or(StatusCode::NOT_FOUND)
}

async fn write(State(map): State<Map>, Path(key): Path<String>, value: Bytes) -> StatusCode {
    map.write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, value);
    StatusCode::CREATED
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(24100);
    let app = Router::new()
        .route("/keys/{*key}", get(read).put(write))
        .with_state(Map::default());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    println!("bare key-value server listening on http://127.0.0.1:{port}");
    axum::serve(listener, app).await
}
