//! `conv2d`, `max_pool2d` and `avg_pool2d` against JAX: forward values and VJPs of the cases of
//! `tests/fixtures/jax_ops.json` (written by `tools/jax_ops.py`: Keras 3 on the JAX backend, CPU). The other ops
//! of the file are checked in `jax_ops_misc.rs`; each file has its own small reader.

use purestate::grad::ValueAndGrad;
use purestate::ops::{avg_pool2d, conv2d, max_pool2d, Axes, Conv2d, Pool2d};
use purestate::{DType, Result, StateStore, Tensor};
use serde_json::Value;

const OPS: [&str; 3] = ["conv2d", "max_pool2d", "avg_pool2d"];

fn fixture() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jax_ops.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `{"shape", "dtype", "data"}` as a tensor (data flat, row-major).
fn array(v: &Value) -> Tensor {
    let dims: Vec<usize> = v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let data: Vec<f64> = v["data"].as_array().unwrap().iter().map(|d| d.as_f64().unwrap()).collect();
    let dtype: DType = v["dtype"].as_str().unwrap().parse().unwrap();
    Tensor::from_shape_vec(dims.as_slice(), data).unwrap().cast(dtype)
}

fn pair(v: &Value) -> [usize; 2] {
    let a: Vec<usize> = v.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    [a[0], a[1]]
}

/// The case's op applied to `inputs` with its params.
fn apply(op: &str, params: &Value, inputs: &[Tensor]) -> Result<Tensor> {
    let padding = params["padding"].as_str().unwrap().parse()?;
    match op {
        "conv2d" => {
            let opts = Conv2d { strides: pair(&params["strides"]), padding, dilation: pair(&params["dilation"]) };
            conv2d(&inputs[0], &inputs[1], opts)
        }
        _ => {
            let opts =
                Pool2d { pool_size: pair(&params["pool_size"]), strides: Some(pair(&params["strides"])), padding };
            if op == "max_pool2d" {
                max_pool2d(&inputs[0], opts)
            } else {
                avg_pool2d(&inputs[0], opts)
            }
        }
    }
}

/// The pools are bit-identical to JAX: a maximum is one of the inputs and its gradient sums the cotangents in
/// XLA's scatter order; the average sums windows in row-major order and multiplies by the float32 reciprocal of
/// the count, as XLA does. A convolution's sums are blocked differently by `gemm` and by XLA's Eigen kernels,
/// so it gets the float32 tolerance.
fn check(op: &str, what: &str, got: &Tensor, want: &Tensor) {
    if op == "conv2d" {
        assert_close(what, got, want);
    } else {
        assert!(got.bit_eq(want), "{what}: {:?} vs jax {:?}", got.to_f64_vec(), want.to_f64_vec());
    }
}

/// `|got - want| <= 1e-6 + 1e-5 * |want|` for every element (float32 results).
fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtype");
    for (i, (g, w)) in got.to_f64_vec().into_iter().zip(want.to_f64_vec()).enumerate() {
        assert!((g - w).abs() <= 1e-6 + 1e-5 * w.abs(), "{what}[{i}]: {g} vs jax {w}");
    }
}

#[test]
fn conv_and_pools_equal_jax_forward_and_vjp() {
    let json = fixture();
    let mut seen = [0; 3];
    for case in json["cases"].as_array().unwrap() {
        let op = case["op"].as_str().unwrap();
        let Some(which) = OPS.iter().position(|&o| o == op) else { continue };
        seen[which] += 1;
        let name = case["name"].as_str().unwrap();
        let inputs: Vec<Tensor> = case["inputs"].as_array().unwrap().iter().map(array).collect();
        let want = array(&case["outputs"][0]);
        let cotangent = array(&case["cotangents"][0]);
        let out = ValueAndGrad::new()
            .call(StateStore::new(), |scope| {
                let traced: Vec<Tensor> = inputs.iter().map(|x| scope.watch(x)).collect::<Result<_>>()?;
                let z = apply(op, &case["params"], &traced)?;
                check(op, &format!("{name}: forward"), &z, &want);
                z.mul(&cotangent)?.sum(Axes::All, false)
            })
            .unwrap();
        for (k, vjp) in case["vjp"].as_array().unwrap().iter().enumerate() {
            check(op, &format!("{name}: vjp of input {k}"), &out.inputs[k], &array(vjp));
        }
    }
    assert_eq!(seen, [8, 6, 4], "cases of conv2d, max_pool2d, avg_pool2d in the fixture");
}
