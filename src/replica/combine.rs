//! Combining what the micro-batches of one step return: gradients and the loss through the fixed tree over
//! micro-batches ([`tree`](super::tree)), assignments by each variable's aggregation, `on_read` values kept per
//! replica and aggregated.
//!
//! A replica turns each of its micro-batches into a leaf [`Partial`] ([`leaf`]), reduces the maximal tree nodes
//! inside its range of micro-batches, and sends those nodes with the few values that are not sums
//! ([`Contribution`]). [`combine`] places every replica's nodes in the tree. Mirrored `sum` and `mean`
//! variables travel as changes `v_j - v` summed in the same tree (in `f64` for floats, wrapping `i64` for
//! integers), so they too have the same bits for any replica count. The in-process runner and the MPI backend
//! call [`combine`] on the same contributions, so their results are bit-identical.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use super::local::{self, LocalValues, OnRead};
use super::tree::{self, Node};
use super::{Combined, ReplicaContext, ReplicaOutput, Split};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::grad::Grads;
use crate::kernels;
use crate::store::StateStore;
use crate::tensor::{with_array, with_dtype, Element, Scalar, Shape, Tensor};
use crate::variable::{Aggregation, Synchronization, Variable};

/// The sums of one node of the tree: the fill-weighted losses and gradients of its micro-batches, and the
/// changes they made to mirrored `sum` and `mean` variables.
#[derive(Clone, Debug)]
pub(crate) struct Partial {
    /// `sum_j fill_j * loss_j`.
    pub(crate) loss: f64,
    /// `(variable index, sum_j fill_j * g_j)`, by increasing index.
    pub(crate) grads: Vec<(usize, Tensor)>,
    /// `(variable index, sum_j (v_j - v))` over the micro-batches that assigned it (`float64` or `int64`), by
    /// increasing index.
    pub(crate) deltas: Vec<(usize, Tensor)>,
}

/// A variable whose aggregation (or synchronization) is `none`: the value the micro-batches of one replica
/// assigned, how many did, and whether they disagreed.
#[derive(Clone, Debug)]
pub(crate) struct Single {
    pub(crate) index: usize,
    pub(crate) value: Tensor,
    pub(crate) count: usize,
    pub(crate) conflict: bool,
}

/// What crosses replicas from one replica's step, with variables named by their index in the state's creation
/// order (so an MPI rank can send them as bytes).
#[derive(Clone, Debug)]
pub(crate) struct Contribution {
    /// The global batch size the replica was given.
    pub(crate) batch_len: usize,
    /// The maximal tree nodes inside the replica's micro-batches, left to right.
    pub(crate) nodes: Vec<(Node, Partial)>,
    /// Micro-batch 0's assignments to mirrored `only_first_replica` variables (from the replica that ran it).
    pub(crate) first: Vec<(usize, Tensor)>,
    /// Assignments to variables whose aggregation or synchronization is `none`.
    pub(crate) single: Vec<Single>,
    /// `on_read` variables the replica's micro-batches assigned: the replica's new own value.
    pub(crate) local: Vec<(usize, Tensor)>,
}

/// Reduces one micro-batch's output to its leaf of the tree, and lists what else it assigned: a variable counts
/// as assigned when the returned store holds another value buffer for it than the store the step was given
/// (`view`). `fill` is the micro-batch's length over the full micro-batch length.
///
/// # Errors
/// [`Error::InvalidArgument`] when the step created or removed variables or changed their attributes;
/// [`Error::ForeignVariable`] for a store of another lineage; [`Error::StaleVariable`] for a gradient of a
/// variable the state does not hold; [`Error::ShapeMismatch`] for a gradient of the wrong shape;
/// [`Error::UnsupportedDType`] for a gradient that is not float, or a `sum` or `mean` of bool values.
pub(crate) fn leaf(
    ctx: &ReplicaContext,
    view: &StateStore,
    vars: &[Variable],
    out: ReplicaOutput,
    fill: f64,
) -> Result<(Partial, Vec<(usize, Tensor)>)> {
    let invalid = |reason: String| Error::InvalidArgument { op: "Replicas::step", arg: "step", reason };
    let (r, j) = (ctx.replica(), ctx.micro_batch());
    let mut assigned = Vec::new();
    let mut deltas = Vec::new();
    for (i, var) in vars.iter().enumerate() {
        let before = view.entry(var)?;
        let after = match out.state.entry(var) {
            Ok(entry) => entry,
            Err(Error::StaleVariable { path }) => {
                return Err(invalid(format!("replica {r} (micro-batch {j}) removed `{path}`")))
            }
            Err(err) => return Err(err),
        };
        if !before.meta.same_as(&after.meta) {
            let path = var.path();
            return Err(invalid(format!(
                "replica {r} (micro-batch {j}) changed the attributes of `{path}`; change them outside the step"
            )));
        }
        if before.value.ptr_eq(&after.value) {
            continue;
        }
        let mirrored = matches!(var.synchronization(), Synchronization::Auto | Synchronization::OnWrite);
        if mirrored && matches!(var.aggregation(), Aggregation::Sum | Aggregation::Mean) {
            deltas.push((i, delta(var, &before.value, &after.value)?));
        } else {
            assigned.push((i, after.value.clone()));
        }
    }
    if out.state.len() != vars.len() {
        return Err(invalid(format!("replica {r} (micro-batch {j}) created variables; create them before the step")));
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
        if !grad.dtype().is_float() {
            return Err(Error::UnsupportedDType { op: "replica gradient mean", dtype: grad.dtype() });
        }
        let grad = if fill == 1.0 { grad } else { grad.mul(Tensor::full([], grad.dtype(), fill))? };
        grads.push((i, grad));
    }
    grads.sort_by_key(|(i, _)| *i);
    let loss = f64::from(out.loss) * fill;
    Ok((Partial { loss, grads, deltas }, assigned))
}

