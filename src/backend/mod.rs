//! Calls to the ChatGPT backend. Every call goes through [`BackendClient`]'s 401 loop.

pub mod client;
pub mod rate_limits;

pub use client::{BackendClient, BackendError, Caller};
