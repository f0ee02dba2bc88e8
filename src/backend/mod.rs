//! Calls to the ChatGPT backend. Every call goes through [`BackendClient`]'s 401 loop.

pub(crate) mod client;
pub(crate) mod rate_limits;
pub(crate) mod responses;
pub(crate) mod security_setup;
pub(crate) mod sse;

pub(crate) use client::{
    BackendClient, BackendError, BackendOptions, Caller, ClientBuildError, RecoveryObserver,
};
