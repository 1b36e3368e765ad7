//! Shape operations: `reshape`, `transpose`, `permute`, `broadcast_to`, `flatten`, `expand_dims`, `squeeze`.
//! Each is O(1) (a new view of the same buffer) when the layout allows it, and copies otherwise.

use ndarray::IxDyn;

use super::reduce::normalize_axis;
use crate::error::{Error, Result};
use crate::kernels;
use crate::tensor::{with_array, Shape, Tensor};

impl Tensor {
    /// The same elements in row-major order with new dimensions (`keras.ops.reshape`); one dimension may be
    /// `-1`, inferred from the others. O(1) for a contiguous tensor.
    ///
    /// # Errors
    /// [`Error::InvalidShape`] when the sizes differ, for more than one `-1`, or a negative dimension.
    ///
    /// # Examples
    /// ```
    /// use purestate::Tensor;
    /// let t = Tensor::from([1, 2, 3, 4, 5, 6]).reshape(&[2, -1])?;
    /// assert_eq!(t.dims(), &[2, 3]);
    /// assert!(t.reshape(&[4, -1]).is_err());
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn reshape(&self, dims: &[isize]) -> Result<Tensor> {
        const OP: &str = "reshape";
        let refuse = |reason: String| Error::InvalidShape { op: OP, shape: self.shape(), reason };
        let unknown: Vec<usize> = (0..dims.len()).filter(|&i| dims[i] == -1).collect();
        if unknown.len() > 1 || dims.iter().any(|&d| d < -1) {
            return Err(refuse(format!("cannot reshape to {dims:?}: at most one -1 and no other negative")));
        }
        let known: usize = dims.iter().filter(|&&d| d >= 0).map(|&d| d as usize).product();
        let mut target: Vec<usize> = dims.iter().map(|&d| d.max(0) as usize).collect();
        if let Some(&i) = unknown.first() {
            if known == 0 || !self.size().is_multiple_of(known) {
                return Err(refuse(format!("cannot reshape {} elements to {dims:?}", self.size())));
            }
            target[i] = self.size() / known;
        }
        if target.iter().product::<usize>() != self.size() {
            return Err(refuse(format!("cannot reshape {} elements to {}", self.size(), Shape::from(target))));
        }
        let out = with_array!(self.data(), a => {
            let a = if a.is_standard_layout() { a.clone() } else { kernels::layout::to_standard(&a.view()).into_shared() };
            Tensor::from_ndarray(a.into_shape_with_order(IxDyn(&target)).expect("sizes checked"))
        });
        Ok(super::trace::reshaped(self, out))
    }

    /// The tensor with its axes reversed (`keras.ops.transpose` with no `axes`). O(1).
    pub fn transpose(&self) -> Tensor {
        let out = with_array!(self.data(), a => Tensor::from_ndarray(a.clone().reversed_axes()));
        let order: Vec<usize> = (0..self.ndim()).rev().collect();
        super::trace::permuted(self, out, &order)
    }

    /// The tensor with its axes in the order `axes` (`keras.ops.transpose(x, axes)`); negative axes count
    /// from the end. O(1).
    ///
    /// # Errors
    /// [`Error::InvalidShape`] when `axes` is not a permutation of the tensor's axes.
    pub fn permute(&self, axes: &[isize]) -> Result<Tensor> {
        let mut order = Vec::with_capacity(axes.len());
        for &a in axes {
            order.push(normalize_axis("permute", self.dims(), a)?);
        }
        let mut sorted = order.clone();
        sorted.sort_unstable();
        if sorted != (0..self.ndim()).collect::<Vec<_>>() {
            return Err(Error::InvalidShape {
                op: "permute",
                shape: self.shape(),
                reason: format!("{axes:?} is not a permutation of the axes"),
            });
        }
        let out = with_array!(self.data(), a => Tensor::from_ndarray(a.clone().permuted_axes(IxDyn(&order))));
        Ok(super::trace::permuted(self, out, &order))
    }

