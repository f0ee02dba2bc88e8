//! A TCP relay between workers and a broker that the test can cut and restore, and point
//! at another address: the network between machines failing, or a broker coming back on
//! a new port after a restart, without the worker knowing.

use std::sync::{Arc, Mutex};

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

struct State {
    target: String,
    cut: bool,
    /// Every relayed connection; aborting one drops both of its sockets.
    links: JoinSet<()>,
    accepted: usize,
}

pub struct Relay {
    /// `127.0.0.1:PORT`, where clients connect.
    pub addr: String,
    state: Arc<Mutex<State>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Relays every connection to `target` (`HOST:PORT`) until cut.
    pub async fn start(target: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State {
            target: target.to_owned(),
            cut: false,
            links: JoinSet::new(),
            accepted: 0,
        }));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let mut state = shared.lock().unwrap();
                if state.cut {
                    // Accepted and dropped at once: the client sees the connection end.
                    continue;
                }
                state.accepted += 1;
                let target = state.target.clone();
                state.links.spawn(async move {
                    let _ = inbound.set_nodelay(true);
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let _ = outbound.set_nodelay(true);
                    let _ = copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                // Finished links are reaped so the set stays small.
                while state.links.try_join_next().is_some() {}
            }
        });
        Relay {
            addr,
            state,
            accept,
        }
    }

    /// Drops every relayed connection and refuses new ones until [`Relay::restore`].
    pub fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.cut = true;
        state.links.abort_all();
    }

    pub fn restore(&self) {
        self.state.lock().unwrap().cut = false;
    }

    /// Relays new connections to `target` from now on; open ones keep their old target.
    pub fn retarget(&self, target: &str) {
        self.state.lock().unwrap().target = target.to_owned();
    }

    /// Connections relayed so far (a reconnect shows as one more).
    pub fn accepted(&self) -> usize {
        self.state.lock().unwrap().accepted
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.state.lock().unwrap().links.abort_all();
    }
}
