//! [`Fingerprint`]: a stable 128-bit hash of a store's contents (XXH3-128 of every variable's path, dtype,
//! shape and little-endian bytes, in creation order).

use std::fmt;

use xxhash_rust::xxh3::Xxh3;

use super::StateStore;
use crate::tensor::Tensor;

/// A stable 128-bit hash of a store's variables: equal contents give equal fingerprints on every machine,
/// process and thread count. Displays as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub u128);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u128::from_str_radix(s, 16).map(Fingerprint)
    }
}

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
        fingerprint_of_digest_sum(self.totals().digest_sum, self.len())
    }
}

/// The fingerprint of a store whose `count` variables' digests add up (wrapping) to `digest_sum`: what
/// [`StateStore::fingerprint`] computes, for callers that hold only the digests (a run's journal).
pub(crate) fn fingerprint_of_digest_sum(digest_sum: u128, count: usize) -> Fingerprint {
    let mut hasher = Xxh3::new();
    hasher.update(b"purestate-fingerprint-v1");
    hasher.update(&digest_sum.to_le_bytes());
    hasher.update(&(count as u64).to_le_bytes());
    Fingerprint(hasher.digest128())
}
