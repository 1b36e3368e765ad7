//! Forward values and VJPs of the layer-library ops against `tests/fixtures/jax_ops.json` (written by
//! `tools/jax_ops.py`: Keras 3.15.1 on JAX 0.10.2): take, one_hot, concatenate, stack, split, slice, the
//! activations and var/std/moments/logsumexp. conv2d and the pools are `jax_ops_conv.rs`'s.
//!
//! Tolerance: `|ours - jax| <= 1e-6 + 1e-5 * |jax|` for every value, forward and VJP (float32 rounding of
//! different but equally accurate evaluation orders; XLA's float32 `tanh` and `exp` are its own approximations,
//! a few ulps from the platform's). `erf` is held to JAX's bits exactly: it is XLA's approximation.

use purestate::grad::ValueAndGrad;
use purestate::ops::{concatenate, one_hot, stack, Axes, Split};
use purestate::{DType, Result, StateStore, Tensor};
use serde_json::Value;

const REL: f64 = 1e-5;
const ABS: f64 = 1e-6;

/// The ops this file owns (everything in the fixture but the convolutions and pools).
const OPS: [&str; 19] = [
    "take",
    "one_hot",
    "concatenate",
    "stack",
    "split",
    "slice",
    "erf",
    "gelu",
    "silu",
    "softplus",
    "leaky_relu",
    "elu",
    "rsqrt",
    "relu6",
    "log_sigmoid",
    "var",
    "std",
    "moments",
    "logsumexp",
];

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jax_ops.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    json["cases"].as_array().unwrap().iter().filter(|c| OPS.contains(&c["op"].as_str().unwrap())).cloned().collect()
}

/// A fixture tensor (float32, int32, uint32 or bool).
pub(crate) fn tensor(v: &Value) -> Tensor {
    let dims: Vec<usize> = v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let data = v["data"].as_array().unwrap();
    match v["dtype"].as_str().unwrap() {
        "float32" => {
            Tensor::from_shape_vec(dims.as_slice(), data.iter().map(|x| x.as_f64().unwrap() as f32).collect()).unwrap()
        }
        "int32" => {
            Tensor::from_shape_vec(dims.as_slice(), data.iter().map(|x| x.as_i64().unwrap() as i32).collect()).unwrap()
        }
        "uint32" => {
            Tensor::from_shape_vec(dims.as_slice(), data.iter().map(|x| x.as_u64().unwrap() as u32).collect()).unwrap()
        }
        "bool" => Tensor::from_shape_vec(dims.as_slice(), data.iter().map(|x| x.as_bool().unwrap()).collect()).unwrap(),
        other => panic!("unexpected fixture dtype {other}"),
    }
}

fn axes(v: &Value) -> Axes {
    match v {
        Value::Null => Axes::All,
        Value::Array(list) => Axes::These(list.iter().map(|a| a.as_i64().unwrap() as isize).collect()),
        a => Axes::from(a.as_i64().unwrap() as isize),
    }
}

fn int(p: &Value, name: &str) -> isize {
    p[name].as_i64().unwrap() as isize
}

/// Runs a case's op on `inputs` (traced or not), one tensor per output.
fn run(op: &str, p: &Value, x: &[Tensor]) -> Result<Vec<Tensor>> {
    let one = |t: Result<Tensor>| t.map(|t| vec![t]);
    let refs: Vec<&Tensor> = x.iter().collect();
    let keepdims = p["keepdims"].as_bool().unwrap_or(false);
    match op {
        "take" => one(x[0].take(&x[1], Some(int(p, "axis")))),
        "one_hot" => one(one_hot(&x[0], int(p, "num_classes") as usize, int(p, "axis"), DType::Float32)),
        "concatenate" => one(concatenate(&refs, int(p, "axis"))),
        "stack" => one(stack(&refs, int(p, "axis"))),
        "split" => {
            let how = match &p["indices_or_sections"] {
                Value::Array(list) => Split::Indices(list.iter().map(|i| i.as_i64().unwrap() as isize).collect()),
                n => Split::Sections(n.as_u64().unwrap() as usize),
            };
            x[0].split(how, int(p, "axis"))
        }
        "slice" => {
            let list =
                |name: &str| -> Vec<i64> { p[name].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect() };
            let start: Vec<usize> = list("start").iter().map(|&s| s as usize).collect();
            let shape: Vec<isize> = list("shape").iter().map(|&s| s as isize).collect();
            one(x[0].slice(&start, &shape))
        }
        "erf" => one(x[0].erf()),
        "gelu" => one(x[0].gelu(p["approximate"].as_bool().unwrap())),
        "silu" => one(x[0].silu()),
        "softplus" => one(x[0].softplus()),
        "leaky_relu" => one(x[0].leaky_relu(p["negative_slope"].as_f64().unwrap())),
        "elu" => one(x[0].elu(p["alpha"].as_f64().unwrap())),
        "rsqrt" => one(x[0].rsqrt()),
        "relu6" => one(x[0].relu6()),
        "log_sigmoid" => one(x[0].log_sigmoid()),
        "var" => one(x[0].var(axes(&p["axis"]), keepdims)),
        "std" => one(x[0].std(axes(&p["axis"]), keepdims)),
        "moments" => x[0].moments(axes(&p["axes"]), keepdims).map(|(m, v)| vec![m, v]),
        "logsumexp" => one(x[0].logsumexp(axes(&p["axis"]), keepdims)),
        other => panic!("no dispatch for {other}"),
    }
}

