//! The two directions of the pass-through and the few messages the worker touches.
//!
//! Parent to child ([`parent_to_child`]): every line is forwarded as it came, except the
//! first `initialize`, whose `capabilities.experimentalApi` is forced to true (the
//! `chatgptAuthTokens` login needs it). Once that `initialize` is sent, the next parent
//! message waits behind a gate until the worker has logged the child in; while a login is
//! still owed (the broker had no credential), each parent request first waits for another
//! attempt.
//!
//! Child to parent ([`ChildToParent`]): the child's answer to `initialize` is held while the
//! worker logs the child in (`account/login/start` under an `authbridge-worker:N` id), then
//! released together with anything the child said meanwhile. Answers to the worker's own
//! requests, and the `account/login/completed` / `account/updated` its logins cause, are
//! swallowed. `account/chatgptAuthTokens/refresh` requests are answered from the broker
//! (see [`answer_refresh`]); every other line goes to the parent as it came.
//!
//! The same login runs again whenever the child should hold a newer token: the broker
//! announced a newer generation (`credential/changed`), the broker connection was made
//! again (a notice may have been missed: the worker reads and compares), or the child
//! answered a parent's request with the backend's 401 without asking for a refresh (see
//! [`super::resend`]: the token is reported, and the request is sent once more after the
//! login). While such a login runs the gate is shut, so the parent's next request reaches
//! the child only once it holds the new token; every step of the login is bounded.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::broker_client::{BrokerClient, BrokerError, Credential, News};
use super::resend::InFlight;
use crate::rpc::RpcError;
use crate::rpc::envelope::{ErrorObject, RequestId, encode};

/// Every id the worker itself uses toward the child starts with this; the parent's ids
/// are never strings with this prefix in practice, and the child's answers to these ids
/// never reach the parent.
pub const WRAPPER_ID_PREFIX: &str = "authbridge-worker:";
const INITIALIZE: &str = "initialize";
const LOGIN_START: &str = "account/login/start";
const REFRESH: &str = "account/chatgptAuthTokens/refresh";
const LOGIN_COMPLETED: &str = "account/login/completed";
const ACCOUNT_UPDATED: &str = "account/updated";
const EXTERNAL_MODE: &str = "chatgptAuthTokens";

/// How long the child may take to answer the worker's login.
const LOGIN_RESULT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the worker waits, after the login's result, for `account/login/completed`
/// (codex runs its post-login checks in between) before it serves the parent anyway.
const LOGIN_COMPLETED_TIMEOUT: Duration = Duration::from_secs(5);
/// After a permanent broker failure, refresh requests are answered with it at once; the
/// broker is read again at most this often to see whether a new sign-in happened.
pub const LATCH_RECHECK: Duration = Duration::from_secs(5);
/// The JSON-RPC error code of the worker's refusals to the child.
const BROKER_ERROR_CODE: i32 = -32000;
/// The child speaks the Codex dialect, without `"jsonrpc":"2.0"`.
const CHILD_JSONRPC: bool = false;

/// The tokens the worker hands the child: the params of its `chatgptAuthTokens` login
/// (with `type`) and the result of its refresh requests (without).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalTokens<'a> {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    access_token: &'a str,
    chatgpt_account_id: &'a str,
    chatgpt_plan_type: Option<&'a str>,
}

/// `data` of the worker's refusals: the broker's stable reason.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AuthErrorData<'a> {
    auth_error: &'a str,
}

/// What the worker needs to know about one line without parsing the rest of it.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

enum Kind<'a> {
    Request {
        id: &'a RawValue,
        method: Cow<'a, str>,
    },
    Notification {
        method: Cow<'a, str>,
    },
    Response {
        id: &'a RawValue,
        is_error: bool,
    },
    /// Not a JSON-RPC message the worker understands: forwarded untouched.
    Other,
}

fn classify(line: &str) -> Kind<'_> {
    let Ok(peek) = serde_json::from_str::<Peek<'_>>(line) else {
        return Kind::Other;
    };
    match (peek.id, peek.method) {
        (Some(id), Some(method)) => Kind::Request { id, method },
        (None, Some(method)) => Kind::Notification { method },
        (Some(id), None) => Kind::Response {
            id,
            is_error: peek.error.is_some(),
        },
        (None, None) => Kind::Other,
    }
}

fn id_value(id: &RawValue) -> Value {
    serde_json::from_str(id.get()).unwrap_or(Value::Null)
}

