//! The `ephemeral` store: memory only, gone when the process ends, seen by no other
//! process (so no refresh lock is needed beside it).

use std::sync::Mutex;

use zeroize::Zeroizing;

use super::{AuthDocument, Backend, StorageError, Swap};
use crate::unpoisoned::lock;

#[derive(Default)]
pub(crate) struct EphemeralStore {
    memory: Mutex<Option<Zeroizing<Vec<u8>>>>,
}

fn parse(memory: &Option<Zeroizing<Vec<u8>>>) -> Option<AuthDocument> {
    memory.as_ref().and_then(|b| AuthDocument::parse(b))
}

impl Backend for EphemeralStore {
    fn load(&self) -> Result<Option<AuthDocument>, StorageError> {
        Ok(parse(&lock(&self.memory)))
    }

    fn save(&self, doc: &AuthDocument) -> Result<(), StorageError> {
        *lock(&self.memory) = Some(doc.to_compact());
        Ok(())
    }

    fn delete(&self) -> Result<(), StorageError> {
        *lock(&self.memory) = None;
        Ok(())
    }

    /// Under the one mutex, so no save can come between the comparison and the write.
    fn compare_and_swap(
        &self,
        expected: &Option<AuthDocument>,
        new: AuthDocument,
    ) -> Result<Swap, StorageError> {
        let mut memory = lock(&self.memory);
        let now = parse(&memory);
        if !AuthDocument::same_credential(&now, expected) {
            return Ok(Swap::Moved(now));
        }
        *memory = Some(new.to_compact());
        Ok(Swap::Swapped(new))
    }

    fn describe(&self) -> String {
        "memory (ephemeral)".into()
    }

    fn place(&self) -> String {
        "the in-memory credential".into()
    }

    fn is_shared(&self) -> bool {
        false
    }
}
