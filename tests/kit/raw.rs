//! Raw sockets for the tests that misbehave on purpose: a WebSocket client that writes its
//! frames by hand and reads only when told to (optionally on a cramped socket, so that
//! not reading is felt soon), unfinished HTTP request heads, a backend that accepts
//! connections and never answers, and what the kernel says about a child process, a pipe
//! and the server's end of a socket (`/proc`, `ioctl`, `fcntl`).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

use super::wait::{WAIT, within};

pub const TEXT: u8 = 0x1;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// One client frame, final and masked with an all-zero key (the payload goes out as is).
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        len @ 0..=125 => out.push(0x80 | len as u8),
        len @ 126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend((len as u16).to_be_bytes());
        }
        len => {
            out.push(0x80 | 127);
            out.extend((len as u64).to_be_bytes());
        }
    }
    out.extend([0u8; 4]);
    out.extend_from_slice(payload);
    out
}

pub fn text_frame(text: &str) -> Vec<u8> {
    frame(TEXT, text.as_bytes())
}

pub fn ping_frame(payload: &[u8]) -> Vec<u8> {
    frame(PING, payload)
}

/// `count` copies of `frame`, to go out in one write.
pub fn repeated(frame: &[u8], count: usize) -> Vec<u8> {
    frame.repeat(count)
}

/// A frame from the server (servers never mask).
#[derive(Debug)]
pub struct ServerFrame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl ServerFrame {
    /// The payload of a text frame as JSON.
    pub fn json(&self) -> Value {
        assert_eq!(self.opcode, TEXT, "expected a text frame, got {self:?}");
        serde_json::from_slice(&self.payload).expect("a text frame holding JSON")
    }

    /// The status code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, CLOSE, "expected a close frame, got {self:?}");
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// How a connection ended, as the client saw it.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// An orderly end of stream.
    Eof,
    /// A reset or another error on read.
    Error(io::ErrorKind),
}

/// How a client's socket is set up.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Socket {
    /// As the system sets it up.
    Plain,
    /// A small receive buffer and small segments (536 bytes, the classic default), so
    /// that the kernels on both ends hold back little for a client that stops reading: the
    /// server's send buffer grows with the segment size the client announces.
    Cramped,
}

/// A TCP connection to `addr`, set up as `socket` says.
pub async fn tcp(addr: &str, socket: Socket) -> TcpStream {
    let addr: SocketAddr = addr.parse().expect("an IP:PORT address");
    let tcp = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .unwrap();
    if socket == Socket::Cramped {
        tcp.set_recv_buffer_size(4096).unwrap();
        set_max_segment(&tcp, 536);
    }
    within("a TCP connection", tcp.connect(addr))
        .await
        .expect("connect")
}

#[cfg(unix)]
fn set_max_segment(socket: &TcpSocket, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: TCP_MAXSEG reads one c_int from the pointer, which outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "TCP_MAXSEG: {}", io::Error::last_os_error());
}

#[cfg(not(unix))]
fn set_max_segment(_socket: &TcpSocket, _bytes: i32) {}

/// Opens a connection and sends the start of an HTTP request head, never its end.
pub async fn unfinished_head(addr: &str) -> TcpStream {
    let mut stream = tcp(addr, Socket::Plain).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    stream
}

/// Reads (and drops) whatever comes until the peer ends the connection; panics if it has
/// not ended within [`WAIT`].
pub async fn until_closed(stream: &mut TcpStream) -> Ended {
    within("the server to end the connection", async {
        let mut sink = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut sink).await {
                Ok(0) => return Ended::Eof,
                Ok(_) => {}
                Err(e) => return Ended::Error(e.kind()),
            }
        }
    })
    .await
}

/// A WebSocket client on a bare TCP stream: frames are written by hand and nothing is
/// read unless asked, not even pings.
pub struct RawWs {
    pub stream: TcpStream,
}

