//! [`matmul`]: matrix products of 1-D, 2-D and batched tensors, with numpy's shape rules.

use half::{bf16, f16};
use ndarray::{Array2, ArrayD, ArrayView2, Axis, Ix3, IxDyn};

use super::num::Num;
use crate::dtype::{result_type, DType};
use crate::error::{Error, Result};
use crate::kernels;
use crate::tensor::{with_dtype, Element, Tensor};

/// The matrix product of `a` and `b` (`keras.ops.matmul`, Python's `@`), with numpy's rules: 2-D times 2-D
/// is the matrix product; a 1-D left operand is a row vector and a 1-D right operand a column vector (the
/// added axis is removed from the result); more dimensions are stacks of matrices whose batch dimensions
/// broadcast.
///
/// The result dtype is the operands' promoted dtype, except int8 times int8 which gives int32 (Keras).
/// float32 and float64 use `ndarray`'s `dot` (matrixmultiply, deterministic); float16 and bfloat16 compute in
/// float32 and round once; integers wrap; bool is or-of-ands. Stacks run in parallel over the batch.
///
/// # Errors
/// [`Error::InvalidShape`] for a 0-d operand or inner dimensions that differ; [`Error::Broadcast`] when the
/// batch dimensions do not broadcast.
///
/// # Examples
/// ```
/// use purestate::{ops::matmul, Tensor};
/// let a = Tensor::from([[1.0f32, 2.0], [3.0, 4.0]]);
/// let v = Tensor::from([1.0f32, 1.0]);
/// assert_eq!(matmul(&a, &v)?.to_vec::<f32>()?, vec![3.0, 7.0]);
/// assert_eq!(matmul(&v, &a)?.dims(), &[2]);
/// assert!(matmul(&a, &Tensor::from([1.0f32, 2.0, 3.0])).is_err());
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    const OP: &str = "matmul";
    if a.trace().is_some() || b.trace().is_some() {
        return match super::trace::hooks([Some(a), Some(b)]) {
            Some(h) => h.matmul(a, b),
            None => matmul(&a.detached(), &b.detached()),
        };
    }
    if a.ndim() == 0 || b.ndim() == 0 {
        let shape = if a.ndim() == 0 { a.shape() } else { b.shape() };
        return Err(Error::InvalidShape { op: OP, shape, reason: "matmul needs at least 1-D operands".into() });
    }
    let dtype = if a.dtype() == DType::Int8 && b.dtype() == DType::Int8 {
        DType::Int32
    } else {
        result_type(&[a.dtype().into(), b.dtype().into()], DType::Float32)
    };
    let (a, b) = (a.cast(dtype), b.cast(dtype));
    if a.ndim() <= 2 && b.ndim() <= 2 {
        // Matrices and vectors go to `dot` as strided views: no copy, even of a transposed operand.
        match dtype {
            DType::Float32 => return matmul_2d::<f32>(&a, &b),
            DType::Float64 => return matmul_2d::<f64>(&a, &b),
            _ => {}
        }
    }
    let mut ad = a.dims().to_vec();
    let mut bd = b.dims().to_vec();
    let (a_vec, b_vec) = (ad.len() == 1, bd.len() == 1);
    if a_vec {
        ad.insert(0, 1);
    }
    if b_vec {
        bd.push(1);
    }
    let (m, k) = (ad[ad.len() - 2], ad[ad.len() - 1]);
    let (k2, n) = (bd[bd.len() - 2], bd[bd.len() - 1]);
    if k != k2 {
        return Err(Error::InvalidShape {
            op: OP,
            shape: a.shape(),
            reason: format!("inner dimensions differ: {} @ {}", a.shape(), b.shape()),
        });
    }
    let batch = kernels::broadcast_shapes(OP, &ad[..ad.len() - 2], &bd[..bd.len() - 2])?;
    let n_batch: usize = batch.iter().product();
    let mut out_dims = batch.clone();
    out_dims.extend([m, n]);
    with_dtype!(dtype, T => {
        let a3 = stack::<T>(&a, &ad, &batch, m, k);
        let b3 = stack::<T>(&b, &bd, &batch, k, n);
        let products = kernels::map_indices(n_batch, n_batch * m * n * k.max(1), |i| {
            T::matmul2(a3.index_axis(Axis(0), i), b3.index_axis(Axis(0), i))
        });
        let mut data = Vec::with_capacity(n_batch * m * n);
        for p in products {
            data.extend(p.iter().copied());
        }
        if a_vec {
            out_dims.remove(out_dims.len() - 2);
        }
        if b_vec {
            out_dims.pop();
        }
        Ok(Tensor::from(ArrayD::from_shape_vec(IxDyn(&out_dims), data).expect("one value per output position")))
    })
}

impl Tensor {
    /// `self @ rhs`; see [`matmul`].
    ///
    /// # Errors
    /// As [`matmul`].
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        matmul(self, rhs)
    }
}

