//! Keras losses: values, stability at large logits, and their fused gradients.

use purestate::grad::ValueAndGrad;
use purestate::ops::Axes;
use purestate::{losses, DType, Error, Result, StateStore, Tensor};

/// The loss and its gradient with respect to `pred`.
fn loss_and_grad(pred: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> (f64, Vec<f64>) {
    let out = ValueAndGrad::new().call(StateStore::new(), |s| f(&s.watch(pred)?)).unwrap();
    (out.loss.to_f64().unwrap(), out.inputs[0].to_f64_vec())
}

fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
}

#[test]
fn crossentropies_are_stable_at_large_logits() {
    let z = Tensor::from([[100.0f32, -100.0, 0.0], [-100.0, 100.0, 100.0]]);
    let (loss, g) = loss_and_grad(&z, |z| losses::sparse_categorical_crossentropy(&Tensor::from([1i32, 1]), z, true));
    // Row 0: lse = 100, loss 200; row 1: lse = 100 + ln 2, loss ln 2.
    assert!((loss - (200.0 + 2f64.ln()) / 2.0).abs() < 1e-4, "{loss}");
    assert!(close(&g, &[0.5, -0.5, 0.0, 0.0, -0.25, 0.25], 1e-6), "{g:?}");
    let t = Tensor::from([[0.0f32, 1.0, 0.0], [0.0, 1.0, 0.0]]);
    let (dense, gd) = loss_and_grad(&z, |z| losses::categorical_crossentropy(&t, z, true));
    assert!((dense - loss).abs() < 1e-4 && close(&gd, &g, 1e-6));
    let (bce, gb) = loss_and_grad(&Tensor::from([100.0f32, -100.0]), |z| {
        losses::binary_crossentropy(&Tensor::from([0.0f32, 0.0]), z, true)
    });
    assert!((bce - 50.0).abs() < 1e-4 && close(&gb, &[0.5, 0.0], 1e-6), "{bce} {gb:?}");
}

#[test]
fn soft_targets_give_softmax_times_total_minus_targets() {
    let z = Tensor::from([[1.0f64, 2.0, 3.0]]);
    let t = Tensor::from([[0.5f64, 0.5, 1.0]]); // sums to 2
    let (_, g) = loss_and_grad(&z, |z| losses::categorical_crossentropy(&t, z, true));
    let p = z.softmax(-1).unwrap().to_vec::<f64>().unwrap();
    let want: Vec<f64> = p.iter().zip([0.5, 0.5, 1.0]).map(|(p, t)| p * 2.0 - t).collect();
    assert!(close(&g, &want, 1e-12), "{g:?} vs {want:?}");
}

#[test]
fn binary_crossentropy_from_logits_has_gradient_sigmoid_minus_target_at_zero() {
    let (loss, g) = loss_and_grad(&Tensor::from([[0.0f32, 0.0]]), |z| {
        losses::binary_crossentropy(&Tensor::from([[1.0f32, 0.0]]), z, true)
    });
    assert!((loss - 2f64.ln()).abs() < 1e-6);
    assert_eq!(g, [-0.25, 0.25]); // (0.5 - t) / 2
}

#[test]
fn probabilities_are_normalized_and_clipped_as_keras_does() {
    // Keras: output / sum(output), clip to [1e-7, 1 - 1e-7], log.
    let p = Tensor::from([[2.0f64, 2.0, 0.0]]);
    let (loss, g) = loss_and_grad(&p, |p| losses::sparse_categorical_crossentropy(&Tensor::from([2i32]), p, false));
    assert!((loss + 1e-7f64.ln()).abs() < 1e-9, "{loss}");
    assert_eq!(g[2], 0.0, "clipped below the bound: no gradient");
    let (bce, _) =
        loss_and_grad(&Tensor::from([1.0f64]), |p| losses::binary_crossentropy(&Tensor::from([0.0f64]), p, false));
    assert!((bce + (1e-7f64).ln()).abs() < 1e-6, "{bce}");
}

