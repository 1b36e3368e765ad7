//! Element arithmetic behind the operators: [`Num`] for every dtype, [`Float`] (computing float16 and
//! bfloat16 in float32 and rounding once, as XLA's CPU backend does), [`Int`] with Python's `//` and `%`,
//! and [`Bits`] for the bitwise operators.

use half::{bf16, f16};

use crate::tensor::Element;

/// Arithmetic every dtype has. Integers wrap (numpy and XLA); bool adds as `or` and multiplies as `and`.
pub(crate) trait Num: Element {
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    /// The larger; NaN if either is NaN.
    fn maximum(self, o: Self) -> Self;
    /// The smaller; NaN if either is NaN.
    fn minimum(self, o: Self) -> Self;
    fn neg(self) -> Self;
    fn abs(self) -> Self;
    /// -1, 0 or 1 (NaN stays NaN, -0.0 stays -0.0).
    fn sign(self) -> Self;
    #[inline]
    fn is_nan(self) -> bool {
        false
    }
}

/// A float computed in `C` (f32 for float16, bfloat16 and float32; f64 for float64).
pub(crate) trait Float: Num {
    type C: Real;
    fn up(self) -> Self::C;
    fn down(c: Self::C) -> Self;
}

/// f32 and f64 arithmetic and math.
pub(crate) trait Real:
    crate::kernels::Acc
    + Copy
    + Send
    + Sync
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Rem<Output = Self>
    + std::ops::Neg<Output = Self>
{
    const ONE: Self;
    fn sqrt(self) -> Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn ln_1p(self) -> Self;
    fn exp_m1(self) -> Self;
    fn tanh(self) -> Self;
    fn round(self) -> Self;
    fn round_ties_even(self) -> Self;
    fn signum_or_zero(self) -> Self;
}

macro_rules! real {
    ($($t:ident: $exp:path),*) => {$(
        impl Real for $t {
            const ONE: Self = 1.0;
            #[inline]
            fn sqrt(self) -> Self { $t::sqrt(self) }
            #[inline(always)]
            fn exp(self) -> Self { $exp(self) }
            #[inline]
            fn ln(self) -> Self { $t::ln(self) }
            #[inline]
            fn ln_1p(self) -> Self { $t::ln_1p(self) }
            #[inline]
            fn exp_m1(self) -> Self { $t::exp_m1(self) }
            #[inline]
            fn tanh(self) -> Self { $t::tanh(self) }
            #[inline]
            fn round(self) -> Self { $t::round(self) }
            #[inline]
            fn round_ties_even(self) -> Self { $t::round_ties_even(self) }
            #[inline]
            fn signum_or_zero(self) -> Self {
                if self > 0.0 { 1.0 } else if self < 0.0 { -1.0 } else { self }
            }
        }
    )*};
}
// float32's `exp` is ours (`expf.rs`): it vectorizes and gives the same bits on every CPU and libc.
real!(f32: super::expf::exp_f32, f64: f64::exp);

macro_rules! float_num {
    ($($t:ident: $c:ident, $up:expr, $down:expr);*) => {$(
        impl Float for $t {
            type C = $c;
            #[inline(always)]
            fn up(self) -> $c { $up(self) }
            #[inline(always)]
            fn down(c: $c) -> Self { $down(c) }
        }
        impl Num for $t {
            #[inline(always)]
            fn add(self, o: Self) -> Self { Self::down(self.up() + o.up()) }
            #[inline(always)]
            fn sub(self, o: Self) -> Self { Self::down(self.up() - o.up()) }
            #[inline(always)]
            fn mul(self, o: Self) -> Self { Self::down(self.up() * o.up()) }
            #[inline]
            fn maximum(self, o: Self) -> Self {
                if self.up().is_nan() || self.up() > o.up() { self } else { o }
            }
            #[inline]
            fn minimum(self, o: Self) -> Self {
                if self.up().is_nan() || self.up() < o.up() { self } else { o }
            }
            #[inline]
            fn neg(self) -> Self { Self::down(-self.up()) }
            #[inline]
            fn abs(self) -> Self { Self::down(self.up().abs()) }
            #[inline]
            fn sign(self) -> Self { Self::down(Real::signum_or_zero(self.up())) }
            #[inline]
            fn is_nan(self) -> bool { self.up().is_nan() }
        }
    )*};
}
float_num! {
    f16: f32, f16::to_f32, f16::from_f32;
    bf16: f32, bf16::to_f32, bf16::from_f32;
    f32: f32, std::convert::identity, std::convert::identity;
    f64: f64, std::convert::identity, std::convert::identity
}

/// Integers: Python's floor division and remainder (the divisor is checked nonzero before), powers with a
/// non-negative exponent, all wrapping.
pub(crate) trait Int: Num + Ord {
    const ZERO: Self;
    fn floor_div(self, o: Self) -> Self;
    fn py_rem(self, o: Self) -> Self;
    fn pow(self, e: Self) -> Self;
    fn is_negative(self) -> bool;
}

/// Bitwise `and`, `or`, `xor`, `not` (logical on bool).
pub(crate) trait Bits: Element {
    fn and(self, o: Self) -> Self;
    fn or(self, o: Self) -> Self;
    fn xor(self, o: Self) -> Self;
    fn not(self) -> Self;
}

