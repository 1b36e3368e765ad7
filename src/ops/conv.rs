//! [`conv2d`]: 2-D convolution of NHWC images with an HWIO kernel (`keras.ops.conv`, channels_last) and its
//! backward, plus [`Padding`] and the window arithmetic the pools share.
//!
//! The forward is one matrix product: the image patches are laid out as the rows of a `(N*OH*OW, KH*KW*C)`
//! matrix (im2col, one buffer per call, written in parallel over output rows) and multiplied by the kernel
//! seen as a `(KH*KW*C, O)` matrix on [`kernels::gemm`]; the product is already the NHWC output. The backward
//! is two more products: `d_kernel = patchesᵀ @ g` (the transpose read in place) and `d_patches = g @ kernelᵀ`,
//! which col2im sums back into the input's shape. col2im gathers: each input row (one image row of one sample)
//! is written by one task that adds its contributions in a fixed order (output rows, then output columns), so
//! the result is bit-identical at any thread count and no atomics are needed.

use std::ops::Range;
use std::str::FromStr;

use ndarray::{Array2, ArrayView2, Ix2};

use super::num::Real;
use super::trace;
use crate::dtype::{result_type, DType};
use crate::error::{Error, Result};
use crate::kernels;
use crate::tensor::{Element, Tensor};

/// How windows meet the border of the input: Keras's `padding` argument (`"valid"` or `"same"`).
///
/// # Examples
/// ```
/// use purestate::ops::Padding;
/// assert_eq!("same".parse::<Padding>()?, Padding::Same);
/// assert_eq!(Padding::default(), Padding::Valid);
/// assert!("full".parse::<Padding>().is_err());
/// # Ok::<(), purestate::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Padding {
    /// `"valid"`: every window lies inside the input; `out = floor((in - span) / stride) + 1`, where
    /// `span = (window - 1) * dilation + 1`.
    #[default]
    Valid,
    /// `"same"` (XLA's `SAME`): `out = ceil(in / stride)`; the input is padded by
    /// `max((out - 1) * stride + span - in, 0)` in all, the smaller half (rounded down) before. Convolution pads
    /// with zeros; pools leave the padding out of their windows.
    Same,
}

impl Padding {
    /// The Keras name: `"valid"` or `"same"`.
    pub const fn name(self) -> &'static str {
        match self {
            Padding::Valid => "valid",
            Padding::Same => "same",
        }
    }
}

impl FromStr for Padding {
    type Err = Error;

    /// Parses a Keras padding name, in any case (Keras lowercases it).
    fn from_str(s: &str) -> Result<Padding> {
        match s.to_ascii_lowercase().as_str() {
            "valid" => Ok(Padding::Valid),
            "same" => Ok(Padding::Same),
            _ => Err(Error::InvalidOption { option: "padding", got: s.to_string(), allowed: "valid, same" }),
        }
    }
}

/// The options of [`conv2d`], with Keras's defaults (`Conv2d::default()`: strides 1, `"valid"`, dilation 1).
/// Set fields directly or chain the methods of the same names.
///
/// # Examples
/// ```
/// use purestate::ops::{Conv2d, Padding};
/// let opts = Conv2d::default().strides([2, 2]).padding(Padding::Same);
/// assert_eq!(opts, Conv2d { strides: [2, 2], padding: Padding::Same, dilation: [1, 1] });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2d {
    /// Steps of the window along height and width (Keras `strides`); each must be positive.
    pub strides: [usize; 2],
    /// `Valid` (no padding) or `Same` (zero padding, XLA's split).
    pub padding: Padding,
    /// Spacing between the kernel's taps along height and width (Keras `dilation_rate`); each must be positive.
    pub dilation: [usize; 2],
}

impl Default for Conv2d {
    fn default() -> Self {
        Conv2d { strides: [1, 1], padding: Padding::Valid, dilation: [1, 1] }
    }
}

impl Conv2d {
    /// These options with `strides` (height, width).
    pub fn strides(self, strides: [usize; 2]) -> Self {
        Conv2d { strides, ..self }
    }

