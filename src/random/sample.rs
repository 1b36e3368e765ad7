//! Sampling from a [`Key`]: [`bits`], [`uniform`], [`normal`], [`truncated_normal`], [`bernoulli`], [`randint`]
//! and [`permutation`], each drawing what JAX draws for the same key.
//!
//! Every element is a pure function of the key and its flat row-major index `i`: JAX's partitionable Threefry
//! (`_threefry_random_bits_partitionable`, jax/_src/random/threefry2x32.py) hashes the counter
//! `(hi32(i), lo32(i))` under the key into two words `(b1, b2)`; 32-bit draws use `b1 ^ b2`, 64-bit draws
//! `b1 << 32 | b2`, 8- and 16-bit draws the low bits of `b1 ^ b2`. The tensors are filled in parallel by
//! [`kernels::fill_indexed`](crate::kernels::fill_indexed), so the bits never depend on the thread count.
//!
//! The transforms from bits to values follow jax/_src/random/core.py (jax 0.10.2, with
//! `jax_threefry_partitionable`, the default since jax 0.5): see each function for what matches JAX bit for
//! bit and what may differ in the last place.

use half::{bf16, f16};

use super::special::{erf_inv_f32, erf_inv_f64};
use super::{threefry2x32, Key};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::kernels::fill_indexed;
use crate::tensor::{Element, Shape, Tensor};

/// The largest `n` [`permutation`] accepts: 2^32.
pub const MAX_PERMUTATION: usize = 1 << 32;

/// Uniformly random bits of an unsigned integer dtype, as `jax.random.bits(key, shape, dtype)`.
///
/// Element `i` of a `uint32` draw is `b1 ^ b2` where `(b1, b2) = threefry2x32(key, (hi32(i), lo32(i)))`; a
/// `uint64` draw is `b1 << 32 | b2`; `uint8` and `uint16` take the low bits of `b1 ^ b2`. Bit-identical to JAX.
/// O(n), parallel above the kernels' threshold.
///
/// # Errors
/// [`Error::UnsupportedDType`] for a dtype that is not an unsigned integer; [`Error::InvalidShape`] when the
/// number of elements overflows `usize`.
///
/// # Examples
/// ```
/// use purestate::{random::{self, Key}, DType};
/// let bits = random::bits(Key::new(0), [3], DType::Uint32)?;
/// assert_eq!(bits.to_vec::<u32>()?, random::bits(Key::new(0), [3], DType::Uint32)?.to_vec::<u32>()?);
/// assert!(random::bits(Key::new(0), [3], DType::Float32).is_err());
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn bits(key: Key, shape: impl Into<Shape>, dtype: DType) -> Result<Tensor> {
    let shape = shape.into();
    let n = checked_size("random::bits", &shape)?;
    match dtype {
        DType::Uint8 => generate(shape, n, |i| bits32(key, i) as u8),
        DType::Uint16 => generate(shape, n, |i| bits32(key, i) as u16),
        DType::Uint32 => generate(shape, n, |i| bits32(key, i)),
        DType::Uint64 => generate(shape, n, |i| bits64(key, i)),
        _ => Err(Error::UnsupportedDType { op: "random::bits", dtype }),
    }
}

