//! The inverse error function as XLA evaluates it, so normal draws follow JAX's `_normal_real`
//! (`sqrt(2) * erf_inv(u)`, jax/_src/random/core.py).
//!
//! Both precisions are Mike Giles's polynomial approximations ("Approximating the erfinv function", GPU
//! Computing Gems Jade Edition, 2011) with the coefficients, branch points and evaluation order of XLA's
//! `chlo.erf_inv` decomposition, which `jax.lax.erf_inv` lowers to (read from the HLO jax 0.10.2 emits).
//! `log1p` is XLA's (xla/codegen/intrinsic/log1p.cc): Cephes's rational approximation near zero and
//! `ln(1 + x)` elsewhere. XLA's CPU backend fuses each product feeding a sum into one fused multiply-add, and
//! so do we (`mul_add`). What remains different is XLA's own float32 `ln`, used by `log1p` for
//! `|x| >= sqrt(2) - 1`: where it and the platform's `ln` differ in the last bit, a float32 draw may differ by
//! an ulp or two. The float64 `ln` is the platform's on both sides.

#[allow(clippy::excessive_precision)] // the published digits, as XLA writes them
/// Giles's single-precision coefficients for `w < 5`, highest degree first.
const F32_CENTRAL: [f32; 9] = [
    2.810_226_36e-08,
    3.432_739_39e-07,
    -3.523_387_7e-06,
    -4.391_506_54e-06,
    0.000_218_580_87,
    -0.001_253_725_03,
    -0.004_177_681_64,
    0.246_640_727,
    1.501_409_41,
];

#[allow(clippy::excessive_precision)] // the published digits, as XLA writes them
/// Giles's single-precision coefficients for `w >= 5`, highest degree first.
const F32_TAIL: [f32; 9] = [
    -0.000_200_214_257,
    0.000_100_950_558,
    0.001_349_343_22,
    -0.003_673_428_44,
    0.005_739_507_73,
    -0.007_622_461_3,
    0.009_438_870_47,
    1.001_674_06,
    2.832_976_82,
];

#[allow(clippy::excessive_precision)] // the published digits, as XLA writes them
/// Giles's double-precision coefficients for `w < 6.25`, highest degree first.
const F64_CENTRAL: [f64; 23] = [
    -3.644_412_064_017_82e-21,
    -1.685_059_138_182_016_6e-19,
    1.285_848_071_525_64e-18,
    1.115_787_767_802_518_1e-17,
    -1.333_171_662_854_620_9e-16,
    2.097_276_787_596_856_2e-17,
    6.637_638_134_358_323_8e-15,
    -4.054_566_272_975_206_9e-14,
    -8.151_934_197_605_472_2e-14,
    2.633_509_315_308_232_3e-12,
    -1.297_513_325_345_353_2e-11,
    -5.415_412_054_294_627_9e-11,
    1.051_212_273_321_532_3e-09,
    -4.112_633_980_346_983_7e-09,
    -2.907_036_995_788_200_5e-08,
    4.234_787_782_793_240_4e-07,
    -1.365_469_200_083_467_9e-06,
    -1.388_252_336_278_646_9e-05,
    0.000_186_734_208_034_057_14,
    -0.000_740_702_534_166_267,
    -0.006_033_670_871_430_149_1,
    0.240_158_182_425_589_62,
    1.653_654_562_683_102_7,
];

#[allow(clippy::excessive_precision)] // the published digits, as XLA writes them
/// Giles's double-precision coefficients for `6.25 <= w < 16`, highest degree first.
const F64_MIDDLE: [f64; 19] = [
    2.213_737_692_177_578_7e-09,
    9.075_656_193_888_539_1e-08,
    -2.751_740_629_706_454_5e-07,
    1.823_962_921_438_922_8e-08,
    1.502_740_396_890_982_8e-06,
    -4.013_867_526_981_546e-06,
    2.923_444_908_995_544_6e-06,
    1.247_530_448_167_177_9e-05,
    -4.731_822_900_905_573_4e-05,
    6.828_485_145_957_317_5e-05,
    2.403_111_038_709_789_4e-05,
    -0.000_355_037_520_362_847_48,
    0.000_953_289_379_737_380_5,
    -0.001_688_275_556_023_504_7,
    0.002_491_442_096_107_850_8,
    -0.003_751_208_507_569_241_2,
    0.005_370_914_553_590_063_6,
    1.005_258_967_694_159_2,
    3.083_885_610_492_220_8,
];

#[allow(clippy::excessive_precision)] // the published digits, as XLA writes them
/// Giles's double-precision coefficients for `w >= 16`, highest degree first.
const F64_TAIL: [f64; 17] = [
    -2.710_992_061_643_857_3e-11,
    -2.555_641_816_996_525_2e-10,
    1.507_657_269_350_054_8e-09,
    -3.789_465_440_126_737e-09,
    7.615_701_208_078_34e-09,
    -1.496_002_662_714_924e-08,
    2.914_795_345_090_108_1e-08,
    -6.771_199_775_845_233_9e-08,
    2.290_048_222_802_665_5e-07,
    -9.929_827_294_231_7e-07,
    4.526_062_597_223_153_7e-06,
    -1.968_177_810_553_167_1e-05,
    7.599_527_703_001_776_1e-05,
    -0.000_215_030_119_300_444_77,
    -0.000_138_719_318_336_231_22,
    1.010_300_464_864_534_4,
    4.849_906_401_408_584_4,
];