    /// These options with `padding`.
    pub fn padding(self, padding: Padding) -> Self {
        Conv2d { padding, ..self }
    }

    /// These options with `dilation` (height, width).
    pub fn dilation(self, dilation: [usize; 2]) -> Self {
        Conv2d { dilation, ..self }
    }
}

/// The 2-D convolution of `x`, `(batch, height, width, in_channels)`, with `kernel`,
/// `(kernel_height, kernel_width, in_channels, out_channels)`: `keras.ops.conv(x, kernel, strides, padding,
/// data_format="channels_last", dilation_rate)` on JAX (`lax.conv_general_dilated`, a cross-correlation). The
/// result is `(batch, out_height, out_width, out_channels)`, of the two dtypes promoted.
///
/// Cost: one im2col pass writing `N*OH*OW*KH*KW*C` elements (skipped for a 1x1 kernel with stride 1) and one
/// product of `N*OH*OW*KH*KW*C*O` multiply-adds on [`kernels::gemm`]; both parallel and bit-identical at any
/// thread count. float16 and bfloat16 compute in float32 and round once. Differentiable in both operands: when
/// the kernel is traced the patches are kept for its gradient (`KH*KW` times the input's size) until the
/// backward runs.
///
/// # Errors
/// [`Error::UnsupportedDType`] for a non-float operand; [`Error::InvalidShape`] when an operand is not 4-D, the
/// kernel's input channels are not the input's, the kernel has an empty spatial axis, or the dilated kernel is
/// larger than the input with `Padding::Valid`; [`Error::InvalidArgument`] for a zero stride or dilation.
///
/// # Examples
/// ```
/// use purestate::{ops::{conv2d, Conv2d, Padding}, Tensor};
/// let x = Tensor::from_shape_vec([1, 3, 3, 1], (1..=9).map(|v| v as f32).collect())?;
/// let k = Tensor::ones([2, 2, 1, 1], purestate::DType::Float32);
/// let valid = conv2d(&x, &k, Conv2d::default())?;
/// assert_eq!((valid.dims(), valid.to_vec::<f32>()?), (&[1, 2, 2, 1][..], vec![12.0, 16.0, 24.0, 28.0]));
/// let same = x.conv2d(&k, Conv2d::default().padding(Padding::Same))?; // padded after: 1 row, 1 column
/// assert_eq!(same.to_vec::<f32>()?, vec![12.0, 16.0, 9.0, 24.0, 28.0, 15.0, 15.0, 17.0, 9.0]);
/// assert!(conv2d(&x, &Tensor::ones([4, 4, 1, 1], purestate::DType::Float32), Conv2d::default()).is_err());
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn conv2d(x: &Tensor, kernel: &Tensor, opts: Conv2d) -> Result<Tensor> {
    let geo = ConvGeometry::new(x, kernel, &opts)?;
    let dtype = float_dtype(OP, &[x, kernel])?;
    match compute_dtype(dtype) {
        DType::Float64 => run::<f64>(x, kernel, geo, dtype),
        _ => run::<f32>(x, kernel, geo, dtype),
    }
}

impl Tensor {
    /// This NHWC tensor convolved with an HWIO `kernel`; see [`conv2d`].
    ///
    /// # Errors
    /// As [`conv2d`].
    pub fn conv2d(&self, kernel: &Tensor, opts: Conv2d) -> Result<Tensor> {
        conv2d(self, kernel, opts)
    }
}

const OP: &str = "conv2d";

/// The float element types the convolution and pooling loops compute in: `f32` (also for float16 and
/// bfloat16) and `f64`.
pub(super) trait Elem: kernels::gemm::Float + Real + Element {
    /// Negative infinity: the identity of `max`.
    const NEG_INFINITY: Self;
    /// `n` as this type (window sizes: exact).
    fn count(n: usize) -> Self;
    /// True for NaN.
    fn nan(self) -> bool;
}

