//! [`Tensor`]: a dtype-tagged n-d array over `ndarray` with a shared, reference-counted buffer.
//!
//! Cloning a tensor is O(1): both clones share the buffer. A write through one of them (by the kernels, by an
//! optimizer) first copies the buffer if another holder still shares it, and works in place otherwise: this is
//! how ownership decides donation (DESIGN.md, idea 3).

mod construct;
mod display;
mod element;
mod index;
pub(crate) mod trace;

use half::{bf16, f16};
use ndarray::{ArcArray, ArrayD, ArrayViewD, IxDyn};

pub use crate::base::Shape;
pub use element::{Element, Scalar};
pub use index::Idx;
use trace::Trace;

use crate::dtype::DType;
use crate::error::{Error, Result};

/// The typed array inside a [`Tensor`]: one variant per dtype, each an `ndarray` [`ArcArray`] (shared buffer,
/// copy on write).
#[derive(Clone, Debug)]
#[allow(missing_docs)]
pub enum TensorData {
    Bool(ArcArray<bool, IxDyn>),
    Int8(ArcArray<i8, IxDyn>),
    Int16(ArcArray<i16, IxDyn>),
    Int32(ArcArray<i32, IxDyn>),
    Int64(ArcArray<i64, IxDyn>),
    Uint8(ArcArray<u8, IxDyn>),
    Uint16(ArcArray<u16, IxDyn>),
    Uint32(ArcArray<u32, IxDyn>),
    Uint64(ArcArray<u64, IxDyn>),
    Float16(ArcArray<f16, IxDyn>),
    Bfloat16(ArcArray<bf16, IxDyn>),
    Float32(ArcArray<f32, IxDyn>),
    Float64(ArcArray<f64, IxDyn>),
}

/// Runs `$body` with `$a` bound to the typed array inside `$data`, whatever its dtype. `$data` may be a
/// `&TensorData`, `&mut TensorData` or `TensorData`.
macro_rules! with_array {
    ($data:expr, $a:ident => $body:expr) => {
        match $data {
            $crate::tensor::TensorData::Bool($a) => $body,
            $crate::tensor::TensorData::Int8($a) => $body,
            $crate::tensor::TensorData::Int16($a) => $body,
            $crate::tensor::TensorData::Int32($a) => $body,
            $crate::tensor::TensorData::Int64($a) => $body,
            $crate::tensor::TensorData::Uint8($a) => $body,
            $crate::tensor::TensorData::Uint16($a) => $body,
            $crate::tensor::TensorData::Uint32($a) => $body,
            $crate::tensor::TensorData::Uint64($a) => $body,
            $crate::tensor::TensorData::Float16($a) => $body,
            $crate::tensor::TensorData::Bfloat16($a) => $body,
            $crate::tensor::TensorData::Float32($a) => $body,
            $crate::tensor::TensorData::Float64($a) => $body,
        }
    };
}

/// Runs `$body` with `$t` naming the Rust element type of `$dtype` (a [`DType`] value).
macro_rules! with_dtype {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            $crate::dtype::DType::Bool => {
                type $t = bool;
                $body
            }
            $crate::dtype::DType::Int8 => {
                type $t = i8;
                $body
            }
            $crate::dtype::DType::Int16 => {
                type $t = i16;
                $body
            }
            $crate::dtype::DType::Int32 => {
                type $t = i32;
                $body
            }
            $crate::dtype::DType::Int64 => {
                type $t = i64;
                $body
            }
            $crate::dtype::DType::Uint8 => {
                type $t = u8;
                $body
            }
            $crate::dtype::DType::Uint16 => {
                type $t = u16;
                $body
            }
            $crate::dtype::DType::Uint32 => {
                type $t = u32;
                $body
            }
            $crate::dtype::DType::Uint64 => {
                type $t = u64;
                $body
            }
            $crate::dtype::DType::Float16 => {
                type $t = half::f16;
                $body
            }
            $crate::dtype::DType::Bfloat16 => {
                type $t = half::bf16;
                $body
            }
            $crate::dtype::DType::Float32 => {
                type $t = f32;
                $body
            }
            $crate::dtype::DType::Float64 => {
                type $t = f64;
                $body
            }
        }
    };
}

pub(crate) use with_array;
pub(crate) use with_dtype;

