//! A byte stream to another host for the protocols reqwest does not speak (WebSocket):
//! direct or through the proxy the variables name, then TLS for `wss://`, with the same
//! roots as every other connection.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use url::Url;

use super::{Network, diagnose, tunnel};

/// What a connection is read and written through.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Why no stream came about: each says where it failed, never a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("proxy: {0}")]
    Proxy(String),
    #[error("TLS: {0}")]
    Tls(String),
}

impl Network {
    /// A stream to the host of `url` (`ws://`, `wss://`, `http://` or `https://`), through
    /// the proxy when the variables say so; TLS when the scheme is secure. The caller bounds
    /// the time it may take.
    pub async fn connect(&self, url: &Url) -> Result<Box<dyn Io>, ConnectError> {
        let host = url
            .host_str()
            .ok_or_else(|| ConnectError::Connect("the URL names no host".into()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = url
            .port_or_known_default()
            .ok_or_else(|| ConnectError::Connect("the URL names no port".into()))?;
        let tcp = match self.proxies().for_url(url) {
            Some(proxy) => tunnel::connect(&proxy, host, port).await?,
            None => {
                let tcp = TcpStream::connect((host, port))
                    .await
                    .map_err(|e| ConnectError::Connect(format!("{host}:{port}: {e}")))?;
                tcp.set_nodelay(true).ok();
                tcp
            }
        };
        if !matches!(url.scheme(), "wss" | "https") {
            return Ok(Box::new(tcp));
        }
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| ConnectError::Tls(format!("{host} is not a valid server name")))?;
        let mut config = (*self.tls()).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| {
                ConnectError::Tls(
                    diagnose::describe_failure(&e).unwrap_or_else(|| format!("handshake: {e}")),
                )
            })?;
        Ok(Box::new(tls))
    }
}
