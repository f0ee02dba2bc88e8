//! Auth events into notifications. The auth state reports each change once, in its own
//! types; this turns it into `account/login/completed` and `account/updated`.
//!
//! Order matters on the wire: a login's result must precede its notifications. A change
//! made inside a request handler is therefore announced from that request's after-response
//! queue (found through a task-local); any other change (a refresh started by one request
//! and finished under another, later a file watch) goes through one process-wide queue,
//! drained by one task at a time so announcements keep the order of the changes.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

use super::connections::Connections;
use crate::auth::{AuthEvent, AuthStatus, Mode};
use crate::protocol::account::{
    AccountLoginCompletedNotification, AccountUpdatedNotification, AuthMode, WarningNotification,
};
use crate::protocol::methods::{ACCOUNT_LOGIN_COMPLETED, ACCOUNT_UPDATED, WARNING};
use crate::rpc::dispatch::AfterResponse;

tokio::task_local! {
    static REQUEST_AFTER: AfterResponse;
}

/// Runs a request handler so that auth changes it causes are announced after its response.
pub(crate) async fn in_request<F: Future>(after: AfterResponse, handler: F) -> F::Output {
    REQUEST_AFTER.scope(after, handler).await
}

pub(crate) fn account_updated(status: AuthStatus) -> AccountUpdatedNotification {
    AccountUpdatedNotification {
        auth_mode: status.mode.map(|m| match m {
            Mode::ApiKey => AuthMode::ApiKey,
            Mode::Chatgpt => AuthMode::Chatgpt,
            Mode::ChatgptAuthTokens => AuthMode::ChatgptAuthTokens,
        }),
        plan_type: status.plan,
        reason: None,
    }
}

async fn announce(connections: Arc<Connections>, event: AuthEvent) {
    let status = match event {
        AuthEvent::LoggedIn { status, login_id } => {
            let completed = AccountLoginCompletedNotification {
                login_id,
                success: true,
                error: None,
                onboarding_entrypoint: None,
            };
            connections
                .broadcast(ACCOUNT_LOGIN_COMPLETED, &completed)
                .await;
            status
        }
        AuthEvent::LoginFailed { login_id, error } => {
            let completed = AccountLoginCompletedNotification {
                login_id: Some(login_id),
                success: false,
                error: Some(error),
                onboarding_entrypoint: None,
            };
            connections
                .broadcast(ACCOUNT_LOGIN_COMPLETED, &completed)
                .await;
            return;
        }
        AuthEvent::Changed(status) => status,
        AuthEvent::Warning { message } => {
            let warning = WarningNotification {
                message,
                thread_id: None,
            };
            connections.broadcast(WARNING, &warning).await;
            return;
        }
    };
    connections
        .broadcast(ACCOUNT_UPDATED, &account_updated(status))
        .await;
}

/// The process-wide queue for changes made outside a request.
struct Backlog {
    events: VecDeque<AuthEvent>,
    draining: bool,
}

/// Most events kept waiting; a `Changed` event carries the whole status, so when the queue
/// is this long only the newest of consecutive ones is kept.
const MAX_BACKLOG: usize = 64;

pub(crate) struct Announcer {
    connections: Arc<Connections>,
    backlog: Mutex<Backlog>,
}

impl Announcer {
    pub fn new(connections: Arc<Connections>) -> Arc<Self> {
        Arc::new(Self {
            connections,
            backlog: Mutex::new(Backlog {
                events: VecDeque::new(),
                draining: false,
            }),
        })
    }

    /// Takes one event (called by the auth state with its lock held: never blocks).
    pub fn on_event(self: &Arc<Self>, event: AuthEvent) {
        let connections = self.connections.clone();
        let in_request = REQUEST_AFTER
            .try_with(|after| after.push(announce(connections, event.clone())))
            .is_ok();
        if in_request {
            return;
        }
        let mut backlog = crate::unpoisoned::lock(&self.backlog);
        if backlog.events.len() >= MAX_BACKLOG
            && matches!(event, AuthEvent::Changed(_))
            && matches!(backlog.events.back(), Some(AuthEvent::Changed(_)))
        {
            backlog.events.pop_back();
        }
        backlog.events.push_back(event);
        if !backlog.draining {
            backlog.draining = true;
            let this = self.clone();
            // A warning can come from a store call made before the runtime runs (seeding
            // the store at start-up); it waits for the next event then.
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(async move { this.drain().await })),
                Err(_) => backlog.draining = false,
            }
        }
    }

    async fn drain(self: Arc<Self>) {
        loop {
            let next = {
                let mut backlog = crate::unpoisoned::lock(&self.backlog);
                match backlog.events.pop_front() {
                    Some(event) => event,
                    None => {
                        backlog.draining = false;
                        return;
                    }
                }
            };
            announce(self.connections.clone(), next).await;
        }
    }
}
