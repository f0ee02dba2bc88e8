//! The browser sign-in's local callback server on 127.0.0.1.
//!
//! It only routes; what a callback means is the flow's business (`browser.rs`), reached
//! through [`Routes`]. Responses close their connection: a browser that keeps connections
//! alive or prefetches must not keep the port busy once the sign-in is over, and when the
//! flow stops the server, open connections get a moment to finish their answer and are
//! then closed.

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The reference's second port, allowed by the issuer as a redirect target too.
pub(crate) const FALLBACK_PORT: u16 = 1457;
const BIND_RETRIES: u32 = 10;
const BIND_PAUSE: Duration = Duration::from_millis(200);
const CANCEL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long open connections may finish their answer once the server stops.
const DRAIN: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum BindError {
    #[error(
        "Port 127.0.0.1:{0} is already in use; close the other sign-in or use the device code login (type chatgptDeviceCode, or `authbridge login --device-auth`)"
    )]
    InUse(u16),
    #[error("cannot listen on 127.0.0.1:{port}: {message}")]
    Other { port: u16, message: String },
}

/// Binds the callback port. A busy port may hold an older sign-in (of authbridge or of
/// Codex): it is asked to cancel, then the bind is retried; the default port falls back to
/// the reference's second one.
pub(crate) async fn bind(port: u16, fallback: Option<u16>) -> Result<TcpListener, BindError> {
    let mut last = BindError::InUse(port);
    for candidate in std::iter::once(port).chain(fallback) {
        match bind_with_retries(candidate).await {
            Ok(listener) => return Ok(listener),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn bind_with_retries(port: u16) -> Result<TcpListener, BindError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut asked_to_cancel = false;
    let mut attempt = 0;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                if !asked_to_cancel {
                    asked_to_cancel = true;
                    send_cancel(port).await;
                }
                attempt += 1;
                if attempt > BIND_RETRIES {
                    return Err(BindError::InUse(port));
                }
                tokio::time::sleep(BIND_PAUSE).await;
            }
            Err(e) => {
                return Err(BindError::Other {
                    port,
                    message: e.to_string(),
                });
            }
        }
    }
}

/// `GET /cancel` to whatever holds the port, bounded; its answer does not matter.
async fn send_cancel(port: u16) {
    let attempt = async {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
        let request =
            format!("GET /cancel HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut sink = [0u8; 512];
        let _ = stream.read(&mut sink).await;
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(CANCEL_TIMEOUT, attempt).await;
}

pub(crate) type Reply = Response<Full<Bytes>>;
pub(crate) type RouteFuture = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// What the flow does for each path.
pub(crate) trait Routes: Send + Sync + 'static {
    /// `/auth/callback` with its query string.
    fn callback(self: Arc<Self>, query: Option<String>) -> RouteFuture;
    fn success(self: Arc<Self>) -> Reply;
    fn cancel(self: Arc<Self>) -> Reply;
}

pub(crate) fn reply(status: StatusCode, content_type: &'static str, body: String) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

pub(crate) fn text(status: StatusCode, body: &str) -> Reply {
    reply(status, "text/plain; charset=utf-8", body.to_owned())
}

pub(crate) fn redirect(location: &str) -> Reply {
    let mut response = text(StatusCode::FOUND, "");
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

async fn route<R: Routes>(routes: Arc<R>, request: Request<Incoming>) -> Reply {
    if request.method() != hyper::Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    }
    let uri = request.uri();
    match uri.path() {
        "/auth/callback" => routes.callback(uri.query().map(str::to_owned)).await,
        "/success" => routes.success(),
        "/cancel" => routes.cancel(),
        _ => text(StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// Serves `routes` on `listener` until `stop`; returns once the port is free and every
/// connection is closed.
pub(crate) async fn serve<R: Routes>(
    listener: TcpListener,
    routes: Arc<R>,
    stop: CancellationToken,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .keep_alive(false);
    let connections = TaskTracker::new();
    let abort = CancellationToken::new();
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let routes = routes.clone();
        let connection = http.serve_connection(
            TokioIo::new(stream),
            hyper::service::service_fn(move |request| {
                let routes = routes.clone();
                async move { Ok::<_, Infallible>(route(routes, request).await) }
            }),
        );
        let abort = abort.clone();
        connections.spawn(async move {
            tokio::select! {
                _ = connection => {}
                _ = abort.cancelled() => {}
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(DRAIN, connections.wait())
        .await
        .is_err()
    {
        abort.cancel();
        connections.wait().await;
    }
}
