//! Reverse-mode autodiff: finite-difference checks of every backward rule in float64, JAX's kinks and ties,
//! the JAX MLP fixture, mixed precision, determinism across thread counts, donation after the tape, options and
//! errors.

use std::sync::Arc;

use proptest::prelude::*;
use purestate::grad::{self, Missing, ValueAndGrad};
use purestate::ops::{where_, Axes};
use purestate::optim::{Adam, Optimizer};
use purestate::regularizer::Regularizer;
use purestate::tensor::Idx;
use purestate::{idx, init, losses, DType, Error, Result, StateStore, Tensor, VariableSpec};

/// Central-difference step and tolerance of the float64 checks: `|analytic - numeric| <= TOL * (1 + |numeric|)`.
/// The truncation error is about `H^2 * f''' / 6` (1e-12 here) and the rounding error `1e-16 * |loss| / H`
/// (1e-10 for losses up to 100), so 1e-6 leaves a wide margin while catching any wrong rule.
const H: f64 = 1e-6;
const TOL: f64 = 1e-6;

/// Deterministic values in `[lo, hi)` from a seed (xorshift64*).
fn values(seed: u64, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let u = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
            lo + u * (hi - lo)
        })
        .collect()
}

fn tensor(seed: u64, dims: &[usize], lo: f64, hi: f64) -> Tensor {
    let n = dims.iter().product();
    Tensor::from_shape_vec(dims, values(seed, n, lo, hi)).unwrap()
}

/// `sum(f(inputs) * weights)`, with fixed weights so that every output element has its own cotangent.
fn weighted(f: &dyn Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) -> Result<Tensor> {
    let out = f(inputs)?;
    let w = tensor(99, out.dims(), -1.0, 1.0);
    out.mul(&w)?.sum(Axes::All, false)
}

/// Checks the gradient of `weighted(f)` with respect to every input against central differences.
fn check(f: &dyn Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) -> std::result::Result<(), TestCaseError> {
    let out = ValueAndGrad::new()
        .call(StateStore::new(), |scope| {
            let traced: Vec<Tensor> = inputs.iter().map(|x| scope.watch(x)).collect::<Result<_>>()?;
            weighted(f, &traced)
        })
        .unwrap();
    for (k, x) in inputs.iter().enumerate() {
        let analytic = out.inputs[k].to_vec::<f64>().unwrap();
        prop_assert_eq!(out.inputs[k].dims(), x.dims());
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
            prop_assert!(
                (analytic[i] - numeric).abs() <= TOL * (1.0 + numeric.abs()),
                "input {} element {}: analytic {} numeric {}",
                k,
                i,
                analytic[i],
                numeric
            );
        }
    }
    Ok(())
}

/// A shape of 0 to 3 axes, and a shape that broadcasts with it (some axes set to 1, leading axes dropped).
fn broadcast_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, bool)> {
    (prop::collection::vec(1usize..4, 0..4), any::<u8>(), 0usize..3, any::<bool>()).prop_map(
        |(dims, ones, drop, swap)| {
            let mut other: Vec<usize> =
                dims.iter().enumerate().map(|(i, &d)| if ones >> i & 1 == 1 { 1 } else { d }).collect();
            let drop = drop.min(other.len());
            other.drain(..drop);
            (dims, other, swap)
        },
    )
}

fn min_gap(a: &Tensor, b: &Tensor) -> f64 {
    let d = a.sub(b).unwrap().abs().unwrap();
    if d.size() == 0 {
        return f64::INFINITY;
    }
    d.min(Axes::All, false).unwrap().to_f64().unwrap()
}

type Op = fn(&[Tensor]) -> Result<Tensor>;

const BINARY: [(&str, Op, f64, f64); 7] = [
    ("add", |x| x[0].add(&x[1]), -2.0, 2.0),
    ("sub", |x| x[0].sub(&x[1]), -2.0, 2.0),
    ("mul", |x| x[0].mul(&x[1]), -2.0, 2.0),
    ("div", |x| x[0].div(&x[1]), 0.5, 2.0),
    ("pow", |x| x[0].pow(&x[1]), 0.5, 2.0),
    ("maximum", |x| x[0].maximum(&x[1]), -2.0, 2.0),
    ("minimum", |x| x[0].minimum(&x[1]), -2.0, 2.0),
];

