//! The static web page (from `web/`, embedded in the binary) and the OpenAPI
//! document it and Swagger UI read.

use axum::http::header;
use axum::response::{Html, IntoResponse};
use std::sync::OnceLock;
use utoipa::OpenApi;

/// `GET /`: the page.
pub async fn index() -> Html<&'static str> {
    Html(include_str!("../../web/index.html"))
}

/// `GET /style.css`.
pub async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../web/style.css"),
    )
}

/// `GET /app.js`.
pub async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../web/app.js"),
    )
}

/// The OpenAPI document as served and as checked in at `openapi/openapi.json`:
/// pretty JSON with a final newline.
pub fn openapi_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = super::ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        doc.push('\n');
        doc
    })
}

/// `GET /openapi.json`.
pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json())
}
