//! The rayon engine: chunked parallel elementwise loops and fixed-tree reductions. The only module that
//! talks to rayon.
//!
//! Work is cut into fixed-size chunks of [`CHUNK`] elements whatever the thread count, and below
//! [`THRESHOLD`] elements it stays on the calling thread. Elementwise results never depend on how chunks are
//! scheduled; reductions ([`reduce`]) fold each chunk in a fixed order and combine the chunk results in a fixed
//! pairwise tree, so they are bit-identical for any `RAYON_NUM_THREADS`.
//!
//! Contiguous data goes through slices, so the compiler vectorizes the inner loops; strided views are copied
//! to standard layout first ([`layout`]) (or, for an in-place destination, walked with `ndarray`'s `Zip`).
//!
//! | file | holds |
//! | --- | --- |
//! | [`unary`] | `map` (new array), `map_inplace`, `map_slice` |
//! | [`binary`] | `zip_map` with broadcasting, `zip_map_assign` (in place), `zip3_map` (`where`), `broadcast_shapes` |
//! | [`zip_mut`](mod@zip_mut) | `zip_mut` over tuples of slices: the fused in-place updates of the optimizers |
//! | [`chunks`] | `for_chunks`: fixed chunks of several slices, a result per chunk (update, hash and scan in one pass) |
//! | [`reduce`] | `sum_by`, `min_max_by`, `argmax_by`, `fold_chunks`, `map_rows` |
//! | [`gather`] | `fill_chunks`, `gather_rows` (`take`), `scatter_add_rows` (its gradient: grouped by destination, no atomics) |
//! | [`buffer`] | output buffers of large results: recycled through a bounded pool, staggered start offsets |
//! | [`gemm`](mod@gemm) | `gemm`, `gemm_batched`: f32/f64 matrix products over rayon (the one audited foreign call), deterministic |
//! | [`layout`] | `standard`, `to_standard`: a strided or broadcast view in row-major order, a row per copy, in parallel |
//! | [`par`] | `map_tasks`: coarse jobs (one per replica) in parallel, results in order; `keep_awake`: the pool spins through a burst |
//! | [`rows`] | `for_rows`: whole rows of an output written in parallel (convolution and pooling) |
//! | [`simd`] | `dispatch`: elementwise loops compiled for AVX2+FMA too, picked at run time, same bits |

pub mod binary;
pub mod buffer;
pub mod chunks;
pub mod gather;
pub mod gemm;
pub mod layout;
pub mod par;
pub mod reduce;
pub mod rows;
pub mod simd;
pub mod unary;
pub mod zip_mut;

use ndarray::{ArcArray, IxDyn};
use rayon::prelude::*;

mod fill;
pub use binary::{broadcast_shapes, zip3_map, zip_map, zip_map_assign};
pub use chunks::for_chunks;
pub use fill::fill_indexed;
pub use gather::{fill_chunks, gather_rows, scatter_add_rows};
pub use reduce::{argmax_by, fold_chunks, map_rows, min_max_by, sum_by, sum_columns_by, Acc};
pub use rows::for_rows;
pub use unary::{fill, map, map_inplace, map_slice};
pub use zip_mut::{zip_mut, Lanes, Moved};

/// Elements below which a loop stays on the calling thread.
///
/// Measured with `cargo bench --bench kernels -- threshold` on the 2-core reference machine (shared with
/// another build): an in-place f32 add on one thread took 7.7 us at 64 Ki elements and 17 us at 128 Ki, split
/// over rayon 22 us and 32 us; the hand-off to a second, busy core never paid below 128 Ki elements. At 10 M
/// elements the loop is memory bound and two threads match one. 256 Ki keeps every loop below that size on
/// the calling thread.
pub const THRESHOLD: usize = 1 << 18;

/// Elements per parallel chunk (and per leaf of a reduction tree). Fixed: reductions depend on it, so changing
/// it changes the bits of float sums.
pub const CHUNK: usize = 1 << 14;

