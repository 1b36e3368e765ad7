//! Building tensors: from `ndarray` arrays, Rust arrays, `Vec`s and scalars; `zeros`, `ones`, `full`.

use ndarray::{ArcArray, Array, ArrayD, IxDyn};

use super::{with_dtype, Element, Scalar, Shape, Tensor};
use crate::dtype::DType;
use crate::error::{Error, Result};

impl Tensor {
    /// A tensor of `shape` and `dtype` filled with `value` cast to `dtype` (numpy's cast rules).
    ///
    /// # Examples
    /// ```
    /// use purestate::{DType, Tensor};
    /// let t = Tensor::full([2, 3], DType::Int32, 7.0);
    /// assert_eq!(t.to_vec::<i32>()?, vec![7; 6]);
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn full(shape: impl Into<Shape>, dtype: DType, value: impl Into<Scalar>) -> Tensor {
        let shape = shape.into();
        let value = value.into();
        with_dtype!(dtype, T => {
            let array = crate::kernels::buffer::filled(shape.size(), T::from_scalar(value)).into_arrayd(shape.dims());
            Tensor::from_ndarray(array.into_shared())
        })
    }

    /// A tensor of zeros (`false` for bool).
    pub fn zeros(shape: impl Into<Shape>, dtype: DType) -> Tensor {
        Tensor::full(shape, dtype, Scalar::I64(0))
    }

    /// A tensor of ones (`true` for bool).
    pub fn ones(shape: impl Into<Shape>, dtype: DType) -> Tensor {
        Tensor::full(shape, dtype, Scalar::I64(1))
    }

    /// A 0-d tensor holding `value`.
    pub fn scalar<T: Element>(value: T) -> Tensor {
        Tensor::from_ndarray(ArcArray::from_elem(IxDyn(&[]), value))
    }

    /// A tensor of `shape` from elements in row-major order.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `data.len()` is not the product of `shape`.
    pub fn from_shape_vec<T: Element>(shape: impl Into<Shape>, data: Vec<T>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.size() != data.len() {
            return Err(Error::ShapeMismatch {
                path: "Tensor::from_shape_vec".into(),
                expected: shape,
                got: Shape::from([data.len()]),
            });
        }
        let array = Array::from_shape_vec(IxDyn(shape.dims()), data).map_err(|_| Error::InvalidShape {
            op: "Tensor::from_shape_vec",
            shape: shape.clone(),
            reason: "ndarray refused the shape".into(),
        })?;
        Ok(Tensor::from_ndarray(array.into_shared()))
    }

    /// A tensor of `shape` and `dtype` whose elements are `f(flat_index)` cast to `dtype`.
    pub fn from_fn(shape: impl Into<Shape>, dtype: DType, mut f: impl FnMut(usize) -> f64) -> Tensor {
        let shape = shape.into();
        with_dtype!(dtype, T => {
            let data: Vec<T> = (0..shape.size()).map(|i| T::from_f64(f(i))).collect();
            let array = ArrayD::from_shape_vec(IxDyn(shape.dims()), data).expect("length matches the shape");
            Tensor::from_ndarray(array.into_shared())
        })
    }
}

impl<T: Element, D: ndarray::Dimension> From<Array<T, D>> for Tensor {
    fn from(array: Array<T, D>) -> Self {
        Tensor::from_ndarray(array.into_shared())
    }
}

impl<T: Element, D: ndarray::Dimension> From<ArcArray<T, D>> for Tensor {
    fn from(array: ArcArray<T, D>) -> Self {
        Tensor::from_ndarray(array)
    }
}

impl<T: Element, D: ndarray::Dimension> From<ndarray::ArrayView<'_, T, D>> for Tensor {
    fn from(view: ndarray::ArrayView<'_, T, D>) -> Self {
        Tensor::from_ndarray(view.to_owned().into_shared())
    }
}

impl<T: Element> From<Vec<T>> for Tensor {
    fn from(data: Vec<T>) -> Self {
        Tensor::from_ndarray(Array::from_vec(data).into_shared())
    }
}

impl<T: Element> From<&[T]> for Tensor {
    fn from(data: &[T]) -> Self {
        Tensor::from(data.to_vec())
    }
}

impl<T: Element, const N: usize> From<[T; N]> for Tensor {
    fn from(data: [T; N]) -> Self {
        Tensor::from(data.to_vec())
    }
}

impl<T: Element, const M: usize, const N: usize> From<[[T; N]; M]> for Tensor {
    fn from(rows: [[T; N]; M]) -> Self {
        let data: Vec<T> = rows.iter().flatten().copied().collect();
        Tensor::from_shape_vec([M, N], data).expect("M * N elements")
    }
}

macro_rules! scalar_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Tensor {
            /// A 0-d tensor.
            fn from(value: $t) -> Self {
                Tensor::scalar(value)
            }
        }
        impl From<$t> for Scalar {
            fn from(value: $t) -> Self {
                value.to_scalar()
            }
        }
    )*};
}
scalar_from!(bool, i8, i16, i32, i64, u8, u16, u32, u64, half::f16, half::bf16, f32, f64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_give_shape_and_dtype() {
        let t = Tensor::zeros([2, 3], DType::Bfloat16);
        assert_eq!(t.shape(), Shape::from([2, 3]));
        assert_eq!(t.dtype(), DType::Bfloat16);
        assert_eq!(Tensor::from(3i32).ndim(), 0);
        assert_eq!(Tensor::from([1u8, 2]).dtype(), DType::Uint8);
        assert_eq!(Tensor::ones([2], DType::Bool).to_vec::<bool>().unwrap(), vec![true, true]);
        let err = Tensor::from_shape_vec([2, 2], vec![1.0f32; 3]).unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { .. }));
    }

    #[test]
    fn wrong_element_type_is_an_error() {
        let t = Tensor::from([1.0f32]);
        let err = t.to_array::<i32>().unwrap_err();
        assert!(matches!(err, Error::DTypeMismatch { expected: DType::Float32, got: DType::Int32, .. }));
    }

    #[test]
    fn clone_shares_the_buffer_and_writes_copy() {
        let a = Tensor::from(vec![1.0f32; 8]);
        let mut b = a.clone();
        assert!(a.ptr_eq(&b));
        assert!(!a.is_unique());
        b.array_mut::<f32>().unwrap()[[0]] = 5.0;
        assert_eq!(a.to_vec::<f32>().unwrap()[0], 1.0);
        assert_ne!(a.as_ptr(), b.as_ptr());
        let ptr = b.as_ptr();
        b.array_mut::<f32>().unwrap()[[1]] = 5.0;
        assert_eq!(ptr, b.as_ptr(), "a unique buffer is written in place");
    }
}
