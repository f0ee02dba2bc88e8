//! One running turn: the backend stream in, the turn's notifications out, to the connection
//! that started it, in the reference's order. It runs as its own task after the
//! `turn/start` result is on the wire, and stops at once when interrupted or when its
//! connection closes: dropping the stream closes the HTTP connection.

use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::connections::Session;
use super::threads::ThreadState;
use super::turn_failure;
use crate::backend::responses::{Message, ResponseEvent, StreamLimits, Target, TurnRequest};
use crate::backend::{BackendClient, BackendError, Caller, RecoveryObserver};
use crate::protocol::methods;
use crate::protocol::turns::{
    AccountRateLimitsUpdatedNotification, AgentMessageDeltaNotification, AuthRecoveryNotification,
    ErrorNotification, ItemCompletedNotification, ItemStartedNotification, ThreadItem,
    ThreadTokenUsage, ThreadTokenUsageUpdatedNotification, TokenUsageBreakdown, Turn,
    TurnCompletedNotification, TurnError, TurnStartedNotification, TurnStatus, UserInput,
};
use crate::provider::Route;
use crate::rpc::Peer;

/// Sends a turn's notifications to its connection, skipping those it opted out of.
#[derive(Clone)]
pub(super) struct Notifier {
    pub peer: Peer,
    pub session: Arc<Session>,
}

impl Notifier {
    pub async fn send<P: Serialize + ?Sized>(&self, method: &str, params: &P) {
        if !self.session.opted_out(method) {
            // A closed connection stops the turn through its close hook.
            let _ = self.peer.notify(method, params).await;
        }
    }
}

/// Everything a turn task owns.
pub(super) struct TurnTask {
    pub backend: BackendClient,
    /// Where the turn goes and whose bearer it sends.
    pub route: Route,
    pub notifier: Notifier,
    pub caller: Caller,
    pub thread: Arc<ThreadState>,
    pub turn_id: String,
    /// Unix milliseconds.
    pub started_at_ms: i64,
    pub model: String,
    pub instructions: Arc<str>,
    pub history: Vec<Message>,
    pub input: Vec<UserInput>,
    pub text: String,
    pub cancel: CancellationToken,
    pub limits: StreamLimits,
    /// Most bytes of answer kept.
    pub max_text_bytes: usize,
}

/// How the stream part of a turn ended.
enum End {
    Completed(Option<TokenUsageBreakdown>),
    Failed(TurnError),
    Interrupted,
}

/// Tells the client that the turn waits for new credentials, and how that went.
struct Recovery<'a> {
    notifier: &'a Notifier,
    provider: &'a str,
    thread_id: &'a str,
    turn_id: &'a str,
}

impl Recovery<'_> {
    fn params(&self, message: String) -> AuthRecoveryNotification {
        AuthRecoveryNotification {
            thread_id: self.thread_id.to_owned(),
            turn_id: self.turn_id.to_owned(),
            provider: self.provider.to_owned(),
            message,
        }
    }
}

impl RecoveryObserver for Recovery<'_> {
    fn started(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let p = self.params("the provider answered 401; renewing the credentials".into());
            self.notifier.send(methods::AUTH_RECOVERY_STARTED, &p).await;
        })
    }

    fn finished<'a>(&'a self, outcome: Result<(), &'a BackendError>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let message = match outcome {
                Ok(()) => "credentials renewed; retrying".to_owned(),
                Err(BackendError::Auth(e)) => format!("recovery failed ({}): {e}", e.kind()),
                Err(e) => format!("recovery failed: {e}"),
            };
            let p = self.params(message);
            self.notifier
                .send(methods::AUTH_RECOVERY_COMPLETED, &p)
                .await;
        })
    }
}

fn now_ms() -> i64 {
    crate::rpc::peer::now_ms() as i64
}

impl TurnTask {
    fn turn(&self, status: TurnStatus, error: Option<TurnError>) -> Turn {
        let done = status != TurnStatus::InProgress;
        let now = now_ms();
        Turn {
            id: self.turn_id.clone(),
            items: vec![],
            status,
            error,
            started_at: Some(self.started_at_ms / 1000),
            completed_at: done.then_some(now / 1000),
            duration_ms: done.then(|| (now - self.started_at_ms).max(0)),
        }
    }

