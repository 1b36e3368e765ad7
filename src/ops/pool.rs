//! [`max_pool2d`] and [`avg_pool2d`]: 2-D pooling of NHWC images (`keras.ops.max_pool`, `keras.ops.average_pool`,
//! channels_last) and their backward, as Keras computes them on JAX.
//!
//! The forward writes each output row `(n, oh)` in one task. The backward gathers: each input row `(n, ih)` is
//! written by one task that adds the cotangents of the windows covering it in a fixed order (output rows, then
//! output columns, increasing: the order of XLA's scatter), so results are bit-identical at any thread count.
//! Max pooling sends each output's cotangent to one position of its window, the one JAX's
//! `select_and_scatter_add` with `ge` selects: the first maximum in row-major window order (see
//! [`max_pool2d`]).

use super::conv::{check_positive, compute_dtype, contiguous, float_dtype, Axis, Elem, Padding};
use super::trace;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::kernels;
use crate::tensor::Tensor;

/// The options of [`max_pool2d`] and [`avg_pool2d`]: `pool_size` (height, width), `strides` (`None`: the pool
/// size, as Keras) and `padding` (Keras's default `Valid`).
///
/// # Examples
/// ```
/// use purestate::ops::{Padding, Pool2d};
/// let opts = Pool2d::new([3, 3]).strides([2, 2]).padding(Padding::Same);
/// assert_eq!(opts, Pool2d { pool_size: [3, 3], strides: Some([2, 2]), padding: Padding::Same });
/// assert_eq!(Pool2d::new([2, 2]).strides, None); // steps of the pool size
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pool2d {
    /// Window height and width; each must be positive.
    pub pool_size: [usize; 2],
    /// Steps of the window along height and width; `None` steps by the pool size. Each must be positive.
    pub strides: Option<[usize; 2]>,
    /// `Valid` (windows inside the input) or `Same` (XLA's split; padding is left out of the windows).
    pub padding: Padding,
}

impl Pool2d {
    /// Windows of `pool_size`, stepping by the pool size, `Padding::Valid` (Keras's defaults).
    pub fn new(pool_size: [usize; 2]) -> Self {
        Pool2d { pool_size, strides: None, padding: Padding::Valid }
    }

    /// These options with `strides` (height, width).
    pub fn strides(self, strides: [usize; 2]) -> Self {
        Pool2d { strides: Some(strides), ..self }
    }

    /// These options with `padding`.
    pub fn padding(self, padding: Padding) -> Self {
        Pool2d { padding, ..self }
    }
}

/// The maximum of each window of `x`, `(batch, height, width, channels)`: `keras.ops.max_pool(x, pool_size,
/// strides, padding, data_format="channels_last")` on JAX. The result is `(batch, out_height, out_width,
/// channels)` in `x`'s dtype; a NaN in a window makes its maximum NaN (as `lax.max`).
///
/// The gradient goes to one position per window, as JAX's `select_and_scatter_add` with `ge` picks it: walking
/// the window's positions inside the input in row-major order, the candidate replaces the current choice unless
/// `current >= candidate`. So the first maximum wins a tie, and a NaN (which fails every comparison) is taken
/// when met and left for the next position. A position chosen by several overlapping windows receives the sum.
///
/// Cost: `O(N*OH*OW*C*KH*KW)`, parallel over output rows (the backward over input rows); float16 and bfloat16
/// compute in float32 (exactly: a maximum needs no rounding).
///
/// # Errors
/// [`Error::UnsupportedDType`] for a non-float `x`; [`Error::InvalidShape`] when `x` is not 4-D or the window
/// is larger than the input with `Padding::Valid`; [`Error::InvalidArgument`] for a zero pool size or stride.
///
/// # Examples
/// ```
/// use purestate::{ops::{max_pool2d, Pool2d}, Tensor};
/// let x = Tensor::from_shape_vec([1, 2, 4, 1], vec![1.0f32, 5.0, 2.0, 2.0, 3.0, 0.0, 2.0, -1.0])?;
/// let z = max_pool2d(&x, Pool2d::new([2, 2]))?;
/// assert_eq!((z.dims(), z.to_vec::<f32>()?), (&[1, 1, 2, 1][..], vec![5.0, 2.0]));
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn max_pool2d(x: &Tensor, opts: Pool2d) -> Result<Tensor> {
    pool(Kind::Max, x, opts)
}

