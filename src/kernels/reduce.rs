//! Reductions over a fixed tree of fixed-size chunks: bit-identical for any thread count.
//!
//! A slice is cut into chunks of [`CHUNK`] elements (the last one shorter). Each chunk is folded on one thread
//! in a fixed order; for sums, into eight interleaved accumulators combined as `((0+1)+(2+3))+((4+5)+(6+7))`,
//! which lets the compiler vectorize the loop. Chunk results are then combined pairwise, neighbours first,
//! level by level (`((c0+c1)+(c2+c3))+...`). Rayon decides only *where* each chunk is folded, never *how*, so
//! the bits do not depend on `RAYON_NUM_THREADS` (rayon issue 663 describes the non-deterministic
//! alternative).

use super::{CHUNK, THRESHOLD};

/// An accumulator for [`sum_by`]: `f32` and `f64` add as IEEE floats, integers wrap (as numpy and XLA do).
pub trait Acc: Copy + Send + Sync {
    /// The additive identity.
    const ZERO: Self;
    /// `self + other` (wrapping for integers).
    fn acc_add(self, other: Self) -> Self;
}

macro_rules! acc_float {
    ($($t:ty),*) => {$(
        impl Acc for $t {
            const ZERO: Self = 0.0;
            fn acc_add(self, other: Self) -> Self {
                self + other
            }
        }
    )*};
}
macro_rules! acc_int {
    ($($t:ty),*) => {$(
        impl Acc for $t {
            const ZERO: Self = 0;
            fn acc_add(self, other: Self) -> Self {
                self.wrapping_add(other)
            }
        }
    )*};
}
acc_float!(f32, f64);
acc_int!(i32, i64, u32, u64);

/// Folds each chunk of `s` with `leaf(offset, chunk)` and combines the chunk results pairwise in a fixed tree
/// with `combine`. `None` for an empty slice. Chunks are folded in parallel from [`THRESHOLD`] elements.
pub fn fold_chunks<T, R>(
    s: &[T],
    leaf: impl Fn(usize, &[T]) -> R + Sync + Send,
    combine: impl Fn(R, R) -> R,
) -> Option<R>
where
    T: Sync,
    R: Send,
{
    let level: Vec<R> = if s.len() >= THRESHOLD {
        super::par_map(s.len().div_ceil(CHUNK), &|i| leaf(i * CHUNK, &s[i * CHUNK..((i + 1) * CHUNK).min(s.len())]))
    } else {
        s.chunks(CHUNK).enumerate().map(|(i, c)| leaf(i * CHUNK, c)).collect()
    };
    pairwise(level, combine)
}

/// Combines `level` pairwise, neighbours first, level by level (`((c0+c1)+(c2+c3))+...`): the tree across
/// chunks shared by every reduction here. `None` for an empty level.
fn pairwise<R>(mut level: Vec<R>, combine: impl Fn(R, R) -> R) -> Option<R> {
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        let mut items = level.into_iter();
        while let Some(left) = items.next() {
            next.push(match items.next() {
                Some(right) => combine(left, right),
                None => left,
            });
        }
        level = next;
    }
    level.pop()
}

/// The sum of `f(x)` over `s`, in a fixed order (see the module docs). `A::ZERO` for an empty slice.
///
/// # Examples
/// ```
/// use purestate::kernels::sum_by;
/// let x: Vec<f32> = (0..100_000).map(|i| (i % 7) as f32 * 0.1).collect();
/// let once = sum_by(&x, |v| v);
/// let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| sum_by(&x, |v| v));
/// assert_eq!(once.to_bits(), one_thread.to_bits());
/// ```
pub fn sum_by<T, A>(s: &[T], f: impl Fn(T) -> A + Sync + Send) -> A
where
    T: Copy + Sync,
    A: Acc,
{
    fold_chunks(s, |_, c| sum_leaf(c, &f), A::acc_add).unwrap_or(A::ZERO)
}

fn sum_leaf<T: Copy, A: Acc>(c: &[T], f: &impl Fn(T) -> A) -> A {
    let mut lanes = [A::ZERO; 8];
    let mut blocks = c.chunks_exact(8);
    for block in &mut blocks {
        for (lane, &x) in lanes.iter_mut().zip(block) {
            *lane = lane.acc_add(f(x));
        }
    }
    for (lane, &x) in lanes.iter_mut().zip(blocks.remainder()) {
        *lane = lane.acc_add(f(x));
    }
    lane_tree(lanes)
}

