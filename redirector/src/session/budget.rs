//! The daemon-wide cap on bytes buffered for clients
//! (`listen.max_buffered_bytes`). Each session relays small packets in a
//! buffer of its own ([`FREE_PER_SESSION`]); a packet larger than that is
//! held whole (the relay must see client packets whole), and its bytes
//! come out of this budget first. A session that wants more than is left
//! gets an error instead of the daemon growing without bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Client bytes a session may buffer without drawing on the budget: what
/// one read brings, and any ordinary statement.
pub const FREE_PER_SESSION: usize = 64 * 1024;

/// Bytes left for large client packets, shared by every session.
#[derive(Debug)]
pub struct BufferBudget {
    limit: usize,
    used: AtomicUsize,
}

impl BufferBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(BufferBudget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// The configured cap.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes granted now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Grows `grant` to `bytes` if the budget allows; `false` (and the
    /// grant unchanged) if it does not.
    pub fn grow(self: &Arc<Self>, grant: &mut Option<Grant>, bytes: usize) -> bool {
        let held = grant.as_ref().map_or(0, |g| g.bytes);
        if bytes <= held {
            return true;
        }
        let more = bytes - held;
        let taken = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(more).filter(|&n| n <= self.limit)
            })
            .is_ok();
        if taken {
            match grant {
                Some(g) => g.bytes = bytes,
                None => {
                    *grant = Some(Grant {
                        budget: self.clone(),
                        bytes,
                    })
                }
            }
        }
        taken
    }
}

/// Bytes taken from the budget; given back on drop.
#[derive(Debug)]
pub struct Grant {
    budget: Arc<BufferBudget>,
    bytes: usize,
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_up_to_the_limit_and_give_back_on_drop() {
        let b = BufferBudget::new(100);
        let mut one = None;
        assert!(b.grow(&mut one, 60));
        assert!(b.grow(&mut one, 40), "already covered");
        let mut two = None;
        assert!(!b.grow(&mut two, 50));
        assert!(two.is_none());
        assert!(b.grow(&mut two, 40));
        assert_eq!(b.used(), 100);
        assert!(!b.grow(&mut one, 61), "nothing left");
        drop(one);
        assert_eq!(b.used(), 40);
        assert!(b.grow(&mut two, 100));
        drop(two);
        assert_eq!(b.used(), 0);
    }
}
