//! WebSocket: one JSON message per text frame, one session per connection, plus the
//! `/readyz` and `/healthz` probes on the same listener.
//!
//! Served with hyper directly rather than a web framework, because the connection policy
//! lives here and needs the pieces a framework hides: TCP_NODELAY at accept (replies are
//! small and must not wait for a delayed ACK), a deadline for the request head (a client
//! that never finishes its request must not hold the listener, nor shutdown), dropping
//! unfinished HTTP connections at shutdown, and the raw socket under the WebSocket so that
//! a closed session drains what the client still sends instead of resetting the
//! connection under its error reply.
//!
//! Over `wss://` an accepted socket first goes through the TLS handshake (`tls` holds the
//! certificate), under the request head's deadline, then becomes the same HTTP connection.
//!
//! Two gates stand before any JSON-RPC: a request carrying `Origin` is refused (403), since
//! a browser page must never drive a server that holds the user's tokens; and when a
//! capability token is configured, the upgrade needs `Authorization: Bearer <token>`,
//! compared by SHA-256 digest in constant time (401 otherwise).
//! With `--ws-auth signed-bearer-token` that header carries instead an HS256 JWT, checked
//! by `signed_bearer` (the same 401 for every refusal).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming as Body;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, handshake::derive_accept_key};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::signed_bearer::{Refusal, SignedBearer};
use super::tls::ServerTls;
use super::{Admission, Backpressure, BearerGate, Frame, Link, LinkPolicy};

/// Called once per accepted WebSocket; serves it to the end.
pub(crate) type OnConnection =
    Arc<dyn Fn(Link) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

impl WsOptions {
    /// The options a configuration sets, with the capability token's digest.
    pub(crate) fn from_config(
        config: &crate::config::Config,
        token_sha256: Option<[u8; 32]>,
    ) -> Self {
        Self {
            token_sha256,
            signed_bearer: None,
            gate: None,
            max_message_bytes: config.max_message_bytes,
            max_outgoing_bytes: config.max_outgoing_bytes,
            header_read_timeout: config.header_read_timeout,
        }
    }
}

/// Serves each WebSocket session with `session` until `shutdown`, then waits for the open
/// ones to end (each within its own shutdown grace): the loop the app-server and the broker
/// share.
pub(crate) async fn serve_sessions<F, Fut>(
    listener: Listener,
    options: WsOptions,
    shutdown: CancellationToken,
    session: F,
) -> std::io::Result<()>
where
    F: Fn(Link, CancellationToken) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let sessions = TaskTracker::new();
    let (tracker, session_shutdown) = (sessions.clone(), shutdown.clone());
    let on_connection: OnConnection = Arc::new(move |link| {
        Box::pin(tracker.track_future(session(link, session_shutdown.clone())))
    });
    serve(listener, options, on_connection, shutdown).await?;
    sessions.close();
    sessions.wait().await;
    Ok(())
}

#[derive(Clone)]
pub(crate) struct WsOptions {
    /// SHA-256 of the capability token, when one is required.
    pub token_sha256: Option<[u8; 32]>,
    /// The JWT verifier, when `--ws-auth signed-bearer-token` replaces the token.
    pub signed_bearer: Option<Arc<SignedBearer>>,
    /// Whom the bearer token admits (the broker's principals); checked after the two above.
    pub gate: Option<Arc<dyn BearerGate>>,
    pub max_message_bytes: usize,
    pub max_outgoing_bytes: usize,
    pub header_read_timeout: Duration,
}

/// Most pings a client may send in one second; a flood is cut off, not answered.
const MAX_PINGS_PER_SECOND: u32 = 64;
/// How long a closed session keeps reading (and discarding) what the client still sends.
const DRAIN_FOR: Duration = Duration::from_secs(2);
/// Bytes read at most from an idle socket at a time; tungstenite grows it for big messages.
const READ_BUFFER: usize = 8 * 1024;

struct State {
    options: WsOptions,
    on_connection: OnConnection,
}

