//! The attention ops (`triu`, `tril`, `softmax_masked`, `swapaxes`) and `where_` with broadcasting: forward
//! values and VJPs against `tests/fixtures/jax_ops.json` (the cases `tools/jax_ops.py` appended for them, Keras
//! 3.15.1 on JAX 0.10.2; `softmax_masked` against `keras.layers.Softmax(axis)(x, mask)`), gradients against
//! finite differences, and the bits at 1, 2 and 7 threads above the parallel threshold.

use purestate::grad::ValueAndGrad;
use purestate::ops::{softmax_masked, where_, Axes};
use purestate::{DType, Error, Result, StateStore, Tensor};
use serde_json::Value;

use crate::fd;
use crate::jax_ops_misc::{assert_close, tensor};

const OPS: [&str; 4] = ["triu", "tril", "softmax_masked", "where"];

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jax_ops.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    json["cases"].as_array().unwrap().iter().filter(|c| OPS.contains(&c["op"].as_str().unwrap())).cloned().collect()
}

fn run(op: &str, p: &Value, x: &[Tensor]) -> Result<Tensor> {
    match op {
        "triu" => x[0].triu(p["k"].as_i64().unwrap() as isize),
        "tril" => x[0].tril(p["k"].as_i64().unwrap() as isize),
        "softmax_masked" => softmax_masked(&x[0], &x[1], p["axis"].as_i64().unwrap() as isize),
        "where" => where_(&x[0], &x[1], &x[2], DType::Float32),
        other => panic!("no dispatch for {other}"),
    }
}

#[test]
fn attention_ops_match_jax_forward_and_vjp() {
    let cases = cases();
    assert_eq!(cases.len(), 13, "triu x3, tril x3, softmax_masked x4, where x3");
    let mut checked = 0;
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let op = case["op"].as_str().unwrap();
        let inputs: Vec<Tensor> = case["inputs"].as_array().unwrap().iter().map(tensor).collect();
        let y = run(op, &case["params"], &inputs).unwrap();
        assert_eq!(y.dtype(), DType::Float32, "{name}");
        assert_close(name, "output", &y, &case["outputs"][0]);
        let cotangent = tensor(&case["cotangents"][0]);
        let out = ValueAndGrad::new()
            .call(StateStore::new(), |scope| {
                let x: Vec<Tensor> = inputs
                    .iter()
                    .map(|t| if t.dtype().is_float() { scope.watch(t) } else { Ok(t.clone()) })
                    .collect::<Result<_>>()?;
                run(op, &case["params"], &x)?.mul(&cotangent)?.sum(Axes::All, false)
            })
            .unwrap();
        let mut watched = out.inputs.iter();
        for (k, want) in case["vjp"].as_array().unwrap().iter().enumerate() {
            if want.is_null() {
                assert_eq!(inputs[k].dtype(), DType::Bool, "{name}: only masks are held fixed");
                continue;
            }
            assert_close(name, &format!("vjp {k}"), watched.next().unwrap(), want);
            checked += 1;
        }
    }
    assert_eq!(checked, 16, "every float input");
}

