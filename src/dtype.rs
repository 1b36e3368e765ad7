//! [`DType`]: the Keras dtypes, their names, and type promotion ([`result_type`]).
//!
//! Promotion follows Keras 3's lattice (keras/src/backend/common/dtypes.py, Keras 3), weak Python scalars
//! included, without the JAX backend's final narrowing of 64-bit results to 32 bits: purestate has real 64-bit
//! types, so `float64 + float64` is `float64` and `int64 + int64` is `int64`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

pub use crate::base::DType;

const ALLOWED_NAMES: &str = "bool, int8, int16, int32, int64, uint8, uint16, uint32, uint64, float16, bfloat16, \
                             float32, float64";

impl FromStr for DType {
    type Err = Error;

    /// Parses a Keras dtype name. Unknown names are [`Error::InvalidDType`].
    fn from_str(name: &str) -> Result<Self> {
        DType::ALL
            .into_iter()
            .find(|d| d.name() == name)
            .ok_or_else(|| Error::InvalidDType { name: name.to_string(), allowed: ALLOWED_NAMES })
    }
}

impl TryFrom<&str> for DType {
    type Error = Error;

    fn try_from(name: &str) -> Result<Self> {
        name.parse()
    }
}

/// One operand of [`result_type`]: the dtype of a tensor, or a weakly typed Rust scalar (Keras's Python
/// `int` and `float`), which adopts the other operand's type where it can.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operand {
    /// A tensor of this dtype (strongly typed).
    Tensor(DType),
    /// A tensor of this dtype that is weakly typed (the result of an all-weak operation).
    Weak(DType),
    /// A Rust integer scalar, as a Python `int`.
    Int,
    /// A Rust float scalar, as a Python `float`.
    Float,
}

impl From<DType> for Operand {
    fn from(dtype: DType) -> Self {
        Operand::Tensor(dtype)
    }
}

/// Nodes of Keras's promotion lattice: the 13 dtypes and the two weak Python types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    D(DType),
    WeakInt,
    WeakFloat,
}

/// Keras's type promotion lattice: each node and the nodes directly above it
/// (`_type_promotion_lattice` in keras/src/backend/common/dtypes.py, Keras 3).
const LATTICE: [(Node, &[Node]); 15] = {
    use DType::*;
    use Node::*;
    [
        (D(Bool), &[WeakInt]),
        (D(Uint8), &[D(Int16), D(Uint16)]),
        (D(Uint16), &[D(Int32), D(Uint32)]),
        (D(Uint32), &[D(Int64), D(Uint64)]),
        (D(Uint64), &[WeakFloat]),
        (WeakInt, &[D(Uint8), D(Int8)]),
        (D(Int8), &[D(Int16)]),
        (D(Int16), &[D(Int32)]),
        (D(Int32), &[D(Int64)]),
        (D(Int64), &[WeakFloat]),
        (WeakFloat, &[D(Bfloat16), D(Float16)]),
        (D(Bfloat16), &[D(Float32)]),
        (D(Float16), &[D(Float32)]),
        (D(Float32), &[D(Float64)]),
        (D(Float64), &[]),
    ]
};

fn node_index(node: Node) -> usize {
    LATTICE.iter().position(|(n, _)| *n == node).expect("every node is in the lattice")
}

/// Bit set (over lattice indices) of `node` and everything above it (computed once per node).
fn upper_bounds(node: Node) -> u32 {
    static TABLE: std::sync::LazyLock<[u32; LATTICE.len()]> =
        std::sync::LazyLock::new(|| std::array::from_fn(|i| walk_upper_bounds(LATTICE[i].0)));
    TABLE[node_index(node)]
}

/// [`upper_bounds`] by walking the lattice.
fn walk_upper_bounds(node: Node) -> u32 {
    let mut set = 0u32;
    let mut stack = vec![node];
    while let Some(n) = stack.pop() {
        let idx = node_index(n);
        if set & (1 << idx) == 0 {
            set |= 1 << idx;
            stack.extend_from_slice(LATTICE[idx].1);
        }
    }
    set
}

/// The least upper bound of `nodes`: the one common upper bound that is below every other.
fn least_upper_bound(nodes: impl Iterator<Item = Node>) -> Node {
    let common = nodes.fold(u32::MAX, |acc, n| acc & upper_bounds(n));
    // The lattice has a top (float64), so `common` is never empty; its least element is the one whose own
    // upper-bound set contains all of `common`.
    (0..LATTICE.len())
        .filter(|i| common & (1 << i) != 0)
        .map(|i| LATTICE[i].0)
        .find(|&n| upper_bounds(n) & common == common)
        .expect("the promotion lattice has a least upper bound for every set")
}

