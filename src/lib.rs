//! # purestate
//!
//! Functional training state for Rust: Keras 3's `keras.Variable` in an immutable, persistent store, training
//! steps as pure functions from one snapshot to the next, and a trainer that commits versions, rolls back and
//! replays.
//!
//! ## The ideas
//!
//! 1. **Everything is state, and state is a value.** [`StateStore`] is a persistent map from variable handles
//!    to tensors plus their specs. Cloning it is O(1) and *is* the snapshot.
//! 2. **Handles, not objects.** A [`Variable`] is a small handle; its value is looked up in a store:
//!    `state.get(&w)?`. A handle of another store lineage, or of a removed variable, is an error.
//! 3. **Ownership is donation.** A function that takes a store by value may update a buffer in place when
//!    nothing else holds it, and copies it when a snapshot or the history still does.
//! 4. **Versions are committed, not mutated.** [`Trainer::commit`] accepts a store only if it derives from the
//!    head, numbers it and records its [`Fingerprint`]. Rollback moves the head.
//! 5. **Determinism is a contract.** The same snapshot and inputs give a bit-identical next snapshot, whatever
//!    the thread count; randomness comes from counter-based keys ([`random::Key`]).
//! 6. **A step returns everything it changed.** The differentiated function's scope hands back its
//!    assignments ([`grad::GradOutput::state`]): BatchNorm statistics, Dropout seed states and metrics flow
//!    through pure steps like any other variable.
//!
//! ## Quickstart
//!
//! ```
//! use purestate::{init, StateStore, Tensor, Trainer, VariableSpec};
//!
//! let mut state = StateStore::new();
//! let w = state.create(VariableSpec::new(init::Zeros).shape([2]).name("w"))?;
//! let mut trainer: Trainer = Trainer::new(state);
//!
//! let mut next = trainer.state().clone();            // O(1) snapshot
//! next.assign_add(&w, Tensor::from([1.0f32, 2.0]))?; // a new version of `w`
//! trainer.commit(next)?;
//! assert_eq!(trainer.state().get(&w)?.to_vec::<f32>()?, [1.0, 2.0]);
//! trainer.rollback(0)?;
//! assert_eq!(trainer.state().get(&w)?.to_vec::<f32>()?, [0.0, 0.0]);
//! # Ok::<(), purestate::Error>(())
//! ```
//!
//! ## Modules
//!
//! | module | holds |
//! | --- | --- |
//! | [`dtype`] | [`DType`], Keras names, [`dtype::result_type`] promotion |
//! | [`tensor`] | [`Tensor`], a dtype-tagged n-d array with a shared buffer |
//! | [`kernels`] | the rayon engine, deterministic at any thread count |
//! | [`variable`] | [`Variable`] handles, [`VariableSpec`], [`Aggregation`], [`Synchronization`] |
//! | [`store`] | [`StateStore`], [`Fingerprint`], [`StoreDiff`] |
//! | [`scope`] | [`Scope`], Keras's `StatelessScope` |
//! | [`grad`] | [`grad::value_and_grad`], [`grad::value_and_grad_aux`]: reverse-mode autodiff on a tape that lives for one call; [`grad::Grads`]; the state and auxiliary value the function returns |
//! | [`layers`] | Keras layers (Dense, Conv2D, pooling, BatchNormalization, LayerNormalization, Dropout, Embedding, Sequential) whose state lives in the store |
//! | [`losses`] | Keras's losses with fused, numerically stable backward passes |
//! | [`trainer`] | [`Trainer`], [`Retention`], history |
//! | [`random`] | [`random::Key`] (Threefry-2x32), JAX-exact sampling, [`random::SeedGenerator`] |
//! | [`init`] | the [`init::Initializer`] trait and Keras's initializers |
//! | [`replica`] | [`replica::Replicas`]: data-parallel steps, in process or over MPI (feature `mpi`) |
//! | [`checkpoint`] | safetensors [`checkpoint::save`]/[`checkpoint::load`]/[`checkpoint::restore`], [`CheckpointManager`] |
//! | [`constraint`], [`regularizer`] | the traits specs hold |
//! | [`error`] | [`Error`], [`Result`] |

mod base;
pub mod checkpoint;
pub mod constraint;
pub mod dtype;
pub mod error;
pub mod grad;
pub mod init;
pub mod kernels;
pub mod layers;
pub mod losses;
pub mod ops;
pub mod optim;
pub mod random;
pub mod regularizer;
pub mod replica;
pub mod scope;
pub mod store;
pub mod tensor;
pub mod trainer;
pub mod variable;

pub use checkpoint::{CheckpointManager, LoadReport};
pub use dtype::DType;
pub use error::{Error, Result};
pub use scope::Scope;
pub use store::{Fingerprint, StateStore, StoreDiff};
pub use tensor::{Element, Scalar, Shape, Tensor, TensorData};
pub use trainer::run::{Durability, RunOptions};
pub use trainer::{Divergence, ReplayReport, Retention, Trainer, TrainerId, VersionInfo};
pub use variable::{Aggregation, Synchronization, Variable, VariableSpec};

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
struct ReadmeDoctests;