/// The mean of each window of `x`, `(batch, height, width, channels)`: `keras.ops.average_pool(x, pool_size,
/// strides, padding, data_format="channels_last")` on JAX. With `Padding::Same` a window at the border is
/// divided by the number of its positions inside the input (padding is not counted, as Keras's JAX backend).
/// The gradient spreads each output's cotangent, divided by that count, over its window. Dividing is
/// multiplying by the reciprocal rounded to the compute type, as XLA compiles Keras's `pooled / counts`: with
/// window sums in row-major order and the gradient summed in output order, values and gradients are those of
/// JAX bit for bit (on the fixture's float32 cases).
///
/// Cost: `O(N*OH*OW*C*KH*KW)`, parallel over output rows (the backward over input rows); window sums in
/// row-major order; float16 and bfloat16 compute in float32 and round once.
///
/// # Errors
/// As [`max_pool2d`].
///
/// # Examples
/// ```
/// use purestate::{ops::{avg_pool2d, Padding, Pool2d}, Tensor};
/// let x = Tensor::from_shape_vec([1, 1, 3, 1], vec![1.0f32, 2.0, 6.0])?;
/// let z = avg_pool2d(&x, Pool2d::new([1, 2]).strides([1, 2]).padding(Padding::Same))?;
/// assert_eq!(z.to_vec::<f32>()?, vec![1.5, 6.0]); // the last window holds one element
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn avg_pool2d(x: &Tensor, opts: Pool2d) -> Result<Tensor> {
    pool(Kind::Avg, x, opts)
}

impl Tensor {
    /// This NHWC tensor max-pooled; see [`max_pool2d`].
    ///
    /// # Errors
    /// As [`max_pool2d`].
    pub fn max_pool2d(&self, opts: Pool2d) -> Result<Tensor> {
        max_pool2d(self, opts)
    }

    /// This NHWC tensor average-pooled; see [`avg_pool2d`].
    ///
    /// # Errors
    /// As [`avg_pool2d`].
    pub fn avg_pool2d(&self, opts: Pool2d) -> Result<Tensor> {
        avg_pool2d(self, opts)
    }
}

/// Which reduction a pool applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Max,
    Avg,
}

impl Kind {
    const fn name(self) -> &'static str {
        match self {
            Kind::Max => "max_pool2d",
            Kind::Avg => "avg_pool2d",
        }
    }
}

/// The shapes of one pool: batch, channels, and the two spatial axes (dilation 1).
#[derive(Clone, Copy, Debug)]
struct PoolGeometry {
    n: usize,
    c: usize,
    h: Axis,
    w: Axis,
}

impl PoolGeometry {
    fn new(kind: Kind, x: &Tensor, opts: &Pool2d) -> Result<PoolGeometry> {
        let op = kind.name();
        if x.ndim() != 4 {
            return Err(Error::InvalidShape {
                op,
                shape: x.shape(),
                reason: "the input must be 4-D (batch, height, width, channels)".into(),
            });
        }
        check_positive(op, "pool_size", opts.pool_size)?;
        let strides = opts.strides.unwrap_or(opts.pool_size);
        check_positive(op, "strides", strides)?;
        let (d, [ph, pw], [sh, sw]) = (x.dims(), opts.pool_size, strides);
        match (Axis::new(opts.padding, d[1], ph, sh, 1), Axis::new(opts.padding, d[2], pw, sw, 1)) {
            (Some(h), Some(w)) => Ok(PoolGeometry { n: d[0], c: d[3], h, w }),
            _ => Err(Error::InvalidShape {
                op,
                shape: x.shape(),
                reason: format!(
                    "the pool window {ph}x{pw} is larger than the input's {}x{} with padding valid",
                    d[1], d[2]
                ),
            }),
        }
    }

    /// Elements of the output.
    fn out_len(&self) -> usize {
        self.n * self.h.out * self.w.out * self.c
    }

    /// Positions of the window of output `(oh, ow)` that lie inside the input.
    fn count(&self, oh: usize, ow: usize) -> usize {
        self.h.taps_inside(oh).len() * self.w.taps_inside(ow).len()
    }
}

/// Checks, computes in `f32` or `f64`, and records the backward when `x` is traced.
fn pool(kind: Kind, x: &Tensor, opts: Pool2d) -> Result<Tensor> {
    let geo = PoolGeometry::new(kind, x, &opts)?;
    let dtype = float_dtype(kind.name(), &[x])?;
    match compute_dtype(dtype) {
        DType::Float64 => run::<f64>(kind, x, geo, dtype),
        _ => run::<f32>(kind, x, geo, dtype),
    }
}

fn run<T: Elem>(kind: Kind, x: &Tensor, geo: PoolGeometry, dtype: DType) -> Result<Tensor> {
    let xc = x.detached().cast(T::DTYPE);
    let z = forward::<T>(kind, &xc, &geo)?.cast(dtype);
    if !trace::any_traced(&[x]) {
        return Ok(z);
    }
    Ok(trace::custom(&[x], z, move |g, _| {
        let g = g.cast(T::DTYPE);
        let dx = match kind {
            Kind::Max => max_grad::<T>(&g, &xc, &geo)?,
            Kind::Avg => avg_grad::<T>(&g, &geo)?,
        };
        Ok(vec![Some(dx)])
    }))
}