/// What both directions share.
pub struct Shared {
    pub broker: BrokerClient,
    /// To the child, ahead of the parent's lines: the worker's own requests and answers.
    /// Unbounded so the child-to-parent direction never waits on the child's input (their
    /// number is bounded by the child's own requests and the worker's logins).
    pub to_child_own: mpsc::UnboundedSender<String>,
    /// Open (true) when parent messages may go to the child.
    gate: watch::Sender<bool>,
    /// The id of the parent's `initialize`, until the child answers it.
    init_id: Mutex<Option<Value>>,
    /// The parent's `initialize` was seen (later ones are forwarded untouched).
    init_seen: AtomicBool,
    /// The parent opted out of `account/login/completed` / `account/updated`: the child
    /// will not send them, so there is nothing to wait for or swallow.
    opted_out_completed: AtomicBool,
    opted_out_updated: AtomicBool,
    /// The child is not logged in with a broker credential yet: try again before the
    /// parent's next request.
    login_owed: AtomicBool,
    /// Asks the child-to-parent side to log the child in now.
    login_now: mpsc::UnboundedSender<()>,
    tokens: Mutex<Tokens>,
    /// Copies of the parent's requests the worker may send again.
    in_flight: InFlight,
    /// The child's refresh requests being answered right now.
    refreshing: watch::Sender<usize>,
}

/// What the child holds, as far as the worker knows, and a remembered permanent failure.
#[derive(Default)]
struct Tokens {
    access: Option<SecretString>,
    account: Option<String>,
    /// The broker's generation of `access`.
    generation: Option<u64>,
    latch: Option<Latch>,
}

struct Latch {
    error: BrokerError,
    /// The token the child held when the broker refused for good.
    token: SecretString,
    checked: Instant,
}

impl Shared {
    pub fn new(
        broker: BrokerClient,
        to_child_own: mpsc::UnboundedSender<String>,
    ) -> (
        Arc<Shared>,
        watch::Receiver<bool>,
        mpsc::UnboundedReceiver<()>,
    ) {
        let (gate, gate_rx) = watch::channel(true);
        let (login_now, login_rx) = mpsc::unbounded_channel();
        let shared = Shared {
            broker,
            to_child_own,
            gate,
            init_id: Mutex::new(None),
            init_seen: AtomicBool::new(false),
            opted_out_completed: AtomicBool::new(false),
            opted_out_updated: AtomicBool::new(false),
            login_owed: AtomicBool::new(false),
            login_now,
            tokens: Mutex::new(Tokens::default()),
            in_flight: InFlight::default(),
            refreshing: watch::channel(0).0,
        };
        (Arc::new(shared), gate_rx, login_rx)
    }

    fn install(&self, credential: &Credential, account: &str) {
        let mut tokens = self.tokens.lock().unwrap();
        tokens.access = Some(credential.access_token.clone());
        tokens.account = Some(account.to_owned());
        tokens.generation = Some(credential.generation);
    }

    /// Whether the child holds `generation` or newer once the refreshes being answered
    /// are over: the broker announces the grant a refresh of ours made too, possibly before
    /// its answer reaches us. Bounded by the refreshes' own bound.
    async fn holds_after_refreshes(&self, generation: u64) -> bool {
        let mut refreshing = self.refreshing.subscribe();
        let idle = refreshing.wait_for(|n| *n == 0);
        let _ = tokio::time::timeout(super::broker_client::REQUEST_TIMEOUT, idle).await;
        self.tokens
            .lock()
            .unwrap()
            .generation
            .is_some_and(|held| held >= generation)
    }

    fn held_token(&self) -> Option<SecretString> {
        self.tokens.lock().unwrap().access.clone()
    }
}

fn same_token(a: Option<&SecretString>, b: Option<&SecretString>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.expose_secret() == b.expose_secret(),
        (None, None) => true,
        _ => false,
    }
}

