//! [`Fingerprint`]: a stable 128-bit hash of a store's contents, an order-free set hash: each variable's
//! (path, dtype, shape, little-endian bytes) has its own XXH3-128 digest, the digests are added (wrapping,
//! so in any order) and the sum and the count are hashed once more. It does not depend on creation order, so
//! a commit rehashes only the variables that changed: O(changed).

use xxhash_rust::xxh3::Xxh3;

use super::StateStore;
use crate::base::Fingerprint;
use crate::tensor::Tensor;

/// The digest of one variable: XXH3-128 of its length-prefixed path, dtype name, dims, byte count and
/// little-endian bytes.
pub(crate) fn variable_digest(path: &str, value: &Tensor) -> u128 {
    let mut hasher = Xxh3::new();
    hasher.update(&(path.len() as u64).to_le_bytes());
    hasher.update(path.as_bytes());
    let dtype = value.dtype().name();
    hasher.update(&(dtype.len() as u64).to_le_bytes());
    hasher.update(dtype.as_bytes());
    hasher.update(&(value.ndim() as u64).to_le_bytes());
    for &d in value.dims() {
        hasher.update(&(d as u64).to_le_bytes());
    }
    hasher.update(&(value.nbytes() as u64).to_le_bytes());
    value.for_each_le_chunk(|bytes| hasher.update(bytes));
    hasher.digest128()
}

impl StateStore {
    /// The fingerprint of every variable's path, dtype, shape and bytes.
    ///
    /// It is the XXH3-128 of the wrapping sum of the variables' own digests and their count: a set hash, so it
    /// can be kept up to date incrementally. Each variable's digest is computed once per value and cached in the
    /// store, so after a commit (which settles the cache) a fingerprint costs O(1), and a new version that
    /// changed k variables costs O(k log n) plus their bytes. Equal iff the stores hold the same paths, dtypes,
    /// shapes and element bits (up to a negligible chance of collision); metadata (trainable, constraint) is not
    /// part of it. Paths are unique, so the order of creation cannot make two different stores collide.
    ///
    /// # Examples
    /// ```
    /// use purestate::{StateStore, Tensor, VariableSpec};
    /// let mut a = StateStore::new();
    /// let w = a.create(VariableSpec::new(Tensor::from([1.0f32, 2.0])).name("w"))?;
    /// let b = a.clone();
    /// assert_eq!(a.fingerprint(), b.fingerprint());
    /// a.assign(&w, Tensor::from([1.0f32, 3.0]))?;
    /// assert_ne!(a.fingerprint(), b.fingerprint());
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn fingerprint(&self) -> Fingerprint {
        let totals = self.totals();
        let mut hasher = Xxh3::new();
        hasher.update(b"purestate-fingerprint-v1");
        hasher.update(&totals.digest_sum.to_le_bytes());
        hasher.update(&(self.len() as u64).to_le_bytes());
        Fingerprint(hasher.digest128())
    }
}
