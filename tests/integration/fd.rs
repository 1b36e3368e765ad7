//! The finite-difference harness the op tests share (`conv.rs`, `nn_ops.rs`): deterministic inputs, a weighted
//! sum of an op's outputs as the loss, the tape's gradients of it, and their check against central differences
//! in float64.

use purestate::grad::ValueAndGrad;
use purestate::ops::Axes;
use purestate::{Result, StateStore, Tensor};

/// Central-difference step and tolerance, as in `grad.rs`: `|analytic - numeric| <= TOL * (1 + |numeric|)`.
pub(crate) const H: f64 = 1e-6;
pub(crate) const TOL: f64 = 1e-6;

/// Deterministic values in `[lo, hi)` (xorshift64*).
pub(crate) fn values(seed: u64, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            lo + (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64 * (hi - lo)
        })
        .collect()
}

/// A float64 tensor of [`values`].
pub(crate) fn tensor(seed: u64, dims: &[usize], lo: f64, hi: f64) -> Tensor {
    Tensor::from_shape_vec(dims, values(seed, dims.iter().product(), lo, hi)).unwrap()
}

/// `sum_k sum(f(inputs)[k] * w_k)`, each `w_k` fixed (seed `99 + k`, in the output's dtype), so that every output
/// element has its own cotangent.
pub(crate) fn weighted(f: &dyn Fn(&[Tensor]) -> Result<Vec<Tensor>>, inputs: &[Tensor]) -> Result<Tensor> {
    let mut loss: Option<Tensor> = None;
    for (k, y) in f(inputs)?.iter().enumerate() {
        let term = y.mul(tensor(99 + k as u64, y.dims(), -1.0, 1.0).cast(y.dtype()))?.sum(Axes::All, false)?;
        loss = Some(match loss {
            Some(l) => l.add(&term)?,
            None => term,
        });
    }
    Ok(loss.unwrap_or_else(|| Tensor::scalar(0.0f64)))
}

/// The loss `weighted(f)` and its gradient with respect to every input, from the tape.
pub(crate) fn tape_grads(f: &dyn Fn(&[Tensor]) -> Result<Vec<Tensor>>, inputs: &[Tensor]) -> (Tensor, Vec<Tensor>) {
    let out = ValueAndGrad::new()
        .call(StateStore::new(), |scope| {
            let traced: Vec<Tensor> = inputs.iter().map(|x| scope.watch(x)).collect::<Result<_>>()?;
            weighted(f, &traced)
        })
        .unwrap();
    (out.loss, out.inputs)
}

/// The tape's gradients of `weighted(f)` against central differences, every element of every input.
pub(crate) fn check(what: &str, f: &dyn Fn(&[Tensor]) -> Result<Vec<Tensor>>, inputs: &[Tensor]) {
    let (_, grads) = tape_grads(f, inputs);
    for (k, x) in inputs.iter().enumerate() {
        assert_eq!(grads[k].dims(), x.dims(), "{what}: gradient shape of input {k}");
        let analytic = grads[k].to_vec::<f64>().unwrap();
        let base = x.to_vec::<f64>().unwrap();
        for i in 0..base.len() {
            let at = |d: f64| {
                let mut v = base.clone();
                v[i] += d;
                let mut xs = inputs.to_vec();
                xs[k] = Tensor::from_shape_vec(x.dims(), v).unwrap();
                weighted(f, &xs).unwrap().to_f64().unwrap()
            };
            let numeric = (at(H) - at(-H)) / (2.0 * H);
            assert!(
                (analytic[i] - numeric).abs() <= TOL * (1.0 + numeric.abs()),
                "{what}: input {k} element {i}: analytic {} numeric {numeric}",
                analytic[i]
            );
        }
    }
}
