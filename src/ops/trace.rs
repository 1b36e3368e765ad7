//! The operators' side of the tracing hook (see `tensor/trace.rs`): [`OpHooks`], the recording form of
//! each operation family, which the layer that owns the tape implements and installs from above.
//!
//! Every entry point asks [`hooks`] first when an operand carries a trace; an operand whose tape has been
//! dropped is computed untraced.

use super::{Arg, Axes, BinaryOp, ReduceOp, UnaryOp};
use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::Tensor;

/// A backward for a view or shape change: the cotangent of the input from the output's.
pub(crate) type ViewBack = Box<dyn FnOnce(&Tensor) -> Result<Tensor> + Send>;

/// A backward of an operation with several inputs: given the cotangent of the output (in the output's shape
/// and dtype) and which inputs need one, the cotangent of each input, in that input's shape (or one it
/// broadcasts to) and any float dtype (the sweep casts it back).
pub(crate) type CustomBack = Box<dyn FnOnce(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send>;

/// The recording form of each operation family: computes the result as the untraced operation does and
/// records it on the tape of its traced operands.
pub(crate) trait OpHooks: Send + Sync {
    /// A traced [`super::binary`].
    fn binary(&self, op: BinaryOp, lhs: Arg<'_>, rhs: Arg<'_>, floatx: DType) -> Result<Tensor>;
    /// A traced [`super::unary`].
    fn unary(&self, op: UnaryOp, x: Arg<'_>, floatx: DType) -> Result<Tensor>;
    /// A traced [`super::where_`].
    fn where_(&self, cond: Arg<'_>, x: Arg<'_>, y: Arg<'_>, floatx: DType) -> Result<Tensor>;
    /// A traced [`super::reduce`].
    fn reduce(&self, op: ReduceOp, x: &Tensor, axes: Axes, keepdims: bool, floatx: DType) -> Result<Tensor>;
    /// A traced [`super::matmul`].
    fn matmul(&self, a: &Tensor, b: &Tensor) -> Result<Tensor>;
    /// A traced [`Tensor::softmax`].
    fn softmax(&self, x: &Tensor, axis: isize) -> Result<Tensor>;
    /// A traced [`Tensor::log_softmax`].
    fn log_softmax(&self, x: &Tensor, axis: isize) -> Result<Tensor>;
    /// `z`, a view or shape change of `x`, recorded with the backward `back`.
    fn view(&self, x: &Tensor, z: Tensor, back: ViewBack) -> Tensor;
    /// `z`, computed from `inputs`, recorded with the backward `back` (an operation whose rule lives beside
    /// its forward in `ops`: convolution, pooling, gather, ...).
    fn custom(&self, inputs: &[&Tensor], z: Tensor, back: CustomBack) -> Tensor;
    /// `z`, a reshape of `x`, recorded.
    fn reshaped(&self, x: &Tensor, z: Tensor) -> Tensor;
    /// `z = x.permute(order)`, recorded.
    fn permuted(&self, x: &Tensor, z: Tensor, order: &[usize]) -> Tensor;
}

/// The operator hooks of the first of `tensors` whose tape is alive.
pub(crate) fn hooks<'t>(tensors: impl IntoIterator<Item = Option<&'t Tensor>>) -> Option<&'static dyn OpHooks> {
    tensors.into_iter().flatten().find_map(|t| {
        let tape = t.trace()?.tape()?;
        tape.op_hooks().downcast_ref::<&'static dyn OpHooks>().copied()
    })
}

/// The tensor of an operand (`None` for a scalar).
pub(crate) fn tensor_of<'t>(arg: &'t Arg<'_>) -> Option<&'t Tensor> {
    match arg {
        Arg::Ref(t) => Some(t),
        Arg::Owned(t) => Some(t),
        Arg::Scalar(_) => None,
    }
}

/// `z` recorded as a view of `x` with the backward `back`, when `x` is traced on a live tape.
pub(crate) fn view(x: &Tensor, z: Tensor, back: impl FnOnce(&Tensor) -> Result<Tensor> + Send + 'static) -> Tensor {
    if x.trace().is_none() {
        return z;
    }
    match hooks([Some(x)]) {
        Some(h) => h.view(x, z, Box::new(back)),
        None => z,
    }
}

/// `z` recorded as a reshape of `x`, when `x` is traced on a live tape.
pub(crate) fn reshaped(x: &Tensor, z: Tensor) -> Tensor {
    if x.trace().is_none() {
        return z;
    }
    match hooks([Some(x)]) {
        Some(h) => h.reshaped(x, z),
        None => z,
    }
}

/// `z = x.permute(order)` recorded, when `x` is traced on a live tape.
pub(crate) fn permuted(x: &Tensor, z: Tensor, order: &[usize]) -> Tensor {
    if x.trace().is_none() {
        return z;
    }
    match hooks([Some(x)]) {
        Some(h) => h.permuted(x, z, order),
        None => z,
    }
}

/// `z`, computed from `inputs`, recorded with the backward `back` when any input is traced on a live tape;
/// otherwise `z` as it is (and `back` is dropped unrun).
///
/// This is how an operation whose backward is written beside its forward joins the tape: `back` receives the
/// output's cotangent and a flag per input (true where that input needs a cotangent) and returns one entry per
/// input. It runs with untraced tensors, once, during the reverse sweep; whatever it captured is dropped then.
pub(crate) fn custom(
    inputs: &[&Tensor],
    z: Tensor,
    back: impl FnOnce(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send + 'static,
) -> Tensor {
    if inputs.iter().all(|t| t.trace().is_none()) {
        return z;
    }
    match hooks(inputs.iter().map(|t| Some(*t))) {
        Some(h) => h.custom(inputs, z, Box::new(back)),
        None => z,
    }
}

/// True when any of `inputs` is traced on a live tape: an operation may then keep what its backward needs.
pub(crate) fn any_traced(inputs: &[&Tensor]) -> bool {
    inputs.iter().any(|t| t.trace().is_some_and(|tr| tr.is_live()))
}