    /// The tensor broadcast to `shape` (`keras.ops.broadcast_to`), as a new standard-layout tensor.
    ///
    /// # Errors
    /// [`Error::Broadcast`] when the tensor does not broadcast to `shape`.
    pub fn broadcast_to(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        with_array!(self.data(), a => match a.broadcast(IxDyn(shape.dims())) {
            Some(v) => {
                let out = kernels::layout::to_standard(&v);
                Ok(super::trace::view(self, Tensor::from(out), |g| Ok(g.clone())))
            }
            None => Err(Error::Broadcast { op: "broadcast_to", lhs: self.shape(), rhs: shape }),
        })
    }

    /// The elements as a 1-D tensor in row-major order. O(1) for a contiguous tensor.
    pub fn flatten(&self) -> Tensor {
        self.reshape(&[-1]).unwrap_or_else(|_| unreachable!("-1 always fits"))
    }

    /// The tensor with a new axis of length 1 at `axis` (`keras.ops.expand_dims`; `-1` appends). O(1).
    ///
    /// # Errors
    /// [`Error::InvalidShape`] when `axis` is outside `-(ndim + 1)..=ndim`.
    pub fn expand_dims(&self, axis: isize) -> Result<Tensor> {
        let mut dims = self.dims().to_vec();
        dims.push(1);
        let a = normalize_axis("expand_dims", &dims, axis)?;
        dims.pop();
        dims.insert(a, 1);
        let dims: Vec<isize> = dims.iter().map(|&d| d as isize).collect();
        self.reshape(&dims)
    }

    /// The tensor without the axis `axis`, which must have length 1 (`keras.ops.squeeze`). O(1).
    ///
    /// # Errors
    /// [`Error::InvalidShape`] when `axis` is out of range or its length is not 1.
    pub fn squeeze(&self, axis: isize) -> Result<Tensor> {
        let a = normalize_axis("squeeze", self.dims(), axis)?;
        if self.dims()[a] != 1 {
            return Err(Error::InvalidShape {
                op: "squeeze",
                shape: self.shape(),
                reason: format!("axis {axis} has length {}, not 1", self.dims()[a]),
            });
        }
        let out = with_array!(self.data(), x => Tensor::from_ndarray(x.clone().remove_axis(ndarray::Axis(a))));
        Ok(super::trace::reshaped(self, out))
    }

    /// The tensor in standard (row-major contiguous) layout: O(1) when it already is, a copy otherwise.
    pub fn to_standard_layout(&self) -> Tensor {
        with_array!(self.data(), a => if a.is_standard_layout() {
            self.clone()
        } else {
            super::trace::view(self, Tensor::from_ndarray(kernels::layout::to_standard(&a.view()).into_shared()), |g| Ok(g.clone()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;

    #[test]
    fn views_share_and_copies_do_not() {
        let t = Tensor::from_shape_vec([2, 3], (0..6).collect::<Vec<i32>>()).unwrap();
        let r = t.reshape(&[3, 2]).unwrap();
        assert_eq!(r.as_ptr(), t.as_ptr());
        let tt = t.transpose();
        assert_eq!(tt.to_vec::<i32>().unwrap(), vec![0, 3, 1, 4, 2, 5]);
        assert_eq!(tt.reshape(&[-1]).unwrap().to_vec::<i32>().unwrap(), vec![0, 3, 1, 4, 2, 5]);
        assert_eq!(t.permute(&[-1, 0]).unwrap().dims(), &[3, 2]);
        assert!(t.permute(&[0, 0]).is_err());
        assert_eq!(t.expand_dims(-1).unwrap().dims(), &[2, 3, 1]);
        assert_eq!(t.expand_dims(0).unwrap().squeeze(0).unwrap().dims(), &[2, 3]);
        assert!(t.squeeze(0).is_err());
        let b = Tensor::from([1.0f32, 2.0]).broadcast_to([3, 2]).unwrap();
        assert_eq!(b.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 1.0, 2.0, 1.0, 2.0]);
        assert!(matches!(b.broadcast_to([4]), Err(Error::Broadcast { .. })));
        assert!(Tensor::zeros([0, 3], DType::Int8).reshape(&[0, -1]).is_err());
    }
}
