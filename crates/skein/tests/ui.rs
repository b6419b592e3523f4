//! The web UI end to end: the real server holding real data (sent over OTLP/HTTP), driven in
//! headless Chromium (Debian's `chromium`) by `playwright-core` from tests/node/ui_e2e.mjs:
//! search → open a trace → collapse/expand → span detail → links → compare → odd links and names
//! (broken encodings, unknown filters, bidi overrides, a 16 KB name, a 50-deep chain) → service map (the
//! demo-like graph, then a dense 40-service graph with cycles that the script sends itself, see
//! tests/node/ui_graph.mjs) → upload → a 100,000-span trace. The pure JS logic (tree, critical path, diff, file parsing)
//! is unit-tested by tests/node/ui_unit.mjs under node. Screenshots land in
//! target/ui-screenshots/.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{eventually, Server};
use serde_json::{json, Value};

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

const MS: u64 = 1_000_000;

/// Fixed ids so the browser script knows what to look for.
const CHECKOUT: &str = "0af7651916cd43dd8448eb211c80319c";
const CHECKOUT_SLOW: &str = "1bf7651916cd43dd8448eb211c80319d";
const PRODUCT_ERROR: &str = "2cf7651916cd43dd8448eb211c80319e";
const BIG: &str = "3df7651916cd43dd8448eb211c8031af";
const FILE_TRACE: &str = "4ef7651916cd43dd8448eb211c8031b0";
const BIG_SPANS: usize = 100_000;
const DEEP: &str = "6af7651916cd43dd8448eb211c8031c1";
const DEEP_SPANS: u64 = 50;
const ODD: &str = "7bf7651916cd43dd8448eb211c8031d2";
/// A right-to-left override at the end of a service name: unisolated, it reverses what follows.
const BIDI_SERVICE: &str = "bidi\u{202e}";

fn attr(key: &str, v: Value) -> Value {
    let value = match v {
        Value::String(s) => json!({ "stringValue": s }),
        Value::Bool(b) => json!({ "boolValue": b }),
        Value::Number(n) if n.is_i64() => json!({ "intValue": n.to_string() }),
        Value::Number(n) => json!({ "doubleValue": n }),
        other => json!({ "stringValue": other.to_string() }),
    };
    json!({ "key": key, "value": value })
}

struct SpanSpec<'a> {
    service: &'a str,
    id: String,
    parent: Option<String>,
    name: &'a str,
    kind: i32,
    start: u64,
    end: u64,
    attrs: Vec<Value>,
    error: Option<&'a str>,
    events: Vec<Value>,
    links: Vec<Value>,
}

impl<'a> SpanSpec<'a> {
    /// A span without attributes, error, events or links.
    fn plain(
        service: &'a str,
        id: String,
        parent: Option<String>,
        name: &'a str,
        kind: i32,
        start: u64,
        end: u64,
    ) -> Self {
        SpanSpec {
            service,
            id,
            parent,
            name,
            kind,
            start,
            end,
            attrs: vec![],
            error: None,
            events: vec![],
            links: vec![],
        }
    }
}

fn span_json(trace: &str, s: &SpanSpec) -> Value {
    let mut v = json!({
        "traceId": trace, "spanId": s.id, "name": s.name, "kind": s.kind,
        "startTimeUnixNano": s.start.to_string(), "endTimeUnixNano": s.end.to_string(),
        "attributes": s.attrs, "events": s.events, "links": s.links,
        "status": match s.error { Some(m) => json!({ "code": 2, "message": m }), None => json!({ "code": 0 }) },
    });
    if let Some(p) = &s.parent {
        v["parentSpanId"] = json!(p);
    }
    v
}

/// OTLP JSON with one resource per service.
fn otlp(trace: &str, spans: &[SpanSpec]) -> Value {
    let mut services: Vec<&str> = spans.iter().map(|s| s.service).collect();
    services.sort();
    services.dedup();
    let resource_spans: Vec<Value> = services
        .iter()
        .map(|svc| {
            let mine: Vec<Value> = spans.iter().filter(|s| s.service == *svc).map(|s| span_json(trace, s)).collect();
            json!({
                "resource": { "attributes": [attr("service.name", json!(svc)), attr("host.name", json!("ui-test-host"))] },
                "scopeSpans": [{ "scope": { "name": "skein-ui-test", "version": "1.0" }, "spans": mine }]
            })
        })
        .collect();
    json!({ "resourceSpans": resource_spans })
}

