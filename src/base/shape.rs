//! [`Shape`]: the dimensions of a tensor, printed as Keras prints them, `(64, 128)`.

use std::fmt;
use std::ops::Deref;

/// The dimensions of a tensor. Displays as a Python tuple, as Keras prints shapes: `()`, `(5,)`, `(64, 128)`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shape(Vec<usize>);

impl Shape {
    /// The shape with these dimensions.
    pub fn new(dims: impl Into<Vec<usize>>) -> Self {
        Shape(dims.into())
    }

    /// The 0-d shape `()`.
    pub fn scalar() -> Self {
        Shape(Vec::new())
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.0.len()
    }

    /// Number of elements (1 for `()`).
    pub fn size(&self) -> usize {
        self.0.iter().product()
    }

    /// The dimensions, owned.
    pub fn into_vec(self) -> Vec<usize> {
        self.0
    }
}

impl Deref for Shape {
    type Target = [usize];

    fn deref(&self) -> &[usize] {
        &self.0
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [] => f.write_str("()"),
            [d] => write!(f, "({d},)"),
            dims => {
                f.write_str("(")?;
                for (i, d) in dims.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{d}")?;
                }
                f.write_str(")")
            }
        }
    }
}

impl From<Vec<usize>> for Shape {
    fn from(dims: Vec<usize>) -> Self {
        Shape(dims)
    }
}

impl From<&[usize]> for Shape {
    fn from(dims: &[usize]) -> Self {
        Shape(dims.to_vec())
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(dims: [usize; N]) -> Self {
        Shape(dims.to_vec())
    }
}

impl From<&Shape> for Shape {
    fn from(shape: &Shape) -> Self {
        shape.clone()
    }
}

impl From<()> for Shape {
    fn from(_: ()) -> Self {
        Shape::scalar()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_as_python_tuple() {
        assert_eq!(Shape::scalar().to_string(), "()");
        assert_eq!(Shape::from([5]).to_string(), "(5,)");
        assert_eq!(Shape::from([64, 128]).to_string(), "(64, 128)");
        assert_eq!(Shape::from([2, 3]).size(), 6);
        assert_eq!(Shape::scalar().size(), 1);
    }
}