/// Uniform floats in `[minval, maxval)`, as `jax.random.uniform` and Keras's `keras.random.uniform` (JAX
/// backend).
///
/// Each element takes as many random bits as the dtype has (8 for bfloat16, whose mantissa has 7), puts the
/// top mantissa-width bits under the exponent of 1.0, subtracts 1 to get `f` in `[0, 1)`, and returns
/// `max(minval, f * (maxval - minval) + minval)` with `minval`, `maxval` and the difference first rounded to
/// the dtype (jax/_src/random/core.py, `_uniform`). float64 draws use 64 bits, as JAX with `jax_enable_x64`.
/// Bit-identical to JAX on XLA's CPU backend for every float dtype: float32 and float64 fuse the product and
/// the sum into one multiply-add, as XLA does; float16 and bfloat16 round each operation to the dtype.
/// O(n), parallel above the kernels' threshold.
///
/// # Errors
/// [`Error::UnsupportedDType`] for a non-float dtype; [`Error::InvalidArgument`] when a bound is not finite or
/// `minval >= maxval` (also after rounding to the dtype); [`Error::InvalidShape`] when the number of elements
/// overflows `usize`.
///
/// # Examples
/// ```
/// use purestate::{random::{self, Key}, DType};
/// let x = random::uniform(Key::new(42), [1000], DType::Float32, -0.05, 0.05)?;
/// assert!(x.to_vec::<f32>()?.iter().all(|&v| (-0.05..0.05).contains(&v)));
/// assert!(random::uniform(Key::new(42), [2], DType::Float32, 1.0, 1.0).is_err());
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn uniform(key: Key, shape: impl Into<Shape>, dtype: DType, minval: f64, maxval: f64) -> Result<Tensor> {
    const OP: &str = "random::uniform";
    let shape = shape.into();
    check_float(OP, dtype)?;
    check_bounds(OP, minval, maxval)?;
    let n = checked_size(OP, &shape)?;
    match dtype {
        DType::Float32 => {
            let u = Uniform32::new(OP, minval, maxval)?;
            generate(shape, n, |i| u.sample(key, i))
        }
        DType::Float64 => {
            let u = Uniform64::new(OP, minval, maxval)?;
            generate(shape, n, |i| u.sample(key, i))
        }
        DType::Float16 => {
            let u = UniformHalf::<f16>::new(OP, minval, maxval)?;
            generate(shape, n, |i| u.sample(key, i))
        }
        DType::Bfloat16 => {
            let u = UniformHalf::<bf16>::new(OP, minval, maxval)?;
            generate(shape, n, |i| u.sample(key, i))
        }
        _ => Err(Error::UnsupportedDType { op: OP, dtype }),
    }
}

/// Normal floats with mean `mean` and standard deviation `stddev`, as Keras's `keras.random.normal` on the JAX
/// backend: `jax.random.normal(key, shape, dtype) * stddev + mean`.
///
/// JAX's standard normal is `sqrt(2) * erf_inv(u)` with `u` uniform in `[nextafter(-1, 0), 1)` drawn as
/// [`uniform`] does (jax/_src/random/core.py, `_normal_real`); `erf_inv` and its `log1p` are XLA's.
/// float64, float16 and bfloat16 draws are bit-identical to JAX's (half precision evaluates `erf_inv` in
/// float32, as XLA does). float32 draws are too, except where XLA's own float32 `log` and the platform's `ln`
/// round differently: there an element differs by an ulp or two (under 1% of the elements on JAX's fixture).
/// `* stddev + mean` is two rounded operations, as Keras's eager arithmetic. O(n), parallel.
///
/// # Errors
/// [`Error::UnsupportedDType`] for a non-float dtype; [`Error::InvalidArgument`] for a non-finite `mean` or a
/// negative or non-finite `stddev`; [`Error::InvalidShape`] when the number of elements overflows `usize`.
///
/// # Examples
/// ```
/// use purestate::{random::{self, Key}, DType};
/// let x = random::normal(Key::new(0), [10_000], DType::Float32, 1.0, 2.0)?.to_vec::<f32>()?;
/// let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / x.len() as f64;
/// assert!((mean - 1.0).abs() < 0.1);
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn normal(key: Key, shape: impl Into<Shape>, dtype: DType, mean: f64, stddev: f64) -> Result<Tensor> {
    const OP: &str = "random::normal";
    let shape = shape.into();
    check_float(OP, dtype)?;
    check_moments(OP, mean, stddev)?;
    let n = checked_size(OP, &shape)?;
    match dtype {
        DType::Float32 => {
            let u = Uniform32 { lo: NORMAL_LO_F32, span: 2.0 };
            let (mean, stddev) = (mean as f32, stddev as f32);
            generate(shape, n, |i| std::f32::consts::SQRT_2 * erf_inv_f32(u.sample(key, i)) * stddev + mean)
        }
        DType::Float64 => {
            let u = Uniform64 { lo: NORMAL_LO_F64, span: 2.0 };
            generate(shape, n, |i| std::f64::consts::SQRT_2 * erf_inv_f64(u.sample(key, i)) * stddev + mean)
        }
        DType::Float16 => normal_half::<f16>(key, shape, n, mean, stddev),
        DType::Bfloat16 => normal_half::<bf16>(key, shape, n, mean, stddev),
        _ => Err(Error::UnsupportedDType { op: OP, dtype }),
    }
}