fn sid(n: u64) -> String {
    format!("{:016x}", 0x1000_0000_0000_0000u64 + n)
}

/// A checkout: frontend → cart (→ redis), checkout → payment (→ db), shipping, and
/// recommendations in parallel; `payment_ms`
/// sets how slow the payment is; a link points at the product-error trace.
fn checkout(trace: &str, t0: u64, payment_ms: u64, fail: bool) -> Vec<SpanSpec<'static>> {
    let base: u64 = if trace == CHECKOUT { 0 } else { 100 };
    let id = |n: u64| sid(base + n);
    let pay_end = t0 + 60 * MS + payment_ms * MS;
    let end = pay_end + 25 * MS;
    let mk = |service, n, parent: Option<u64>, name, kind, start, end| {
        SpanSpec::plain(service, id(n), parent.map(id), name, kind, start, end)
    };
    let mut root = mk("frontend", 1, None, "GET /checkout", 2, t0, end + 5 * MS);
    root.attrs = vec![
        attr("http.request.method", json!("GET")),
        attr("http.route", json!("/checkout")),
        attr("http.response.status_code", json!(if fail { 502 } else { 200 })),
    ];
    let mut cart_client = mk("frontend", 2, Some(1), "GetCart", 3, t0 + MS, t0 + 30 * MS);
    cart_client.attrs = vec![attr("rpc.system", json!("grpc"))];
    let cart_server = mk(
        "cart-service",
        3,
        Some(2),
        "CartService/GetCart",
        2,
        t0 + 2 * MS,
        t0 + 29 * MS,
    );
    let mut redis = mk("cart-service", 4, Some(3), "redis GET", 3, t0 + 4 * MS, t0 + 12 * MS);
    redis.attrs = vec![
        attr("db.system", json!("redis")),
        attr("db.statement", json!("GET cart:42")),
    ];
    let place = mk("checkout-service", 5, Some(1), "PlaceOrder", 2, t0 + 32 * MS, end);
    let mut charge = mk("payment-service", 6, Some(5), "Charge", 2, t0 + 40 * MS, pay_end);
    charge.attrs = vec![
        attr("payment.amount", json!(42.5)),
        attr("payment.currency", json!("EUR")),
        attr("retry", json!(false)),
    ];
    charge.links = vec![
        json!({ "traceId": PRODUCT_ERROR, "spanId": sid(201), "attributes": [attr("link.reason", json!("same customer"))] }),
    ];
    if fail {
        charge.error = Some("card declined");
        charge.events = vec![
            json!({ "timeUnixNano": (pay_end - MS).to_string(), "name": "exception", "attributes": [attr("exception.type", json!("CardDeclined")), attr("exception.message", json!("card declined by issuer"))] }),
        ];
    }
    let mut insert = mk(
        "payment-service",
        7,
        Some(6),
        "INSERT payments",
        3,
        t0 + 45 * MS,
        t0 + 55 * MS,
    );
    insert.attrs = vec![
        attr("db.system", json!("postgresql")),
        attr("db.statement", json!("INSERT INTO payments VALUES ($1, $2)")),
    ];
    let shipping = mk(
        "shipping-service",
        8,
        Some(5),
        "Quote",
        2,
        pay_end + 2 * MS,
        pay_end + 20 * MS,
    );
    // in parallel with PlaceOrder and done before it: off the critical path
    let recommend = mk(
        "recommendation-service",
        9,
        Some(1),
        "ListRecommendations",
        2,
        t0 + 33 * MS,
        t0 + 50 * MS,
    );
    vec![
        root,
        cart_client,
        cart_server,
        redis,
        place,
        charge,
        insert,
        shipping,
        recommend,
    ]
}

