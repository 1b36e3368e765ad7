//! The operator hooks (`ops::trace::OpHooks`) that every tape installs: each forwards to its rule in
//! `rules.rs`, so that `ops` records onto the tape without naming this module.

use super::rules;
use crate::dtype::DType;
use crate::error::Result;
use crate::ops::trace::{OpHooks, ViewBack};
use crate::ops::{Arg, Axes, BinaryOp, ReduceOp, UnaryOp};
use crate::tensor::Tensor;

/// The backward rules of `rules.rs`, as the operators' hooks.
#[derive(Debug)]
pub(crate) struct Rules;

impl OpHooks for Rules {
    fn binary(&self, op: BinaryOp, lhs: Arg<'_>, rhs: Arg<'_>, floatx: DType) -> Result<Tensor> {
        rules::binary(op, lhs, rhs, floatx)
    }

    fn unary(&self, op: UnaryOp, x: Arg<'_>, floatx: DType) -> Result<Tensor> {
        rules::unary(op, x, floatx)
    }

    fn where_(&self, cond: Arg<'_>, x: Arg<'_>, y: Arg<'_>, floatx: DType) -> Result<Tensor> {
        rules::where_traced(cond, x, y, floatx)
    }

    fn reduce(&self, op: ReduceOp, x: &Tensor, axes: Axes, keepdims: bool, floatx: DType) -> Result<Tensor> {
        rules::reduce_traced(op, x, axes, keepdims, floatx)
    }

    fn matmul(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        rules::matmul_traced(a, b)
    }

    fn softmax(&self, x: &Tensor, axis: isize) -> Result<Tensor> {
        rules::softmax(x, axis)
    }

    fn log_softmax(&self, x: &Tensor, axis: isize) -> Result<Tensor> {
        rules::log_softmax(x, axis)
    }

    fn view(&self, x: &Tensor, z: Tensor, back: ViewBack) -> Tensor {
        rules::view(x, z, back)
    }

    fn reshaped(&self, x: &Tensor, z: Tensor) -> Tensor {
        rules::reshaped(x, z)
    }

    fn permuted(&self, x: &Tensor, z: Tensor, order: &[usize]) -> Tensor {
        rules::permuted(x, z, order)
    }
}
