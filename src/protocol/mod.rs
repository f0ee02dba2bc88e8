//! Wire types of the methods authbridge serves, with serde for the wire and schemars for
//! `schema/`. The Rust types are the source of truth; the committed schema is their output.

pub mod account;
pub mod credential;
pub(crate) mod decode;
pub mod initialize;
mod object;
pub mod rate_limits;
pub mod startup;
pub mod turns;

/// The methods, each declared once (name, params, result, scheduling), and the names of
/// the notifications and requests the server sends.
pub mod methods;
