//! The pieces a transformer adds over an MLP: position embeddings, the GELU activation of a Dense layer, and
//! Dense layers over a batch of sequences (one GEMM over all rows, forward and backward).

use purestate::grad::ValueAndGrad;
use purestate::layers::{self, Dense, Layer, PositionEmbedding};
use purestate::{DType, Error, Scope, StateStore, Tensor};
use rayon::ThreadPoolBuilder;

fn data(dims: &[usize], seed: u64) -> Tensor {
    let n: usize = dims.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect();
    Tensor::from_shape_vec(dims, v).unwrap()
}

#[test]
fn position_embedding_adds_the_first_rows_and_their_gradient_only() {
    let mut state = StateStore::new();
    let mut pos = PositionEmbedding::new(6);
    assert_eq!(layers::build(&mut pos, &mut state, &[6, 3]).unwrap(), [6, 3]);
    let table = pos.embeddings().unwrap().clone();
    assert_eq!((table.path(), state.get(&table).unwrap().dims()), ("position_embedding/embeddings", &[6usize, 3][..]));
    let x = data(&[2, 4, 3], 1);
    let y = pos.call(&mut Scope::new(&state), &x, false).unwrap();
    assert_eq!(y.dims(), [2, 4, 3]);
    let rows = state.get(&table).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), [&rows[..12], &rows[..12]].concat(), "rows 0..4, once per example");
    // d/d table of sum(x + pos(x) * c): every example adds c to rows 0..4; rows 4..6 get nothing.
    let out = ValueAndGrad::new()
        .call(&state, |scope| x.add(&pos.call(scope, &x, true)?.mul(3.0)?)?.sum(None, false))
        .unwrap();
    let g = out.grads.get(&table).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(g, [vec![6.0f32; 12], vec![0.0; 6]].concat());
}

#[test]
fn a_sequence_longer_than_the_position_table_is_a_typed_error() {
    let mut state = StateStore::new();
    let mut pos = PositionEmbedding::new(4).name("pos");
    let err = layers::build(&mut pos.clone(), &mut state.clone(), &[5, 8]).unwrap_err();
    assert!(matches!(&err, Error::LayerInput { layer, .. } if layer == "pos"), "{err}");
    layers::build(&mut pos, &mut state, &[4, 8]).unwrap();
    let err = pos.call(&mut Scope::new(&state), &data(&[2, 5, 8], 2), false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "`pos`: a sequence of 5 positions is longer than the position table of 4, got input shape (2, 5, 8)"
    );
    let err = pos.call(&mut Scope::new(&state), &data(&[2, 3, 7], 2), false).unwrap_err();
    assert!(err.to_string().contains("expected inputs of shape (..., sequence, 8)"), "{err}");
}

#[test]
fn dense_takes_keras_gelu_and_silu_by_name() {
    let mut state = StateStore::new();
    let mut gelu = Dense::new(4).activation("gelu");
    let mut linear = Dense::new(4).name("linear");
    layers::build(&mut gelu, &mut state, &[3]).unwrap();
    layers::build(&mut linear, &mut state, &[3]).unwrap();
    state.assign(linear.kernel().unwrap(), state.get(gelu.kernel().unwrap()).unwrap()).unwrap();
    let x = data(&[5, 3], 3);
    let mut scope = Scope::new(&state);
    let want = linear.call(&mut scope, &x, false).unwrap().gelu(false).unwrap();
    assert!(gelu.call(&mut scope, &x, false).unwrap().bit_eq(&want));
    let mut silu = Dense::new(2).activation("swish");
    layers::build(&mut silu, &mut state, &[3]).unwrap();
    let err = layers::build(&mut Dense::new(2).activation("mish"), &mut state, &[3]).unwrap_err();
    assert!(err.to_string().contains("gelu, silu, swish"), "{err}");
}

/// `x` (batch, T, K) through a Dense kernel (K, N), and the gradients of the kernel and of `x`.
fn sequence_dense(x: &Tensor, w: &Tensor) -> (Tensor, Tensor, Tensor) {
    let mut state = StateStore::new();
    let kernel = state.create(purestate::VariableSpec::new(w.clone()).name("kernel")).unwrap();
    let c = data(&[x.dims()[0], x.dims()[1], w.dims()[1]], 9);
    let out = ValueAndGrad::new()
        .call(&state, |scope| {
            let xs = scope.watch(x)?;
            xs.matmul(&scope.get(&kernel)?)?.mul(&c)?.sum(None, false)
        })
        .unwrap();
    let gw = out.grads.get(&kernel).unwrap().clone();
    (x.matmul(w).unwrap(), gw, out.inputs[0].clone())
}

#[test]
fn dense_over_sequences_is_one_product_of_all_rows_and_bit_identical_across_pools() {
    let (x, w) = (data(&[6, 40, 48], 4), data(&[48, 72], 5));
    let (y, gw, gx) = sequence_dense(&x, &w);
    assert_eq!(y.dims(), [6, 40, 72]);
    // The forward is the product of the stacked rows.
    let flat = x.reshape(&[240, 48]).unwrap().matmul(&w).unwrap();
    assert!(y.bit_eq(&flat.reshape(&[6, 40, 72]).unwrap()));
    // The kernel's gradient is x^T @ c over all rows, against a float64 sum.
    let c = data(&[6, 40, 72], 9);
    let (xs, cs, g) = (x.to_f64_vec(), c.to_f64_vec(), gw.to_f64_vec());
    for (k, n) in [(0, 0), (17, 33), (47, 71)] {
        let want: f64 = (0..240).map(|r| xs[r * 48 + k] * cs[r * 72 + n]).sum();
        assert!((g[k * 72 + n] - want).abs() <= 1e-4 * want.abs().max(1.0), "dW[{k}, {n}]");
    }
    assert_eq!(gx.dims(), [6, 40, 48]);
    for threads in [1, 2, 7] {
        let (y2, gw2, gx2) =
            ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| sequence_dense(&x, &w));
        assert!(y2.bit_eq(&y) && gw2.bit_eq(&gw) && gx2.bit_eq(&gx), "{threads} threads");
    }
    // float64 and rank 4 take the same path; an inner-size mismatch is still the matmul's error.
    let x4 = data(&[2, 3, 5, 48], 6).cast(DType::Float64);
    assert_eq!(x4.matmul(&w.cast(DType::Float64)).unwrap().dims(), [2, 3, 5, 72]);
    assert!(matches!(x.matmul(&data(&[47, 3], 7)), Err(Error::InvalidShape { .. })));
}
