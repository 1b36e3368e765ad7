//! Promotion against Keras's own answers (tests/fixtures/result_type.json, made by tools/keras_dtypes.py),
//! and a table of operators' result dtypes and values.
//!
//! The fixture holds, for every case, Keras 3's answer on the JAX backend (`keras`, which narrows 64-bit
//! results to 32 bits) and the answer of its promotion lattice before that narrowing (`lattice`). purestate
//! keeps 64-bit types, so it must equal `lattice`; narrowing ours with the fixture's own table must give
//! `keras`.

use std::collections::HashMap;

use purestate::dtype::{result_type, DType, Operand};
use purestate::tensor::Idx;
use purestate::{Error, Tensor};

fn operand(name: &str) -> Operand {
    match name {
        "int" => Operand::Int,
        "float" => Operand::Float,
        dtype => Operand::Tensor(dtype.parse().unwrap()),
    }
}

#[test]
fn result_type_matches_keras_lattice_for_every_pair() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/result_type.json")).unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
    let narrowing: HashMap<String, String> = serde_json::from_value(fixture["narrowing"].clone()).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() > 700, "every pair, under three floatx values");
    let mut mismatches = Vec::new();
    for case in cases {
        let floatx: DType = case["floatx"].as_str().unwrap().parse().unwrap();
        let names: Vec<&str> = case["operands"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        let operands: Vec<Operand> = names.iter().map(|n| operand(n)).collect();
        let ours = result_type(&operands, floatx).name();
        let narrowed = narrowing.get(ours).map_or(ours, String::as_str);
        if ours != case["lattice"].as_str().unwrap() || narrowed != case["keras"].as_str().unwrap() {
            mismatches.push(format!("{names:?} floatx={floatx}: ours {ours}, keras {case}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// `(expression, expected dtype, expected values as f64)`.
fn check(t: Tensor, dtype: DType, values: &[f64]) {
    assert_eq!(t.dtype(), dtype, "{t:?}");
    let got = t.to_f64_vec();
    assert_eq!(got.len(), values.len(), "{t:?}");
    for (g, v) in got.iter().zip(values) {
        assert!(g == v || (g.is_nan() && v.is_nan()), "{t:?}: expected {values:?}");
    }
}

#[test]
fn operator_table() {
    use DType::*;
    let i = Tensor::from([-7i32, 7, -8]);
    let f = Tensor::from([-7.0f32, 7.0, 0.0]);
    let u = Tensor::from([7u8, 250, 0]);
    check(i.floor_div(2).unwrap(), Int32, &[-4.0, 3.0, -4.0]);
    check(i.floor_div(-2).unwrap(), Int32, &[3.0, -4.0, 4.0]);
    check(i.rem(3).unwrap(), Int32, &[2.0, 1.0, 1.0]);
    check(i.rem(-3).unwrap(), Int32, &[-1.0, -2.0, -2.0]);
    check(f.floor_div(2.0).unwrap(), Float32, &[-4.0, 3.0, 0.0]);
    check(f.rem(-3.0).unwrap(), Float32, &[-1.0, -2.0, 0.0]);
    check(f.div(0.0).unwrap(), Float32, &[f64::NEG_INFINITY, f64::INFINITY, f64::NAN]);
    check(f.floor_div(0.0).unwrap(), Float32, &[f64::NEG_INFINITY, f64::INFINITY, f64::NAN]);
    check(i.div(2).unwrap(), Float32, &[-3.5, 3.5, -4.0]);
    check(u.add(6).unwrap(), Uint8, &[13.0, 0.0, 6.0]);
    check(u.add(Tensor::from([1i8, 1, 1])).unwrap(), Int16, &[8.0, 251.0, 1.0]);
    check(u.mul(0.5).unwrap(), Float32, &[3.5, 125.0, 0.0]);
    check(i.pow(2).unwrap(), Int32, &[49.0, 49.0, 64.0]);
    check(f.maximum(Tensor::from([0.0f64])).unwrap(), Float64, &[0.0, 7.0, 0.0]);
    check(Tensor::from([1i64]).add(Tensor::from([1i64])).unwrap(), Int64, &[2.0]);
    check(Tensor::from([1.0f64]).add(Tensor::from([1.0f64])).unwrap(), Float64, &[2.0]);
    check(Tensor::from([half::f16::ONE]).add(Tensor::from([half::bf16::ONE])).unwrap(), Float32, &[2.0]);
    check(Tensor::from([half::bf16::ONE]).mul(3.0).unwrap(), Bfloat16, &[3.0]);
    check(Tensor::from([true, false]).add(1).unwrap(), Int32, &[2.0, 1.0]);
    check(Tensor::from([1u64]).add(Tensor::from([1i64])).unwrap(), Float32, &[2.0]);
    check(i.less(0).unwrap(), Bool, &[1.0, 0.0, 1.0]);
    check(i.bitand(0xF).unwrap(), Int32, &[9.0, 7.0, 8.0]);
    check(i.abs().unwrap(), Int32, &[7.0, 7.0, 8.0]);
    check(f.sign().unwrap(), Float32, &[-1.0, 1.0, 0.0]);
    check(Tensor::from([0.5f32, 1.5, 2.5, -1.5]).round().unwrap(), Float32, &[0.0, 2.0, 2.0, -2.0]);
    check(&i * 2.0, Float32, &[-14.0, 14.0, -16.0]);
    check(2 - &i, Int32, &[9.0, -5.0, 10.0]);
}

#[test]
fn errors_name_the_operation_and_values() {
    let i = Tensor::from([1i32, 2]);
    let err = i.rem(0).unwrap_err();
    assert!(matches!(err, Error::DivisionByZero { op: "mod", dtype: DType::Int32 }));
    let err = i.add(Tensor::from([1i32, 2, 3])).unwrap_err();
    assert_eq!(err.to_string(), "add: shapes (2,) and (3,) do not broadcast");
    let err = Tensor::from([1.5f32]).bitor(1).unwrap_err();
    assert_eq!(err.to_string(), "bitwise_or: unsupported dtype float32");
    assert!(matches!(Tensor::from([1.0f32]).to_f64(), Err(Error::NotScalar { .. })));
}

#[test]
fn variables_in_expressions_read_naturally() {
    // A value read from a store is a `Tensor`; expressions combine borrowed values without copies.
    let w = Tensor::from([[1.0f32, 2.0], [3.0, 4.0]]);
    let b = Tensor::from([0.5f32, -0.5]);
    let x = Tensor::from([[1.0f32, 1.0]]);
    let y = (x.matmul(&w).unwrap() + &b).relu().unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![4.5, 5.5]);
}

/// A float32 tensor of `dims` with values `(i * 5) % 11 / 7 - 5 / 7` (in `[-0.72, 0.72]`): neighbours differ
/// and few values are exact in binary, so products round and a change in the order of additions could show.
fn inexact(dims: &[usize]) -> Tensor {
    let n: usize = dims.iter().product();
    Tensor::from_shape_vec(dims, (0..n).map(|i| ((i * 5) % 11) as f32 / 7.0 - 5.0 / 7.0).collect()).unwrap()
}

/// An operand: `inexact(dims)` seen through `view` (a transpose, a permutation, a strided slice).
type Viewed<'a> = (&'a [usize], &'a dyn Fn(&Tensor) -> Tensor);

/// Asserts that the product of two viewed operands equals the product of their contiguous copies, bit for
/// bit, in every dtype that takes its own path (float32 and float64 through `dot` on strided views, float16
/// through float32, int32 and bool through the stacked loop), and returns the float32 product. The views are
/// taken after the cast, since a cast copies into standard layout.
fn same_as_contiguous((da, va): Viewed<'_>, (db, vb): Viewed<'_>) -> Tensor {
    let mut float32 = None;
    for dtype in [DType::Float32, DType::Float64, DType::Float16, DType::Int32, DType::Bool] {
        // Scaled by 7 so that the int32 and bool operands are small integers, not all zeros.
        let operand = |dims: &[usize]| {
            let t = inexact(dims);
            if dtype == DType::Float32 {
                t
            } else {
                t.mul(7.0f32).unwrap().cast(dtype)
            }
        };
        let (a, b) = (va(&operand(da)), vb(&operand(db)));
        let (ca, cb) = (a.to_standard_layout(), b.to_standard_layout());
        assert!(!ca.ptr_eq(&a) || !cb.ptr_eq(&b), "{dtype}: both operands contiguous: {:?} @ {:?}", a.dims(), b.dims());
        let (got, want) = (a.matmul(&b).unwrap(), ca.matmul(&cb).unwrap());
        assert!(got.bit_eq(&want), "{dtype}: {:?} @ {:?}: {got:?} != {want:?}", a.dims(), b.dims());
        float32.get_or_insert(got);
    }
    float32.unwrap()
}

fn plain(t: &Tensor) -> Tensor {
    t.clone()
}

fn transposed(t: &Tensor) -> Tensor {
    t.transpose()
}

/// The last two axes swapped.
fn swapped(t: &Tensor) -> Tensor {
    let n = t.ndim() as isize;
    let mut axes: Vec<isize> = (0..n).collect();
    axes.swap(t.ndim() - 2, t.ndim() - 1);
    t.permute(&axes).unwrap()
}

/// Every other element of a 1-D tensor (stride 2).
fn every_other(t: &Tensor) -> Tensor {
    t.index(&[Idx::slice(None, None, 2)]).unwrap()
}

/// Rows reversed, every other column from the last (negative strides).
fn reversed(t: &Tensor) -> Tensor {
    t.index(&[Idx::slice(None, None, -1), Idx::slice(None, None, -2)]).unwrap()
}

/// `x @ y` for 2-D `x` and `y`, written out in float64.
fn product(x: &Tensor, y: &Tensor) -> Vec<f64> {
    let ((m, k), n) = ((x.dims()[0], x.dims()[1]), y.dims()[1]);
    let (xv, yv) = (x.to_f64_vec(), y.to_f64_vec());
    (0..m * n).map(|ij| (0..k).map(|p| xv[(ij / n) * k + p] * yv[p * n + ij % n]).sum()).collect()
}

// Regression: `ops::matmul` once reshaped every operand's view without copying it and panicked on a transposed
// one (`ShapeError/IncompatibleLayout`); matrices now go to `dot` as strided views and stacks through a
// standard-layout copy.
#[test]
fn matmul_of_transposed_and_strided_operands_equals_the_contiguous_product() {
    let p: &dyn Fn(&Tensor) -> Tensor = &plain;
    let t: &dyn Fn(&Tensor) -> Tensor = &transposed;
    let s: &dyn Fn(&Tensor) -> Tensor = &swapped;
    // 2-D x 2-D: left, right or both transposed (a (3, 4) @ (4, 2) product each time); the values too, not
    // only the layouts' agreement: float32 against the product written out in float64, which differ by at most
    // 4 additions' rounding of terms below 0.52 each, 4 * 2^-24 * 2.1 < 1e-6.
    for (a, b) in [((&[4, 3][..], t), (&[4, 2][..], p)), ((&[3, 4], p), (&[2, 4], t)), ((&[4, 3], t), (&[2, 4], t))] {
        let z = same_as_contiguous(a, b);
        assert_eq!(z.dims(), &[3, 2]);
        let (x, y) = ((a.1)(&inexact(a.0)), (b.1)(&inexact(b.0)));
        for (got, want) in z.to_f64_vec().iter().zip(product(&x, &y)) {
            assert!((got - want).abs() <= 1e-6, "{got} vs {want}");
        }
    }
    // A matrix times its own transpose (one buffer, two layouts).
    let a = inexact(&[3, 4]);
    assert!(a.matmul(&a.transpose()).unwrap().bit_eq(&a.matmul(&a.transpose().to_standard_layout()).unwrap()));
    // Negative strides: rows reversed and every other column from the last.
    assert_eq!(same_as_contiguous((&[3, 4], &reversed), (&[2, 5], p)).dims(), &[3, 5]);
    assert_eq!(same_as_contiguous((&[5, 3], p), (&[3, 4], &reversed)).dims(), &[5, 2]);

    // 1-D with a transposed 2-D operand, on either side, and a strided 1-D operand.
    assert_eq!(same_as_contiguous((&[4], p), (&[2, 4], t)).dims(), &[2]);
    assert_eq!(same_as_contiguous((&[4, 3], t), (&[4], p)).dims(), &[3]);
    assert_eq!(same_as_contiguous((&[8], &every_other), (&[4, 2], p)).dims(), &[2]);
    assert_eq!(same_as_contiguous((&[4, 3], t), (&[8], &every_other)).dims(), &[3]);

    // Batched 3-D with the last two axes swapped, on either side and both, and broadcast against 2-D and 1-D.
    assert_eq!(same_as_contiguous((&[2, 4, 3], s), (&[2, 4, 5], p)).dims(), &[2, 3, 5]);
    assert_eq!(same_as_contiguous((&[2, 3, 4], p), (&[2, 5, 4], s)).dims(), &[2, 3, 5]);
    assert_eq!(same_as_contiguous((&[2, 4, 3], s), (&[2, 5, 4], s)).dims(), &[2, 3, 5]);
    assert_eq!(same_as_contiguous((&[2, 4, 3], s), (&[2, 4], t)).dims(), &[2, 3, 2]);
    assert_eq!(same_as_contiguous((&[4, 3], t), (&[2, 5, 4], s)).dims(), &[2, 3, 5]);
    assert_eq!(same_as_contiguous((&[4], p), (&[2, 5, 4], s)).dims(), &[2, 5]);
    assert_eq!(same_as_contiguous((&[2, 1, 4, 3], s), (&[3, 5, 4], s)).dims(), &[2, 3, 3, 5]);
    // The whole stack transposed (every axis reversed): (4, 3, 2) @ (2, 5).
    assert_eq!(same_as_contiguous((&[2, 3, 4], t), (&[2, 5], p)).dims(), &[4, 3, 5]);
    // Stacks of larger products (over 256 outputs each: the kernel's blocked path, which reads the operands in
    // place): attention's heads, (batch, seq, heads, depth) seen as (batch, heads, seq, depth), times its keys
    // seen as (batch, heads, depth, seq), and a broadcast stack.
    let heads: &dyn Fn(&Tensor) -> Tensor = &|t: &Tensor| t.permute(&[0, 2, 1, 3]).unwrap();
    let keys: &dyn Fn(&Tensor) -> Tensor = &|t: &Tensor| t.permute(&[0, 2, 3, 1]).unwrap();
    assert_eq!(same_as_contiguous((&[2, 24, 3, 20], heads), (&[2, 24, 3, 20], keys)).dims(), &[2, 3, 24, 24]);
    assert_eq!(same_as_contiguous((&[3, 1, 20, 30], s), (&[2, 20, 25], p)).dims(), &[3, 2, 30, 25]);
    // Each batch entry of a swapped stack is the 2-D product of its matrices.
    let (xb, yb) = (swapped(&inexact(&[2, 4, 3])), swapped(&inexact(&[2, 5, 4])));
    let z = xb.matmul(&yb).unwrap();
    for i in 0..2 {
        let (xi, yi) = (xb.index(&[Idx::I(i)]).unwrap(), yb.index(&[Idx::I(i)]).unwrap());
        assert!(z.index(&[Idx::I(i)]).unwrap().bit_eq(&xi.matmul(&yi).unwrap()), "batch entry {i}");
    }

    // A transposed operand with the wrong inner dimension is an error, not a panic.
    let at = inexact(&[4, 3]).transpose();
    for (x, y) in [(&at, &at), (&xb, &xb), (&inexact(&[4]), &at)] {
        let err = x.matmul(y).unwrap_err();
        assert!(matches!(err, Error::InvalidShape { op: "matmul", .. }), "{err}");
    }
}

#[test]
fn matmul_gradient_through_a_transposed_operand_equals_the_contiguous_one() {
    use purestate::{grad, StateStore, VariableSpec};
    let mut state = StateStore::new();
    // `w` is stored transposed itself (as a checkpoint or a caller may leave it); `u` and `v` are contiguous.
    let w = state.create(VariableSpec::new(inexact(&[3, 4]).transpose()).name("w")).unwrap(); // (4, 3)
    let u = state.create(VariableSpec::new(inexact(&[2, 4, 3])).name("u")).unwrap();
    let v = state.create(VariableSpec::new(inexact(&[4]).add(1.0f32).unwrap()).name("v")).unwrap();
    assert!(!state.get(&w).unwrap().to_standard_layout().ptr_eq(&state.get(&w).unwrap()));
    let x = inexact(&[5, 4]);
    let y = inexact(&[5, 3]);
    let weights = |dims: &[usize]| inexact(dims).mul(0.5f32).unwrap().add(0.25f32).unwrap();
    // One sum of weighted products, each with a transposed or permuted operand. With `contiguous`, every such
    // operand goes through `to_standard_layout` first, so the two runs differ only in the operands' layouts.
    let run = |contiguous: bool| {
        let c = move |t: Tensor| if contiguous { t.to_standard_layout() } else { t };
        grad::value_and_grad(&state, |s| {
            let (w, u, v) = (s.get(&w)?, s.get(&u)?, s.get(&v)?);
            let terms = [
                x.matmul(&c(w.clone()))?.mul(weights(&[5, 3]))?, // stored transposed, used as it is
                c(w.transpose()).matmul(&c(x.transpose()))?.mul(weights(&[3, 5]))?, // both transposed
                v.matmul(&c(w.clone()))?.mul(weights(&[3]))?,    // 1-D x transposed 2-D
                c(w.transpose()).matmul(&v)?.mul(weights(&[3]))?, // transposed 2-D x 1-D
                c(u.permute(&[0, 2, 1])?).matmul(&c(x.transpose()))?.mul(weights(&[2, 3, 5]))?, // batched left
                y.matmul(&c(u.permute(&[0, 2, 1])?))?.mul(weights(&[2, 5, 4]))?, // batched right, broadcast
            ];
            let mut total = Tensor::scalar(0.0f32);
            for t in terms {
                total = total.add(&t.sum(None, false)?)?;
            }
            Ok(total)
        })
        .unwrap()
    };
    let (loss_strided, strided) = run(false);
    let (loss_contiguous, contiguous) = run(true);
    assert!(loss_strided.bit_eq(&loss_contiguous), "{loss_strided:?} != {loss_contiguous:?}");
    for var in [&w, &u, &v] {
        let (got, want) = (strided.get(var).unwrap(), contiguous.get(var).unwrap());
        assert_eq!(got.dims(), var.shape().dims(), "`{}`", var.path());
        assert!(got.bit_eq(want), "`{}`: {got:?} != {want:?}", var.path());
        assert!(got.to_f64_vec().iter().all(|g| *g != 0.0), "`{}` reached the loss: {got:?}", var.path());
    }
    // One gradient written out: d/dv of sum(k * (v @ w)) + sum(k * (wᵀ @ v)) is 2 (w @ k), k = weights(3);
    // float32 rounding of 3-term sums below 1.5 and one addition, well under 1e-6.
    let k = weights(&[3]).reshape(&[3, 1]).unwrap();
    let expected = product(&state.get(&w).unwrap().to_standard_layout(), &k);
    for (got, want) in strided.get(&v).unwrap().to_f64_vec().iter().zip(expected) {
        assert!((got - 2.0 * want).abs() <= 1e-6, "{got} vs {}", 2.0 * want);
    }
}

#[test]
fn a_one_element_or_tiled_operand_beside_a_tiled_one_broadcasts() {
    // Regression: `(1, 1) * (3,)` reached an unreachable branch of the binary kernel (a panic).
    let one = Tensor::from([[2.0f32]]);
    let row = Tensor::from([1.0f32, 2.0, 3.0]);
    assert_eq!(one.mul(&row).unwrap().to_vec::<f32>().unwrap(), [2.0, 4.0, 6.0]);
    assert_eq!(row.mul(&one).unwrap().to_vec::<f32>().unwrap(), [2.0, 4.0, 6.0]);
    assert_eq!(one.mul(&row).unwrap().dims(), [1, 3]);
    let col = Tensor::from([[1.0f32], [10.0]]);
    let tiled = col.mul(&row).unwrap(); // (2, 1) * (3,): both broadcast
    assert_eq!(tiled.to_vec::<f32>().unwrap(), [1.0, 2.0, 3.0, 10.0, 20.0, 30.0]);
    let big = Tensor::from_fn([1, 600_000].as_slice(), DType::Float32, |i| (i % 7) as f64);
    let scaled = one.mul(&big).unwrap(); // above the kernels' threshold
    assert_eq!(scaled.to_vec::<f32>().unwrap()[13], 12.0);
}
