//! The methods authbridge serves, registered in one jsonrpsee method table.
//!
//! Each handler is an `async fn(&Api, &RequestContext, Params) -> Result<Response, ApiError>`:
//! registration parses the params into the method's type (errors name the field, never
//! the value) and maps the error in one place, [`ApiError::into_rpc`].

mod account;
mod connections;
mod error;
mod events;
mod initialize;
mod rate_limits;
mod refresh_channel;
mod threads;
mod turn_failure;
mod turn_run;
mod turns;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use jsonrpsee::RpcModule;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::auth::AuthManager;
use crate::backend::BackendClient;
use crate::config::Config;
use crate::login::Logins;
use crate::protocol::decode::decode_object;
use crate::protocol::methods;
use crate::rpc::envelope::SecretJson;
use crate::rpc::{ConnectionHooks, ConnectionId, Dispatcher, MethodKind, RequestContext};

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
        self.auth.notice_store_change().await;
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

    /// The calling connection's session; every method but `initialize` runs after it.
    pub fn session(&self, ctx: &RequestContext) -> Result<Arc<Session>, ApiError> {
        self.connections
            .session(ctx.peer.id())
            .ok_or(ApiError::NotInitialized)
    }
}

/// Absent params read as `{}`, so a method whose fields are all optional accepts a bare
/// request; anything else must be an object of the method's shape.
fn params<P: DeserializeOwned>(raw: Option<&SecretJson>) -> Result<P, ApiError> {
    Ok(decode_object(raw.map_or("{}", SecretJson::get))?)
}

/// A method table over the state `S` its handlers share (the app-server's [`Api`], or the
/// broker's state).
struct Table<S: Send + Sync + 'static> {
    module: RpcModule<S>,
    kinds: HashMap<&'static str, MethodKind>,
}

impl<S: Send + Sync + 'static> Table<S> {
    fn new(state: Arc<S>) -> Self {
        Self {
            module: RpcModule::from_arc(state),
            kinds: HashMap::new(),
        }
    }

    fn register<R, F, Fut>(&mut self, name: &'static str, kind: MethodKind, handler: F)
    where
        R: Serialize + Send + 'static,
        F: Fn(Arc<S>, RequestContext, Option<SecretJson>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<R, ApiError>> + Send + 'static,
    {
        self.kinds.insert(name, kind);
        self.module
            .register_async_method(name, move |_, api, mut extensions| {
                let handler = handler.clone();
                async move {
                    let Some((ctx, raw)) = RequestContext::take(&mut extensions) else {
                        return;
                    };
                    let outcome =
                        events::in_request(ctx.after.clone(), handler(api, ctx.clone(), raw)).await;
                    match outcome {
                        Ok(result) => ctx.respond(Ok(&result)),
                        Err(e) => ctx.respond::<()>(Err(e.into_rpc())),
                    }
                }
            })
            .expect("method names are registered once");
    }
}

/// `method!(table, NAME, kind, handler)`: registers an `async fn(&S, &RequestContext, P)`
/// with its params parsed into `P`.
macro_rules! method {
    ($table:expr, $name:expr, $kind:expr, $handler:path) => {
        $table.register(
            $name,
            $kind,
            |api: Arc<_>, ctx: RequestContext, raw: Option<SecretJson>| async move {
                let p = $crate::api::params(raw.as_ref())?;
                drop(raw);
                $handler(&api, &ctx, p).await
            },
        )
    };
}

// After the macro: it is in scope only below its definition.
mod broker;

/// The method table and how each method is scheduled.
pub(crate) fn dispatcher(api: Arc<Api>) -> Dispatcher {
    use MethodKind::{Concurrent, Handshake, Sequential};
    let mut t = Table::new(api);
    method!(t, methods::INITIALIZE, Handshake, initialize::initialize);
    method!(
        t,
        methods::ACCOUNT_LOGIN_START,
        Sequential,
        account::login_start
    );
    method!(
        t,
        methods::ACCOUNT_LOGIN_CANCEL,
        Sequential,
        account::login_cancel
    );
    method!(t, methods::ACCOUNT_LOGOUT, Sequential, account::logout);
    method!(t, methods::ACCOUNT_READ, Concurrent, account::read);
    method!(
        t,
        methods::ACCOUNT_RATE_LIMITS_READ,
        Concurrent,
        rate_limits::read
    );
    method!(t, methods::THREAD_START, Concurrent, turns::thread_start);
    method!(t, methods::TURN_START, Concurrent, turns::turn_start);
    method!(
        t,
        methods::TURN_INTERRUPT,
        Concurrent,
        turns::turn_interrupt
    );
    Dispatcher::new(t.module, t.kinds)
}