impl Elem for f32 {
    const NEG_INFINITY: f32 = f32::NEG_INFINITY;
    fn count(n: usize) -> f32 {
        n as f32
    }
    fn nan(self) -> bool {
        self.is_nan()
    }
}

impl Elem for f64 {
    const NEG_INFINITY: f64 = f64::NEG_INFINITY;
    fn count(n: usize) -> f64 {
        n as f64
    }
    fn nan(self) -> bool {
        self.is_nan()
    }
}

/// The promoted dtype of `inputs`, which must all be floats.
pub(super) fn float_dtype(op: &'static str, inputs: &[&Tensor]) -> Result<DType> {
    if let Some(t) = inputs.iter().find(|t| !t.dtype().is_float()) {
        return Err(Error::UnsupportedDType { op, dtype: t.dtype() });
    }
    Ok(result_type(&inputs.iter().map(|t| t.dtype().into()).collect::<Vec<_>>(), DType::Float32))
}

/// The dtype a float dtype computes in: float64 for float64, float32 otherwise.
pub(super) fn compute_dtype(dtype: DType) -> DType {
    if dtype == DType::Float64 {
        DType::Float64
    } else {
        DType::Float32
    }
}

/// One spatial axis of a sliding window: how output positions and window taps map to input positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Axis {
    /// Input length.
    pub(super) input: usize,
    /// Taps of the window (kernel or pool size).
    pub(super) taps: usize,
    pub(super) stride: usize,
    pub(super) dilation: usize,
    /// Padding before the input.
    pub(super) pad: usize,
    /// Output length.
    pub(super) out: usize,
}

impl Axis {
    /// The axis for `padding`, or `None` when the dilated window is longer than the (unpadded) input with
    /// `Padding::Valid`. `taps`, `stride` and `dilation` must be positive.
    pub(super) fn new(padding: Padding, input: usize, taps: usize, stride: usize, dilation: usize) -> Option<Axis> {
        let span = (taps - 1) * dilation + 1;
        let (out, pad) = match padding {
            Padding::Valid if span > input => return None,
            Padding::Valid => ((input - span) / stride + 1, 0),
            Padding::Same => {
                let out = input.div_ceil(stride);
                let total = if out == 0 { 0 } else { ((out - 1) * stride + span).saturating_sub(input) };
                (out, total / 2)
            }
        };
        Some(Axis { input, taps, stride, dilation, pad, out })
    }

    /// The input position of tap `t` of output `o`, if inside the input.
    #[inline]
    pub(super) fn at(&self, o: usize, t: usize) -> Option<usize> {
        (o * self.stride + t * self.dilation).checked_sub(self.pad).filter(|&i| i < self.input)
    }

    /// The taps of output `o` that fall inside the input, a range (empty only for a dilated window that
    /// lies in the padding; never for the pools).
    pub(super) fn taps_inside(&self, o: usize) -> Range<usize> {
        let start = o * self.stride;
        let lo = self.pad.saturating_sub(start).div_ceil(self.dilation);
        let hi = (self.input + self.pad).saturating_sub(start).div_ceil(self.dilation).min(self.taps);
        lo..hi.max(lo)
    }

    /// The output position whose tap `t` reads input `i`, if any.
    #[inline]
    pub(super) fn output_of(&self, i: usize, t: usize) -> Option<usize> {
        let q = (i + self.pad).checked_sub(t * self.dilation)?;
        (q % self.stride == 0 && q / self.stride < self.out).then_some(q / self.stride)
    }
}

/// The shapes of one convolution: batch, channels in and out, and the two spatial axes.
#[derive(Clone, Copy, Debug)]
struct ConvGeometry {
    n: usize,
    c: usize,
    o: usize,
    h: Axis,
    w: Axis,
}

