//! `exp` in float32 written as straight-line arithmetic, so that the loops which call it (softmax,
//! cross-entropy, the exact `gelu` and its derivative, `sigmoid`, `silu`) vectorize inside `kernels::simd`'s
//! AVX2 + FMA functions instead of calling the C library's scalar `expf` once per element.
//!
//! The method is the one of glibc's and ARM's `expf`: the work is done in float64 and rounded to float32 once.
//! `x log2(e) = k + r` with `k` an integer (found by adding `1.5 * 2^52`, whose low bits then hold `k`) and
//! `|r| <= 1/2`; `2^r` is its Taylor polynomial of degree 9 (relative error below `7e-12`, about 10^-4 of a
//! float32 ulp), and `2^k` is built from the bits of `k`. The float64 value is within `1e-11` relative of
//! `e^x`, so the float32 result is the correctly rounded one except where `e^x` lies within that distance of a
//! midpoint between two floats.
//!
//! Every operation is an IEEE float64 add, multiply or conversion, or an integer add and shift, with no fused
//! multiply-add (Rust never contracts), so the result is the same on every CPU, at every SIMD width, and on
//! every platform: unlike the C library's `expf`, whose last bit differs between its FMA and SSE2 variants and
//! between libcs.

/// `e^x` in float32: correctly rounded except within about `1e-11` relative of a rounding midpoint; `inf` from
/// `x > 88.72`, zero below `-103.98`, NaN for NaN.
#[inline(always)] // into the AVX2 + FMA loops of `kernels::simd`
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2_E: f64 = std::f64::consts::LOG2_E;
    /// Adding `1.5 * 2^52` rounds to an integer (ties to even) and leaves it in the low bits.
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    /// `ln(2)^i / i!` for `i = 9, 8, ..., 0`: `2^r = e^(r ln 2)` by Horner's rule.
    #[allow(clippy::excessive_precision)]
    const C: [f64; 10] = [
        1.017_808_600_923_97e-7,
        1.321_548_679_014_431e-6,
        1.525_273_380_405_984_1e-5,
        1.540_353_039_338_161e-4,
        1.333_355_814_642_844_3e-3,
        9.618_129_107_628_477e-3,
        5.550_410_866_482_158e-2,
        2.402_265_069_591_007_2e-1,
        std::f64::consts::LN_2,
        1.0,
    ];
    // Past these, e^x is beyond float32's range whichever way it rounds: infinity above, zero below. The clamp
    // keeps `k` small enough for `2^k` to be a normal float64 (and passes NaN through).
    let xd = f64::from(x).clamp(-104.0, 89.0);
    let z = xd * LOG2_E;
    let shifted = z + SHIFT;
    let r = z - (shifted - SHIFT);
    let p = C[1..].iter().fold(C[0], |acc, &c| acc * r + c);
    // The low 12 bits of `shifted` hold `k` (two's complement), so these are the bits of the float64 `2^k`:
    // exponent field `k + 1023`, in [873, 1151] after the clamp (`k` from -150 to 128).
    let scale = f64::from_bits(shifted.to_bits().wrapping_add(1023) << 52);
    (p * scale) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `e^x` correctly rounded to float32, from float64's `exp` (accurate to below 1 ulp of float64).
    fn reference(x: f32) -> f32 {
        f64::from(x).exp() as f32
    }

    #[test]
    fn within_one_ulp_of_the_correctly_rounded_value_and_mostly_equal() {
        let (mut n, mut differ) = (0u32, 0u32);
        let mut x = -103.9f32;
        while x < 88.7 {
            for y in [x, -x.min(103.9), x * 1e-3, x * 1e-6] {
                let (got, want) = (exp_f32(y), reference(y));
                n += 1;
                if got != want {
                    differ += 1;
                    let ulps = (got.to_bits() as i64 - want.to_bits() as i64).abs();
                    assert!(ulps <= 1, "exp({y:e}) = {got:e}, want {want:e}");
                }
            }
            x += 0.001_37;
        }
        // The reference itself can round the wrong way near a midpoint; ours agrees almost everywhere.
        assert!(f64::from(differ) < 1e-4 * f64::from(n), "{differ} of {n} differ");
    }

    #[test]
    fn edges_overflow_underflow_and_nan() {
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-0.0), 1.0);
        assert_eq!(exp_f32(1.0), std::f32::consts::E);
        assert_eq!(exp_f32(88.72), reference(88.72));
        assert_eq!(exp_f32(88.73), f32::INFINITY);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_f32(f32::MAX), f32::INFINITY);
        assert_eq!(exp_f32(-87.5), reference(-87.5)); // normal
        assert_eq!(exp_f32(-100.0), reference(-100.0)); // subnormal, rounded once
        assert!(exp_f32(-100.0) > 0.0 && exp_f32(-100.0) < f32::MIN_POSITIVE);
        assert_eq!(exp_f32(-104.0), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert!(exp_f32(f32::NAN).is_nan());
    }
}
