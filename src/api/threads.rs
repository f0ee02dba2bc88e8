//! The threads of the process: in memory only, each owned by the connection that started
//! it and dropped with that connection (an ephemeral thread has nowhere else to live). A
//! thread runs at most one turn at a time and keeps the exchanges of its finished turns as
//! the context of the next, bounded in bytes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

use crate::backend::responses::Message;
use crate::protocol::turns::TokenUsageBreakdown;
use crate::rpc::ConnectionId;

/// Why a turn cannot start or be interrupted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum ThreadError {
    #[error("thread not found: {0}")]
    UnknownThread(String),
    #[error(
        "turn {turn} is still running on thread {thread}; interrupt it or wait for turn/completed"
    )]
    TurnRunning { thread: String, turn: String },
    #[error("turn {turn} is not running on thread {thread}")]
    TurnNotRunning { thread: String, turn: String },
}

struct Running {
    turn_id: String,
    cancel: CancellationToken,
}

struct Mutable {
    model: String,
    preview: String,
    history: VecDeque<Message>,
    history_bytes: usize,
    total_usage: TokenUsageBreakdown,
    running: Option<Running>,
}

pub(crate) struct ThreadState {
    pub id: String,
    pub owner: ConnectionId,
    pub cwd: String,
    /// The model provider every turn of the thread goes to.
    pub provider: String,
    pub created_at: i64,
    state: Mutex<Mutable>,
    /// Most bytes of history kept: the oldest exchanges go first.
    max_history_bytes: usize,
}

/// What a starting turn needs from its thread.
pub(crate) struct TurnStart {
    pub model: String,
    /// The finished exchanges, oldest first, followed by nothing: the caller adds the new
    /// user message.
    pub history: Vec<Message>,
    pub cancel: CancellationToken,
}

fn text_len(m: &Message) -> usize {
    match m {
        Message::User(t) | Message::Assistant(t) => t.len(),
    }
}

impl ThreadState {
    fn lock(&self) -> MutexGuard<'_, Mutable> {
        crate::unpoisoned::lock(&self.state)
    }

    pub fn model(&self) -> String {
        self.lock().model.clone()
    }

    pub fn preview(&self) -> String {
        self.lock().preview.clone()
    }

    /// Marks `turn_id` as this thread's running turn.
    pub fn begin(&self, turn_id: &str, model: Option<String>) -> Result<TurnStart, ThreadError> {
        let mut s = self.lock();
        if let Some(r) = &s.running {
            return Err(ThreadError::TurnRunning {
                thread: self.id.clone(),
                turn: r.turn_id.clone(),
            });
        }
        if let Some(model) = model {
            s.model = model;
        }
        let cancel = CancellationToken::new();
        s.running = Some(Running {
            turn_id: turn_id.to_owned(),
            cancel: cancel.clone(),
        });
        Ok(TurnStart {
            model: s.model.clone(),
            history: s.history.iter().cloned().collect(),
            cancel,
        })
    }

    pub fn interrupt(&self, turn_id: &str) -> Result<(), ThreadError> {
        let s = self.lock();
        match &s.running {
            Some(r) if r.turn_id == turn_id => {
                r.cancel.cancel();
                Ok(())
            }
            _ => Err(ThreadError::TurnNotRunning {
                thread: self.id.clone(),
                turn: turn_id.to_owned(),
            }),
        }
    }

    /// Ends the running turn, keeping what was said in it; returns the thread's usage
    /// total including `usage`.
    pub fn finish(
        &self,
        turn_id: &str,
        said: Vec<Message>,
        usage: Option<TokenUsageBreakdown>,
    ) -> TokenUsageBreakdown {
        let mut s = self.lock();
        if s.running.as_ref().is_some_and(|r| r.turn_id == turn_id) {
            s.running = None;
        }
        if s.preview.is_empty()
            && let Some(Message::User(first)) = said.first()
        {
            s.preview = first.chars().take(200).collect();
        }
        for m in said {
            s.history_bytes += text_len(&m);
            s.history.push_back(m);
        }
        while s.history_bytes > self.max_history_bytes {
            let Some(old) = s.history.pop_front() else {
                break;
            };
            s.history_bytes -= text_len(&old);
        }
        if let Some(u) = usage {
            s.total_usage += u;
        }
        s.total_usage
    }

    fn cancel_running(&self) {
        if let Some(r) = &self.lock().running {
            r.cancel.cancel();
        }
    }
}