impl RawWs {
    /// Upgrades a fresh connection to `addr`, set up as `socket` says.
    pub async fn connect(addr: &str, socket: Socket) -> RawWs {
        let mut stream = tcp(addr, socket).await;
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        within("the WebSocket upgrade", async {
            stream.write_all(request.as_bytes()).await.unwrap();
            // Byte by byte: nothing after the head may be consumed.
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                head.push(stream.read_u8().await.expect("the upgrade response"));
            }
            let head = String::from_utf8_lossy(&head);
            assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        })
        .await;
        RawWs { stream }
    }

    /// Sends `bytes` (whole frames), bounded.
    pub async fn send(&mut self, bytes: &[u8]) {
        within("a write to the server", self.stream.write_all(bytes))
            .await
            .expect("write to the server");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send(&text_frame(text)).await;
    }

    /// The next frame from the server, bounded; `Err` when the connection ended first.
    pub async fn next_frame(&mut self) -> Result<ServerFrame, Ended> {
        within("a frame from the server", async {
            let mut head = [0u8; 2];
            read_exact(&mut self.stream, &mut head).await?;
            assert_eq!(head[0] & 0x80, 0x80, "fragmented frames are not expected");
            assert_eq!(head[1] & 0x80, 0, "a server frame must not be masked");
            let len = match head[1] & 0x7F {
                126 => {
                    let mut b = [0u8; 2];
                    read_exact(&mut self.stream, &mut b).await?;
                    u16::from_be_bytes(b) as usize
                }
                127 => {
                    let mut b = [0u8; 8];
                    read_exact(&mut self.stream, &mut b).await?;
                    u64::from_be_bytes(b) as usize
                }
                len => len as usize,
            };
            let mut payload = vec![0u8; len];
            read_exact(&mut self.stream, &mut payload).await?;
            Ok(ServerFrame {
                opcode: head[0] & 0x0F,
                payload,
            })
        })
        .await
    }

    /// The next text frame, skipping pongs.
    pub async fn next_json(&mut self) -> Value {
        loop {
            let frame = self.next_frame().await.expect("a text frame");
            if frame.opcode != PONG {
                return frame.json();
            }
        }
    }

    /// Writes `batch` again and again and never reads, until a write fails because the
    /// server let go of the connection; returns how many batches went out. `after_each`
    /// runs after every batch with the count so far. Panics if the server still takes
    /// writes after [`WAIT`].
    pub async fn flood_until_cut_off(
        &mut self,
        batch: &[u8],
        mut after_each: impl FnMut(usize),
    ) -> usize {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut sent = 0;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.write_all(batch)).await {
                Ok(Ok(())) => sent += 1,
                Ok(Err(_)) => return sent,
                Err(_) => panic!("still connected after {WAIT:?} of flooding ({sent} batches)"),
            }
            after_each(sent);
            tokio::task::yield_now().await;
        }
    }

    /// Bytes the server's socket holds for this client (see [`peer_send_queue`]).
    pub fn held_by_server(&self) -> usize {
        peer_send_queue(&self.stream).expect("the server's socket in /proc/net/tcp")
    }

    /// Reads (and drops) whatever comes until the server ends the connection.
    pub async fn until_closed(&mut self) -> Ended {
        until_closed(&mut self.stream).await
    }
}

async fn read_exact(stream: &mut TcpStream, buf: &mut [u8]) -> Result<(), Ended> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(Ended::Eof),
        Err(e) => Err(Ended::Error(e.kind())),
    }
}

/// A backend on 127.0.0.1 that accepts connections, reads nothing and never answers: a
/// call to it lasts until the caller gives up. Counts the connections it accepted.
pub struct SilentBackend {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl SilentBackend {
    pub async fn start() -> SilentBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        SilentBackend {
            addr,
            accepted,
            task,
        }
    }

    /// The `chatgpt_base_url` that points at this backend.
    pub fn base_url(&self) -> String {
        format!("http://{}/backend-api/", self.addr)
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for SilentBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The value of `key` in `/proc/<pid>/status` (`None` once the process is gone).
pub fn proc_status(pid: u32, key: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k == key).then(|| v.trim().to_owned())
    })
}

/// The resident memory of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let kib: u64 = proc_status(pid, "VmRSS")?
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Whether process `pid` runs `name` and has started its own `main`: it blocks SIGTERM,
/// or catches it (authbridge blocks it first thing, then installs its handler).
pub fn has_started(pid: u32, name: &str) -> bool {
    if proc_status(pid, "Name").as_deref() != Some(name) {
        return false;
    }
    // `main` blocks SIGTERM first thing, then installs a handler and unblocks it (on a
    // one-thread runtime nothing else shows that it runs): either mask says main began.
    let has_sigterm = |field: &str| {
        proc_status(pid, field)
            .and_then(|m| u64::from_str_radix(&m, 16).ok())
            .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
    };
    has_sigterm("SigBlk") || has_sigterm("SigCgt")
}

/// Bytes written into a pipe (or socket) and not read yet, seen from its read end `fd`.
#[cfg(unix)]
pub fn unread_bytes(fd: &impl std::os::fd::AsRawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which outlives the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "FIONREAD: {}", io::Error::last_os_error());
    n as usize
}

/// How many bytes the pipe whose end is `fd` holds at most.
#[cfg(target_os = "linux")]
pub fn pipe_capacity(fd: &impl std::os::fd::AsRawFd) -> usize {
    // SAFETY: F_GETPIPE_SZ takes no argument and returns the size.
    let size = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) };
    assert!(size > 0, "F_GETPIPE_SZ: {}", io::Error::last_os_error());
    size as usize
}

/// Bytes the far end of `stream` has queued for it and not had acknowledged yet: what a
/// server holds in its socket for a client that does not read. IPv4 only (read from
/// `/proc/net/tcp`, which lists the far end's socket too when it is on this host).
pub fn peer_send_queue(stream: &TcpStream) -> Option<usize> {
    fn hex(addr: SocketAddr) -> Option<String> {
        let SocketAddr::V4(addr) = addr else {
            return None;
        };
        let ip = u32::from_le_bytes(addr.ip().octets());
        Some(format!("{ip:08X}:{:04X}", addr.port()))
    }
    let (far, near) = (
        hex(stream.peer_addr().ok()?)?,
        hex(stream.local_addr().ok()?)?,
    );
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1..3)? != [far.as_str(), near.as_str()] {
            return None;
        }
        let (tx, _rx) = fields.get(4)?.split_once(':')?;
        usize::from_str_radix(tx, 16).ok()
    })
}