/// The parent's lines to the child, until the parent's input ends (then the child's
/// input is closed by dropping `to_child`).
pub async fn parent_to_child(
    shared: Arc<Shared>,
    mut lines: mpsc::Receiver<String>,
    to_child: mpsc::Sender<String>,
    mut gate: watch::Receiver<bool>,
) {
    while let Some(line) = lines.recv().await {
        // Wait until the child is logged in (or the attempt is over).
        if gate.wait_for(|open| *open).await.is_err() {
            return;
        }
        let mut outgoing = line;
        match classify(&outgoing) {
            Kind::Request { id, method }
                if method == INITIALIZE && !shared.init_seen.swap(true, Ordering::SeqCst) =>
            {
                *shared.init_id.lock().unwrap() = Some(id_value(id));
                shared.gate.send_replace(false);
                let opted_out = opted_out(&outgoing);
                shared
                    .opted_out_completed
                    .store(opted_out.contains(&LOGIN_COMPLETED), Ordering::SeqCst);
                shared
                    .opted_out_updated
                    .store(opted_out.contains(&ACCOUNT_UPDATED), Ordering::SeqCst);
                outgoing = with_experimental_api(&outgoing).unwrap_or(outgoing);
            }
            Kind::Request { .. } if shared.login_owed.load(Ordering::SeqCst) => {
                shared.gate.send_replace(false);
                if shared.login_now.send(()).is_err() || gate.wait_for(|open| *open).await.is_err()
                {
                    return;
                }
            }
            _ => {}
        }
        if let Kind::Request { id, method } = classify(&outgoing) {
            let token = shared.held_token();
            shared.in_flight.track(id, &method, &outgoing, token, false);
        }
        if to_child.send(outgoing).await.is_err() {
            return;
        }
    }
}

/// The parent's `initialize` with `capabilities.experimentalApi: true`; `None` when its
/// params are not an object (then it goes as it came, and the child will say why).
/// Which of the notifications the worker's logins cause the parent's `initialize` opts
/// out of (`capabilities.optOutNotificationMethods`).
fn opted_out(line: &str) -> Vec<&'static str> {
    #[derive(Deserialize, Default)]
    struct InitializeParams {
        #[serde(default)]
        capabilities: Option<Capabilities>,
    }
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct Capabilities {
        #[serde(default)]
        opt_out_notification_methods: Option<Vec<String>>,
    }
    let list = params_of::<InitializeParams>(line)
        .capabilities
        .and_then(|c| c.opt_out_notification_methods)
        .unwrap_or_default();
    [LOGIN_COMPLETED, ACCOUNT_UPDATED]
        .into_iter()
        .filter(|method| list.iter().any(|m| m == method))
        .collect()
}

fn with_experimental_api(line: &str) -> Option<String> {
    let mut message: Value = serde_json::from_str(line).ok()?;
    let params = message.get_mut("params")?.as_object_mut()?;
    let capabilities = params.entry("capabilities").or_insert_with(|| json!({}));
    if capabilities.is_null() {
        *capabilities = json!({});
    }
    capabilities
        .as_object_mut()?
        .insert("experimentalApi".into(), Value::Bool(true));
    Some(message.to_string())
}

/// The broker's answer; `None` when the child turned out to hold the announced generation
/// already (its own refresh made it) and nothing was asked.
type Fetched = Option<Result<Credential, BrokerError>>;

/// Why the worker is fetching a credential for the child.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Why {
    /// The first login after `initialize`, or one still owed: without it the child has no
    /// broker token, so a failure is remembered and tried again.
    Initial,
    /// The broker announced this newer generation.
    Pushed(u64),
    /// The broker connection was made again: read and compare, the parent's requests
    /// still flowing unless the token turns out to have changed.
    Recheck,
    /// The child answered a parent's request with the backend's 401: report the token.
    Resend,
}

enum Stage {
    Idle,
    /// Waiting for the broker's answer.
    Fetching(Why),
    /// The login was sent under `id`; waiting for its result.
    AwaitingResult {
        id: String,
        credential: Box<Credential>,
        account: String,
        deadline: tokio::time::Instant,
    },
    /// The login succeeded; waiting for `account/login/completed`.
    AwaitingCompleted {
        deadline: tokio::time::Instant,
    },
}

/// The child's lines to the parent, and the worker's logins.
pub struct ChildToParent {
    shared: Arc<Shared>,
    to_parent: mpsc::Sender<String>,
    stage: Stage,
    /// While the child's `initialize` answer is held, it and everything after it.
    held: Option<VecDeque<String>>,
    next_id: u64,
    suppress_completed: usize,
    suppress_updated: usize,
    fetched_tx: mpsc::UnboundedSender<Fetched>,
    fetched_rx: mpsc::UnboundedReceiver<Fetched>,
    login_rx: mpsc::UnboundedReceiver<()>,
    news: watch::Receiver<News>,
    /// False once the broker client is gone (no more news).
    news_open: bool,
    /// Broker connections made, as last seen.
    connections: u64,
    /// A login the news asked for, to start once the current one is over.
    wanted: Option<Why>,
    /// The parent's requests the child answered with the backend's 401, waiting for the
    /// child to hold another token.
    resends: Vec<Resend>,
}

