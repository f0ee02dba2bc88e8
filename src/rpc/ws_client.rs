//! The client side of a WebSocket (`ws://` or `wss://`, direct or through the proxy) as a
//! [`Link`], so the client role runs over it like the
//! server role runs over an accepted session. (Its natural home is `transport/`, beside
//! the server's session; it sits here while that module has another owner.)
//!
//! One text message is one frame; a binary one is unreadable input; a message over the
//! limit is reported once as oversized and ends the input (tungstenite cannot skip the
//! rest). tungstenite's buffers are bounded: the read buffer by the options, the write
//! buffer a little above the outbox bound.

use std::fmt;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::client::{Client, ClientHandler, ClientOptions, Ignore};
use crate::net::Network;
use crate::transport::{Backpressure, Frame, Link, LinkPolicy};

/// Where to connect, and the bearer token the upgrade needs there.
#[derive(Clone)]
pub struct WsTarget {
    /// `ws://HOST:PORT[/PATH]` or `wss://…`.
    pub url: String,
    pub bearer: Option<SecretString>,
}

impl fmt::Debug for WsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsTarget")
            .field("url", &self.url)
            .field("bearer", &self.bearer.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// Bounds of one client connection.
#[derive(Debug, Clone)]
pub struct WsClientOptions {
    /// Largest message accepted from the server.
    pub max_message_bytes: usize,
    /// Most bytes queued for the server before a sender waits.
    pub max_outgoing_bytes: usize,
    /// tungstenite's read buffer; its default (128 KiB) is much for small answers.
    pub read_buffer_bytes: usize,
    /// Bound on the TCP connect plus the upgrade.
    pub connect_timeout: Duration,
    /// The engine's side of the connection.
    pub client: ClientOptions,
    /// The roots and proxies the connection is made with (`wss://` and CONNECT tunnels).
    pub network: Network,
}

impl WsClientOptions {
    /// The default bounds, over `network`.
    pub fn new(network: Network) -> Self {
        Self {
            network,
            max_message_bytes: 1 << 20,
            max_outgoing_bytes: 1 << 20,
            read_buffer_bytes: 16 * 1024,
            connect_timeout: Duration::from_secs(5),
            client: ClientOptions::default(),
        }
    }
}

/// Why no connection came about. Never shows the request: it carries the bearer token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error("unsupported URL {0:?}: use ws://HOST:PORT or wss://HOST:PORT")]
    Unsupported(String),
    #[error("invalid URL {0:?}")]
    InvalidUrl(String),
    #[error("the bearer token is not a valid header value")]
    InvalidToken,
    #[error("the upgrade was refused ({0})")]
    Refused(StatusCode),
    #[error("no upgrade within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Failed(String),
}

/// Connects and serves the connection as a client whose handler takes the defaults
/// (notifications dropped, the server's requests refused).
pub async fn connect(target: &WsTarget, options: &WsClientOptions) -> Result<Client, ConnectError> {
    connect_with(target, options, std::sync::Arc::new(Ignore)).await
}

/// [`connect`] with `handler` receiving what the server sends unasked.
pub(crate) async fn connect_with(
    target: &WsTarget,
    options: &WsClientOptions,
    handler: std::sync::Arc<dyn ClientHandler>,
) -> Result<Client, ConnectError> {
    let link = tokio::time::timeout(options.connect_timeout, link(target, options))
        .await
        .map_err(|_| ConnectError::Timeout(options.connect_timeout))??;
    Ok(Client::start(link, handler, options.client.clone()))
}