const UNARY: [(&str, Op, f64, f64); 14] = [
    ("neg", |x| x[0].neg(), -2.0, 2.0),
    ("abs", |x| x[0].abs(), 0.1, 2.0),
    ("abs_negative", |x| x[0].abs(), -2.0, -0.1),
    ("square", |x| x[0].square(), -2.0, 2.0),
    ("sqrt", |x| x[0].sqrt(), 0.2, 3.0),
    ("exp", |x| x[0].exp(), -2.0, 2.0),
    ("log", |x| x[0].log(), 0.2, 3.0),
    ("log1p", |x| x[0].log1p(), -0.5, 2.0),
    ("expm1", |x| x[0].expm1(), -2.0, 2.0),
    ("tanh", |x| x[0].tanh(), -2.0, 2.0),
    ("sigmoid", |x| x[0].sigmoid(), -3.0, 3.0),
    ("relu", |x| x[0].relu(), 0.1, 2.0),
    ("relu_negative", |x| x[0].relu(), -2.0, -0.1),
    ("clip_inside", |x| x[0].clip(-5.0, 5.0), -2.0, 2.0),
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn binary_rules_match_finite_differences((a, b, swap) in broadcast_pair(), op in 0usize..7, seed in any::<u64>()) {
        let (name, f, lo, hi) = BINARY[op];
        let (da, db) = if swap { (b, a) } else { (a, b) };
        let (x, y) = (tensor(seed, &da, lo, hi), tensor(seed ^ 0x5555, &db, lo, hi));
        if name == "maximum" || name == "minimum" {
            prop_assume!(min_gap(&x, &y) > 1e-3);
        }
        check(&f, &[x, y]).map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
    }

    #[test]
    fn unary_rules_match_finite_differences(dims in prop::collection::vec(1usize..4, 0..4), op in 0usize..14, seed in any::<u64>()) {
        let (name, f, lo, hi) = UNARY[op];
        check(&f, &[tensor(seed, &dims, lo, hi)]).map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
    }

    #[test]
    fn where_routes_the_gradient_to_the_taken_branch((a, b, _) in broadcast_pair(), seed in any::<u64>()) {
        let (x, y) = (tensor(seed, &a, -2.0, 2.0), tensor(seed ^ 7, &b, -2.0, 2.0));
        let c = tensor(seed ^ 9, &b, -1.0, 1.0).greater(0.0).unwrap();
        check(&|t: &[Tensor]| where_(&c, &t[0], &t[1], DType::Float64), &[x, y])?;
    }

    #[test]
    fn reductions_match_finite_differences(
        dims in prop::collection::vec(1usize..4, 1..4),
        axis_bits in any::<u8>(),
        keepdims in any::<bool>(),
        op in 0usize..5,
        seed in any::<u64>(),
    ) {
        let axes: Vec<isize> = (0..dims.len()).filter(|a| axis_bits >> a & 1 == 1).map(|a| a as isize).collect();
        let axes = if axes.is_empty() { Axes::All } else { Axes::These(axes) };
        let x = tensor(seed, &dims, -2.0, 2.0);
        let f = move |t: &[Tensor]| -> Result<Tensor> {
            match op {
                0 => t[0].sum(axes.clone(), keepdims),
                1 => t[0].mean(axes.clone(), keepdims),
                2 => t[0].max(axes.clone(), keepdims),
                3 => t[0].min(axes.clone(), keepdims),
                _ => t[0].norm(axes.clone(), keepdims),
            }
        };
        check(&f, &[x])?;
    }

    #[test]
    fn matmul_matches_finite_differences(m in 1usize..4, k in 1usize..4, n in 1usize..4, batch in 0usize..3, kind in 0usize..6, seed in any::<u64>()) {
        let (da, db): (Vec<usize>, Vec<usize>) = match kind {
            0 => (vec![k], vec![k]),
            1 => (vec![k], vec![k, n]),
            2 => (vec![m, k], vec![k]),
            3 => (vec![m, k], vec![k, n]),
            4 => (vec![batch + 1, m, k], vec![k, n]),
            _ => (vec![batch + 1, 1, m, k], vec![2, k, n]),
        };
        let (x, y) = (tensor(seed, &da, -1.0, 1.0), tensor(seed ^ 3, &db, -1.0, 1.0));
        check(&|t: &[Tensor]| t[0].matmul(&t[1]), &[x, y])?;
    }

    #[test]
    fn shape_ops_and_indexing_match_finite_differences(d0 in 1usize..4, d1 in 2usize..5, op in 0usize..9, seed in any::<u64>()) {
        let x = tensor(seed, &[d0, d1, 2], -2.0, 2.0);
        let f = move |t: &[Tensor]| -> Result<Tensor> {
            let x = &t[0];
            match op {
                0 => x.reshape(&[-1, 2]),
                1 => Ok(x.transpose()),
                2 => x.permute(&[1, 2, 0]),
                3 => x.index(idx![.., 1..]),
                4 => x.index(&[Idx::I(-1), Idx::slice(None, None, -2)]),
                5 => x.expand_dims(1)?.squeeze(1),
                6 => x.index(&[Idx::Ellipsis, Idx::I(0)])?.broadcast_to([4, d0, d1]),
                7 => Ok(x.flatten()),
                _ => x.transpose().mul(x.transpose().to_standard_layout()),
            }
        };
        check(&f, &[x])?;
    }

    #[test]
    fn softmax_and_losses_match_finite_differences(rows in 1usize..4, classes in 1usize..5, op in 0usize..9, seed in any::<u64>()) {
        let z = tensor(seed, &[rows, classes], -3.0, 3.0);
        let p = tensor(seed ^ 1, &[rows, classes], 0.05, 1.0);
        let soft = tensor(seed ^ 2, &[rows, classes], 0.0, 1.0);
        let labels = Tensor::from_shape_vec([rows], values(seed ^ 3, rows, 0.0, classes as f64)).unwrap().cast(DType::Int32);
        let t01 = tensor(seed ^ 4, &[rows, classes], 0.0, 1.0);
        let input = if matches!(op, 5 | 6 | 8) { p } else { z };
        let f = move |t: &[Tensor]| -> Result<Tensor> {
            let x = &t[0];
            match op {
                0 => x.softmax(-1),
                1 => x.log_softmax(0),
                2 => losses::sparse_categorical_crossentropy(&labels, x, true),
                3 => losses::categorical_crossentropy(&soft, x, true),
                4 => losses::binary_crossentropy(&t01, x, true),
                5 => losses::sparse_categorical_crossentropy(&labels, x, false),
                6 => losses::categorical_crossentropy(&soft, x, false),
                7 => losses::mean_squared_error(&soft, x),
                _ => losses::binary_crossentropy(&t01, &x.mul(0.9)?, false),
            }
        };
        check(&f, &[input])?;
    }
}