#[test]
fn triu_and_tril_follow_numpy() {
    let x = Tensor::from([[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]);
    assert_eq!(x.tril(0).unwrap().to_vec::<f32>().unwrap(), [1.0, 0.0, 0.0, 4.0, 5.0, 0.0, 7.0, 8.0, 9.0]);
    assert_eq!(x.triu(-1).unwrap().to_vec::<f32>().unwrap(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 8.0, 9.0]);
    assert_eq!(x.tril(5).unwrap().to_vec::<f32>().unwrap(), x.to_vec::<f32>().unwrap());
    assert!(x.triu(3).unwrap().to_vec::<f32>().unwrap().iter().all(|&v| v == 0.0));
    let b = Tensor::full([2, 3], DType::Bool, true).tril(0).unwrap();
    assert_eq!(b.dtype(), DType::Bool);
    assert_eq!(b.to_vec::<bool>().unwrap(), [true, false, false, true, true, false]);
    assert!(matches!(Tensor::from([1.0f32, 2.0]).triu(0), Err(Error::InvalidShape { op: "triu", .. })));
}

#[test]
fn softmax_masked_zeroes_masked_and_fully_masked_rows() {
    let x = Tensor::from([[1.0f32, 2.0, 3.0], [1.0, 2.0, 3.0]]);
    let mask = Tensor::from([[true, false, true], [false, false, false]]);
    let p = softmax_masked(&x, &mask, -1).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(p[1], 0.0);
    assert!((p[0] + p[2] - 1.0).abs() < 1e-6);
    assert_eq!(&p[3..], [0.0, 0.0, 0.0], "a row with no key gives zeros, as Keras's Softmax");
    // Huge logits stay finite; masked huge logits do not leak.
    let big = Tensor::from([[1e30f32, -1e30, 5e29]]);
    let p = softmax_masked(&big, &Tensor::from([[false, true, true]]), -1).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(p, [0.0, 0.0, 1.0]);
    assert!(matches!(softmax_masked(&x, &Tensor::from([1.0f32, 0.0, 1.0]), -1), Err(Error::UnsupportedDType { .. })));
    assert!(matches!(softmax_masked(&x, &Tensor::from([true, false]), -1), Err(Error::Broadcast { .. })));
    let too_big = Tensor::full([2, 2, 3], DType::Bool, true);
    assert!(matches!(softmax_masked(&x, &too_big, -1), Err(Error::Broadcast { .. })), "a mask may not enlarge x");
    assert!(matches!(softmax_masked(&x, &mask, 2), Err(Error::InvalidShape { .. })));
}

#[test]
fn attention_op_gradients_match_finite_differences() {
    let x = fd::tensor(1, &[2, 3, 4], -2.0, 2.0);
    let mask = Tensor::from_shape_vec([3, 4], (0..12).map(|i| i % 5 != 2).collect::<Vec<bool>>()).unwrap();
    fd::check("softmax_masked axis -1", &|x| Ok(vec![softmax_masked(&x[0], &mask, -1)?]), std::slice::from_ref(&x));
    let col = Tensor::from_shape_vec([2, 3, 1], vec![true, false, true, true, true, false]).unwrap();
    fd::check("softmax_masked axis 2", &|x| Ok(vec![softmax_masked(&x[0], &col, 2)?]), std::slice::from_ref(&x));
    fd::check("triu", &|x| Ok(vec![x[0].triu(1)?]), std::slice::from_ref(&x));
    fd::check("tril", &|x| Ok(vec![x[0].tril(-1)?]), std::slice::from_ref(&x));
    fd::check(
        "swapaxes",
        &|x| Ok(vec![x[0].swapaxes(1, 2)?.matmul(&x[0])?, x[0].swapaxes(0, -1)?]),
        std::slice::from_ref(&x),
    );
    let cond = Tensor::from_shape_vec([3, 1], vec![true, false, true]).unwrap();
    let (a, b) = (fd::tensor(2, &[1, 4], -1.0, 1.0), fd::tensor(3, &[2, 1, 1], -1.0, 1.0));
    fd::check("where broadcast", &|x| Ok(vec![where_(&cond, &x[0], &x[1], DType::Float64)?]), &[a, b]);
}

#[test]
fn attention_ops_are_bit_identical_at_any_thread_count() {
    // 2 x 4 x 200 x 200 = 320 000 elements: above the kernels' parallel threshold (256 Ki).
    let dims = [2, 4, 200, 200];
    let x =
        Tensor::from_shape_vec(dims, fd::values(7, 320_000, -4.0, 4.0).iter().map(|&v| v as f32).collect()).unwrap();
    let mask = Tensor::full([200, 200], DType::Bool, true).tril(0).unwrap();
    let g =
        Tensor::from_shape_vec(dims, fd::values(8, 320_000, -1.0, 1.0).iter().map(|&v| v as f32).collect()).unwrap();
    let run = || {
        let out = ValueAndGrad::new()
            .call(StateStore::new(), |scope| {
                let x = scope.watch(&x)?;
                let p = softmax_masked(&x, &mask, -1)?;
                let t = x.triu(1)?.add(&x.tril(-3)?)?;
                p.add(&t)?.mul(&g)?.sum(Axes::All, false)
            })
            .unwrap();
        let forward = softmax_masked(&x, &mask, -1).unwrap().add(x.triu(2).unwrap()).unwrap();
        (forward, out.inputs[0].clone())
    };
    let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
    let (y1, g1) = pool(1).install(run);
    for n in [2, 7] {
        let (y, g) = pool(n).install(run);
        assert!(y.bit_eq(&y1), "forward at {n} threads");
        assert!(g.bit_eq(&g1), "gradient at {n} threads");
    }
}

/// Keras's composed form, `where(mask, softmax(where(mask, x, -1e9)), 0)`, and its closed-form backward
/// `z * g - z * sum(z * g)`, out of separate ops.
fn composed_softmax_masked(x: &Tensor, mask: &Tensor, g: &Tensor) -> (Tensor, Tensor) {
    let filled = where_(mask, x, -1e9, x.dtype()).unwrap();
    let z = where_(mask, filled.softmax(-1).unwrap(), Tensor::zeros([], x.dtype()), x.dtype()).unwrap();
    let zg = z.mul(g).unwrap();
    let s = zg.sum(Axes::from(-1), true).unwrap();
    let dx = zg.sub(z.mul(&s).unwrap()).unwrap();
    (z, dx)
}

#[test]
fn fused_softmax_masked_gives_the_composed_forms_bits() {
    // Masks as attention builds them: causal (T, S) broadcast over batch and heads, one per example, one per
    // key broadcast over queries, and a mask with rows masked everywhere.
    let dims = [3, 2, 5, 7];
    let causal =
        Tensor::full([5, 7], DType::Bool, true).tril(0).unwrap().expand_dims(0).unwrap().expand_dims(0).unwrap();
    let per_example =
        Tensor::from_shape_vec([3, 1, 5, 7], (0..105).map(|i| i % 4 != 1).collect::<Vec<bool>>()).unwrap();
    let per_key = Tensor::from_shape_vec([1, 7], (0..7).map(|i| i != 3).collect::<Vec<bool>>()).unwrap();
    let empty_rows = Tensor::from_shape_vec([2, 5, 1], (0..10).map(|i| i % 3 != 0).collect::<Vec<bool>>()).unwrap();
    for dtype in [DType::Float32, DType::Float64] {
        let x = fd::tensor(11, &dims, -30.0, 30.0).cast(dtype);
        let g = fd::tensor(12, &dims, -1.0, 1.0).cast(dtype);
        for (name, mask) in
            [("causal", &causal), ("per example", &per_example), ("per key", &per_key), ("empty", &empty_rows)]
        {
            let out = ValueAndGrad::new()
                .call(StateStore::new(), |scope| {
                    softmax_masked(&scope.watch(&x)?, mask, -1)?.mul(&g)?.sum(Axes::All, false)
                })
                .unwrap();
            let (z, dx) = composed_softmax_masked(&x, mask, &g);
            assert!(softmax_masked(&x, mask, -1).unwrap().bit_eq(&z), "{dtype:?} {name}: forward");
            assert!(out.inputs[0].bit_eq(&dx), "{dtype:?} {name}: backward");
        }
    }
}
