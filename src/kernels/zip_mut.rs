//! [`zip_mut`]: one fused loop over several slices of one length, some written in place. The optimizers'
//! updates (`p -= lr * m / (sqrt(v) + eps)` with `m` and `v` updated in the same pass) are one call each.

use super::{CHUNK, THRESHOLD};
use crate::error::{Error, Result};

/// One slice taking part in [`zip_mut`]: `&mut [T]` yields `&mut T` (written in place), `&[T]` yields `T`.
pub trait Lane: Send + Sized {
    /// What the loop body receives for this lane.
    type Item;
    /// The iterator over the lane's items.
    type Iter: Iterator<Item = Self::Item>;
    /// Number of elements.
    fn len(&self) -> usize;
    /// True when the lane has no element.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Splits into `[..mid]` and `[mid..]`.
    fn split_at(self, mid: usize) -> (Self, Self);
    /// The items, in order.
    fn into_items(self) -> Self::Iter;
}

impl<'a, T: Send> Lane for &'a mut [T] {
    type Item = &'a mut T;
    type Iter = std::slice::IterMut<'a, T>;
    fn len(&self) -> usize {
        <[T]>::len(self)
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        self.split_at_mut(mid)
    }
    fn into_items(self) -> Self::Iter {
        self.iter_mut()
    }
}

impl<'a, T: Copy + Sync> Lane for &'a [T] {
    type Item = T;
    type Iter = std::iter::Copied<std::slice::Iter<'a, T>>;
    fn len(&self) -> usize {
        <[T]>::len(self)
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        <[T]>::split_at(self, mid)
    }
    fn into_items(self) -> Self::Iter {
        self.iter().copied()
    }
}

/// A lane updated out of place: its item is `(&mut new, old)`, the element of `dst` to write and the element
/// of `src` (the two do not overlap). The optimizers' copy path reads the old state and writes the new one in
/// one loop through it, so the copy a persistent state needs (its old buffer stays with a snapshot) costs no
/// pass of its own.
///
/// # Examples
/// ```
/// use purestate::kernels::{zip_mut, Moved};
/// let old = vec![1.0f32, 2.0, 3.0];
/// let mut new = vec![0.0f32; 3];
/// let g = vec![0.5f32; 3];
/// zip_mut((Moved::new(&old, &mut new)?, &g[..]), |((p_new, p), g)| *p_new = p - g)?;
/// assert_eq!(new, [0.5, 1.5, 2.5]);
/// assert_eq!(old, [1.0, 2.0, 3.0]);
/// # Ok::<(), purestate::Error>(())
/// ```
#[derive(Debug)]
pub struct Moved<'a, T> {
    src: &'a [T],
    dst: &'a mut [T],
}

impl<'a, T> Moved<'a, T> {
    /// The lane reading `src` and writing `dst`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the two lengths differ.
    pub fn new(src: &'a [T], dst: &'a mut [T]) -> Result<Self> {
        if src.len() != dst.len() {
            return Err(Error::InvalidArgument {
                op: "Moved::new",
                arg: "dst",
                reason: format!("source and destination lengths differ: {} and {}", src.len(), dst.len()),
            });
        }
        Ok(Moved { src, dst })
    }
}