/// The eight lanes of a chunk's sum combined as `((0+1)+(2+3))+((4+5)+(6+7))`.
fn lane_tree<A: Acc>([l0, l1, l2, l3, l4, l5, l6, l7]: [A; 8]) -> A {
    (l0.acc_add(l1).acc_add(l2.acc_add(l3))).acc_add(l4.acc_add(l5).acc_add(l6.acc_add(l7)))
}

/// Columns of [`sum_columns_by`] summed together by one task: a block of eight lanes of this many accumulators
/// stays in L1.
const COLUMN_BLOCK: usize = 256;

/// The sums of `f(x)` down each column of `data` read as `n_sum` rows of `n_cols` (row-major): element `j` is
/// bit for bit `sum_by` of column `j`, without gathering the column.
///
/// This is a sum over the leading axes of a contiguous array (a bias's gradient sums the batch axis). It walks
/// the rows in memory order and keeps, for each column, the same eight interleaved accumulators per chunk of
/// [`CHUNK`] rows and the same pairwise tree across chunks as [`sum_by`], so the bits equal those of a sum over
/// a transposed copy. Blocks of columns run in parallel from [`THRESHOLD`] elements.
///
/// # Examples
/// ```
/// use purestate::kernels::{sum_by, sum_columns_by};
/// let x: Vec<f32> = (0..12).map(|i| i as f32 * 0.1).collect(); // 4 rows of 3
/// let sums = sum_columns_by(&x, 4, 3, |v| v);
/// let column_1: Vec<f32> = x.iter().skip(1).step_by(3).copied().collect();
/// assert_eq!(sums[1].to_bits(), sum_by(&column_1, |v| v).to_bits());
/// ```
///
/// # Panics
/// When `data` holds fewer than `n_sum * n_cols` elements.
pub fn sum_columns_by<T, A>(data: &[T], n_sum: usize, n_cols: usize, f: impl Fn(T) -> A + Sync + Send) -> Vec<A>
where
    T: Copy + Sync,
    A: Acc,
{
    let data = &data[..n_sum * n_cols];
    let block = |b: usize| -> Vec<A> {
        let (c0, c1) = (b * COLUMN_BLOCK, ((b + 1) * COLUMN_BLOCK).min(n_cols));
        let w = c1 - c0;
        // One chunk of rows, as `sum_leaf` folds one chunk of a column: row p of the chunk goes to lane p % 8.
        let leaf = |r0: usize, r1: usize| -> Vec<A> {
            let mut lanes = vec![A::ZERO; 8 * w];
            for (p, row) in (r0..r1).enumerate() {
                let lane = &mut lanes[(p % 8) * w..(p % 8 + 1) * w];
                for (acc, &x) in lane.iter_mut().zip(&data[row * n_cols + c0..row * n_cols + c1]) {
                    *acc = acc.acc_add(f(x));
                }
            }
            (0..w).map(|j| lane_tree(std::array::from_fn(|k| lanes[k * w + j]))).collect()
        };
        let level: Vec<Vec<A>> =
            (0..n_sum.div_ceil(CHUNK)).map(|c| leaf(c * CHUNK, ((c + 1) * CHUNK).min(n_sum))).collect();
        pairwise(level, |mut left, right| {
            left.iter_mut().zip(right).for_each(|(l, r)| *l = l.acc_add(r));
            left
        })
        .unwrap_or_else(|| vec![A::ZERO; w])
    };
    super::map_indices(n_cols.div_ceil(COLUMN_BLOCK), data.len(), block).into_iter().flatten().collect()
}

/// The extreme of `f(x)` over `s` under `pick` (which returns the preferred of two values, for example a
/// NaN-propagating maximum), folded left to right within a chunk and pairwise across chunks. `None` when `s`
/// is empty.
pub fn min_max_by<T, A>(s: &[T], f: impl Fn(T) -> A + Sync + Send, pick: impl Fn(A, A) -> A + Sync + Send) -> Option<A>
where
    T: Copy + Sync,
    A: Copy + Send,
{
    fold_chunks(s, |_, c| c.iter().map(|&x| f(x)).reduce(&pick).expect("chunks are not empty"), &pick)
}

/// The index of the first element `x` of `s` that no later element beats under `greater(later, x)`; `None`
/// for an empty slice. With `greater(a, b) = a > b || (a.is_nan() && !b.is_nan())` this is numpy's `argmax`
/// (the first maximum; the first NaN if there is one).
pub fn argmax_by<T>(s: &[T], greater: impl Fn(T, T) -> bool + Sync + Send) -> Option<usize>
where
    T: Copy + Sync + Send,
{
    let best = |l: (T, usize), r: (T, usize)| if greater(r.0, l.0) { r } else { l };
    fold_chunks(
        s,
        |offset, c| c.iter().enumerate().skip(1).fold((c[0], offset), |acc, (i, &x)| best(acc, (x, offset + i))),
        best,
    )
    .map(|(_, i)| i)
}

