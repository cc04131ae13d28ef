//! One HTTP/1.1 request to a node's gateway, over plain TCP or, for an
//! `https://` address, TLS verified with the client's CA; with the client's
//! token. For what only the gateway offers (`POST /batch`).

use super::ClientError;
use crate::security::Credentials;
use axum::http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// How long connecting (and the TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends `request` to the node named in its URI: its status and body.
pub async fn send(
    mut request: Request<Full<Bytes>>,
    credentials: &Credentials,
) -> Result<(StatusCode, Bytes), ClientError> {
    let uri = request.uri().clone();
    let unreachable = |reason: String| ClientError::Unreachable {
        addr: uri.to_string(),
        reason,
    };
    let (host, port, tls) = parts(&uri).map_err(|reason| ClientError::BadAddress {
        addr: uri.to_string(),
        reason,
    })?;
    credentials.add_to(request.headers_mut());
    if let Some(authority) = uri.authority()
        && let Ok(value) = authority.as_str().parse()
    {
        request.headers_mut().insert(header::HOST, value);
    }
    // HTTP/1.1 over a connection of its own: the path alone goes on the
    // request line.
    *request.uri_mut() = uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|e: axum::http::uri::InvalidUri| unreachable(e.to_string()))?;
    let connecting = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        tcp.set_nodelay(true)?;
        Ok::<_, std::io::Error>(tcp)
    };
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| unreachable("no connection in time".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    if !tls {
        return exchange(tcp, request).await.map_err(unreachable);
    }
    let connector = credentials
        .tls()
        .connector()
        .ok_or_else(|| ClientError::BadAddress {
            addr: uri.to_string(),
            reason:
                "an https address, and no CA certificate was given to verify it with (--tls-ca)"
                    .into(),
        })?;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| unreachable(e.to_string()))?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| unreachable("no TLS handshake in time".into()))?
        .map_err(|e| unreachable(format!("TLS: {e}")))?;
    exchange(stream, request).await.map_err(unreachable)
}

/// Host, port and whether TLS is wanted, from a node's URL.
fn parts(uri: &Uri) -> Result<(String, u16, bool), String> {
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        other => return Err(format!("expected http:// or https://, not {other:?}")),
    };
    let host = uri.host().ok_or("no host")?;
    // An IPv6 literal comes bracketed.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok((host, port, tls))
}

async fn exchange<S>(
    stream: S,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let causes = |e: hyper::Error| super::batch::causes(&e);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(causes)?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(causes)?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(causes)?
        .to_bytes();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_url_gives_host_port_and_scheme() {
        let p = |s: &str| parts(&s.parse().unwrap());
        assert_eq!(
            p("http://127.0.0.1:50001/batch"),
            Ok(("127.0.0.1".into(), 50001, false))
        );
        assert_eq!(p("https://node1/batch"), Ok(("node1".into(), 443, true)));
        assert_eq!(p("https://[::1]:5/batch"), Ok(("::1".into(), 5, true)));
        assert!(p("ftp://a/batch").is_err());
    }
}
