//! Combining what the replicas of one step return, in replica order: gradients by the shard-weighted mean,
//! assignments by each variable's aggregation, `on_read` values kept per replica and aggregated.
//!
//! Every reduction here adds the replicas' values in replica (MPI rank) order, element by element, then
//! divides: in `f64` for float dtypes (each result rounded once to the value's dtype, float16 and bfloat16
//! included) and in `i128` for integers (a mean truncates toward zero). The in-process runner and the MPI
//! backend both call [`combine`] on the same [`Contribution`]s, so their results are bit-identical.

use std::sync::Arc;

use super::local::{self, LocalValues, OnRead};
use super::{Combined, ReplicaContext, ReplicaOutput};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::grad::Grads;
use crate::store::StateStore;
use crate::tensor::{with_array, with_dtype, Element, Scalar, Shape, Tensor};
use crate::variable::{Aggregation, Synchronization, Variable};

/// What crosses replicas from one replica's step: its shard size, loss, gradients and assignments, with
/// variables named by their index in the state's creation order (so an MPI rank can send them as bytes).
#[derive(Clone, Debug)]
pub(crate) struct Contribution {
    /// The global batch size the replica was given.
    pub(crate) batch_len: usize,
    /// Examples in its shard.
    pub(crate) examples: usize,
    /// The mean loss over its shard.
    pub(crate) loss: f32,
    /// `(variable index, gradient)`, by increasing index.
    pub(crate) grads: Vec<(usize, Tensor)>,
    /// `(variable index, value the replica assigned)`, by increasing index.
    pub(crate) assigned: Vec<(usize, Tensor)>,
}

/// Reduces a replica's output to its [`Contribution`]: a variable counts as assigned when the returned store
/// holds another value buffer for it than the store the replica was given (`view`).
///
/// # Errors
/// [`Error::InvalidArgument`] when the step created or removed variables or changed their attributes;
/// [`Error::ForeignVariable`] for a store of another lineage; [`Error::StaleVariable`] for a gradient of a
/// variable the state does not hold; [`Error::ShapeMismatch`] for a gradient of the wrong shape.
pub(crate) fn contribution(
    ctx: &ReplicaContext,
    view: &StateStore,
    vars: &[Variable],
    out: ReplicaOutput,
) -> Result<Contribution> {
    let invalid = |reason: String| Error::InvalidArgument { op: "Replicas::step", arg: "step", reason };
    let r = ctx.replica();
    let mut assigned = Vec::new();
    for (i, var) in vars.iter().enumerate() {
        let before = view.entry(var)?;
        let after = match out.state.entry(var) {
            Ok(entry) => entry,
            Err(Error::StaleVariable { path }) => return Err(invalid(format!("replica {r} removed `{path}`"))),
            Err(err) => return Err(err),
        };
        if !before.meta.same_as(&after.meta) {
            let path = var.path();
            return Err(invalid(format!(
                "replica {r} changed the attributes of `{path}`; change them outside the step"
            )));
        }
        if !before.value.ptr_eq(&after.value) {
            assigned.push((i, after.value.clone()));
        }
    }
    if out.state.len() != vars.len() {
        return Err(invalid(format!("replica {r} created variables; create them before the step")));
    }
    let mut grads = Vec::with_capacity(out.grads.len());
    for (var, grad) in out.grads.into_pairs() {
        let i = position(vars, &var).ok_or_else(|| Error::StaleVariable { path: var.path().into() })?;
        if grad.dims() != var.shape().dims() {
            return Err(Error::ShapeMismatch {
                path: var.path().into(),
                expected: var.shape().clone(),
                got: grad.shape(),
            });
        }
        grads.push((i, grad));
    }
    grads.sort_by_key(|(i, _)| *i);
    Ok(Contribution { batch_len: ctx.batch_len(), examples: ctx.len(), loss: out.loss, grads, assigned })
}

