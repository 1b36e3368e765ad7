//! Counter-based, splittable random keys ([`Key`], Threefry-2x32-20 as in JAX), sampling, and
//! [`SeedGenerator`].
//!
//! A key is a value: drawing from it never changes it, and the same key gives the same bits on any machine
//! and any thread count. New keys come from [`Key::split`] and [`Key::fold_in`]; a key whose state must
//! advance across pure steps lives in the store as a variable ([`SeedGenerator`]).
//!
//! The sampling functions ([`uniform`], [`normal`], [`truncated_normal`], [`bernoulli`], [`randint`],
//! [`permutation`], [`bits`]) draw what JAX draws for the same key with `jax_threefry_partitionable` (the
//! default since jax 0.5): element `i` is a pure function of the key and `i`, so tensors are filled in
//! parallel with the same bits at any thread count. `tests/fixtures/jax_random.json`, written by
//! `tools/jax_random.py`, holds JAX's own draws for the tests.
//!
//! ```
//! use purestate::{random::{self, Key}, DType};
//! let key = Key::new(42);                                   // jax.random.PRNGKey(42)
//! let [k1, k2] = [key.fold_in(0), key.fold_in(1)];
//! let x = random::uniform(k1, [2, 3], DType::Float32, 0.0, 1.0)?;
//! let y = random::normal(k2, [2, 3], DType::Float32, 0.0, 1.0)?;
//! assert!(x.bit_eq(&random::uniform(k1, [2, 3], DType::Float32, 0.0, 1.0)?));
//! assert!(!x.bit_eq(&y));
//! # Ok::<(), purestate::Error>(())
//! ```

mod sample;
mod seed_generator;
mod special;
mod threefry;

pub use sample::{bernoulli, bits, normal, permutation, randint, truncated_normal, uniform, MAX_PERMUTATION};
pub use seed_generator::SeedGenerator;
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

    /// The key Keras's JAX backend draws from for an integer seed: the words `[seed, 0]`
    /// (keras/src/random/seed_generator.py, `draw_seed`). An initializer given this key draws what the Keras
    /// initializer constructed with `seed=seed` draws; note the word order differs from [`Key::new`].
    ///
    /// ```
    /// use purestate::random::Key;
    /// assert_eq!(Key::from_keras_seed(1337).words(), [1337, 0]);
    /// assert_eq!(Key::new(1337).words(), [0, 1337]);
    /// ```
    pub const fn from_keras_seed(seed: u32) -> Key {
        Key { words: [seed, 0] }
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

    /// `split(2)` as a pair, as JAX's `key, subkey = jax.random.split(key)`.
    pub(crate) fn split_pair(self) -> (Key, Key) {
        (self.hash_counter(0), self.hash_counter(1))
    }

    /// The Threefry hash of a 64-bit counter under this key, as a key.
    fn hash_counter(self, counter: u64) -> Key {
        Key { words: threefry2x32(self.words, [(counter >> 32) as u32, counter as u32]) }
    }
}
