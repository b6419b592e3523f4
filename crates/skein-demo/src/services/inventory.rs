//! inventory: stock in a real SQLite database. `POST /inventory/reserve` reads availability
//! with one `SELECT … WHERE s.sku IN (?, ?, …)` (one bind parameter per cart line), records a
//! hold per line and trims old holds. Every statement is a DB CLIENT span.
//!
//! The latency story: availability subtracts open holds with a correlated subquery on
//! `stock_holds.sku`, which has no index. Each cart line costs one scan of the holds table —
//! nothing for a 3-line cart, seconds for a bulk order with thousands of lines (and bind
//! parameters). The fix would be `CREATE INDEX stock_holds_sku ON stock_holds(sku)`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use http::StatusCode;
use opentelemetry::trace::{Span as _, SpanKind, Tracer as _};
use opentelemetry::{Context, KeyValue};
use rusqlite::{params, params_from_iter, Connection};
use serde_json::{json, Value};

use crate::http::{AppError, Service};

/// Size of the database the demo creates.
#[derive(Clone, Debug)]
pub struct InventorySettings {
    pub skus: usize,
    /// Open holds kept (older ones are trimmed): the table every cart line scans.
    pub holds: usize,
}

impl Default for InventorySettings {
    fn default() -> Self {
        InventorySettings {
            skus: 5_000,
            holds: 8_000,
        }
    }
}

struct Inventory {
    service: Arc<Service>,
    path: PathBuf,
    /// Idle connections: reads run in parallel (WAL mode), so a slow query does not queue
    /// every other checkout behind it; SQLite still serializes the writes.
    pool: Mutex<Vec<Connection>>,
    db_name: String,
    holds_kept: usize,
}

/// Opened by `open`: the seeded database.
pub struct Database {
    path: PathBuf,
    first: Connection,
    name: String,
    holds_kept: usize,
}

/// Creates (fresh) and seeds the database at `path`.
pub fn open(path: &Path, settings: &InventorySettings) -> anyhow::Result<Database> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    let mut db = Connection::open(path).with_context(|| format!("opening SQLite database {}", path.display()))?;
    db.busy_timeout(std::time::Duration::from_secs(30))?;
    db.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         CREATE TABLE stock (sku TEXT PRIMARY KEY, on_hand INTEGER NOT NULL);
         CREATE TABLE stock_holds (id INTEGER PRIMARY KEY, sku TEXT NOT NULL, qty INTEGER NOT NULL,
                                   checkout_id TEXT NOT NULL);",
    )
    .context("creating the inventory schema")?;
    let mut rng = fastrand::Rng::with_seed(7);
    let tx = db.transaction()?;
    {
        let mut stock = tx.prepare("INSERT INTO stock (sku, on_hand) VALUES (?1, ?2)")?;
        for i in 0..settings.skus {
            stock.execute(params![sku(i), 1_000_000_000i64])?;
        }
        let mut hold = tx.prepare("INSERT INTO stock_holds (sku, qty, checkout_id) VALUES (?1, ?2, 'seed')")?;
        for _ in 0..settings.holds {
            hold.execute(params![sku(rng.usize(0..settings.skus)), rng.i64(1..4)])?;
        }
    }
    tx.commit().context("seeding the inventory database")?;
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("inventory")
        .to_string();
    Ok(Database {
        path: path.to_path_buf(),
        first: db,
        name,
        holds_kept: settings.holds,
    })
}

/// The SKU naming scheme shared with the driver: `sku-00042`.
pub fn sku(i: usize) -> String {
    format!("sku-{i:05}")
}

pub fn router(service: Arc<Service>, db: Database) -> Router {
    let inventory = Inventory {
        service,
        path: db.path,
        pool: Mutex::new(vec![db.first]),
        db_name: db.name,
        holds_kept: db.holds_kept,
    };
    Router::new()
        .route("/inventory/reserve", post(reserve))
        .with_state(Arc::new(inventory))
}

async fn reserve(State(inv): State<Arc<Inventory>>, Json(req): Json<Value>) -> Result<Json<Value>, AppError> {
    let checkout_id = req["checkout_id"].as_str().unwrap_or("").to_string();
    let mut lines = Vec::new();
    for item in req["items"].as_array().into_iter().flatten() {
        let (Some(sku), Some(qty)) = (item["sku"].as_str(), item["qty"].as_i64()) else {
            return Err(AppError::new(
                StatusCode::BAD_REQUEST,
                "InvalidCart",
                "each item needs a sku and a qty",
            ));
        };
        lines.push((sku.to_string(), qty));
    }
    if lines.is_empty() {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "InvalidCart",
            "the cart is empty",
        ));
    }
    let parent = Context::current();
    let worker = inv.clone();
    let reserved = tokio::task::spawn_blocking(move || worker.reserve_blocking(&parent, &checkout_id, &lines))
        .await
        .map_err(|e| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "JoinError", e.to_string()))?;
    match reserved {
        Ok(short) if short.is_empty() => {
            inv.service.log(
                "info",
                "stock reserved",
                json!({"lines": req["items"].as_array().map_or(0, Vec::len)}),
            );
            Ok(Json(json!({"reserved": true})))
        }
        Ok(short) => Err(AppError::new(
            StatusCode::CONFLICT,
            "OutOfStock",
            format!("not enough stock for {}", short.join(", ")),
        )),
        Err(e) => {
            inv.service
                .log("error", "reservation failed", json!({"error": e.to_string()}));
            Err(AppError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "rusqlite::Error",
                e.to_string(),
            ))
        }
    }
}

