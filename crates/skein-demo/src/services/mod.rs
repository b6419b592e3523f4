//! The shop: seven HTTP services on 127.0.0.1 ephemeral ports plus a queue-fed notification
//! worker, all in this process but each with its own TracerProvider and Resource.
//!
//! ```text
//! driver ─► api-gateway ─w3c─► auth
//!               └─b3-single─► order ─jaeger─► inventory (SQLite)
//!                               ├─b3-multi─► payment ─w3c─► bank (external)      ┐ in parallel
//!                               ├─w3c (none when broken)─► fraud                  ┘
//!                               └─queue (w3c in message headers)─► notification
//! ```

mod auth;
mod bank;
mod fraud;
mod gateway;
mod inventory;
mod notification;
mod order;
mod payment;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use opentelemetry::trace::TracerProvider as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use bank::{DECLINED_CARD, SLOW_CARD};
pub use gateway::{CheckoutItem, CheckoutRequest};
pub use inventory::{sku, InventorySettings};
pub use order::CHAOS_DROP_FRAUD_HEADERS;

use crate::http::{server_span, Hop, Service};
use crate::propagation::{Format, Propagators};
use crate::telemetry::{provider, ExportClient, Identity, JsonLog};

pub const GATEWAY: Identity = Identity {
    name: "api-gateway",
    version: "2.14.0",
    environment: "demo",
};
pub const AUTH: Identity = Identity {
    name: "auth",
    version: "1.8.3",
    environment: "demo",
};
pub const ORDER: Identity = Identity {
    name: "order",
    version: "3.2.0",
    environment: "demo",
};
pub const INVENTORY: Identity = Identity {
    name: "inventory",
    version: "0.9.12",
    environment: "demo",
};
pub const PAYMENT: Identity = Identity {
    name: "payment",
    version: "5.0.1",
    environment: "demo",
};
pub const FRAUD: Identity = Identity {
    name: "fraud",
    version: "1.1.0",
    environment: "demo",
};
/// Looks external: another company's version scheme and environment.
pub const BANK: Identity = Identity {
    name: "bank",
    version: "2024.11.3",
    environment: "partner-sandbox",
};
pub const NOTIFICATION: Identity = Identity {
    name: "notification",
    version: "1.0.4",
    environment: "demo",
};

/// Every service name, in call order.
pub const SERVICES: [&str; 8] = [
    GATEWAY.name,
    AUTH.name,
    ORDER.name,
    INVENTORY.name,
    PAYMENT.name,
    FRAUD.name,
    BANK.name,
    NOTIFICATION.name,
];

pub struct ShopSettings {
    /// OTLP/HTTP base URL, e.g. `http://127.0.0.1:4318`.
    pub endpoint: String,
    pub log: JsonLog,
    pub inventory: InventorySettings,
    pub db_path: PathBuf,
}

/// The running shop.
pub struct Shop {
    pub gateway_url: String,
    services: Vec<Arc<Service>>,
    servers: Vec<JoinHandle<()>>,
    worker: JoinHandle<()>,
    stop: watch::Sender<bool>,
    log: JsonLog,
}

fn service(identity: Identity, settings: &ShopSettings, exporter: &ExportClient) -> anyhow::Result<Arc<Service>> {
    let provider = provider(identity, &settings.endpoint, exporter.clone())?;
    let tracer = provider.tracer("skein-demo");
    Ok(Arc::new(Service {
        identity,
        tracer,
        provider,
        log: settings.log.clone(),
        propagators: Arc::new(Propagators::default()),
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(32)
            .build()
            .context("building an HTTP client")?,
    }))
}

async fn listen() -> anyhow::Result<(TcpListener, String)> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding a shop service")?;
    let addr: SocketAddr = listener.local_addr()?;
    Ok((listener, format!("http://{addr}")))
}