/// A parent's request to send to the child once more, or whose 401 goes to the parent.
struct Resend {
    request: String,
    /// The child's answer, for the parent should no new token come.
    answer: String,
    /// The token the child failed with.
    failed: Option<SecretString>,
    /// The broker was already asked for a token to replace it.
    reported: bool,
}

impl ChildToParent {
    pub fn new(
        shared: Arc<Shared>,
        to_parent: mpsc::Sender<String>,
        login_rx: mpsc::UnboundedReceiver<()>,
    ) -> ChildToParent {
        let (fetched_tx, fetched_rx) = mpsc::unbounded_channel();
        let mut news = shared.broker.news();
        let connections = news.borrow_and_update().connections;
        ChildToParent {
            shared,
            to_parent,
            stage: Stage::Idle,
            held: None,
            next_id: 0,
            suppress_completed: 0,
            suppress_updated: 0,
            fetched_tx,
            fetched_rx,
            login_rx,
            news,
            news_open: true,
            connections,
            wanted: None,
            resends: Vec::new(),
        }
    }

    /// Runs until the child's output ends; then releases whatever is held.
    pub async fn run(mut self, mut lines: mpsc::Receiver<String>) {
        loop {
            let deadline = match &self.stage {
                Stage::AwaitingResult { deadline, .. } | Stage::AwaitingCompleted { deadline } => {
                    Some(*deadline)
                }
                Stage::Idle | Stage::Fetching(_) => None,
            };
            tokio::select! {
                line = lines.recv() => match line {
                    Some(line) => self.child_line(line).await,
                    None => break,
                },
                Some(fetched) = self.fetched_rx.recv() => self.fetched(fetched).await,
                Some(()) = self.login_rx.recv() => self.start_login().await,
                () = sleep_until(deadline), if deadline.is_some() => self.timed_out().await,
                changed = self.news.changed(), if self.news_open => match changed {
                    Ok(()) => self.heard(),
                    Err(_) => self.news_open = false,
                },
            }
            if matches!(self.stage, Stage::Idle) {
                self.next_login().await;
            }
        }
        self.release().await;
        for resend in std::mem::take(&mut self.resends) {
            let _ = self.to_parent.send(resend.answer).await;
        }
    }

    /// Takes in what the broker said unasked: a login is wanted when the child's token is
    /// older than the announced generation, or the connection was made again. Before the
    /// child holds any broker token, the first login reads the newest anyway.
    fn heard(&mut self) {
        let news = *self.news.borrow_and_update();
        let (holds, generation) = {
            let tokens = self.shared.tokens.lock().unwrap();
            (tokens.access.is_some(), tokens.generation)
        };
        let reconnected = news.connections > self.connections;
        self.connections = news.connections;
        if !holds {
            return;
        }
        let newer = news
            .generation
            .is_some_and(|g| generation.is_none_or(|held| g > held));
        if let (true, Some(announced)) = (newer, news.generation) {
            self.wanted = Some(Why::Pushed(announced));
        } else if reconnected && self.wanted.is_none() {
            self.wanted = Some(Why::Recheck);
        }
    }

    /// Once no login runs: the requests waiting on a new token, else what the news asked.
    async fn next_login(&mut self) {
        if !self.resends.is_empty() {
            return self.settle_resends().await;
        }
        if let Some(why) = self.wanted.take() {
            self.fetch(why);
        }
    }

    /// Sends each waiting request again if the child now holds another token than the one
    /// it failed with; asks the broker for one if it was not asked yet; else gives the
    /// parent the child's answer.
    async fn settle_resends(&mut self) {
        let held = self.shared.held_token();
        let mut report = false;
        for mut resend in std::mem::take(&mut self.resends) {
            if !same_token(held.as_ref(), resend.failed.as_ref()) {
                self.send_again(resend.request);
            } else if resend.reported {
                let _ = self.to_parent.send(resend.answer).await;
            } else {
                resend.reported = true;
                report = true;
                self.resends.push(resend);
            }
        }
        if report {
            self.fetch(Why::Resend);
        }
    }

    fn send_again(&mut self, request: String) {
        if let Kind::Request { id, method } = classify(&request) {
            let token = self.shared.held_token();
            self.shared
                .in_flight
                .track(id, &method, &request, token, true);
        }
        let _ = self.shared.to_child_own.send(request);
    }

