//! Joining and cutting along an axis: [`concatenate`], [`stack`], [`Tensor::split`] and [`Tensor::slice`]
//! (`keras.ops` names and semantics).
//!
//! `concatenate` writes its output in fixed chunks ([`kernels::fill_chunks`]), each chunk copying the runs of
//! the inputs it covers; its backward hands each input the part of the cotangent it produced (a view of it).
//! `stack` is a `concatenate` of the inputs with a new axis of length one. `split` and `slice` are indexing:
//! each output is an O(1) view of the input made by [`Tensor::index`], whose backward puts the output's
//! cotangent into zeros of the input's shape; the reverse sweep sums the pieces of a split.

use super::reduce::normalize_axis;
use super::{trace, DEFAULT_FLOATX};
use crate::dtype::{result_type, Operand};
use crate::error::{Error, Result};
use crate::kernels;
use crate::tensor::{with_dtype, Idx, Shape, Tensor};

/// How [`Tensor::split`] cuts an axis (Keras's `indices_or_sections`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Split {
    /// This many equal parts; the axis length must be a multiple of it (numpy's `split`).
    Sections(usize),
    /// The parts `[..i0]`, `[i0..i1]`, ..., `[ik..]`, with Python's slice rules: negative positions count
    /// from the end, positions past the end clamp, a decreasing pair gives an empty part.
    Indices(Vec<isize>),
}

impl From<usize> for Split {
    fn from(sections: usize) -> Self {
        Split::Sections(sections)
    }
}

impl From<Vec<isize>> for Split {
    fn from(indices: Vec<isize>) -> Self {
        Split::Indices(indices)
    }
}

impl<const N: usize> From<[isize; N]> for Split {
    fn from(indices: [isize; N]) -> Self {
        Split::Indices(indices.to_vec())
    }
}

