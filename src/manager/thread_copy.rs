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
//! Each manager holds an index into every thread's list of copies, so a
//! read finds its copy in one step with one manager or a hundred thousand.
//! Indices of managers that are gone go to the next managers made; a
//! thread drops its copy of a gone manager when it first reads the manager
//! that took the index, or at its next sweep, which comes after as many
//! new copies as its list is long.
//!
//! The calls that promise a valid token and wait for one when there is
//! none (`token()`, `refresh_rejected()`) read through the same copy but
//! always check the clock: they must never hand out an expired token, and
//! one clock reading is nothing next to what they may wait.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::manager::shared::Shared;
use crate::manager::UNCHECKED_READS;
use crate::token::Token;

/// Where a manager's copy sits in every thread's list of copies, so that a
/// read finds it at once however many managers the process runs.
///
/// Indices are reused once their manager is gone, to keep the lists as
/// short as the most managers alive at once; the generation, never reused,
/// tells a thread that the copy at an index belongs to a manager that is
/// gone.
pub(crate) struct CopyIndex {
    index: usize,
    generation: u64,
}

/// Indices free for the next manager, and the first never handed out.
struct FreeIndices {
    free: Vec<usize>,
    next: usize,
}

static FREE_INDICES: Mutex<FreeIndices> = Mutex::new(FreeIndices {
    free: Vec::new(),
    next: 0,
});

/// The last generation handed out; 0 marks a vacant entry.
static GENERATION: AtomicU64 = AtomicU64::new(0);

impl CopyIndex {
    pub(crate) fn new() -> CopyIndex {
        let index = {
            let mut indices = FREE_INDICES.lock().unwrap_or_else(PoisonError::into_inner);
            // The lowest index last freed: lists stay short.
            indices.free.pop().unwrap_or_else(|| {
                indices.next += 1;
                indices.next - 1
            })
        };
        CopyIndex {
            index,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }
}

impl Drop for CopyIndex {
    fn drop(&mut self) {
        FREE_INDICES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .free
            .push(self.index);
    }
}

/// One manager's token as this thread last copied it.
struct TokenCopy {
    /// The generation of the manager's [`CopyIndex`]; 0 when vacant.
    generation: u64,
    /// Tells a sweep whether the manager is gone; it keeps the allocation,
    /// not the manager, alive.
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
    const VACANT: TokenCopy = TokenCopy {
        generation: 0,
        shared: Weak::new(),
        changes: u64::MAX,
        token: None,
        late: true,
        unchecked_reads: 0,
    };

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
        if !shared.is_valid_now(token) {
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

/// A thread's copies, each at its manager's index.
struct Copies {
    list: Vec<TokenCopy>,
    /// Copies added since the last sweep for managers that are gone.
    added: usize,
    /// How many additions trigger the next sweep: as many as the list is
    /// long, so sweeping costs each addition O(1) on average.
    sweep_after: usize,
}

thread_local! {
    static COPIES: RefCell<Copies> = const {
        RefCell::new(Copies {
            list: Vec::new(),
            added: 0,
            sweep_after: MIN_SWEEP_AFTER,
        })
    };
}

/// The fewest additions between two sweeps.
const MIN_SWEEP_AFTER: usize = 16;

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
        (_, Some(f)) => f(shared.token().filter(|t| shared.is_valid_now(t)).as_ref()),
        // `f` is taken only after every fallible step, and its result is
        // returned at once: a taken `f` always yields `Ok(Some)`.
        (_, None) => unreachable!("the read closure ran but produced nothing"),
    }
}

#[inline]
fn copy_for<'a>(copies: &'a mut Copies, shared: &Arc<Shared>) -> &'a mut TokenCopy {
    let CopyIndex { index, generation } = shared.copy_index;
    let current = copies
        .list
        .get(index)
        .is_some_and(|c| c.generation == generation);
    if !current {
        add_copy(copies, shared);
    }
    &mut copies.list[index]
}