/// Normal floats truncated to two standard deviations, as Keras's `keras.random.truncated_normal` on the JAX
/// backend: `jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype) * stddev + mean`.
///
/// JAX inverts the CDF: `u` uniform in `[erf(-√2), erf(√2))`, `sqrt(2) * erf_inv(u)`, clipped to the open
/// interval `(-2, 2)` (jax/_src/random/core.py, `_truncated_normal`); the bounds `erf(±√2)` are the values
/// JAX computes for each dtype. Values are not rescaled, so their standard deviation is about 0.88 of
/// `stddev`. Agreement with JAX as for [`normal`]. O(n), parallel.
///
/// # Errors
/// As [`normal`].
///
/// # Examples
/// ```
/// use purestate::{random::{self, Key}, DType};
/// let x = random::truncated_normal(Key::new(0), [1000], DType::Float32, 0.0, 0.05)?;
/// assert!(x.to_vec::<f32>()?.iter().all(|v| v.abs() < 0.1));
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn truncated_normal(key: Key, shape: impl Into<Shape>, dtype: DType, mean: f64, stddev: f64) -> Result<Tensor> {
    const OP: &str = "random::truncated_normal";
    let shape = shape.into();
    check_float(OP, dtype)?;
    check_moments(OP, mean, stddev)?;
    let n = checked_size(OP, &shape)?;
    match dtype {
        DType::Float32 => {
            let u = Uniform32 { lo: f32::from_bits(0xbf74_5a18), span: f32::from_bits(0x3ff4_5a18) };
            let (lo, hi) = (f32::from_bits(0xbfff_ffff), f32::from_bits(0x3fff_ffff));
            let (mean, stddev) = (mean as f32, stddev as f32);
            generate(shape, n, |i| {
                let x = std::f32::consts::SQRT_2 * erf_inv_f32(u.sample(key, i));
                x.max(lo).min(hi) * stddev + mean
            })
        }
        DType::Float64 => {
            let u =
                Uniform64 { lo: f64::from_bits(0xbfee_8b43_07d3_627a), span: f64::from_bits(0x3ffe_8b43_07d3_627a) };
            let (lo, hi) = (f64::from_bits(0xbfff_ffff_ffff_ffff), f64::from_bits(0x3fff_ffff_ffff_ffff));
            generate(shape, n, |i| {
                let x = std::f64::consts::SQRT_2 * erf_inv_f64(u.sample(key, i));
                x.max(lo).min(hi) * stddev + mean
            })
        }
        DType::Float16 => {
            let u = UniformHalf { lo: f16::from_bits(0xbba3), span: f16::from_bits(0x3fa3) };
            truncated_half(key, shape, n, u, mean, stddev)
        }
        DType::Bfloat16 => {
            let u = UniformHalf { lo: bf16::from_bits(0xbf74), span: bf16::from_bits(0x3ff4) };
            truncated_half(key, shape, n, u, mean, stddev)
        }
        _ => Err(Error::UnsupportedDType { op: OP, dtype }),
    }
}

/// Booleans that are `true` with probability `p`, as `jax.random.bernoulli(key, p, shape)` with a float32 `p`
/// (Keras's dropout masks): element `i` is `uniform_f32(key, i) < p`. Bit-identical to JAX. O(n), parallel.
///
/// # Errors
/// [`Error::InvalidArgument`] when `p` is outside `[0, 1]` or NaN; [`Error::InvalidShape`] when the number of
/// elements overflows `usize`.
///
/// # Examples
/// ```
/// use purestate::{random::{self, Key}, DType};
/// let mask = random::bernoulli(Key::new(0), 0.25, [4, 4])?;
/// assert_eq!(mask.dtype(), DType::Bool);
/// assert!(random::bernoulli(Key::new(0), 1.5, [4]).is_err());
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn bernoulli(key: Key, p: f64, shape: impl Into<Shape>) -> Result<Tensor> {
    const OP: &str = "random::bernoulli";
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::InvalidArgument { op: OP, arg: "p", reason: format!("{p} is not a probability in [0, 1]") });
    }
    let shape = shape.into();
    let n = checked_size(OP, &shape)?;
    let u = Uniform32 { lo: 0.0, span: 1.0 };
    let p = p as f32;
    generate(shape, n, |i| u.sample(key, i) < p)
}