/// A bound socket to serve, in clear (`ws://`) or behind TLS (`wss://`).
pub struct Listener {
    tcp: TcpListener,
    tls: Option<ServerTls>,
}

impl Listener {
    pub fn new(tcp: TcpListener, tls: Option<ServerTls>) -> Self {
        Self { tcp, tls }
    }

    /// The address as clients write it, scheme included (the port may have been 0).
    pub fn url(&self) -> std::io::Result<String> {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        Ok(format!("{scheme}://{}", self.tcp.local_addr()?))
    }
}

impl From<TcpListener> for Listener {
    fn from(tcp: TcpListener) -> Self {
        Self::new(tcp, None)
    }
}

/// Accepts connections on `listener` until `shutdown` fires. HTTP connections that have
/// not become WebSocket sessions are dropped then (a TLS handshake still under way
/// included); sessions end through `shutdown` too.
pub(crate) async fn serve(
    listener: Listener,
    options: WsOptions,
    on_connection: OnConnection,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let Listener { tcp: listener, tls } = listener;
    if tls.is_none()
        && let Ok(addr) = listener.local_addr()
        && !addr.ip().is_loopback()
    {
        tracing::warn!(
            "serving ws:// on non-loopback {addr}: the bearer token and every credential \
             travel in clear; use --listen wss:// with --tls-cert and --tls-key, or a \
             TLS-terminating proxy in front"
        );
    }
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .keep_alive(true);
    let handshake_timeout = options.header_read_timeout;
    let state = Arc::new(State {
        options,
        on_connection,
    });
    let pending_http = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors or a connection reset before accept: keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (state, http, tls) = (state.clone(), http.clone(), tls.clone());
        let shutdown = shutdown.clone();
        pending_http.spawn(async move {
            let served = async {
                match tls {
                    None => http_connection(&http, stream, state).await,
                    // The handshake gets the request head's deadline: a client that never
                    // finishes it must not hold a task, nor shutdown.
                    Some(tls) => {
                        match tokio::time::timeout(handshake_timeout, tls.acceptor().accept(stream))
                            .await
                        {
                            Ok(Ok(stream)) => http_connection(&http, stream, state).await,
                            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake not finished in time"),
                        }
                    }
                }
            };
            tokio::select! {
                _ = served => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
    pending_http.close();
    pending_http.wait().await;
    Ok(())
}

/// One HTTP/1.1 connection, in clear or decrypted: requests routed until it closes or
/// becomes a WebSocket session.
async fn http_connection<IO>(http: &hyper::server::conn::http1::Builder, io: IO, state: Arc<State>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = http
        .serve_connection(
            TokioIo::new(io),
            hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(request, &state)) }
            }),
        )
        .with_upgrades();
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