/// Keras's `_respect_weak_type`: a weak operand stands for its kind (Python int or float).
fn respect_weak(dtype: DType, weak: bool) -> Node {
    if !weak || dtype.is_bool() {
        Node::D(dtype)
    } else if dtype.is_float() {
        Node::WeakFloat
    } else {
        Node::WeakInt
    }
}

fn operand_parts(op: Operand) -> (Node, bool) {
    match op {
        Operand::Tensor(d) => (Node::D(d), false),
        Operand::Weak(d) => (Node::D(d), true),
        Operand::Int => (Node::WeakInt, true),
        Operand::Float => (Node::WeakFloat, true),
    }
}

/// The result dtype of an operation over `operands`, with `floatx` the store's default float dtype (which
/// sizes weak results: with floatx float16, `int32 + 1.5` is float16). Returns `(dtype, weak)`, where `weak`
/// tells that the result is itself weakly typed (only when every operand was).
///
/// Keras: `keras.backend.result_type` (`_lattice_result_type`), without the JAX-only 64 to 32 bit narrowing.
pub fn result_type_weak(operands: &[Operand], floatx: DType) -> (DType, bool) {
    if operands.is_empty() {
        return (floatx, false);
    }
    // The common case, every operand a tensor of one dtype, decides without building the lattice walk.
    if let Operand::Tensor(d) = operands[0] {
        if operands.iter().all(|&o| o == Operand::Tensor(d)) {
            return (d, false);
        }
    }
    let parts = || operands.iter().map(|&o| operand_parts(o));
    let first = operand_parts(operands[0]);
    let all_weak = parts().all(|p| p.1);
    let (out, mut out_weak) = if operands.len() == 1 {
        first
    } else if !all_weak && parts().all(|p| p.0 == first.0) {
        (first.0, false)
    } else if all_weak {
        let nodes = parts().map(|(n, _)| if let Node::D(d) = n { respect_weak(d, false) } else { n });
        (least_upper_bound(nodes), true)
    } else {
        let nodes = parts().map(|(n, w)| if let Node::D(d) = n { respect_weak(d, w) } else { n });
        let lub = least_upper_bound(nodes);
        (lub, matches!(lub, Node::WeakInt | Node::WeakFloat))
    };
    if out == Node::D(DType::Bool) {
        out_weak = false;
    }
    let precision = floatx.itemsize() * 8;
    let dtype = match out {
        Node::D(d) if !out_weak => d,
        node => resolve_weak(node, precision),
    };
    (dtype, out_weak)
}

/// Keras's `_resolve_weak_type`: a weak result takes the width of floatx.
fn resolve_weak(node: Node, bits: usize) -> DType {
    let float = match bits {
        16 => DType::Float16,
        64 => DType::Float64,
        _ => DType::Float32,
    };
    let int = match bits {
        16 => DType::Int16,
        64 => DType::Int64,
        _ => DType::Int32,
    };
    let uint = match bits {
        16 => DType::Uint16,
        64 => DType::Uint64,
        _ => DType::Uint32,
    };
    match node {
        Node::WeakInt => int,
        Node::WeakFloat => float,
        Node::D(d) if d.is_bool() => d,
        Node::D(d) if d.is_unsigned_integer() => uint,
        Node::D(d) if d.is_signed_integer() => int,
        Node::D(_) => float,
    }
}

/// The result dtype of an operation over `operands` under the default float dtype `floatx`.
///
/// # Examples
/// ```
/// use purestate::dtype::{result_type, DType, Operand};
/// let f32 = DType::Float32;
/// assert_eq!(result_type(&[Operand::Tensor(f32), Operand::Float], f32), DType::Float32);
/// assert_eq!(result_type(&[Operand::Tensor(DType::Int32), Operand::Float], f32), DType::Float32);
/// assert_eq!(result_type(&[DType::Uint8.into(), DType::Int8.into()], f32), DType::Int16);
/// assert_eq!(result_type(&[DType::Float16.into(), DType::Bfloat16.into()], f32), DType::Float32);
/// assert_eq!(result_type(&[DType::Float64.into(), DType::Float64.into()], f32), DType::Float64);
/// ```
pub fn result_type(operands: &[Operand], floatx: DType) -> DType {
    result_type_weak(operands, floatx).0
}

