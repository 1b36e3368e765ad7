//! [`Orthogonal`]: the orthogonal factor of a QR decomposition of a normal matrix
//! (keras/src/initializers/random_initializers.py, Keras 3), with a small Householder QR over `f64`.

use super::{check_float, Initializer};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::random::{self, Key};
use crate::tensor::{Shape, Tensor};

/// A (semi-)orthogonal matrix times `gain`. Keras: `keras.initializers.Orthogonal(gain=1.0)`.
///
/// As Keras: the shape is flattened to `rows = prod(shape[..-1])` by `cols = shape[-1]`; a
/// `max(rows, cols)` by `min(rows, cols)` matrix of standard normal draws ([`random::normal`], float32 for
/// every dtype but float64) is factored as `QR`; each column of `Q` is multiplied by the sign of `R`'s
/// diagonal, which makes the factor unique; `Q` is transposed when `rows < cols`, reshaped and scaled by
/// `gain`. The QR is Householder's, in float64 (Keras factors in the variable's dtype), and the result is
/// rounded once to the dtype. A zero on `R`'s diagonal (probability zero) counts as positive where Keras's
/// `sign` would zero the column.
///
/// Cost: O(max(rows, cols) * min(rows, cols)^2), on the calling thread.
///
/// # Examples
/// ```
/// use purestate::{init::{Initializer, Orthogonal}, random::Key, DType, Shape};
/// let q = Orthogonal::default().initialize(&Shape::from([4, 3]), DType::Float64, Key::new(0))?.to_vec::<f64>()?;
/// // the columns are orthonormal: QᵀQ = I
/// for (a, b) in [(0, 0), (0, 1), (1, 2), (2, 2)] {
///     let dot: f64 = (0..4).map(|r| q[r * 3 + a] * q[r * 3 + b]).sum();
///     assert!((dot - if a == b { 1.0 } else { 0.0 }).abs() < 1e-12);
/// }
/// # Ok::<(), purestate::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Orthogonal {
    /// Factor applied to the orthogonal matrix (default 1).
    pub gain: f64,
}

impl Orthogonal {
    /// An orthogonal matrix times `gain`.
    pub fn new(gain: f64) -> Self {
        Orthogonal { gain }
    }
}

impl Default for Orthogonal {
    fn default() -> Self {
        Orthogonal::new(1.0)
    }
}

/// # Errors
/// [`Error::UnsupportedDType`] for a non-float dtype; [`Error::InvalidShape`] for a shape of rank below 2 or
/// whose size overflows; [`Error::InvalidArgument`] for a non-finite gain.
impl Initializer for Orthogonal {
    fn initialize(&self, shape: &Shape, dtype: DType, key: Key) -> Result<Tensor> {
        check_float(self.name(), dtype)?;
        let Some((&cols, leading)) = shape.dims().split_last().filter(|(_, leading)| !leading.is_empty()) else {
            return Err(Error::InvalidShape {
                op: "Orthogonal",
                shape: shape.clone(),
                reason: "an orthogonal matrix needs a shape of rank 2 or more".into(),
            });
        };
        if !self.gain.is_finite() {
            return Err(Error::InvalidArgument {
                op: "Orthogonal",
                arg: "gain",
                reason: format!("{} is not finite", self.gain),
            });
        }
        let overflow = || Error::InvalidShape {
            op: "Orthogonal",
            shape: shape.clone(),
            reason: "the number of elements overflows".into(),
        };
        let rows = leading.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(overflow)?;
        rows.checked_mul(cols).filter(|&n| n <= isize::MAX as usize).ok_or_else(overflow)?;
        let (m, n) = (rows.max(cols), rows.min(cols));
        let draw_dtype = if dtype == DType::Float64 { DType::Float64 } else { DType::Float32 };
        // Row-major (m, n) normal draws, transposed into column-major storage for the QR.
        let normal = random::normal(key, [m, n], draw_dtype, 0.0, 1.0)?.to_f64_vec();
        let mut a = vec![0.0; m * n];
        for r in 0..m {
            for c in 0..n {
                a[c * m + r] = normal[r * n + c];
            }
        }
        let q = orthonormal_factor(&mut a, m, n);
        let gain = self.gain;
        // Element (r, c) of the (rows, cols) result: Q[r][c] when rows >= cols, else Qᵀ[r][c] = Q[c][r].
        let value = |i: usize| {
            let (r, c) = (i / cols, i % cols);
            gain * if rows >= cols { q[c * m + r] } else { q[r * m + c] }
        };
        Ok(Tensor::from_fn(shape, dtype, value))
    }
    fn name(&self) -> &'static str {
        "Orthogonal"
    }
}

