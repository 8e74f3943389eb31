//! A lock that outlives a panic: every `std::sync::Mutex` here guards a short update of a map,
//! a set or a value, with no `.await` inside, so a panic elsewhere while it was held leaves the
//! data whole, and the next holder takes it as it is rather than panicking too.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, poisoned or not.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
