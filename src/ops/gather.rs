//! Indexing by integer tensors: [`Tensor::take`] (`keras.ops.take`, the embedding lookup) with its
//! deterministic scatter-add gradient, and [`one_hot`] (`keras.ops.one_hot`).
//!
//! `take` copies one row per index (a row being everything after the indexed axis), in parallel over fixed
//! chunks of the output ([`kernels::gather_rows`]). Its backward adds each row of the cotangent into zeros of
//! the input's shape with [`kernels::scatter_add_rows`]: rows that share a destination are summed in source
//! order, the order of a plain sequential loop, by one task per destination row, so the gradient of a lookup
//! with repeated indices has the same bits at any thread count.

use super::num::Float;
use super::reduce::normalize_axis;
use super::{trace, with_float, with_int};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::kernels;
use crate::tensor::{with_dtype, Element, Scalar, Tensor};

impl Tensor {
    /// The slices of `self` at `indices` along `axis` (`keras.ops.take`, numpy's `take`): the result has shape
    /// `self.shape[..axis] + indices.shape + self.shape[axis + 1..]`. With `axis` `None` the tensor is
    /// flattened first (Keras's default). Indices are any integer dtype; negative ones in `[-n, 0)` count
    /// from the end, as in numpy.
    ///
    /// O(result size): one row copy per index, parallel from [`kernels::THRESHOLD`] elements. Differentiable
    /// with respect to `self`: the gradient adds each row of the cotangent back at its index, repeated indices
    /// accumulating in index order (see the module docs); `indices` get none.
    ///
    /// Departure: an index outside `[-n, n)` is an error (JAX fills NaN for it and Keras passes that on).
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] naming the first bad index, the axis and its size;
    /// [`Error::UnsupportedDType`] for float or bool indices; [`Error::InvalidShape`] for an axis out of range.
    ///
    /// # Examples
    /// ```
    /// use purestate::Tensor;
    /// let table = Tensor::from([[0.0f32, 0.5], [1.0, 1.5], [2.0, 2.5]]); // an embedding of 3 tokens
    /// let tokens = Tensor::from([[2i32, 0], [-1, 1]]);
    /// let e = table.take(&tokens, Some(0))?;
    /// assert_eq!(e.dims(), &[2, 2, 2]);
    /// assert_eq!(e.to_vec::<f32>()?, vec![2.0, 2.5, 0.0, 0.5, 2.0, 2.5, 1.0, 1.5]);
    /// assert!(table.take(&Tensor::from([3i32]), Some(0)).is_err());
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn take(&self, indices: &Tensor, axis: Option<isize>) -> Result<Tensor> {
        const OP: &str = "take";
        let x = match axis {
            Some(_) => self.clone(),
            None => self.reshape(&[-1])?,
        };
        let axis = normalize_axis(OP, x.dims(), axis.unwrap_or(0))?;
        let dims = x.dims().to_vec();
        let n = dims[axis];
        let picks = positions(OP, indices, n, axis)?;
        let outer: usize = dims[..axis].iter().product();
        let inner: usize = dims[axis + 1..].iter().product();
        let m = picks.len();
        // Source row of output row `o * m + i` is `o * n + picks[i]`: rows of `inner` elements.
        let rows: Vec<usize> = (0..outer * m).map(|r| (r / m) * n + picks[r % m]).collect();
        let out_dims: Vec<usize> =
            dims[..axis].iter().chain(indices.dims()).chain(&dims[axis + 1..]).copied().collect();
        let xd = x.detached();
        let z = with_dtype!(xd.dtype(), T => {
            let a = xd.array::<T>()?;
            let src = kernels::layout::standard(a.view());
            let mut buf = kernels::buffer::alloc::<T>(rows.len() * inner);
            kernels::gather_rows(src.as_slice().expect("standard layout"), inner, &rows, buf.as_mut_slice());
            Tensor::from(buf.into_arrayd(&out_dims))
        });
        if !xd.dtype().is_float() || !trace::any_traced(&[&x]) {
            return Ok(z);
        }
        Ok(trace::custom(&[&x], z, move |g, _| {
            let g = g.to_standard_layout();
            let gx = with_float!(g.dtype(), T => {
                let src = g.as_slice::<T>().expect("standard layout");
                let mut buf = kernels::buffer::alloc::<<T as Float>::C>(dims.iter().product());
                kernels::scatter_add_rows(src, inner, &rows, buf.as_mut_slice(), |v: T| v.up());
                Tensor::from(buf.into_arrayd(&dims))
            }, _ => return Err(Error::UnsupportedDType { op: OP, dtype: g.dtype() }));
            Ok(vec![Some(gx)])
        }))
    }
}

