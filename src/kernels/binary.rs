//! Binary (and ternary) elementwise loops with numpy broadcasting: into a new array ([`zip_map`],
//! [`zip3_map`]) or in place into the left operand ([`zip_map_assign`]).
//!
//! Fast paths, in order: both operands contiguous with the same shape (slices, vectorized, chunked over
//! threads); one operand a single element (a map with a constant); anything else through `ndarray`'s `Zip`
//! over broadcast views.

use ndarray::{ArrayBase, ArrayD, ArrayViewD, DataMut, IxDyn, Zip};
use rayon::prelude::*;

use super::{unary, CHUNK, THRESHOLD};
use crate::error::{Error, Result};
use crate::tensor::Shape;

/// The shape two shapes broadcast to, with numpy's rules (align on the right; a dimension of 1 stretches).
///
/// # Errors
/// [`Error::Broadcast`] naming `op` and both shapes when a pair of dimensions differs and neither is 1.
///
/// # Examples
/// ```
/// use purestate::kernels::broadcast_shapes;
/// assert_eq!(broadcast_shapes("add", &[4, 1, 3], &[5, 1])?, vec![4, 5, 3]);
/// assert!(broadcast_shapes("add", &[2, 3], &[4]).is_err());
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for (i, o) in out.iter_mut().enumerate() {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(Error::Broadcast { op, lhs: Shape::from(a), rhs: Shape::from(b) }),
        };
    }
    Ok(out)
}

/// `f(a, b)` for every pair of elements of `a` and `b` broadcast together, in a new standard-layout array.
///
/// # Errors
/// [`Error::Broadcast`] when the shapes do not broadcast.
///
/// # Examples
/// ```
/// use ndarray::{arr1, arr2};
/// let a = arr2(&[[1, 2], [3, 4]]).into_dyn();
/// let b = arr1(&[10, 20]).into_dyn();
/// let r = purestate::kernels::zip_map("add", &a.view(), &b.view(), |x: i32, y: i32| x + y)?;
/// assert_eq!(r.into_raw_vec_and_offset().0, vec![11, 22, 13, 24]);
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn zip_map<A, B, C>(
    op: &'static str,
    a: &ArrayViewD<'_, A>,
    b: &ArrayViewD<'_, B>,
    f: impl Fn(A, B) -> C + Sync + Send,
) -> Result<ArrayD<C>>
where
    A: Copy + Send + Sync,
    B: Copy + Send + Sync,
    C: Copy + Send + Sync + Default,
{
    if a.shape() == b.shape() {
        if let (Some(sa), Some(sb)) = (a.as_slice(), b.as_slice()) {
            let mut out = vec![C::default(); sa.len()];
            zip_slices(sa, sb, &mut out, f);
            return Ok(ArrayD::from_shape_vec(a.raw_dim(), out).expect("same length as the operands"));
        }
    }
    let shape = broadcast_shapes(op, a.shape(), b.shape())?;
    if b.len() == 1 && a.shape() == shape.as_slice() {
        let y = *b.iter().next().expect("one element");
        return Ok(unary::map(a, |x| f(x, y)));
    }
    if a.len() == 1 && b.shape() == shape.as_slice() {
        let x = *a.iter().next().expect("one element");
        return Ok(unary::map(b, |y| f(x, y)));
    }
    let av = a.broadcast(IxDyn(&shape)).expect("checked by broadcast_shapes");
    let bv = b.broadcast(IxDyn(&shape)).expect("checked by broadcast_shapes");
    let zip = Zip::from(&av).and(&bv);
    Ok(if av.len() >= THRESHOLD { zip.par_map_collect(|&x, &y| f(x, y)) } else { zip.map_collect(|&x, &y| f(x, y)) })
}

/// `f(a, b, c)` for every triple of elements broadcast together, in a new array (`where`).
///
/// # Errors
/// [`Error::Broadcast`] when the shapes do not broadcast.
pub fn zip3_map<A, B, C, D>(
    op: &'static str,
    a: &ArrayViewD<'_, A>,
    b: &ArrayViewD<'_, B>,
    c: &ArrayViewD<'_, C>,
    f: impl Fn(A, B, C) -> D + Sync + Send,
) -> Result<ArrayD<D>>
where
    A: Copy + Send + Sync,
    B: Copy + Send + Sync,
    C: Copy + Send + Sync,
    D: Copy + Send + Sync + Default,
{
    let ab = broadcast_shapes(op, a.shape(), b.shape())?;
    let shape = broadcast_shapes(op, &ab, c.shape()).map_err(|_| Error::Broadcast {
        op,
        lhs: Shape::from(ab.clone()),
        rhs: Shape::from(c.shape()),
    })?;
    let dim = IxDyn(&shape);
    let (av, bv, cv) = (
        a.broadcast(dim.clone()).expect("checked"),
        b.broadcast(dim.clone()).expect("checked"),
        c.broadcast(dim).expect("checked"),
    );
    let zip = Zip::from(&av).and(&bv).and(&cv);
    Ok(if av.len() >= THRESHOLD {
        zip.par_map_collect(|&x, &y, &z| f(x, y, z))
    } else {
        zip.map_collect(|&x, &y, &z| f(x, y, z))
    })
}

