//! Reductions along axes: [`reduce`] (`sum`, `mean`, `max`, `min`, `norm`) and `argmax` / `argmin`.
//!
//! Every reduced row goes through [`crate::kernels`]' fixed chunk tree, so results are bit-identical for any
//! thread count. Result dtypes follow Keras on JAX, without narrowing 64-bit types: `sum` of bool, int8,
//! int16 and int32 is int32, of uint8..uint32 is uint32, 64-bit integers and floats keep their dtype
//! (integers wrap); `mean` of integers and bool is float32; float16 and bfloat16 accumulate in float32 and
//! round once; `argmax` and `argmin` give int32.

use std::collections::BTreeSet;

use half::{bf16, f16};
use ndarray::{ArrayD, IxDyn};

use super::num::{Float, Num, Real};
use super::{with_float, DEFAULT_FLOATX};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::kernels;
use crate::tensor::{with_dtype, Element, Shape, Tensor};

/// Which axes a reduction runs over: all of them (`axis=None` in Keras) or a list (negative values count
/// from the end). Converts from an integer, an array, a slice or a `Vec` of integers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Axes {
    /// Every axis: the result is 0-d (or all ones with `keepdims`).
    All,
    /// These axes.
    These(Vec<isize>),
}

impl From<isize> for Axes {
    fn from(axis: isize) -> Self {
        Axes::These(vec![axis])
    }
}
impl From<i32> for Axes {
    fn from(axis: i32) -> Self {
        Axes::These(vec![axis as isize])
    }
}
impl From<usize> for Axes {
    fn from(axis: usize) -> Self {
        Axes::These(vec![axis as isize])
    }
}
impl<const N: usize> From<[isize; N]> for Axes {
    fn from(axes: [isize; N]) -> Self {
        Axes::These(axes.to_vec())
    }
}
impl<const N: usize> From<[i32; N]> for Axes {
    fn from(axes: [i32; N]) -> Self {
        Axes::These(axes.iter().map(|&a| a as isize).collect())
    }
}
impl From<&[isize]> for Axes {
    fn from(axes: &[isize]) -> Self {
        Axes::These(axes.to_vec())
    }
}
impl From<Vec<isize>> for Axes {
    fn from(axes: Vec<isize>) -> Self {
        Axes::These(axes)
    }
}
impl From<Option<isize>> for Axes {
    fn from(axis: Option<isize>) -> Self {
        axis.map_or(Axes::All, Axes::from)
    }
}

/// The reductions of [`reduce`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// `sum` (0 over no element).
    Sum,
    /// `mean` (NaN over no element).
    Mean,
    /// `max`, NaN-propagating (an error over no element).
    Max,
    /// `min`, NaN-propagating (an error over no element).
    Min,
    /// `norm`: the Euclidean norm, `sqrt(sum(x * x))` (integers and bool give floatx).
    Norm,
}

impl ReduceOp {
    /// The `keras.ops` name.
    pub const fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Mean => "mean",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
            ReduceOp::Norm => "norm",
        }
    }
}