/// Joins `tensors` along an existing `axis` (`keras.ops.concatenate`). Dtypes are promoted together as
/// Keras does; every other axis must agree. O(result size), parallel from [`kernels::THRESHOLD`] elements.
/// Differentiable: each input receives the part of the cotangent along its own range of `axis`.
///
/// # Errors
/// [`Error::InvalidArgument`] for no tensor; [`Error::InvalidShape`] for 0-d tensors or an axis out of range;
/// [`Error::ShapeMismatch`] when a tensor differs from the first outside `axis` (or in rank).
///
/// # Examples
/// ```
/// use purestate::{ops::concatenate, Tensor};
/// let a = Tensor::from([[1.0f32, 2.0], [3.0, 4.0]]);
/// let b = Tensor::from([[5.0f32], [6.0]]);
/// let c = concatenate(&[&a, &b], 1)?;
/// assert_eq!((c.dims(), c.to_vec::<f32>()?), (&[2usize, 3][..], vec![1.0, 2.0, 5.0, 3.0, 4.0, 6.0]));
/// assert!(concatenate(&[&a, &b], 0).is_err());
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn concatenate(tensors: &[&Tensor], axis: isize) -> Result<Tensor> {
    const OP: &str = "concatenate";
    let Some(first) = tensors.first() else {
        return Err(Error::InvalidArgument { op: OP, arg: "tensors", reason: "need at least one tensor".into() });
    };
    if first.ndim() == 0 {
        return Err(Error::InvalidShape {
            op: OP,
            shape: first.shape(),
            reason: "0-d tensors cannot be joined".into(),
        });
    }
    let axis = normalize_axis(OP, first.dims(), axis)?;
    for t in &tensors[1..] {
        let mut expected = first.dims().to_vec();
        if t.ndim() == expected.len() {
            expected[axis] = t.dims()[axis];
        }
        if t.dims() != expected.as_slice() {
            return Err(Error::ShapeMismatch { path: OP.into(), expected: Shape::from(expected), got: t.shape() });
        }
    }
    let operands: Vec<Operand> = tensors.iter().map(|t| Operand::Tensor(t.dtype())).collect();
    let dtype = result_type(&operands, DEFAULT_FLOATX);
    let inputs: Vec<Tensor> = tensors.iter().map(|t| t.cast(dtype)).collect();
    let detached: Vec<Tensor> = inputs.iter().map(|t| t.to_standard_layout().detached()).collect();
    let lens: Vec<usize> = inputs.iter().map(|t| t.dims()[axis]).collect();
    let mut dims = first.dims().to_vec();
    dims[axis] = lens.iter().sum();
    let inner: usize = dims[axis + 1..].iter().product();
    let z = with_dtype!(dtype, T => {
        let parts: Vec<&[T]> = detached.iter().map(|t| t.as_slice::<T>().expect("standard layout")).collect();
        let widths: Vec<usize> = lens.iter().map(|&l| l * inner).collect();
        let row: usize = widths.iter().sum();
        let mut buf = kernels::buffer::alloc::<T>(dims.iter().product());
        kernels::fill_chunks(buf.as_mut_slice(), |offset, chunk| {
            // Output row `o` is the rows `o` of every input, one after another.
            let mut done = 0;
            while done < chunk.len() {
                let at = offset + done;
                let (o, mut col) = (at / row, at % row);
                let mut k = 0;
                while col >= widths[k] {
                    col -= widths[k];
                    k += 1;
                }
                let n = (widths[k] - col).min(chunk.len() - done);
                let from = o * widths[k] + col;
                chunk[done..done + n].copy_from_slice(&parts[k][from..from + n]);
                done += n;
            }
        });
        Tensor::from(buf.into_arrayd(&dims))
    });
    let refs: Vec<&Tensor> = inputs.iter().collect();
    if !dtype.is_float() || !trace::any_traced(&refs) {
        return Ok(z);
    }
    Ok(trace::custom(&refs, z, move |g, need| {
        let mut start = 0isize;
        let mut out = Vec::with_capacity(lens.len());
        for (k, &len) in lens.iter().enumerate() {
            let stop = start + len as isize;
            out.push(if need[k] { Some(g.index(&along(axis, Idx::slice(Some(start), Some(stop), 1)))?) } else { None });
            start = stop;
        }
        Ok(out)
    }))
}

/// Joins `tensors` along a new `axis` (`keras.ops.stack`; `-1` makes it the last). Every tensor must have the
/// same shape; dtypes are promoted together. A [`concatenate`] of the tensors with an axis of length one
/// inserted, so the cost and the gradient are `concatenate`'s.
///
/// # Errors
/// [`Error::InvalidArgument`] for no tensor; [`Error::InvalidShape`] for an axis outside
/// `-(ndim + 1)..=ndim`; [`Error::ShapeMismatch`] when the shapes differ.
///
/// # Examples
/// ```
/// use purestate::{ops::stack, Tensor};
/// let (a, b) = (Tensor::from([1i32, 2]), Tensor::from([3i32, 4]));
/// let s = stack(&[&a, &b], -1)?;
/// assert_eq!((s.dims(), s.to_vec::<i32>()?), (&[2usize, 2][..], vec![1, 3, 2, 4]));
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn stack(tensors: &[&Tensor], axis: isize) -> Result<Tensor> {
    const OP: &str = "stack";
    let Some(first) = tensors.first() else {
        return Err(Error::InvalidArgument { op: OP, arg: "tensors", reason: "need at least one tensor".into() });
    };
    let mut dims = first.dims().to_vec();
    dims.push(1);
    let axis = normalize_axis(OP, &dims, axis)?;
    if let Some(t) = tensors.iter().find(|t| t.dims() != first.dims()) {
        return Err(Error::ShapeMismatch { path: OP.into(), expected: first.shape(), got: t.shape() });
    }
    let expanded: Vec<Tensor> = tensors.iter().map(|t| t.expand_dims(axis as isize)).collect::<Result<_>>()?;
    concatenate(&expanded.iter().collect::<Vec<_>>(), axis as isize)
}

