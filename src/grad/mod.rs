//! Gradients: [`Grads`], the map from variables to gradients that optimizers take.

mod grads;

pub use grads::Grads;