/// Integers uniform in `[minval, maxval)`, as `jax.random.randint` (and Keras's `keras.random.randint`).
///
/// JAX's algorithm, bit for bit (jax/_src/random/core.py, `randint` and `_randint`): split the key in two,
/// draw `nbits` random bits from each (`hi`, `lo`), and return
/// `minval + (hi % span * (2^nbits % span) + lo % span) % span` in `nbits`-bit unsigned arithmetic, where
/// `span = maxval - minval` (0 when the span is the whole dtype); `nbits` is 64 for 64-bit dtypes and 32
/// otherwise (JAX samples 8- and 16-bit dtypes as int32 and casts).
/// The result is very slightly biased when `span` is not a power of two, as in JAX. O(n), parallel.
///
/// # Errors
/// [`Error::UnsupportedDType`] for a dtype that is not an integer; [`Error::InvalidArgument`] when
/// `minval >= maxval` or the range does not fit the dtype (JAX would clip it); [`Error::InvalidShape`] when
/// the number of elements overflows `usize`.
///
/// # Examples
/// ```
/// use purestate::{random::{self, Key}, DType};
/// let dice = random::randint(Key::new(7), [100], 1, 7, DType::Int32)?.to_vec::<i32>()?;
/// assert!(dice.iter().all(|d| (1..7).contains(d)));
/// assert!(random::randint(Key::new(7), [1], 0, 300, DType::Uint8).is_err());
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn randint(key: Key, shape: impl Into<Shape>, minval: i64, maxval: i64, dtype: DType) -> Result<Tensor> {
    const OP: &str = "random::randint";
    let shape = shape.into();
    let (min, max) = match dtype {
        DType::Int8 => (i128::from(i8::MIN), i128::from(i8::MAX)),
        DType::Int16 => (i128::from(i16::MIN), i128::from(i16::MAX)),
        DType::Int32 => (i128::from(i32::MIN), i128::from(i32::MAX)),
        DType::Int64 => (i128::from(i64::MIN), i128::from(i64::MAX)),
        DType::Uint8 => (0, i128::from(u8::MAX)),
        DType::Uint16 => (0, i128::from(u16::MAX)),
        DType::Uint32 => (0, i128::from(u32::MAX)),
        DType::Uint64 => (0, i128::from(u64::MAX)),
        _ => return Err(Error::UnsupportedDType { op: OP, dtype }),
    };
    if minval >= maxval {
        return Err(Error::InvalidArgument {
            op: OP,
            arg: "maxval",
            reason: format!("the range [{minval}, {maxval}) is empty"),
        });
    }
    if i128::from(minval) < min || i128::from(maxval) > max + 1 {
        return Err(Error::InvalidArgument {
            op: OP,
            arg: "minval",
            reason: format!("the range [{minval}, {maxval}) does not fit {dtype}, whose values are [{min}, {max}]"),
        });
    }
    let n = checked_size(OP, &shape)?;
    // 8- and 16-bit dtypes are sampled as int32 and cast, as JAX's `randint` does to reduce the bias.
    let nbits = (8 * dtype.itemsize() as u32).max(32);
    let mask = if nbits == 64 { u64::MAX } else { (1u64 << nbits) - 1 };
    // `maxval - minval` in nbits-bit unsigned arithmetic: 0 when the range is the whole dtype.
    let span = ((i128::from(maxval) - i128::from(minval)) as u64) & mask;
    let rem = |a: u64| if span == 0 { a } else { a % span };
    let multiplier = rem(1u64 << (nbits / 2));
    let multiplier = rem(multiplier.wrapping_mul(multiplier) & mask);
    let (k1, k2) = key.split_pair();
    let draw = |k: Key, i: u64| if nbits == 64 { bits64(k, i) } else { u64::from(bits32(k, i)) & mask };
    let offset = move |i: u64| {
        let (hi, lo) = (draw(k1, i), draw(k2, i));
        rem((rem(hi).wrapping_mul(multiplier) & mask).wrapping_add(rem(lo)) & mask)
    };
    // minval + offset wraps in the dtype, as JAX's `lax.add`; `as` keeps the low bits.
    let value = move |i: u64| (minval as u64).wrapping_add(offset(i));
    match dtype {
        DType::Int8 => generate(shape, n, |i| value(i) as i8),
        DType::Int16 => generate(shape, n, |i| value(i) as i16),
        DType::Int32 => generate(shape, n, |i| value(i) as i32),
        DType::Int64 => generate(shape, n, |i| value(i) as i64),
        DType::Uint8 => generate(shape, n, |i| value(i) as u8),
        DType::Uint16 => generate(shape, n, |i| value(i) as u16),
        DType::Uint32 => generate(shape, n, |i| value(i) as u32),
        _ => generate(shape, n, value),
    }
}

