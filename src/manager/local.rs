//! The read path: a per-thread copy of each manager's token.
//!
//! Handing every reader an `Arc` of one shared allocation makes every read a
//! write to one shared cache line (the reference count), which costs 5–20×
//! as soon as two threads read. Instead each thread keeps its own copy of
//! the token, in its own allocation, and revalidates it against the
//! manager's change counter, a plain atomic load. Reads by different
//! threads then share nothing that anyone writes, except on the rare
//! publish.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use crate::manager::shared::Shared;
use crate::token::Token;

/// One manager's token as this thread last copied it.
struct Entry {
    /// Keeps the allocation (not the manager) alive, so the address cannot
    /// be reused by another manager while this entry exists.
    shared: Weak<Shared>,
    changes: u64,
    token: Option<Arc<Token>>,
}

thread_local! {
    static COPIES: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's copy of `shared`'s token (valid or not).
///
/// Falls back to the shared slot when the thread-local storage is gone
/// (thread exit) or busy (`f` reading again from inside).
pub(crate) fn with_token<R>(shared: &Arc<Shared>, f: impl FnOnce(Option<&Arc<Token>>) -> R) -> R {
    let changes = shared.changes.load(Ordering::Acquire);
    let mut f = Some(f);
    let local = COPIES.try_with(|copies| {
        let mut copies = copies.try_borrow_mut().ok()?;
        let entry = entry_for(&mut copies, shared);
        if entry.changes != changes {
            entry.token = shared.copy_token();
            entry.changes = changes;
        }
        let f = f.take()?;
        Some(f(entry.token.as_ref()))
    });
    match (local, f) {
        (Ok(Some(result)), _) => result,
        (_, Some(f)) => f(shared.token().as_ref()),
        // `f` is taken only after every fallible step, and its result is
        // returned at once: a taken `f` always yields `Ok(Some)`.
        (_, None) => unreachable!("the read closure ran but produced nothing"),
    }
}

fn entry_for<'a>(copies: &'a mut Vec<Entry>, shared: &Arc<Shared>) -> &'a mut Entry {
    let ptr = Arc::as_ptr(shared);
    let index = match copies.iter().position(|e| e.shared.as_ptr() == ptr) {
        Some(index) => index,
        None => {
            // Forget managers that are gone, with their secrets.
            copies.retain(|e| e.shared.strong_count() > 0);
            copies.push(Entry {
                shared: Arc::downgrade(shared),
                changes: u64::MAX,
                token: None,
            });
            copies.len() - 1
        }
    };
    &mut copies[index]
}