impl<'a, T: Copy + Send + Sync> Lane for Moved<'a, T> {
    type Item = (&'a mut T, T);
    type Iter = std::iter::Zip<std::slice::IterMut<'a, T>, std::iter::Copied<std::slice::Iter<'a, T>>>;
    fn len(&self) -> usize {
        self.dst.len()
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (s0, s1) = self.src.split_at(mid);
        let (d0, d1) = self.dst.split_at_mut(mid);
        (Moved { src: s0, dst: d0 }, Moved { src: s1, dst: d1 })
    }
    fn into_items(self) -> Self::Iter {
        self.dst.iter_mut().zip(self.src.iter().copied())
    }
}

/// A tuple of [`Lane`]s walked together by [`zip_mut`]: `(a,)` up to `(a, b, c, d, e, f)`.
pub trait Lanes: Send + Sized {
    /// The tuple of items the loop body receives.
    type Item;
    /// The lengths of the lanes, in order.
    fn lens(&self) -> Vec<usize>;
    /// The lanes' common length, or `None` when they differ (no allocation on the tuple impls).
    fn common_len(&self) -> Option<usize> {
        let lens = self.lens();
        lens.iter().all(|&l| l == lens[0]).then_some(lens[0])
    }
    /// Splits every lane at `mid`.
    fn split_at(self, mid: usize) -> (Self, Self);
    /// Runs `f` on every tuple of items, in order.
    fn for_each(self, f: &(impl Fn(Self::Item) + Sync));
}

macro_rules! lanes_tuple {
    ($(($($l:ident $v:ident),+))+) => {$(
        impl<$($l: Lane),+> Lanes for ($($l,)+) {
            type Item = ($($l::Item,)+);
            fn lens(&self) -> Vec<usize> {
                let ($($v,)+) = self;
                vec![$($v.len()),+]
            }
            fn common_len(&self) -> Option<usize> {
                let ($($v,)+) = self;
                let lens = [$($v.len()),+];
                lens.iter().all(|&l| l == lens[0]).then_some(lens[0])
            }
            fn split_at(self, mid: usize) -> (Self, Self) {
                let ($($v,)+) = self;
                $(let $v = $v.split_at(mid);)+
                (($($v.0,)+), ($($v.1,)+))
            }
            #[inline(always)]
            fn for_each(self, f: &(impl Fn(Self::Item) + Sync)) {
                lanes_tuple!(@zip f; self; $($l $v),+);
            }
        }
    )+};
    (@zip $f:ident; $s:ident; $l1:ident $v1:ident) => {{
        let ($v1,) = $s;
        $v1.into_items().for_each(|$v1| $f(($v1,)));
    }};
    (@zip $f:ident; $s:ident; $l1:ident $v1:ident, $l2:ident $v2:ident) => {{
        let ($v1, $v2) = $s;
        $v1.into_items().zip($v2.into_items()).for_each(|($v1, $v2)| $f(($v1, $v2)));
    }};
    (@zip $f:ident; $s:ident; $l1:ident $v1:ident, $l2:ident $v2:ident, $l3:ident $v3:ident) => {{
        let ($v1, $v2, $v3) = $s;
        $v1.into_items().zip($v2.into_items()).zip($v3.into_items())
            .for_each(|(($v1, $v2), $v3)| $f(($v1, $v2, $v3)));
    }};
    (@zip $f:ident; $s:ident; $l1:ident $v1:ident, $l2:ident $v2:ident, $l3:ident $v3:ident, $l4:ident $v4:ident) => {{
        let ($v1, $v2, $v3, $v4) = $s;
        $v1.into_items().zip($v2.into_items()).zip($v3.into_items()).zip($v4.into_items())
            .for_each(|((($v1, $v2), $v3), $v4)| $f(($v1, $v2, $v3, $v4)));
    }};
    (@zip $f:ident; $s:ident; $l1:ident $v1:ident, $l2:ident $v2:ident, $l3:ident $v3:ident, $l4:ident $v4:ident,
        $l5:ident $v5:ident) => {{
        let ($v1, $v2, $v3, $v4, $v5) = $s;
        $v1.into_items().zip($v2.into_items()).zip($v3.into_items()).zip($v4.into_items()).zip($v5.into_items())
            .for_each(|(((($v1, $v2), $v3), $v4), $v5)| $f(($v1, $v2, $v3, $v4, $v5)));
    }};
    (@zip $f:ident; $s:ident; $l1:ident $v1:ident, $l2:ident $v2:ident, $l3:ident $v3:ident, $l4:ident $v4:ident,
        $l5:ident $v5:ident, $l6:ident $v6:ident) => {{
        let ($v1, $v2, $v3, $v4, $v5, $v6) = $s;
        $v1.into_items().zip($v2.into_items()).zip($v3.into_items()).zip($v4.into_items()).zip($v5.into_items())
            .zip($v6.into_items())
            .for_each(|((((($v1, $v2), $v3), $v4), $v5), $v6)| $f(($v1, $v2, $v3, $v4, $v5, $v6)));
    }};
}

lanes_tuple! {
    (A a)
    (A a, B b)
    (A a, B b, C c)
    (A a, B b, C c, D d)
    (A a, B b, C c, D d, E e)
    (A a, B b, C c, D d, E e, F f)
}

/// Runs `f` once per index over a tuple of slices of one length, in one pass: mutable slices are updated in
/// place, shared ones are read. Below [`THRESHOLD`] elements the loop stays on the calling thread; above, it
/// runs over chunks of [`CHUNK`] elements in parallel. Each element is visited exactly once, so the result
/// does not depend on the thread count.
///
/// # Errors
/// [`Error::InvalidArgument`] when the slices' lengths differ.
///
/// # Examples
/// A fused SGD-with-momentum step, `v = momentum * v - lr * g; p += v`:
/// ```
/// use purestate::kernels::zip_mut;
/// let (mut p, mut v, g) = (vec![1.0f32; 4], vec![0.5f32; 4], vec![2.0f32; 4]);
/// zip_mut((&mut p[..], &mut v[..], &g[..]), |(p, v, g)| {
///     *v = 0.9 * *v - 0.1 * g;
///     *p += *v;
/// })?;
/// assert_eq!(p[0], 1.0 + (0.9 * 0.5 - 0.1 * 2.0));
/// assert!(zip_mut((&mut p[..], &g[..3]), |(p, g)| *p += g).is_err());
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn zip_mut<L: Lanes>(lanes: L, f: impl Fn(L::Item) + Sync + Send) -> Result<()> {
    let Some(n) = lanes.common_len() else {
        return Err(Error::InvalidArgument {
            op: "zip_mut",
            arg: "lanes",
            reason: format!("every slice must have the same length, got lengths {:?}", lanes.lens()),
        });
    };
    if n < THRESHOLD {
        super::simd::dispatch(|| lanes.for_each(&f));
        return Ok(());
    }
    let mut chunks = Vec::with_capacity(n.div_ceil(CHUNK));
    let mut rest = lanes;
    for _ in 0..(n - 1) / CHUNK {
        let (head, tail) = rest.split_at(CHUNK);
        chunks.push(head);
        rest = tail;
    }
    chunks.push(rest);
    super::par_items(chunks, &|chunk: L| super::simd::dispatch(|| chunk.for_each(&f)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_element_once_at_every_size() {
        for n in [0, 1, CHUNK, THRESHOLD - 1, THRESHOLD, THRESHOLD + CHUNK + 3] {
            let mut a = vec![0u32; n];
            let mut b = vec![1u32; n];
            let c: Vec<u32> = (0..n as u32).collect();
            zip_mut((&mut a[..], &mut b[..], &c[..]), |(a, b, c)| {
                *a += c;
                *b += 1;
            })
            .unwrap();
            assert_eq!(a, c);
            assert!(b.iter().all(|&x| x == 2));
        }
    }

    #[test]
    fn six_lanes() {
        let mut a = vec![0.0f64; 3];
        let x = [1.0, 2.0, 3.0];
        zip_mut((&mut a[..], &x[..], &x[..], &x[..], &x[..], &x[..]), |(a, b, c, d, e, f)| *a = b + c + d + e + f)
            .unwrap();
        assert_eq!(a, vec![5.0, 10.0, 15.0]);
    }
}