    async fn child_line(&mut self, line: String) {
        match classify(&line) {
            Kind::Request { id, method } if method == REFRESH => {
                let Ok(id) = serde_json::from_str::<RequestId>(id.get()) else {
                    // Not an id the protocol allows: the child would not match any answer.
                    tracing::warn!("the child's refresh request has an unusable id; not answered");
                    return;
                };
                let previous_account = params_of::<RefreshParams>(&line).previous_account_id;
                tokio::spawn(answer_refresh(self.shared.clone(), id, previous_account));
            }
            Kind::Response { id, is_error } => {
                let own = serde_json::from_str::<&str>(id.get())
                    .ok()
                    .filter(|id| id.starts_with(WRAPPER_ID_PREFIX))
                    .map(str::to_owned);
                if let Some(own) = own {
                    self.own_response(&own, is_error, &line).await;
                    return;
                }
                if let Some(sent) = self.shared.in_flight.take(id)
                    && is_error
                    && !sent.resent
                    && sent.is_backend_401(&line)
                {
                    tracing::info!(
                        "the child answered a parent's request with the backend's 401; \
                         getting it a new token and sending the request again"
                    );
                    self.resends.push(Resend {
                        request: sent.line,
                        answer: line,
                        failed: sent.token,
                        reported: false,
                    });
                    return;
                }
                let is_init = {
                    let mut init = self.shared.init_id.lock().unwrap();
                    let matches = init.as_ref().is_some_and(|i| *i == id_value(id));
                    if matches {
                        *init = None;
                    }
                    matches
                };
                if is_init {
                    if is_error {
                        // Not initialized: the parent will try again, as it would without us.
                        self.shared.init_seen.store(false, Ordering::SeqCst);
                        self.forward(line).await;
                        self.shared.gate.send_replace(true);
                    } else {
                        self.held = Some(VecDeque::from([line]));
                        self.start_login().await;
                    }
                    return;
                }
                self.forward(line).await;
            }
            Kind::Notification { method }
                if method == LOGIN_COMPLETED && self.suppress_completed > 0 =>
            {
                let params = params_of::<LoginCompleted>(&line);
                if params.login_id.is_some() {
                    // A browser or device login the parent started: not ours.
                    self.forward(line).await;
                    return;
                }
                self.suppress_completed -= 1;
                if params.success {
                    if !self.shared.opted_out_updated.load(Ordering::SeqCst) {
                        self.suppress_updated += 1;
                    }
                } else {
                    tracing::warn!(
                        "the child's checks after the worker's login failed: {}",
                        params.error.as_deref().unwrap_or("no reason given")
                    );
                }
                if matches!(self.stage, Stage::AwaitingCompleted { .. }) {
                    self.release().await;
                }
            }
            Kind::Notification { method }
                if method == ACCOUNT_UPDATED && self.suppress_updated > 0 =>
            {
                if params_of::<AccountUpdated>(&line).auth_mode.as_deref() == Some(EXTERNAL_MODE) {
                    self.suppress_updated -= 1;
                } else {
                    self.forward(line).await;
                }
            }
            _ => self.forward(line).await,
        }
    }

    async fn forward(&mut self, line: String) {
        match &mut self.held {
            Some(held) => held.push_back(line),
            None => {
                let _ = self.to_parent.send(line).await;
            }
        }
    }

    /// Starts the first login (or an owed one) unless one is under way.
    async fn start_login(&mut self) {
        if !matches!(self.stage, Stage::Idle) {
            return;
        }
        self.fetch(Why::Initial);
    }

    /// Asks the broker for the credential to log the child in with: a read, or for a 401
    /// a refresh reporting the token the child holds. Only a recheck leaves the gate open.
    fn fetch(&mut self, why: Why) {
        if why != Why::Recheck {
            self.shared.gate.send_replace(false);
        }
        self.stage = Stage::Fetching(why);
        let shared = self.shared.clone();
        let fetched = self.fetched_tx.clone();
        tokio::spawn(async move {
            let outcome = match why {
                Why::Resend => Some(
                    refresh(&shared, None)
                        .await
                        .map(|(credential, _)| credential),
                ),
                Why::Pushed(announced) if shared.holds_after_refreshes(announced).await => None,
                Why::Initial | Why::Pushed(_) | Why::Recheck => Some(shared.broker.read().await),
            };
            let _ = fetched.send(outcome);
        });
    }