impl Inventory {
    /// Returns the SKUs that are short (empty: all reserved).
    fn reserve_blocking(
        &self,
        parent: &Context,
        checkout_id: &str,
        lines: &[(String, i64)],
    ) -> rusqlite::Result<Vec<String>> {
        let mut db = self.connection()?;
        let result = self.reserve_on(&mut db, parent, checkout_id, lines);
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).push(db);
        result
    }

    fn connection(&self) -> rusqlite::Result<Connection> {
        if let Some(db) = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(db);
        }
        let db = Connection::open(&self.path)?;
        db.busy_timeout(std::time::Duration::from_secs(30))?;
        Ok(db)
    }

    fn reserve_on(
        &self,
        db: &mut Connection,
        parent: &Context,
        checkout_id: &str,
        lines: &[(String, i64)],
    ) -> rusqlite::Result<Vec<String>> {
        let placeholders = vec!["?"; lines.len()].join(", ");
        let select = format!(
            "SELECT s.sku, s.on_hand - COALESCE((SELECT SUM(h.qty) FROM stock_holds h WHERE h.sku = s.sku), 0) \
             FROM stock s WHERE s.sku IN ({placeholders})"
        );
        let available: Vec<(String, i64)> = self.db_span(parent, "SELECT", "stock", &select, lines.len(), || {
            let mut stmt = db.prepare(&select)?;
            let rows = stmt.query_map(params_from_iter(lines.iter().map(|(sku, _)| sku)), |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?;
            rows.collect()
        })?;
        let short: Vec<String> = lines
            .iter()
            .filter(|(sku, qty)| available.iter().find(|(s, _)| s == sku).is_none_or(|(_, a)| a < qty))
            .map(|(sku, _)| sku.clone())
            .collect();
        if !short.is_empty() {
            return Ok(short);
        }

        let insert = "INSERT INTO stock_holds (sku, qty, checkout_id) VALUES (?1, ?2, ?3)";
        self.db_span(parent, "INSERT", "stock_holds", insert, 3, || {
            let tx = db.transaction()?;
            {
                let mut stmt = tx.prepare_cached(insert)?;
                for (sku, qty) in lines {
                    stmt.execute(params![sku, qty, checkout_id])?;
                }
            }
            tx.commit()
        })?;
        let trim = "DELETE FROM stock_holds WHERE id <= (SELECT MAX(id) FROM stock_holds) - ?1";
        self.db_span(parent, "DELETE", "stock_holds", trim, 1, || {
            db.execute(trim, params![self.holds_kept as i64]).map(|_| ())
        })?;
        Ok(short)
    }

    /// One DB CLIENT span around `run`, with the database semantic conventions (old and new keys).
    fn db_span<T>(
        &self,
        parent: &Context,
        operation: &str,
        table: &str,
        statement: &str,
        bind_parameters: usize,
        run: impl FnOnce() -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let tracer = &self.service.tracer;
        let span = tracer
            .span_builder(format!("{operation} {table}"))
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("db.system", "sqlite"),
                KeyValue::new("db.system.name", "sqlite"),
                KeyValue::new("db.namespace", self.db_name.clone()),
                KeyValue::new("db.name", self.db_name.clone()),
                KeyValue::new("db.operation", operation.to_string()),
                KeyValue::new("db.operation.name", operation.to_string()),
                KeyValue::new("db.collection.name", table.to_string()),
                KeyValue::new("db.sql.table", table.to_string()),
                KeyValue::new("db.statement", statement.to_string()),
                KeyValue::new("db.query.text", statement.to_string()),
                KeyValue::new("db.query.parameter_count", bind_parameters as i64),
            ])
            .start_with_context(tracer, parent);
        let result = run();
        let mut span = span;
        if let Err(e) = &result {
            span.add_event(
                "exception",
                vec![
                    KeyValue::new("exception.type", "rusqlite::Error"),
                    KeyValue::new("exception.message", e.to_string()),
                ],
            );
            span.set_status(opentelemetry::trace::Status::error(e.to_string()));
        }
        span.end();
        result
    }
}