fn product_error(t0: u64) -> Vec<SpanSpec<'static>> {
    let root = SpanSpec {
        service: "frontend",
        id: sid(200),
        parent: None,
        name: "GET /product/{id}",
        kind: 2,
        start: t0,
        end: t0 + 80 * MS,
        attrs: vec![
            attr("http.response.status_code", json!(500)),
            attr("http.route", json!("/product/{id}")),
        ],
        error: Some("upstream failed"),
        events: vec![],
        links: vec![],
    };
    let catalog = SpanSpec {
        service: "catalog-service",
        id: sid(201),
        parent: Some(sid(200)),
        name: "GetProduct",
        kind: 2,
        start: t0 + 5 * MS,
        end: t0 + 75 * MS,
        attrs: vec![attr("product.id", json!("OLJCESPC7Z"))],
        error: Some("product not found"),
        events: vec![
            json!({ "timeUnixNano": (t0 + 70 * MS).to_string(), "name": "exception", "attributes": [attr("exception.type", json!("NotFound"))] }),
        ],
        links: vec![],
    };
    vec![root, catalog]
}

/// A chain of `DEEP_SPANS` spans, each the parent of the next: names must stay readable at
/// every depth of the waterfall.
fn deep_chain(t0: u64) -> Value {
    let names: Vec<String> = (0..DEEP_SPANS).map(|k| format!("level-{k}")).collect();
    let spans: Vec<SpanSpec> = (0..DEEP_SPANS)
        .map(|k| {
            let parent = (k > 0).then(|| sid(400 + k - 1));
            let (start, end) = (t0 + k * MS, t0 + (200 - k) * MS);
            SpanSpec::plain("deep-service", sid(400 + k), parent, &names[k as usize], 1, start, end)
        })
        .collect();
    otlp(DEEP, &spans)
}

/// Names and counts a UI must not trip on: a service ending in a right-to-left override (root
/// "gnp.exe"), a service named "..", and a span with a 16 KB name whose sender dropped
/// attributes, events, links and resource attributes.
fn odd_names(t0: u64) -> (Value, String) {
    let long_name = format!(
        "SELECT {} FROM wide_table",
        (0..2100).map(|k| format!("c{k}")).collect::<Vec<_>>().join(", ")
    );
    let spec = |service, n, parent: Option<u64>, name, start, end| {
        SpanSpec::plain(service, sid(n), parent.map(sid), name, 2, start, end)
    };
    let root = spec(BIDI_SERVICE, 500, None, "gnp.exe", t0, t0 + 40 * MS);
    let dots = spec("..", 501, Some(500), "dot-op", t0 + MS, t0 + 10 * MS);
    let mut long = spec(BIDI_SERVICE, 502, Some(500), &long_name, t0 + 12 * MS, t0 + 30 * MS);
    long.attrs = vec![attr("db.system", json!("postgresql"))];
    long.events = vec![json!({
        "timeUnixNano": (t0 + 20 * MS).to_string(), "name": "retry",
        "attributes": [attr("attempt", json!(2))], "droppedAttributesCount": 2,
    })];
    let mut doc = otlp(ODD, &[root, dots, long]);
    for rs in doc["resourceSpans"].as_array_mut().unwrap() {
        if rs["resource"]["attributes"][0]["value"]["stringValue"] == BIDI_SERVICE {
            rs["resource"]["droppedAttributesCount"] = json!(5);
        }
        for span in rs["scopeSpans"][0]["spans"].as_array_mut().unwrap() {
            if span["spanId"] == sid(502) {
                span["droppedAttributesCount"] = json!(172);
                span["droppedEventsCount"] = json!(3);
                span["droppedLinksCount"] = json!(2);
            }
        }
    }
    (doc, long_name)
}