fn grad_of(x: Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Tensor {
    let out = ValueAndGrad::new()
        .call(StateStore::new(), |scope| {
            let x = scope.watch(&x)?;
            f(&x)?.sum(Axes::All, false)
        })
        .unwrap();
    out.inputs.into_iter().next().unwrap()
}

#[test]
fn kinks_and_ties_follow_jax() {
    let abs = grad_of(Tensor::from([0.0f32, -0.0, -1.0]), |x| x.abs());
    assert_eq!(abs.to_vec::<f32>().unwrap(), [1.0, 1.0, -1.0], "d|x|/dx is +1 at 0 and -0.0");
    let relu = grad_of(Tensor::from([0.0f32, 2.0]), |x| x.relu());
    assert_eq!(relu.to_vec::<f32>().unwrap(), [0.0, 1.0]);
    let max = grad_of(Tensor::from([1.0f32, 3.0]), |x| x.maximum(Tensor::from([1.0f32, 2.0])));
    assert_eq!(max.to_vec::<f32>().unwrap(), [0.5, 1.0], "equal operands share");
    let min = grad_of(Tensor::from([1.0f32]), |x| x.minimum(x));
    assert_eq!(min.to_vec::<f32>().unwrap(), [1.0], "both halves reach x");
    let clip = grad_of(Tensor::from([-1.0f32, 1.0, 0.0, 5.0]), |x| x.clip(-1.0, 1.0));
    assert_eq!(clip.to_vec::<f32>().unwrap(), [0.5, 0.5, 1.0, 0.0], "clip exactly at a bound gives 0.5");
    let ties = grad_of(Tensor::from([[3.0f32, 1.0, 3.0, 3.0], [0.0, 2.0, 1.0, 2.0]]), |x| x.max(1, false));
    assert_eq!(ties.to_vec::<f32>().unwrap(), [1.0 / 3.0, 0.0, 1.0 / 3.0, 1.0 / 3.0, 0.0, 0.5, 0.0, 0.5]);
}

#[test]
fn where_propagates_nan_from_the_branch_not_taken() {
    // jax.grad(lambda x: jnp.where(x > 0, jnp.sqrt(x), 0.0))(x) is NaN at x <= 0: the untaken branch gets a
    // zero cotangent, and 0 * (0.5 / sqrt(x)) is NaN there.
    let g = grad_of(Tensor::from([4.0f32, 0.0, -1.0]), |x| where_(&x.greater(0.0)?, &x.sqrt()?, 0.0, DType::Float32));
    let g = g.to_vec::<f32>().unwrap();
    assert_eq!(g[0], 0.25);
    assert!(g[1].is_nan() && g[2].is_nan(), "{g:?}");
    // A safe `where` on both sides is finite, as in JAX.
    let g = grad_of(Tensor::from([-1.0f32]), |x| {
        let ok = x.greater(0.0)?;
        where_(&ok, &where_(&ok, x, 1.0, DType::Float32)?.sqrt()?, 0.0, DType::Float32)
    });
    assert_eq!(g.to_vec::<f32>().unwrap(), [0.0]);
}

#[test]
fn casts_send_the_gradient_back_in_the_source_dtype() {
    let g = grad_of(Tensor::from([1.5f64, -2.0]), |x| x.cast(DType::Float32).mul(2.0));
    assert_eq!((g.dtype(), g.to_vec::<f64>().unwrap()), (DType::Float64, vec![2.0, 2.0]));
    let g = grad_of(Tensor::from([1.5f32]), |x| Ok(x.cast(DType::Int32).cast(DType::Float32)));
    assert_eq!(g.to_vec::<f32>().unwrap(), [0.0], "a cast through an integer stops the gradient");
    let g = grad_of(Tensor::from([2.0f32]), |x| x.mul(grad::stop_gradient(x)));
    assert_eq!(g.to_vec::<f32>().unwrap(), [2.0]);
}

/// The two-layer MLP of `tools/jax_mlp.py`: `relu(x @ w1 + b1) @ w2 + b2`, softmax cross-entropy with
/// integer labels, mean over the batch.
fn mlp_fixture() -> (StateStore, Vec<purestate::Variable>, Tensor, Tensor, serde_json::Value) {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jax_mlp.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let arr = |name: &str| -> (Vec<usize>, Vec<f32>) {
        let v = &json[name];
        let dims = v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        let data = v["data"].as_array().unwrap().iter().map(|d| d.as_f64().unwrap() as f32).collect();
        (dims, data)
    };
    let mut state = StateStore::new();
    let mut vars = Vec::new();
    for name in ["w1", "b1", "w2", "b2"] {
        let (dims, data) = arr(name);
        let value = Tensor::from_shape_vec(dims.as_slice(), data).unwrap();
        vars.push(state.create(VariableSpec::new(value).name(name)).unwrap());
    }
    let (dims, data) = arr("x");
    let x = Tensor::from_shape_vec(dims.as_slice(), data).unwrap();
    let labels: Vec<i32> = json["labels"].as_array().unwrap().iter().map(|d| d.as_i64().unwrap() as i32).collect();
    (state, vars, x, Tensor::from(labels), json)
}

fn mlp_loss(scope: &mut purestate::Scope, vars: &[purestate::Variable], x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let h = x.matmul(&scope.get(&vars[0])?)?.add(&scope.get(&vars[1])?)?.relu()?;
    let logits = h.matmul(&scope.get(&vars[2])?)?.add(&scope.get(&vars[3])?)?;
    losses::sparse_categorical_crossentropy(y, &logits, true)
}

#[test]
fn mlp_gradients_equal_jax_to_float32_rounding() {
    let (state, vars, x, y, json) = mlp_fixture();
    let (loss, grads) = grad::value_and_grad(&state, |s| mlp_loss(s, &vars, &x, &y)).unwrap();
    let expected_loss = json["loss"].as_f64().unwrap();
    // float32 rounding: a few ulps of the values involved (sums over 32-element rows).
    assert!((loss.to_f64().unwrap() - expected_loss).abs() <= 4.0 * f32::EPSILON as f64 * expected_loss.abs());
    for (var, name) in vars.iter().zip(["w1", "b1", "w2", "b2"]) {
        let g = grads.get(var).unwrap().to_vec::<f32>().unwrap();
        let want: Vec<f64> =
            json[format!("grad_{name}")]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (i, (&g, &w)) in g.iter().zip(&want).enumerate() {
            assert!((g as f64 - w).abs() <= 1e-5 * scale, "grad_{name}[{i}]: {g} vs jax {w} (scale {scale})");
        }
    }
}

#[test]
fn gradients_are_bit_identical_across_thread_counts() {
    let mut state = StateStore::new();
    let w1 = state.create(VariableSpec::new(init::GlorotUniform).shape([128, 512]).name("w1")).unwrap();
    let w2 = state.create(VariableSpec::new(init::GlorotUniform).shape([512, 10]).name("w2")).unwrap();
    let x = tensor(1, &[256, 128], -1.0, 1.0).cast(DType::Float32);
    let y = Tensor::from((0..256i32).map(|i| i * 7 % 10).collect::<Vec<_>>());
    let run = || {
        grad::value_and_grad(&state, |s| {
            let h = x.matmul(&s.get(&w1)?)?.tanh()?;
            let z = h.matmul(&s.get(&w2)?)?;
            losses::sparse_categorical_crossentropy(&y, &z, true)?.add(&h.square()?.mean(Axes::All, false)?)
        })
        .unwrap()
    };
    let (l1, g1) = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(run);
    for n in [2, 7] {
        let (l, g) = rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap().install(run);
        assert!(l.bit_eq(&l1), "loss at {n} threads");
        for (var, t) in g1.iter() {
            assert!(g.get(var).unwrap().bit_eq(t), "{} at {n} threads", var.path());
        }
    }
}

#[test]
fn mixed_precision_gives_gradients_in_the_variables_dtype() {
    let (state, vars, x, y, _) = mlp_fixture();
    let x16 = x.cast(DType::Float16);
    let (loss, grads) = ValueAndGrad::new()
        .autocast(DType::Float16)
        .value_and_grad(&state, |s| {
            let logits = {
                let h = x16.matmul(&s.get(&vars[0])?)?.add(&s.get(&vars[1])?)?.relu()?;
                assert_eq!(h.dtype(), DType::Float16, "computed in the compute dtype");
                h.matmul(&s.get(&vars[2])?)?.add(&s.get(&vars[3])?)?
            };
            losses::sparse_categorical_crossentropy(&y, &logits, true)
        })
        .unwrap();
    assert_eq!(loss.dtype(), DType::Float32, "losses compute in float32, as Keras's floatx");
    let (_, full) = grad::value_and_grad(&state, |s| mlp_loss(s, &vars, &x, &y)).unwrap();
    for var in &vars {
        let (g, f) = (grads.get(var).unwrap(), full.get(var).unwrap());
        assert_eq!(g.dtype(), DType::Float32);
        assert_eq!(g.dims(), var.shape().dims());
        let scale = f.abs().unwrap().max(Axes::All, false).unwrap().to_f64().unwrap();
        assert!(g.max_abs_diff(f).unwrap() <= 2e-2 * scale, "{}: float16 gradient near float32", var.path());
    }
}

#[test]
fn the_tape_releases_every_buffer_so_adam_updates_in_place() {
    let (mut state, vars, x, y, _) = mlp_fixture();
    let mut opt = Adam::new(1e-3);
    opt.build(&mut state, &vars).unwrap();
    // On a snapshot: the snapshot is untouched.
    let snapshot = state.clone();
    let fingerprint = snapshot.fingerprint();
    let (_, grads) = grad::value_and_grad(&state, |s| mlp_loss(s, &vars, &x, &y)).unwrap();
    let next = opt.apply(state.clone(), &grads).unwrap();
    assert_eq!(snapshot.fingerprint(), fingerprint);
    assert!(!next.get(&vars[0]).unwrap().bit_eq(&snapshot.get(&vars[0]).unwrap()));
    drop((snapshot, next));
    // Unshared: the parameters' buffers are updated in place.
    let ptrs: Vec<_> = vars.iter().map(|v| state.get(v).unwrap().as_ptr()).collect();
    let (_, grads) = grad::value_and_grad(&state, |s| mlp_loss(s, &vars, &x, &y)).unwrap();
    let next = opt.apply(state, &grads).unwrap();
    for (var, ptr) in vars.iter().zip(ptrs) {
        assert_eq!(next.get(var).unwrap().as_ptr(), ptr, "{} updated in place", var.path());
    }
}

#[derive(Debug)]
struct L2(f64);

impl Regularizer for L2 {
    fn penalty(&self, value: &Tensor) -> Result<Tensor> {
        value.square()?.sum(Axes::All, false)?.mul(self.0)
    }
    fn name(&self) -> &'static str {
        "L2"
    }
}