/// The pooled output: each output row `(n, oh)` in one call, each window walked row by row.
fn forward<T: Elem>(kind: Kind, x: &Tensor, geo: &PoolGeometry) -> Result<Tensor> {
    let xa = contiguous::<T>(x)?;
    let xs = xa.as_slice().expect("standard layout");
    let (c, h, w) = (geo.c, geo.h, geo.w);
    let image = h.input * w.input * c;
    let mut out = kernels::buffer::alloc::<T>(geo.out_len());
    let work = geo.out_len() * h.taps * w.taps;
    kernels::for_rows(out.as_mut_slice(), w.out * c, work, |r, dst| {
        let (n, oh) = (r / h.out, r % h.out);
        let img = &xs[n * image..(n + 1) * image];
        let rows = h.taps_inside(oh);
        for (ow, o) in dst.chunks_exact_mut(c).enumerate() {
            let cols = w.taps_inside(ow);
            o.fill(if kind == Kind::Max { T::NEG_INFINITY } else { T::default() });
            for th in rows.clone() {
                let start = (oh * h.stride + th - h.pad) * w.input + ow * w.stride + cols.start - w.pad;
                for px in xs_window(img, start, cols.len(), c) {
                    match kind {
                        // `lax.max`: NaN wins.
                        Kind::Max => o.iter_mut().zip(px).for_each(|(a, &v)| {
                            if v > *a || v.nan() {
                                *a = v;
                            }
                        }),
                        Kind::Avg => o.iter_mut().zip(px).for_each(|(a, &v)| *a = *a + v),
                    }
                }
            }
            if kind == Kind::Avg {
                let scale = reciprocal::<T>(rows.len() * cols.len());
                o.iter_mut().for_each(|a| *a = *a * scale);
            }
        }
    });
    Ok(Tensor::from(out.into_arrayd(&[geo.n, h.out, w.out, c])))
}

/// The `len` pixels of `c` channels of `img` from pixel `start` on.
fn xs_window<T>(img: &[T], start: usize, len: usize, c: usize) -> std::slice::ChunksExact<'_, T> {
    img[start * c..(start + len) * c].chunks_exact(c)
}

/// The gradient of [`max_pool2d`]: the window tap each output selects (JAX's rule), then each input row gathers
/// the cotangents of the outputs that selected one of its positions.
fn max_grad<T: Elem>(g: &Tensor, x: &Tensor, geo: &PoolGeometry) -> Result<Tensor> {
    let (xa, ga) = (contiguous::<T>(x)?, contiguous::<T>(g)?);
    let (xs, gs) = (xa.as_slice().expect("standard layout"), ga.as_slice().expect("standard layout"));
    let (c, h, w) = (geo.c, geo.h, geo.w);
    let image = h.input * w.input * c;
    let work = geo.out_len() * h.taps * w.taps;
    let mut sel = kernels::buffer::alloc::<u32>(geo.out_len());
    kernels::for_rows(sel.as_mut_slice(), w.out * c, work, |r, dst| {
        let (n, oh) = (r / h.out, r % h.out);
        let img = &xs[n * image..(n + 1) * image];
        let rows = h.taps_inside(oh);
        let mut best = vec![T::default(); c];
        for (ow, s) in dst.chunks_exact_mut(c).enumerate() {
            let cols = w.taps_inside(ow);
            let mut first = true;
            for th in rows.clone() {
                let start = (oh * h.stride + th - h.pad) * w.input + ow * w.stride + cols.start - w.pad;
                for (tw, px) in cols.clone().zip(xs_window(img, start, cols.len(), c)) {
                    let t = (th * w.taps + tw) as u32;
                    if first {
                        best.copy_from_slice(px);
                        s.fill(t);
                        first = false;
                        continue;
                    }
                    // select(current, candidate) = current >= candidate keeps the current choice.
                    for ((b, s), &v) in best.iter_mut().zip(s.iter_mut()).zip(px) {
                        if *b < v || b.nan() || v.nan() {
                            *b = v;
                            *s = t;
                        }
                    }
                }
            }
        }
    });
    let sel = sel.into_arrayd(&[geo.out_len()]);
    let chosen = sel.as_slice().expect("standard layout");
    let dx = gather::<T>(geo, |_, ow, th, tw, dst, base| {
        let t = (th * w.taps + tw) as u32;
        let at = base + ow * c;
        for ((d, &gv), &s) in dst.iter_mut().zip(&gs[at..at + c]).zip(&chosen[at..at + c]) {
            // Adding +0 leaves every sum as it is (a sum that starts at +0 is never -0), so no branch is needed.
            *d = *d + if s == t { gv } else { T::default() };
        }
    });
    kernels::buffer::recycle(sel.into_shared());
    Ok(dx)
}