/// `erf⁻¹(x)` in single precision, as XLA's `ErfInv32`: ±inf at ±1, NaN outside [-1, 1].
pub(crate) fn erf_inv_f32(x: f32) -> f32 {
    if x.abs() == 1.0 {
        return x * f32::INFINITY;
    }
    let w = -log1p_xla_f32(x * -x);
    let (coefficients, w) = if w < 5.0 { (&F32_CENTRAL, w - 2.5) } else { (&F32_TAIL, w.sqrt() - 3.0) };
    let p = coefficients[1..].iter().fold(coefficients[0], |p, &c| p.mul_add(w, c));
    p * x
}

/// `erf⁻¹(x)` in double precision, as XLA's `ErfInv64`: ±inf at ±1, NaN outside [-1, 1].
pub(crate) fn erf_inv_f64(x: f64) -> f64 {
    if x.abs() == 1.0 {
        return x * f64::INFINITY;
    }
    let w = -log1p_xla_f64(x * -x);
    let p = if w < 6.25 {
        horner(&F64_CENTRAL, w - 3.125)
    } else if w < 16.0 {
        horner(&F64_MIDDLE, w.sqrt() - 3.25)
    } else {
        horner(&F64_TAIL, w.sqrt() - 5.0)
    };
    p * x
}

/// XLA's `log1p` (xla/codegen/intrinsic/log1p.cc): Cephes's rational approximation for `|x| < sqrt(2) - 1`,
/// `ln(1 + x)` otherwise, with XLA's order of operations (products feeding sums fused, as XLA's CPU backend
/// contracts them).
fn log1p_xla_f64(x: f64) -> f64 {
    if x.abs() < LOG1P_SMALL {
        let x2 = x * x;
        let num = LOG1P_NUM.iter().fold(0.0f64, |p, &c| p.mul_add(x, c));
        let den = LOG1P_DEN.iter().fold(0.0f64, |p, &c| p.mul_add(x, c));
        let t = (x * x2) * (num / den);
        x + (-0.5f64).mul_add(x2, t)
    } else {
        (x + 1.0).ln()
    }
}

/// As [`log1p_xla_f64`] in single precision.
fn log1p_xla_f32(x: f32) -> f32 {
    if f64::from(x.abs()) < LOG1P_SMALL {
        let x2 = x * x;
        let num = LOG1P_NUM.iter().fold(0.0f32, |p, &c| p.mul_add(x, c as f32));
        let den = LOG1P_DEN.iter().fold(0.0f32, |p, &c| p.mul_add(x, c as f32));
        let t = (x * x2) * (num / den);
        x + (-0.5f32).mul_add(x2, t)
    } else {
        (x + 1.0).ln()
    }
}

#[allow(clippy::excessive_precision)] // Cephes's digits, as XLA writes them
const LOG1P_SMALL: f64 = 0.414_213_562_373_095_048_80;
#[allow(clippy::excessive_precision)]
const LOG1P_DEN: [f64; 7] = [
    1.0,
    1.506_290_908_346_919_204_316_7e1,
    8.304_756_596_796_720_946_943_4e1,
    2.217_623_982_373_285_646_539_4e2,
    3.090_987_222_531_205_977_493_8e2,
    2.164_278_861_449_594_768_500_3e2,
    6.011_866_049_760_384_391_930_6e1,
];
#[allow(clippy::excessive_precision)]
const LOG1P_NUM: [f64; 7] = [
    4.527_000_086_244_519_963_521_5e-5,
    4.985_410_282_319_337_597_221_2e-1,
    6.578_732_594_206_104_484_696_9,
    2.991_191_932_855_307_327_737_5e1,
    6.094_966_798_098_778_705_755_6e1,
    5.711_296_359_058_553_810_333_6e1,
    2.003_955_349_920_128_125_964_8e1,
];

fn horner(coefficients: &[f64], w: f64) -> f64 {
    coefficients[1..].iter().fold(coefficients[0], |p, &c| p.mul_add(w, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of erf⁻¹ from `scipy.special.erfinv` (SciPy 1.17).
    #[test]
    fn inverse_error_function_values() {
        for (x, want) in
            [(0.5, 0.476_936_276_204_469_9), (0.9, 1.163_087_153_676_674_3), (0.999, 2.326_753_765_513_524)]
        {
            assert!((erf_inv_f64(x) - want).abs() < 1e-14, "erf_inv_f64({x})");
            assert!((erf_inv_f64(-x) + want).abs() < 1e-14, "erf_inv_f64(-{x})");
            let x32 = x as f32; // float32 against float64 at the same (rounded) argument
            let (got, want32) = (f64::from(erf_inv_f32(x32)), erf_inv_f64(f64::from(x32)));
            assert!((got - want32).abs() < 1e-6 * want32, "erf_inv_f32({x})");
        }
        assert_eq!(erf_inv_f32(0.0), 0.0);
        assert_eq!(erf_inv_f64(1.0), f64::INFINITY);
        assert_eq!(erf_inv_f32(-1.0), f32::NEG_INFINITY);
        assert!(erf_inv_f64(1.5).is_nan());
    }

    /// The far tail (w >= 16) of the double-precision branch, against `scipy.special.erfinv(1 - 1e-12)`.
    #[test]
    fn double_precision_tail() {
        let got = erf_inv_f64(1.0 - 1e-12);
        assert!((got - 5.042_031_898_572_696).abs() < 1e-12 * 5.04, "{got}");
    }
}
