//! The methods authbridge serves, registered in one jsonrpsee method table.
//!
//! Each handler is an `async fn(&Api, &RequestContext, Params) -> Result<Response, ApiError>`
//! for a method declared in `protocol::methods`: registration parses the params into the
//! declared type (errors name the field, never the value) and maps the error in one place,
//! [`ApiError::into_rpc`].

mod account;
mod connections;
mod error;
mod events;
mod initialize;
mod rate_limits;
mod refresh_channel;
mod startup_reads;
mod threads;
mod turn_failure;
mod turn_run;
mod turns;

use std::future::Future;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::auth::AuthManager;
use crate::backend::BackendClient;
use crate::config::Config;
use crate::login::Logins;
use crate::protocol::decode::decode_object;
use crate::protocol::methods::Method;
use crate::provider::{OpenaiAuth, Providers};
use crate::rpc::envelope::SecretJson;
use crate::rpc::{ConnectionHooks, ConnectionId, Dispatcher, RequestContext};

pub(crate) use broker::{BrokerApi, broker_dispatcher};
pub(crate) use connections::{Connections, Session};
pub(crate) use error::ApiError;
pub(crate) use events::Announcer;
pub(crate) use threads::Threads;

/// Process-wide state shared by every handler.
pub(crate) struct Api {
    pub config: Arc<Config>,
    pub auth: Arc<AuthManager>,
    pub backend: BackendClient,
    pub connections: Arc<Connections>,
    pub logins: Arc<Logins>,
    /// Threads and their running turns.
    pub threads: Arc<Threads>,
    /// Where turns go, with each provider's auth command state.
    pub providers: Arc<Providers>,
    /// The turns' system prompt, shared rather than copied into every turn.
    pub instructions: Arc<str>,
}

impl ConnectionHooks for Api {
    fn closed(&self, id: ConnectionId) {
        self.connections.closed(id);
        self.threads.connection_closed(id);
    }
}

/// What a method that needs ChatGPT credentials says when there are none.
pub(crate) struct NeedsChatgpt {
    pub signed_out: &'static str,
    pub api_key: &'static str,
    /// The prefix of a failure of the call itself.
    pub failed: &'static str,
}

impl Api {
    /// The checks before a call that needs ChatGPT credentials. The store is looked at
    /// first (another process may have signed in or out), and a credential that needs a
    /// new sign-in says why, with its `authError`.
    pub async fn require_chatgpt(&self, needs: NeedsChatgpt) -> Result<(), ApiError> {
        self.auth.notice_store_change(crate::auth::Look::Now).await;
        if let Some(failure) = self.auth.login_required() {
            return Err(ApiError::Backend {
                what: needs.failed,
                error: crate::backend::BackendError::Auth(crate::auth::AuthError::LoginRequired(
                    failure,
                )),
            });
        }
        match self.auth.mode() {
            None => Err(ApiError::NoChatgpt {
                what: needs.signed_out,
                why: crate::auth::NoChatgpt::SignedOut,
            }),
            Some(crate::auth::Mode::ApiKey) => Err(ApiError::NoChatgpt {
                what: needs.api_key,
                why: crate::auth::NoChatgpt::ApiKey,
            }),
            Some(_) => Ok(()),
        }
    }

    /// The OpenAI sign-in for a turn: a ChatGPT one, or an API key (which turns send to
    /// the OpenAI API, as Codex does). Checked as `require_chatgpt` checks, without
    /// refusing the key.
    pub async fn openai_auth(&self, needs: NeedsChatgpt) -> Result<OpenaiAuth, ApiError> {
        let signed_out = needs.signed_out;
        match self.require_chatgpt(needs).await {
            Err(ApiError::NoChatgpt {
                why: crate::auth::NoChatgpt::ApiKey,
                ..
            }) => match self.auth.api_key() {
                Some(key) => Ok(OpenaiAuth::ApiKey(key)),
                // Signed out in between.
                None => Err(ApiError::NoChatgpt {
                    what: signed_out,
                    why: crate::auth::NoChatgpt::SignedOut,
                }),
            },
            Err(e) => Err(e),
            Ok(()) => Ok(OpenaiAuth::Chatgpt(self.auth.clone())),
        }
    }