/// The gradient of [`avg_pool2d`]: each input position sums `g * (1 / count)` of the windows covering it.
fn avg_grad<T: Elem>(g: &Tensor, geo: &PoolGeometry) -> Result<Tensor> {
    let ga = contiguous::<T>(g)?;
    let gs = ga.as_slice().expect("standard layout");
    let c = geo.c;
    Ok(gather::<T>(geo, |oh, ow, _, _, dst, base| {
        let scale = reciprocal::<T>(geo.count(oh, ow));
        let at = base + ow * c;
        for (d, &gv) in dst.iter_mut().zip(&gs[at..at + c]) {
            *d = *d + gv * scale;
        }
    }))
}

/// `1 / n`, rounded to `T`: XLA turns a division by a constant into this product.
fn reciprocal<T: Elem>(n: usize) -> T {
    <T as super::num::Real>::ONE / T::count(n)
}

/// The input-shaped sum of per-window contributions: input row `(n, ih)` is written by one call, which for
/// every output row `oh` covering it (increasing) and every output column `ow` (increasing) calls
/// `add(oh, ow, th, tw, pixel, base)` on each pixel `iw` of the row that tap `(th, tw)` of that window reads;
/// `base` is the offset of output row `(n, oh)` in an output-shaped buffer.
fn gather<T: Elem>(
    geo: &PoolGeometry,
    add: impl Fn(usize, usize, usize, usize, &mut [T], usize) + Sync + Send,
) -> Tensor {
    let (c, h, w) = (geo.c, geo.h, geo.w);
    let dims = [geo.n, h.input, w.input, c];
    let mut dx = kernels::buffer::alloc::<T>(dims.iter().product());
    let work = dx.len() + geo.out_len() * h.taps * w.taps;
    kernels::for_rows(dx.as_mut_slice(), w.input * c, work, |r, dst| {
        dst.fill(T::default());
        let (n, ih) = (r / h.input, r % h.input);
        // Taps in decreasing order are output rows in increasing order.
        for th in (0..h.taps).rev() {
            let Some(oh) = h.output_of(ih, th) else { continue };
            let base = (n * h.out + oh) * w.out * c;
            for ow in 0..w.out {
                for tw in w.taps_inside(ow) {
                    let iw = ow * w.stride + tw - w.pad;
                    add(oh, ow, th, tw, &mut dst[iw * c..(iw + 1) * c], base);
                }
            }
        }
    });
    Tensor::from(dx.into_arrayd(&dims))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_pool_forward_propagates_nan() {
        let x = Tensor::from_shape_vec([1, 1, 4, 1], vec![1.0f32, f32::NAN, 3.0, 3.0]).unwrap();
        let z = max_pool2d(&x, Pool2d::new([1, 2])).unwrap().to_vec::<f32>().unwrap();
        assert!(z[0].is_nan() && z[1] == 3.0);
    }

    #[test]
    fn bad_options_are_errors_naming_the_op() {
        let x = Tensor::zeros([1, 3, 3, 2], DType::Float32);
        let err = max_pool2d(&x, Pool2d::new([4, 1])).unwrap_err();
        assert!(matches!(err, Error::InvalidShape { op: "max_pool2d", .. }));
        assert_eq!(
            err.to_string(),
            "max_pool2d: invalid shape (1, 3, 3, 2): the pool window 4x1 is larger than the input's 3x3 with padding valid"
        );
        assert_eq!(avg_pool2d(&x, Pool2d::new([4, 1]).padding(Padding::Same)).unwrap().dims(), &[1, 1, 3, 2]);
        let err = avg_pool2d(&x, Pool2d::new([2, 2]).strides([0, 1])).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { op: "avg_pool2d", arg: "strides", .. }));
        let err = avg_pool2d(&Tensor::zeros([3, 3, 2], DType::Float32), Pool2d::new([2, 2])).unwrap_err();
        assert!(matches!(err, Error::InvalidShape { op: "avg_pool2d", .. }));
        let err = max_pool2d(&Tensor::zeros([1, 3, 3, 2], DType::Int32), Pool2d::new([2, 2])).unwrap_err();
        assert!(matches!(err, Error::UnsupportedDType { op: "max_pool2d", dtype: DType::Int32 }));
    }
}