/// A 100,000-span trace: a root, then a fan-out of 10 per level over eight services, with
/// durations shrinking by depth so it looks like real RPC trees.
fn big_trace(t0: u64) -> Vec<Value> {
    const SERVICES: [&str; 8] = [
        "gateway",
        "orders",
        "inventory",
        "pricing",
        "search",
        "users",
        "ledger",
        "notify",
    ];
    let mut parents: Vec<(u64, u64, u64)> = vec![]; // (index, start, end)
    let mut spans: Vec<(String, Value)> = Vec::with_capacity(BIG_SPANS);
    let mut push = |n: u64, parent: Option<u64>, start: u64, end: u64, depth: u64| {
        let service = SERVICES[(n as usize * 7 + depth as usize) % SERVICES.len()];
        let mut v = json!({
            "traceId": BIG, "spanId": format!("{:016x}", 0x2000_0000_0000_0000u64 + n),
            "name": format!("op-{}-{}", depth, n % 13), "kind": if depth == 0 { 2 } else { 3 },
            "startTimeUnixNano": start.to_string(), "endTimeUnixNano": end.to_string(),
            "attributes": [attr("item.index", json!(n))],
            "status": if n.is_multiple_of(997) { json!({ "code": 2, "message": "boom" }) } else { json!({}) },
        });
        if let Some(p) = parent {
            v["parentSpanId"] = json!(format!("{:016x}", 0x2000_0000_0000_0000u64 + p));
        }
        spans.push((service.to_string(), v));
    };
    push(0, None, t0, t0 + 900 * MS, 0);
    parents.push((0, t0, t0 + 900 * MS));
    let mut n = 1u64;
    let mut depth = 1;
    while (n as usize) < BIG_SPANS {
        let mut next = vec![];
        for &(p, ps, pe) in &parents {
            let slot = (pe - ps) / 11;
            for k in 0..10u64 {
                if n as usize >= BIG_SPANS {
                    break;
                }
                let s = ps + slot / 2 + k * slot;
                let e = s + slot * (5 + (n % 6)) / 10;
                push(n, Some(p), s, e, depth);
                next.push((n, s, e));
                n += 1;
            }
        }
        parents = next;
        depth += 1;
    }
    // one request per 10,000 spans, one resource per service inside
    spans
        .chunks(10_000)
        .map(|chunk| {
            let mut by_service: std::collections::BTreeMap<&str, Vec<Value>> = Default::default();
            for (svc, v) in chunk {
                by_service.entry(svc.as_str()).or_default().push(v.clone());
            }
            json!({ "resourceSpans": by_service.into_iter().map(|(svc, spans)| json!({
                "resource": { "attributes": [attr("service.name", json!(svc))] },
                "scopeSpans": [{ "scope": { "name": "big" }, "spans": spans }]
            })).collect::<Vec<_>>() })
        })
        .collect()
}