macro_rules! int_num {
    ($($t:ident: $signed:tt),*) => {$(
        impl Num for $t {
            #[inline(always)]
            fn add(self, o: Self) -> Self { self.wrapping_add(o) }
            #[inline(always)]
            fn sub(self, o: Self) -> Self { self.wrapping_sub(o) }
            #[inline(always)]
            fn mul(self, o: Self) -> Self { self.wrapping_mul(o) }
            #[inline]
            fn maximum(self, o: Self) -> Self { Ord::max(self, o) }
            #[inline]
            fn minimum(self, o: Self) -> Self { Ord::min(self, o) }
            #[inline]
            fn neg(self) -> Self { self.wrapping_neg() }
            #[inline]
            fn abs(self) -> Self { int_num!(@abs $signed, self) }
            #[inline]
            fn sign(self) -> Self { int_num!(@sign $signed, self) }
        }
        impl Int for $t {
            const ZERO: Self = 0;
            #[inline]
            fn floor_div(self, o: Self) -> Self {
                let q = self.wrapping_div(o);
                if int_num!(@neg $signed, self) != int_num!(@neg $signed, o) && self.wrapping_rem(o) != 0 {
                    q.wrapping_sub(1)
                } else {
                    q
                }
            }
            #[inline]
            fn py_rem(self, o: Self) -> Self {
                let r = self.wrapping_rem(o);
                if r != 0 && int_num!(@neg $signed, r) != int_num!(@neg $signed, o) { r.wrapping_add(o) } else { r }
            }
            #[inline]
            fn pow(self, e: Self) -> Self {
                // Square and multiply over the exponent's bits, wrapping like numpy's integer power.
                let (mut base, mut e, mut acc) = (self, e, 1 as $t);
                while e != 0 {
                    if e & 1 == 1 { acc = acc.wrapping_mul(base); }
                    base = base.wrapping_mul(base);
                    e >>= 1;
                }
                acc
            }
            #[inline]
            fn is_negative(self) -> bool { int_num!(@neg $signed, self) }
        }
        impl Bits for $t {
            #[inline]
            fn and(self, o: Self) -> Self { self & o }
            #[inline]
            fn or(self, o: Self) -> Self { self | o }
            #[inline]
            fn xor(self, o: Self) -> Self { self ^ o }
            #[inline]
            fn not(self) -> Self { !self }
        }
    )*};
    (@abs signed, $x:expr) => { $x.wrapping_abs() };
    (@abs unsigned, $x:expr) => { $x };
    (@sign signed, $x:expr) => { $x.signum() };
    (@sign unsigned, $x:expr) => { if $x > 0 { 1 } else { 0 } };
    (@neg signed, $x:expr) => { $x < 0 };
    (@neg unsigned, $x:expr) => { false };
}
int_num!(i8: signed, i16: signed, i32: signed, i64: signed, u8: unsigned, u16: unsigned, u32: unsigned, u64: unsigned);

impl Num for bool {
    #[inline]
    fn add(self, o: Self) -> Self {
        self | o
    }
    #[inline]
    fn sub(self, o: Self) -> Self {
        self ^ o
    }
    #[inline]
    fn mul(self, o: Self) -> Self {
        self & o
    }
    #[inline]
    fn maximum(self, o: Self) -> Self {
        self | o
    }
    #[inline]
    fn minimum(self, o: Self) -> Self {
        self & o
    }
    #[inline]
    fn neg(self) -> Self {
        self
    }
    #[inline]
    fn abs(self) -> Self {
        self
    }
    #[inline]
    fn sign(self) -> Self {
        self
    }
}

impl Bits for bool {
    #[inline]
    fn and(self, o: Self) -> Self {
        self & o
    }
    #[inline]
    fn or(self, o: Self) -> Self {
        self | o
    }
    #[inline]
    fn xor(self, o: Self) -> Self {
        self ^ o
    }
    #[inline]
    fn not(self) -> Self {
        !self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[inline]
    fn python_floor_division_and_remainder() {
        assert_eq!((7i32.floor_div(2), (-7i32).floor_div(2), 7i32.floor_div(-2)), (3, -4, -4));
        assert_eq!((7i32.py_rem(-2), (-7i32).py_rem(2), (-8i32).py_rem(2)), (-1, 1, 0));
        assert_eq!(i8::MIN.floor_div(-1), i8::MIN, "wraps like XLA");
        assert_eq!(7u8.floor_div(2), 3);
        assert_eq!(Int::pow(3i64, 4), 81);
        assert_eq!(Int::pow(2u8, 9), 0);
    }

    #[test]
    #[inline]
    fn half_floats_round_once() {
        let a = f16::from_f32(1.0);
        let b = f16::from_f32(0.000_1);
        assert_eq!(a.add(b), f16::from_f32(1.0f32 + b.to_f32()));
        assert!(Num::maximum(f32::NAN, 1.0).is_nan() && Num::maximum(1.0f32, f32::NAN).is_nan());
        assert!(Num::minimum(f32::NAN, 1.0).is_nan() && Num::minimum(1.0f32, f32::NAN).is_nan());
        assert_eq!((-0.0f32).sign().to_bits(), (-0.0f32).to_bits());
    }
}