/// Reduces `x` along `axes`: the one entry point of every reduction. With `keepdims` the reduced axes stay
/// as length 1.
///
/// # Errors
/// [`Error::InvalidShape`] for an axis out of range or a `max`/`min` over no element;
/// [`Error::InvalidArgument`] for a repeated axis.
///
/// # Examples
/// ```
/// use purestate::{ops::{reduce, Axes, ReduceOp}, DType, Tensor};
/// let x = Tensor::from([[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]]);
/// assert_eq!(reduce(ReduceOp::Sum, &x, 0, false, DType::Float32)?.to_vec::<f32>()?, vec![5.0, 7.0, 9.0]);
/// let m = reduce(ReduceOp::Max, &x, -1, true, DType::Float32)?;
/// assert_eq!((m.dims(), m.to_vec::<f32>()?), (&[2usize, 1][..], vec![3.0, 6.0]));
/// assert_eq!(x.sum(Axes::All, false)?.to_f64()?, 21.0);
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn reduce(op: ReduceOp, x: &Tensor, axes: impl Into<Axes>, keepdims: bool, floatx: DType) -> Result<Tensor> {
    let name = op.name();
    let axes = axes.into();
    if x.trace().is_some() {
        return match super::trace::hooks([Some(x)]) {
            Some(h) => h.reduce(op, x, axes, keepdims, floatx),
            None => reduce(op, &x.detached(), axes, keepdims, floatx),
        };
    }
    let axes = normalize_axes(name, x.dims(), &axes)?;
    let (kept, out_dims) = output_dims(x.dims(), &axes, keepdims);
    let row_len: usize = axes.iter().map(|&a| x.dims()[a]).product();
    if matches!(op, ReduceOp::Max | ReduceOp::Min) && row_len == 0 {
        return Err(Error::InvalidShape {
            op: name,
            shape: x.shape(),
            reason: "zero-size reduction has no identity".into(),
        });
    }
    let n_rows: usize = kept.iter().map(|&a| x.dims()[a]).product();
    let order: Vec<usize> = kept.iter().chain(&axes).copied().collect();
    let x = if op == ReduceOp::Norm && !x.dtype().is_float() { x.cast(floatx) } else { x.clone() };
    let block = column_block(x.dims(), &axes);
    match op {
        ReduceOp::Sum => sum(&x, &order, n_rows, row_len, &out_dims, block),
        ReduceOp::Mean => with_float!(x.dtype(), T => {
            let n = count::<<T as Float>::C>(row_len);
            match (block, x.as_slice::<T>()) {
                (Some(block), Some(data)) => {
                    let sums = sum_blocks(data, block, |v: T| v.up());
                    wrap(ArrayD::from_shape_vec(IxDyn(&out_dims), sums.into_iter().map(|s| T::down(s / n)).collect())
                        .expect("one value per kept position"))
                }
                _ => wrap(rows::<T, T>(&x, &order, n_rows, row_len, &out_dims, |r| {
                    T::down(kernels::sum_by(r, |v: T| v.up()) / n)
                })),
            }
        }, _ => with_dtype!(x.dtype(), T => wrap(rows::<T, f32>(&x, &order, n_rows, row_len, &out_dims, |r| {
            kernels::sum_by(r, |v: T| v.to_f64() as f32) / r.len() as f32
        })))),
        ReduceOp::Norm => with_float!(x.dtype(), T => {
            wrap(rows::<T, T>(&x, &order, n_rows, row_len, &out_dims, |r| {
                T::down(kernels::sum_by(r, |v: T| v.up() * v.up()).sqrt())
            }))
        }, _ => unreachable!("cast to floatx above")),
        ReduceOp::Max => with_dtype!(x.dtype(), T => wrap(rows::<T, T>(&x, &order, n_rows, row_len, &out_dims, |r| {
            kernels::min_max_by(r, |v: T| v, <T as Num>::maximum).unwrap_or_default()
        }))),
        ReduceOp::Min => with_dtype!(x.dtype(), T => wrap(rows::<T, T>(&x, &order, n_rows, row_len, &out_dims, |r| {
            kernels::min_max_by(r, |v: T| v, <T as Num>::minimum).unwrap_or_default()
        }))),
    }
}

fn wrap<T: Element>(values: ArrayD<T>) -> Result<Tensor> {
    Ok(Tensor::from(values))
}

fn count<C: Real>(n: usize) -> C {
    // Exact up to 2^24 (f32) or 2^53 (f64) elements, as jnp.mean's division by the count.
    let mut c = C::ZERO;
    let mut bit = C::ONE;
    let mut n = n;
    while n > 0 {
        if n & 1 == 1 {
            c = c + bit;
        }
        bit = bit + bit;
        n >>= 1;
    }
    c
}

/// `(outer, reduced, inner)` when the reduced axes are one run of consecutive axes followed by at least one kept
/// axis: `x` is then `outer` blocks of a `reduced x inner` row-major matrix whose columns are the rows to reduce
/// (a bias's gradient: axes `0..k`; BatchNorm's statistics; a global average pool over height and width).
fn column_block(dims: &[usize], axes: &[usize]) -> Option<(usize, usize, usize)> {
    let (&first, &last) = (axes.first()?, axes.last()?);
    if last - first + 1 != axes.len() || last + 1 >= dims.len() {
        return None;
    }
    let outer = dims[..first].iter().product();
    let reduced = dims[first..=last].iter().product();
    let inner = dims[last + 1..].iter().product();
    Some((outer, reduced, inner))
}

