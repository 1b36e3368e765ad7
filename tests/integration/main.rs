//! purestate's integration tests: one binary, one module per concern.

mod checkpoint;
mod props;
mod scope;
mod store;
mod tidy;
mod trainer;
