//! Words several layers share: the plan, a credential's name, who may sign in, where the credential is kept,
//! why it is dead. Its own low module so that `auth`, `config` and `protocol` all depend on
//! it and none of them on another for it.

mod credential_name;
mod permanent_failure;
mod plan;
mod settings;

pub use credential_name::CredentialName;
pub use permanent_failure::PermanentFailure;
pub use plan::PlanType;
pub use settings::{CredentialsStore, ForcedLoginMethod};
