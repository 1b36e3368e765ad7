//! Masking ops for attention: [`Tensor::triu`] and [`Tensor::tril`] (numpy's triangles over the last two
//! axes) and [`softmax_masked`] (Keras's `Softmax` layer called with a mask, as one op with a closed-form
//! backward).
//!
//! Each forward is made of elementwise selects and the fixed-tree reductions of [`super::reduce`], so its
//! result is the same at any thread count; each records one node on the tape through [`super::trace::custom`].

use super::reduce::normalize_axis;
use super::{binary, reduce, trace, where_, Axes, BinaryOp, ReduceOp, DEFAULT_FLOATX};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::{Shape, Tensor};

/// Keras's `_large_negative_number` (`keras/src/layers/activations/softmax.py`): the logit that masked
/// positions get before the softmax, `-3e4` for float16 and `-1e9` otherwise.
pub fn large_negative_number(dtype: DType) -> f64 {
    if dtype == DType::Float16 {
        -3e4
    } else {
        -1e9
    }
}

/// Softmax of `x` along `axis` where `mask` is true, and exactly 0 where it is false: Keras's
/// `keras.layers.Softmax(axis)(x, mask)` (3.15), that is `where(mask, softmax(where(mask, x, -1e9)), 0)`
/// (`-3e4` for float16, see [`large_negative_number`]). A row whose mask is false everywhere is all zeros
/// (Keras's explicit zeroing), not uniform.
///
/// `mask` is a bool tensor that broadcasts to `x` without enlarging it (each of its dimensions, aligned from
/// the right, is 1 or `x`'s, and it has no more dimensions than `x`), as Keras's `Softmax` checks. Integer
/// `x` is converted to float32 first, as [`Tensor::softmax`] does.
///
/// Differentiable with respect to `x`, with the closed-form backward `dx = z * (g - sum(z * g, axis))`, which
/// is 0 at masked positions (Keras's composed form gives the same: the inner `where` sends them no
/// cotangent).
///
/// # Errors
/// [`Error::UnsupportedDType`] for a mask that is not bool; [`Error::Broadcast`] for a mask that does not
/// broadcast to `x`'s shape; [`Error::InvalidShape`] for an axis out of range.
///
/// # Examples
/// ```
/// use purestate::{ops::softmax_masked, Tensor};
/// let x = Tensor::from([[1.0f32, 1.0, 5.0], [2.0, 0.0, 0.0]]);
/// let mask = Tensor::from([[true, true, false], [false, false, false]]);
/// let p = softmax_masked(&x, &mask, -1)?;
/// assert_eq!(p.to_vec::<f32>()?, [0.5, 0.5, 0.0, 0.0, 0.0, 0.0]);
/// let keep_first_two = Tensor::from([true, true, false]);          // broadcast over the rows
/// assert_eq!(softmax_masked(&x, &keep_first_two, -1)?.dims(), [2, 3]);
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn softmax_masked(x: &Tensor, mask: &Tensor, axis: isize) -> Result<Tensor> {
    const OP: &str = "softmax_masked";
    if mask.dtype() != DType::Bool {
        return Err(Error::UnsupportedDType { op: OP, dtype: mask.dtype() });
    }
    let (xd, md) = (x.dims(), mask.dims());
    let fits = md.len() <= xd.len() && md.iter().rev().zip(xd.iter().rev()).all(|(&m, &d)| m == 1 || m == d);
    if !fits {
        return Err(Error::Broadcast { op: OP, lhs: x.shape(), rhs: mask.shape() });
    }
    let last = normalize_axis(OP, xd, axis)? + 1 == xd.len();
    let xs = if x.dtype().is_float() { x.detached() } else { x.detached().cast(DEFAULT_FLOATX) };
    let mask = mask.detached();
    if last && matches!(xs.dtype(), DType::Float32 | DType::Float64) && xs.size() > 0 {
        return Ok(fused::softmax_last(x, xs, &mask));
    }
    let filled = where_(&mask, &xs, large_negative_number(xs.dtype()), DEFAULT_FLOATX)?;
    let z = where_(&mask, filled.softmax(axis)?, Tensor::zeros([], xs.dtype()), DEFAULT_FLOATX)?;
    if !trace::any_traced(&[x]) || !x.dtype().is_float() {
        return Ok(z);
    }
    let saved = z.clone();
    Ok(trace::custom(&[x], z, move |g, _| {
        let zg = binary(BinaryOp::Multiply, &saved, g.cast(saved.dtype()), DEFAULT_FLOATX)?;
        let s = reduce(ReduceOp::Sum, &zg, Axes::from(axis), true, DEFAULT_FLOATX)?;
        let zs = binary(BinaryOp::Multiply, &saved, &s, DEFAULT_FLOATX)?;
        Ok(vec![Some(binary(BinaryOp::Subtract, zg, &zs, DEFAULT_FLOATX)?)])
    }))
}

