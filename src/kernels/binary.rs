//! Binary (and ternary) elementwise loops with numpy broadcasting: into a new array ([`zip_map`],
//! [`zip3_map`]) or in place into the left operand ([`zip_map_assign`]).
//!
//! Every loop runs over slices, so the compiler vectorizes it: operands with the output's shape and
//! contiguous go as they are, a single element becomes a constant, a contiguous block that repeats along the
//! leading axes (a bias row) is tiled, one value per row (a `keepdims` reduction over trailing axes) is spread
//! over its row; any other operand (strided, or broadcast along an inner axis) is first
//! copied to the output's shape.

use ndarray::{ArrayBase, ArrayD, ArrayViewD, CowArray, DataMut, Dimension, IxDyn, Zip};

use super::{unary, CHUNK, THRESHOLD};
use crate::base::Shape;
use crate::error::{Error, Result};

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
    broadcast_dim(op, a, b).map(|d| d.slice().to_vec())
}

/// [`broadcast_shapes`] as an `ndarray` dimension (no heap allocation up to four axes: the per-operation
/// path of small tensors).
pub(crate) fn broadcast_dim(op: &'static str, a: &[usize], b: &[usize]) -> Result<IxDyn> {
    if a == b {
        return Ok(IxDyn(a));
    }
    let n = a.len().max(b.len());
    let mut out = IxDyn::zeros(n);
    for i in 0..n {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        out[i] = match (da, db) {
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
    A: Copy + Default + Send + Sync + 'static,
    B: Copy + Default + Send + Sync + 'static,
    C: Copy + Send + Sync + Default + 'static,
{
    let dim = broadcast_dim(op, a.shape(), b.shape())?;
    let shape = dim.slice();
    let n: usize = shape.iter().product();
    // An operand that is one value per row of the output (LayerNorm's mean against its input): each value
    // spread over a row, without a copy of the operand at the output's shape.
    if let Some(out) = spread_pair(a, b, shape, &f) {
        return Ok(out.into_array(dim));
    }
    let (a_full, b_full);
    let mut la = layout(a, shape);
    let lb = match layout(b, shape) {
        Some(l) => l,
        None => {
            b_full = materialize(b, shape);
            Lay::Full(b_full.as_slice().expect("standard layout"))
        }
    };
    // The loops below take (full, any), (one, full or one), (tile, full); `a` is materialized otherwise (a one
    // or tile beside a tile, a tile beside a one).
    let handled = matches!(
        (&la, &lb),
        (Some(Lay::Full(_)), _) | (Some(Lay::One(_)), Lay::Full(_) | Lay::One(_)) | (Some(Lay::Tile(_)), Lay::Full(_))
    );
    if !handled {
        a_full = materialize(a, shape);
        la = Some(Lay::Full(a_full.as_slice().expect("standard layout")));
    }
    let la = la.expect("set above");
    if n < THRESHOLD {
        // One thread: build the output by extending an empty vector (no zero-fill pass, no pool).
        let out: Vec<C> = match (la, lb) {
            (Lay::Full(x), Lay::Full(y)) => x.iter().zip(y).map(|(&x, &y)| f(x, y)).collect(),
            (Lay::Full(x), Lay::One(y)) => x.iter().map(|&x| f(x, y)).collect(),
            (Lay::One(x), Lay::Full(y)) => y.iter().map(|&y| f(x, y)).collect(),
            (Lay::Full(x), Lay::Tile(y)) => {
                let mut out = Vec::with_capacity(n);
                x.chunks(y.len()).for_each(|x| out.extend(x.iter().zip(y).map(|(&x, &y)| f(x, y))));
                out
            }
            (Lay::Tile(x), Lay::Full(y)) => {
                let mut out = Vec::with_capacity(n);
                y.chunks(x.len()).for_each(|y| out.extend(x.iter().zip(y).map(|(&x, &y)| f(x, y))));
                out
            }
            (Lay::One(x), Lay::One(y)) => vec![f(x, y); n],
            _ => unreachable!("other pairs of operands are materialized above"),
        };
        return Ok(ArrayD::from_shape_vec(dim, out).expect("one value per position"));
    }
    let mut buf = super::buffer::alloc::<C>(n);
    let out = buf.as_mut_slice();
    match (la, lb) {
        (Lay::Full(x), Lay::Full(y)) => zip_slices(x, y, out, f),
        (Lay::Full(x), Lay::One(y)) => unary::map_slice(x, out, |x| f(x, y)),
        (Lay::One(x), Lay::Full(y)) => unary::map_slice(y, out, |y| f(x, y)),
        (Lay::Full(x), Lay::Tile(y)) => {
            tiled(out, y.len(), |o, i| o.iter_mut().zip(&x[i..]).zip(y).for_each(|((o, &x), &y)| *o = f(x, y)))
        }
        (Lay::Tile(x), Lay::Full(y)) => {
            tiled(out, x.len(), |o, i| o.iter_mut().zip(x).zip(&y[i..]).for_each(|((o, &x), &y)| *o = f(x, y)))
        }
        (Lay::One(x), Lay::One(y)) => unary::fill(out, f(x, y)),
        _ => unreachable!("other pairs of operands are materialized above"),
    }
    Ok(buf.into_array(dim))
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
    A: Copy + Default + Send + Sync + 'static,
    B: Copy + Default + Send + Sync + 'static,
    C: Copy + Default + Send + Sync + 'static,
    D: Copy + Send + Sync + Default + 'static,
{
    let ab = broadcast_shapes(op, a.shape(), b.shape())?;
    let shape = broadcast_shapes(op, &ab, c.shape()).map_err(|_| Error::Broadcast {
        op,
        lhs: Shape::from(ab.clone()),
        rhs: Shape::from(c.shape()),
    })?;
    let (a, b, c) = (materialize(a, &shape), materialize(b, &shape), materialize(c, &shape));
    let mut out = super::buffer::alloc::<D>(a.len());
    let (sa, sb, sc) = (a.as_slice().expect("std"), b.as_slice().expect("std"), c.as_slice().expect("std"));
    // A range loop over slices cut to the block's length: the compiler drops the bounds checks and inlines the
    // loop and `f` into the dispatched function (a three-way `zip` stayed an out-of-line `fold` on the baseline
    // target, so an activation's backward called the C library's `fmaf`).
    let leaf = |o: &mut [D], start: usize| {
        let n = o.len();
        let (x, y, z) = (&sa[start..start + n], &sb[start..start + n], &sc[start..start + n]);
        super::simd::dispatch(|| {
            for j in 0..n {
                o[j] = f(x[j], y[j], z[j]);
            }
        })
    };
    let out_slice = out.as_mut_slice();
    if out_slice.len() < THRESHOLD {
        leaf(out_slice, 0);
    } else {
        super::par_chunks_mut(out_slice, CHUNK, &|i, o| leaf(o, i * CHUNK));
    }
    Ok(out.into_arrayd(&shape))
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
    B: Copy + Default + Send + Sync + 'static,
{
    let dim = broadcast_dim(op, dst.shape(), src.shape())?;
    let shape = dim.slice();
    if shape != dst.shape() {
        return Err(Error::Broadcast { op, lhs: Shape::from(dst.shape()), rhs: Shape::from(src.shape()) });
    }
    if let (Some((y, width)), Some(d)) = (spread(src, shape), dst.as_slice_mut()) {
        tiled(d, width, |o, i| {
            let y = y[i / width];
            o.iter_mut().for_each(|x| *x = f(*x, y));
        });
        return Ok(());
    }
    let src_full;
    let ls = match layout(src, shape) {
        Some(l) => l,
        None => {
            src_full = materialize(src, shape);
            Lay::Full(src_full.as_slice().expect("standard layout"))
        }
    };
    let Some(d) = dst.as_slice_mut() else {
        // A strided destination: walk it with ndarray (rare: views are made contiguous before ops).
        let bv = src.broadcast(dim.clone()).expect("checked by broadcast_dim");
        Zip::from(dst).and(&bv).for_each(|x, &y| *x = f(*x, y));
        return Ok(());
    };
    match ls {
        Lay::Full(y) => super::zip_mut((d, y), |(x, y)| *x = f(*x, y)).expect("equal lengths"),
        Lay::One(y) => super::zip_mut((d,), |(x,)| *x = f(*x, y)).expect("one lane"),
        Lay::Tile(y) => tiled(d, y.len(), |o, _| o.iter_mut().zip(y).for_each(|(x, &y)| *x = f(*x, y))),
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
    let leaf = |o: &mut [C], x: &[A], y: &[B]| {
        super::simd::dispatch(|| o.iter_mut().zip(x.iter().zip(y)).for_each(|(o, (&x, &y))| *o = f(x, y)))
    };
    if out.len() < THRESHOLD {
        leaf(out, a, b);
    } else {
        super::par_chunks_mut(out, CHUNK, &|i, o| leaf(o, &a[i * CHUNK..], &b[i * CHUNK..]));
    }
}

/// How an operand lines up with the output: the whole output (`Full`), a contiguous block repeated along the
/// leading axes (`Tile`, a bias row), or one element (`One`).
enum Lay<'s, T> {
    Full(&'s [T]),
    Tile(&'s [T]),
    One(T),
}

fn layout<'s, T: Copy>(v: &'s ArrayViewD<'_, T>, shape: &[usize]) -> Option<Lay<'s, T>> {
    if v.len() == 1 {
        return v.first().map(|&x| Lay::One(x));
    }
    let s = v.as_slice()?;
    if v.shape() == shape {
        return Some(Lay::Full(s));
    }
    let first = v.shape().iter().position(|&d| d != 1).unwrap_or(v.ndim());
    let trailing = &v.shape()[first..];
    (!s.is_empty() && shape.ends_with(trailing)).then_some(Lay::Tile(s))
}

/// `v` as one value per row of `width` elements of `shape`: contiguous, of the same rank, equal to `shape` up
/// to some axis and 1 on every axis after it (a reduction with `keepdims` over the trailing axes).
fn spread<'s, T>(v: &'s ArrayViewD<'_, T>, shape: &[usize]) -> Option<(&'s [T], usize)> {
    if v.ndim() != shape.len() || v.shape() == shape {
        return None;
    }
    let s = v.as_slice()?;
    let k = v.shape().iter().rposition(|&d| d != 1).map_or(0, |p| p + 1);
    if k == 0 || v.shape()[..k] != shape[..k] {
        return None;
    }
    let width: usize = shape[k..].iter().product();
    (width > 1 && !s.is_empty()).then_some((s, width))
}

/// `f(a, b)` into a new buffer when one operand has the output's shape (contiguous) and the other is
/// [`spread`] over its rows; `None` otherwise.
fn spread_pair<A, B, C>(
    a: &ArrayViewD<'_, A>,
    b: &ArrayViewD<'_, B>,
    shape: &[usize],
    f: &(impl Fn(A, B) -> C + Sync + Send),
) -> Option<super::buffer::Buffer<C>>
where
    A: Copy + Send + Sync,
    B: Copy + Send + Sync,
    C: Copy + Send + Sync + Default + 'static,
{
    if let (Some(x), Some((y, width))) = (whole(a, shape), spread(b, shape)) {
        return Some(spread_over_rows(x, y, width, f));
    }
    if let (Some((x, width)), Some(y)) = (spread(a, shape), whole(b, shape)) {
        return Some(spread_over_rows(y, x, width, |y, x| f(x, y)));
    }
    None
}

/// `v`'s elements when it has the output's `shape` and is contiguous.
fn whole<'s, T>(v: &'s ArrayViewD<'_, T>, shape: &[usize]) -> Option<&'s [T]> {
    v.as_slice().filter(|_| v.shape() == shape)
}

/// `g(full[i], rows[i / width])` for every element of `full`, into a new buffer.
fn spread_over_rows<X, Y, C>(
    full: &[X],
    rows: &[Y],
    width: usize,
    g: impl Fn(X, Y) -> C + Sync + Send,
) -> super::buffer::Buffer<C>
where
    X: Copy + Send + Sync,
    Y: Copy + Send + Sync,
    C: Copy + Send + Sync + Default + 'static,
{
    let mut buf = super::buffer::alloc::<C>(full.len());
    tiled(buf.as_mut_slice(), width, |o, i| {
        let y = rows[i / width];
        o.iter_mut().zip(&full[i..]).for_each(|(o, &x)| *o = g(x, y));
    });
    buf
}

/// `v` broadcast to `shape` in standard layout: borrowed when it already is (an operand of the output's shape),
/// else copied by [`super::layout::to_standard`].
fn materialize<'a, T: Copy + Default + Send + Sync + 'static>(
    v: &'a ArrayViewD<'_, T>,
    shape: &[usize],
) -> CowArray<'a, T, IxDyn> {
    super::layout::standard(v.broadcast(IxDyn(shape)).expect("checked by broadcast_shapes"))
}

/// Runs `f(block, offset)` over `out` cut into blocks of whole rows of `row` elements, in parallel from
/// [`THRESHOLD`] elements.
fn tiled<C: Send>(out: &mut [C], row: usize, f: impl Fn(&mut [C], usize) + Sync + Send) {
    let rows_per_task = (CHUNK / row).max(1);
    let per_row = |k: usize, block: &mut [C]| {
        let base = k * rows_per_task * row;
        super::simd::dispatch(|| {
            for (r, o) in block.chunks_mut(row).enumerate() {
                f(o, base + r * row);
            }
        })
    };
    if out.len() < THRESHOLD {
        out.chunks_mut(rows_per_task * row).enumerate().for_each(|(k, block)| per_row(k, block));
    } else {
        super::par_chunks_mut(out, rows_per_task * row, &per_row);
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