/// The column sums of each block (see [`column_block`]) in memory order ([`kernels::sum_columns_by`]: the same
/// bits as [`kernels::sum_by`] over each column, with no transposed copy).
fn sum_blocks<T: Copy + Sync, A: kernels::Acc>(
    data: &[T],
    (outer, reduced, inner): (usize, usize, usize),
    f: impl Fn(T) -> A + Sync + Send + Copy,
) -> Vec<A> {
    let size = reduced * inner;
    (0..outer).flat_map(|o| kernels::sum_columns_by(&data[o * size..(o + 1) * size], reduced, inner, f)).collect()
}

/// With `block` (see [`column_block`]) a contiguous `x` is summed down its columns in memory order instead of
/// through a transposed copy.
fn sum(
    x: &Tensor,
    order: &[usize],
    n_rows: usize,
    row_len: usize,
    dims: &[usize],
    block: Option<(usize, usize, usize)>,
) -> Result<Tensor> {
    macro_rules! sum_as {
        ($t:ty, $acc:ty, $conv:expr) => {
            match (block, x.as_slice::<$t>()) {
                (Some(block), Some(data)) => Tensor::from(
                    ArrayD::from_shape_vec(IxDyn(dims), sum_blocks(data, block, $conv))
                        .expect("one value per kept position"),
                ),
                _ => Tensor::from(rows::<$t, $acc>(x, order, n_rows, row_len, dims, |r| kernels::sum_by(r, $conv))),
            }
        };
    }
    Ok(match x.dtype() {
        DType::Bool => sum_as!(bool, i32, i32::from),
        DType::Int8 => sum_as!(i8, i32, i32::from),
        DType::Int16 => sum_as!(i16, i32, i32::from),
        DType::Int32 => sum_as!(i32, i32, |v| v),
        DType::Int64 => sum_as!(i64, i64, |v| v),
        DType::Uint8 => sum_as!(u8, u32, u32::from),
        DType::Uint16 => sum_as!(u16, u32, u32::from),
        DType::Uint32 => sum_as!(u32, u32, |v| v),
        DType::Uint64 => sum_as!(u64, u64, |v| v),
        DType::Float16 => sum_as!(f16, f32, f16::to_f32).cast(DType::Float16),
        DType::Bfloat16 => sum_as!(bf16, f32, bf16::to_f32).cast(DType::Bfloat16),
        DType::Float32 => sum_as!(f32, f32, |v| v),
        DType::Float64 => sum_as!(f64, f64, |v| v),
    })
}

/// `f(row)` for every row of `x` with its axes put in `order` (kept axes first, reduced last), shaped `dims`.
fn rows<T: Element, R: Element>(
    x: &Tensor,
    order: &[usize],
    n_rows: usize,
    row_len: usize,
    dims: &[usize],
    f: impl Fn(&[T]) -> R + Sync + Send,
) -> ArrayD<R> {
    let a = x.array::<T>().expect("dispatched on the dtype").view().permuted_axes(IxDyn(order));
    let standard = kernels::layout::standard(a);
    let data = standard.as_slice().expect("standard layout is contiguous");
    let values = kernels::map_rows(data, n_rows, row_len, f);
    ArrayD::from_shape_vec(IxDyn(dims), values).expect("one value per kept position")
}

/// Sorted, distinct, non-negative axes.
pub(crate) fn normalize_axes(op: &'static str, dims: &[usize], axes: &Axes) -> Result<Vec<usize>> {
    let ndim = dims.len();
    let Axes::These(list) = axes else {
        return Ok((0..ndim).collect());
    };
    let mut seen = BTreeSet::new();
    for &axis in list {
        let a = normalize_axis(op, dims, axis)?;
        if !seen.insert(a) {
            return Err(Error::InvalidArgument { op, arg: "axis", reason: format!("axis {axis} is repeated") });
        }
    }
    Ok(seen.into_iter().collect())
}

