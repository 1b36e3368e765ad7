//! [`standard`] and [`to_standard`]: a strided, permuted or broadcast view in standard (row-major) layout,
//! copied a row at a time and in parallel from [`THRESHOLD`] elements.
//!
//! `ndarray`'s `as_standard_layout` copies element by element through its generic iterator, on the calling
//! thread. In a transformer step those copies (a permuted head axis, a broadcast operand) were the largest
//! part of the work left on one core. Here each row of the output (its last axis) is one `copy_from_slice`
//! when the source row is contiguous, one `fill` when it is broadcast, and a strided loop otherwise; rows are
//! split over the rayon pool. A copy has no arithmetic, so the result never depends on the split.

use ndarray::{Array, ArrayView, ArrayView1, ArrayViewMut, ArrayViewMut1, Axis, CowArray, Dimension, Zip};

use super::THRESHOLD;

/// `v` itself when it is already in standard layout, else its copy in standard layout ([`to_standard`]).
///
/// # Examples
/// ```
/// use ndarray::array;
/// use purestate::kernels::layout::standard;
/// let a = array![[1, 2, 3], [4, 5, 6]];
/// assert!(standard(a.view()).is_view()); // already row-major: borrowed
/// let t = standard(a.t());
/// assert_eq!(t.as_slice(), Some(&[1, 4, 2, 5, 3, 6][..]));
/// ```
pub fn standard<T, D>(v: ArrayView<'_, T, D>) -> CowArray<'_, T, D>
where
    T: Copy + Default + Send + Sync + 'static,
    D: Dimension,
{
    if v.is_standard_layout() {
        CowArray::from(v)
    } else {
        CowArray::from(to_standard(&v))
    }
}

/// A new standard-layout array with the elements of `v` (any strides: permuted, sliced, reversed or
/// broadcast), written a row at a time, in parallel from [`THRESHOLD`] elements.
pub fn to_standard<T, D>(v: &ArrayView<'_, T, D>) -> Array<T, D>
where
    T: Copy + Default + Send + Sync + 'static,
    D: Dimension,
{
    let n = v.len();
    if v.ndim() == 0 || n == 0 {
        return v.to_owned();
    }
    let last = Axis(v.ndim() - 1);
    let mut buf = super::buffer::alloc::<T>(n);
    let mut out = ArrayViewMut::from_shape(v.raw_dim(), buf.as_mut_slice()).expect("n elements, row-major");
    let copy = |mut o: ArrayViewMut1<'_, T>, s: ArrayView1<'_, T>| {
        let o = o.as_slice_mut().expect("a row of a standard-layout array is contiguous");
        match s.as_slice() {
            Some(s) => o.copy_from_slice(s),
            None if s.strides()[0] == 0 => o.fill(s[0]),
            None => o.iter_mut().zip(s).for_each(|(o, &s)| *o = s),
        }
    };
    let rows = Zip::from(out.lanes_mut(last)).and(v.lanes(last));
    if n < THRESHOLD {
        rows.for_each(copy);
    } else {
        rows.par_for_each(copy);
    }
    buf.into_array(v.raw_dim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array3, IxDyn};

    #[test]
    fn every_kind_of_view_copies_like_ndarray() {
        let a = Array3::from_shape_fn((6, 5, 7), |(i, j, k)| (i * 100 + j * 10 + k) as i32);
        let big = Array3::from_shape_fn((70, 64, 61), |(i, j, k)| (i * 10_000 + j * 100 + k) as f32);
        let (row, column) = (a.slice(s![.., 2, ..]).insert_axis(Axis(1)), a.slice(s![.., .., 3..4]));
        let cases = [
            a.view().permuted_axes([1, 0, 2]).into_dyn(),
            a.view().permuted_axes([2, 0, 1]).into_dyn(),
            a.slice(s![..;2, 1.., ..;-1]).into_dyn(),
            row.broadcast(IxDyn(&[6, 3, 7])).unwrap(),
            column.broadcast(IxDyn(&[6, 5, 4])).unwrap(),
        ];
        for v in cases {
            assert_eq!(to_standard(&v), v.as_standard_layout().into_owned());
            assert!(to_standard(&v).is_standard_layout());
        }
        // Above the threshold the rows are split over the pool.
        let v = big.view().permuted_axes([1, 0, 2]);
        assert!(v.len() >= THRESHOLD);
        assert_eq!(to_standard(&v), v.as_standard_layout().into_owned());
    }

    #[test]
    fn scalars_and_empty_views() {
        let z = ndarray::arr0(3.5f32);
        assert_eq!(to_standard(&z.view()), z);
        let e = Array3::<f32>::zeros((2, 0, 3));
        assert_eq!(to_standard(&e.view().permuted_axes([2, 1, 0])).shape(), &[3, 0, 2]);
    }
}