    async fn fetched(&mut self, fetched: Fetched) {
        let Stage::Fetching(why) = self.stage else {
            return;
        };
        let Some(fetched) = fetched else {
            return self.release().await;
        };
        let credential = match fetched {
            Ok(credential) => credential,
            Err(e) if why == Why::Initial => {
                tracing::warn!(
                    "the credential broker gave no credential, so the child is not logged in \
                     (trying again before the parent's next request): {e}"
                );
                return self.owe_login().await;
            }
            Err(e) => {
                tracing::warn!(
                    "the credential broker gave no newer credential; the child keeps its \
                     token: {e}"
                );
                return self.release().await;
            }
        };
        // A refresh for a 401 installed its token already: the child still needs it.
        if why != Why::Resend
            && why != Why::Initial
            && same_token(
                self.shared.held_token().as_ref(),
                Some(&credential.access_token),
            )
        {
            return self.release().await;
        }
        if why == Why::Recheck {
            tracing::info!("the broker has another credential since the connection dropped");
            self.shared.gate.send_replace(false);
        }
        let Some(account) = account_of(&credential, None) else {
            tracing::warn!(
                "the broker's credential names no ChatGPT account; not logging the child in"
            );
            return if why == Why::Initial {
                self.owe_login().await
            } else {
                self.release().await
            };
        };
        self.next_id += 1;
        let id = format!("{WRAPPER_ID_PREFIX}{}", self.next_id);
        let params = ExternalTokens {
            kind: Some(EXTERNAL_MODE),
            access_token: credential.access_token.expose_secret(),
            chatgpt_account_id: &account,
            chatgpt_plan_type: credential.plan_type.as_deref(),
        };
        let login = encode::request_with_id(
            CHILD_JSONRPC,
            &RequestId::Str(id.clone()),
            LOGIN_START,
            &params,
        );
        let sent = login.is_ok_and(|line| self.shared.to_child_own.send(line).is_ok());
        if !sent {
            return self.owe_login().await;
        }
        self.stage = Stage::AwaitingResult {
            id,
            credential: Box::new(credential),
            account,
            deadline: tokio::time::Instant::now() + LOGIN_RESULT_TIMEOUT,
        };
    }

    async fn own_response(&mut self, id: &str, is_error: bool, line: &str) {
        let Stage::AwaitingResult {
            id: expected,
            credential,
            account,
            ..
        } = &self.stage
        else {
            return;
        };
        if id != expected {
            return;
        }
        if is_error {
            #[derive(Deserialize)]
            struct Refused {
                error: ErrorObject,
            }
            let error = serde_json::from_str::<Refused>(line).ok();
            let message = error
                .as_ref()
                .map_or("no message", |r| r.error.message.as_str());
            tracing::warn!("the child refused the worker's login: {message}");
            return if self.shared.tokens.lock().unwrap().access.is_none() {
                self.owe_login().await
            } else {
                self.release().await
            };
        }
        self.shared.install(credential, account);
        self.shared.login_owed.store(false, Ordering::SeqCst);
        {
            // A token other than the one the broker refused for good is a new sign-in.
            let mut tokens = self.shared.tokens.lock().unwrap();
            let signed_in_again = tokens.latch.as_ref().is_some_and(|latch| {
                latch.token.expose_secret() != credential.access_token.expose_secret()
            });
            if signed_in_again {
                tracing::info!("the credential broker has a new credential; refreshes resume");
                tokens.latch = None;
            }
        }
        tracing::info!(
            generation = credential.generation,
            "the child holds the broker's access token"
        );
        if self.shared.opted_out_completed.load(Ordering::SeqCst) {
            // No account/login/completed will come; account/updated still may.
            if !self.shared.opted_out_updated.load(Ordering::SeqCst) {
                self.suppress_updated += 1;
            }
            return self.release().await;
        }
        self.suppress_completed += 1;
        self.stage = Stage::AwaitingCompleted {
            deadline: tokio::time::Instant::now() + LOGIN_COMPLETED_TIMEOUT,
        };
    }

    async fn timed_out(&mut self) {
        match self.stage {
            Stage::AwaitingResult { .. } => {
                tracing::warn!(
                    "the child did not answer the worker's login within {LOGIN_RESULT_TIMEOUT:?}"
                );
                self.owe_login().await;
            }
            Stage::AwaitingCompleted { .. } => self.release().await,
            Stage::Idle | Stage::Fetching(_) => {}
        }
    }

    async fn owe_login(&mut self) {
        self.shared.login_owed.store(true, Ordering::SeqCst);
        self.release().await;
    }

