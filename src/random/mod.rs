//! Counter-based, splittable random keys ([`Key`], Threefry-2x32-20 as in JAX).
//!
//! A key is a value: drawing from it never changes it, and the same key gives the same bits on any machine
//! and any thread count. New keys come from [`Key::split`] and [`Key::fold_in`]; a key whose state must
//! advance across pure steps lives in the store as a variable (a seed generator).

mod threefry;

pub use threefry::threefry2x32;

/// A counter-based random key: two 32-bit words, as a JAX `PRNGKey`.
///
/// # Examples
/// ```
/// use purestate::random::Key;
/// let key = Key::new(42);
/// let [a, b] = [key.fold_in(0), key.fold_in(1)];
/// assert_ne!(a, b);
/// assert_eq!(key.split(2), vec![a, b]); // JAX's partitionable split: key i = threefry(key, (0, i))
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    words: [u32; 2],
}

impl Key {
    /// The key of a seed, as `jax.random.PRNGKey(seed)`: the high and low 32 bits of `seed`.
    pub const fn new(seed: u64) -> Key {
        Key { words: [(seed >> 32) as u32, seed as u32] }
    }

    /// A key from its two words.
    pub const fn from_words(words: [u32; 2]) -> Key {
        Key { words }
    }

    /// The two words of the key.
    pub const fn words(self) -> [u32; 2] {
        self.words
    }

    /// `n` independent keys, as `jax.random.split` with partitionable Threefry: key `i` is the hash of the
    /// counter `(0, i)`. O(n).
    pub fn split(self, n: usize) -> Vec<Key> {
        (0..n).map(|i| self.hash_counter(i as u64)).collect()
    }

    /// A new key that mixes `data` into this one, as `jax.random.fold_in`.
    pub fn fold_in(self, data: u32) -> Key {
        self.hash_counter(u64::from(data))
    }

    /// The Threefry hash of a 64-bit counter under this key, as a key.
    fn hash_counter(self, counter: u64) -> Key {
        Key { words: threefry2x32(self.words, [(counter >> 32) as u32, counter as u32]) }
    }
}