/// `after - before` in `float64` (float dtypes) or wrapping `int64` (integer dtypes).
fn delta(var: &Variable, before: &Tensor, after: &Tensor) -> Result<Tensor> {
    let dtype = before.dtype();
    check_like(var.path(), dtype, &before.shape(), after)?;
    let wide = if dtype.is_float() {
        DType::Float64
    } else if dtype.is_bool() {
        let op = if var.aggregation() == Aggregation::Sum { "replica sum" } else { "replica mean" };
        return Err(Error::UnsupportedDType { op, dtype });
    } else {
        DType::Int64
    };
    after.cast(wide).sub(before.cast(wide))
}

/// The sum of two nodes' partials (the left one first).
///
/// # Errors
/// [`Error::InvalidArgument`] when their micro-batches returned gradients for different variables;
/// [`Error::DTypeMismatch`] when their gradients' dtypes differ.
pub(crate) fn add(vars: &[Variable], left: Partial, right: Partial) -> Result<Partial> {
    let same = left.grads.len() == right.grads.len() && left.grads.iter().zip(&right.grads).all(|(a, b)| a.0 == b.0);
    if !same {
        return Err(Error::InvalidArgument {
            op: "Replicas::step",
            arg: "step",
            reason: "micro-batches returned gradients for different variables".into(),
        });
    }
    let mut grads = Vec::with_capacity(left.grads.len());
    for ((i, a), (_, b)) in left.grads.into_iter().zip(right.grads) {
        check_like(vars[i].path(), a.dtype(), &a.shape(), &b)?;
        grads.push((i, add_into(a, &b)?));
    }
    let mut deltas: BTreeMap<usize, Tensor> = left.deltas.into_iter().collect();
    for (i, b) in right.deltas {
        let sum = match deltas.remove(&i) {
            Some(a) => a.add(&b)?,
            None => b,
        };
        deltas.insert(i, sum);
    }
    Ok(Partial { loss: left.loss + right.loss, grads, deltas: deltas.into_iter().collect() })
}

/// `a + b`, elementwise (the bits of `a.add(&b)`), written into `a`'s buffer when nothing else holds it: a node
/// of the tree then costs one pass over its gradients, not a new buffer per addition.
fn add_into(a: Tensor, b: &Tensor) -> Result<Tensor> {
    match a.dtype() {
        DType::Float32 => add_into_as::<f32>(a, b),
        DType::Float64 => add_into_as::<f64>(a, b),
        _ => a.add(b),
    }
}

/// `g / w` in `g`'s dtype (the bits of `g.div(Tensor::full([], g.dtype(), w))`), into `g`'s buffer when nothing
/// else holds it.
fn div_into(g: Tensor, w: f64) -> Result<Tensor> {
    match g.dtype() {
        DType::Float32 => div_into_as::<f32>(g, w as f32),
        DType::Float64 => div_into_as::<f64>(g, w),
        dtype => g.div(Tensor::full([], dtype, w)),
    }
}

