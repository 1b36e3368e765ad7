//! [`TrainerId`]: the identity of one [`Trainer`](crate::Trainer), carried by every state it hands out so that
//! a state is committed only to the trainer it came from.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// The next id to hand out. Ids only tell trainers apart: no computed value, fingerprint or file depends on
/// them, so this counter is the one piece of global state that cannot change a result.
static NEXT: AtomicU64 = AtomicU64::new(1);

/// The identity of a [`Trainer`](crate::Trainer): unique among the trainers of one process.
///
/// [`Trainer::new`](crate::Trainer::new) takes a fresh id; rollback, tags, retention and replay keep it. A
/// [`StateStore`](crate::StateStore) remembers the id of the trainer whose version it derives from
/// ([`StateStore::trainer`](crate::StateStore::trainer)), and
/// [`Trainer::commit`](crate::Trainer::commit) refuses a state of another trainer
/// ([`Error::ForeignState`](crate::Error::ForeignState)) even when the version numbers match.
///
/// Ids are not saved in checkpoints: they mean nothing to another process. Displays as `trainer N`.
///
/// A trainer cannot be cloned, so no two trainers ever share an id:
/// ```compile_fail,E0599
/// use purestate::{StateStore, Trainer};
/// let a: Trainer = Trainer::new(StateStore::new());
/// let b = a.clone();
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrainerId(u64);

impl TrainerId {
    /// An id no trainer of this process has had. O(1), lock-free.
    pub(crate) fn next() -> TrainerId {
        TrainerId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Display for TrainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "trainer {}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::TrainerId;

    #[test]
    fn ids_are_unique_and_display_their_number() {
        let (a, b) = (TrainerId::next(), TrainerId::next());
        assert_ne!(a, b);
        assert!(a < b, "ids increase in allocation order");
        assert_eq!(a.to_string(), format!("trainer {}", a.0));
    }
}
