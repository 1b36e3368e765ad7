//! Promotion against Keras's own answers (tests/fixtures/result_type.json, made by tools/keras_dtypes.py),
//! and a table of operators' result dtypes and values.
//!
//! The fixture holds, for every case, Keras 3's answer on the JAX backend (`keras`, which narrows 64-bit
//! results to 32 bits) and the answer of its promotion lattice before that narrowing (`lattice`). purestate
//! keeps 64-bit types, so it must equal `lattice`; narrowing ours with the fixture's own table must give
//! `keras`.

use std::collections::HashMap;

use purestate::dtype::{result_type, DType, Operand};
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
