//! [`Element`]: the Rust types a tensor can hold, one per [`DType`], and [`Scalar`], a dtype-free number
//! through which every cast goes exactly.

use half::{bf16, f16};
use ndarray::{ArcArray, IxDyn};

use super::TensorData;
use crate::dtype::DType;

mod sealed {
    pub trait Sealed {}
}

/// A number of any dtype, wide enough to hold every element exactly (casts go through it without double
/// rounding: an `i64` becomes an `f32` in one correctly rounded step).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    /// A bool.
    Bool(bool),
    /// A signed integer.
    I64(i64),
    /// An unsigned integer.
    U64(u64),
    /// A float (float16, bfloat16 and float32 widen to float64 exactly).
    F64(f64),
}

impl Scalar {
    /// The value as `f64` (rounded for integers beyond 2^53).
    pub fn to_f64(self) -> f64 {
        match self {
            Scalar::Bool(b) => f64::from(u8::from(b)),
            Scalar::I64(v) => v as f64,
            Scalar::U64(v) => v as f64,
            Scalar::F64(v) => v,
        }
    }
}

/// A Rust type a [`Tensor`](crate::Tensor) can hold: `bool`, `i8`..`i64`, `u8`..`u64`, [`f16`](half::f16), [`bf16`](half::bf16),
/// `f32`, `f64`. Sealed: the set matches the Keras dtypes.
pub trait Element:
    sealed::Sealed + Copy + Send + Sync + PartialEq + PartialOrd + Default + std::fmt::Debug + 'static
{
    /// The dtype of this element type.
    const DTYPE: DType;
    /// Bytes of one element in the little-endian layout used by checkpoints and fingerprints.
    type Bytes: AsRef<[u8]>;

    /// Wraps an array of this element type as tensor data.
    fn wrap(array: ArcArray<Self, IxDyn>) -> TensorData;
    /// The array inside `data` when it holds this element type.
    fn array(data: &TensorData) -> Option<&ArcArray<Self, IxDyn>>;
    /// The array inside `data` when it holds this element type, mutably.
    fn array_mut(data: &mut TensorData) -> Option<&mut ArcArray<Self, IxDyn>>;
    /// The element as a [`Scalar`], exactly.
    fn to_scalar(self) -> Scalar;
    /// The element nearest to `value` under numpy's cast rules: to bool is `!= 0` (NaN is true), float to
    /// integer truncates toward zero (saturating, NaN to 0), integer to narrower integer wraps, to float rounds
    /// to nearest even.
    fn from_scalar(value: Scalar) -> Self;
    /// Little-endian bytes of the element.
    fn to_le_bytes(self) -> Self::Bytes;
    /// The element from little-endian bytes (`bytes.len()` must be the dtype's item size).
    fn from_le_slice(bytes: &[u8]) -> Self;

    /// The element as `f64`.
    fn to_f64(self) -> f64 {
        self.to_scalar().to_f64()
    }
    /// The element nearest to a float, as [`Element::from_scalar`].
    fn from_f64(value: f64) -> Self {
        Self::from_scalar(Scalar::F64(value))
    }
    /// Casts to another element type with numpy's rules (see [`Element::from_scalar`]).
    fn cast<U: Element>(self) -> U {
        U::from_scalar(self.to_scalar())
    }
}