fn route(request: Request<Body>, state: &Arc<State>) -> Response<Full<Bytes>> {
    if request.headers().contains_key(header::ORIGIN) {
        return text(
            StatusCode::FORBIDDEN,
            "requests with an Origin header are not accepted",
        );
    }
    match request.uri().path() {
        "/readyz" | "/healthz" => return text(StatusCode::OK, "ok"),
        _ => {}
    }
    if let Some(expected) = &state.options.token_sha256
        && !authorized(request.headers(), expected)
    {
        return text(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
    }
    if let Some(verifier) = &state.options.signed_bearer
        && let Err(refusal) = bearer(request.headers())
            .ok_or(Refusal::Malformed)
            .and_then(|token| verifier.verify_now(token))
    {
        tracing::debug!(?refusal, "WebSocket upgrade refused: signed bearer token");
        return text(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
    }
    let admitted: Option<Admission> = match &state.options.gate {
        None => None,
        Some(gate) => match gate.admit(bearer(request.headers())) {
            Some(admitted) => Some(admitted),
            None => return text(StatusCode::UNAUTHORIZED, "missing or invalid bearer token"),
        },
    };
    let Some(accept) = upgrade_key(&request) else {
        return text(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade (an HTTP/1.1 GET with Connection: upgrade, Upgrade: websocket, Sec-WebSocket-Version: 13)",
        );
    };
    let state = state.clone();
    tokio::spawn(async move {
        match hyper::upgrade::on(request).await {
            Ok(upgraded) => {
                let mut link = session(TokioIo::new(upgraded), &state.options).await;
                link.admitted = admitted;
                (state.on_connection)(link).await;
            }
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

/// The `Sec-WebSocket-Accept` value, when `request` is a valid WebSocket upgrade.
fn upgrade_key(request: &Request<Body>) -> Option<String> {
    let headers = request.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    // RFC 6455 4.1: the handshake is at least HTTP/1.1 (hyper serves only HTTP/1 here).
    let valid = request.method() == hyper::Method::GET
        && request.version() == hyper::Version::HTTP_11
        && has_token(header::CONNECTION, "upgrade")
        && has_token(header::UPGRADE, "websocket")
        && headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?;
    valid.then(|| derive_accept_key(key.as_bytes()))
}

/// The token of an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Whether `headers` carry the expected bearer token.
fn authorized(headers: &HeaderMap, expected: &[u8; 32]) -> bool {
    let Some(token) = bearer(headers) else {
        return false;
    };
    let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
    digest.ct_eq(expected).into()
}

/// One upgraded connection as a [`Link`]. A client that stops reading is disconnected
/// (it is one of many), and tungstenite's own buffers are bounded like the outbox.
async fn session<IO>(io: IO, options: &WsOptions) -> Link
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limit = options.max_message_bytes;
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(options.max_outgoing_bytes.max(limit) + 64 * 1024)
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let socket =
        WebSocketStream::from_raw_socket(Draining::new(io), Role::Server, Some(config)).await;
    let oversized = Arc::new(AtomicBool::new(false));
    let (sink, stream) = socket.split();
    let input = Input {
        stream,
        limit,
        oversized: oversized.clone(),
        done: false,
        pings: PingBudget::default(),
    };
    let output = Output {
        sink,
        oversized,
        close_sent: false,
    };
    Link {
        input: Box::pin(input),
        output: Box::pin(output),
        policy: LinkPolicy {
            backpressure: Backpressure::Disconnect,
            max_outgoing_bytes: options.max_outgoing_bytes,
        },
        admitted: None,
    }
}

#[derive(Default)]
struct PingBudget {
    window: Option<Instant>,
    count: u32,
}

impl PingBudget {
    /// False once the client sent more pings in one second than the budget allows.
    fn allow(&mut self) -> bool {
        let now = Instant::now();
        match self.window {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => {
                self.count += 1;
            }
            _ => {
                self.window = Some(now);
                self.count = 1;
            }
        }
        self.count <= MAX_PINGS_PER_SECOND
    }
}

type WsStream<IO> = futures::stream::SplitStream<WebSocketStream<Draining<IO>>>;

/// Messages in. A message over the limit is reported once as [`Frame::Oversized`] and
/// ends the input: tungstenite cannot skip the rest of it, so the session closes (with
/// code 1009 after the error reply).
struct Input<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    stream: WsStream<IO>,
    limit: usize,
    oversized: Arc<AtomicBool>,
    done: bool,
    pings: PingBudget,
}

impl<IO> futures::Stream for Input<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Item = std::io::Result<Frame>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let message = match self.stream.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(m) => m,
            };
            let frame = match message {
                None | Some(Ok(Message::Close(_))) => None,
                Some(Ok(Message::Text(text))) => {
                    Some(Ok(Frame::Text(text.as_str().trim().to_owned())))
                }
                Some(Ok(Message::Binary(_))) => Some(Ok(Frame::Unreadable(
                    "binary frames are not supported; send JSON as text",
                ))),
                Some(Ok(Message::Ping(_))) => {
                    if self.pings.allow() {
                        continue;
                    }
                    tracing::warn!("client sends pings faster than allowed; disconnecting it");
                    None
                }
                Some(Ok(_)) => continue,
                Some(Err(WsError::Capacity(
                    CapacityError::MessageTooLong { .. } | CapacityError::TooManyHeaders,
                ))) => {
                    self.oversized.store(true, Ordering::Relaxed);
                    self.done = true;
                    let limit = self.limit;
                    return Poll::Ready(Some(Ok(Frame::Oversized { limit })));
                }
                Some(Err(e)) => Some(Err(std::io::Error::other(e))),
            };
            if frame.is_none() {
                self.done = true;
            }
            return Poll::Ready(frame);
        }
    }
}