/// A random permutation of `0..n` as an `int64` tensor, as `jax.random.permutation(key, n)`: for shuffling
/// the order of batches.
///
/// JAX's algorithm, bit for bit (jax/_src/random/core.py, `_shuffle`): `ceil(3 ln n / ln(2^32 - 1))` rounds
/// (one round up to n = 1625), each splitting the key, drawing 32 random bits per position and stably
/// sorting by them. O(n log n) per round; the bits are drawn in parallel.
///
/// # Errors
/// [`Error::InvalidArgument`] when `n` exceeds [`MAX_PERMUTATION`].
///
/// # Examples
/// ```
/// use purestate::random::{self, Key};
/// let mut order = random::permutation(Key::new(3), 10)?.to_vec::<i64>()?;
/// order.sort();
/// assert_eq!(order, (0..10).collect::<Vec<i64>>());
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn permutation(key: Key, n: usize) -> Result<Tensor> {
    if n > MAX_PERMUTATION {
        return Err(Error::InvalidArgument {
            op: "random::permutation",
            arg: "n",
            reason: format!("{n} exceeds the largest permutation, {MAX_PERMUTATION}"),
        });
    }
    let rounds = (3.0 * (n.max(1) as f64).ln() / f64::from(u32::MAX).ln()).ceil() as usize;
    let mut order: Vec<i64> = (0..n as i64).collect();
    let mut key = key;
    let mut sort_keys = vec![0u32; n];
    for _ in 0..rounds {
        let (next, subkey) = key.split_pair();
        key = next;
        fill_indexed(&mut sort_keys, |i| bits32(subkey, i as u64));
        let mut pairs: Vec<(u32, i64)> = sort_keys.iter().copied().zip(order.iter().copied()).collect();
        pairs.sort_by_key(|&(k, _)| k); // stable, as `lax.sort_key_val`
        order = pairs.into_iter().map(|(_, v)| v).collect();
    }
    Tensor::from_shape_vec([n], order)
}

/// The two Threefry output words for the counter `i` under `key`.
#[inline]
fn block(key: Key, i: u64) -> [u32; 2] {
    threefry2x32(key.words(), [(i >> 32) as u32, i as u32])
}

/// JAX's 32-bit random bits of element `i`: `b1 ^ b2`.
#[inline]
pub(crate) fn bits32(key: Key, i: u64) -> u32 {
    let [b1, b2] = block(key, i);
    b1 ^ b2
}

/// JAX's 64-bit random bits of element `i`: `b1 << 32 | b2`.
#[inline]
pub(crate) fn bits64(key: Key, i: u64) -> u64 {
    let [b1, b2] = block(key, i);
    (u64::from(b1) << 32) | u64::from(b2)
}

/// `nextafter(-1, 0)` in float32: the lower bound of the uniform draw behind [`normal`].
const NORMAL_LO_F32: f32 = -0.999_999_94;
/// `nextafter(-1, 0)` in float64.
const NORMAL_LO_F64: f64 = -0.999_999_999_999_999_9;

/// A float32 uniform draw `max(lo, f * span + lo)`.
#[derive(Clone, Copy)]
struct Uniform32 {
    lo: f32,
    span: f32,
}

impl Uniform32 {
    fn new(op: &'static str, minval: f64, maxval: f64) -> Result<Self> {
        let (lo, hi) = (minval as f32, maxval as f32);
        check_rounded(op, lo < hi, minval, maxval, DType::Float32)?;
        Ok(Uniform32 { lo, span: hi - lo })
    }