/// One axis, negative counting from the end.
pub(crate) fn normalize_axis(op: &'static str, dims: &[usize], axis: isize) -> Result<usize> {
    let ndim = dims.len() as isize;
    let a = if axis < 0 { axis + ndim } else { axis };
    if a < 0 || a >= ndim {
        return Err(Error::InvalidShape {
            op,
            shape: Shape::from(dims),
            reason: format!("axis {axis} is out of range for {ndim} dimensions"),
        });
    }
    Ok(a as usize)
}

/// The kept axes and the output dimensions.
fn output_dims(dims: &[usize], axes: &[usize], keepdims: bool) -> (Vec<usize>, Vec<usize>) {
    let kept: Vec<usize> = (0..dims.len()).filter(|a| !axes.contains(a)).collect();
    let out = if keepdims {
        dims.iter().enumerate().map(|(a, &d)| if axes.contains(&a) { 1 } else { d }).collect()
    } else {
        kept.iter().map(|&a| dims[a]).collect()
    };
    (kept, out)
}

// `with_dtype!` instantiates the comparison for bool too, where clippy would prefer `a & !b`.
#[allow(clippy::bool_comparison)]
fn arg_extreme(t: &Tensor, op: &'static str, axis: Option<isize>, keepdims: bool, max: bool) -> Result<Tensor> {
    let axes = normalize_axes(op, t.dims(), &Axes::from(axis))?;
    let (kept, out_dims) = output_dims(t.dims(), &axes, keepdims);
    let row_len: usize = axes.iter().map(|&a| t.dims()[a]).product();
    if row_len == 0 {
        return Err(Error::InvalidShape {
            op,
            shape: t.shape(),
            reason: "attempt to get the index of an empty sequence".into(),
        });
    }
    if row_len > i32::MAX as usize {
        return Err(Error::InvalidShape {
            op,
            shape: t.shape(),
            reason: "more than 2^31 - 1 elements to index with int32".into(),
        });
    }
    let n_rows: usize = kept.iter().map(|&a| t.dims()[a]).product();
    let order: Vec<usize> = kept.iter().chain(&axes).copied().collect();
    with_dtype!(t.dtype(), T => {
        let better = move |a: T, b: T| (if max { a > b } else { a < b }) || (a.is_nan() && !b.is_nan());
        let index = rows::<T, i32>(t, &order, n_rows, row_len, &out_dims, |r| {
            kernels::argmax_by(r, better).map_or(0, |i| i as i32)
        });
        Ok(Tensor::from(index))
    })
}

impl Tensor {
    /// Sum along `axes` (`keras.ops.sum`); see the module docs for the result dtype.
    ///
    /// # Errors
    /// As [`reduce`].
    pub fn sum(&self, axes: impl Into<Axes>, keepdims: bool) -> Result<Tensor> {
        reduce(ReduceOp::Sum, self, axes, keepdims, DEFAULT_FLOATX)
    }

    /// Mean along `axes` (`keras.ops.mean`): floats keep their dtype, integers and bool give float32.
    ///
    /// # Errors
    /// As [`reduce`].
    pub fn mean(&self, axes: impl Into<Axes>, keepdims: bool) -> Result<Tensor> {
        reduce(ReduceOp::Mean, self, axes, keepdims, DEFAULT_FLOATX)
    }

    /// Maximum along `axes` (`keras.ops.max`), NaN if a NaN is among the elements.
    ///
    /// # Errors
    /// As [`reduce`]; [`Error::InvalidShape`] over no element.
    pub fn max(&self, axes: impl Into<Axes>, keepdims: bool) -> Result<Tensor> {
        reduce(ReduceOp::Max, self, axes, keepdims, DEFAULT_FLOATX)
    }

    /// Minimum along `axes` (`keras.ops.min`), NaN if a NaN is among the elements.
    ///
    /// # Errors
    /// As [`reduce`]; [`Error::InvalidShape`] over no element.
    pub fn min(&self, axes: impl Into<Axes>, keepdims: bool) -> Result<Tensor> {
        reduce(ReduceOp::Min, self, axes, keepdims, DEFAULT_FLOATX)
    }

