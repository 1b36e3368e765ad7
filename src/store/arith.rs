//! The arithmetic of `assign_add` and `assign_sub`: promote, broadcast, compute, cast back to the variable's
//! dtype; in place in the variable's buffer when the promoted dtype is the variable's own.

use half::{bf16, f16};
use ndarray::{ArcArray, IxDyn, Zip};

use crate::dtype::{result_type, DType, Operand};
use crate::error::{Error, Result};
use crate::tensor::{with_dtype, Element, Tensor};

/// The two updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Add,
    Sub,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Add => "assign_add",
            Op::Sub => "assign_sub",
        }
    }
}

/// Addition and subtraction with numpy's element semantics: integers wrap, 16-bit floats compute in f32 and
/// round once, bool addition is logical or.
trait AddSub: Element {
    fn add(self, other: Self) -> Self;
    fn sub(self, other: Self) -> Self;
}

macro_rules! int_add_sub {
    ($($t:ty),*) => {$(
        impl AddSub for $t {
            fn add(self, other: Self) -> Self { self.wrapping_add(other) }
            fn sub(self, other: Self) -> Self { self.wrapping_sub(other) }
        }
    )*};
}
int_add_sub!(i8, i16, i32, i64, u8, u16, u32, u64);

macro_rules! float_add_sub {
    ($($t:ty),*) => {$(
        impl AddSub for $t {
            fn add(self, other: Self) -> Self { self + other }
            fn sub(self, other: Self) -> Self { self - other }
        }
    )*};
}
float_add_sub!(f32, f64);

macro_rules! half_add_sub {
    ($($t:ty),*) => {$(
        impl AddSub for $t {
            fn add(self, other: Self) -> Self { <$t>::from_f32(self.to_f32() + other.to_f32()) }
            fn sub(self, other: Self) -> Self { <$t>::from_f32(self.to_f32() - other.to_f32()) }
        }
    )*};
}
half_add_sub!(f16, bf16);

impl AddSub for bool {
    fn add(self, other: Self) -> Self {
        self || other
    }
    fn sub(self, _other: Self) -> Self {
        unreachable!("bool subtraction is refused before any element is computed")
    }
}

/// `current = cast(current op value)`, where `op` runs in the promoted dtype of the two and `value` broadcasts
/// to `current`'s shape. Nothing changes on error.
pub(crate) fn apply_in_place(current: &mut Tensor, value: &Tensor, op: Op, floatx: DType, path: &str) -> Result<()> {
    let dtype = current.dtype();
    let promoted = result_type(&[Operand::Tensor(dtype), Operand::Tensor(value.dtype())], floatx);
    if op == Op::Sub && promoted == DType::Bool {
        return Err(Error::UnsupportedDType { op: op.name(), dtype: DType::Bool });
    }
    if !broadcasts_to(value.dims(), current.dims()) {
        return Err(Error::ShapeMismatch { path: path.into(), expected: current.shape(), got: value.shape() });
    }
    if promoted == dtype {
        let value = value.cast(dtype);
        with_dtype!(dtype, T => combine::<T>(current.array_mut::<T>()?, value.array::<T>()?, op));
    } else {
        let mut wide = current.cast(promoted);
        let value = value.cast(promoted);
        with_dtype!(promoted, T => combine::<T>(wide.array_mut::<T>()?, value.array::<T>()?, op));
        *current = wide.cast(dtype);
    }
    Ok(())
}

fn combine<T: Element + AddSub>(target: &mut ArcArray<T, IxDyn>, value: &ArcArray<T, IxDyn>, op: Op) {
    let value = value.broadcast(target.raw_dim()).expect("shapes were checked to broadcast");
    match op {
        Op::Add => Zip::from(target).and(&value).for_each(|a, &b| *a = a.add(b)),
        Op::Sub => Zip::from(target).and(&value).for_each(|a, &b| *a = a.sub(b)),
    }
}

/// True when an array of shape `from` broadcasts to exactly `to` (numpy's rules, no growth of `to`).
pub(crate) fn broadcasts_to(from: &[usize], to: &[usize]) -> bool {
    from.len() <= to.len() && from.iter().rev().zip(to.iter().rev()).all(|(&f, &t)| f == t || f == 1)
}