    pub async fn run(mut self) {
        let n = self.notifier.clone();
        let (thread_id, turn_id) = (self.thread.id.clone(), self.turn_id.clone());
        n.send(
            methods::TURN_STARTED,
            &TurnStartedNotification {
                thread_id: thread_id.clone(),
                turn: self.turn(TurnStatus::InProgress, None),
            },
        )
        .await;
        let user = ThreadItem::UserMessage {
            id: uuid::Uuid::now_v7().to_string(),
            content: std::mem::take(&mut self.input),
        };
        self.item_started(user.clone()).await;
        self.item_completed(user).await;

        let mut agent_started = false;
        let mut answer = String::new();
        let mut rate_limits = None;
        let end = self
            .stream(&mut agent_started, &mut answer, &mut rate_limits)
            .await;
        let agent_id = format!("msg_{turn_id}");
        if agent_started {
            self.item_completed(ThreadItem::AgentMessage {
                id: agent_id,
                text: answer.clone(),
            })
            .await;
        }
        let mut said = vec![Message::User(std::mem::take(&mut self.text))];
        if !answer.is_empty() {
            said.push(Message::Assistant(answer));
        }
        let usage = match &end {
            End::Completed(u) => *u,
            _ => None,
        };
        let total = self.thread.finish(&turn_id, said, usage);
        if let Some(last) = usage {
            n.send(
                methods::THREAD_TOKEN_USAGE_UPDATED,
                &ThreadTokenUsageUpdatedNotification {
                    thread_id: thread_id.clone(),
                    turn_id: turn_id.clone(),
                    token_usage: ThreadTokenUsage {
                        total,
                        last,
                        model_context_window: None,
                    },
                },
            )
            .await;
        }
        if let Some(rate_limits) = rate_limits {
            n.send(
                methods::ACCOUNT_RATE_LIMITS_UPDATED,
                &AccountRateLimitsUpdatedNotification { rate_limits },
            )
            .await;
        }
        let (status, error) = match end {
            End::Completed(_) => (TurnStatus::Completed, None),
            End::Interrupted => (TurnStatus::Interrupted, None),
            End::Failed(error) => {
                n.send(
                    methods::ERROR,
                    &ErrorNotification {
                        thread_id: thread_id.clone(),
                        turn_id: turn_id.clone(),
                        will_retry: false,
                        error: error.clone(),
                    },
                )
                .await;
                (TurnStatus::Failed, Some(error))
            }
        };
        n.send(
            methods::TURN_COMPLETED,
            &TurnCompletedNotification {
                thread_id,
                turn: self.turn(status, error),
            },
        )
        .await;
    }

    /// Opens the stream and relays it until it completes, fails or is interrupted.
    async fn stream(
        &self,
        agent_started: &mut bool,
        answer: &mut String,
        rate_limits: &mut Option<crate::protocol::rate_limits::RateLimitSnapshot>,
    ) -> End {
        let mut input = self.history.clone();
        input.push(Message::User(self.text.clone()));
        let request = TurnRequest {
            model: &self.model,
            instructions: &self.instructions,
            session_id: &self.thread.id,
            input: &input,
        };
        let target = Target {
            url: &self.route.url,
            headers: &self.route.headers,
            auth: &self.route.auth,
        };
        let observer = Recovery {
            notifier: &self.notifier,
            provider: &self.route.provider,
            thread_id: &self.thread.id,
            turn_id: &self.turn_id,
        };
        let opened = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return End::Interrupted,
            opened = self.backend.stream_response(&self.caller, &target, &request, self.limits, &observer) => opened,
        };
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(e) => return End::Failed(turn_failure::from_backend(&e)),
        };
        *rate_limits = stream.rate_limits.take();
        let item_id = format!("msg_{}", self.turn_id);
        *agent_started = true;
        self.item_started(ThreadItem::AgentMessage {
            id: item_id.clone(),
            text: String::new(),
        })
        .await;
        loop {
            let next = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return End::Interrupted,
                next = stream.events.next() => next,
            };
            let event = match next {
                Some(Ok(event)) => event,
                Some(Err(e)) => return End::Failed(turn_failure::from_stream(&e, stream.status)),
                None => {
                    return End::Failed(turn_failure::from_stream(
                        &crate::backend::responses::StreamError::ClosedEarly,
                        stream.status,
                    ));
                }
            };
            match event {
                ResponseEvent::TextDelta(delta) => {
                    if answer.len() + delta.len() > self.max_text_bytes {
                        return End::Failed(turn_failure::text_too_large(self.max_text_bytes));
                    }
                    answer.push_str(&delta);
                    self.notifier
                        .send(
                            methods::AGENT_MESSAGE_DELTA,
                            &AgentMessageDeltaNotification {
                                thread_id: &self.thread.id,
                                turn_id: &self.turn_id,
                                item_id: &item_id,
                                delta: &delta,
                            },
                        )
                        .await;
                }
                // The whole text wins over the deltas, which a backend may have skipped.
                ResponseEvent::MessageDone(text) if text.len() <= self.max_text_bytes => {
                    *answer = text;
                }
                ResponseEvent::MessageDone(_) => {
                    return End::Failed(turn_failure::text_too_large(self.max_text_bytes));
                }
                ResponseEvent::Completed(usage) => {
                    return End::Completed(usage.map(|u| TokenUsageBreakdown {
                        input_tokens: u.input_tokens,
                        cached_input_tokens: u.input_tokens_details.map_or(0, |d| d.cached_tokens),
                        output_tokens: u.output_tokens,
                        reasoning_output_tokens:
                            u.output_tokens_details.map_or(0, |d| d.reasoning_tokens),
                        total_tokens: u.total_tokens,
                    }));
                }
                ResponseEvent::Failed(f) => return End::Failed(turn_failure::from_failed(&f)),
            }
        }
    }

    async fn item_started(&self, item: ThreadItem) {
        self.notifier
            .send(
                methods::ITEM_STARTED,
                &ItemStartedNotification {
                    thread_id: self.thread.id.clone(),
                    turn_id: self.turn_id.clone(),
                    started_at_ms: now_ms(),
                    item,
                },
            )
            .await;
    }

    async fn item_completed(&self, item: ThreadItem) {
        self.notifier
            .send(
                methods::ITEM_COMPLETED,
                &ItemCompletedNotification {
                    thread_id: self.thread.id.clone(),
                    turn_id: self.turn_id.clone(),
                    completed_at_ms: now_ms(),
                    item,
                },
            )
            .await;
    }
}
