//! The tape of one [`value_and_grad`](super::value_and_grad) call: a list of nodes, one per recorded
//! operation or leaf, in the order they were recorded (a topological order), and the reverse sweep over it.
//!
//! A traced [`Tensor`] holds a [`Trace`] (`tensor/trace.rs`): a *weak* handle to the tape, as a
//! [`TapeHook`] trait object, and its node's index. The tape implements that hook, and the operator hooks
//! (`ops::trace::OpHooks`); `hooks.rs` implements both, so that `tensor` and `ops` record onto it without naming this
//! module. Only the call holds the tape strongly, so when the call returns the tape is dropped with every
//! tensor its nodes saved, and traces that escaped the call are inert (ops on them record nothing). Nothing
//! here is global or thread-local.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::dtype::DType;
use crate::error::Result;
use crate::ops::{reduce, Arg, Axes, BinaryOp, ReduceOp};
use crate::tensor::trace::{TapeHook, Trace};
use crate::tensor::Tensor;

/// A backward rule: given the cotangent of the node's output and which inputs need a gradient, the
/// cotangent of each input (in the op's compute dtype and result shape: the sweep reduces broadcast axes and
/// casts back to each input's own dtype and shape).
pub(crate) type Backward = Box<dyn FnOnce(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send>;

/// An input of a recorded operation: the traced operand's node, shape and dtype.
#[derive(Clone, Debug)]
pub(crate) struct Link {
    trace: Trace,
    dims: Vec<usize>,
    dtype: DType,
}

impl Link {
    /// The link of `t` when it is a traced float tensor.
    pub(crate) fn of(t: &Tensor) -> Option<Link> {
        let trace = t.trace()?;
        (t.dtype().is_float() && trace.is_live()).then(|| Link {
            trace: trace.clone(),
            dims: t.dims().to_vec(),
            dtype: t.dtype(),
        })
    }
}

/// The link of an operand that is a traced float tensor (`None` for a scalar).
pub(crate) trait ArgLink {
    /// The operand's link to a live tape, if it is a traced float tensor.
    fn link(&self) -> Option<Link>;
}

impl ArgLink for Arg<'_> {
    fn link(&self) -> Option<Link> {
        self.tensor().and_then(Link::of)
    }
}

struct Input {
    id: usize,
    dims: Vec<usize>,
    dtype: DType,
}

struct Node {
    inputs: Vec<Option<Input>>,
    /// `None` for a leaf (a variable read or a watched input).
    backward: Option<Backward>,
}

/// The recorded operations of one call.
pub(crate) struct Tape {
    nodes: Mutex<Vec<Node>>,
}

impl fmt::Debug for Tape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tape({} nodes)", self.lock().len())
    }
}

impl Tape {
    /// An empty tape.
    pub(crate) fn new() -> Arc<Tape> {
        Arc::new(Tape { nodes: Mutex::new(Vec::new()) })
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Node>> {
        // A rule that panicked cannot leave a node half-written: pushes are atomic under the lock.
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `value` (detached) as a new leaf of this tape.
    pub(crate) fn leaf(self: &Arc<Self>, value: &Tensor) -> Tensor {
        let mut nodes = self.lock();
        nodes.push(Node { inputs: Vec::new(), backward: None });
        let id = nodes.len() - 1;
        let tape: Weak<dyn TapeHook> = Arc::downgrade(self) as Weak<dyn TapeHook>;
        value.detached().with_trace(Trace::new(tape, id))
    }

    /// The reverse sweep from the node of `loss` (whose cotangent is one): the cotangent of every leaf the
    /// loss depends on, indexed by node id (`None` for leaves it does not reach and for inner nodes).
    ///
    /// Each node's rule runs once, after every consumer of its output has added its cotangent, and is
    /// dropped with the tensors it saved as soon as it has run.
    pub(crate) fn backward(self: &Arc<Self>, loss: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let mut nodes = std::mem::take(&mut *self.lock());
        let mut cotangents: Vec<Option<Tensor>> = (0..nodes.len()).map(|_| None).collect();
        let Some(start) = loss.trace().filter(|t| t.is_on(Arc::as_ptr(self)) && t.id() < nodes.len()).map(Trace::id)
        else {
            return Ok(cotangents);
        };
        cotangents[start] = Some(Tensor::ones(loss.shape(), loss.dtype()));
        for id in (0..=start).rev() {
            let node = &mut nodes[id];
            let Some(rule) = node.backward.take() else {
                continue; // a leaf keeps its cotangent
            };
            let Some(g) = cotangents[id].take() else {
                continue; // the loss does not depend on this node
            };
            let inputs = std::mem::take(&mut node.inputs);
            let need: Vec<bool> = inputs.iter().map(Option::is_some).collect();
            let outs = rule(&g, &need)?;
            drop(g);
            for (input, out) in inputs.into_iter().zip(outs) {
                let (Some(input), Some(ct)) = (input, out) else { continue };
                let ct = unbroadcast(ct, &input.dims)?.cast(input.dtype);
                let slot = &mut cotangents[input.id];
                *slot = Some(match slot.take() {
                    None => ct,
                    Some(acc) => crate::ops::binary(BinaryOp::Add, acc, ct, DType::Float32)?,
                });
            }
        }
        Ok(cotangents)
    }
}

/// Records `result` as the output of an operation whose differentiable operands are `links` (`None` for
/// operands without a live trace), with `rule` as its backward rule. Returns `result` traced on the tape of
/// the first live link; links on another tape are treated as constants. When no link is live, `result` is
/// returned untraced and `rule` is dropped.
pub(crate) fn record(result: Tensor, links: Vec<Option<Link>>, rule: Backward) -> Tensor {
    let Some((hook, weak)) = links.iter().flatten().find_map(|l| Some((l.trace.tape()?, l.trace.weak().clone())))
    else {
        return result.detach();
    };
    if !result.dtype().is_float() {
        return result.detach();
    }
    let Some(tape) = hook.as_any().downcast_ref::<Tape>() else {
        return result.detach(); // only this module makes traces
    };
    let at = Arc::as_ptr(&hook);
    let inputs = links
        .into_iter()
        .map(|l| l.filter(|l| l.trace.is_on(at)).map(|l| Input { id: l.trace.id(), dims: l.dims, dtype: l.dtype }))
        .collect();
    let mut nodes = tape.lock();
    nodes.push(Node { inputs, backward: Some(rule) });
    let id = nodes.len() - 1;
    drop(nodes);
    result.detach().with_trace(Trace::new(weak, id))
}

/// `g` summed over the axes along which an operand of shape `dims` was broadcast, and shaped `dims`.
pub(crate) fn unbroadcast(g: Tensor, dims: &[usize]) -> Result<Tensor> {
    if g.dims() == dims {
        return Ok(g);
    }
    let lead = g.ndim().saturating_sub(dims.len());
    let axes: Vec<isize> =
        (0..g.ndim()).filter(|&a| a < lead || (dims[a - lead] == 1 && g.dims()[a] != 1)).map(|a| a as isize).collect();
    let summed = if axes.is_empty() { g } else { reduce(ReduceOp::Sum, &g, Axes::These(axes), false, g.dtype())? };
    let target: Vec<isize> = dims.iter().map(|&d| d as isize).collect();
    summed.reshape(&target)
}
