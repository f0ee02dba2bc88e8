//! An HTTP CONNECT proxy stand-in, as a company's egress proxy: it requires
//! `Proxy-Authorization`, records every CONNECT, and knows names such as `backend.test`
//! that nothing else resolves, so a client that goes around it cannot even find its
//! destination and a test cannot pass by accident.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One request the proxy received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The request line's method and target (`CONNECT backend.test:443`).
    pub request: String,
    /// Whether it carried the expected credentials.
    pub authorized: bool,
    /// The status the proxy answered.
    pub status: u16,
}

#[derive(Default)]
struct State {
    routes: HashMap<String, SocketAddr>,
    seen: Vec<Seen>,
}

pub struct ConnectProxy {
    pub addr: SocketAddr,
    user: String,
    password: String,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl ConnectProxy {
    /// A proxy on 127.0.0.1 accepting `user:password` only.
    pub async fn start(user: &str, password: &str) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve(tcp, shared.clone(), expected.clone()));
            }
        });
        ConnectProxy {
            addr,
            user: user.into(),
            password: password.into(),
            state,
            task,
        }
    }

    /// CONNECTs to `authority` (`name:port`) reach `to`.
    pub fn route(&self, authority: &str, to: SocketAddr) {
        self.state
            .lock()
            .unwrap()
            .routes
            .insert(authority.to_owned(), to);
    }

    /// `http://user:password@127.0.0.1:PORT`, as a proxy variable holds it.
    pub fn url(&self) -> String {
        self.url_as(&self.user, &self.password)
    }

    /// The proxy's URL with other credentials.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// The targets of the CONNECTs the proxy let through.
    pub fn tunnels(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter(|s| s.status == 200)
            .map(|s| s.request.trim_start_matches("CONNECT ").to_owned())
            .collect()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut tcp: TcpStream, state: Arc<Mutex<State>>, expected: String) {
    let Some(head) = read_head(&mut tcp).await else {
        return;
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let authorized = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("proxy-authorization") && value.trim() == expected
        })
    });
    let route = state.lock().unwrap().routes.get(target).copied();
    let status = match (method, authorized, route) {
        ("CONNECT", false, _) => 407,
        ("CONNECT", true, None) => 502,
        ("CONNECT", true, Some(_)) => 200,
        _ => 405,
    };
    state.lock().unwrap().seen.push(Seen {
        request: format!("{method} {target}"),
        authorized,
        status,
    });
    let upstream = match route {
        Some(to) if status == 200 => TcpStream::connect(to).await.ok(),
        _ => None,
    };
    let answer = match (status, &upstream) {
        (200, Some(_)) => "HTTP/1.1 200 Connection established\r\n\r\n",
        (200, None) => "HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n",
        (407, _) => {
            "HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic realm=\"test\"\r\ncontent-length: 0\r\n\r\n"
        }
        (502, _) => "HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n",
        _ => "HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n",
    };
    if tcp.write_all(answer.as_bytes()).await.is_err() {
        return;
    }
    if let Some(mut upstream) = upstream {
        let _ = tokio::io::copy_bidirectional(&mut tcp, &mut upstream).await;
    }
}

/// The request head, at most 16 KiB, read byte by byte so nothing of the tunnel is taken.
async fn read_head(tcp: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 || tcp.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).ok()
}