macro_rules! element_common {
    ($t:ident, $variant:ident, $dtype:ident) => {
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DType = DType::$dtype;
            type Bytes = [u8; std::mem::size_of::<$t>()];

            fn wrap(array: ArcArray<Self, IxDyn>) -> TensorData {
                TensorData::$variant(array)
            }
            fn array(data: &TensorData) -> Option<&ArcArray<Self, IxDyn>> {
                match data {
                    TensorData::$variant(a) => Some(a),
                    _ => None,
                }
            }
            fn array_mut(data: &mut TensorData) -> Option<&mut ArcArray<Self, IxDyn>> {
                match data {
                    TensorData::$variant(a) => Some(a),
                    _ => None,
                }
            }
            fn to_scalar(self) -> Scalar {
                element_common!(@to self, $t)
            }
            fn from_scalar(value: Scalar) -> Self {
                element_common!(@from value, $t)
            }
            fn to_le_bytes(self) -> Self::Bytes {
                element_common!(@bytes self, $t)
            }
            fn from_le_slice(bytes: &[u8]) -> Self {
                let mut raw = [0u8; std::mem::size_of::<$t>()];
                raw.copy_from_slice(bytes);
                element_common!(@unbytes raw, $t)
            }
        }
    };
    (@to $x:ident, bool) => { Scalar::Bool($x) };
    (@to $x:ident, f16) => { Scalar::F64($x.to_f64()) };
    (@to $x:ident, bf16) => { Scalar::F64($x.to_f64()) };
    (@to $x:ident, f32) => { Scalar::F64(f64::from($x)) };
    (@to $x:ident, f64) => { Scalar::F64($x) };
    (@to $x:ident, u8) => { Scalar::U64(u64::from($x)) };
    (@to $x:ident, u16) => { Scalar::U64(u64::from($x)) };
    (@to $x:ident, u32) => { Scalar::U64(u64::from($x)) };
    (@to $x:ident, u64) => { Scalar::U64($x) };
    (@to $x:ident, $t:ident) => { Scalar::I64(i64::from($x)) };
    (@from $v:ident, bool) => {
        match $v {
            Scalar::Bool(b) => b,
            Scalar::I64(i) => i != 0,
            Scalar::U64(u) => u != 0,
            Scalar::F64(f) => f != 0.0,
        }
    };
    (@from $v:ident, f16) => { f16::from_f64(element_common!(@from $v, f64)) };
    (@from $v:ident, bf16) => { bf16::from_f64(element_common!(@from $v, f64)) };
    (@from $v:ident, $t:ident) => {
        match $v {
            Scalar::Bool(b) => u8::from(b) as $t,
            Scalar::I64(i) => i as $t,
            Scalar::U64(u) => u as $t,
            Scalar::F64(f) => f as $t,
        }
    };
    (@bytes $x:ident, bool) => { [u8::from($x)] };
    (@bytes $x:ident, $t:ident) => { $x.to_le_bytes() };
    (@unbytes $raw:ident, bool) => { $raw[0] != 0 };
    (@unbytes $raw:ident, $t:ident) => { <$t>::from_le_bytes($raw) };
}

element_common!(bool, Bool, Bool);
element_common!(i8, Int8, Int8);
element_common!(i16, Int16, Int16);
element_common!(i32, Int32, Int32);
element_common!(i64, Int64, Int64);
element_common!(u8, Uint8, Uint8);
element_common!(u16, Uint16, Uint16);
element_common!(u32, Uint32, Uint32);
element_common!(u64, Uint64, Uint64);
element_common!(f16, Float16, Float16);
element_common!(bf16, Bfloat16, Bfloat16);
element_common!(f32, Float32, Float32);
element_common!(f64, Float64, Float64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_follow_numpy() {
        assert_eq!((-2.7f64).cast::<i32>(), -2);
        assert_eq!(f64::NAN.cast::<i32>(), 0);
        assert!(f64::NAN.cast::<bool>());
        assert!(!0.0f32.cast::<bool>());
        assert_eq!(300i32.cast::<u8>(), 44);
        assert_eq!(true.cast::<f32>(), 1.0);
        assert_eq!(1.5f32.cast::<f16>(), f16::from_f32(1.5));
        // One correctly rounded step from i64 to f32 (no double rounding through f64).
        let big = (1i64 << 62) + (1 << 38) + 1;
        assert_eq!(big.cast::<f32>(), big as f32);
        assert_eq!(u64::MAX.cast::<f64>(), u64::MAX as f64);
    }

    #[test]
    fn bytes_round_trip() {
        assert_eq!(f32::from_le_slice(&1.5f32.to_le_bytes()), 1.5);
        assert_eq!(bf16::from_le_slice(&bf16::from_f32(2.0).to_le_bytes()), bf16::from_f32(2.0));
        assert!(bool::from_le_slice(&true.to_le_bytes()));
    }
}