    /// Ends the login: what was held goes to the parent, and the parent's messages flow.
    async fn release(&mut self) {
        self.stage = Stage::Idle;
        if let Some(held) = self.held.take() {
            for line in held {
                let _ = self.to_parent.send(line).await;
            }
        }
        self.shared.gate.send_replace(true);
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The `params` of a line the worker reads, as `T`; the default when they are missing or
/// do not fit (the line is forwarded or dropped by the caller all the same).
fn params_of<T: DeserializeOwned + Default>(line: &str) -> T {
    #[derive(Deserialize)]
    struct WithParams<T> {
        #[serde(default = "Option::default")]
        params: Option<T>,
    }
    serde_json::from_str::<WithParams<T>>(line)
        .ok()
        .and_then(|m| m.params)
        .unwrap_or_default()
}

/// What the worker reads of the child's `account/chatgptAuthTokens/refresh`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RefreshParams {
    #[serde(default)]
    previous_account_id: Option<String>,
}

/// What the worker reads of `account/login/completed`: a `loginId` means a login the
/// parent started, not the worker's.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct LoginCompleted {
    #[serde(default)]
    login_id: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    success: bool,
    #[serde(default)]
    error: Option<String>,
}

/// What the worker reads of `account/updated`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AccountUpdated {
    #[serde(default)]
    auth_mode: Option<String>,
}

/// The account to name to the child: the broker's, else the token's claim, else the one
/// the child named.
fn account_of(credential: &Credential, fallback: Option<&str>) -> Option<String> {
    credential
        .account_id
        .clone()
        .filter(|a| !a.is_empty())
        .or_else(|| {
            crate::auth::jwt::parse(credential.access_token.expose_secret())
                .ok()
                .and_then(|claims| claims.chatgpt_account_id)
        })
        .or_else(|| fallback.map(str::to_owned))
}

/// Answers one `account/chatgptAuthTokens/refresh` from the child.
async fn answer_refresh(shared: Arc<Shared>, id: RequestId, previous_account: Option<String>) {
    /// Counts this answer as under way until it is dropped, panics and all.
    struct Refreshing<'a>(&'a watch::Sender<usize>);
    impl Drop for Refreshing<'_> {
        fn drop(&mut self) {
            self.0.send_modify(|n| *n -= 1);
        }
    }
    shared.refreshing.send_modify(|n| *n += 1);
    let refreshing = Refreshing(&shared.refreshing);
    let answer = match refresh(&shared, previous_account.as_deref()).await {
        Ok((credential, account)) => {
            let result = ExternalTokens {
                kind: None,
                access_token: credential.access_token.expose_secret(),
                chatgpt_account_id: &account,
                chatgpt_plan_type: credential.plan_type.as_deref(),
            };
            encode::result(CHILD_JSONRPC, &id, &result)
                .unwrap_or_else(|e| refusal(&id, &RpcError::internal(e.to_string())))
        }
        Err(e) => {
            tracing::warn!("answering the child's refresh request with an error: {e}");
            let mut error = RpcError::new(BROKER_ERROR_CODE, format!("credential broker: {e}"));
            if let Some(name) = e.auth_error() {
                let data = AuthErrorData { auth_error: name };
                error = error.with_data(serde_json::to_value(data).unwrap_or_default());
            }
            refusal(&id, &error)
        }
    };
    let _ = shared.to_child_own.send(answer);
    drop(refreshing);
}

fn refusal(id: &RequestId, error: &RpcError) -> String {
    encode::error(CHILD_JSONRPC, Some(id), error)
}

