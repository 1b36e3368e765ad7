//! [`Lineage`]: the identity shared by a store and every store derived from it, and the allocator of their
//! variable keys.

use std::fmt;
use std::sync::Mutex;

use slotmap::SlotMap;

slotmap::new_key_type! {
    /// The key of a variable inside its store lineage.
    pub(crate) struct VarKey;
}

/// Shared by every store cloned or derived from one [`StateStore::new`](crate::StateStore::new). Keys are
/// allocated here, never in a store, so two branches of one snapshot never give one key to two variables: a
/// handle from one branch is refused by the other rather than aliasing a different variable. Keys are never
/// freed (a removed variable may live on in snapshots), so they increase in creation order.
pub(crate) struct Lineage {
    keys: Mutex<SlotMap<VarKey, ()>>,
}

impl Lineage {
    pub(crate) fn new() -> Self {
        Lineage { keys: Mutex::new(SlotMap::with_key()) }
    }

    /// A key no store of this lineage has used; keys increase in allocation order.
    pub(crate) fn allocate(&self) -> VarKey {
        let mut keys = self.keys.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.insert(())
    }
}

impl fmt::Debug for Lineage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lineage({:p})", self)
    }
}