/// One-hot encodes integer `indices` (`keras.ops.one_hot`): a new axis of length `num_classes` at `axis`
/// (`-1` appends it), holding one where the class equals the index and zero elsewhere, in `dtype` (Keras's
/// default is floatx, [`DEFAULT_FLOATX`](super::DEFAULT_FLOATX); any dtype works, bool included).
///
/// An index outside `[0, num_classes)`, negative ones included, gives a row of zeros: documented Keras (and
/// `jax.nn.one_hot`) behaviour, kept here rather than made an error. O(result size), parallel from
/// [`kernels::THRESHOLD`] elements. Not differentiable (integer input).
///
/// # Errors
/// [`Error::UnsupportedDType`] for float or bool indices; [`Error::InvalidShape`] when `axis` is outside
/// `-(ndim + 1)..=ndim`.
///
/// # Examples
/// ```
/// use purestate::{ops::one_hot, DType, Tensor};
/// let y = one_hot(&Tensor::from([2i32, 0, 5, -1]), 3, -1, DType::Float32)?;
/// assert_eq!(y.dims(), &[4, 3]);
/// assert_eq!(y.to_vec::<f32>()?, vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn one_hot(indices: &Tensor, num_classes: usize, axis: isize, dtype: DType) -> Result<Tensor> {
    const OP: &str = "one_hot";
    let values = int_values(OP, indices)?;
    let mut dims = indices.dims().to_vec();
    dims.push(1);
    let axis = normalize_axis(OP, &dims, axis)?;
    dims.pop();
    let inner: usize = dims[axis..].iter().product();
    dims.insert(axis, num_classes);
    let total: usize = dims.iter().product();
    with_dtype!(dtype, T => {
        let (one, zero) = (T::from_scalar(Scalar::I64(1)), T::default());
        let mut buf = kernels::buffer::alloc::<T>(total);
        kernels::fill_indexed(buf.as_mut_slice(), |e| {
            // Element e sits at (before, class, after): index position before * inner + after.
            let (before, rest) = (e / (num_classes * inner), e % (num_classes * inner));
            let (class, after) = (rest / inner, rest % inner);
            if values[before * inner + after] == class as i64 { one } else { zero }
        });
        Ok(Tensor::from(buf.into_arrayd(&dims)))
    })
}

/// The positions along an axis of length `n` that `indices` name, negative ones wrapped.
fn positions(op: &'static str, indices: &Tensor, n: usize, axis: usize) -> Result<Vec<usize>> {
    int_values(op, indices)?
        .into_iter()
        .map(|i| {
            let at = if i < 0 { i + n as i64 } else { i };
            if at < 0 || at >= n as i64 {
                return Err(Error::IndexOutOfRange { op, index: i, axis, size: n });
            }
            Ok(at as usize)
        })
        .collect()
}

/// The elements of an integer tensor as `i64`, in row-major order (`u64` beyond `i64::MAX` saturates).
fn int_values(op: &'static str, t: &Tensor) -> Result<Vec<i64>> {
    with_int!(t.dtype(), T => Ok(t.array::<T>()?.iter().map(|v| match v.to_scalar() {
        Scalar::U64(u) => i64::try_from(u).unwrap_or(i64::MAX),
        s => s.to_f64() as i64,
    }).collect()), _ => Err(Error::UnsupportedDType { op, dtype: t.dtype() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_follows_numpy_shapes_and_wraps_negative_indices() {
        let x = Tensor::from_shape_vec([2, 3, 2], (0..12).collect::<Vec<i32>>()).unwrap();
        let t = x.take(&Tensor::from([[2i64, -3]]), Some(1)).unwrap();
        assert_eq!(t.dims(), &[2, 1, 2, 2]);
        assert_eq!(t.to_vec::<i32>().unwrap(), vec![4, 5, 0, 1, 10, 11, 6, 7]);
        let flat = x.take(&Tensor::from([11u8, 0]), None).unwrap();
        assert_eq!(flat.to_vec::<i32>().unwrap(), vec![11, 0]);
        let scalar = x.take(&Tensor::scalar(-1i32), Some(-1)).unwrap();
        assert_eq!((scalar.dims(), scalar.to_vec::<i32>().unwrap()), (&[2usize, 3][..], vec![1, 3, 5, 7, 9, 11]));
    }

    #[test]
    fn take_errors_name_the_index_axis_and_size() {
        let x = Tensor::zeros([4, 3], DType::Float32);
        let err = x.take(&Tensor::from([0i32, -5]), Some(0)).unwrap_err();
        assert!(matches!(err, Error::IndexOutOfRange { op: "take", index: -5, axis: 0, size: 4 }));
        assert_eq!(err.to_string(), "take: index -5 is out of range for axis 0 of size 4");
        assert!(matches!(
            x.take(&Tensor::from([3i32]), Some(1)),
            Err(Error::IndexOutOfRange { index: 3, axis: 1, size: 3, .. })
        ));
        assert!(matches!(x.take(&Tensor::from([0.0f32]), Some(0)), Err(Error::UnsupportedDType { op: "take", .. })));
        assert!(matches!(x.take(&Tensor::from([0i32]), Some(2)), Err(Error::InvalidShape { op: "take", .. })));
    }

    #[test]
    fn one_hot_puts_the_class_axis_where_asked() {
        let i = Tensor::from([[0i32, 2], [1, 7]]);
        let y = one_hot(&i, 3, 0, DType::Int32).unwrap();
        assert_eq!(y.dims(), &[3, 2, 2]);
        assert_eq!(y.to_vec::<i32>().unwrap(), vec![1, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0]);
        let b = one_hot(&i, 3, 1, DType::Bool).unwrap();
        assert_eq!(b.dims(), &[2, 3, 2]);
        assert!(matches!(one_hot(&i, 3, 3, DType::Float32), Err(Error::InvalidShape { .. })));
        assert!(matches!(one_hot(&Tensor::from([true]), 2, -1, DType::Float32), Err(Error::UnsupportedDType { .. })));
    }
}