/// The step's result from every replica's contribution (in replica order) over `state`: the shard-weighted
/// mean gradient and loss, and `state` with the assignments combined.
///
/// # Errors
/// [`Error::ReplicaConflict`] when several replicas assign a variable whose aggregation (or synchronization) is
/// `none`; [`Error::InvalidArgument`] when replicas disagree on the batch or on which variables have gradients;
/// [`Error::DTypeMismatch`] when their gradients' dtypes differ; [`Error::UnsupportedDType`] for a sum or mean
/// of bool values, or a gradient that is not float.
pub(crate) fn combine(
    state: &StateStore,
    vars: &[Variable],
    on_read: &OnRead,
    parts: &[Contribution],
) -> Result<Combined> {
    let invalid = |reason: String| Error::InvalidArgument { op: "Replicas::step", arg: "step", reason };
    let first = parts.first().ok_or_else(|| invalid("no replica contributed".into()))?;
    for (r, part) in parts.iter().enumerate() {
        if part.batch_len != first.batch_len {
            return Err(invalid(format!(
                "replica {r} was given a batch of {} examples, replica 0 one of {}",
                part.batch_len, first.batch_len
            )));
        }
        let same =
            part.grads.len() == first.grads.len() && part.grads.iter().zip(&first.grads).all(|((a, _), (b, _))| a == b);
        if !same {
            return Err(invalid(format!("replica {r} returned gradients for other variables than replica 0")));
        }
    }
    let examples: usize = parts.iter().map(|p| p.examples).sum();
    let total = examples as f64;

    let mut grads = Grads::new();
    for (k, (i, g0)) in first.grads.iter().enumerate() {
        let var = &vars[*i];
        let terms: Vec<(f64, &Tensor)> = parts.iter().map(|p| (p.examples as f64, &p.grads[k].1)).collect();
        grads.insert(var.clone(), weighted_mean(var.path(), g0.dtype(), &terms, total)?);
    }
    let loss_sum = parts.iter().fold(0.0f64, |acc, p| acc + p.examples as f64 * f64::from(p.loss));
    let loss = (loss_sum / total) as f32;

    let mut next = state.clone();
    for (i, var) in vars.iter().enumerate() {
        let assigned: Vec<Option<&Tensor>> =
            parts.iter().map(|p| p.assigned.iter().find(|(j, _)| *j == i).map(|(_, t)| t)).collect();
        let count = assigned.iter().filter(|a| a.is_some()).count();
        if count == 0 {
            continue;
        }
        match (var.synchronization(), on_read.iter().find(|(v, _)| v == var).map(|(_, l)| l)) {
            (Synchronization::OnRead, Some(before)) => {
                let values: Vec<Tensor> =
                    assigned.iter().zip(before.iter()).map(|(a, b)| a.unwrap_or(b).clone()).collect();
                let (aggregate, values) = match var.aggregation() {
                    Aggregation::None => {
                        let only = single(var, &assigned, "aggregation")?;
                        (only.clone(), vec![only; parts.len()])
                    }
                    Aggregation::Sum => (sum(var.path(), &values.iter().collect::<Vec<_>>())?, values),
                    Aggregation::Mean => (mean(var.path(), &values.iter().collect::<Vec<_>>())?, values),
                    Aggregation::OnlyFirstReplica => (values[0].clone(), values),
                };
                next.assign(var, aggregate)?;
                let aggregate = next.get(var)?;
                next.set_replica_values(var, Some(LocalValues { aggregate, values: Arc::from(values) }));
            }
            (Synchronization::None, _) => {
                let only = single(var, &assigned, "synchronization")?;
                next.assign(var, only)?;
            }
            _ => {
                let base = state.get(var)?;
                let value = match var.aggregation() {
                    Aggregation::None => single(var, &assigned, "aggregation")?,
                    Aggregation::Mean => {
                        let values: Vec<&Tensor> = assigned.iter().map(|a| a.unwrap_or(&base)).collect();
                        mean(var.path(), &values)?
                    }
                    Aggregation::Sum => {
                        let values: Vec<&Tensor> = assigned.iter().flatten().copied().collect();
                        add_deltas(var.path(), &base, &values)?
                    }
                    Aggregation::OnlyFirstReplica => assigned[0].unwrap_or(&base).clone(),
                };
                next.assign(var, value)?;
            }
        }
    }
    Ok(Combined { state: next, grads, loss, examples })
}