impl ConvGeometry {
    fn new(x: &Tensor, k: &Tensor, opts: &Conv2d) -> Result<ConvGeometry> {
        let shape_err = |t: &Tensor, reason: String| Error::InvalidShape { op: OP, shape: t.shape(), reason };
        if x.ndim() != 4 {
            return Err(shape_err(x, "the input must be 4-D (batch, height, width, channels)".into()));
        }
        if k.ndim() != 4 {
            return Err(shape_err(k, "the kernel must be 4-D (height, width, in_channels, out_channels)".into()));
        }
        let (xd, kd) = (x.dims(), k.dims());
        if kd[2] != xd[3] {
            return Err(shape_err(
                k,
                format!("the kernel takes {} input channels, the input {} has {}", kd[2], x.shape(), xd[3]),
            ));
        }
        if kd[0] == 0 || kd[1] == 0 {
            return Err(shape_err(k, "the kernel's height and width must be positive".into()));
        }
        check_positive(OP, "strides", opts.strides)?;
        check_positive(OP, "dilation", opts.dilation)?;
        let [sh, sw] = opts.strides;
        let [dh, dw] = opts.dilation;
        match (Axis::new(opts.padding, xd[1], kd[0], sh, dh), Axis::new(opts.padding, xd[2], kd[1], sw, dw)) {
            (Some(h), Some(w)) => Ok(ConvGeometry { n: xd[0], c: xd[3], o: kd[3], h, w }),
            _ => Err(shape_err(
                x,
                format!(
                    "the kernel {} dilated by {:?} spans {}x{}, larger than the input's {}x{} with padding valid",
                    k.shape(),
                    opts.dilation,
                    (kd[0] - 1) * dh + 1,
                    (kd[1] - 1) * dw + 1,
                    xd[1],
                    xd[2]
                ),
            )),
        }
    }

    /// Rows of the patch matrix (output pixels).
    fn m(&self) -> usize {
        self.n * self.h.out * self.w.out
    }

    /// Columns of the patch matrix (kernel taps times input channels).
    fn k(&self) -> usize {
        self.h.taps * self.w.taps * self.c
    }

    /// True when the patch matrix is the input itself: a 1x1 kernel, stride 1, no padding.
    fn pointwise(&self) -> bool {
        self.h.taps == 1
            && self.w.taps == 1
            && self.h.stride == 1
            && self.w.stride == 1
            && self.h.pad == 0
            && self.w.pad == 0
    }
}

/// `InvalidArgument` unless both values are positive.
pub(super) fn check_positive(op: &'static str, arg: &'static str, v: [usize; 2]) -> Result<()> {
    if v.contains(&0) {
        return Err(Error::InvalidArgument { op, arg, reason: format!("must be positive, got {v:?}") });
    }
    Ok(())
}

/// The contiguous elements of a tensor of element type `T` (copied only when not in standard layout).
pub(super) fn contiguous<T: Element>(t: &Tensor) -> Result<ndarray::CowArray<'_, T, ndarray::IxDyn>> {
    Ok(crate::kernels::layout::standard(t.array::<T>()?.view()))
}

/// The convolution in `T`, recorded on the tape when an operand is traced.
fn run<T: Elem>(x: &Tensor, kernel: &Tensor, geo: ConvGeometry, dtype: DType) -> Result<Tensor> {
    let (xc, kc) = (x.detached().cast(T::DTYPE), kernel.detached().cast(T::DTYPE));
    let keep = trace::any_traced(&[kernel]);
    let (z, cols) = forward::<T>(&xc, &kc, &geo, keep)?;
    let z = z.cast(dtype);
    if !trace::any_traced(&[x, kernel]) {
        return Ok(z);
    }
    Ok(trace::custom(&[x, kernel], z, move |g, need| {
        let g = g.cast(T::DTYPE);
        let dx = if need[0] { Some(input_grad::<T>(&g, &kc, &geo)?) } else { None };
        let dk = if need[1] { Some(kernel_grad::<T>(&g, &xc, &geo, cols)?) } else { None };
        Ok(vec![dx, dk])
    }))
}