/// A dtype policy (Keras: `keras.DTypePolicy`): the dtype float variables are stored in and the dtype
/// computations run in. `mixed_float16` and `mixed_bfloat16` store in float32 and compute in 16 bits.
///
/// A store built with [`StateStore::with_policy`](crate::StateStore::with_policy) creates float variables
/// from initializers in the variable dtype, and scopes over it read variables that have `autocast` in the
/// compute dtype. Optimizer updates stay in the variable's dtype.
///
/// # Examples
/// ```
/// use purestate::dtype::{DType, Policy};
/// let p: Policy = "mixed_bfloat16".parse()?;
/// assert_eq!((p.variable_dtype(), p.compute_dtype()), (DType::Float32, DType::Bfloat16));
/// assert_eq!(p.to_string(), "mixed_bfloat16");
/// # Ok::<(), purestate::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Policy {
    variable: DType,
    compute: DType,
}

impl Policy {
    /// `mixed_float16`: float32 variables, float16 computations.
    pub const MIXED_FLOAT16: Policy = Policy { variable: DType::Float32, compute: DType::Float16 };
    /// `mixed_bfloat16`: float32 variables, bfloat16 computations.
    pub const MIXED_BFLOAT16: Policy = Policy { variable: DType::Float32, compute: DType::Bfloat16 };

    /// The policy that stores and computes in one float dtype (`"float32"`, ...).
    ///
    /// # Errors
    /// [`Error::UnsupportedDType`] for a non-float dtype.
    pub fn uniform(dtype: DType) -> Result<Policy> {
        if !dtype.is_float() {
            return Err(Error::UnsupportedDType { op: "Policy", dtype });
        }
        Ok(Policy { variable: dtype, compute: dtype })
    }

    /// The dtype float variables are stored in.
    pub fn variable_dtype(&self) -> DType {
        self.variable
    }

    /// The dtype computations run in.
    pub fn compute_dtype(&self) -> DType {
        self.compute
    }

    /// True when the two dtypes differ.
    pub fn is_mixed(&self) -> bool {
        self.variable != self.compute
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_mixed() {
            write!(f, "mixed_{}", self.compute)
        } else {
            write!(f, "{}", self.variable)
        }
    }
}

impl FromStr for Policy {
    type Err = Error;

    /// Keras's policy names: a float dtype name, `"mixed_float16"` or `"mixed_bfloat16"`.
    fn from_str(name: &str) -> Result<Self> {
        match name {
            "mixed_float16" => Ok(Policy::MIXED_FLOAT16),
            "mixed_bfloat16" => Ok(Policy::MIXED_BFLOAT16),
            other => match other.parse::<DType>() {
                Ok(d) if d.is_float() => Ok(Policy { variable: d, compute: d }),
                _ => Err(Error::InvalidOption {
                    option: "dtype policy",
                    got: other.to_string(),
                    allowed: "float16, bfloat16, float32, float64, mixed_float16, mixed_bfloat16",
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DType::*;

    fn rt(a: DType, b: DType) -> DType {
        result_type(&[a.into(), b.into()], Float32)
    }

    #[test]
    fn names_round_trip_and_unknown_is_error() {
        for d in DType::ALL {
            assert_eq!(d.name().parse::<DType>().unwrap(), d);
        }
        let err = "float".parse::<DType>().unwrap_err();
        assert!(matches!(err, Error::InvalidDType { .. }));
        assert!(err.to_string().contains("float32"));
    }

    #[test]
    fn strong_pairs_follow_keras() {
        assert_eq!(rt(Bool, Int8), Int8);
        assert_eq!(rt(Bool, Bool), Bool);
        assert_eq!(rt(Uint8, Int8), Int16);
        assert_eq!(rt(Uint32, Int32), Int64);
        assert_eq!(rt(Uint64, Int64), Float32);
        assert_eq!(rt(Int64, Float16), Float16);
        assert_eq!(rt(Float16, Float32), Float32);
        assert_eq!(rt(Bfloat16, Float16), Float32);
        assert_eq!(rt(Int64, Int64), Int64);
        assert_eq!(rt(Int32, Float64), Float64);
    }

    #[test]
    fn weak_scalars_adopt_the_tensor_type() {
        let f = |d, o| result_type(&[Operand::Tensor(d), o], Float32);
        assert_eq!(f(Float32, Operand::Float), Float32);
        assert_eq!(f(Float16, Operand::Float), Float16);
        assert_eq!(f(Int8, Operand::Int), Int8);
        assert_eq!(f(Int32, Operand::Float), Float32);
        assert_eq!(f(Uint8, Operand::Int), Uint8);
        assert_eq!(f(Bool, Operand::Int), Int32);
        assert_eq!(f(Bool, Operand::Float), Float32);
        assert_eq!(result_type(&[Int32.into(), Operand::Float], Float16), Float16);
        assert_eq!(result_type(&[Operand::Int, Operand::Float], Float32), Float32);
        assert_eq!(result_type(&[Operand::Int, Operand::Int], Float64), Int64);
    }
}