#[test]
fn collected_losses_and_penalties_are_added_as_keras_does() {
    let mut state = StateStore::new();
    let w = state.create(VariableSpec::new(init::Constant::new(2.0)).shape([2]).name("w")).unwrap();
    let unread = state.create(VariableSpec::new(init::Constant::new(3.0)).shape([1]).name("unread")).unwrap();
    let frozen = state.create(VariableSpec::new(init::Constant::new(5.0)).shape([1]).name("frozen")).unwrap();
    for var in [&w, &unread, &frozen] {
        state.set_regularizer(var, Some(Arc::new(L2(0.5)))).unwrap();
    }
    state.set_trainable(&frozen, false).unwrap();
    let (loss, grads) = grad::value_and_grad(&state, |s| {
        let w = s.get(&w)?;
        s.add_loss(w.mul(10.0)?); // summed to a scalar: 40
        w.sum(Axes::All, false) // 4
    })
    .unwrap();
    // 4 + 40 + 0.5 * (4 + 4) + 0.5 * 9; the frozen variable adds nothing.
    assert_eq!(loss.to_f64().unwrap(), 52.5);
    assert_eq!(grads.get(&w).unwrap().to_vec::<f32>().unwrap(), [13.0, 13.0]); // 1 + 10 + 2
    assert_eq!(grads.get(&unread).unwrap().to_vec::<f32>().unwrap(), [3.0]);
    assert!(!grads.contains(&frozen));
}

