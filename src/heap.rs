//! The program's dealings with glibc's allocator, in one place: its thresholds fixed at
//! start, and freed memory given back once a connection's burst is over.
//!
//! glibc's own mmap threshold rises with each large block freed, after which a burst's
//! buffers come from the heap and stay resident (the rpc bench's RSS after its pipelined
//! runs varied from 9.7 to 16.6 MiB between runs of one build): [`fix_thresholds`] pins it,
//! and the trim threshold, at 128 KiB before anything else runs.
//!
//! After a pipelined burst, the heap also holds megabytes of freed small blocks (its caches
//! and fast bins are not merged back into the top of the heap, so the trim threshold never
//! fires): 6 MB stayed resident after 200,000 pipelined `account/read`s. `malloc_trim`
//! returns the free pages inside the heap too. It walks the heap, so the writer calls
//! [`return_freed_memory`] only when its connection has written a lot since the last trim
//! and then gone quiet.
//!
//! Elsewhere than glibc on Linux, both are no-ops.

use std::time::Duration;

/// Bytes written on one connection since its last trim before a quiet spell trims (less
/// in the unit tests, so a small flood reaches it).
#[cfg(not(test))]
pub(crate) const TRIM_AFTER_BYTES: usize = 4 * 1024 * 1024;
#[cfg(test)]
pub(crate) const TRIM_AFTER_BYTES: usize = 64 * 1024;
/// How long the output must stay quiet before the trim.
pub(crate) const QUIET: Duration = Duration::from_millis(50);

/// Fixes glibc's mmap and trim thresholds. Call it first thing in `main`, before any thread
/// exists.
pub fn fix_thresholds() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any thread exists.
    unsafe {
        const LARGE: libc::c_int = 128 * 1024;
        libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE);
        libc::mallopt(libc::M_TRIM_THRESHOLD, LARGE);
    }
}

/// Returns free heap pages to the system.
pub(crate) fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it takes the allocator's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
