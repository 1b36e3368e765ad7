//! The error function for the activations: float32 `erf` as XLA's CPU backend evaluates it (so `erf` and
//! `gelu` match JAX bit for bit where the fixture checked), float64 `erf` and `erfc` by Sun's fdlibm algorithm.
//!
//! **float32.** XLA (xla/codegen/intrinsic/erf.cc, the `erf` intrinsic jax 0.10.2's CPU backend calls) uses
//! Eigen's rational interpolant: `x * p(x^2) / q(x^2)`, numerator of degree 9 (odd), denominator of degree 12
//! (even), each evaluated by Horner's rule with fused multiply-adds, and `copysign(1, x)` from
//! `|x| >= 3.832506856900711` (where `erf` rounds to one). On the 64 points of `tests/fixtures/jax_ops.json`
//! this function returns JAX's bits exactly.
//!
//! **float64.** FreeBSD msun `s_erf.c` (fdlibm), whose error is below one ulp: a rational approximation near
//! zero, a Taylor expansion around one, and `exp(-x^2 - 0.5625 + R/S) / x` in the tails. Its notice:
//!
//! > Copyright (C) 1993 by Sun Microsystems, Inc. All rights reserved. Developed at SunPro, a Sun Microsystems,
//! > Inc. business. Permission to use, copy, modify, and distribute this software is freely granted, provided
//! > that this notice is preserved.
//!
//! **`erfc` in float32** (the exact `gelu`) is XLA's float32 `erfc` (the StableHLO/CHLO lowering jax uses):
//! `1 - erf(x)` for `|x| < 1`, and beyond it Cephes's `erfcf`, `exp(-x^2) / |x| * P(1/x^2)` with one
//! polynomial below `|x| = 2` and another above, reflected as `2 - erfc(|x|)` for negative `x` and zero past
//! `x^2 > 88.72`. It keeps its relative accuracy in the left tail of `gelu`, where `1 + erf(x)` would cancel
//! to zero, at a fraction of the cost of the float64 `erfc` rounded once.

use super::expf::exp_f32;

/// `erf(x)` in float32, as XLA's CPU backend computes it.
#[allow(clippy::excessive_precision)] // the digits as XLA writes them
#[inline(always)] // into the AVX2 + FMA loops of `kernels::simd`
pub(crate) fn erf_f32(x: f32) -> f32 {
    const CLAMP: f32 = 3.832_506_856_900_711;
    const ALPHA: [f32; 5] = [
        0.000_229_050_658_613_506_46,
        0.003_408_291_010_710_950_6,
        0.050_955_695_062_380_861,
        0.185_208_322_399_761_45,
        1.128_379_143_519_084,
    ];
    const BETA: [f32; 7] = [
        -1.179_160_295_436_169_7e-7,
        0.000_023_547_966_471_313_185,
        0.001_017_962_527_891_488_5,
        0.014_070_470_171_167_667,
        0.110_985_051_782_853_62,
        0.497_469_251_100_675_38,
        1.0,
    ];
    // Both sides are computed and one is selected, so that a loop over `erf` has no branch and vectorizes.
    let x2 = x * x;
    let p = ALPHA[1..].iter().fold(ALPHA[0], |acc, &c| x2.mul_add(acc, c));
    let q = BETA[1..].iter().fold(BETA[0], |acc, &c| x2.mul_add(acc, c));
    let inner = (x * p) / q;
    if CLAMP <= x.abs() {
        1f32.copysign(x)
    } else {
        inner
    }
}