/// [`softmax_masked`] over the last axis of a float32 or float64 tensor, forward and backward, one row per
/// task: the same operations in the same order as the composed form (`where`, the row's maximum, `exp`, the
/// row's fixed-tree sum, the division, `where`; backward `z * g - z * sum(z * g)`), so the same bits, in two
/// passes over the data instead of about eleven.
mod fused {
    use super::super::num::{Num, Real};
    use super::super::trace;
    use super::large_negative_number;
    use crate::kernels;
    use crate::tensor::{Element, Tensor};

    /// Where row `i`'s mask starts in the mask's own (standard-layout) data, and its stride along the last
    /// axis: zero along the axes over which the mask is broadcast.
    struct MaskRows {
        bits: Vec<bool>,
        starts: Vec<usize>,
        step: usize,
    }

    impl MaskRows {
        fn new(mask: &Tensor, dims: &[usize]) -> MaskRows {
            let bits: Vec<bool> = mask.to_standard_layout().as_slice::<bool>().expect("a bool mask").to_vec();
            let md = mask.dims();
            // The mask's strides aligned to `dims` from the right (0 where it has 1 or no axis).
            let mut strides = vec![0usize; dims.len()];
            let mut stride = 1;
            for (k, &m) in md.iter().enumerate().rev() {
                let at = dims.len() - md.len() + k;
                strides[at] = if m == 1 { 0 } else { stride };
                stride *= m;
            }
            let lead = &dims[..dims.len() - 1];
            let n_rows: usize = lead.iter().product();
            let mut starts = Vec::with_capacity(n_rows);
            let mut index = vec![0usize; lead.len()];
            for _ in 0..n_rows {
                starts.push(index.iter().zip(&strides).map(|(i, s)| i * s).sum());
                for (slot, &d) in index.iter_mut().zip(lead).rev() {
                    *slot += 1;
                    if *slot < d {
                        break;
                    }
                    *slot = 0;
                }
            }
            MaskRows { bits, starts, step: strides[dims.len() - 1] }
        }

        fn keep(&self, row: usize, j: usize) -> bool {
            self.bits[self.starts[row] + j * self.step]
        }
    }

    pub(super) fn softmax_last(x: &Tensor, xs: Tensor, mask: &Tensor) -> Tensor {
        match xs.dtype() {
            crate::dtype::DType::Float32 => softmax_typed::<f32>(x, xs, mask),
            _ => softmax_typed::<f64>(x, xs, mask),
        }
    }

    fn softmax_typed<T: Element + Real + Num>(x: &Tensor, xs: Tensor, mask: &Tensor) -> Tensor {
        let dims = xs.dims().to_vec();
        let c = dims[dims.len() - 1];
        let xs = xs.to_standard_layout();
        let data = xs.as_slice::<T>().expect("standard layout, checked dtype");
        let rows = MaskRows::new(mask, &dims);
        let negative = T::from_f64(large_negative_number(xs.dtype()));
        let mut z = kernels::buffer::alloc::<T>(data.len());
        kernels::for_rows(z.as_mut_slice(), c, 4 * data.len(), |i, out| {
            let row = &data[i * c..(i + 1) * c];
            for (j, (o, &v)) in out.iter_mut().zip(row).enumerate() {
                *o = if rows.keep(i, j) { v } else { negative };
            }
            let m = kernels::min_max_by(out, |v: T| v, <T as Num>::maximum).expect("a row is not empty");
            kernels::simd::dispatch(|| out.iter_mut().for_each(|o| *o = (*o - m).exp()));
            let total = kernels::sum_by(out, |v: T| v);
            for (j, o) in out.iter_mut().enumerate() {
                *o = if rows.keep(i, j) { *o / total } else { T::ZERO };
            }
        });
        let z = Tensor::from(z.into_arrayd(&dims));
        if !trace::any_traced(&[x]) {
            return z;
        }
        let saved = z.clone();
        trace::custom(&[x], z, move |g, _| {
            let g = g.cast(saved.dtype()).to_standard_layout();
            let (zs, gs) = (saved.as_slice::<T>().expect("standard"), g.as_slice::<T>().expect("standard"));
            let mut dx = kernels::buffer::alloc::<T>(zs.len());
            kernels::for_rows(dx.as_mut_slice(), c, 3 * zs.len(), |i, out| {
                let (zr, gr) = (&zs[i * c..(i + 1) * c], &gs[i * c..(i + 1) * c]);
                kernels::simd::dispatch(|| out.iter_mut().zip(zr).zip(gr).for_each(|((o, &z), &g)| *o = z * g));
                let s = kernels::sum_by(out, |v: T| v);
                kernels::simd::dispatch(|| out.iter_mut().zip(zr).for_each(|(o, &z)| *o = *o - z * s));
            });
            Ok(vec![Some(Tensor::from(dx.into_arrayd(saved.dims())))])
        })
    }
}