/// The per-replica values of an `on_read` variable as `state` holds them for `n` replicas (see
/// [`Replicas::local_values`](super::Replicas::local_values)).
pub(crate) fn local_values(state: &StateStore, var: &Variable, n: usize) -> Result<Vec<Tensor>> {
    local::values_of(state, var, n)
}

/// The index of `var` in `vars` (the creation-ordered variables of a store). O(log n).
fn position(vars: &[Variable], var: &Variable) -> Option<usize> {
    vars.binary_search_by(|v| v.key.cmp(&var.key)).ok().filter(|&i| vars[i] == *var)
}

/// The one value the replicas assigned: one replica's, or several replicas' bit-identical values (every
/// replica advancing a seed generator's state from the same value), else [`Error::ReplicaConflict`].
fn single(var: &Variable, assigned: &[Option<&Tensor>], option: &'static str) -> Result<Tensor> {
    let mut values = assigned.iter().flatten();
    match values.next() {
        Some(first) if values.all(|v| v.bit_eq(first)) => Ok((*first).clone()),
        _ => {
            Err(Error::ReplicaConflict { path: var.path().into(), replicas: assigned.iter().flatten().count(), option })
        }
    }
}

/// `(w_0 g_0 + w_1 g_1 + ..) / total`, added in order in `f64`, rounded once to `dtype` (a float dtype).
fn weighted_mean(path: &str, dtype: DType, terms: &[(f64, &Tensor)], total: f64) -> Result<Tensor> {
    if !dtype.is_float() {
        return Err(Error::UnsupportedDType { op: "replica gradient mean", dtype });
    }
    let shape = terms[0].1.shape();
    let mut acc = vec![0.0f64; shape.size()];
    for (w, t) in terms {
        check_like(path, dtype, &shape, t)?;
        for (a, x) in acc.iter_mut().zip(t.to_f64_vec()) {
            *a += w * x;
        }
    }
    Ok(Tensor::from_fn(shape, dtype, |i| acc[i] / total))
}

/// `(v_0 + v_1 + ..) / n`, added in order.
fn mean(path: &str, values: &[&Tensor]) -> Result<Tensor> {
    reduce(path, "replica mean", None, values, Some(values.len()))
}

/// `v_0 + v_1 + ..`, added in order.
fn sum(path: &str, values: &[&Tensor]) -> Result<Tensor> {
    reduce(path, "replica sum", None, values, None)
}

/// `base + (v_0 - base) + (v_1 - base) + ..`: each assigning replica's change added in order, so a counter
/// every replica increments counts every increment.
fn add_deltas(path: &str, base: &Tensor, values: &[&Tensor]) -> Result<Tensor> {
    reduce(path, "replica sum", Some(base), values, None)
}

/// Adds `values` (each minus `base`, with `base` as the starting value, when given) in order in `f64` or
/// `i128`, divides by `divisor` if given, and rounds once to the values' dtype.
fn reduce(
    path: &str,
    op: &'static str,
    base: Option<&Tensor>,
    values: &[&Tensor],
    divisor: Option<usize>,
) -> Result<Tensor> {
    let like = base.or(values.first().copied()).ok_or(Error::InvalidArgument {
        op,
        arg: "values",
        reason: "nothing to reduce".into(),
    })?;
    let (dtype, shape) = (like.dtype(), like.shape());
    for t in values {
        check_like(path, dtype, &shape, t)?;
    }
    if dtype.is_bool() {
        return Err(Error::UnsupportedDType { op, dtype });
    }
    if dtype.is_float() {
        let start = base.map(Tensor::to_f64_vec);
        let mut acc = start.clone().unwrap_or_else(|| vec![0.0; shape.size()]);
        for t in values {
            for (k, x) in t.to_f64_vec().into_iter().enumerate() {
                acc[k] += match &start {
                    Some(b) => x - b[k],
                    None => x,
                };
            }
        }
        let d = divisor.map_or(1.0, |d| d as f64);
        Ok(Tensor::from_fn(shape, dtype, |i| if divisor.is_some() { acc[i] / d } else { acc[i] }))
    } else {
        let start = base.map(to_i128_vec);
        let mut acc = start.clone().unwrap_or_else(|| vec![0; shape.size()]);
        for t in values {
            for (k, x) in to_i128_vec(t).into_iter().enumerate() {
                acc[k] += match &start {
                    Some(b) => x - b[k],
                    None => x,
                };
            }
        }
        if let Some(d) = divisor {
            acc.iter_mut().for_each(|a| *a /= d as i128);
        }
        from_i128(shape, dtype, &acc)
    }
}