/// `f(row)` for each of `n_rows` consecutive rows of `row_len` elements of `data`, in row order. Rows run in
/// parallel when there are many short ones; a long row is left to `f` (whose own reduction may be parallel).
pub fn map_rows<T, R>(data: &[T], n_rows: usize, row_len: usize, f: impl Fn(&[T]) -> R + Sync + Send) -> Vec<R>
where
    T: Sync,
    R: Send,
{
    if row_len == 0 {
        return (0..n_rows).map(|_| f(&[])).collect();
    }
    let data = &data[..n_rows * row_len];
    if data.len() >= THRESHOLD && row_len < THRESHOLD && n_rows > 1 {
        // Groups of whole rows of about CHUNK elements each go to one task (groups of THRESHOLD elements left
        // a 2048 x 128 activation in one task: on one thread).
        let per_task = (CHUNK / row_len).max(1);
        let groups = super::par_map(n_rows.div_ceil(per_task), &|g| {
            let rows = &data[g * per_task * row_len..((g + 1) * per_task * row_len).min(data.len())];
            rows.chunks(row_len).map(&f).collect::<Vec<R>>()
        });
        groups.into_iter().flatten().collect()
    } else {
        data.chunks(row_len).map(f).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_sums_equal_sums_of_gathered_columns_bit_for_bit() {
        for (n_sum, n_cols) in
            [(0, 3), (3, 0), (1, 1), (7, 5), (9, 300), (256, 1024), (CHUNK + 9, 3), (2 * CHUNK + 1, 2)]
        {
            let data: Vec<f32> = (0..n_sum * n_cols)
                .map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 1e-3 * (1.0 + (i % 13) as f32 * 1e3))
                .collect();
            let sums = sum_columns_by(&data, n_sum, n_cols, |v| v);
            assert_eq!(sums.len(), n_cols);
            for (j, s) in sums.iter().enumerate() {
                let column: Vec<f32> = (0..n_sum).map(|i| data[i * n_cols + j]).collect();
                assert_eq!(s.to_bits(), sum_by(&column, |v| v).to_bits(), "{n_sum}x{n_cols}, column {j}");
            }
            let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
            let alone = one.install(|| sum_columns_by(&data, n_sum, n_cols, |v| v));
            assert_eq!(
                alone.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                sums.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn sums_use_the_fixed_tree() {
        let x: Vec<f32> = (0..3 * CHUNK + 5).map(|i| 1.0 / (1.0 + i as f32)).collect();
        let chunk_sums: Vec<f32> = x.chunks(CHUNK).map(|c| sum_leaf(c, &|v| v)).collect();
        let expected = (chunk_sums[0] + chunk_sums[1]) + (chunk_sums[2] + chunk_sums[3]);
        assert_eq!(sum_by(&x, |v| v).to_bits(), expected.to_bits());
        assert_eq!(sum_by(&[] as &[f32], |v| v), 0.0);
        assert_eq!(sum_by(&[i32::MAX, 1], |v| v), i32::MIN, "integers wrap");
    }

    #[test]
    fn argmax_takes_the_first_maximum_and_the_first_nan() {
        let gt = |a: f32, b: f32| a > b || (a.is_nan() && !b.is_nan());
        assert_eq!(argmax_by(&[1.0, 3.0, 3.0, 2.0], gt), Some(1));
        assert_eq!(argmax_by(&[1.0, f32::NAN, 5.0, f32::NAN], gt), Some(1));
        assert_eq!(argmax_by(&[] as &[f32], gt), None);
        let mut long = vec![0.0f32; 2 * THRESHOLD];
        long[THRESHOLD + 3] = 1.0;
        long[THRESHOLD + 9] = 1.0;
        assert_eq!(argmax_by(&long, gt), Some(THRESHOLD + 3));
    }

    #[test]
    fn rows_keep_their_order() {
        let data: Vec<u32> = (0..12).collect();
        assert_eq!(map_rows(&data, 3, 4, |r| r.iter().sum::<u32>()), vec![6, 22, 38]);
        assert_eq!(map_rows(&data, 2, 0, |r| r.len()), vec![0, 0]);
        assert_eq!(min_max_by(&data, |x| x, u32::max), Some(11));
    }
}
