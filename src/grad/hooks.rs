//! The hooks a tape installs below `grad`: [`TapeHook`] (what a traced tensor offers `tensor`) and the
//! operator hooks (`ops::trace::OpHooks`). Each forwards to its rule in `rules.rs`, so that `tensor` and `ops`
//! record onto the tape without naming this module.

use std::any::Any;
use std::sync::Arc;

use super::rules;
use super::tape::Tape;
use crate::dtype::DType;
use crate::error::Result;
use crate::ops::trace::{CustomBack, OpHooks, ViewBack};
use crate::ops::{Arg, Axes, BinaryOp, ReduceOp, UnaryOp};
use crate::tensor::trace::{IndexInfo, TapeHook};
use crate::tensor::Tensor;

/// The operator hooks every tape installs.
static OP_HOOKS: &dyn OpHooks = &Rules;

impl TapeHook for Tape {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn new_leaf(self: Arc<Self>, value: &Tensor) -> Tensor {
        self.leaf(value)
    }

    fn cast(&self, x: &Tensor, dtype: DType) -> Tensor {
        rules::cast(x, dtype)
    }

    fn indexed(&self, x: &Tensor, z: Tensor, info: IndexInfo) -> Tensor {
        rules::indexed(x, z, info)
    }

    fn op_hooks(&self) -> &'static (dyn Any + Send + Sync) {
        &OP_HOOKS
    }
}

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

    fn custom(&self, inputs: &[&Tensor], z: Tensor, back: CustomBack) -> Tensor {
        rules::custom(inputs, z, back)
    }

    fn reshaped(&self, x: &Tensor, z: Tensor) -> Tensor {
        rules::reshaped(x, z)
    }

    fn permuted(&self, x: &Tensor, z: Tensor, order: &[usize]) -> Tensor {
        rules::permuted(x, z, order)
    }
}
