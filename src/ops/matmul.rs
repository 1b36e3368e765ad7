//! [`matmul`]: matrix products of 1-D, 2-D and batched tensors, with numpy's shape rules.

use half::{bf16, f16};
use ndarray::{Array2, Array3, ArrayView2, ArrayView3, Axis, Ix2, Ix3, IxDyn};

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
/// float32 and float64 run on [`kernels::gemm`] (the `gemm` crate over every rayon thread, bit-identical at
/// any thread count and for any operand layout); float16 and bfloat16 compute in float32 and round once;
/// integers wrap; bool is or-of-ands. Small stacks run in parallel over the batch.
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
        // Matrices and vectors go to the GEMM kernel as strided views: no copy, even of a transposed operand.
        match dtype {
            DType::Float32 => return matmul_2d::<f32>(&a, &b),
            DType::Float64 => return matmul_2d::<f64>(&a, &b),
            _ => {}
        }
    }
    if let Some(z) = rows_times_matrix(&a, &b)? {
        return Ok(z);
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
    let mut out_dims = batch.clone();
    out_dims.extend([m, n]);
    if a_vec {
        out_dims.remove(out_dims.len() - 2);
    }
    if b_vec {
        out_dims.pop();
    }
    match dtype {
        DType::Float32 => return gemm_stack::<f32>(&a, &b, (a_vec, b_vec), &batch, (m, k, n), &out_dims),
        DType::Float64 => return gemm_stack::<f64>(&a, &b, (a_vec, b_vec), &batch, (m, k, n), &out_dims),
        _ => {}
    }
    with_dtype!(dtype, T => {
        let a3 = stack::<T>(&a, &ad, &batch, m, k);
        let b3 = stack::<T>(&b, &bd, &batch, k, n);
        let products = T::batched(a3.view(), b3.view());
        Ok(Tensor::from(products.into_shape_with_order(IxDyn(&out_dims)).expect("one value per output position")))
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
fn matmul_2d<T: MatMul + kernels::gemm::Float>(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (av, bv) = (a.array::<T>()?.view(), b.array::<T>()?.view());
    let (a2, b2) = (as_2d(av, false), as_2d(bv, true));
    if a2.dim().1 != b2.dim().0 {
        return Err(Error::InvalidShape {
            op: "matmul",
            shape: a.shape(),
            reason: format!("inner dimensions differ: {} @ {}", a.shape(), b.shape()),
        });
    }
    let (m, n) = (a2.nrows(), b2.ncols());
    let mut buf = kernels::buffer::alloc::<T>(m * n);
    kernels::gemm::gemm(a2, b2, buf.as_mut_slice());
    let mut out = buf.into_array(Ix2(m, n)).into_dyn();
    if b.ndim() == 1 {
        out = out.remove_axis(Axis(1));
    }
    if a.ndim() == 1 {
        out = out.remove_axis(Axis(0));
    }
    Ok(Tensor::from(out))
}

/// `(..., m, k) @ (k, n)` for float32/float64 (a Dense layer over a batch of sequences): one GEMM of all the
/// leading rows, `(rows, k) @ (k, n)`, instead of one product per batch entry over a copy of `b` broadcast to
/// every entry. `None` when the operands are not of that form.
fn rows_times_matrix(a: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
    if a.ndim() <= 2 || b.ndim() != 2 || !matches!(a.dtype(), DType::Float32 | DType::Float64) {
        return Ok(None);
    }
    let (k, n) = (a.dims()[a.ndim() - 1], b.dims()[1]);
    if k == 0 || k != b.dims()[0] {
        return Ok(None); // the general path reports the mismatch (or handles the empty product)
    }
    let rows = a.size() / k;
    let a2 = a.reshape(&[rows as isize, k as isize])?;
    let z = match a.dtype() {
        DType::Float32 => matmul_2d::<f32>(&a2, b)?,
        _ => matmul_2d::<f64>(&a2, b)?,
    };
    let mut dims: Vec<isize> = a.dims().iter().map(|&d| d as isize).collect();
    *dims.last_mut().expect("rank > 2") = n as isize;
    z.reshape(&dims).map(Some)
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

/// The products of a stack per element type: `(batch, m, k) @ (batch, k, n)` as `(batch, m, n)`.
trait MatMul: Element {
    fn batched(a: ArrayView3<'_, Self>, b: ArrayView3<'_, Self>) -> Array3<Self>;
}

/// A stack of float32 or float64 products, `(..., m, k) @ (..., k, n)` with batch dimensions `batch`: each
/// product reads its two matrices in place (a permuted, transposed or broadcast stack is not copied), through
/// [`kernels::gemm::gemm_each`] into a pooled buffer. `a_vec` / `b_vec`: that operand was 1-D (a
/// row or column vector).
fn gemm_stack<T: kernels::gemm::Float + Element>(
    a: &Tensor,
    b: &Tensor,
    (a_vec, b_vec): (bool, bool),
    batch: &[usize],
    (m, k, n): (usize, usize, usize),
    out_dims: &[usize],
) -> Result<Tensor> {
    let (mut av, mut bv) = (a.array::<T>()?.view(), b.array::<T>()?.view());
    if a_vec {
        av = av.insert_axis(Axis(0));
    }
    if b_vec {
        let last = bv.ndim();
        bv = bv.insert_axis(Axis(last));
    }
    let count: usize = batch.iter().product();
    let mut buf = kernels::buffer::alloc::<T>(count * m * n);
    kernels::gemm::gemm_each(
        count,
        (m, k, n),
        |i| (member(av.clone(), batch, i), member(bv.clone(), batch, i)),
        buf.as_mut_slice(),
    );
    Ok(Tensor::from(buf.into_arrayd(out_dims)))
}

/// Matrix `i` (a flat index over the batch dimensions `batch`, row-major) of a stack `v` whose leading axes
/// broadcast to the trailing ones of `batch` (an axis of length 1 repeats).
fn member<'a, T>(v: ndarray::ArrayViewD<'a, T>, batch: &[usize], i: usize) -> ArrayView2<'a, T> {
    let lead = v.ndim() - 2;
    let mut index = vec![0; batch.len()];
    let mut rest = i;
    for (slot, &d) in index.iter_mut().zip(batch).rev() {
        *slot = rest % d;
        rest /= d;
    }
    let mut v = v;
    for &at in &index[batch.len() - lead..] {
        v = if v.len_of(Axis(0)) == 1 { v.index_axis_move(Axis(0), 0) } else { v.index_axis_move(Axis(0), at) };
    }
    v.into_dimensionality::<Ix2>().expect("two axes left")
}

/// A standard-layout stack's products through [`kernels::gemm::gemm_batched`]: the float16 and bfloat16 path
/// (float32 products of converted copies, rounded once).
fn gemm_copied_stack<T: kernels::gemm::Float>(a: ArrayView3<'_, T>, b: ArrayView3<'_, T>) -> Array3<T> {
    let (batch, m, n) = (a.dim().0, a.dim().1, b.dim().2);
    let mut buf = kernels::buffer::alloc::<T>(batch * m * n);
    kernels::gemm::gemm_batched(a, b, buf.as_mut_slice());
    buf.into_array(Ix3(batch, m, n))
}

/// float32 and float64 go through [`gemm_stack`] before the dtype dispatch; this is the same product.
impl MatMul for f32 {
    fn batched(a: ArrayView3<'_, f32>, b: ArrayView3<'_, f32>) -> Array3<f32> {
        gemm_copied_stack(a, b)
    }
}

impl MatMul for f64 {
    fn batched(a: ArrayView3<'_, f64>, b: ArrayView3<'_, f64>) -> Array3<f64> {
        gemm_copied_stack(a, b)
    }
}

impl MatMul for f16 {
    fn batched(a: ArrayView3<'_, f16>, b: ArrayView3<'_, f16>) -> Array3<f16> {
        gemm_copied_stack(a.mapv(f16::to_f32).view(), b.mapv(f16::to_f32).view()).mapv(f16::from_f32)
    }
}

impl MatMul for bf16 {
    fn batched(a: ArrayView3<'_, bf16>, b: ArrayView3<'_, bf16>) -> Array3<bf16> {
        gemm_copied_stack(a.mapv(bf16::to_f32).view(), b.mapv(bf16::to_f32).view()).mapv(bf16::from_f32)
    }
}

macro_rules! matmul_num {
    ($($t:ty),*) => {$(
        impl MatMul for $t {
            fn batched(a: ArrayView3<'_, $t>, b: ArrayView3<'_, $t>) -> Array3<$t> {
                let (batch, m, k) = a.dim();
                let n = b.dim().2;
                let products = kernels::map_indices(batch, batch * m * n * k.max(1), |i| {
                    matmul_loop(a.index_axis(Axis(0), i), b.index_axis(Axis(0), i))
                });
                let mut data = Vec::with_capacity(batch * m * n);
                for p in products {
                    data.extend(p.iter().copied());
                }
                Array3::from_shape_vec((batch, m, n), data).expect("one value per output position")
            }
        }
    )*};
}
matmul_num!(bool, i8, i16, i32, i64, u8, u16, u32, u64);

/// The integer and bool product: wrapping multiply-adds (or-of-ands) in a plain loop.
fn matmul_loop<T: Num>(a: ArrayView2<'_, T>, b: ArrayView2<'_, T>) -> Array2<T> {
    let (m, k) = a.dim();
    let n = b.dim().1;
    let mut out = Array2::<T>::default((m, n));
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
