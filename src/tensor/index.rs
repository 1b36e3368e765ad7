//! Indexing and slicing (`__getitem__`): [`Idx`] and [`Tensor::index`], with Python's rules for negative
//! indices, steps (negative too) and clamped slice bounds. An integer index out of range is an error
//! (departure: Keras clamps it to the last element).

use std::ops::{Range, RangeFrom, RangeFull, RangeTo};

use ndarray::{IxDyn, SliceInfo, SliceInfoElem};

use super::{with_array, Tensor};
use crate::error::{Error, Result};

/// One entry of an index: Python's `t[2]`, `t[1:5:2]`, `t[:]`, `t[None]`, `t[...]`.
///
/// Converts from integers (`2`, `-1`) and Rust ranges (`1..5`, `..3`, `2..`, `..`); [`Idx::slice`] takes a
/// step. The [`idx!`](crate::idx) macro builds a slice of them: `t.index(idx![0, 1..3, ..])`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idx {
    /// One position; negative counts from the end. Removes the axis.
    I(isize),
    /// `start:stop:step` with Python's rules: bounds clamp, negative bounds count from the end, `None` is the
    /// end in the direction of `step`; a negative `step` walks backwards.
    Slice {
        /// First position (`None`: the start in the direction of `step`).
        start: Option<isize>,
        /// Position to stop before (`None`: run to the end in the direction of `step`).
        stop: Option<isize>,
        /// Stride, nonzero.
        step: isize,
    },
    /// Every position of the axis (`:`).
    All,
    /// A new axis of length 1 (`None` / `np.newaxis`).
    NewAxis,
    /// As many [`Idx::All`] as needed to index every axis (`...`).
    Ellipsis,
}

impl Idx {
    /// `start:stop:step`.
    pub fn slice(start: Option<isize>, stop: Option<isize>, step: isize) -> Idx {
        Idx::Slice { start, stop, step }
    }
}

impl From<isize> for Idx {
    fn from(i: isize) -> Self {
        Idx::I(i)
    }
}
impl From<i32> for Idx {
    fn from(i: i32) -> Self {
        Idx::I(i as isize)
    }
}
impl From<Range<isize>> for Idx {
    fn from(r: Range<isize>) -> Self {
        Idx::slice(Some(r.start), Some(r.end), 1)
    }
}
impl From<Range<i32>> for Idx {
    fn from(r: Range<i32>) -> Self {
        Idx::slice(Some(r.start as isize), Some(r.end as isize), 1)
    }
}
impl From<RangeFrom<i32>> for Idx {
    fn from(r: RangeFrom<i32>) -> Self {
        Idx::slice(Some(r.start as isize), None, 1)
    }
}
impl From<RangeTo<i32>> for Idx {
    fn from(r: RangeTo<i32>) -> Self {
        Idx::slice(None, Some(r.end as isize), 1)
    }
}
impl From<RangeFull> for Idx {
    fn from(_: RangeFull) -> Self {
        Idx::All
    }
}

/// Builds a `&[Idx]` for [`Tensor::index`] from integers and ranges: `idx![0, 1..3, ..]`.
///
/// ```
/// use purestate::{idx, tensor::Idx, Tensor};
/// let t = Tensor::from_shape_vec([3, 4], (0..12).collect::<Vec<i32>>())?;
/// assert_eq!(t.index(idx![-1, 1..3])?.to_vec::<i32>()?, vec![9, 10]);
/// assert_eq!(t.index(idx![.., Idx::slice(None, None, -2)])?.to_vec::<i32>()?, vec![3, 1, 7, 5, 11, 9]);
/// # Ok::<(), purestate::Error>(())
/// ```
#[macro_export]
macro_rules! idx {
    ($($e:expr),* $(,)?) => {
        &[$($crate::tensor::Idx::from($e)),*]
    };
}

impl From<&Idx> for Idx {
    fn from(i: &Idx) -> Self {
        *i
    }
}

