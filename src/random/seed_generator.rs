//! [`SeedGenerator`]: Keras's `keras.random.SeedGenerator`, whose state is a non-trainable `uint32` variable in
//! the store, so a pure step that draws random numbers returns the advanced seed with the rest of the state.

use super::Key;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::scope::Scope;
use crate::store::StateStore;
use crate::tensor::{Shape, Tensor};
use crate::variable::{Aggregation, Variable, VariableSpec};

/// A source of fresh keys whose state lives in a [`StateStore`], as Keras's `keras.random.SeedGenerator`
/// (keras/src/random/seed_generator.py, Keras 3).
///
/// The state is the variable `<name>/seed_generator_state`: shape `(2,)`, dtype `uint32`, not trainable,
/// aggregation `none`, first value `[seed, 0]`, as Keras creates it. [`next_key`](Self::next_key) returns
/// the state as a [`Key`] and adds 1 to its second word, as Keras's `SeedGenerator.next()`; Keras's JAX
/// backend uses that state directly as the JAX key, so the keys (and draws) are Keras's for the same seed.
///
/// Because the state is a variable, the store *is* the generator's position: a snapshot taken before a step
/// replays the step's draws exactly, and two branches of one snapshot draw the same keys.
///
/// # Examples
/// ```
/// use purestate::{random::{self, SeedGenerator}, DType, StateStore};
/// let mut state = StateStore::new();
/// let seeds = SeedGenerator::new(&mut state, 1337)?;
/// assert_eq!(seeds.variable().path(), "seed_generator/seed_generator_state");
///
/// let snapshot = state.clone();
/// let key = seeds.next_key(&mut state)?;                  // the key [1337, 0]; the state becomes [1337, 1]
/// let noise = random::normal(key, [3], DType::Float32, 0.0, 1.0)?;
///
/// let mut replay = snapshot.clone();
/// let again = random::normal(seeds.next_key(&mut replay)?, [3], DType::Float32, 0.0, 1.0)?;
/// assert!(noise.bit_eq(&again));                         // replay draws the same numbers
/// assert_ne!(seeds.next_key(&mut state)?, key);           // the advanced state draws new ones
/// # Ok::<(), purestate::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct SeedGenerator {
    state: Variable,
}

impl SeedGenerator {
    /// The name of the state variable, as Keras names it.
    pub const STATE_NAME: &'static str = "seed_generator_state";

    /// A generator whose state is created in `state` under the first free name scope of `seed_generator`,
    /// `seed_generator_1`, ... (Keras's automatic names), with first value `[seed, 0]`.
    ///
    /// O(log n) in the number of variables.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `seed` does not fit in 32 bits (Keras stores it as `uint32`).
    pub fn new(state: &mut StateStore, seed: u64) -> Result<SeedGenerator> {
        let name = (0..)
            .map(|n| if n == 0 { "seed_generator".to_string() } else { format!("seed_generator_{n}") })
            .find(|name| state.find(&format!("{name}/{}", Self::STATE_NAME)).is_err())
            .expect("an unbounded range of names has a free one");
        Self::with_name(state, seed, &name)
    }

    /// A generator whose state is the variable `<name>/seed_generator_state` (`name` may nest, as
    /// `"dropout/seed_generator"`), with first value `[seed, 0]`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `seed` does not fit in 32 bits; [`Error::InvalidName`] for a name that is
    /// not a name scope; [`Error::DuplicatePath`] when the variable exists.
    pub fn with_name(state: &mut StateStore, seed: u64, name: &str) -> Result<SeedGenerator> {
        let seed = u32::try_from(seed).map_err(|_| Error::InvalidArgument {
            op: "SeedGenerator::new",
            arg: "seed",
            reason: format!("{seed} does not fit in uint32, the dtype of Keras's seed state"),
        })?;
        let spec = VariableSpec::new(Tensor::from([seed, 0u32]))
            .dtype(DType::Uint32)
            .trainable(false)
            .aggregation(Aggregation::None)
            .name(Self::STATE_NAME)
            .name_scope(name);
        Ok(SeedGenerator { state: state.create(spec)? })
    }

    /// A generator over an existing state variable (one restored from a checkpoint, or found by path).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] unless the variable has shape `(2,)`; [`Error::DTypeMismatch`] unless its dtype
    /// is `uint32`.
    pub fn from_variable(var: Variable) -> Result<SeedGenerator> {
        if var.shape().dims() != [2] {
            return Err(Error::ShapeMismatch {
                path: var.path().into(),
                expected: Shape::from([2]),
                got: var.shape().clone(),
            });
        }
        if var.dtype() != DType::Uint32 {
            return Err(Error::DTypeMismatch { path: var.path().into(), expected: DType::Uint32, got: var.dtype() });
        }
        Ok(SeedGenerator { state: var })
    }

    /// The state variable.
    pub fn variable(&self) -> &Variable {
        &self.state
    }

    /// The key the next draw will use, without advancing the state: the state `[s, c]` as a key, with the
    /// store's [random stream](StateStore::with_random_stream) folded in when it has one.
    ///
    /// # Errors
    /// [`Error::ForeignVariable`] or [`Error::StaleVariable`] when `state` does not hold the generator's state.
    pub fn peek(&self, state: &StateStore) -> Result<Key> {
        Ok(on_stream(key_of(&state.get(&self.state)?)?, state.random_stream()))
    }

