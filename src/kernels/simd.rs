//! Elementwise loops compiled twice and picked at run time: once for the baseline x86-64 the crate is built
//! for (SSE2), once with AVX2 and FMA enabled, taken when the CPU has both.
//!
//! `dispatch` (crate-internal) runs a loop inside a function compiled with `#[target_feature(enable = "avx2,fma")]`; the
//! loop's body is inlined there, so the compiler vectorizes it over 256-bit registers and lowers `mul_add` to
//! one `vfmadd` instruction instead of a call to the C library's `fmaf`. This is the crate's second audited
//! `unsafe` (beside [`gemm`](super::gemm)): calling a target-feature function is sound only on a CPU with
//! those features, and `dispatch` calls it only after `is_x86_feature_detected!` said so.
//!
//! **Bits do not depend on the path.** Rust never contracts `a * b + c` into a fused multiply-add nor
//! reorders floating-point additions, so a vectorized elementwise loop computes each element with the same
//! operations in the same order; `mul_add` is correctly rounded both in hardware and in `fmaf`; float32 `exp`
//! is the crate's own straight-line arithmetic (`ops/expf.rs`, vectorized like the rest), and the other
//! transcendental calls (`tanh`, `ln`, float64 `exp`, ...) go to the same C library either way.
//! [`force_baseline`] makes every dispatched loop take the baseline path, and the tests compare the two.
//! Reductions keep their fixed trees ([`reduce`](super::reduce)) and are not dispatched.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static FORCE_BASELINE: AtomicBool = AtomicBool::new(false);

/// The code path dispatched loops take on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Baseline x86-64 (SSE2), or another architecture: the code as the crate was built.
    Baseline,
    /// AVX2 with FMA (x86-64 from Haswell and Zen on).
    Avx2Fma,
}

/// The path dispatched loops take now: [`Level::Avx2Fma`] when the CPU has AVX2 and FMA, [`force_baseline`]
/// is off and the environment variable `PURESTATE_SIMD` is not `baseline` (read once per process).
///
/// # Examples
/// ```
/// use purestate::kernels::simd::{self, Level};
/// simd::force_baseline(true);
/// assert_eq!(simd::level(), Level::Baseline);
/// simd::force_baseline(false);
/// ```
pub fn level() -> Level {
    static ENV_BASELINE: OnceLock<bool> = OnceLock::new();
    let env = *ENV_BASELINE.get_or_init(|| std::env::var("PURESTATE_SIMD").is_ok_and(|v| v == "baseline"));
    if env || FORCE_BASELINE.load(Ordering::Relaxed) {
        return Level::Baseline;
    }
    detected()
}

/// The best path this CPU supports, whatever [`force_baseline`] says.
pub fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return Level::Avx2Fma;
        }
    }
    Level::Baseline
}

/// Makes every dispatched loop take the baseline path (`true`) or the best one again (`false`), process-wide:
/// for comparing the two (tests, benchmarks). Results are bit-identical either way; only speed changes.
pub fn force_baseline(on: bool) {
    FORCE_BASELINE.store(on, Ordering::Relaxed);
}

/// Runs `f`, compiled with AVX2 and FMA when [`level`] is [`Level::Avx2Fma`]. `f` should be the whole loop
/// (not one element), so that the loop is vectorized inside the feature-enabled function.
#[inline(always)]
pub(crate) fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if level() == Level::Avx2Fma {
            // SAFETY: `avx2_fma` only requires the CPU to support AVX2 and FMA, which `level` just checked
            // with `is_x86_feature_detected!`.
            #[allow(unsafe_code)]
            return unsafe { avx2_fma(f) };
        }
    }
    f()
}

/// `f()`, compiled (with everything inlined into it) for AVX2 and FMA.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_fma<R>(f: impl FnOnce() -> R) -> R {
    f()
}