impl Tensor {
    /// The part of the tensor that `index` selects (Python's `t[...]`), sharing the buffer (O(1)).
    ///
    /// Integer entries remove their axis, slices keep it, [`Idx::NewAxis`] adds one, [`Idx::Ellipsis`] stands
    /// for the remaining axes; axes left unindexed are kept whole.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] for an integer index outside its axis (departure: Keras clamps);
    /// [`Error::InvalidArgument`] for more indices than axes, a second ellipsis, or a zero step.
    ///
    /// # Examples
    /// ```
    /// use purestate::{idx, tensor::Idx, Error, Tensor};
    /// let t = Tensor::from([10, 20, 30, 40]);
    /// assert_eq!(t.index(idx![-1])?.to_i64()?, 40);
    /// assert_eq!(t.index(&[Idx::slice(Some(3), Some(0), -1)])?.to_vec::<i32>()?, vec![40, 30, 20]);
    /// assert_eq!(t.index(idx![1..100])?.to_vec::<i32>()?, vec![20, 30, 40]); // slices clamp
    /// let err = t.index(idx![4]).unwrap_err();
    /// assert!(matches!(err, Error::IndexOutOfRange { index: 4, axis: 0, size: 4, .. }));
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn index(&self, index: &[Idx]) -> Result<Tensor> {
        const OP: &str = "index";
        let dims = self.dims();
        let consuming = index.iter().filter(|i| !matches!(i, Idx::NewAxis | Idx::Ellipsis)).count();
        let ellipses = index.iter().filter(|i| matches!(i, Idx::Ellipsis)).count();
        if ellipses > 1 {
            return Err(Error::InvalidArgument { op: OP, arg: "index", reason: "at most one ellipsis".into() });
        }
        if consuming > dims.len() {
            return Err(Error::InvalidArgument {
                op: OP,
                arg: "index",
                reason: format!("too many indices: {consuming} for {} dimensions", dims.len()),
            });
        }
        let mut elems = Vec::with_capacity(index.len() + dims.len());
        let mut axis = 0;
        for entry in index {
            match *entry {
                Idx::NewAxis => elems.push(SliceInfoElem::NewAxis),
                Idx::Ellipsis => {
                    for _ in 0..dims.len() - consuming {
                        elems.push(SliceInfoElem::Slice { start: 0, end: None, step: 1 });
                        axis += 1;
                    }
                }
                Idx::All => {
                    elems.push(SliceInfoElem::Slice { start: 0, end: None, step: 1 });
                    axis += 1;
                }
                Idx::I(i) => {
                    let size = dims[axis];
                    let at = if i < 0 { i + size as isize } else { i };
                    if at < 0 || at >= size as isize {
                        return Err(Error::IndexOutOfRange { op: OP, index: i as i64, axis, size });
                    }
                    elems.push(SliceInfoElem::Index(at));
                    axis += 1;
                }
                Idx::Slice { start, stop, step } => {
                    if step == 0 {
                        return Err(Error::InvalidArgument {
                            op: OP,
                            arg: "step",
                            reason: "slice step cannot be zero".into(),
                        });
                    }
                    elems.push(python_slice(start, stop, step, dims[axis]));
                    axis += 1;
                }
            }
        }
        for _ in axis..dims.len() {
            elems.push(SliceInfoElem::Slice { start: 0, end: None, step: 1 });
        }
        let info = SliceInfo::<Vec<SliceInfoElem>, IxDyn, IxDyn>::try_from(elems)
            .map_err(|_| Error::InvalidArgument { op: OP, arg: "index", reason: "ndarray refused the index".into() })?;
        let out = with_array!(self.data(), a => Tensor::from_ndarray(a.clone().slice_move(&info)));
        match self.trace().and_then(super::trace::Trace::tape) {
            Some(tape) => Ok(tape.indexed(self, out, info)),
            None => Ok(out),
        }
    }
}

/// Python's `slice(start, stop, step).indices(len)`, as an ndarray slice selecting the same positions in the
/// same order.
fn python_slice(start: Option<isize>, stop: Option<isize>, step: isize, len: usize) -> SliceInfoElem {
    let len = len as isize;
    let (lower, upper) = if step > 0 { (0, len) } else { (-1, len - 1) };
    let clamp = |v: isize| if v < 0 { (v + len).max(lower) } else { v.min(upper) };
    let start = start.map_or(if step > 0 { lower } else { upper }, clamp);
    let stop = stop.map_or(if step > 0 { upper } else { lower }, clamp);
    let empty = SliceInfoElem::Slice { start: 0, end: Some(0), step: 1 };
    if step > 0 {
        if start >= stop {
            return empty;
        }
        SliceInfoElem::Slice { start, end: Some(stop), step }
    } else {
        if start <= stop {
            return empty;
        }
        let count = (start - stop - 1) / (-step) + 1;
        let last = start + (count - 1) * step;
        SliceInfoElem::Slice { start: last, end: Some(start + 1), step }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn python(v: &[i32], start: Option<isize>, stop: Option<isize>, step: isize) -> Vec<i32> {
        // Reference: walk Python's indices directly.
        let len = v.len() as isize;
        let (lower, upper) = if step > 0 { (0, len) } else { (-1, len - 1) };
        let clamp = |x: isize| if x < 0 { (x + len).max(lower) } else { x.min(upper) };
        let mut i = start.map_or(if step > 0 { lower } else { upper }, clamp);
        let stop = stop.map_or(if step > 0 { upper } else { lower }, clamp);
        let mut out = Vec::new();
        while (step > 0 && i < stop) || (step < 0 && i > stop) {
            out.push(v[i as usize]);
            i += step;
        }
        out
    }

    #[test]
    fn slices_match_python() {
        let v: Vec<i32> = (0..7).collect();
        let t = Tensor::from(v.clone());
        let bounds = [None, Some(-9), Some(-3), Some(0), Some(2), Some(6), Some(9)];
        for start in bounds {
            for stop in bounds {
                for step in [-3, -1, 1, 2] {
                    let got = t.index(&[Idx::slice(start, stop, step)]).unwrap().to_vec::<i32>().unwrap();
                    assert_eq!(got, python(&v, start, stop, step), "{start:?}:{stop:?}:{step}");
                }
            }
        }
    }

    #[test]
    fn new_axis_ellipsis_and_errors() {
        let t = Tensor::zeros([2, 3, 4], crate::DType::Float32);
        assert_eq!(t.index(&[Idx::Ellipsis, Idx::I(0)]).unwrap().dims(), &[2, 3]);
        assert_eq!(t.index(&[Idx::NewAxis, Idx::I(1)]).unwrap().dims(), &[1, 3, 4]);
        assert_eq!(t.index(&[]).unwrap().dims(), &[2, 3, 4]);
        assert!(matches!(t.index(idx![0, 0, 0, 0]), Err(Error::InvalidArgument { .. })));
        assert!(matches!(t.index(idx![0, -4]), Err(Error::IndexOutOfRange { index: -4, axis: 1, size: 3, .. })));
        assert!(matches!(t.index(&[Idx::slice(None, None, 0)]), Err(Error::InvalidArgument { arg: "step", .. })));
        assert_eq!(t.index(idx![1]).unwrap().as_ptr(), t.index(idx![1, 0, 0]).unwrap().as_ptr(), "views");
    }
}