#[derive(Default)]
pub(crate) struct Threads {
    threads: Mutex<HashMap<String, Arc<ThreadState>>>,
}

impl Threads {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<ThreadState>>> {
        crate::unpoisoned::lock(&self.threads)
    }

    pub fn create(
        &self,
        owner: ConnectionId,
        model: String,
        provider: String,
        cwd: String,
        max_history_bytes: usize,
    ) -> Arc<ThreadState> {
        let id = uuid::Uuid::now_v7().to_string();
        let thread = Arc::new(ThreadState {
            id: id.clone(),
            owner,
            cwd,
            provider,
            created_at: unix_seconds(),
            state: Mutex::new(Mutable {
                model,
                preview: String::new(),
                history: VecDeque::new(),
                history_bytes: 0,
                total_usage: TokenUsageBreakdown::default(),
                running: None,
            }),
            max_history_bytes,
        });
        self.lock().insert(id, thread.clone());
        thread
    }

    /// The thread `id` of connection `owner`; other connections' threads are not found.
    pub fn get(&self, owner: ConnectionId, id: &str) -> Result<Arc<ThreadState>, ThreadError> {
        self.lock()
            .get(id)
            .filter(|t| t.owner == owner)
            .cloned()
            .ok_or_else(|| ThreadError::UnknownThread(id.to_owned()))
    }

    /// The connection is gone: its threads go, and their turns stop at once.
    pub fn connection_closed(&self, owner: ConnectionId) {
        let gone: Vec<Arc<ThreadState>> = {
            let mut threads = self.lock();
            let ids: Vec<String> = threads
                .values()
                .filter(|t| t.owner == owner)
                .map(|t| t.id.clone())
                .collect();
            ids.iter().filter_map(|id| threads.remove(id)).collect()
        };
        for t in gone {
            t.cancel_running();
        }
    }
}

/// Now, in the Unix seconds the protocol's timestamps use.
pub(super) fn unix_seconds() -> i64 {
    (crate::rpc::peer::now_ms() / 1000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_turn_at_a_time_and_history_is_bounded() {
        let threads = Threads::default();
        let t = threads.create(ConnectionId(1), "m".into(), "openai".into(), "/".into(), 10);
        let start = t.begin("a", None).unwrap();
        assert!(start.history.is_empty());
        assert!(matches!(
            t.begin("b", None),
            Err(ThreadError::TurnRunning { .. })
        ));
        t.finish(
            "a",
            vec![
                Message::User("hello".into()),
                Message::Assistant("world".into()),
            ],
            None,
        );
        let start = t.begin("b", Some("m2".into())).unwrap();
        assert_eq!(start.model, "m2");
        assert_eq!(start.history.len(), 2);
        t.finish("b", vec![Message::User("x".into())], None);
        // 11 bytes over a bound of 10: the oldest message went.
        assert_eq!(t.begin("c", None).unwrap().history.len(), 2);
        assert_eq!(t.preview(), "hello");
    }

    #[test]
    fn a_closed_connection_takes_its_threads_and_stops_their_turns() {
        let threads = Threads::default();
        let mine = threads.create(
            ConnectionId(1),
            "m".into(),
            "openai".into(),
            "/".into(),
            100,
        );
        let other = threads.create(
            ConnectionId(2),
            "m".into(),
            "openai".into(),
            "/".into(),
            100,
        );
        let cancel = mine.begin("a", None).unwrap().cancel;
        assert!(threads.get(ConnectionId(2), &mine.id).is_err());
        threads.connection_closed(ConnectionId(1));
        assert!(cancel.is_cancelled());
        assert!(threads.get(ConnectionId(1), &mine.id).is_err());
        assert!(threads.get(ConnectionId(2), &other.id).is_ok());
    }
}