async fn refresh(
    shared: &Shared,
    previous_account: Option<&str>,
) -> Result<(Credential, String), BrokerError> {
    let (previous, recheck) = {
        let mut tokens = shared.tokens.lock().unwrap();
        let previous = tokens.access.clone();
        let recheck = match &mut tokens.latch {
            Some(latch) if latch.checked.elapsed() < LATCH_RECHECK => {
                return Err(latch.error.clone());
            }
            Some(latch) => {
                latch.checked = Instant::now();
                Some((latch.token.clone(), latch.error.clone()))
            }
            None => None,
        };
        (previous, recheck)
    };
    let accept = |credential: Credential| -> Result<(Credential, String), BrokerError> {
        let account =
            account_of(&credential, previous_account).ok_or_else(|| BrokerError::Transient {
                auth_error: None,
                message: "the broker's credential names no ChatGPT account".into(),
            })?;
        shared.install(&credential, &account);
        Ok((credential, account))
    };
    if let Some((latched_token, latched_error)) = recheck {
        // Only a new sign-in (a different token at the broker) lifts the latch.
        return match shared.broker.read().await {
            Ok(c) if c.access_token.expose_secret() != latched_token.expose_secret() => {
                tracing::info!("the credential broker has a new credential; refreshes resume");
                shared.tokens.lock().unwrap().latch = None;
                accept(c)
            }
            _ => Err(latched_error),
        };
    }
    let outcome = match &previous {
        Some(previous) => shared.broker.refresh(previous).await,
        None => shared.broker.read().await,
    };
    match outcome {
        Ok(credential) => accept(credential),
        Err(e) => {
            if e.is_permanent() {
                tracing::warn!(
                    "the credential broker cannot refresh until a new sign-in ({e}); \
                     answering the child's refresh requests with this error"
                );
                shared.tokens.lock().unwrap().latch = Some(Latch {
                    error: e.clone(),
                    token: previous.unwrap_or_else(|| SecretString::from("")),
                    checked: Instant::now(),
                });
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initialize_gets_experimental_api_whatever_the_parent_said() {
        for line in [
            r#"{"id":1,"method":"initialize","params":{"clientInfo":{"name":"p","version":"1"}}}"#,
            r#"{"id":1,"method":"initialize","params":{"clientInfo":{"name":"p","version":"1"},"capabilities":null}}"#,
            r#"{"id":1,"method":"initialize","params":{"clientInfo":{"name":"p","version":"1"},"capabilities":{"experimentalApi":false,"optOutNotificationMethods":["x"]}}}"#,
        ] {
            let out: Value = serde_json::from_str(&with_experimental_api(line).unwrap()).unwrap();
            assert_eq!(
                out["params"]["capabilities"]["experimentalApi"], true,
                "{line}"
            );
            assert_eq!(out["params"]["clientInfo"]["name"], "p");
        }
        let kept: Value = serde_json::from_str(
            &with_experimental_api(
                r#"{"id":1,"method":"initialize","params":{"clientInfo":{},"capabilities":{"optOutNotificationMethods":["x"]}}}"#,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            kept["params"]["capabilities"]["optOutNotificationMethods"],
            json!(["x"])
        );
        assert_eq!(
            with_experimental_api(r#"{"id":1,"method":"initialize"}"#),
            None
        );
    }

    #[test]
    fn what_the_worker_reads_comes_through_types_and_misfits_read_as_defaults() {
        let done: LoginCompleted = params_of(
            r#"{"method":"account/login/completed","params":{"loginId":null,"success":true,"error":null}}"#,
        );
        assert!(done.login_id.is_none() && done.success);
        let theirs: LoginCompleted =
            params_of(r#"{"method":"m","params":{"loginId":"l-1","success":false}}"#);
        assert!(theirs.login_id.is_some() && !theirs.success);
        let refresh: RefreshParams = params_of(
            r#"{"id":1,"method":"m","params":{"reason":"unauthorized","previousAccountId":"ws-1"}}"#,
        );
        assert_eq!(refresh.previous_account_id.as_deref(), Some("ws-1"));
        let misfit: RefreshParams = params_of(r#"{"id":1,"method":"m","params":[1]}"#);
        assert_eq!(misfit.previous_account_id, None);
        assert_eq!(
            opted_out(
                r#"{"id":1,"method":"initialize","params":{"capabilities":{"optOutNotificationMethods":["account/updated","x"]}}}"#
            ),
            [ACCOUNT_UPDATED]
        );
        assert!(
            opted_out(r#"{"id":1,"method":"initialize","params":{"capabilities":null}}"#)
                .is_empty()
        );
    }

    #[test]
    fn lines_are_classified_without_parsing_them_whole() {
        assert!(matches!(
            classify(r#"{"id":"a","method":"m","params":{}}"#),
            Kind::Request { .. }
        ));
        assert!(matches!(
            classify(r#"{"method":"m"}"#),
            Kind::Notification { .. }
        ));
        assert!(matches!(
            classify(r#"{"id":3,"error":{"code":1,"message":"x"}}"#),
            Kind::Response { is_error: true, .. }
        ));
        assert!(matches!(
            classify(r#"{"id":3,"result":{}}"#),
            Kind::Response {
                is_error: false,
                ..
            }
        ));
        assert!(matches!(classify("not json"), Kind::Other));
        assert!(matches!(classify("[1,2]"), Kind::Other));
    }
}