async fn link(target: &WsTarget, options: &WsClientOptions) -> Result<Link, ConnectError> {
    let url =
        url::Url::parse(&target.url).map_err(|_| ConnectError::InvalidUrl(target.url.clone()))?;
    if !matches!(url.scheme(), "ws" | "wss") {
        return Err(ConnectError::Unsupported(target.url.clone()));
    }
    let mut request = target
        .url
        .as_str()
        .into_client_request()
        .map_err(|_| ConnectError::InvalidUrl(target.url.clone()))?;
    if let Some(token) = &target.bearer {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
            .map_err(|_| ConnectError::InvalidToken)?;
        value.set_sensitive(true);
        request.headers_mut().insert(header::AUTHORIZATION, value);
    }
    let limit = options.max_message_bytes;
    let write_buffer = 16 * 1024;
    let config = WebSocketConfig::default()
        .read_buffer_size(options.read_buffer_bytes)
        .write_buffer_size(write_buffer)
        .max_write_buffer_size(options.max_outgoing_bytes.max(limit) + write_buffer + 64 * 1024)
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    // Direct or through the proxy, TLS for wss://, TCP_NODELAY either way (small requests
    // must not wait for a delayed ACK).
    let stream = options
        .network
        .connect(&url)
        .await
        .map_err(|e| ConnectError::Failed(e.to_string()))?;
    let (socket, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| match e {
            WsError::Http(response) => ConnectError::Refused(response.status()),
            WsError::Io(e) => ConnectError::Failed(e.to_string()),
            other => ConnectError::Failed(other.to_string()),
        })?;
    let (sink, stream) = socket.split();
    // A close frame ends the input; so do an oversized message and an error, once
    // reported (the socket is not polled again).
    let input = futures::stream::unfold((stream, false), move |(mut stream, ended)| async move {
        if ended {
            return None;
        }
        loop {
            let (frame, ended) = match stream.next().await? {
                Ok(Message::Text(text)) => {
                    (Ok(Frame::Text(text.as_str().trim().to_owned())), false)
                }
                Ok(Message::Binary(_)) => (Ok(Frame::Unreadable("a binary frame")), false),
                Ok(Message::Close(_)) => return None,
                // Pings are answered by tungstenite itself.
                Ok(_) => continue,
                Err(WsError::Capacity(CapacityError::MessageTooLong { .. })) => {
                    (Ok(Frame::Oversized { limit }), true)
                }
                Err(e) => (Err(std::io::Error::other(e)), true),
            };
            return Some((frame, (stream, ended)));
        }
    });
    let output = sink
        .sink_map_err(std::io::Error::other)
        .with(|line: String| std::future::ready(Ok::<_, std::io::Error>(Message::text(line))));
    Ok(Link {
        input: Box::pin(input),
        output: Box::pin(output),
        policy: LinkPolicy {
            // The only server of this connection: wait for it, bounded by each request's
            // own timeout.
            backpressure: Backpressure::Wait,
            max_outgoing_bytes: options.max_outgoing_bytes,
        },
        admitted: None,
    })
}

#[cfg(test)]
mod tests {
    use futures::SinkExt;
    use serde::Deserialize;
    use serde_json::{Value, json};
    use tokio::net::TcpListener;

    use super::*;
    use crate::rpc::client::{CallError, ClientRequest};

    const WAIT: Duration = Duration::from_secs(5);

    #[derive(Debug, Deserialize, PartialEq)]
    struct Echo {
        n: i64,
    }

    struct Ask;

    impl ClientRequest for Ask {
        const METHOD: &'static str = "echo";
        type Params = Value;
        type Result = Echo;
    }

    /// A server that answers each request with `answer(request)`; `None` closes.
    async fn server(answer: fn(&Value) -> Option<String>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            while let Some(Ok(Message::Text(text))) = ws.next().await {
                let request: Value = serde_json::from_str(text.as_str()).unwrap();
                match answer(&request) {
                    Some(line) => ws.send(Message::text(line)).await.unwrap(),
                    None => {
                        let _ = ws.close(None).await;
                        return;
                    }
                }
            }
        });
        format!("ws://{addr}")
    }

    fn target(url: String) -> WsTarget {
        WsTarget { url, bearer: None }
    }

    #[tokio::test]
    async fn a_request_round_trips_and_the_server_s_close_fails_the_next_one_at_once() {
        let url = server(|r| {
            (r["params"]["n"] == 1)
                .then(|| json!({"jsonrpc": "2.0", "id": r["id"], "result": {"n": 1}}).to_string())
        })
        .await;
        let client = connect(
            &target(url),
            &WsClientOptions::new(Network::from_env().unwrap()),
        )
        .await
        .unwrap();
        assert_eq!(
            client.request::<Ask>(&json!({"n": 1}), WAIT).await,
            Ok(Echo { n: 1 })
        );
        let started = std::time::Instant::now();
        assert_eq!(
            client.request::<Ask>(&json!({"n": 2}), WAIT).await,
            Err(CallError::Disconnected)
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        tokio::time::timeout(WAIT, client.closed()).await.unwrap();
    }

    #[tokio::test]
    async fn an_answer_over_the_limit_ends_the_connection() {
        let url = server(|r| {
            Some(json!({"id": r["id"], "result": {"n": 1, "pad": "x".repeat(4096)}}).to_string())
        })
        .await;
        let options = WsClientOptions {
            max_message_bytes: 1024,
            ..WsClientOptions::new(Network::from_env().unwrap())
        };
        let client = connect(&target(url), &options).await.unwrap();
        assert_eq!(
            client.request::<Ask>(&json!({"n": 1}), WAIT).await,
            Err(CallError::Disconnected)
        );
        tokio::time::timeout(WAIT, client.closed()).await.unwrap();
    }

    #[tokio::test]
    async fn only_ws_urls_are_taken_and_the_bearer_is_never_shown() {
        let e = connect(
            &target("http://127.0.0.1:1".into()),
            &WsClientOptions::new(Network::from_env().unwrap()),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, ConnectError::Unsupported(_)), "{e}");
        let bearer = WsTarget {
            url: "ws://127.0.0.1:1".into(),
            bearer: Some("s3cret".into()),
        };
        assert!(!format!("{bearer:?}").contains("s3cret"));
    }
}
