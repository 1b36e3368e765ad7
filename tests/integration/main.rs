//! purestate's integration tests: one binary, one module per concern.

mod checkpoint;
mod init;
mod kernels;
mod ops;
mod optim;
mod props;
mod random;
mod replica;
mod scope;
mod store;
mod tidy;
mod trainer;
