//! WebSocket: one JSON message per text frame, one session per connection, plus the
//! `/readyz` and `/healthz` probes on the same listener.
//!
//! Two gates stand before any JSON-RPC: a request carrying `Origin` is refused (403), since
//! a browser page must never drive a server that holds the user's tokens; and when a
//! capability token is configured, the upgrade needs `Authorization: Bearer <token>`,
//! compared by SHA-256 digest in constant time (401 otherwise).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{Sink, SinkExt, Stream, StreamExt};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Frame;

pub type Incoming = Pin<Box<dyn Stream<Item = std::io::Result<Frame>> + Send>>;
pub type Outgoing = Pin<Box<dyn Sink<String, Error = std::io::Error> + Send>>;
/// Called once per accepted WebSocket with its two halves; serves it to the end.
pub type OnConnection =
    Arc<dyn Fn(Incoming, Outgoing) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

#[derive(Clone)]
pub struct WsOptions {
    /// SHA-256 of the capability token, when one is required.
    pub token_sha256: Option<[u8; 32]>,
    pub max_message_bytes: usize,
}

#[derive(Clone)]
struct AppState {
    options: WsOptions,
    on_connection: OnConnection,
}

/// Accepts connections on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    options: WsOptions,
    on_connection: OnConnection,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/readyz", get(|| async { "ok" }))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(upgrade)
        .layer(axum::middleware::from_fn(refuse_origin))
        .with_state(AppState {
            options,
            on_connection,
        });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn refuse_origin(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if request.headers().contains_key(header::ORIGIN) {
        return (
            StatusCode::FORBIDDEN,
            "requests with an Origin header are not accepted",
        )
            .into_response();
    }
    next.run(request).await
}

/// Whether `headers` carry the expected bearer token.
fn authorized(headers: &HeaderMap, expected: &[u8; 32]) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, token)) = value.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
    digest.ct_eq(expected).into()
}

async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    if let Some(expected) = &state.options.token_sha256
        && !authorized(&headers, expected)
    {
        return (StatusCode::UNAUTHORIZED, "missing or invalid bearer token").into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let limit = state.options.max_message_bytes;
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| {
            let (incoming, outgoing) = halves(socket);
            (state.on_connection)(incoming, outgoing)
        })
}

fn halves(socket: WebSocket) -> (Incoming, Outgoing) {
    let (sink, stream) = socket.split();
    let incoming = stream
        .take_while(|m| std::future::ready(!matches!(m, Ok(Message::Close(_)))))
        .filter_map(|m| {
            std::future::ready(match m {
                Ok(Message::Text(text)) => Some(Ok(Frame::Text(text.as_str().trim().to_owned()))),
                Ok(Message::Binary(_)) => Some(Ok(Frame::Unreadable(
                    "binary frames are not supported; send JSON as text",
                ))),
                Ok(_) => None,
                Err(e) => Some(Err(std::io::Error::other(e))),
            })
        });
    let outgoing = sink
        .sink_map_err(std::io::Error::other)
        .with(|line: String| {
            std::future::ready(Ok::<_, std::io::Error>(Message::Text(line.into())))
        });
    (Box::pin(incoming), Box::pin(outgoing))
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

/// Listener address helper for logs.
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
}
