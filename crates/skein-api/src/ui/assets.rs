//! The UI's files, compiled into the binary with `include_bytes!` (cargo rebuilds when one
//! changes). Served under `/static/`; `index.html` for every page URL.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

macro_rules! asset {
    ($name:literal, $mime:literal) => {
        ($name, $mime, include_bytes!(concat!("../../../../ui/", $name)) as &[u8])
    };
}

/// (path under ui/, content type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("js/main.js", "text/javascript; charset=utf-8"),
    asset!("js/api.js", "text/javascript; charset=utf-8"),
    asset!("js/format.js", "text/javascript; charset=utf-8"),
    asset!("js/model.js", "text/javascript; charset=utf-8"),
    asset!("js/dom.js", "text/javascript; charset=utf-8"),
    asset!("js/search.js", "text/javascript; charset=utf-8"),
    asset!("js/trace.js", "text/javascript; charset=utf-8"),
    asset!("js/waterfall.js", "text/javascript; charset=utf-8"),
    asset!("js/flame.js", "text/javascript; charset=utf-8"),
    asset!("js/compare.js", "text/javascript; charset=utf-8"),
    asset!("js/map.js", "text/javascript; charset=utf-8"),
    asset!("js/graph.js", "text/javascript; charset=utf-8"),
    asset!("js/upload.js", "text/javascript; charset=utf-8"),
];

pub fn router() -> Router {
    Router::new()
        .route("/static/{*file}", get(static_file))
        .route("/favicon.ico", get(|| async { serve("favicon.svg") }))
}

async fn static_file(Path(file): Path<String>) -> Response {
    serve(&file)
}

fn serve(file: &str) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        // no-cache: the browser revalidates, so a new binary's UI is picked up at once.
        Some((_, mime, bytes)) => (
            [(header::CONTENT_TYPE, *mime), (header::CACHE_CONTROL, "no-cache")],
            *bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

/// The page's Content-Security-Policy: scripts, styles, images and API calls from skein
/// itself only, no plugins, no framing by other sites. Span data the UI shows can hold any
/// text; the UI escapes it, and this stops a script that slipped through from running or
/// calling out. Inline `style` attributes stay allowed (bars and swatches are sized with them).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'self'";

pub fn index() -> Response {
    let mut page = serve("index.html");
    let headers = page.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    // Trace ids in the page's URL stay on skein's own origin.
    headers.insert(header::REFERRER_POLICY, header::HeaderValue::from_static("same-origin"));
    page
}