    /// The calling connection's session; every method but `initialize` runs after it.
    pub fn session(&self, ctx: &RequestContext) -> Result<Arc<Session>, ApiError> {
        self.connections
            .session(ctx.peer.id())
            .ok_or(ApiError::NotInitialized)
    }

    /// Who a backend call is made for: the calling client's user agent and name.
    pub fn caller(&self, ctx: &RequestContext) -> Result<crate::backend::Caller, ApiError> {
        let session = self.session(ctx)?;
        Ok(crate::backend::Caller {
            user_agent: session.user_agent.clone(),
            originator: session.client_name.clone(),
        })
    }
}

/// Absent params read as `{}`, so a method whose fields are all optional accepts a bare
/// request; anything else must be an object of the method's shape.
fn params<P: DeserializeOwned>(raw: Option<&SecretJson>) -> Result<P, ApiError> {
    Ok(decode_object(raw.map_or("{}", SecretJson::get))?)
}

/// A method table over the state `S` its handlers share (the app-server's [`Api`], or the
/// broker's state), filled from the declarations in `protocol::methods`.
struct Table<S: Send + Sync + 'static> {
    state: Arc<S>,
    dispatcher: Dispatcher,
}

impl<S: Send + Sync + 'static> Table<S> {
    fn new(state: Arc<S>) -> Self {
        Self {
            state,
            dispatcher: Dispatcher::default(),
        }
    }

    /// Serves `M` with `handler`, which must take `M`'s params and return its result.
    fn add<M, F, Fut>(&mut self, handler: F)
    where
        M: Method,
        F: Fn(Arc<S>, RequestContext, M::Params) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<M::Result, ApiError>> + Send + 'static,
    {
        let state = self.state.clone();
        let handler = Arc::new(handler);
        self.dispatcher
            .add(M::NAME, M::KIND, move |ctx: RequestContext, raw| {
                let parsed = params::<M::Params>(raw.as_deref());
                drop(raw);
                let (state, handler) = (state.clone(), handler.clone());
                // The handler's future is made where it is awaited: each layer that took it
                // by value would copy it.
                async move {
                    let outcome = match parsed {
                        Ok(p) => {
                            let after = ctx.after.clone();
                            events::in_request(after, handler(state, ctx, p)).await
                        }
                        Err(e) => Err(e),
                    };
                    outcome.map_err(ApiError::into_rpc)
                }
            });
    }
}

/// `method!(table, Method, handler)`: serves the declared `Method` with an
/// `async fn(&S, &RequestContext, Method::Params) -> Result<Method::Result, ApiError>`.
macro_rules! method {
    ($table:expr, $method:ty, $handler:path) => {
        $table.add::<$method, _, _>(|api, ctx, p| async move { $handler(&api, &ctx, p).await })
    };
}

// After the macro: it is in scope only below its definition.
mod broker;

/// The app-server's method table.
pub(crate) fn dispatcher(api: Arc<Api>) -> Dispatcher {
    use crate::protocol::methods::*;
    let mut t = Table::new(api);
    method!(t, Initialize, initialize::initialize);
    method!(t, AccountLoginStart, account::login_start);
    method!(t, AccountLoginCancel, account::login_cancel);
    method!(t, AccountLogout, account::logout);
    method!(t, AccountRead, account::read);
    method!(t, AccountRateLimitsRead, rate_limits::read);
    method!(t, ThreadStart, turns::thread_start);
    method!(t, TurnStart, turns::turn_start);
    method!(t, TurnInterrupt, turns::turn_interrupt);
    method!(
        t,
        ConfigRequirementsRead,
        startup_reads::config_requirements
    );
    method!(t, ConfigRead, startup_reads::config);
    method!(t, ModelList, startup_reads::models);
    method!(t, ModelProviderList, startup_reads::providers);
    method!(t, AccountSecuritySetupRead, startup_reads::security_setup);
    method!(
        t,
        AccountWorkspaceMessagesRead,
        startup_reads::workspace_messages
    );
    t.dispatcher
}
