//! # purestate
//!
//! Functional training state for Rust: Keras 3 variables in an immutable, persistent store; training steps
//! as pure functions from one snapshot to the next; a trainer that commits versions, rolls back and replays.

pub mod dtype;
pub mod error;
pub mod kernels;
pub mod ops;
pub mod tensor;

pub use dtype::DType;
pub use error::{Error, Result};
pub use tensor::{Element, Scalar, Shape, Tensor, TensorData};
