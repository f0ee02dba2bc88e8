//! Mutexes whose holder panicked stay usable. Every lock in the crate guards state that is
//! consistent between statements (a slot, a counter, a cached value), so a panic elsewhere
//! must not turn into a second one for every later caller.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, taking the data over if a previous holder panicked.
pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicked_holder_leaves_the_data_usable() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let held = m.clone();
        let _ = std::thread::spawn(move || {
            let _guard = held.lock().unwrap();
            panic!("holder dies");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }
}
