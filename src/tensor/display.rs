//! `Display` for [`Tensor`]: shape, dtype and values, numpy-style nested brackets, abbreviated with `...`
//! past 1000 elements (three items each side of every axis, as numpy's `threshold` and `edgeitems`).

use std::fmt;

use super::{with_array, Element, Tensor};

const THRESHOLD: usize = 1000;
const EDGE_ITEMS: usize = 3;

impl Tensor {
    /// The values alone, as numpy prints an array: `[[1.0, 2.0], [3.0, 4.0]]`.
    pub fn values_string(&self) -> String {
        let mut out = String::new();
        let summarize = self.size() > THRESHOLD;
        with_array!(self.data(), a => write_axis(&mut out, &a.view(), summarize));
        out
    }
}

fn write_axis<T: Element>(out: &mut String, view: &ndarray::ArrayViewD<'_, T>, summarize: bool) {
    if view.ndim() == 0 {
        out.push_str(&format_elem(view[[]]));
        return;
    }
    let len = view.shape()[0];
    out.push('[');
    let mut first = true;
    let mut push_sep = |out: &mut String| {
        if !first {
            out.push_str(", ");
        }
        first = false;
    };
    let indices: Vec<Option<usize>> = if summarize && len > 2 * EDGE_ITEMS {
        (0..EDGE_ITEMS).map(Some).chain([None]).chain((len - EDGE_ITEMS..len).map(Some)).collect()
    } else {
        (0..len).map(Some).collect()
    };
    for idx in indices {
        push_sep(out);
        match idx {
            Some(i) => write_axis(out, &view.index_axis(ndarray::Axis(0), i), summarize),
            None => out.push_str("..."),
        }
    }
    out.push(']');
}

fn format_elem<T: Element>(x: T) -> String {
    match T::DTYPE {
        d if d.is_float() => {
            let v = x.to_f64();
            if v.is_nan() {
                "nan".into()
            } else if v.is_infinite() {
                if v > 0.0 { "inf" } else { "-inf" }.into()
            } else {
                // Shortest representation that round-trips in the element's own precision.
                match T::DTYPE {
                    crate::DType::Float64 => format!("{v:?}"),
                    _ => format!("{:?}", v as f32),
                }
            }
        }
        _ => format!("{x:?}"),
    }
}

impl fmt::Display for Tensor {
    /// `tensor(shape=(2, 2), dtype=float32, values=[[1.0, 2.0], [3.0, 4.0]])`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tensor(shape={}, dtype={}, values={})", self.shape(), self.dtype(), self.values_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_shape_dtype_and_values() {
        let t = Tensor::from([[1.0f32, 2.5], [3.0, 4.0]]);
        assert_eq!(t.to_string(), "tensor(shape=(2, 2), dtype=float32, values=[[1.0, 2.5], [3.0, 4.0]])");
        assert_eq!(Tensor::from(true).values_string(), "true");
    }

    #[test]
    fn abbreviates_large_tensors() {
        let t = Tensor::from(vec![1i32; 5000]);
        assert_eq!(t.values_string(), "[1, 1, 1, ..., 1, 1, 1]");
    }
}
