//! What a stored rotation is announced to besides the state: a hook of the user's
//! (`authbridge.on_credential_change`), so that a copy kept elsewhere (a secret manager
//! restored on the next ephemeral runner) follows every rotation. `auth` only calls it;
//! how it runs (a process, a bound) belongs to the caller that built it.

use futures::future::BoxFuture;

use super::storage::AuthDocument;

/// Told of every rotation this process stored, with the document now in the store. Its
/// future runs as a task of its own: the rotation is already on disk and never waits for
/// it, and whatever it does (fail, hang up to its bound) cannot lose the local copy.
pub(crate) trait RotationHook: Send + Sync {
    fn rotated(&self, document: &AuthDocument) -> BoxFuture<'static, ()>;
}