/// `erfc(x)` in float32, as XLA evaluates it (see the module's notes).
#[allow(clippy::excessive_precision)] // the digits as XLA writes them
#[inline(always)]
pub(crate) fn erfc_f32(x: f32) -> f32 {
    const MAXLOG: f32 = 88.722_839_052_068_35;
    const P: [f32; 9] = [
        2.326_819_970_068_386e-2,
        -1.387_039_388_740_657e-1,
        3.687_424_674_597_105e-1,
        -5.824_733_027_278_666e-1,
        6.210_004_621_745_983e-1,
        -4.944_515_323_274_145e-1,
        3.404_879_937_665_872e-1,
        -2.741_127_028_184_656e-1,
        5.638_259_427_386_472e-1,
    ];
    // Cephes's eight coefficients after a leading zero, to run the same nine steps as `P`: `0 * q2 + R[1]` is
    // `R[1]` exactly.
    const R: [f32; 9] = [
        0.0,
        -1.047_766_399_936_249e1,
        1.297_719_955_372_516e1,
        -7.495_518_717_768_503,
        2.921_019_019_210_786,
        -1.015_265_279_202_7,
        4.218_463_358_204_948e-1,
        -2.820_767_439_740_514e-1,
        5.641_895_067_754_075e-1,
    ];
    // Every piece is computed and the right one selected, with no branch, so that the exact `gelu`'s loops
    // vectorize.
    let a = x.abs();
    let near_zero = 1.0 - erf_f32(x);
    let z = -(x * x);
    let q = 1.0 / a;
    let q2 = q * q;
    let below_2 = a < 2.0;
    let coefficient = |i: usize| if below_2 { P[i] } else { R[i] };
    let p = (1..P.len()).fold(coefficient(0), |acc, i| acc * q2 + coefficient(i));
    let tail = q * exp_f32(z) * p;
    let r = if z < -MAXLOG { 0.0 } else { tail };
    let reflected = if x < 0.0 { 2.0 - r } else { r };
    if a < 1.0 {
        near_zero
    } else {
        reflected
    }
}

/// `erf(x)` in float64 (fdlibm).
pub(crate) fn erf_f64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let y = if a < 0.843_75 {
        if a < TINY {
            // x + (2/sqrt(pi) - 1) x, scaled to avoid underflow.
            return 0.125 * (8.0 * x + EFX8 * x);
        }
        return x + x * small(x * x);
    } else if a < 1.25 {
        ERX + near_one(a - 1.0)
    } else if a < 6.0 {
        1.0 - erfc_positive(a)
    } else {
        1.0 - f64::MIN_POSITIVE
    };
    y.copysign(x)
}

/// `erfc(x) = 1 - erf(x)` in float64 (fdlibm), accurate where `erf` is close to one.
pub(crate) fn erfc_f64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    if a < 0.843_75 {
        if a < 2f64.powi(-56) {
            return 1.0 - x;
        }
        let r = small(x * x);
        return if x < 0.25 { 1.0 - (x + x * r) } else { 0.5 - (x - 0.5 + x * r) };
    }
    if a < 28.0 {
        let c = erfc_positive(a);
        return if x < 0.0 { 2.0 - c } else { c };
    }
    if x < 0.0 {
        2.0 - f64::MIN_POSITIVE
    } else {
        0.0
    }
}

/// Below this `|x|`, `erf(x)` is `x * 2/sqrt(pi)` to double precision (2^-28).
const TINY: f64 = 3.725_290_298_461_914e-9;

/// `2/sqrt(pi) - 1`, scaled by 8.
#[allow(clippy::excessive_precision)]
const EFX8: f64 = 1.027_033_336_764_100_690_53;

/// `erf(1)` rounded to 24 bits: the constant of the expansion around one.
#[allow(clippy::excessive_precision)]
const ERX: f64 = 8.450_629_115_104_675_292_97e-1;

/// `(erf(x) - x) / x` for `|x| < 0.84375`, as a rational function of `z = x^2`.
#[allow(clippy::excessive_precision)]
fn small(z: f64) -> f64 {
    const P: [f64; 5] = [
        1.283_791_670_955_125_585_61e-1,
        -3.250_421_072_470_014_993_70e-1,
        -2.848_174_957_559_851_047_66e-2,
        -5.770_270_296_489_441_591_57e-3,
        -2.376_301_665_665_016_260_84e-5,
    ];
    const Q: [f64; 5] = [
        3.979_172_239_591_553_528_19e-1,
        6.502_224_998_876_729_444_85e-2,
        5.081_306_281_875_765_627_76e-3,
        1.324_947_380_043_216_445_26e-4,
        -3.960_228_278_775_368_123_20e-6,
    ];
    poly(&P, z) / (1.0 + z * poly(&Q, z))
}