/// The output, and the patch matrix when `keep` (and it is not the input itself).
fn forward<T: Elem>(x: &Tensor, k: &Tensor, geo: &ConvGeometry, keep: bool) -> Result<(Tensor, Option<Array2<T>>)> {
    let (xa, ka) = (contiguous::<T>(x)?, contiguous::<T>(k)?);
    let (xs, ks) = (xa.as_slice().expect("standard layout"), ka.as_slice().expect("standard layout"));
    let (m, kk, o) = (geo.m(), geo.k(), geo.o);
    let kmat = ArrayView2::from_shape((kk, o), ks).expect("kernel size");
    let mut out = kernels::buffer::alloc::<T>(m * o);
    let cols = if geo.pointwise() {
        let xmat = ArrayView2::from_shape((m, kk), xs).expect("input size");
        kernels::gemm::gemm(xmat, kmat, out.as_mut_slice());
        None
    } else {
        let cols = im2col(xs, geo);
        kernels::gemm::gemm(cols.view(), kmat, out.as_mut_slice());
        if keep {
            Some(cols)
        } else {
            recycle(cols);
            None
        }
    };
    let z = Tensor::from(out.into_arrayd(&[geo.n, geo.h.out, geo.w.out, o]));
    Ok((z, cols))
}

/// `d_kernel = patchesᵀ @ g`, in the kernel's shape.
fn kernel_grad<T: Elem>(g: &Tensor, x: &Tensor, geo: &ConvGeometry, cols: Option<Array2<T>>) -> Result<Tensor> {
    let ga = contiguous::<T>(g)?;
    let gmat = ArrayView2::from_shape((geo.m(), geo.o), ga.as_slice().expect("standard layout")).expect("g size");
    let mut out = kernels::buffer::alloc::<T>(geo.k() * geo.o);
    if geo.pointwise() {
        let xa = contiguous::<T>(x)?;
        let xmat = ArrayView2::from_shape((geo.m(), geo.k()), xa.as_slice().expect("standard layout")).expect("x size");
        kernels::gemm::gemm(xmat.t(), gmat, out.as_mut_slice());
    } else {
        let cols = match cols {
            Some(c) => c,
            None => im2col(contiguous::<T>(x)?.as_slice().expect("standard layout"), geo),
        };
        kernels::gemm::gemm(cols.t(), gmat, out.as_mut_slice());
        recycle(cols);
    }
    Ok(Tensor::from(out.into_arrayd(&[geo.h.taps, geo.w.taps, geo.c, geo.o])))
}

/// `d_input = col2im(g @ kernelᵀ)`, in the input's shape.
fn input_grad<T: Elem>(g: &Tensor, k: &Tensor, geo: &ConvGeometry) -> Result<Tensor> {
    let (ga, ka) = (contiguous::<T>(g)?, contiguous::<T>(k)?);
    let gmat = ArrayView2::from_shape((geo.m(), geo.o), ga.as_slice().expect("standard layout")).expect("g size");
    let kmat = ArrayView2::from_shape((geo.k(), geo.o), ka.as_slice().expect("standard layout")).expect("k size");
    let dims = [geo.n, geo.h.input, geo.w.input, geo.c];
    if geo.pointwise() {
        let mut out = kernels::buffer::alloc::<T>(geo.m() * geo.k());
        kernels::gemm::gemm(gmat, kmat.t(), out.as_mut_slice());
        return Ok(Tensor::from(out.into_arrayd(&dims)));
    }
    let mut d = kernels::buffer::alloc::<T>(geo.m() * geo.k());
    kernels::gemm::gemm(gmat, kmat.t(), d.as_mut_slice());
    let d = d.into_array(Ix2(geo.m(), geo.k()));
    let mut dx = kernels::buffer::alloc::<T>(dims.iter().product());
    col2im(d.as_slice().expect("standard layout"), geo, dx.as_mut_slice());
    recycle(d);
    Ok(Tensor::from(dx.into_arrayd(&dims)))
}

