//! The methods authbridge serves, registered in one jsonrpsee method table. Handlers get
//! the process-wide [`Api`] and their connection's [`RequestContext`].

pub mod account;
pub mod connections;
pub mod errors;
pub mod initialize;
pub mod params;
pub mod rate_limits;
pub mod refresh_channel;

use std::future::Future;
use std::sync::Arc;

use jsonrpsee::RpcModule;
use jsonrpsee::types::{ErrorObjectOwned, Params};
use serde::Serialize;

use crate::auth::AuthManager;
use crate::backend::BackendClient;
use crate::config::Config;
use crate::protocol::methods;
use crate::rpc::{RequestContext, RpcError};
use connections::Connections;

/// Process-wide state shared by every handler.
pub struct Api {
    pub config: Arc<Config>,
    pub auth: Arc<AuthManager>,
    pub backend: BackendClient,
    pub connections: Arc<Connections>,
}

/// Registers one method. The adapter pulls the connection's context out of jsonrpsee's
/// extensions, so handlers take it as a plain argument.
fn register<T, F, Fut>(module: &mut RpcModule<Api>, name: &'static str, handler: F)
where
    T: Serialize + Clone + Send + 'static,
    F: Fn(Params<'static>, Arc<Api>, RequestContext) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<T, RpcError>> + Send + 'static,
{
    module
        .register_async_method(name, move |params, api, extensions| {
            let handler = handler.clone();
            async move {
                let ctx = RequestContext::from_extensions(&extensions)
                    .map_err(ErrorObjectOwned::from)?
                    .clone();
                handler(params, api, ctx)
                    .await
                    .map_err(ErrorObjectOwned::from)
            }
        })
        .expect("method names are registered once");
}

pub fn methods(api: Arc<Api>) -> RpcModule<Api> {
    let mut module = RpcModule::from_arc(api);
    register(&mut module, methods::INITIALIZE, initialize::initialize);
    register(
        &mut module,
        methods::ACCOUNT_LOGIN_START,
        account::login_start,
    );
    register(
        &mut module,
        methods::ACCOUNT_LOGIN_CANCEL,
        account::login_cancel,
    );
    register(&mut module, methods::ACCOUNT_LOGOUT, account::logout);
    register(&mut module, methods::ACCOUNT_READ, account::read);
    register(
        &mut module,
        methods::ACCOUNT_RATE_LIMITS_READ,
        rate_limits::read,
    );
    module
}