type WsSink<IO> = futures::stream::SplitSink<WebSocketStream<Draining<IO>>, Message>;

/// Lines out, one text frame each. Closing after an oversized message sends close code
/// 1009 (message too big), so the client learns why besides the error reply.
struct Output<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    sink: WsSink<IO>,
    oversized: Arc<AtomicBool>,
    close_sent: bool,
}

fn io_error(e: WsError) -> std::io::Error {
    std::io::Error::other(e)
}

impl<IO> futures::Sink<String> for Output<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Error = std::io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.sink.poll_ready_unpin(cx).map_err(io_error)
    }

    fn start_send(mut self: Pin<&mut Self>, line: String) -> std::io::Result<()> {
        self.sink
            .start_send_unpin(Message::Text(line.into()))
            .map_err(io_error)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.sink.poll_flush_unpin(cx).map_err(io_error)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.close_sent && self.oversized.load(Ordering::Relaxed) {
            std::task::ready!(self.sink.poll_ready_unpin(cx)).map_err(io_error)?;
            let frame = CloseFrame {
                code: CloseCode::Size,
                reason: "message too big".into(),
            };
            self.sink
                .start_send_unpin(Message::Close(Some(frame)))
                .map_err(io_error)?;
            self.close_sent = true;
        }
        self.sink.poll_close_unpin(cx).map_err(io_error)
    }
}

/// The socket under a session. When the session lets go of it, a task keeps reading and
/// discarding for a moment: closing a socket with unread input makes the kernel send a
/// reset, which can destroy the error reply the client has not read yet.
struct Draining<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    io: Option<IO>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> Draining<IO> {
    fn new(io: IO) -> Self {
        Self { io: Some(io) }
    }

    fn io(&mut self) -> &mut IO {
        self.io.as_mut().expect("present until dropped")
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for Draining<IO> {
    fn drop(&mut self) {
        let Some(mut io) = self.io.take() else { return };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let mut sink = [0u8; 8192];
                let _ = tokio::time::timeout(DRAIN_FOR, async {
                    // Our side is done: the FIN tells the client, which then closes too
                    // (it waits for the server to close first, as RFC 6455 asks).
                    let _ = io.shutdown().await;
                    while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
                })
                .await;
            });
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for Draining<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(self.io()).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Draining<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(self.io()).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.io()).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.io()).poll_shutdown(cx)
    }
}

/// Reads a token file (trimmed, as clients write it with a trailing newline) into its digest.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

/// Parses `--ws-token-sha256`.
pub fn parse_hex_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Listener address as printed for logs and tools.
pub fn describe(addr: SocketAddr) -> String {
    format!("ws://{addr}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_is_checked_by_digest() {
        let expected = token_digest("s3cret\n");
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, &expected));
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authorized(&h, &expected));
        h.insert(header::AUTHORIZATION, "Basic s3cret".parse().unwrap());
        assert!(!authorized(&h, &expected));
        h.insert(header::AUTHORIZATION, "Bearer other".parse().unwrap());
        assert!(!authorized(&h, &expected));
    }

    #[test]
    fn hex_digest_round_trips() {
        let d = token_digest("t");
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse_hex_digest(&hex), Some(d));
        assert_eq!(parse_hex_digest("zz"), None);
    }

    #[test]
    fn a_ping_flood_exhausts_the_budget() {
        let mut budget = PingBudget::default();
        assert!((0..MAX_PINGS_PER_SECOND).all(|_| budget.allow()));
        assert!(!budget.allow());
    }
}