    /// Euclidean norm along `axes` (`keras.ops.norm` with `ord=None`), `sqrt(sum(x * x))`.
    ///
    /// # Errors
    /// As [`reduce`].
    ///
    /// ```
    /// use purestate::{ops::Axes, Tensor};
    /// assert_eq!(Tensor::from([3.0f32, 4.0]).norm(Axes::All, false)?.to_f64()?, 5.0);
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn norm(&self, axes: impl Into<Axes>, keepdims: bool) -> Result<Tensor> {
        reduce(ReduceOp::Norm, self, axes, keepdims, DEFAULT_FLOATX)
    }

    /// Index of the first maximum along `axis` (`None`: over the flattened tensor), as int32
    /// (`keras.ops.argmax`). The first NaN wins, as in numpy.
    ///
    /// # Errors
    /// [`Error::InvalidShape`] for an axis out of range or an empty axis.
    ///
    /// ```
    /// use purestate::Tensor;
    /// let x = Tensor::from([[1.0f32, 9.0, 9.0], [7.0, 2.0, 3.0]]);
    /// assert_eq!(x.argmax(Some(1), false)?.to_vec::<i32>()?, vec![1, 0]);
    /// assert_eq!(x.argmax(None, false)?.to_i64()?, 1);
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn argmax(&self, axis: Option<isize>, keepdims: bool) -> Result<Tensor> {
        arg_extreme(self, "argmax", axis, keepdims, true)
    }

    /// Index of the first minimum along `axis` (`None`: flattened), as int32 (`keras.ops.argmin`).
    ///
    /// # Errors
    /// [`Error::InvalidShape`] for an axis out of range or an empty axis.
    pub fn argmin(&self, axis: Option<isize>, keepdims: bool) -> Result<Tensor> {
        arg_extreme(self, "argmin", axis, keepdims, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_dtypes_follow_keras_on_jax() {
        assert_eq!(Tensor::from([true, true]).sum(Axes::All, false).unwrap().to_vec::<i32>().unwrap(), vec![2]);
        assert_eq!(Tensor::from([100i8, 100]).sum(0, false).unwrap().to_vec::<i32>().unwrap(), vec![200]);
        assert_eq!(Tensor::from([1u8]).sum(0, false).unwrap().dtype(), DType::Uint32);
        assert_eq!(Tensor::from([1i64]).sum(0, false).unwrap().dtype(), DType::Int64);
        assert_eq!(Tensor::from([1i8, 2]).mean(0, false).unwrap().to_vec::<f32>().unwrap(), vec![1.5]);
        assert_eq!(Tensor::from([1.0f64]).mean(0, false).unwrap().dtype(), DType::Float64);
    }

    #[test]
    fn axes_keepdims_and_errors() {
        let x = Tensor::from_shape_vec([2, 3, 4], (0..24).map(|v| v as f32).collect()).unwrap();
        let s = x.sum([0, 2], true).unwrap();
        assert_eq!(s.dims(), &[1, 3, 1]);
        assert_eq!(s.to_vec::<f32>().unwrap(), vec![60.0, 92.0, 124.0]);
        assert!(matches!(x.sum(3, false), Err(Error::InvalidShape { .. })));
        assert!(matches!(x.sum([1, -2], false), Err(Error::InvalidArgument { .. })));
        assert_eq!(x.max(Axes::All, true).unwrap().dims(), &[1, 1, 1]);
        let empty = Tensor::zeros([0, 2], DType::Float32);
        assert!(matches!(empty.max(0, false), Err(Error::InvalidShape { .. })));
        assert_eq!(empty.sum(0, false).unwrap().to_vec::<f32>().unwrap(), vec![0.0, 0.0]);
        assert!(empty.mean(0, false).unwrap().to_vec::<f32>().unwrap()[0].is_nan());
        assert!(matches!(empty.argmax(Some(0), false), Err(Error::InvalidShape { .. })));
    }

    #[test]
    fn max_propagates_nan() {
        let x = Tensor::from([1.0f32, f32::NAN, 3.0]);
        assert!(x.max(0, false).unwrap().to_f64().unwrap().is_nan());
        assert!(x.min(0, false).unwrap().to_f64().unwrap().is_nan());
        assert_eq!(x.argmin(None, false).unwrap().to_i64().unwrap(), 1);
    }
}