/// Asserts `got` equals the fixture tensor `want` in shape and, within the tolerance, in value.
pub(crate) fn assert_close(case: &str, what: &str, got: &Tensor, want: &Value) {
    let want = tensor(want);
    assert_eq!(got.dims(), want.dims(), "{case}: {what} shape");
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!((a - b).abs() <= ABS + REL * b.abs(), "{case}: {what}[{i}] = {a}, jax {b}");
    }
}

#[test]
fn forward_values_match_jax() {
    let cases = cases();
    assert_eq!(cases.len(), 39, "every case of the ops this file owns");
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let inputs: Vec<Tensor> = case["inputs"].as_array().unwrap().iter().map(tensor).collect();
        let outputs = run(case["op"].as_str().unwrap(), &case["params"], &inputs).unwrap();
        let want = case["outputs"].as_array().unwrap();
        assert_eq!(outputs.len(), want.len(), "{name}: number of outputs");
        for (k, (got, want)) in outputs.iter().zip(want).enumerate() {
            assert_eq!(got.dtype(), DType::Float32, "{name}: output {k} dtype");
            assert_close(name, &format!("output {k}"), got, want);
        }
    }
}

#[test]
fn erf_is_xlas_float32_approximation_bit_for_bit() {
    let case = cases().into_iter().find(|c| c["name"] == "erf").unwrap();
    let x = tensor(&case["inputs"][0]);
    let got = x.erf().unwrap().to_vec::<f32>().unwrap();
    let want = tensor(&case["outputs"][0]).to_vec::<f32>().unwrap();
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        assert_eq!(a.to_bits(), b.to_bits(), "erf at {}: {a} vs jax {b}", x.to_f64_vec()[i]);
    }
}

#[test]
fn vjps_match_jax() {
    let mut checked = 0;
    for case in cases().iter().filter(|c| c.get("vjp").is_some()) {
        let name = case["name"].as_str().unwrap();
        let op = case["op"].as_str().unwrap();
        let inputs: Vec<Tensor> = case["inputs"].as_array().unwrap().iter().map(tensor).collect();
        let cotangents: Vec<Tensor> = case["cotangents"].as_array().unwrap().iter().map(tensor).collect();
        let out = ValueAndGrad::new()
            .call(StateStore::new(), |scope| {
                // Float inputs are watched (their VJP is checked); integer ones (indices) stay constants.
                let x: Vec<Tensor> = inputs
                    .iter()
                    .map(|t| if t.dtype().is_float() { scope.watch(t) } else { Ok(t.clone()) })
                    .collect::<Result<_>>()?;
                let mut loss = Tensor::scalar(0.0f32);
                for (y, c) in run(op, &case["params"], &x)?.iter().zip(&cotangents) {
                    loss = loss.add(&y.mul(c)?.sum(Axes::All, false)?)?;
                }
                Ok(loss)
            })
            .unwrap();
        let mut watched = out.inputs.iter();
        for (k, want) in case["vjp"].as_array().unwrap().iter().enumerate() {
            if want.is_null() {
                assert!(!inputs[k].dtype().is_float(), "{name}: input {k} has no VJP in the fixture");
                continue;
            }
            assert_close(name, &format!("vjp {k}"), watched.next().unwrap(), want);
            checked += 1;
        }
    }
    assert_eq!(checked, 47, "every float input of every differentiated case");
}