impl Tensor {
    /// Cuts `self` along `axis` into parts (`keras.ops.split`, numpy's `split`): [`Split::Sections`] for equal
    /// parts, [`Split::Indices`] for the positions where a new part starts. Each part is an O(1) view of
    /// `self`; the gradient of each is its cotangent put back in place, and the reverse sweep sums them.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for zero sections or a length that they do not divide (numpy's "does not
    /// result in an equal division"); [`Error::InvalidShape`] for a 0-d tensor or an axis out of range.
    ///
    /// # Examples
    /// ```
    /// use purestate::{ops::Split, Tensor};
    /// let x = Tensor::from([0, 1, 2, 3, 4, 5]);
    /// let parts = x.split(Split::Sections(3), 0)?;
    /// assert_eq!(parts[2].to_vec::<i32>()?, vec![4, 5]);
    /// let parts = x.split([1, 4], 0)?;
    /// assert_eq!(parts.iter().map(|p| p.size()).collect::<Vec<_>>(), vec![1, 3, 2]);
    /// assert!(x.split(4, 0).is_err());
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn split(&self, parts: impl Into<Split>, axis: isize) -> Result<Vec<Tensor>> {
        const OP: &str = "split";
        let axis = normalize_axis(OP, self.dims(), axis)?;
        let len = self.dims()[axis];
        let bounds: Vec<(isize, isize)> = match parts.into() {
            Split::Sections(0) => {
                return Err(Error::InvalidArgument { op: OP, arg: "indices_or_sections", reason: "0 sections".into() });
            }
            Split::Sections(n) if !len.is_multiple_of(n) => {
                return Err(Error::InvalidArgument {
                    op: OP,
                    arg: "indices_or_sections",
                    reason: format!("{n} sections do not divide axis {axis} of length {len} in shape {}", self.shape()),
                });
            }
            Split::Sections(n) => (0..n).map(|i| ((i * len / n) as isize, ((i + 1) * len / n) as isize)).collect(),
            Split::Indices(at) => {
                let starts = std::iter::once(0).chain(at.iter().copied());
                let stops = at.iter().copied().chain(std::iter::once(len as isize));
                starts.zip(stops).collect()
            }
        };
        bounds
            .into_iter()
            .map(|(start, stop)| self.index(&along(axis, Idx::slice(Some(start), Some(stop), 1))))
            .collect()
    }

    /// The block of `shape` starting at `start` (`keras.ops.slice`): one start and one length per axis, a
    /// length of `-1` meaning "to the end". An O(1) view of `self`; its gradient puts the cotangent back in
    /// place in zeros of `self`'s shape.
    ///
    /// Departure: a block that does not fit is an error (`jax.lax.dynamic_slice`, behind Keras, moves the start
    /// back until it fits).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `start` or `shape` does not have one entry per axis, or a length is
    /// below `-1`; [`Error::InvalidShape`] when the block reaches past the end of an axis.
    ///
    /// # Examples
    /// ```
    /// use purestate::Tensor;
    /// let x = Tensor::from_shape_vec([3, 4], (0..12).collect::<Vec<i32>>())?;
    /// let s = x.slice(&[1, 1], &[2, -1])?;
    /// assert_eq!((s.dims(), s.to_vec::<i32>()?), (&[2usize, 3][..], vec![5, 6, 7, 9, 10, 11]));
    /// assert!(x.slice(&[2, 0], &[2, 4]).is_err());
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn slice(&self, start: &[usize], shape: &[isize]) -> Result<Tensor> {
        const OP: &str = "slice";
        let ndim = self.ndim();
        if start.len() != ndim || shape.len() != ndim {
            return Err(Error::InvalidArgument {
                op: OP,
                arg: "start",
                reason: format!(
                    "start {start:?} and shape {shape:?} need one entry per axis of shape {}",
                    self.shape()
                ),
            });
        }
        let mut index = Vec::with_capacity(ndim);
        for (a, (&s, &len)) in start.iter().zip(shape).enumerate() {
            let size = self.dims()[a];
            if len < -1 {
                return Err(Error::InvalidArgument {
                    op: OP,
                    arg: "shape",
                    reason: format!("length {len} on axis {a}"),
                });
            }
            let len = if len == -1 { size.saturating_sub(s) } else { len as usize };
            if s + len > size || s > size {
                return Err(Error::InvalidShape {
                    op: OP,
                    shape: self.shape(),
                    reason: format!("start {start:?} and shape {shape:?} reach past axis {a} of length {size}"),
                });
            }
            index.push(Idx::slice(Some(s as isize), Some((s + len) as isize), 1));
        }
        self.index(&index)
    }
}