#[test]
fn mean_squared_error_averages_rows_then_samples() {
    let (loss, g) = loss_and_grad(&Tensor::from([[1.0f32, 3.0], [0.0, 0.0]]), |p| {
        losses::mean_squared_error(&Tensor::from([[0.0f32, 1.0], [0.0, 2.0]]), p)
    });
    assert_eq!(loss, (2.5 + 2.0) / 2.0);
    assert_eq!(g, [0.5, 1.0, 0.0, -1.0]); // 2 (p - t) / 4
}

#[test]
fn half_precision_predictions_compute_in_float32() {
    let z = Tensor::from([[1.0f32, 2.0]]).cast(DType::Float16);
    let out = ValueAndGrad::new()
        .call(StateStore::new(), |s| {
            losses::sparse_categorical_crossentropy(&Tensor::from([0i32]), &s.watch(&z)?, true)
        })
        .unwrap();
    assert_eq!((out.loss.dtype(), out.inputs[0].dtype()), (DType::Float32, DType::Float16));
}

#[test]
fn log_softmax_and_softmax_activations_are_the_tensor_methods() {
    let z = Tensor::from([[1.0f64, 2.0], [3.0, 5.0]]);
    assert!(losses::softmax(&z, -1).unwrap().bit_eq(&z.softmax(-1).unwrap()));
    let (_, g) =
        loss_and_grad(&z, |z| losses::log_softmax(z, -1)?.index(purestate::idx![.., 0])?.sum(Axes::All, false));
    let p = z.softmax(-1).unwrap().to_vec::<f64>().unwrap();
    assert!(close(&g, &[1.0 - p[0], -p[1], 1.0 - p[2], -p[3]], 1e-12));
}

#[test]
fn bad_inputs_are_errors() {
    let z = Tensor::from([[1.0f32, 2.0]]);
    let err = losses::sparse_categorical_crossentropy(&Tensor::from([2i32]), &z, true).unwrap_err();
    assert!(matches!(err, Error::LabelOutOfRange { label: 2, classes: 2, sample: 0, .. }));
    let err = losses::categorical_crossentropy(&Tensor::from([1.0f32, 0.0]), &z, true).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }));
    let err = losses::mean_squared_error(&Tensor::from([1i32]), &Tensor::from([1i32])).unwrap_err();
    assert!(matches!(err, Error::UnsupportedDType { .. }));
    let err = losses::binary_crossentropy(&Tensor::from(1.0f32), &Tensor::from(1.0f32), true).unwrap_err();
    assert!(matches!(err, Error::InvalidShape { .. }));
}

#[test]
fn out_of_range_sparse_labels_name_the_label_and_the_class_count() {
    let z = Tensor::from([[1.0f32, 2.0, 3.0], [0.5, 0.5, 0.5]]);
    for from_logits in [true, false] {
        for (labels, label, sample) in [(Tensor::from([0i32, 3]), 3i64, 1usize), (Tensor::from([-1i64, 0]), -1, 0)] {
            let err = losses::sparse_categorical_crossentropy(&labels, &z, from_logits).unwrap_err();
            assert!(
                matches!(err, Error::LabelOutOfRange { label: l, classes: 3, sample: s, .. } if l == label && s == sample),
                "{err}"
            );
            let mut state = StateStore::new();
            let w = state.create(purestate::VariableSpec::new(z.clone()).name("z")).unwrap();
            let err = ValueAndGrad::new()
                .call(&state, |scope| losses::sparse_categorical_crossentropy(&labels, &scope.get(&w)?, from_logits))
                .unwrap_err();
            assert!(matches!(err, Error::LabelOutOfRange { label: l, classes: 3, .. } if l == label), "{err}");
        }
    }
    let err = losses::sparse_categorical_crossentropy(&Tensor::from([0i32, 7]), &z, true).unwrap_err();
    assert_eq!(err.to_string(), "sparse_categorical_crossentropy: label 7 of sample 1 is out of range for 3 classes");
}
