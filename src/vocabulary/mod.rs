//! Words several layers share: the plan, who may sign in, where the credential is kept,
//! why it is dead. Its own low module so that `auth`, `config` and `protocol` all depend on
//! it and none of them on another for it.

mod permanent_failure;
mod plan;
mod settings;

pub use permanent_failure::PermanentFailure;
pub use plan::PlanType;
pub use settings::{CredentialsStore, ForcedLoginMethod};
