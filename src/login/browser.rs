//! The browser sign-in: authorization code with PKCE through the local callback server.
//!
//! The callback's HTTP handler never exchanges the code itself: it hands the code to the
//! flow's task and waits for the outcome. So a browser that sends the callback twice
//! (a reload, a prefetch) cannot spend the code twice, and a closed tab cannot abandon an
//! exchange halfway: the task owns it from start to end.

use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use subtle::ConstantTimeEq;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::callback::{self, Reply, RouteFuture, Routes};
use super::{Logins, pages};
use crate::auth::storage::SecretText;

/// How long the callback's answer waits for the exchange; the issuer calls have their own,
/// shorter, budgets.
const EXCHANGE_WAIT: Duration = Duration::from_secs(120);
/// How long the server stays up after a success for the browser to fetch `/success`.
const SUCCESS_GRACE: Duration = Duration::from_secs(10);

const ENTITLEMENT: &str = "Codex is not enabled for your workspace. Contact your workspace administrator to request access to Codex.";
const MISSING_CODE: &str = "Missing authorization code. Sign-in could not be completed.";

pub(super) enum Event {
    Code(SecretText),
    /// The issuer sent the user back without a code; the text is for the user.
    Refused(String),
    Cancel,
    SuccessShown,
}

#[derive(Clone, PartialEq)]
pub(super) enum Phase {
    Waiting,
    Exchanging,
    Succeeded,
    Failed(String),
}

pub(super) struct CallbackRoutes {
    state: SecretText,
    events: mpsc::Sender<Event>,
    phase: watch::Receiver<Phase>,
}

impl CallbackRoutes {
    pub fn new(
        state: SecretText,
        events: mpsc::Sender<Event>,
        phase: watch::Receiver<Phase>,
    ) -> Self {
        Self {
            state,
            events,
            phase,
        }
    }

    /// Events are few and the channel is bounded: when it is full the flow is already
    /// ending, and dropping one more event loses nothing.
    fn tell(&self, event: Event) {
        let _ = self.events.try_send(event);
    }
}

impl Routes for CallbackRoutes {
    fn callback(self: Arc<Self>, query: Option<String>) -> RouteFuture {
        Box::pin(async move {
            let mut state = None;
            let mut code = None;
            let mut error = None;
            let mut description = None;
            for (k, v) in url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
                match &*k {
                    "state" => state = Some(SecretText::new(v.into_owned())),
                    "code" => code = Some(SecretText::new(v.into_owned())),
                    "error" => error = Some(v.into_owned()),
                    "error_description" => description = Some(v.into_owned()),
                    _ => {}
                }
            }
            let state_ok = state.is_some_and(|s| {
                bool::from(s.expose().as_bytes().ct_eq(self.state.expose().as_bytes()))
            });
            if !state_ok {
                // Not this sign-in's browser: refused, and the sign-in goes on.
                return callback::text(StatusCode::BAD_REQUEST, "State mismatch");
            }
            if let Some(error) = error {
                let detail = description.unwrap_or_else(|| error.clone());
                let message =
                    if error == "access_denied" && detail.contains("missing_codex_entitlement") {
                        ENTITLEMENT.to_owned()
                    } else {
                        format!("Sign-in failed: {detail}")
                    };
                self.tell(Event::Refused(message.clone()));
                return error_page(&message);
            }
            let Some(code) = code else {
                self.tell(Event::Refused(MISSING_CODE.into()));
                return error_page(MISSING_CODE);
            };
            if *self.phase.borrow() == Phase::Waiting {
                self.tell(Event::Code(code));
            }
            let mut phase = self.phase.clone();
            let outcome = tokio::time::timeout(
                EXCHANGE_WAIT,
                phase.wait_for(|p| matches!(p, Phase::Succeeded | Phase::Failed(_))),
            )
            .await;
            match outcome.ok().and_then(Result::ok).map(|p| p.clone()) {
                Some(Phase::Succeeded) => callback::redirect("/success"),
                Some(Phase::Failed(message)) => error_page(&message),
                _ => error_page("The sign-in did not finish; start it again."),
            }
        })
    }

    fn success(self: Arc<Self>) -> Reply {
        if *self.phase.borrow() == Phase::Succeeded {
            self.tell(Event::SuccessShown);
            callback::reply(StatusCode::OK, "text/html; charset=utf-8", pages::success())
        } else {
            error_page("No sign-in has completed here.")
        }
    }

    fn cancel(self: Arc<Self>) -> Reply {
        self.tell(Event::Cancel);
        callback::text(StatusCode::OK, "Login cancelled")
    }
}

fn error_page(message: &str) -> Reply {
    callback::reply(
        StatusCode::OK,
        "text/html; charset=utf-8",
        pages::error(message),
    )
}

pub(super) struct BrowserRun {
    pub login_id: String,
    pub cancel: CancellationToken,
    pub events: mpsc::Receiver<Event>,
    pub phase: watch::Sender<Phase>,
    pub redirect_uri: String,
    pub verifier: SecretText,
    pub timeout: Duration,
    pub stop_server: CancellationToken,
    pub server: tokio::task::JoinHandle<()>,
}

impl Logins {
    /// The flow's task: waits for the callback, a cancel or the time limit, completes or
    /// reports the sign-in, and frees the port before it returns.
    pub(super) async fn run_browser(self: Arc<Self>, mut run: BrowserRun) {
        let deadline = tokio::time::sleep(run.timeout);
        tokio::pin!(deadline);
        let outcome: Result<(), String> = loop {
            tokio::select! {
                _ = run.cancel.cancelled() => break Err("Login was not completed".into()),
                _ = &mut deadline => break Err("Login timed out".into()),
                event = run.events.recv() => match event {
                    Some(Event::Code(code)) => {
                        run.phase.send_replace(Phase::Exchanging);
                        break self
                            .complete(&run.login_id, &code, &run.redirect_uri, &run.verifier, &run.cancel, true)
                            .await;
                    }
                    Some(Event::Refused(message)) => break Err(message),
                    Some(Event::Cancel) => break Err("Login cancelled".into()),
                    Some(Event::SuccessShown) | None => {}
                },
            }
        };
        match outcome {
            Ok(()) => {
                run.phase.send_replace(Phase::Succeeded);
                // Up until the browser has its success page, or briefly.
                let grace = tokio::time::sleep(SUCCESS_GRACE);
                tokio::pin!(grace);
                loop {
                    tokio::select! {
                        _ = &mut grace => break,
                        _ = run.cancel.cancelled() => break,
                        // The page was shown, or someone needs the port (`/cancel`).
                        event = run.events.recv() => match event {
                            Some(Event::SuccessShown | Event::Cancel) | None => break,
                            Some(_) => {}
                        },
                    }
                }
            }
            Err(message) => {
                let message = format!("Login server error: {message}");
                run.phase.send_replace(Phase::Failed(message.clone()));
                self.auth.login_failed(run.login_id.clone(), message);
            }
        }
        run.stop_server.cancel();
        let _ = run.server.await;
        self.finish(&run.login_id);
    }
}