async fn post(client: &reqwest::Client, server: &Server, body: &Value) {
    let r = client
        .post(format!("{}/v1/traces", server.http_url()))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap())
        .send()
        .await
        .expect("post OTLP");
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    assert!(status.is_success(), "OTLP export failed: {status} {text}");
    assert!(!text.contains("rejected"), "spans rejected: {text}");
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn node(script: &str, envs: &[(&str, String)]) -> (bool, String) {
    let out = Command::new("node")
        .arg(workspace().join("tests/node").join(script))
        .env("NODE_PATH", common::node_modules())
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(workspace())
        .output()
        .expect("run node (install Node.js 20+)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn ui_logic_unit_tests() {
    let (ok, text) = node("ui_unit.mjs", &[]);
    println!("{text}");
    assert!(ok, "tests/node/ui_unit.mjs failed:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_end_to_end_in_chromium() {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium not found: run scripts/test-deps (it installs tests/apt-packages.txt)"
    );
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let client = reqwest::Client::new();
    // The page runs only skein's own scripts (the run below fails on any CSP violation), and
    // no answer may be sniffed into another type.
    let page = client
        .get(format!("{}/search", server.query_url()))
        .send()
        .await
        .unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self';") && csp.contains("frame-ancestors 'self'"),
        "{csp}"
    );
    for path in [
        "/search",
        "/api/services",
        "/api/ui/services",
        "/static/js/main.js",
        "/metrics",
    ] {
        let r = client
            .get(format!("{}{path}", server.query_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{path}");
    }
    let now = now_ns();
    // The big trace first: autocomplete reads the newest 100,000 head spans, which must include
    // the small traces' attributes.
    for chunk in big_trace(now - 5 * 60_000 * MS) {
        post(&client, &server, &chunk).await;
    }
    // Several services, errors, a slow trace, a multi-level tree, links, quick traces.
    post(
        &client,
        &server,
        &otlp(CHECKOUT, &checkout(CHECKOUT, now - 20 * 60_000 * MS, 30, false)),
    )
    .await;
    post(
        &client,
        &server,
        &otlp(
            CHECKOUT_SLOW,
            &checkout(CHECKOUT_SLOW, now - 10 * 60_000 * MS, 1_800, true),
        ),
    )
    .await;
    post(
        &client,
        &server,
        &otlp(PRODUCT_ERROR, &product_error(now - 15 * 60_000 * MS)),
    )
    .await;
    for k in 0..8u64 {
        let trace = format!("5{:031x}", k + 1);
        let t0 = now - (30 - k) * 60_000 * MS;
        let spans = vec![
            SpanSpec {
                service: "frontend",
                id: sid(300 + 2 * k),
                parent: None,
                name: "GET /",
                kind: 2,
                start: t0,
                end: t0 + (5 + 7 * k) * MS,
                attrs: vec![attr("http.response.status_code", json!(200))],
                error: None,
                events: vec![],
                links: vec![],
            },
            SpanSpec {
                service: "catalog-service",
                id: sid(301 + 2 * k),
                parent: Some(sid(300 + 2 * k)),
                name: "ListProducts",
                kind: 2,
                start: t0 + MS,
                end: t0 + (4 + 6 * k) * MS,
                attrs: vec![],
                error: None,
                events: vec![],
                links: vec![],
            },
        ];
        post(&client, &server, &otlp(&trace, &spans)).await;
    }
    post(&client, &server, &deep_chain(now - 25 * 60_000 * MS)).await;
    let (odd, long_name) = odd_names(now - 24 * 60_000 * MS);
    post(&client, &server, &odd).await;
    let query = server.query_url();
    eventually("the big trace to be complete", Duration::from_secs(60), || {
        let (client, query) = (client.clone(), query.clone());
        async move {
            let v: Value = client
                .get(format!("{query}/api/ui/search?service=gateway&lookback=1h"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (v["traces"][0]["spans"].as_u64()? as usize == BIG_SPANS).then_some(())
        }
    })
    .await;

    // Files for the upload step: an OTLP JSON trace the server never saw, and the server's
    // own Jaeger JSON for the product-error trace.
    let files = tempfile::tempdir().unwrap();
    let otlp_file = files.path().join("trace.otlp.json");
    let mut file_spans = checkout(CHECKOUT, now - 3_600_000 * MS / 2, 70, false);
    for s in &mut file_spans {
        s.service = if s.service == "frontend" {
            "file-frontend"
        } else {
            s.service
        };
    }
    std::fs::write(
        &otlp_file,
        serde_json::to_vec_pretty(&otlp(FILE_TRACE, &file_spans)).unwrap(),
    )
    .unwrap();
    let jaeger_file = files.path().join("trace.jaeger.json");
    let jaeger = client
        .get(format!("{query}/api/traces/{PRODUCT_ERROR}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    std::fs::write(&jaeger_file, jaeger).unwrap();

    let shots = workspace().join("target/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let ids = json!({
        "checkout": CHECKOUT, "checkoutSlow": CHECKOUT_SLOW, "productError": PRODUCT_ERROR, "big": BIG,
        "fileTrace": FILE_TRACE, "bigSpans": BIG_SPANS, "chargeSlow": sid(106), "catalogSpan": sid(201),
        "deep": DEEP, "deepSpans": DEEP_SPANS, "odd": ODD, "bidiService": BIDI_SERVICE,
        "longSpan": sid(502), "longName": long_name,
    });
    let otlp_url = server.http_url();
    let (ok, text) = tokio::task::spawn_blocking(move || {
        node(
            "ui_e2e.mjs",
            &[
                ("SKEIN_URL", query),
                ("OTLP_URL", otlp_url),
                ("SKEIN_IDS", ids.to_string()),
                ("SCREENSHOT_DIR", shots.display().to_string()),
                ("OTLP_FILE", otlp_file.display().to_string()),
                ("JAEGER_FILE", jaeger_file.display().to_string()),
            ],
        )
    })
    .await
    .unwrap();
    println!("{text}");
    assert!(ok, "tests/node/ui_e2e.mjs failed:\n{text}");
    drop(server);
}