fn div_into_as<T>(mut g: Tensor, w: T) -> Result<Tensor>
where
    T: Element + std::ops::Div<Output = T> + Send + Sync,
{
    let values = g.array_mut::<T>()?;
    if !values.is_standard_layout() {
        return g.div(Tensor::scalar(w));
    }
    let values = values.as_slice_mut().expect("a standard-layout array is contiguous");
    kernels::zip_mut((values,), |(x,)| *x = *x / w)?;
    Ok(g)
}

fn add_into_as<T>(mut a: Tensor, b: &Tensor) -> Result<Tensor>
where
    T: Element + std::ops::Add<Output = T> + Send + Sync,
{
    let Some(rhs) = b.as_slice::<T>() else { return a.add(b) };
    let lhs = a.array_mut::<T>()?;
    if !lhs.is_standard_layout() {
        return a.add(b);
    }
    let lhs = lhs.as_slice_mut().expect("a standard-layout array is contiguous");
    kernels::zip_mut((lhs, rhs), |(x, y)| *x = *x + y)?;
    Ok(a)
}

/// What a replica's micro-batches assigned besides the tree's sums, gathered micro-batch by micro-batch.
#[derive(Default)]
pub(crate) struct Side {
    first: Vec<(usize, Tensor)>,
    single: BTreeMap<usize, Single>,
    on_read: BTreeMap<usize, Vec<(usize, Tensor)>>,
}

impl Side {
    /// Notes what micro-batch `j` assigned (besides mirrored sums and means).
    pub(crate) fn note(&mut self, vars: &[Variable], j: usize, assigned: Vec<(usize, Tensor)>) {
        for (i, value) in assigned {
            let var = &vars[i];
            match (var.synchronization(), var.aggregation()) {
                (Synchronization::None, _) | (_, Aggregation::None) => match self.single.get_mut(&i) {
                    Some(single) => {
                        single.count += 1;
                        single.conflict |= !single.value.bit_eq(&value);
                    }
                    None => {
                        self.single.insert(i, Single { index: i, value, count: 1, conflict: false });
                    }
                },
                (Synchronization::OnRead, _) => self.on_read.entry(i).or_default().push((j, value)),
                (_, Aggregation::OnlyFirstReplica) if j == 0 => self.first.push((i, value)),
                _ => {}
            }
        }
    }

    /// The replica's contribution: its `nodes`, and its `on_read` values combined over its micro-batches (by
    /// the variable's aggregation, from the replica's own values at the start of the step).
    pub(crate) fn finish(
        self,
        vars: &[Variable],
        on_read: &OnRead,
        replica: usize,
        micro_batches: Range<usize>,
        batch_len: usize,
        nodes: Vec<(Node, Partial)>,
    ) -> Result<Contribution> {
        let mut local = Vec::new();
        for (i, assigned) in self.on_read {
            let var = &vars[i];
            let before = on_read.iter().find(|(v, _)| v == var).map(|(_, l)| &l[replica]).ok_or_else(|| {
                Error::InvalidArgument {
                    op: "Replicas::step",
                    arg: "step",
                    reason: format!("`{}` is on_read but has no per-replica values", var.path()),
                }
            })?;
            let value = match var.aggregation() {
                Aggregation::Sum if assigned.len() == 1 => assigned[0].1.clone(),
                Aggregation::Sum => {
                    add_deltas(var.path(), before, &assigned.iter().map(|(_, t)| t).collect::<Vec<_>>())?
                }
                Aggregation::Mean => {
                    let values: Vec<&Tensor> = micro_batches
                        .clone()
                        .map(|j| assigned.iter().find(|(k, _)| *k == j).map_or(before, |(_, t)| t))
                        .collect();
                    mean(var.path(), &values)?
                }
                _ => match assigned.iter().find(|(k, _)| *k == micro_batches.start) {
                    Some((_, t)) => t.clone(),
                    None => continue,
                },
            };
            local.push((i, value));
        }
        Ok(Contribution { batch_len, nodes, first: self.first, single: self.single.into_values().collect(), local })
    }
}

