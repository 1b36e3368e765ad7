//! purestate's integration tests: one binary, one module per concern.

mod attention_ops;
mod checkpoint;
mod conv;
mod fd;
mod grad;
mod grad_state;
mod init;
mod jax_ops_conv;
mod jax_ops_misc;
mod kernels;
mod layers;
mod losses;
mod nn_ops;
mod ops;
mod optim;
mod optim_state;
mod props;
mod random;
mod replica;
mod replica_invariance;
mod run;
mod scope;
mod store;
mod tidy;
mod train;
mod trainer;