#[test]
fn wrt_and_missing_choose_the_variables() {
    let mut state = StateStore::new();
    let a = state.create(VariableSpec::new(init::Ones).shape([2]).name("a")).unwrap();
    let b = state.create(VariableSpec::new(init::Ones).shape([2]).name("b")).unwrap();
    let f = |s: &mut purestate::Scope| s.get(&a)?.square()?.sum(Axes::All, false);
    let zero = grad::grad(&state, f).unwrap();
    assert_eq!(zero.get(&b).unwrap().to_vec::<f32>().unwrap(), [0.0, 0.0]);
    let skip = ValueAndGrad::new().missing(Missing::Skip).grad(&state, f).unwrap();
    assert_eq!((skip.len(), skip.contains(&b)), (1, false));
    let only_b = grad::wrt(std::slice::from_ref(&b)).grad(&state, f).unwrap();
    assert_eq!(only_b.variables().collect::<Vec<_>>(), [&b]);
    // Read but not reaching the loss is missing too.
    let read = ValueAndGrad::new().missing(Missing::Skip).grad(&state, |s| {
        s.get(&b)?;
        f(s)
    });
    assert!(!read.unwrap().contains(&b));
}

#[test]
fn bad_losses_and_foreign_variables_are_errors() {
    let mut state = StateStore::new();
    let w = state.create(VariableSpec::new(init::Ones).shape([2]).name("w")).unwrap();
    let err = grad::value_and_grad(&state, |s| s.get(&w)).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { ref path, .. } if path == "value_and_grad"), "{err}");
    assert_eq!(err.to_string(), "`value_and_grad`: shape mismatch, expected (), got (2,)");
    let err = grad::value_and_grad(&state, |s| s.get(&w)?.sum(Axes::All, false)?.greater(0.0)).unwrap_err();
    assert!(matches!(err, Error::UnsupportedDType { op: "value_and_grad", dtype: DType::Bool }));
    let mut other = StateStore::new();
    let foreign = other.create(VariableSpec::new(init::Ones).shape([2]).name("w")).unwrap();
    let err = grad::wrt(&[foreign]).grad(&state, |s| s.get(&w)?.sum(Axes::All, false)).unwrap_err();
    assert!(matches!(err, Error::ForeignVariable { .. }));
    let err = grad::wrt(&[w.clone(), w.clone()]).grad(&state, |s| s.get(&w)?.sum(Axes::All, false)).unwrap_err();
    assert!(matches!(err, Error::DuplicatePath { .. }));
    let err = ValueAndGrad::new().call(&state, |s| s.watch(&Tensor::from([1i32]))?.sum(Axes::All, false));
    assert!(matches!(err, Err(Error::UnsupportedDType { op: "watch", .. })));
}