/// The step's result from every replica's contribution (in replica order) over `state`.
///
/// # Errors
/// [`Error::ReplicaConflict`] when several micro-batches assign different values to a variable whose
/// aggregation (or synchronization) is `none`; [`Error::InvalidArgument`] when replicas disagree on the batch,
/// cover micro-batches twice or not at all, or return gradients for different variables;
/// [`Error::DTypeMismatch`] when their gradients' dtypes differ; [`Error::UnsupportedDType`] for a sum or mean
/// of bool values.
pub(crate) fn combine(
    state: &StateStore,
    vars: &[Variable],
    on_read: &OnRead,
    split: &Split,
    parts: &[Contribution],
) -> Result<Combined> {
    let invalid = |reason: String| Error::InvalidArgument { op: "Replicas::step", arg: "step", reason };
    let batch_len = split.batch_len;
    let m = split.micro_batches();
    let mut known = HashMap::new();
    for (r, part) in parts.iter().enumerate() {
        if part.batch_len != batch_len {
            return Err(invalid(format!(
                "replica {r} was given a batch of {} examples, this process one of {batch_len}",
                part.batch_len
            )));
        }
        for (node, partial) in &part.nodes {
            if node.start() >= m || known.insert(*node, partial.clone()).is_some() {
                return Err(invalid(format!(
                    "replica {r} sent micro-batches from {} twice or out of range",
                    node.start()
                )));
            }
        }
    }
    let root = tree::assemble(m, known, &|a, b| add(vars, a, b))?;
    let weight = split.weight();
    let mut grads = Grads::new();
    for (i, g) in root.grads {
        let g = if weight == 1.0 { g } else { div_into(g, weight)? };
        grads.insert(vars[i].clone(), g);
    }
    let loss = (root.loss / weight) as f32;

    let mut next = state.clone();
    for (i, d) in root.deltas {
        let var = &vars[i];
        let divisor = (var.aggregation() == Aggregation::Mean).then_some(m);
        next.assign(var, apply_delta(&state.get(var)?, &d, divisor)?)?;
    }
    for part in parts {
        for (i, value) in &part.first {
            next.assign(&vars[*i], value.clone())?;
        }
    }
    let mut singles: BTreeMap<usize, (Tensor, usize, bool)> = BTreeMap::new();
    for single in parts.iter().flat_map(|p| &p.single) {
        let slot = singles.entry(single.index).or_insert_with(|| (single.value.clone(), 0, false));
        slot.1 += single.count;
        slot.2 |= single.conflict || !slot.0.bit_eq(&single.value);
    }
    for (i, (value, count, conflict)) in singles {
        let var = &vars[i];
        let option = if var.synchronization() == Synchronization::None { "synchronization" } else { "aggregation" };
        if conflict {
            return Err(Error::ReplicaConflict { path: var.path().into(), micro_batches: count, option });
        }
        next.assign(var, value.clone())?;
        if var.synchronization() == Synchronization::OnRead {
            let aggregate = next.get(var)?;
            let values = vec![value; parts.len()];
            next.set_replica_values(var, Some(LocalValues { aggregate, values: Arc::from(values) }));
        }
    }
    for (var, before) in on_read {
        let i = position(vars, var).ok_or_else(|| Error::StaleVariable { path: var.path().into() })?;
        if !parts.iter().any(|p| p.local.iter().any(|(k, _)| *k == i)) {
            continue;
        }
        let values: Vec<Tensor> = parts
            .iter()
            .zip(before)
            .map(|(p, b)| p.local.iter().find(|(k, _)| *k == i).map_or(b, |(_, t)| t).clone())
            .collect();
        let refs: Vec<&Tensor> = values.iter().collect();
        let aggregate = match var.aggregation() {
            Aggregation::Sum => sum(var.path(), &refs)?,
            Aggregation::Mean => mean(var.path(), &refs)?,
            _ => values[0].clone(),
        };
        next.assign(var, aggregate)?;
        let aggregate = next.get(var)?;
        next.set_replica_values(var, Some(LocalValues { aggregate, values: Arc::from(values) }));
    }
    Ok(Combined { state: next, grads, loss, examples: batch_len, micro_batches: m, sent_bytes: None })
}

/// `base + delta` (the delta divided by `divisor` first, if given), rounded once to `base`'s dtype: in `f64`
/// for floats, in integers for integer dtypes (a mean's division truncates toward zero; results wrap).
fn apply_delta(base: &Tensor, delta: &Tensor, divisor: Option<usize>) -> Result<Tensor> {
    let dtype = base.dtype();
    if dtype.is_float() {
        let (b, d) = (base.to_f64_vec(), delta.to_f64_vec());
        Ok(Tensor::from_fn(base.shape(), dtype, |i| match divisor {
            Some(k) => b[i] + d[i] / k as f64,
            None => b[i] + d[i],
        }))
    } else {
        let (b, d) = (to_i128_vec(base), to_i128_vec(delta));
        let k = divisor.map_or(1, |k| k as i128);
        let values: Vec<i128> = b.iter().zip(&d).map(|(b, d)| b + d / k).collect();
        from_i128(base.shape(), dtype, &values)
    }
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
}