    #[inline]
    fn sample(self, key: Key, i: u64) -> f32 {
        let f = f32::from_bits((bits32(key, i) >> 9) | 0x3f80_0000) - 1.0;
        self.lo.max(f.mul_add(self.span, self.lo))
    }
}

/// A float64 uniform draw from 64 random bits.
#[derive(Clone, Copy)]
struct Uniform64 {
    lo: f64,
    span: f64,
}

impl Uniform64 {
    fn new(op: &'static str, minval: f64, maxval: f64) -> Result<Self> {
        check_rounded(op, minval < maxval, minval, maxval, DType::Float64)?;
        Ok(Uniform64 { lo: minval, span: maxval - minval })
    }

    #[inline]
    fn sample(self, key: Key, i: u64) -> f64 {
        let f = f64::from_bits((bits64(key, i) >> 12) | 0x3ff0_0000_0000_0000) - 1.0;
        self.lo.max(f.mul_add(self.span, self.lo))
    }
}

/// float16 and bfloat16: the bits behind a uniform draw and conversions through float32.
trait Half: Element {
    /// The dtype's `[1, 2)` float from the dtype's random bits, as float32.
    fn unit(bits: u32) -> f32;
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
    fn from_bits(bits: u16) -> Self;
    fn to_bits(self) -> u16;
}

impl Half for f16 {
    fn unit(bits: u32) -> f32 {
        // 16 random bits; the top 10 become the mantissa.
        f16::from_bits(((bits as u16) >> 6) | 0x3c00).to_f32()
    }
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_bits(bits: u16) -> Self {
        f16::from_bits(bits)
    }
    fn to_bits(self) -> u16 {
        f16::to_bits(self)
    }
}

impl Half for bf16 {
    fn unit(bits: u32) -> f32 {
        // 8 random bits (JAX draws at least 8); the top 7 become the mantissa.
        bf16::from_bits((u16::from(bits as u8) >> 1) | 0x3f80).to_f32()
    }
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn from_bits(bits: u16) -> Self {
        bf16::from_bits(bits)
    }
    fn to_bits(self) -> u16 {
        bf16::to_bits(self)
    }
}

/// A float16 or bfloat16 uniform draw: bounds and span rounded to the dtype, product and sum in float32.
#[derive(Clone, Copy)]
struct UniformHalf<H> {
    lo: H,
    span: H,
}

impl<H: Half> UniformHalf<H> {
    fn new(op: &'static str, minval: f64, maxval: f64) -> Result<Self> {
        let (lo, hi) = (H::from_f64(minval), H::from_f64(maxval));
        check_rounded(op, lo < hi, minval, maxval, H::DTYPE)?;
        Ok(UniformHalf { lo, span: H::from_f32(hi.to_f32() - lo.to_f32()) })
    }

    #[inline]
    fn sample(self, key: Key, i: u64) -> H {
        let f = H::unit(bits32(key, i)) - 1.0;
        let lo = self.lo.to_f32();
        let scaled = H::from_f32(f * self.span.to_f32()).to_f32();
        H::from_f32(lo.max(scaled + lo))
    }
}

fn normal_half<H: Half>(key: Key, shape: Shape, n: usize, mean: f64, stddev: f64) -> Result<Tensor> {
    let lo = next_toward_zero(H::from_f32(-1.0));
    let u = UniformHalf { lo, span: H::from_f32(1.0 - lo.to_f32()) };
    let sqrt2 = H::from_f64(std::f64::consts::SQRT_2).to_f32();
    let (mean, stddev) = (H::from_f64(mean).to_f32(), H::from_f64(stddev).to_f32());
    generate(shape, n, |i| {
        let e = H::from_f32(erf_inv_f32(u.sample(key, i).to_f32())).to_f32();
        let x = H::from_f32(sqrt2 * e).to_f32();
        H::from_f32(H::from_f32(x * stddev).to_f32() + mean)
    })
}

