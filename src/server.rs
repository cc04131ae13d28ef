//! Serving a router on a listener until a shutdown future resolves, and the gRPC
//! services every process adds (reflection v1 and v1alpha).

use axum::serve::ListenerExt;
use std::future::Future;
use tokio::net::TcpListener;

/// Serves `router` (gRPC over HTTP/2, REST over HTTP/1.1 or h2) on `listener` until
/// `shutdown` resolves; in-flight requests finish first. Every request first
/// passes the gate for `required` ([`crate::security::gate`]).
///
/// Every accepted connection gets `TCP_NODELAY`: an HTTP/2 answer goes out as
/// several small frames (a gRPC reply: headers, data, trailers), and with
/// Nagle's algorithm a small frame written after another waits for the peer's
/// delayed acknowledgement, up to 40 ms. `axum::serve` leaves the option off.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    required: crate::security::Required,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on a connection");
        }
    });
    axum::serve(listener, crate::security::gate::guard(router, required))
        .with_graceful_shutdown(shutdown)
        .await
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
