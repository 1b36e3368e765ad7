//! The one reduction tree over the micro-batches of a global batch.
//!
//! Over `m` micro-batches the tree is the aligned binary tree of a segment tree: node `(level, index)` covers
//! micro-batches `[index * 2^level, min((index + 1) * 2^level, m))`; a leaf (level 0) is one micro-batch; an
//! inner node is its left child plus its right child, or its left child alone when the right one would start
//! at or past `m`. The root has the smallest level with `2^level >= m`.
//!
//! A replica that owns the contiguous micro-batches `[a, b)` reduces the maximal nodes inside its range
//! ([`cover`]): at most about `2 log2(b - a)` of them, one when the range is an aligned power of two. The
//! combiner places every replica's nodes in the same tree and adds the rest ([`assemble`]). Every inner node is
//! the same sum of the same two children wherever it is computed, so the root has the same bits for any
//! replica count, even or uneven, and for any split of the micro-batches.

use std::collections::HashMap;

use crate::error::{Error, Result};

/// A node of the tree over `m` micro-batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Node {
    pub(crate) level: u32,
    pub(crate) index: usize,
}

impl Node {
    /// The first micro-batch the node covers.
    pub(crate) fn start(self) -> usize {
        self.index << self.level
    }

    /// One past the last micro-batch the node covers, of `m`.
    pub(crate) fn end(self, m: usize) -> usize {
        ((self.index + 1) << self.level).min(m)
    }

    /// The node's children: the left one, and the right one when it covers any micro-batch of `m`.
    fn children(self, m: usize) -> (Node, Option<Node>) {
        let left = Node { level: self.level - 1, index: 2 * self.index };
        let right = Node { level: self.level - 1, index: 2 * self.index + 1 };
        (left, (right.start() < m).then_some(right))
    }
}

/// The root of the tree over `m >= 1` micro-batches.
pub(crate) fn root(m: usize) -> Node {
    Node { level: m.next_power_of_two().trailing_zeros(), index: 0 }
}

/// The maximal nodes inside the micro-batches `[a, b)` of `m`, left to right: their ranges partition `[a, b)`.
pub(crate) fn cover(a: usize, b: usize, m: usize) -> Vec<Node> {
    let top = root(m).level;
    let mut nodes = Vec::new();
    let mut pos = a;
    while pos < b {
        let mut level = 0;
        while level < top && pos.is_multiple_of(1usize << (level + 1)) {
            let up = Node { level: level + 1, index: pos >> (level + 1) };
            if up.end(m) > b {
                break;
            }
            level += 1;
        }
        let node = Node { level, index: pos >> level };
        nodes.push(node);
        pos = node.end(m);
    }
    nodes
}

/// The value of `node` over `m` micro-batches, from the leaves `leaf(j)` (called in increasing `j`, each once)
/// and `add(left, right)`.
pub(crate) fn reduce<T>(
    node: Node,
    m: usize,
    leaf: &mut impl FnMut(usize) -> Result<T>,
    add: &impl Fn(T, T) -> Result<T>,
) -> Result<T> {
    if node.level == 0 {
        return leaf(node.index);
    }
    let (left, right) = node.children(m);
    let left = reduce(left, m, leaf, add)?;
    match right {
        Some(right) => add(left, reduce(right, m, leaf, add)?),
        None => Ok(left),
    }
}

/// The root over `m` micro-batches from the nodes the replicas reduced (together they must cover every
/// micro-batch once), adding children where no replica sent their parent.
///
/// # Errors
/// [`Error::InvalidArgument`] when a micro-batch is covered by no node; `add`'s errors.
pub(crate) fn assemble<T>(m: usize, mut known: HashMap<Node, T>, add: &impl Fn(T, T) -> Result<T>) -> Result<T> {
    fn walk<T>(node: Node, m: usize, known: &mut HashMap<Node, T>, add: &impl Fn(T, T) -> Result<T>) -> Result<T> {
        if let Some(value) = known.remove(&node) {
            return Ok(value);
        }
        if node.level == 0 {
            return Err(Error::InvalidArgument {
                op: "Replicas::step",
                arg: "step",
                reason: format!("no replica contributed micro-batch {}", node.index),
            });
        }
        let (left, right) = node.children(m);
        let left = walk(left, m, known, add)?;
        match right {
            Some(right) => add(left, walk(right, m, known, add)?),
            None => Ok(left),
        }
    }
    walk(root(m), m, &mut known, add)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tree's sum over strings, to see its shape.
    fn shape(m: usize) -> String {
        let add = |a: String, b: String| Ok(format!("({a}+{b})"));
        reduce(root(m), m, &mut |j| Ok(j.to_string()), &add).unwrap()
    }

    #[test]
    fn the_tree_pairs_aligned_neighbours() {
        assert_eq!(shape(1), "0");
        assert_eq!(shape(2), "(0+1)");
        assert_eq!(shape(3), "((0+1)+2)");
        assert_eq!(shape(5), "(((0+1)+(2+3))+4)");
        assert_eq!(shape(6), "(((0+1)+(2+3))+(4+5))");
    }

    #[test]
    fn covers_partition_the_range_into_maximal_nodes() {
        assert_eq!(cover(0, 8, 8), [Node { level: 3, index: 0 }]);
        assert_eq!(cover(4, 6, 6), [Node { level: 2, index: 1 }]);
        let nodes = cover(1, 15, 16);
        let ranges: Vec<_> = nodes.iter().map(|n| (n.start(), n.end(16))).collect();
        assert_eq!(ranges, [(1, 2), (2, 4), (4, 8), (8, 12), (12, 14), (14, 15)]);
    }

    #[test]
    fn any_split_assembles_the_same_root() {
        let add = |a: String, b: String| Ok(format!("({a}+{b})"));
        for m in 1..=20 {
            let whole = shape(m);
            for n in 1..=m.min(7) {
                let (base, extra) = (m / n, m % n);
                let mut known = HashMap::new();
                let mut start = 0;
                for r in 0..n {
                    let end = start + base + usize::from(r < extra);
                    for node in cover(start, end, m) {
                        let value = reduce(node, m, &mut |j| Ok(j.to_string()), &add).unwrap();
                        known.insert(node, value);
                    }
                    start = end;
                }
                assert_eq!(assemble(m, known, &add).unwrap(), whole, "m = {m}, n = {n}");
            }
        }
    }
}