impl TensorData {
    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::Bool(_) => DType::Bool,
            TensorData::Int8(_) => DType::Int8,
            TensorData::Int16(_) => DType::Int16,
            TensorData::Int32(_) => DType::Int32,
            TensorData::Int64(_) => DType::Int64,
            TensorData::Uint8(_) => DType::Uint8,
            TensorData::Uint16(_) => DType::Uint16,
            TensorData::Uint32(_) => DType::Uint32,
            TensorData::Uint64(_) => DType::Uint64,
            TensorData::Float16(_) => DType::Float16,
            TensorData::Bfloat16(_) => DType::Bfloat16,
            TensorData::Float32(_) => DType::Float32,
            TensorData::Float64(_) => DType::Float64,
        }
    }
}

/// A dtype-tagged n-dimensional array with a shared buffer.
///
/// Clone is O(1) (the buffer is reference counted); writes copy a buffer only while another tensor shares it.
/// Build one from an `ndarray` array, a Rust array or `Vec`, or a scalar:
///
/// ```
/// use purestate::{DType, Tensor};
/// let t = Tensor::from([[1.0f32, 2.0], [3.0, 4.0]]);
/// assert_eq!(t.shape().dims(), &[2, 2]);
/// assert_eq!(t.dtype(), DType::Float32);
/// let i = t.cast(DType::Int32);
/// assert_eq!(i.to_array::<i32>()?.into_raw_vec_and_offset().0, vec![1, 2, 3, 4]);
/// assert!(t.to_array::<f64>().is_err()); // the element type must match the dtype
/// # Ok::<(), purestate::Error>(())
/// ```
///
/// Inside `grad::value_and_grad` a tensor may also carry a *trace*: its place on that call's tape, so that
/// operations on it are recorded for the backward pass. The trace is a weak reference, dropped with the
/// tensor and inert once the call returns; `grad::stop_gradient` removes it.
#[derive(Clone)]
pub struct Tensor {
    data: TensorData,
    trace: Option<Trace>,
}

/// Shared empty data (cloning it moves a reference count, allocates nothing).
fn empty_data() -> TensorData {
    static EMPTY: std::sync::LazyLock<TensorData> =
        std::sync::LazyLock::new(|| TensorData::Bool(ArcArray::from_vec(Vec::new()).into_dyn()));
    EMPTY.clone()
}

/// A large buffer that dies with its last tensor goes back to [`crate::kernels::buffer`]'s pool, to be the
/// next output of its type and length (first-touch page faults dominated fresh 40 MB outputs).
impl Drop for Tensor {
    fn drop(&mut self) {
        if self.nbytes() >= crate::kernels::buffer::MIN_BYTES && self.is_unique() {
            let data = std::mem::replace(&mut self.data, empty_data());
            with_array!(data, a => crate::kernels::buffer::recycle(a));
        }
    }
}

impl Tensor {
    /// Wraps typed data.
    pub fn from_data(data: TensorData) -> Self {
        Tensor { data, trace: None }
    }

    /// Wraps an `ndarray` array of any dimensionality (O(1) for an `ArcArray` or an owned array).
    pub fn from_ndarray<T: Element, D: ndarray::Dimension>(array: ArcArray<T, D>) -> Self {
        Tensor { data: T::wrap(array.into_dyn()), trace: None }
    }

    /// True when the tensor is recorded on the tape of a running `grad::value_and_grad` call, so
    /// that the loss may be differentiated with respect to it. O(1).
    pub fn is_traced(&self) -> bool {
        self.trace.as_ref().is_some_and(Trace::is_live)
    }

    /// The trace, if any.
    pub(crate) fn trace(&self) -> Option<&Trace> {
        self.trace.as_ref()
    }

    /// The same tensor with `trace`.
    pub(crate) fn with_trace(mut self, trace: Trace) -> Tensor {
        self.trace = Some(trace);
        self
    }

    /// The same values without a trace (an O(1) clone): `stop_gradient`.
    pub(crate) fn detached(&self) -> Tensor {
        Tensor { data: self.data.clone(), trace: None }
    }

    /// `self` without its trace.
    pub(crate) fn detach(mut self) -> Tensor {
        self.trace = None;
        self
    }

    /// The typed data.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// The typed data, mutably. Writing through it copies the buffer first if another tensor shares it.
    /// A traced tensor loses its trace: a value written by hand is not the value the tape recorded.
    pub fn data_mut(&mut self) -> &mut TensorData {
        self.trace = None;
        &mut self.data
    }

    /// Unwraps the typed data.
    pub fn into_data(mut self) -> TensorData {
        std::mem::replace(&mut self.data, empty_data())
    }

