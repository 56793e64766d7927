//! The read path: a per-thread copy of each manager's token.
//!
//! Handing every reader an `Arc` of one shared allocation makes every read a
//! write to one shared cache line (the reference count), which makes reads
//! several times slower as soon as two threads read (BENCHMARKS.md has the
//! figures). Instead each thread keeps its own copy of
//! the token, in its own allocation, and revalidates it against the
//! manager's change counter, a plain atomic load. Reads by different
//! threads then share nothing that anyone writes, except on the rare
//! publish.
//!
//! Reading even a coarse clock costs more than the rest of a read, so a
//! read of a token that is not yet due for refresh does not look at the
//! clock: until its refresh instant (jitter included) the token has at
//! least its stale window left, and at that instant the actor marks it
//! *late* (which bumps the change counter). From then on every read checks
//! expiry on the clock. Should the actor not run at that instant (a starved
//! executor, a machine asleep through the expiry), each thread still checks
//! the clock after every [`UNCHECKED_READS`] reads, and once it sees
//! the token expired it checks on every read.
//!
//! The calls that promise a valid token and wait for one when there is
//! none (`token()`, `refresh_rejected()`) read through the same copy but
//! always check the clock: they must never hand out an expired token, and
//! one clock reading is nothing next to what they may wait.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use crate::manager::shared::Shared;
use crate::manager::UNCHECKED_READS;
use crate::token::Token;

/// One manager's token as this thread last copied it.
struct TokenCopy {
    /// The manager's address, compared on every read.
    manager: usize,
    /// Keeps the allocation (not the manager) alive, so the address cannot
    /// be reused by another manager while this copy exists.
    shared: Weak<Shared>,
    changes: u64,
    token: Option<Arc<Token>>,
    /// Whether every read checks the clock: the actor marked the token
    /// late, or this thread saw it expire.
    late: bool,
    /// Reads left before the next clock check; always 0 when `late`.
    unchecked_reads: u32,
}

impl TokenCopy {
    /// The token if valid; `CHECKED` looks at the clock whatever reads
    /// are left unchecked.
    #[inline]
    fn valid_token<const CHECKED: bool>(&mut self, shared: &Shared) -> Option<&Arc<Token>> {
        if !CHECKED && self.unchecked_reads > 0 {
            self.unchecked_reads -= 1;
            return self.token.as_ref();
        }
        self.check_clock(shared)
    }

    #[cold]
    fn recopy(&mut self, shared: &Shared, changes: u64) {
        (self.token, self.late) = shared.copy_token();
        self.changes = changes;
        self.unchecked_reads = 0;
    }

    #[cold]
    fn check_clock(&mut self, shared: &Shared) -> Option<&Arc<Token>> {
        let token = self.token.as_ref()?;
        if !token.is_valid_at_ms(shared.clock.now_ms_fast()) {
            // A checked read may come with unchecked reads left.
            self.late = true;
            self.unchecked_reads = 0;
            return None;
        }
        if !self.late {
            self.unchecked_reads = UNCHECKED_READS;
        }
        Some(token)
    }
}

thread_local! {
    static COPIES: RefCell<Vec<TokenCopy>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's copy of `shared`'s token if it is valid, or
/// on `None`: the read path, which may skip the clock (see the module
/// docs).
pub(crate) fn with_valid_token<R>(
    shared: &Arc<Shared>,
    f: impl FnOnce(Option<&Arc<Token>>) -> R,
) -> R {
    with_token::<false, R>(shared, f)
}

/// As [`with_valid_token`], but always checks expiry on the clock: for the
/// calls that promise a valid token and may wait for one, where a clock
/// reading is cheap next to the wait.
pub(crate) fn with_checked_token<R>(
    shared: &Arc<Shared>,
    f: impl FnOnce(Option<&Arc<Token>>) -> R,
) -> R {
    with_token::<true, R>(shared, f)
}

/// Falls back to the shared slot, and a clock check, when the thread-local
/// storage is gone (thread exit) or busy (`f` reading again from inside).
#[inline]
fn with_token<const CHECKED: bool, R>(
    shared: &Arc<Shared>,
    f: impl FnOnce(Option<&Arc<Token>>) -> R,
) -> R {
    let changes = shared.changes.load(Ordering::Acquire);
    let mut f = Some(f);
    let local = COPIES.try_with(|copies| {
        let mut copies = copies.try_borrow_mut().ok()?;
        let copy = copy_for(&mut copies, shared);
        if copy.changes != changes {
            copy.recopy(shared, changes);
        }
        let f = f.take()?;
        Some(f(copy.valid_token::<CHECKED>(shared)))
    });
    match (local, f) {
        (Ok(Some(result)), _) => result,
        (_, Some(f)) => {
            let now = shared.clock.now_ms_fast();
            f(shared.token().filter(|t| t.is_valid_at_ms(now)).as_ref())
        }
        // `f` is taken only after every fallible step, and its result is
        // returned at once: a taken `f` always yields `Ok(Some)`.
        (_, None) => unreachable!("the read closure ran but produced nothing"),
    }
}

#[inline]
fn copy_for<'a>(copies: &'a mut Vec<TokenCopy>, shared: &Arc<Shared>) -> &'a mut TokenCopy {
    let manager = Arc::as_ptr(shared) as usize;
    let index = match copies.iter().position(|c| c.manager == manager) {
        Some(index) => index,
        None => add_copy(copies, shared),
    };
    &mut copies[index]
}

#[cold]
fn add_copy(copies: &mut Vec<TokenCopy>, shared: &Arc<Shared>) -> usize {
    // Forget managers that are gone, with their secrets.
    copies.retain(|c| c.shared.strong_count() > 0);
    copies.push(TokenCopy {
        manager: Arc::as_ptr(shared) as usize,
        shared: Arc::downgrade(shared),
        changes: u64::MAX,
        token: None,
        late: true,
        unchecked_reads: 0,
    });
    copies.len() - 1
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;

    fn manager() -> Arc<Shared> {
        Arc::new(Shared::new(
            Arc::new(ManualClock::default()),
            Duration::from_secs(1),
        ))
    }

    fn read(shared: &Arc<Shared>) {
        with_valid_token(shared, |_| ());
    }

    fn copied() -> Vec<usize> {
        COPIES.with(|copies| copies.borrow().iter().map(|c| c.manager).collect())
    }

    #[test]
    fn a_thread_forgets_the_copies_of_managers_that_are_gone_and_keeps_the_others() {
        let key = |s: &Arc<Shared>| Arc::as_ptr(s) as usize;
        let kept = manager();
        read(&kept);
        let gone = manager();
        read(&gone);
        let gone_key = key(&gone);
        drop(gone);
        let new = manager();
        read(&new);
        // Other tests may have run on this thread before: only these three
        // copies are known.
        let copies = copied();
        assert!(
            copies.contains(&key(&kept)),
            "a live manager's copy is kept"
        );
        assert!(copies.contains(&key(&new)));
        assert!(
            !copies.contains(&gone_key),
            "a stopped manager's copy is dropped"
        );
    }
}