/// `erf(1 + s) - ERX` for `-0.15625 <= s < 0.25`, as `P(s) / Q(s)`.
#[allow(clippy::excessive_precision)]
fn near_one(s: f64) -> f64 {
    const P: [f64; 7] = [
        -2.362_118_560_752_659_440_77e-3,
        4.148_561_186_837_483_316_66e-1,
        -3.722_078_760_357_013_238_47e-1,
        3.183_466_199_011_617_536_74e-1,
        -1.108_946_942_823_966_774_76e-1,
        3.547_830_432_561_823_593_71e-2,
        -2.166_375_594_868_790_843_00e-3,
    ];
    const Q: [f64; 6] = [
        1.064_208_804_008_442_282_86e-1,
        5.403_979_177_021_710_489_37e-1,
        7.182_865_441_419_626_628_68e-2,
        1.261_712_198_087_616_421_12e-1,
        1.363_708_391_202_905_073_62e-2,
        1.198_449_984_679_910_741_70e-2,
    ];
    poly(&P, s) / (1.0 + s * poly(&Q, s))
}

/// `erfc(a)` for `0.84375 <= a < 28`.
#[allow(clippy::excessive_precision)]
fn erfc_positive(a: f64) -> f64 {
    if a < 1.25 {
        return 1.0 - ERX - near_one(a - 1.0);
    }
    // erfc(a) = exp(-a^2 - 0.5625 + R(1/a^2) / S(1/a^2)) / a.
    const RA: [f64; 8] = [
        -9.864_944_034_847_148_227_05e-3,
        -6.938_585_727_071_817_643_72e-1,
        -1.055_862_622_532_329_098_14e1,
        -6.237_533_245_032_600_603_96e1,
        -1.623_966_694_625_734_703_55e2,
        -1.846_050_929_067_110_359_94e2,
        -8.128_743_550_630_659_342_46e1,
        -9.814_329_344_169_145_485_92,
    ];
    const SA: [f64; 8] = [
        1.965_127_166_743_925_712_92e1,
        1.376_577_541_435_190_426_00e2,
        4.345_658_774_752_292_288_21e2,
        6.453_872_717_332_678_803_36e2,
        4.290_081_400_275_678_333_86e2,
        1.086_350_055_417_794_351_34e2,
        6.570_249_770_319_281_701_35,
        -6.042_441_521_485_809_874_38e-2,
    ];
    const RB: [f64; 7] = [
        -9.864_942_924_700_099_285_97e-3,
        -7.992_832_376_805_230_065_74e-1,
        -1.775_795_491_775_475_198_89e1,
        -1.606_363_848_558_219_160_62e2,
        -6.375_664_433_683_896_277_22e2,
        -1.025_095_131_611_077_249_54e3,
        -4.835_191_916_086_513_970_19e2,
    ];
    const SB: [f64; 7] = [
        3.033_806_074_348_245_829_24e1,
        3.257_925_129_965_739_188_26e2,
        1.536_729_586_084_436_959_94e3,
        3.199_858_219_508_595_539_08e3,
        2.553_050_406_433_164_425_83e3,
        4.745_285_412_069_553_672_15e2,
        -2.244_095_244_658_581_833_62e1,
    ];
    let s = 1.0 / (a * a);
    let (r, big_s) =
        if a < 1.0 / 0.35 { (poly(&RA, s), 1.0 + s * poly(&SA, s)) } else { (poly(&RB, s), 1.0 + s * poly(&SB, s)) };
    // z is `a` with the low 32 bits cleared, so that `z * z` is exact and `exp` sees the rest separately.
    let z = f64::from_bits(a.to_bits() & 0xffff_ffff_0000_0000);
    (-z * z - 0.5625).exp() * ((z - a) * (z + a) + r / big_s).exp() / a
}