fn check_like(path: &str, dtype: DType, shape: &Shape, t: &Tensor) -> Result<()> {
    if t.dtype() != dtype {
        return Err(Error::DTypeMismatch { path: path.into(), expected: dtype, got: t.dtype() });
    }
    if t.dims() != shape.dims() {
        return Err(Error::ShapeMismatch { path: path.into(), expected: shape.clone(), got: t.shape() });
    }
    Ok(())
}

fn to_i128_vec(t: &Tensor) -> Vec<i128> {
    with_array!(t.data(), a => a.iter().map(|x| match x.to_scalar() {
        Scalar::I64(v) => i128::from(v),
        Scalar::U64(v) => i128::from(v),
        Scalar::Bool(b) => i128::from(b),
        Scalar::F64(v) => v as i128,
    }).collect())
}

/// Integers wrap to the dtype's width, as numpy's casts do.
fn from_i128(shape: Shape, dtype: DType, values: &[i128]) -> Result<Tensor> {
    let scalar = |v: i128| if dtype.is_unsigned_integer() { Scalar::U64(v as u64) } else { Scalar::I64(v as i64) };
    with_dtype!(dtype, T => {
        let data: Vec<T> = values.iter().map(|&v| T::from_scalar(scalar(v))).collect();
        Tensor::from_shape_vec(shape, data)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_adds_in_order_then_divides() {
        let a = Tensor::from([1.0f32, 3.0]);
        let b = Tensor::from([2.0f32, 4.0]);
        assert_eq!(mean("v", &[&a, &b]).unwrap().to_vec::<f32>().unwrap(), [1.5, 3.5]);
    }

    #[test]
    fn sum_of_deltas_counts_each_increment() {
        let base = Tensor::from([10i64]);
        let a = Tensor::from([12i64]);
        let b = Tensor::from([13i64]);
        assert_eq!(add_deltas("n", &base, &[&a, &b]).unwrap().to_vec::<i64>().unwrap(), [15]);
    }

    #[test]
    fn integer_mean_truncates_toward_zero() {
        let a = Tensor::from([1i32, -1]);
        let b = Tensor::from([2i32, -2]);
        assert_eq!(mean("v", &[&a, &b]).unwrap().to_vec::<i32>().unwrap(), [1, -1]);
    }

    #[test]
    fn bool_sum_is_unsupported() {
        let a = Tensor::from([true]);
        assert!(matches!(sum("b", &[&a, &a]), Err(Error::UnsupportedDType { .. })));
    }

    #[test]
    fn float16_rounds_once() {
        let a = Tensor::from([half::f16::from_f32(1.0)]);
        let b = Tensor::from([half::f16::from_f32(2.0)]);
        let m = mean("h", &[&a, &b]).unwrap();
        assert_eq!(m.dtype(), DType::Float16);
        assert_eq!(m.to_f64_vec(), [1.5]);
    }

    #[test]
    fn weighted_mean_of_one_replica_is_its_gradient() {
        let g = Tensor::from([0.1f32, -0.3, 1e-7]);
        let m = weighted_mean("g", DType::Float32, &[(7.0, &g)], 7.0).unwrap();
        assert!(m.bit_eq(&g));
    }
}