/// The `m` by `n` (m >= n) factor `Q` of `A = QR` with `R`'s diagonal made non-negative, column-major.
/// `a` is `A`, column-major; it is overwritten. Householder reflections, O(m n^2).
fn orthonormal_factor(a: &mut [f64], m: usize, n: usize) -> Vec<f64> {
    let mut reflectors: Vec<(Vec<f64>, f64)> = Vec::with_capacity(n);
    let mut signs = vec![1.0; n];
    for k in 0..n {
        let column = &a[k * m + k..(k + 1) * m];
        let norm = column.iter().map(|x| x * x).sum::<f64>().sqrt();
        // R[k][k] = alpha, of the sign opposite to the pivot to avoid cancellation.
        let alpha = if column[0] > 0.0 { -norm } else { norm };
        let mut v = column.to_vec();
        v[0] -= alpha;
        let v_norm2 = v.iter().map(|x| x * x).sum::<f64>();
        if alpha < 0.0 {
            signs[k] = -1.0;
        }
        if v_norm2 > 0.0 {
            for j in k + 1..n {
                reflect(&mut a[j * m + k..(j + 1) * m], &v, v_norm2);
            }
        }
        reflectors.push((v, v_norm2));
    }
    // Q = H_0 H_1 ... H_{n-1} applied to the first n columns of the identity. H_k touches rows k.. only, so
    // the columns j < k are still unit vectors when H_k is applied.
    let mut q = vec![0.0; m * n];
    for j in 0..n {
        q[j * m + j] = 1.0;
    }
    for (k, (v, v_norm2)) in reflectors.iter().enumerate().rev() {
        if *v_norm2 > 0.0 {
            for j in k..n {
                reflect(&mut q[j * m + k..(j + 1) * m], v, *v_norm2);
            }
        }
    }
    for (j, sign) in signs.iter().enumerate() {
        if *sign < 0.0 {
            q[j * m..(j + 1) * m].iter_mut().for_each(|x| *x = -*x);
        }
    }
    q
}

/// `x -= 2 v (v·x) / (v·v)`: the Householder reflection through the hyperplane orthogonal to `v`.
fn reflect(x: &mut [f64], v: &[f64], v_norm2: f64) {
    let factor = 2.0 * x.iter().zip(v).map(|(a, b)| a * b).sum::<f64>() / v_norm2;
    x.iter_mut().zip(v).for_each(|(a, b)| *a -= factor * b);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// max |QᵀQ - I| over the columns of a column-major m by n matrix.
    fn orthogonality_error(q: &[f64], m: usize, n: usize) -> f64 {
        let mut worst = 0.0f64;
        for a in 0..n {
            for b in 0..n {
                let dot: f64 = (0..m).map(|r| q[a * m + r] * q[b * m + r]).sum();
                worst = worst.max((dot - if a == b { 1.0 } else { 0.0 }).abs());
            }
        }
        worst
    }

    #[test]
    fn factor_is_orthonormal_with_positive_r_diagonal() {
        let (m, n) = (7, 4);
        let a0: Vec<f64> =
            (0..m * n).map(|i| ((i * 37 % 11) as f64 - 5.0) / 3.0 + if i % 5 == 0 { 2.0 } else { 0.0 }).collect();
        let q = orthonormal_factor(&mut a0.clone(), m, n);
        assert!(orthogonality_error(&q, m, n) < 1e-13);
        // R = QᵀA is upper triangular with a positive diagonal.
        for i in 0..n {
            for j in 0..n {
                let r: f64 = (0..m).map(|k| q[i * m + k] * a0[j * m + k]).sum();
                if i > j {
                    assert!(r.abs() < 1e-12, "R[{i}][{j}] = {r}");
                } else if i == j {
                    assert!(r > 0.0);
                }
            }
        }
    }

    #[test]
    fn refuses_vectors_and_integers() {
        let key = Key::new(0);
        let err = Orthogonal::default().initialize(&Shape::from([5]), DType::Float32, key).unwrap_err();
        assert!(matches!(err, Error::InvalidShape { op: "Orthogonal", .. }));
        let err = Orthogonal::default().initialize(&Shape::from([2, 2]), DType::Int64, key).unwrap_err();
        assert!(matches!(err, Error::UnsupportedDType { .. }));
    }

    #[test]
    fn wide_and_empty_shapes() {
        let key = Key::new(3);
        let t = Orthogonal::new(2.0).initialize(&Shape::from([3, 5]), DType::Float64, key).unwrap();
        let v = t.to_vec::<f64>().unwrap();
        // rows are orthogonal with norm 2
        for a in 0..3 {
            for b in 0..3 {
                let dot: f64 = (0..5).map(|c| v[a * 5 + c] * v[b * 5 + c]).sum();
                assert!((dot - if a == b { 4.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        let empty = Orthogonal::default().initialize(&Shape::from([0, 4]), DType::Float32, key).unwrap();
        assert_eq!(empty.dims(), &[0, 4]);
    }
}