impl Tensor {
    /// The upper triangle of the last two axes (`keras.ops.triu`, numpy's `triu`): elements at row `i`,
    /// column `j` are kept where `j - i >= k` and set to zero elsewhere; `k > 0` starts above the main
    /// diagonal, `k < 0` below it. Any dtype; differentiable (the cotangent is masked the same way).
    ///
    /// # Errors
    /// [`Error::InvalidShape`] for a tensor of fewer than two dimensions (as `jnp.triu`).
    ///
    /// # Examples
    /// ```
    /// use purestate::Tensor;
    /// let x = Tensor::from([[1, 2, 3], [4, 5, 6]]);
    /// assert_eq!(x.triu(0)?.to_vec::<i32>()?, [1, 2, 3, 0, 5, 6]);
    /// assert_eq!(x.triu(1)?.to_vec::<i32>()?, [0, 2, 3, 0, 0, 6]);
    /// assert_eq!(x.tril(-1)?.to_vec::<i32>()?, [0, 0, 0, 4, 0, 0]);
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn triu(&self, k: isize) -> Result<Tensor> {
        triangle(self, "triu", move |i, j| j - i >= k)
    }

    /// The lower triangle of the last two axes (`keras.ops.tril`, numpy's `tril`): elements at row `i`,
    /// column `j` are kept where `j - i <= k` and set to zero elsewhere. See [`Tensor::triu`].
    ///
    /// # Errors
    /// [`Error::InvalidShape`] for a tensor of fewer than two dimensions.
    pub fn tril(&self, k: isize) -> Result<Tensor> {
        triangle(self, "tril", move |i, j| j - i <= k)
    }

    /// The tensor with axes `a` and `b` exchanged (`keras.ops.swapaxes`); negative axes count from the end.
    /// O(1), and differentiable.
    ///
    /// # Errors
    /// [`Error::InvalidShape`] for an axis out of range.
    ///
    /// # Examples
    /// ```
    /// use purestate::Tensor;
    /// let x = Tensor::zeros([2, 3, 4], purestate::DType::Float32);
    /// assert_eq!(x.swapaxes(1, -1)?.dims(), [2, 4, 3]);
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn swapaxes(&self, a: isize, b: isize) -> Result<Tensor> {
        let (a, b) = (normalize_axis("swapaxes", self.dims(), a)?, normalize_axis("swapaxes", self.dims(), b)?);
        let mut order: Vec<isize> = (0..self.ndim() as isize).collect();
        order.swap(a, b);
        self.permute(&order)
    }
}

/// `x` where `keep(row, column)` over its last two axes, zero elsewhere, with the same mask on the cotangent.
fn triangle(x: &Tensor, op: &'static str, keep: impl Fn(isize, isize) -> bool) -> Result<Tensor> {
    let nd = x.ndim();
    if nd < 2 {
        return Err(Error::InvalidShape { op, shape: x.shape(), reason: "expected at least two dimensions".into() });
    }
    let (rows, cols) = (x.dims()[nd - 2], x.dims()[nd - 1]);
    let flags: Vec<bool> =
        (0..rows * cols).map(|p| keep((p / cols.max(1)) as isize, (p % cols.max(1)) as isize)).collect();
    let mask = Tensor::from_shape_vec(Shape::from([rows, cols]), flags)?;
    let xs = x.detached();
    let z = where_(&mask, &xs, Tensor::zeros([], xs.dtype()), DEFAULT_FLOATX)?;
    if !trace::any_traced(&[x]) || !x.dtype().is_float() {
        return Ok(z);
    }
    Ok(trace::custom(&[x], z, move |g, _| {
        Ok(vec![Some(where_(&mask, g, Tensor::zeros([], g.dtype()), DEFAULT_FLOATX)?)])
    }))
}