#[cold]
fn add_copy(copies: &mut Copies, shared: &Arc<Shared>) {
    let CopyIndex { index, generation } = shared.copy_index;
    if index >= copies.list.len() {
        copies.list.resize_with(index + 1, || TokenCopy::VACANT);
    }
    // Replaces, with its secret, the copy of a manager gone before this
    // one took its index.
    copies.list[index] = TokenCopy {
        generation,
        shared: Arc::downgrade(shared),
        ..TokenCopy::VACANT
    };
    copies.added += 1;
    if copies.added >= copies.sweep_after {
        sweep(copies);
    }
}

/// Forgets the copies of managers that are gone, with their secrets.
#[cold]
fn sweep(copies: &mut Copies) {
    for copy in &mut copies.list {
        if copy.generation != 0 && copy.shared.strong_count() == 0 {
            *copy = TokenCopy::VACANT;
        }
    }
    let used = copies
        .list
        .iter()
        .rposition(|c| c.generation != 0)
        .map_or(0, |last| last + 1);
    copies.list.truncate(used);
    copies.added = 0;
    copies.sweep_after = used.max(MIN_SWEEP_AFTER);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;
    use crate::token::AccessToken;

    fn manager() -> Arc<Shared> {
        Arc::new(Shared::new(
            Arc::new(ManualClock::default()),
            Duration::from_secs(1),
        ))
    }

    fn read(shared: &Arc<Shared>) -> Option<String> {
        with_valid_token(shared, |t| t.map(|t| t.access_token().secret().to_owned()))
    }

    fn publish(shared: &Shared, secret: &str) {
        let token = Token::from_parts_ms(AccessToken::new(secret), 0, u64::MAX, u64::MAX).unwrap();
        shared.publish(Arc::new(token), false);
    }

    /// This thread's copies: (index, generation).
    fn copied() -> Vec<(usize, u64)> {
        COPIES.with(|copies| {
            let copies = copies.borrow();
            let used = copies.list.iter().enumerate();
            used.filter(|(_, c)| c.generation != 0)
                .map(|(i, c)| (i, c.generation))
                .collect()
        })
    }

    fn key(shared: &Shared) -> (usize, u64) {
        (shared.copy_index.index, shared.copy_index.generation)
    }

    #[test]
    fn a_manager_that_takes_a_gone_managers_index_reads_its_own_token() {
        let gone = manager();
        publish(&gone, "gone");
        assert_eq!(read(&gone).as_deref(), Some("gone"));
        let (index, generation) = key(&gone);
        drop(gone);
        // Other tests on other threads may take the freed index first:
        // make managers until one takes it.
        let mut made = Vec::new();
        let new = loop {
            let m = manager();
            if key(&m).0 == index {
                break m;
            }
            made.push(m);
            assert!(made.len() < 10_000, "the freed index is never reused");
        };
        assert_ne!(key(&new).1, generation);
        assert_eq!(read(&new), None, "not the gone manager's token");
        publish(&new, "new");
        assert_eq!(read(&new).as_deref(), Some("new"));
        assert!(!copied().contains(&(index, generation)));
    }

    #[test]
    fn a_thread_forgets_the_copies_of_managers_that_are_gone_and_keeps_the_others() {
        // On a thread of its own: its list holds only this test's copies.
        std::thread::spawn(|| {
            let kept = manager();
            publish(&kept, "kept");
            read(&kept);
            let gone: Vec<_> = (0..100).map(|_| manager()).collect();
            gone.iter().for_each(|m| {
                read(m);
            });
            let gone_keys: Vec<_> = gone.iter().map(|m| key(m)).collect();
            // Made before the others go, so no copy here is replaced by
            // one at the same index: the sweep alone must drop them.
            let new: Vec<_> = (0..200).map(|_| manager()).collect();
            drop(gone);
            let new_keys: Vec<_> = new.iter().map(|m| key(m)).collect();
            new.iter().for_each(|m| {
                read(m);
            });
            let copies = copied();
            assert!(
                copies.contains(&key(&kept)),
                "a live manager's copy is kept"
            );
            assert_eq!(read(&kept).as_deref(), Some("kept"));
            assert!(new_keys.iter().all(|k| copies.contains(k)));
            let stale = gone_keys.iter().filter(|k| copies.contains(k)).count();
            assert_eq!(stale, 0, "stopped managers' copies are dropped");
        })
        .join()
        .unwrap();
    }
}
