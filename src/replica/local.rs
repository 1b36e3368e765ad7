//! Per-replica values of `on_read` variables, kept in the store beside the aggregated value its entry holds.
//!
//! The store's entry of an `on_read` variable always holds the aggregate (so `get`, fingerprints and
//! checkpoints see it); [`LocalValues`] keep one value per replica next to it. They are trusted only while the
//! entry still holds the very buffer they were recorded with and the replica count matches: a direct
//! assignment (a metric reset, a restored checkpoint) makes the runner derive fresh per-replica values from the
//! store's value, chosen so that aggregating them gives that value back exactly.

use crate::error::Result;
pub(crate) use crate::store::LocalValues;
use crate::store::StateStore;
use crate::tensor::Tensor;
use crate::variable::{Aggregation, Synchronization, Variable};

/// An `on_read` variable and its per-replica values for this step.
pub(crate) type OnRead = Vec<(Variable, Vec<Tensor>)>;

/// The per-replica values of `var` for `n` replicas: the recorded ones while the store still holds the aggregate
/// they were recorded with; otherwise derived from the store's value `a`: `[a, 0, .., 0]` for sum,
/// `[a; n]` for the other aggregations.
pub(crate) fn values_of(state: &StateStore, var: &Variable, n: usize) -> Result<Vec<Tensor>> {
    let current = state.get(var)?;
    if let Some(local) = state.replica_values(var) {
        if local.values.len() == n && local.aggregate.ptr_eq(&current) {
            return Ok(local.values.to_vec());
        }
    }
    Ok(match var.aggregation() {
        Aggregation::Sum => {
            let zeros = Tensor::zeros(var.shape().clone(), var.dtype());
            (0..n).map(|r| if r == 0 { current.clone() } else { zeros.clone() }).collect()
        }
        _ => vec![current; n],
    })
}

/// Every `on_read` variable of `vars` with its per-replica values, in creation order.
pub(crate) fn on_read(state: &StateStore, vars: &[Variable], n: usize) -> Result<OnRead> {
    vars.iter()
        .filter(|v| v.synchronization() == Synchronization::OnRead)
        .map(|v| Ok((v.clone(), values_of(state, v, n)?)))
        .collect()
}

/// The store replica `r` reads: `state` with each `on_read` variable holding replica `r`'s own value.
/// O(1) without `on_read` variables, O(k log n) with k of them.
pub(crate) fn view(state: &StateStore, on_read: &OnRead, r: usize) -> Result<StateStore> {
    let mut view = state.clone();
    for (var, values) in on_read {
        if !values[r].ptr_eq(&view.get(var)?) {
            view.assign(var, values[r].clone())?;
        }
    }
    Ok(view)
}