/// `c[0] + c[1] x + c[2] x^2 + ...` by Horner's rule (lowest degree first, as fdlibm writes them).
fn poly(c: &[f64], x: f64) -> f64 {
    c.iter().rev().fold(0.0, |acc, &k| acc * x + k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float64_matches_reference_values() {
        // erf and erfc at a few points, from Abramowitz & Stegun table 7.1 and mpmath (30 digits).
        let cases: [(f64, f64, f64); 6] = [
            (0.0, 0.0, 1.0),
            (0.5, 0.520_499_877_813_046_5, 0.479_500_122_186_953_5),
            (1.0, 0.842_700_792_949_714_9, 0.157_299_207_050_285_13),
            (2.0, 0.995_322_265_018_952_7, 0.004_677_734_981_047_266),
            (3.5, 0.999_999_256_901_627_7, 7.430_983_723_414_128e-7),
            (10.0, 1.0, 2.088_487_583_762_545e-45),
        ];
        for (x, e, c) in cases {
            assert!((erf_f64(x) - e).abs() <= 2.0 * f64::EPSILON * e.abs().max(1e-300), "erf({x})");
            assert!((erf_f64(-x) + e).abs() <= 2.0 * f64::EPSILON * e.abs().max(1e-300), "erf(-{x})");
            assert!((erfc_f64(x) - c).abs() <= 4.0 * f64::EPSILON * c, "erfc({x}) = {}", erfc_f64(x));
            assert!((erfc_f64(-x) - (2.0 - c)).abs() <= 4.0 * f64::EPSILON, "erfc(-{x})");
        }
        assert!(erf_f64(f64::NAN).is_nan() && erfc_f64(f64::NAN).is_nan());
        assert_eq!((erf_f64(f64::INFINITY), erf_f64(f64::NEG_INFINITY)), (1.0, -1.0));
        assert_eq!((erfc_f64(f64::INFINITY), erfc_f64(f64::NEG_INFINITY)), (0.0, 2.0));
    }

    #[test]
    fn float32_erfc_is_accurate_in_both_tails() {
        // Against the float64 erfc: within 1e-6 relative (erf_f32 is not correctly rounded), times x^2 in the tails (the rounding of x * x in
        // float32 moves exp(-x^2) by up to x^2 ulps, as in XLA), wherever the value is a normal float32.
        for i in -1000..=1000 {
            let x = i as f32 * 0.0093; // -9.3 ..= 9.3
            let (got, want) = (f64::from(erfc_f32(x)), erfc_f64(f64::from(x)));
            if want > 1e-37 {
                let tolerance = 1e-6 * f64::from(x * x).max(1.0);
                assert!((got - want).abs() <= tolerance * want, "erfc({x}) = {got}, want {want}");
            } else {
                assert!(got <= 1e-37, "erfc({x}) = {got} underflows to (almost) zero");
            }
        }
        assert!(erfc_f32(f32::NAN).is_nan());
        assert_eq!((erfc_f32(f32::INFINITY), erfc_f32(f32::NEG_INFINITY), erfc_f32(0.0)), (0.0, 2.0, 1.0));
    }

    #[test]
    fn float32_follows_xla() {
        assert_eq!(erf_f32(0.0).to_bits(), 0.0f32.to_bits());
        assert_eq!(erf_f32(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!((erf_f32(4.0), erf_f32(-3.9), erf_f32(f32::INFINITY)), (1.0, -1.0, 1.0));
        assert!(erf_f32(f32::NAN).is_nan());
        for i in -400..=400 {
            let x = i as f32 * 0.01;
            let want = erf_f64(f64::from(x)) as f32;
            assert!((erf_f32(x) - want).abs() <= 4.0 * f32::EPSILON, "erf({x})");
        }
    }
}
