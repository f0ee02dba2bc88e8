//! Model providers: the built-in `openai` (a ChatGPT sign-in or an API key) and the
//! `[model_providers.<id>]` of `config.toml` (read and checked by `config`). A turn asks this
//! module where to go and whose bearer to send; the call itself goes through the
//! backend's one 401 loop and SSE reader, so every provider gets the same recovery,
//! bounds and error mapping. One file per job: the route, an auth command's run, its
//! token cache, scrubbing what it wrote, and the errors.

mod command;
mod command_auth;
mod error;
mod route;
mod scrub;

pub(crate) use route::{OpenaiAuth, Providers, Route};
