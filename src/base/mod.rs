//! The ground: small value types that every layer carries, the error type included. Nothing here imports
//! another module of the crate.
//!
//! Each type is re-exported where a user looks for it: [`DType`] from `dtype`, [`Shape`] from `tensor`,
//! [`Fingerprint`] from `store`, [`TrainerId`] from `trainer`. The behaviour that needs more than the value
//! (parsing a dtype name into a `Result`, hashing a store, handing out trainer ids) lives with those modules.

mod dtype;
mod fingerprint;
mod shape;
mod trainer_id;

pub use dtype::DType;
pub use fingerprint::Fingerprint;
pub use shape::Shape;
pub use trainer_id::TrainerId;
