//! The tracing hook: how a [`Tensor`] knows it is being recorded, without knowing by whom.
//!
//! A traced tensor holds a [`Trace`]: a *weak* handle to a [`TapeHook`] trait object and its node's index on
//! that tape. `tensor` and `ops` record an operation on a traced operand by calling the hook; the layer
//! that owns the tape (`grad`) implements the trait and installs it from above when it makes the first
//! leaves, the way JAX's tracers carry their trace and burn's autodiff decorates a backend that never names
//! it. Only the tape's owner holds it strongly, so a trace that outlives its call is inert.
//!
//! `tensor` sits below `ops`, so this trait cannot name the operator types (`BinaryOp`, `Arg`, ...): it
//! carries the operator hooks type-erased ([`TapeHook::op_hooks`]), and `ops::trace` recovers them with one
//! downcast. Operations on untraced tensors pay one branch.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, Weak};

use ndarray::{IxDyn, SliceInfo, SliceInfoElem};

use super::Tensor;
use crate::dtype::DType;

/// An index into a tensor, as [`Tensor::index`] resolved it.
pub(crate) type IndexInfo = SliceInfo<Vec<SliceInfoElem>, IxDyn, IxDyn>;

/// What a tape offers the tensors it traces. Implemented by the layer that owns the tape.
pub(crate) trait TapeHook: Send + Sync + fmt::Debug {
    /// The implementation, for the layer that installed it to recover its own type.
    fn as_any(&self) -> &dyn Any;

    /// `value` (without its trace) as a new leaf of this tape: an input to differentiate with respect to.
    fn new_leaf(self: Arc<Self>, value: &Tensor) -> Tensor;

    /// `x.cast(dtype)` recorded on this tape (`x` is traced on it).
    fn cast(&self, x: &Tensor, dtype: DType) -> Tensor;

    /// `z`, which is `x` indexed by `info`, recorded on this tape.
    fn indexed(&self, x: &Tensor, z: Tensor, info: IndexInfo) -> Tensor;

    /// The hooks of the operators (`ops::trace::OpHooks`), type-erased here because `tensor` cannot name them.
    fn op_hooks(&self) -> &'static (dyn Any + Send + Sync);
}

/// A tensor's place on a tape: a weak handle to the tape and the index of its node.
#[derive(Clone)]
pub(crate) struct Trace {
    tape: Weak<dyn TapeHook>,
    id: usize,
}

impl Trace {
    /// The trace of node `id` on `tape`.
    pub(crate) fn new(tape: Weak<dyn TapeHook>, id: usize) -> Trace {
        Trace { tape, id }
    }

    /// True while the tape is alive (its owner still holds it).
    pub(crate) fn is_live(&self) -> bool {
        self.tape.strong_count() > 0
    }

    /// The node's index on its tape.
    pub(crate) fn id(&self) -> usize {
        self.id
    }

    /// The tape, while it is alive.
    pub(crate) fn tape(&self) -> Option<Arc<dyn TapeHook>> {
        self.tape.upgrade()
    }

    /// The weak handle to the tape.
    pub(crate) fn weak(&self) -> &Weak<dyn TapeHook> {
        &self.tape
    }

    /// True when this trace is on the tape at `tape` (compared by address).
    pub(crate) fn is_on<T: ?Sized>(&self, tape: *const T) -> bool {
        std::ptr::addr_eq(self.tape.as_ptr(), tape)
    }
}

impl fmt::Debug for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Trace({})", self.id)
    }
}
