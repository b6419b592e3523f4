//! notification: a worker fed through an in-process queue. Messages carry headers like a real
//! broker's; the CONSUMER span continues the producer's trace (child of the PRODUCER span, so a
//! checkout stays one tree) and also links to it, as the messaging conventions recommend.

use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry::trace::{FutureExt as _, Link, SpanKind, TraceContextExt as _, Tracer as _};
use opentelemetry::KeyValue;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::jitter;
use crate::http::Service;

pub const QUEUE_NAME: &str = "order-events";
const QUEUE_CAPACITY: usize = 4096;

pub struct Message {
    pub headers: HashMap<String, String>,
    pub body: Value,
}

pub fn start(service: Arc<Service>) -> (mpsc::Sender<Message>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Message>(QUEUE_CAPACITY);
    let worker = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            consume(&service, message).await;
        }
    });
    (tx, worker)
}

async fn consume(svc: &Service, message: Message) {
    let parent = svc.propagators.extract_message(&message.headers);
    let producer = parent.span().span_context().clone();
    let checkout_id = message.body["checkout_id"].as_str().unwrap_or("").to_string();
    let mut builder = svc
        .tracer
        .span_builder(format!("process {QUEUE_NAME}"))
        .with_kind(SpanKind::Consumer)
        .with_attributes([
            KeyValue::new("messaging.system", "in-process"),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.operation.name", "process"),
            KeyValue::new("messaging.destination.name", QUEUE_NAME),
            KeyValue::new("messaging.message.id", checkout_id.clone()),
            KeyValue::new("demo.propagation", "w3c"),
        ]);
    if producer.is_valid() {
        builder = builder.with_links(vec![Link::with_context(producer)]);
    }
    let span = builder.start_with_context(&svc.tracer, &parent);
    let cx = parent.with_span(span);
    async {
        svc.in_span("render confirmation email", SpanKind::Internal, vec![], async {
            tokio::time::sleep(jitter(8, 6)).await;
        })
        .await;
        svc.log(
            "info",
            "order confirmation sent",
            json!({"checkout_id": checkout_id, "user": message.body["user"]}),
        );
    }
    .with_context(cx.clone())
    .await;
    cx.span().end();
}