impl Shop {
    pub async fn start(settings: ShopSettings) -> anyhow::Result<Shop> {
        let exporter = ExportClient::new(tokio::runtime::Handle::current())?;
        let (stop, stop_rx) = watch::channel(false);
        let mut services = Vec::new();
        let mut servers = Vec::new();
        let mut serve = |listener: TcpListener, router: Router| {
            let mut stop = stop_rx.clone();
            servers.push(tokio::spawn(async move {
                let _ = axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
            }));
        };

        // Leaves first, so every caller knows its callee's address.
        let (bank_l, bank_url) = listen().await?;
        let bank_svc = service(BANK, &settings, &exporter)?;
        serve(bank_l, instrument(bank::router(bank_svc.clone()), &bank_svc));
        services.push(bank_svc);

        let (fraud_l, fraud_url) = listen().await?;
        let fraud_svc = service(FRAUD, &settings, &exporter)?;
        serve(fraud_l, instrument(fraud::router(fraud_svc.clone()), &fraud_svc));
        services.push(fraud_svc);

        let (payment_l, payment_url) = listen().await?;
        let payment_svc = service(PAYMENT, &settings, &exporter)?;
        let bank_hop = Hop {
            peer: BANK.name,
            base_url: bank_url,
            format: Format::W3c,
        };
        serve(
            payment_l,
            instrument(payment::router(payment_svc.clone(), bank_hop), &payment_svc),
        );
        services.push(payment_svc);

        let (inventory_l, inventory_url) = listen().await?;
        let inventory_svc = service(INVENTORY, &settings, &exporter)?;
        let db = inventory::open(&settings.db_path, &settings.inventory)?;
        serve(
            inventory_l,
            instrument(inventory::router(inventory_svc.clone(), db), &inventory_svc),
        );
        services.push(inventory_svc);

        let notification_svc = service(NOTIFICATION, &settings, &exporter)?;
        let (queue, worker) = notification::start(notification_svc.clone());
        services.push(notification_svc);

        let (order_l, order_url) = listen().await?;
        let order_svc = service(ORDER, &settings, &exporter)?;
        let order_hops = order::Hops {
            inventory: Hop {
                peer: INVENTORY.name,
                base_url: inventory_url,
                format: Format::Jaeger,
            },
            payment: Hop {
                peer: PAYMENT.name,
                base_url: payment_url,
                format: Format::B3Multi,
            },
            fraud: Hop {
                peer: FRAUD.name,
                base_url: fraud_url,
                format: Format::W3c,
            },
        };
        serve(
            order_l,
            instrument(order::router(order_svc.clone(), order_hops, queue), &order_svc),
        );
        services.push(order_svc);

        let (auth_l, auth_url) = listen().await?;
        let auth_svc = service(AUTH, &settings, &exporter)?;
        serve(auth_l, instrument(auth::router(auth_svc.clone()), &auth_svc));
        services.push(auth_svc);

        let (gateway_l, gateway_url) = listen().await?;
        let gateway_svc = service(GATEWAY, &settings, &exporter)?;
        let gateway_hops = gateway::Hops {
            auth: Hop {
                peer: AUTH.name,
                base_url: auth_url,
                format: Format::W3c,
            },
            order: Hop {
                peer: ORDER.name,
                base_url: order_url,
                format: Format::B3Single,
            },
        };
        serve(
            gateway_l,
            instrument(gateway::router(gateway_svc.clone(), gateway_hops), &gateway_svc),
        );
        services.push(gateway_svc);

        Ok(Shop {
            gateway_url,
            services,
            servers,
            worker,
            stop,
            log: settings.log,
        })
    }

    /// Stops the HTTP servers (in-flight requests finish), drains the queue, then flushes and
    /// shuts down every tracer provider so all spans reach skein. Errors name the services
    /// whose spans could not be delivered.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        for server in self.servers {
            let _ = tokio::time::timeout(Duration::from_secs(30), server).await;
        }
        // The servers held the queue's only sender; the worker ends once it has drained it.
        let _ = tokio::time::timeout(Duration::from_secs(30), self.worker).await;
        let mut failures = Vec::new();
        for service in self.services {
            let provider = service.provider.clone();
            let name = service.identity.name;
            // Flushing blocks on the exporter thread; keep it off the async workers.
            let flushed = tokio::task::spawn_blocking(move || {
                let flushed = provider.force_flush();
                let _ = provider.shutdown();
                flushed
            })
            .await;
            match flushed {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(format!("{name}: {e}")),
                Err(e) => failures.push(format!("{name}: {e}")),
            }
        }
        self.log.flush();
        if failures.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("exporting spans failed: {}", failures.join("; "))
        }
    }
}

fn instrument(router: Router, service: &Arc<Service>) -> Router {
    router.route_layer(axum::middleware::from_fn_with_state(service.clone(), server_span))
}

/// `base` to `base + spread` milliseconds of simulated processing or network time.
pub(crate) fn jitter(base_ms: u64, spread_ms: u64) -> Duration {
    Duration::from_millis(base_ms + fastrand::u64(0..=spread_ms))
}