    /// The current key, advancing the state by one (Keras: `SeedGenerator.next()`): returns the state
    /// `[s, c]` as a key (on the store's [random stream](StateStore::with_random_stream), if it has one) and
    /// assigns `[s, c + 1]` (wrapping, as `uint32` addition).
    ///
    /// O(log n) in the number of variables. Uses only [`StateStore::assign`].
    ///
    /// # Errors
    /// [`Error::ForeignVariable`] or [`Error::StaleVariable`] when `state` does not hold the generator's state.
    pub fn next_key(&self, state: &mut StateStore) -> Result<Key> {
        let key = key_of(&state.get(&self.state)?)?;
        state.assign(&self.state, advanced(key))?;
        Ok(on_stream(key, state.random_stream()))
    }

    /// As [`next_key`](Self::next_key), reading and assigning through a [`Scope`] (Keras's
    /// `StatelessScope`): the advanced state is in the store the scope finishes with.
    ///
    /// # Errors
    /// As [`next_key`](Self::next_key).
    pub fn next_key_in(&self, scope: &mut Scope) -> Result<Key> {
        let key = key_of(&scope.get(&self.state)?)?;
        scope.assign(&self.state, advanced(key))?;
        Ok(on_stream(key, scope.random_stream()))
    }
}

fn key_of(value: &Tensor) -> Result<Key> {
    let words = value.to_vec::<u32>()?;
    match words.as_slice() {
        &[a, b] => Ok(Key::from_words([a, b])),
        _ => Err(Error::ShapeMismatch { path: "SeedGenerator".into(), expected: Shape::from([2]), got: value.shape() }),
    }
}

/// The key a draw uses: the generator's own, or on a random stream, the stream folded into it.
fn on_stream(key: Key, stream: Option<u32>) -> Key {
    match stream {
        Some(stream) => key.fold_in(stream),
        None => key,
    }
}

fn advanced(key: Key) -> Tensor {
    let [seed, counter] = key.words();
    Tensor::from([seed, counter.wrapping_add(1)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init;

    #[test]
    fn state_is_a_non_trainable_uint32_variable() {
        let mut state = StateStore::new();
        let gen = SeedGenerator::new(&mut state, 7).unwrap();
        let var = gen.variable();
        assert_eq!((var.dtype(), var.shape().dims()), (DType::Uint32, &[2usize][..]));
        assert!(!state.trainable(var).unwrap());
        assert_eq!(var.aggregation(), Aggregation::None);
        assert_eq!(state.get(var).unwrap().to_vec::<u32>().unwrap(), [7, 0]);
        let second = SeedGenerator::new(&mut state, 7).unwrap();
        assert_eq!(second.variable().path(), "seed_generator_1/seed_generator_state");
    }

    #[test]
    fn next_key_returns_the_state_and_increments_the_counter() {
        let mut state = StateStore::new();
        let gen = SeedGenerator::with_name(&mut state, 1337, "dropout/seed_generator").unwrap();
        assert_eq!(gen.variable().path(), "dropout/seed_generator/seed_generator_state");
        assert_eq!(gen.next_key(&mut state).unwrap(), Key::from_words([1337, 0]));
        assert_eq!(gen.next_key(&mut state).unwrap(), Key::from_words([1337, 1]));
        assert_eq!(gen.peek(&state).unwrap(), Key::from_words([1337, 2]));
        state.assign(gen.variable(), Tensor::from([1u32, u32::MAX])).unwrap();
        assert_eq!(gen.next_key(&mut state).unwrap(), Key::from_words([1, u32::MAX]));
        assert_eq!(gen.peek(&state).unwrap(), Key::from_words([1, 0]), "the counter wraps as uint32");
    }

    #[test]
    fn scope_draws_advance_the_finished_store_only() {
        let mut state = StateStore::new();
        let gen = SeedGenerator::new(&mut state, 3).unwrap();
        let mut scope = Scope::new(&state);
        assert_eq!(gen.next_key_in(&mut scope).unwrap(), Key::from_words([3, 0]));
        assert_eq!(gen.next_key_in(&mut scope).unwrap(), Key::from_words([3, 1]));
        let (next, _) = scope.finish();
        assert_eq!(gen.peek(&next).unwrap(), Key::from_words([3, 2]));
        assert_eq!(gen.peek(&state).unwrap(), Key::from_words([3, 0]));
    }

    #[test]
    fn refuses_bad_seeds_and_variables() {
        let mut state = StateStore::new();
        let err = SeedGenerator::new(&mut state, 1 << 32).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { arg: "seed", .. }));
        assert!(state.is_empty());
        SeedGenerator::with_name(&mut state, 1, "g").unwrap();
        assert!(matches!(SeedGenerator::with_name(&mut state, 1, "g"), Err(Error::DuplicatePath { .. })));
        let w = state.create(VariableSpec::new(init::Zeros).shape([3]).dtype(DType::Uint32).name("w")).unwrap();
        assert!(matches!(SeedGenerator::from_variable(w), Err(Error::ShapeMismatch { .. })));
        let v = state.create(VariableSpec::new(init::Zeros).shape([2]).name("v")).unwrap();
        assert!(matches!(SeedGenerator::from_variable(v), Err(Error::DTypeMismatch { .. })));
        let other = StateStore::new();
        let gen = SeedGenerator::from_variable(state.find("g/seed_generator_state").unwrap()).unwrap();
        assert!(matches!(gen.peek(&other), Err(Error::ForeignVariable { .. })));
    }
}