fn truncated_half<H: Half>(
    key: Key,
    shape: Shape,
    n: usize,
    u: UniformHalf<H>,
    mean: f64,
    stddev: f64,
) -> Result<Tensor> {
    let sqrt2 = H::from_f64(std::f64::consts::SQRT_2).to_f32();
    let hi = next_toward_zero(H::from_f32(2.0)).to_f32();
    let (mean, stddev) = (H::from_f64(mean).to_f32(), H::from_f64(stddev).to_f32());
    generate(shape, n, |i| {
        let e = H::from_f32(erf_inv_f32(u.sample(key, i).to_f32())).to_f32();
        let x = H::from_f32(sqrt2 * e).to_f32().max(-hi).min(hi);
        H::from_f32(H::from_f32(x * stddev).to_f32() + mean)
    })
}

/// The next float of a half dtype toward zero (for a nonzero finite value).
fn next_toward_zero<H: Half>(x: H) -> H {
    H::from_bits(x.to_bits() - 1)
}

/// A tensor of `shape` whose element `i` is `f(i)`, filled in parallel.
fn generate<T: Element>(shape: Shape, n: usize, f: impl Fn(u64) -> T + Sync) -> Result<Tensor> {
    let mut data = crate::kernels::buffer::alloc::<T>(n);
    fill_indexed(data.as_mut_slice(), |i| f(i as u64));
    Ok(Tensor::from(data.into_arrayd(shape.dims())))
}

/// The number of elements of `shape`, or an error when it overflows.
pub(crate) fn checked_size(op: &'static str, shape: &Shape) -> Result<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).filter(|&n| n <= isize::MAX as usize).ok_or_else(|| {
        Error::InvalidShape { op, shape: shape.clone(), reason: "the number of elements overflows".into() }
    })
}

fn check_float(op: &'static str, dtype: DType) -> Result<()> {
    if dtype.is_float() {
        Ok(())
    } else {
        Err(Error::UnsupportedDType { op, dtype })
    }
}

fn check_bounds(op: &'static str, minval: f64, maxval: f64) -> Result<()> {
    if !minval.is_finite() || !maxval.is_finite() {
        return Err(Error::InvalidArgument {
            op,
            arg: "minval",
            reason: format!("the bounds must be finite, got [{minval}, {maxval})"),
        });
    }
    if minval >= maxval {
        return Err(Error::InvalidArgument {
            op,
            arg: "maxval",
            reason: format!("minval must be below maxval, got [{minval}, {maxval})"),
        });
    }
    Ok(())
}

fn check_rounded(op: &'static str, ordered: bool, minval: f64, maxval: f64, dtype: DType) -> Result<()> {
    if ordered {
        Ok(())
    } else {
        Err(Error::InvalidArgument {
            op,
            arg: "maxval",
            reason: format!("[{minval}, {maxval}) is empty once rounded to {dtype}"),
        })
    }
}