/// True when `pred` holds for every element (see [`any`] for how the search stops early).
pub fn all<A: Copy + Send + Sync>(a: &ArcArray<A, IxDyn>, pred: impl Fn(A) -> bool + Sync + Send) -> bool {
    match a.as_slice() {
        Some(s) => !any(s, |x| !pred(x)),
        None => a.iter().all(|&x| pred(x)),
    }
}

/// True when `pred` holds for some element.
///
/// Each block of [`BLOCK`] elements is folded without a branch per element (so a simple predicate such as
/// `!x.is_finite()` vectorizes); the search stops between blocks. From [`THRESHOLD`] elements, chunks of
/// [`CHUNK`] run in parallel.
pub fn any<A: Copy + Send + Sync>(s: &[A], pred: impl Fn(A) -> bool + Sync + Send) -> bool {
    let blocks = |c: &[A]| c.chunks(BLOCK).any(|b| b.iter().fold(false, |acc, &x| acc | pred(x)));
    if s.len() >= THRESHOLD {
        par_any(s.len().div_ceil(CHUNK), &|i| blocks(&s[i * CHUNK..((i + 1) * CHUNK).min(s.len())]))
    } else {
        blocks(s)
    }
}

/// Elements [`any`] and [`all`] fold before they may stop early.
pub const BLOCK: usize = 1 << 10;

/// Runs `f(index)` for `0..n` and collects the results in index order (in parallel when `work`, the total
/// number of elements the calls touch, reaches [`THRESHOLD`]). Used for batched matmul and per-row work.
pub fn map_indices<R: Send>(n: usize, work: usize, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
    if work < THRESHOLD || n < 2 {
        (0..n).map(f).collect()
    } else {
        par_map(n, &f)
    }
}

/// `[f(item) for item in items]`, in order: each item a rayon task of its own (work stealing balances items of
/// unequal size) when `work`, the total number of elements the calls touch, reaches [`THRESHOLD`] and there are
/// at least two items; otherwise on the calling thread. For per-variable work (an optimizer's updates, the
/// weights' moving averages), where many variables each below the threshold add up to a large step.
///
/// # Examples
/// ```
/// let lengths = purestate::kernels::map_items(vec![vec![1.0f32; 3], vec![2.0; 5]], 8, |v| v.len());
/// assert_eq!(lengths, [3, 5]);
/// ```
pub fn map_items<L: Send, R: Send>(items: Vec<L>, work: usize, f: impl Fn(L) -> R + Sync + Send) -> Vec<R> {
    if work < THRESHOLD || items.len() < 2 {
        items.into_iter().map(f).collect()
    } else {
        par_map_items(items, &f)
    }
}

// The only calls into rayon. Loop bodies reach them as `dyn Fn`, called once per chunk, so rayon's
// machinery is compiled once per element type rather than once per operation and dtype; the inner loops
// stay monomorphic (and vectorized) inside the closures.

/// `f(i, chunk_i)` for the chunks of `chunk` elements of `out`, in parallel.
fn par_chunks_mut<C: Send>(out: &mut [C], chunk: usize, f: &(dyn Fn(usize, &mut [C]) + Sync)) {
    out.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
}

/// `[f(item) for item in items]`, in parallel (each item a task of its own), in order.
fn par_map_items<L: Send, R: Send>(items: Vec<L>, f: &(dyn Fn(L) -> R + Sync)) -> Vec<R> {
    items.into_par_iter().with_max_len(1).map(f).collect()
}

/// `f(item)` for every item, in parallel.
fn par_items<L: Send>(items: Vec<L>, f: &(dyn Fn(L) + Sync)) {
    items.into_par_iter().for_each(f);
}

/// `[f(0), .., f(n - 1)]`, computed in parallel, in index order.
fn par_map<R: Send>(n: usize, f: &(dyn Fn(usize) -> R + Sync)) -> Vec<R> {
    (0..n).into_par_iter().map(f).collect()
}

/// True when `f(i)` holds for some `i` in `0..n` (in parallel, short-circuiting).
fn par_any(n: usize, f: &(dyn Fn(usize) -> bool + Sync)) -> bool {
    (0..n).into_par_iter().any(f)
}
