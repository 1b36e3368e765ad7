//! Unary elementwise loops: a new array ([`map`]), in place ([`map_inplace`]), or slice to slice
//! ([`map_slice`]).

use ndarray::{Array, ArrayBase, Data, DataMut, Dimension};

use super::{CHUNK, THRESHOLD};

/// `f` applied to every element of `a`, in a new standard-layout array.
///
/// Contiguous input goes through [`map_slice`] (parallel from [`super::THRESHOLD`] elements); strided input
/// is copied to standard layout first.
///
/// # Examples
/// ```
/// let a = ndarray::arr1(&[1.0f32, 4.0, 9.0]);
/// let r = purestate::kernels::map(&a, |x: f32| x.sqrt());
/// assert_eq!(r.to_vec(), vec![1.0, 2.0, 3.0]);
/// ```
pub fn map<S, A, B, D>(a: &ArrayBase<S, D>, f: impl Fn(A) -> B + Sync + Send) -> Array<B, D>
where
    S: Data<Elem = A>,
    A: Copy + Default + Send + Sync + 'static,
    B: Copy + Send + Sync + Default + 'static,
    D: Dimension,
{
    match a.as_slice() {
        Some(src) if src.len() < THRESHOLD => {
            // One thread, no pool: a zero-filled vector written by the slice loop, which the compiler inlines into
            // the dispatched (AVX2 + FMA) function; `collect` through iterator adapters was not inlined there, and
            // an exact `gelu` of 1e5 elements then took as long as on the baseline loop.
            let mut values = vec![B::default(); src.len()];
            map_slice(src, &mut values, f);
            Array::from_shape_vec(a.raw_dim(), values).expect("same length")
        }
        Some(src) => {
            let mut out = super::buffer::alloc::<B>(src.len());
            map_slice(src, out.as_mut_slice(), f);
            out.into_array(a.raw_dim())
        }
        None => map(&super::layout::standard(a.view()), f),
    }
}

/// Writes `value` into every element of `dst` (parallel in chunks from [`THRESHOLD`] elements).
pub fn fill<T: Copy + Send + Sync>(dst: &mut [T], value: T) {
    if dst.len() < THRESHOLD {
        dst.fill(value);
    } else {
        super::par_chunks_mut(dst, CHUNK, &|_, o| o.fill(value));
    }
}

/// Writes `f(src[i])` into `dst[i]`. `dst` and `src` must have the same length (the shorter one bounds the
/// loop otherwise).
pub fn map_slice<A, B>(src: &[A], dst: &mut [B], f: impl Fn(A) -> B + Sync + Send)
where
    A: Copy + Send + Sync,
    B: Send,
{
    let leaf = |o: &mut [B], x: &[A]| super::simd::dispatch(|| o.iter_mut().zip(x).for_each(|(o, &x)| *o = f(x)));
    if src.len() < THRESHOLD {
        leaf(dst, src);
    } else {
        super::par_chunks_mut(dst, CHUNK, &|i, o| leaf(o, &src[i * CHUNK..]));
    }
}

/// Replaces every element `x` of `a` by `f(x)`, in place. On an `ArcArray` whose buffer is shared this
/// copies the buffer first (copy on write).
pub fn map_inplace<S, A, D>(a: &mut ArrayBase<S, D>, f: impl Fn(A) -> A + Sync + Send)
where
    S: DataMut<Elem = A>,
    A: Copy + Send + Sync,
    D: Dimension,
{
    let n = a.len();
    match a.as_slice_mut() {
        Some(s) if n >= THRESHOLD => {
            super::par_chunks_mut(s, CHUNK, &|_, c| super::simd::dispatch(|| c.iter_mut().for_each(|x| *x = f(*x))))
        }
        Some(s) => super::simd::dispatch(|| s.iter_mut().for_each(|x| *x = f(*x))),
        None => a.map_inplace(|x| *x = f(*x)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array2, Axis, Slice};

    #[test]
    fn map_handles_contiguous_strided_and_large() {
        let a = Array2::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as i32);
        assert_eq!(map(&a, |x| x * 2)[[2, 3]], 22);
        let t = a.t();
        assert_eq!(map(&t, |x| x + 1)[[3, 2]], 12);
        let big = Array1::from_shape_fn(THRESHOLD * 2 + 3, |i| i as f64);
        let r = map(&big.slice_axis(Axis(0), Slice::new(0, None, 2)), |x| x * 0.5);
        assert_eq!(r[r.len() - 1], big[big.len() - 1] * 0.5);
    }

    #[test]
    fn map_inplace_matches_map() {
        for n in [10, THRESHOLD + 17] {
            let mut a = Array1::from_shape_fn(n, |i| i as f32);
            let expected = map(&a, |x| x * 3.0 - 1.0);
            map_inplace(&mut a, |x| x * 3.0 - 1.0);
            assert_eq!(a, expected);
        }
    }
}
