//! The one integration-test binary.

mod kernels;
mod ops;