/// The product of two operands of at most two dimensions, from views of their buffers in any layout.
fn matmul_2d<T: MatMul>(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (av, bv) = (a.array::<T>()?.view(), b.array::<T>()?.view());
    let (a2, b2) = (as_2d(av, false), as_2d(bv, true));
    if a2.dim().1 != b2.dim().0 {
        return Err(Error::InvalidShape {
            op: "matmul",
            shape: a.shape(),
            reason: format!("inner dimensions differ: {} @ {}", a.shape(), b.shape()),
        });
    }
    let mut out = T::matmul2(a2, b2).into_dyn();
    if b.ndim() == 1 {
        out = out.remove_axis(Axis(1));
    }
    if a.ndim() == 1 {
        out = out.remove_axis(Axis(0));
    }
    Ok(Tensor::from(out))
}

/// A 1-D view as a row (`col == false`) or column matrix; a 2-D view as it is.
fn as_2d<T>(v: ndarray::ArrayViewD<'_, T>, col: bool) -> ArrayView2<'_, T> {
    let v = if v.ndim() == 1 { v.insert_axis(Axis(usize::from(col))) } else { v };
    v.into_dimensionality::<ndarray::Ix2>().expect("two axes")
}

/// `t` (viewed with `dims`) broadcast to `batch + [rows, cols]`, as a standard-layout `(batch, rows, cols)`.
fn stack<T: Element>(t: &Tensor, dims: &[usize], batch: &[usize], rows: usize, cols: usize) -> ndarray::Array3<T> {
    let standard = t.array::<T>().expect("cast above").as_standard_layout();
    let view = standard.view().into_shape_with_order(IxDyn(dims)).expect("same size");
    let mut full = batch.to_vec();
    full.extend([rows, cols]);
    let b = view.broadcast(IxDyn(&full)).expect("batch dimensions broadcast");
    let n: usize = batch.iter().product();
    b.as_standard_layout()
        .into_owned()
        .into_shape_with_order((n, rows, cols))
        .expect("same size")
        .into_dimensionality::<Ix3>()
        .expect("three axes")
}

/// A 2-D product per element type.
trait MatMul: Element {
    fn matmul2(a: ArrayView2<'_, Self>, b: ArrayView2<'_, Self>) -> Array2<Self>;
}

impl MatMul for f32 {
    fn matmul2(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) -> Array2<f32> {
        a.dot(&b)
    }
}

impl MatMul for f64 {
    fn matmul2(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) -> Array2<f64> {
        a.dot(&b)
    }
}

impl MatMul for f16 {
    fn matmul2(a: ArrayView2<'_, f16>, b: ArrayView2<'_, f16>) -> Array2<f16> {
        a.mapv(f16::to_f32).dot(&b.mapv(f16::to_f32)).mapv(f16::from_f32)
    }
}

impl MatMul for bf16 {
    fn matmul2(a: ArrayView2<'_, bf16>, b: ArrayView2<'_, bf16>) -> Array2<bf16> {
        a.mapv(bf16::to_f32).dot(&b.mapv(bf16::to_f32)).mapv(bf16::from_f32)
    }
}

macro_rules! matmul_num {
    ($($t:ty),*) => {$(
        impl MatMul for $t {
            fn matmul2(a: ArrayView2<'_, $t>, b: ArrayView2<'_, $t>) -> Array2<$t> {
                let (m, k) = a.dim();
                let n = b.dim().1;
                let mut out = Array2::<$t>::default((m, n));
                for i in 0..m {
                    for p in 0..k {
                        let x = a[[i, p]];
                        for j in 0..n {
                            out[[i, j]] = Num::add(out[[i, j]], Num::mul(x, b[[p, j]]));
                        }
                    }
                }
                out
            }
        }
    )*};
}
matmul_num!(bool, i8, i16, i32, i64, u8, u16, u32, u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batched_with_broadcast_batch_dims() {
        let a = Tensor::from_shape_vec([2, 1, 2, 3], (0..12).map(|v| v as f64).collect()).unwrap();
        let b = Tensor::from_shape_vec([3, 3, 1], vec![1.0f64; 9]).unwrap();
        let c = matmul(&a, &b).unwrap();
        assert_eq!(c.dims(), &[2, 3, 2, 1]);
        assert_eq!(c.to_vec::<f64>().unwrap()[..2], [3.0, 12.0]);
        let err = matmul(&Tensor::zeros([2, 2, 2], DType::Float32), &Tensor::zeros([3, 2, 2], DType::Float32));
        assert!(matches!(err, Err(Error::Broadcast { op: "matmul", .. })));
    }

    #[test]
    fn dtypes_follow_keras() {
        let i = Tensor::from([[100i8]]);
        let r = matmul(&i, &i).unwrap();
        assert_eq!((r.dtype(), r.to_vec::<i32>().unwrap()), (DType::Int32, vec![10000]));
        let u = Tensor::from([[1u8]]);
        assert_eq!(matmul(&u, &i).unwrap().dtype(), DType::Int16);
        let t = Tensor::from([[true, false]]);
        assert_eq!(matmul(&t, &Tensor::from([[true], [true]])).unwrap().to_vec::<bool>().unwrap(), vec![true]);
        assert_eq!(matmul(&Tensor::from([1.0f32, 2.0]), &Tensor::from([3.0f32, 4.0])).unwrap().to_f64().unwrap(), 11.0);
        assert!(matches!(matmul(&Tensor::from(1.0f32), &i), Err(Error::InvalidShape { .. })));
    }
}