/// The patch matrix `(N*OH*OW, KH*KW*C)` of the NHWC input `x`: row `(n, oh, ow)` holds the window of that
/// output pixel, tap by tap, each tap's `C` channels contiguous (zeros for taps in the padding). Written in
/// parallel over output rows `(n, oh)`, every element once.
fn im2col<T: Elem>(x: &[T], geo: &ConvGeometry) -> Array2<T> {
    let (c, kk) = (geo.c, geo.k());
    let (h, w) = (geo.h, geo.w);
    let image = h.input * w.input * c;
    let mut buf = kernels::buffer::alloc::<T>(geo.m() * kk);
    // A row of taps is one contiguous run of the input when the kernel is undilated and the window inside.
    let run = w.dilation == 1;
    // No channel: rows of length 0, never called (so `chunks_exact_mut(c)` below never sees 0).
    kernels::for_rows(buf.as_mut_slice(), w.out * kk, geo.m() * kk, |r, dst| {
        let (n, oh) = (r / h.out, r % h.out);
        let img = &x[n * image..(n + 1) * image];
        for (ow, patch) in dst.chunks_exact_mut(kk).enumerate() {
            for (th, taps) in patch.chunks_exact_mut(w.taps * c).enumerate() {
                let Some(ih) = h.at(oh, th) else {
                    taps.fill(T::default());
                    continue;
                };
                let src = &img[ih * w.input * c..(ih + 1) * w.input * c];
                let start = (ow * w.stride).checked_sub(w.pad).filter(|&s| s + w.taps <= w.input);
                match start {
                    Some(s) if run => taps.copy_from_slice(&src[s * c..(s + w.taps) * c]),
                    _ => {
                        for (tw, px) in taps.chunks_exact_mut(c).enumerate() {
                            match w.at(ow, tw) {
                                Some(iw) => px.copy_from_slice(&src[iw * c..(iw + 1) * c]),
                                None => px.fill(T::default()),
                            }
                        }
                    }
                }
            }
        }
    });
    buf.into_array(Ix2(geo.m(), kk))
}

/// Sums the patch-shaped `d` `(N*OH*OW, KH*KW*C)` back into the NHWC `dx`: each input row `(n, ih)` is written
/// by one call that adds, for every output row covering it in increasing order and every output column in
/// increasing order, that window's taps on the row. The order is fixed, so the sums do not depend on threads.
fn col2im<T: Elem>(d: &[T], geo: &ConvGeometry, dx: &mut [T]) {
    let (c, kk) = (geo.c, geo.k());
    let (h, w) = (geo.h, geo.w);
    let out_row = w.out * kk;
    kernels::for_rows(dx, w.input * c, d.len().max(dx.len()), |r, dst| {
        dst.fill(T::default());
        let (n, ih) = (r / h.input, r % h.input);
        // Taps in decreasing order are output rows in increasing order.
        for th in (0..h.taps).rev() {
            let Some(oh) = h.output_of(ih, th) else { continue };
            let row = &d[(n * h.out + oh) * out_row..(n * h.out + oh + 1) * out_row];
            for (ow, patch) in row.chunks_exact(kk).enumerate() {
                let taps = &patch[th * w.taps * c..(th + 1) * w.taps * c];
                for (tw, src) in taps.chunks_exact(c).enumerate() {
                    if let Some(iw) = w.at(ow, tw) {
                        for (o, &s) in dst[iw * c..(iw + 1) * c].iter_mut().zip(src) {
                            *o = *o + s;
                        }
                    }
                }
            }
        }
    });
}