/// An index that takes `entry` on `axis` and everything on the axes before it.
fn along(axis: usize, entry: Idx) -> Vec<Idx> {
    let mut index = vec![Idx::All; axis];
    index.push(entry);
    index
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;

    #[test]
    fn concatenate_promotes_and_checks_shapes() {
        let a = Tensor::from([[1i32, 2]]);
        let b = Tensor::from([[0.5f32, 1.5], [2.5, 3.5]]);
        let c = concatenate(&[&a, &b], 0).unwrap();
        assert_eq!((c.dtype(), c.to_vec::<f32>().unwrap()), (DType::Float32, vec![1.0, 2.0, 0.5, 1.5, 2.5, 3.5]));
        let err = concatenate(&[&a, &b], 1).unwrap_err();
        assert!(
            matches!(&err, Error::ShapeMismatch { expected, got, .. } if expected.dims() == [1, 2] && got.dims() == [2, 2])
        );
        assert_eq!(err.to_string(), "`concatenate`: shape mismatch, expected (1, 2), got (2, 2)");
        assert!(matches!(concatenate(&[], 0), Err(Error::InvalidArgument { .. })));
        assert!(matches!(concatenate(&[&Tensor::scalar(1i32)], 0), Err(Error::InvalidShape { .. })));
        assert!(matches!(concatenate(&[&a, &Tensor::from([1i32])], 0), Err(Error::ShapeMismatch { .. })));
        assert!(matches!(concatenate(&[&a], 2), Err(Error::InvalidShape { .. })));
    }

    #[test]
    fn concatenate_reads_strided_inputs_and_empty_parts() {
        let x = Tensor::from_shape_vec([2, 3], (0..6).collect::<Vec<i32>>()).unwrap();
        let e = Tensor::zeros([0, 2], DType::Int32);
        let c = concatenate(&[&x.transpose(), &e], 0).unwrap();
        assert_eq!(c.to_vec::<i32>().unwrap(), vec![0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn split_and_slice_follow_numpy_and_keras() {
        let x = Tensor::from_shape_vec([2, 6], (0..12).collect::<Vec<i32>>()).unwrap();
        let parts = x.split(vec![2, -1, 100], 1).unwrap();
        let sizes: Vec<&[usize]> = parts.iter().map(|p| p.dims()).collect();
        assert_eq!(sizes, vec![&[2, 2][..], &[2, 3], &[2, 1], &[2, 0]]);
        assert!(matches!(x.split(0, 0), Err(Error::InvalidArgument { .. })));
        assert!(matches!(x.split(4, 1), Err(Error::InvalidArgument { .. })));
        assert!(matches!(x.split(2, 2), Err(Error::InvalidShape { .. })));
        assert_eq!(x.slice(&[0, 5], &[2, 1]).unwrap().to_vec::<i32>().unwrap(), vec![5, 11]);
        assert!(matches!(x.slice(&[0, 5], &[1, 2]), Err(Error::InvalidShape { .. })));
        assert!(matches!(x.slice(&[0], &[1]), Err(Error::InvalidArgument { .. })));
        assert!(matches!(x.slice(&[0, 7], &[1, -1]), Err(Error::InvalidShape { .. })));
    }
}
