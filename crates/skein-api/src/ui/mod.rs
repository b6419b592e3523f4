//! The web UI, embedded in the binary and served on the query port.
//!
//! `assets` holds the files of `ui/` at the repository root (plain HTML/CSS/ES modules, no
//! build step); `api` adds the UI's own endpoints under `/api/ui/` where Jaeger's shapes are
//! too slow (100,000-span traces) or too thin (search rows with counts, service-map stats).
//! Every other non-API GET path returns the single page, which routes on the client, so
//! Jaeger's URLs (`/trace/{id}`, `/search?…`) open the right view.

pub(crate) mod api;
mod assets;

use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use skein_query::QueryEngine;

pub fn router(engine: QueryEngine) -> Router {
    Router::new().merge(api::router(engine)).merge(assets::router())
}

/// The query port's fallback: the single page for GET/HEAD of non-API paths (405 for other
/// methods), 404 under `/api/` and `/static/`.
pub async fn fallback(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    let is_api = path == "/api" || path.starts_with("/api/") || path.starts_with("/static/");
    if is_api {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    if method == Method::GET || method == Method::HEAD {
        return assets::index();
    }
    // A page exists at every other path, for reading only.
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(axum::http::header::ALLOW, "GET,HEAD")],
    )
        .into_response()
}
