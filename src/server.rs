//! Serving a router on a listener until a shutdown future resolves, in
//! plaintext or TLS, and the gRPC services every process adds (reflection v1
//! and v1alpha).

use crate::security::{Required, Tls, gate};
use axum::serve::ListenerExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long a connection may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` (gRPC over HTTP/2, REST over HTTP/1.1 or h2) on `listener` until
/// `shutdown` resolves; in-flight requests finish first. Every request first
/// passes the gate for `required` ([`crate::security::gate`]); with a
/// certificate in `tls`, connections are TLS only.
///
/// Every accepted connection gets `TCP_NODELAY`: an HTTP/2 answer goes out as
/// several small frames (a gRPC reply: headers, data, trailers), and with
/// Nagle's algorithm a small frame written after another waits for the peer's
/// delayed acknowledgement, up to 40 ms. `axum::serve` leaves the option off.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    required: Required,
    tls: Tls,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = gate::guard(router, required);
    if let Some(acceptor) = tls.acceptor() {
        return serve_tls(listener, router, acceptor, shutdown).await;
    }
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on a connection");
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// [`serve`] over TLS. Each connection's handshake runs in its own task (so a
/// client that stalls mid-handshake holds up no one, and gives up after
/// [`HANDSHAKE_TIMEOUT`]); a connection that does not speak TLS fails its
/// handshake and is closed.
async fn serve_tls(
    listener: TcpListener,
    router: axum::Router,
    acceptor: tokio_rustls::TlsAcceptor,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on a connection");
        }
        let (acceptor, builder, watcher) = (acceptor.clone(), builder.clone(), graceful.watcher());
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Adds server reflection, v1 and v1alpha (Postman long spoke only the latter),
/// describing every Crusty Ring proto, to `routes`.
pub fn with_reflection(routes: tonic::service::Routes) -> tonic::service::Routes {
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1();
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha();
    match (v1, v1alpha) {
        (Ok(v1), Ok(v1alpha)) => routes.add_service(v1).add_service(v1alpha),
        (v1, v1alpha) => {
            // The descriptor sets are compiled into the binary; failing to read
            // them is a build defect, reported rather than served half-way.
            tracing::error!(v1 = ?v1.err(), v1alpha = ?v1alpha.err(), "reflection unavailable");
            routes
        }
    }
}
