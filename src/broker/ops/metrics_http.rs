//! `--metrics-listen`: the metrics over plain HTTP/1.1, served with hyper as the WebSocket
//! listener serves its probes. Only `GET /metrics` answers; everything else is a 404.
//!
//! The listener is bounded like the other one: the request head has a deadline and a size
//! limit, each connection carries one request, at most [`MAX_CONNECTIONS`] are open at
//! once (others are closed at accept), and shutdown drops the open ones.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::metrics::{CONTENT_TYPE, Metrics};

/// Scrapers open one connection at a time; a few more cover several of them.
const MAX_CONNECTIONS: usize = 16;
/// The request head's largest size (hyper's smallest buffer): a scrape's head is far less.
const MAX_HEAD: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {source}")]
pub struct MetricsListenError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// The bound socket, bound before the broker serves anything, so a bad address stops
/// start-up.
pub struct MetricsListener {
    tcp: TcpListener,
}

impl MetricsListener {
    pub async fn bind(addr: SocketAddr) -> Result<Self, MetricsListenError> {
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| MetricsListenError { addr, source })?;
        Ok(Self { tcp })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

fn reply(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn route(request: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    if request.method() == Method::GET && request.uri().path() == "/metrics" {
        reply(StatusCode::OK, metrics.render(), CONTENT_TYPE)
    } else {
        reply(
            StatusCode::NOT_FOUND,
            "not found\n",
            "text/plain; charset=utf-8",
        )
    }
}

/// Serves `metrics` on `listener` until `shutdown`.
pub(crate) async fn serve(
    listener: MetricsListener,
    metrics: Arc<Metrics>,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) {
    let addr = listener.local_addr().ok();
    if let Some(addr) = addr
        && !addr.ip().is_loopback()
    {
        tracing::warn!(
            "serving metrics on non-loopback {addr} without authentication: they name \
             credentials and principals (never a secret)"
        );
    }
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(MAX_HEAD)
        .keep_alive(false);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let open = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.tcp.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("metrics: too many open connections; one closed at accept");
            continue;
        };
        let (http, metrics, shutdown) = (http.clone(), metrics.clone(), shutdown.clone());
        open.spawn(async move {
            let _slot = slot;
            let connection = http.serve_connection(
                TokioIo::new(stream),
                hyper::service::service_fn(move |request| {
                    let response = route(&request, &metrics);
                    async move { Ok::<_, Infallible>(response) }
                }),
            );
            tokio::select! {
                served = connection => {
                    if let Err(e) = served {
                        tracing::debug!(error = %e, "metrics: connection ended with an error");
                    }
                }
                _ = shutdown.cancelled() => {}
            }
        });
    }
    open.close();
    open.wait().await;
}
