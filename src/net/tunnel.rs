//! HTTP CONNECT through a proxy, for the connections reqwest does not make (the WebSocket
//! client's). The proxy's answer head is read with a bound, and its status decides: 407 and
//! every other refusal are transport failures the caller reports as such.

use hyper_util::client::proxy::matcher::Intercept;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::stream::ConnectError;

/// Longest answer head accepted from a proxy.
const MAX_HEAD: usize = 8 * 1024;

/// A TCP connection to `host:port` through `proxy`, ready for the caller's TLS or WebSocket.
pub(super) async fn connect(
    proxy: &Intercept,
    host: &str,
    port: u16,
) -> Result<TcpStream, ConnectError> {
    let uri = proxy.uri();
    if uri.scheme_str() == Some("https") {
        return Err(ConnectError::Proxy(
            "an https:// proxy is not supported for WebSocket connections; name an http:// one"
                .into(),
        ));
    }
    let proxy_host = uri.host().unwrap_or_default();
    let proxy_port = uri.port_u16().unwrap_or(80);
    let mut stream = TcpStream::connect((proxy_host, proxy_port))
        .await
        .map_err(|e| ConnectError::Proxy(format!("the proxy cannot be reached ({e})")))?;
    stream.set_nodelay(true).ok();
    // IPv6 literals keep their brackets in the request target.
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n").into_bytes();
    if let Some(auth) = proxy.basic_auth() {
        request.extend_from_slice(b"Proxy-Authorization: ");
        request.extend_from_slice(auth.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    let sent = stream.write_all(&request).await;
    // The request holds the proxy's credentials: gone before anything else happens.
    zeroize::Zeroize::zeroize(&mut request);
    sent.map_err(|e| ConnectError::Proxy(format!("the proxy closed the connection ({e})")))?;
    let status = read_status(&mut stream).await?;
    match status {
        200..=299 => Ok(stream),
        407 => Err(ConnectError::Proxy(
            "the proxy requires other credentials (407): check the user and password in the \
             proxy variable"
                .into(),
        )),
        status => Err(ConnectError::Proxy(format!(
            "the proxy refused to connect to {authority} ({status})"
        ))),
    }
}

/// Reads the answer head byte by byte (it is short, and nothing after it may be consumed:
/// the tunnelled protocol starts right there) and returns its status code.
async fn read_status(stream: &mut TcpStream) -> Result<u16, ConnectError> {
    let mut head = Vec::with_capacity(128);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return Err(ConnectError::Proxy("the proxy's answer is too long".into()));
        }
        match stream.read(&mut byte).await {
            Ok(0) => {
                return Err(ConnectError::Proxy(
                    "the proxy closed the connection before answering".into(),
                ));
            }
            Ok(_) => head.push(byte[0]),
            Err(e) => {
                return Err(ConnectError::Proxy(format!(
                    "reading the proxy's answer: {e}"
                )));
            }
        }
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut parts = std::str::from_utf8(line)
        .unwrap_or_default()
        .split_whitespace();
    match (parts.next(), parts.next().and_then(|s| s.parse().ok())) {
        (Some(version), Some(status)) if version.starts_with("HTTP/1.") => Ok(status),
        _ => Err(ConnectError::Proxy("the proxy's answer is not HTTP".into())),
    }
}