#[test]
fn traces_are_inert_after_the_call() {
    let state = StateStore::new();
    let mut escaped = None;
    grad::value_and_grad(&state, |s| {
        let x = s.watch(&Tensor::from([1.0f32]))?;
        escaped = Some(x.clone());
        x.sum(Axes::All, false)
    })
    .unwrap();
    let x = escaped.unwrap();
    assert!(!x.is_traced());
    assert!(!x.mul(2.0).unwrap().is_traced());
    assert!(!Tensor::from([1.0f32]).is_traced());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// `x % y` away from its jumps (where `x / y` is an integer): d/dx = 1, d/dy = -floor(x / y).
    #[test]
    fn floor_mod_matches_finite_differences((a, b, swap) in broadcast_pair(), negative in any::<bool>(), seed in any::<u64>()) {
        let (da, db) = if swap { (b, a) } else { (a, b) };
        let x = tensor(seed, &da, -4.0, 4.0);
        let y = tensor(seed ^ 0x5555, &db, 0.5, 2.0);
        let y = if negative { y.neg().unwrap() } else { y };
        let q = x.div(&y).unwrap().to_vec::<f64>().unwrap();
        prop_assume!(q.iter().all(|q| (q - q.floor()) > 1e-3 && (q - q.floor()) < 1.0 - 1e-3));
        check(&|t: &[Tensor]| t[0].rem(&t[1]), &[x, y])?;
    }
}