/// Returns a large scratch matrix's buffer to the pool, for the next call's patches.
fn recycle<T: Elem>(a: Array2<T>) {
    kernels::buffer::recycle(a.into_dyn().into_shared());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The convolution by its definition, in f64.
    fn naive(x: &[f64], xd: [usize; 4], k: &[f64], kd: [usize; 4], geo: &ConvGeometry) -> Vec<f64> {
        let (h, w) = (geo.h, geo.w);
        let mut out = vec![0.0; xd[0] * h.out * w.out * kd[3]];
        for n in 0..xd[0] {
            for oh in 0..h.out {
                for ow in 0..w.out {
                    for o in 0..kd[3] {
                        let mut s = 0.0;
                        for th in 0..kd[0] {
                            for tw in 0..kd[1] {
                                if let (Some(ih), Some(iw)) = (h.at(oh, th), w.at(ow, tw)) {
                                    for c in 0..xd[3] {
                                        s += x[((n * xd[1] + ih) * xd[2] + iw) * xd[3] + c]
                                            * k[((th * kd[1] + tw) * kd[2] + c) * kd[3] + o];
                                    }
                                }
                            }
                        }
                        out[((n * h.out + oh) * w.out + ow) * kd[3] + o] = s;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn same_and_valid_axes_follow_xla() {
        let same = |i, k, s, d| Axis::new(Padding::Same, i, k, s, d).map(|a| (a.out, a.pad));
        assert_eq!(same(7, 3, 2, 1), Some((4, 1)));
        assert_eq!(same(6, 3, 2, 1), Some((3, 0)), "odd total padding goes after");
        assert_eq!(same(6, 3, 1, 2), Some((6, 2)));
        assert_eq!(same(0, 3, 1, 1), Some((0, 0)));
        let valid = |i, k, s, d| Axis::new(Padding::Valid, i, k, s, d).map(|a| a.out);
        assert_eq!(valid(7, 3, 2, 1), Some(3));
        assert_eq!(valid(7, 3, 1, 3), Some(1));
        assert_eq!(valid(6, 3, 1, 3), None);
        let a = Axis::new(Padding::Same, 5, 3, 1, 1).unwrap();
        assert_eq!((a.taps_inside(0), a.taps_inside(2), a.taps_inside(4)), (1..3, 0..3, 0..2));
        assert_eq!((a.output_of(0, 2), a.output_of(0, 0)), (None, Some(1)));
    }

    #[test]
    fn im2col_product_equals_the_definition() {
        let configs = [
            ([2, 5, 6, 3], [3, 2, 3, 4], Conv2d::default()),
            ([1, 7, 7, 2], [3, 3, 2, 2], Conv2d::default().strides([2, 3]).padding(Padding::Same)),
            ([2, 6, 5, 1], [2, 3, 1, 3], Conv2d::default().dilation([2, 1]).padding(Padding::Same)),
            ([1, 4, 4, 2], [1, 1, 2, 3], Conv2d::default()),
            ([1, 5, 5, 2], [1, 1, 2, 3], Conv2d::default().strides([2, 2])),
        ];
        for (xd, kd, opts) in configs {
            let xv: Vec<f64> = (0..xd.iter().product()).map(|i: usize| ((i * 37 % 11) as f64) - 5.0).collect();
            let kv: Vec<f64> = (0..kd.iter().product()).map(|i: usize| ((i * 13 % 7) as f64) * 0.5 - 1.5).collect();
            let x = Tensor::from_shape_vec(xd, xv.clone()).unwrap();
            let k = Tensor::from_shape_vec(kd, kv.clone()).unwrap();
            let geo = ConvGeometry::new(&x, &k, &opts).unwrap();
            let z = conv2d(&x, &k, opts).unwrap();
            assert_eq!(z.dims(), &[xd[0], geo.h.out, geo.w.out, kd[3]]);
            assert_eq!(z.to_vec::<f64>().unwrap(), naive(&xv, xd, &kv, kd, &geo), "{opts:?}");
        }
    }

    #[test]
    fn padding_names_parse_in_any_case() {
        assert_eq!("VALID".parse::<Padding>().unwrap(), Padding::Valid);
        assert_eq!(Padding::Same.name(), "same");
        let err = "causal".parse::<Padding>().unwrap_err();
        assert!(matches!(err, Error::InvalidOption { option: "padding", .. }));
        assert_eq!(err.to_string(), "invalid padding `causal`, expected one of valid, same");
    }
}