/// Replaces every element `x` of `dst` by `f(x, y)`, with `y` the matching element of `src` broadcast to
/// `dst`'s shape. In place: on an `ArcArray` whose buffer is shared, the buffer is copied first.
///
/// # Errors
/// [`Error::Broadcast`] when `src` does not broadcast to `dst`'s shape (`dst` never grows).
///
/// # Examples
/// ```
/// use ndarray::{arr1, arr2};
/// let mut w = arr2(&[[1.0f32, 2.0], [3.0, 4.0]]).into_dyn();
/// let b = arr1(&[0.5f32, -1.0]).into_dyn();
/// purestate::kernels::zip_map_assign("add", &mut w, &b.view(), |x, y| x + y)?;
/// assert_eq!(w.into_raw_vec_and_offset().0, vec![1.5, 1.0, 3.5, 3.0]);
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn zip_map_assign<S, A, B>(
    op: &'static str,
    dst: &mut ArrayBase<S, IxDyn>,
    src: &ArrayViewD<'_, B>,
    f: impl Fn(A, B) -> A + Sync + Send,
) -> Result<()>
where
    S: DataMut<Elem = A>,
    A: Copy + Send + Sync,
    B: Copy + Send + Sync,
{
    let shape = broadcast_shapes(op, dst.shape(), src.shape())?;
    if shape.as_slice() != dst.shape() {
        return Err(Error::Broadcast { op, lhs: Shape::from(dst.shape()), rhs: Shape::from(src.shape()) });
    }
    if src.len() == 1 {
        let y = *src.iter().next().expect("one element");
        unary::map_inplace(dst, |x| f(x, y));
        return Ok(());
    }
    if dst.shape() == src.shape() {
        if let Some(sb) = src.as_slice() {
            if let Some(sa) = dst.as_slice_mut() {
                super::zip_mut((sa, sb), |(x, y)| *x = f(*x, y)).expect("equal lengths");
                return Ok(());
            }
        }
    }
    let bv = src.broadcast(dst.raw_dim()).expect("checked by broadcast_shapes");
    if dst.len() >= THRESHOLD {
        Zip::from(dst).and(&bv).par_for_each(|x, &y| *x = f(*x, y));
    } else {
        Zip::from(dst).and(&bv).for_each(|x, &y| *x = f(*x, y));
    }
    Ok(())
}

/// Writes `f(a[i], b[i])` into `out[i]` over three slices of one length (parallel in chunks of
/// [`CHUNK`] from [`THRESHOLD`] elements).
pub fn zip_slices<A, B, C>(a: &[A], b: &[B], out: &mut [C], f: impl Fn(A, B) -> C + Sync + Send)
where
    A: Copy + Send + Sync,
    B: Copy + Send + Sync,
    C: Send,
{
    let leaf = |o: &mut [C], x: &[A], y: &[B]| o.iter_mut().zip(x.iter().zip(y)).for_each(|(o, (&x, &y))| *o = f(x, y));
    if out.len() < THRESHOLD {
        leaf(out, a, b);
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(o, (x, y))| leaf(o, x, y));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr0, Array};

    #[test]
    fn broadcast_rules() {
        assert_eq!(broadcast_shapes("add", &[], &[3]).unwrap(), vec![3]);
        assert_eq!(broadcast_shapes("add", &[2, 1], &[1, 3]).unwrap(), vec![2, 3]);
        assert_eq!(broadcast_shapes("add", &[0], &[1]).unwrap(), vec![0]);
        let err = broadcast_shapes("add", &[2, 3], &[3, 2]).unwrap_err();
        assert_eq!(err.to_string(), "add: shapes (2, 3) and (3, 2) do not broadcast");
    }

    #[test]
    fn every_path_gives_the_same_answer() {
        let n = THRESHOLD + 5;
        let a = Array::from_shape_fn(IxDyn(&[n]), |i| i[0] as i64);
        let b = Array::from_shape_fn(IxDyn(&[n]), |i| 2 * i[0] as i64);
        let same = zip_map("add", &a.view(), &b.view(), |x, y| x - y).unwrap();
        let scalar = zip_map("add", &a.view(), &arr0(0i64).into_dyn().view(), |x, y| x - y).unwrap();
        let col = a.view().into_shape_with_order(IxDyn(&[n, 1])).unwrap();
        let general = zip_map("add", &col, &arr0(1i64).into_dyn().view(), |x, y| x - y).unwrap();
        assert_eq!(same[[n - 1]], -((n - 1) as i64));
        assert_eq!(scalar[[7]], 7);
        assert_eq!(general.shape(), &[n, 1]);
        let mut d = a.clone();
        zip_map_assign("sub", &mut d, &b.view(), |x, y| x - y).unwrap();
        assert_eq!(d, same);
    }

    #[test]
    fn assign_refuses_to_grow_the_destination() {
        let mut d = Array::<f32, _>::zeros(IxDyn(&[3]));
        let s = Array::<f32, _>::zeros(IxDyn(&[2, 3]));
        let err = zip_map_assign("add", &mut d, &s.view(), |x, y| x + y).unwrap_err();
        assert!(matches!(err, Error::Broadcast { op: "add", .. }));
    }
}