/// `tools/jax_floor_mod.py`: `jax.grad` of `sum(w * (x % y))`, `y` broadcast along the first axis, in float32
/// and float64.
#[test]
fn floor_mod_gradient_equals_jax() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jax_floor_mod.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    for case in json["cases"].as_array().unwrap() {
        let dtype: DType = case["dtype"].as_str().unwrap().parse().unwrap();
        let arr = |name: &str| -> (Tensor, Vec<f64>) {
            let v = &case[name];
            let dims: Vec<usize> =
                v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
            let data: Vec<f64> = v["data"].as_array().unwrap().iter().map(|d| d.as_f64().unwrap()).collect();
            (Tensor::from_shape_vec(dims.as_slice(), data.clone()).unwrap().cast(dtype), data)
        };
        let ((x, _), (y, _), (w, _)) = (arr("x"), arr("y"), arr("w"));
        let out = ValueAndGrad::new()
            .call(StateStore::new(), |scope| {
                let (x, y) = (scope.watch(&x)?, scope.watch(&y)?);
                let z = x.rem(&y)?;
                // XLA's CPU `rem` is not an exact fmod: the forward agrees to a few ulps.
                let eps = if dtype == DType::Float32 { f32::EPSILON as f64 } else { f64::EPSILON };
                for (v, w) in z.to_f64_vec().into_iter().zip(arr("value").1) {
                    assert!((v - w).abs() <= 16.0 * eps * (1.0 + w.abs()), "{dtype}: forward {v} vs jax {w}");
                }
                z.mul(&w)?.sum(Axes::All, false)
            })
            .unwrap();
        // d/dx is the weights exactly; d/dy sums four products over the broadcast axis (rounding of the sum).
        assert_eq!(out.inputs[0].to_f64_vec(), arr("grad_x").0.to_f64_vec(), "{dtype}: d/dx");
        let eps = if dtype == DType::Float32 { f32::EPSILON as f64 } else { f64::EPSILON };
        let want = arr("grad_y").1;
        for (i, (g, w)) in out.inputs[1].to_f64_vec().into_iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 16.0 * eps * (1.0 + w.abs()), "{dtype}: d/dy[{i}]: {g} vs jax {w}");
        }
    }
}