    /// An empty bool tensor that costs no allocation: what a value is replaced by while it is moved out.
    pub(crate) fn placeholder() -> Tensor {
        Tensor { data: empty_data(), trace: None }
    }

    /// The element dtype.
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// The shape.
    pub fn shape(&self) -> Shape {
        Shape::from(self.dims())
    }

    /// The dimensions, borrowed.
    pub fn dims(&self) -> &[usize] {
        with_array!(&self.data, a => a.shape())
    }

    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.dims().len()
    }

    /// Number of elements.
    pub fn size(&self) -> usize {
        self.dims().iter().product()
    }

    /// Bytes the elements take (`size * itemsize`).
    pub fn nbytes(&self) -> usize {
        self.size() * self.dtype().itemsize()
    }

    /// Address of the first element. Two tensors with the same address and shape share their buffer; an
    /// in-place update keeps the address (as `ndarray`'s `as_ptr`).
    pub fn as_ptr(&self) -> *const u8 {
        with_array!(&self.data, a => a.as_ptr().cast::<u8>())
    }

    /// True when no other tensor shares this tensor's buffer, so a write happens in place.
    pub fn is_unique(&self) -> bool {
        with_array!(&self.data, a => a.is_unique())
    }

    /// True when both tensors are views of the same buffer with the same shape and strides (O(1)).
    pub fn ptr_eq(&self, other: &Tensor) -> bool {
        self.dtype() == other.dtype()
            && self.as_ptr() == other.as_ptr()
            && self.dims() == other.dims()
            && with_array!(&self.data, a => a.strides()) == with_array!(&other.data, b => b.strides())
    }

    /// The shared array when the dtype is `T`'s.
    ///
    /// # Errors
    /// [`Error::DTypeMismatch`] when the tensor holds another dtype.
    pub fn array<T: Element>(&self) -> Result<&ArcArray<T, IxDyn>> {
        T::array(&self.data).ok_or_else(|| self.dtype_error::<T>())
    }

    /// The shared array when the dtype is `T`'s, mutably (writes copy the buffer first if it is shared). A
    /// traced tensor loses its trace, as with [`Tensor::data_mut`].
    ///
    /// # Errors
    /// [`Error::DTypeMismatch`] when the tensor holds another dtype.
    pub fn array_mut<T: Element>(&mut self) -> Result<&mut ArcArray<T, IxDyn>> {
        self.trace = None;
        let dtype = self.dtype();
        T::array_mut(&mut self.data).ok_or(Error::DTypeMismatch {
            path: "Tensor::array_mut".into(),
            expected: dtype,
            got: T::DTYPE,
        })
    }

    /// A typed view of the elements.
    ///
    /// # Errors
    /// [`Error::DTypeMismatch`] when the tensor holds another dtype.
    pub fn view<T: Element>(&self) -> Result<ArrayViewD<'_, T>> {
        Ok(self.array::<T>()?.view())
    }

    /// The elements as an owned `ndarray` array: Keras's `numpy()`.
    ///
    /// # Errors
    /// [`Error::DTypeMismatch`] when `T` is not the tensor's element type.
    pub fn to_array<T: Element>(&self) -> Result<ArrayD<T>> {
        Ok(self.array::<T>()?.to_owned())
    }

    /// The elements in logical (row-major) order as a `Vec`.
    ///
    /// # Errors
    /// [`Error::DTypeMismatch`] when `T` is not the tensor's element type.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        let a = self.array::<T>()?;
        Ok(match a.as_slice() {
            Some(s) => s.to_vec(),
            None => a.iter().copied().collect(),
        })
    }

    /// The elements, contiguous in row-major order, when the layout allows it without a copy.
    pub fn as_slice<T: Element>(&self) -> Option<&[T]> {
        T::array(&self.data)?.as_slice()
    }

    /// The tensor converted to `dtype` with numpy's cast rules ([`Element::from_scalar`]). Casting to the same
    /// dtype is an O(1) clone. Differentiable between float dtypes (the gradient is cast back); a cast to or
    /// from an integer or bool dtype stops the gradient.
    pub fn cast(&self, dtype: DType) -> Tensor {
        if dtype == self.dtype() {
            return self.clone();
        }
        if let Some(tape) = self.trace.as_ref().and_then(Trace::tape) {
            return tape.cast(self, dtype);
        }
        with_dtype!(dtype, U => with_array!(&self.data, a => {
            Tensor::from_ndarray(crate::kernels::map(a, |x| x.cast::<U>()).into_shared())
        }))
    }

    /// Every element as `f64` in row-major order (exact for all but 64-bit integers beyond 2^53).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        with_array!(&self.data, a => a.iter().map(|x| x.to_f64()).collect())
    }

    /// True when every element is finite (always true for integer and bool tensors).
    pub fn is_all_finite(&self) -> bool {
        match &self.data {
            TensorData::Float16(a) => crate::kernels::all(a, |x| x.is_finite()),
            TensorData::Bfloat16(a) => crate::kernels::all(a, |x| x.is_finite()),
            TensorData::Float32(a) => crate::kernels::all(a, |x| x.is_finite()),
            TensorData::Float64(a) => crate::kernels::all(a, |x| x.is_finite()),
            _ => true,
        }
    }

    /// The largest absolute elementwise difference from `other`, in `f64`; `None` when dtypes or shapes
    /// differ. NaN where either side has a NaN that the other lacks; 0 where both hold the same bits.
    pub fn max_abs_diff(&self, other: &Tensor) -> Option<f64> {
        if self.dtype() != other.dtype() || self.dims() != other.dims() {
            return None;
        }
        let a = self.to_f64_vec();
        let b = other.to_f64_vec();
        let mut max = 0.0f64;
        for (x, y) in a.iter().zip(&b) {
            if x.to_bits() == y.to_bits() || x == y {
                continue;
            }
            let d = (x - y).abs();
            if d.is_nan() {
                return Some(f64::NAN);
            }
            max = max.max(d);
        }
        Some(max)
    }

    /// True when both tensors have the same dtype, shape and element bits (NaN equals the same NaN).
    pub fn bit_eq(&self, other: &Tensor) -> bool {
        if self.dtype() != other.dtype() || self.dims() != other.dims() {
            return false;
        }
        if self.ptr_eq(other) {
            return true;
        }
        let mut a = Vec::new();
        let mut b = Vec::new();
        self.write_le_bytes(&mut a);
        other.write_le_bytes(&mut b);
        a == b
    }

    /// Appends the elements' little-endian bytes in row-major order to `out`.
    pub fn write_le_bytes(&self, out: &mut Vec<u8>) {
        out.reserve(self.nbytes());
        with_array!(&self.data, a => {
            for x in a.iter() {
                out.extend_from_slice(x.to_le_bytes().as_ref());
            }
        })
    }

    /// Calls `f` with successive runs of the elements' little-endian bytes in row-major order, without
    /// copying when the buffer is contiguous on a little-endian machine.
    pub fn for_each_le_chunk(&self, mut f: impl FnMut(&[u8])) {
        #[cfg(target_endian = "little")]
        {
            if let Some(bytes) = self.contiguous_bytes() {
                f(bytes);
                return;
            }
        }
        let mut buf = Vec::new();
        self.write_le_bytes(&mut buf);
        f(&buf);
    }

    /// The buffer's bytes when the tensor is contiguous in row-major order.
    #[cfg(target_endian = "little")]
    fn contiguous_bytes(&self) -> Option<&[u8]> {
        Some(match &self.data {
            TensorData::Bool(a) => bytemuck::cast_slice(a.as_slice()?),
            TensorData::Int8(a) => bytemuck::cast_slice(a.as_slice()?),
            TensorData::Int16(a) => bytemuck::cast_slice(a.as_slice()?),
            TensorData::Int32(a) => bytemuck::cast_slice(a.as_slice()?),
            TensorData::Int64(a) => bytemuck::cast_slice(a.as_slice()?),
            TensorData::Uint8(a) => a.as_slice()?,
            TensorData::Uint16(a) => bytemuck::cast_slice(a.as_slice()?),
            TensorData::Uint32(a) => bytemuck::cast_slice(a.as_slice()?),
            TensorData::Uint64(a) => bytemuck::cast_slice(a.as_slice()?),
            TensorData::Float16(a) => bytemuck::cast_slice(a.as_slice()?),
            TensorData::Bfloat16(a) => bytemuck::cast_slice(a.as_slice()?),
            TensorData::Float32(a) => bytemuck::cast_slice(a.as_slice()?),
            TensorData::Float64(a) => bytemuck::cast_slice(a.as_slice()?),
        })
    }

    fn dtype_error<T: Element>(&self) -> Error {
        Error::DTypeMismatch { path: "tensor".into(), expected: self.dtype(), got: T::DTYPE }
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}