pub(crate) fn check_moments(op: &'static str, mean: f64, stddev: f64) -> Result<()> {
    if !mean.is_finite() {
        return Err(Error::InvalidArgument { op, arg: "mean", reason: format!("{mean} is not finite") });
    }
    if !(stddev.is_finite() && stddev >= 0.0) {
        return Err(Error::InvalidArgument {
            op,
            arg: "stddev",
            reason: format!("{stddev} is not a finite, non-negative number"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_arguments() {
        let key = Key::new(0);
        let err = uniform(key, [2], DType::Int32, 0.0, 1.0).unwrap_err();
        assert!(matches!(err, Error::UnsupportedDType { dtype: DType::Int32, .. }));
        assert!(matches!(uniform(key, [2], DType::Float32, 1.0, 0.0), Err(Error::InvalidArgument { .. })));
        assert!(matches!(uniform(key, [2], DType::Float32, f64::NAN, 0.0), Err(Error::InvalidArgument { .. })));
        // distinct in float64, equal once rounded to bfloat16
        let err = uniform(key, [2], DType::Bfloat16, 1.0, 1.0001).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { arg: "maxval", .. }), "{err}");
        assert!(matches!(normal(key, [2], DType::Bool, 0.0, 1.0), Err(Error::UnsupportedDType { .. })));
        assert!(matches!(normal(key, [2], DType::Float32, 0.0, -1.0), Err(Error::InvalidArgument { .. })));
        assert!(matches!(truncated_normal(key, [2], DType::Int8, 0.0, 1.0), Err(Error::UnsupportedDType { .. })));
        assert!(matches!(bernoulli(key, f64::NAN, [2]), Err(Error::InvalidArgument { arg: "p", .. })));
        assert!(matches!(bernoulli(key, -0.1, [2]), Err(Error::InvalidArgument { arg: "p", .. })));
        assert!(matches!(randint(key, [2], 3, 3, DType::Int32), Err(Error::InvalidArgument { .. })));
        assert!(matches!(randint(key, [2], -1, 3, DType::Uint8), Err(Error::InvalidArgument { .. })));
        assert!(matches!(randint(key, [2], 0, 2, DType::Float32), Err(Error::UnsupportedDType { .. })));
        assert!(matches!(permutation(key, MAX_PERMUTATION + 1), Err(Error::InvalidArgument { arg: "n", .. })));
        let huge = Shape::from([usize::MAX, 2]);
        assert!(matches!(uniform(key, huge, DType::Float32, 0.0, 1.0), Err(Error::InvalidShape { .. })));
    }

    #[test]
    fn error_messages_name_the_argument() {
        let err = bernoulli(Key::new(0), 2.0, [1]).unwrap_err();
        assert_eq!(err.to_string(), "random::bernoulli: invalid argument `p`: 2 is not a probability in [0, 1]");
    }

    #[test]
    fn shapes_and_dtypes() {
        let key = Key::new(1);
        for dtype in [DType::Float16, DType::Bfloat16, DType::Float32, DType::Float64] {
            for t in [
                uniform(key, [2, 3], dtype, -1.0, 1.0).unwrap(),
                normal(key, [2, 3], dtype, 0.0, 1.0).unwrap(),
                truncated_normal(key, [2, 3], dtype, 0.0, 1.0).unwrap(),
            ] {
                assert_eq!((t.dtype(), t.dims()), (dtype, &[2usize, 3][..]));
            }
        }
        assert_eq!(uniform(key, Shape::scalar(), DType::Float32, 0.0, 1.0).unwrap().ndim(), 0);
        assert_eq!(normal(key, [0, 4], DType::Float32, 0.0, 1.0).unwrap().size(), 0);
        assert_eq!(permutation(key, 0).unwrap().size(), 0);
        assert_eq!(permutation(key, 1).unwrap().to_vec::<i64>().unwrap(), [0]);
    }

    #[test]
    fn uniform_stays_in_bounds_for_every_dtype() {
        for dtype in [DType::Float16, DType::Bfloat16, DType::Float32, DType::Float64] {
            let t = uniform(Key::new(5), [4096], dtype, -0.05, 0.05).unwrap();
            let (lo, hi) =
                (Tensor::full([1], dtype, -0.05).to_f64_vec()[0], Tensor::full([1], dtype, 0.05).to_f64_vec()[0]);
            assert!(t.to_f64_vec().iter().all(|&v| lo <= v && v < hi), "{dtype}");
        }
    }

    #[test]
    fn truncated_normal_stays_within_two_standard_deviations() {
        for dtype in [DType::Float16, DType::Bfloat16, DType::Float32, DType::Float64] {
            let t = truncated_normal(Key::new(9), [8192], dtype, 1.0, 0.5).unwrap();
            assert!(t.to_f64_vec().iter().all(|&v| (0.0..=2.0).contains(&v)), "{dtype}");
        }
    }

    #[test]
    fn randint_covers_a_whole_dtype() {
        let t = randint(Key::new(2), [4096], 0, 256, DType::Uint8).unwrap().to_vec::<u8>().unwrap();
        let mut seen = [false; 256];
        t.iter().for_each(|&v| seen[usize::from(v)] = true);
        assert!(seen.iter().all(|&s| s));
        let t = randint(Key::new(2), [4096], i64::MIN, i64::MAX, DType::Int64).unwrap().to_vec::<i64>().unwrap();
        assert!(t.iter().any(|&v| v < 0) && t.iter().any(|&v| v > 0));
    }

    #[test]
    fn bernoulli_extremes() {
        let key = Key::new(4);
        assert!(bernoulli(key, 0.0, [1000]).unwrap().to_vec::<bool>().unwrap().iter().all(|&b| !b));
        assert!(bernoulli(key, 1.0, [1000]).unwrap().to_vec::<bool>().unwrap().iter().all(|&b| b));
    }
}
