//! Row copies and their adjoint: [`fill_chunks`] (an output written chunk by chunk from each chunk's offset),
//! [`gather_rows`] (rows of a table picked by index: `take`, an embedding lookup) and [`scatter_add_rows`]
//! (rows added into a table: `take`'s gradient).
//!
//! The scatter-add uses no atomics and no per-thread partial tables. Source rows are first grouped by
//! destination with a stable counting sort (so each group keeps source order); then every destination row is
//! written by exactly one task, as `0 + s_1 + s_2 + ...` over its sources in increasing source order. That is
//! the order of the plain sequential loop `out[dest[s]] += src[s]`, so the bits are those of that loop at any
//! thread count.

use super::reduce::Acc;
use super::{CHUNK, THRESHOLD};

/// Calls `f(offset, chunk)` on consecutive chunks of `out` (`chunk` starts at element `offset`): one call over
/// the whole slice below [`THRESHOLD`] elements, fixed chunks of [`CHUNK`] elements in parallel from it. `f`
/// must write each element from its position alone, so the result does not depend on the cut.
///
/// # Examples
/// ```
/// let mut out = vec![0usize; 10];
/// purestate::kernels::fill_chunks(&mut out, |offset, chunk| {
///     chunk.iter_mut().enumerate().for_each(|(i, o)| *o = (offset + i) * 2)
/// });
/// assert_eq!(out[9], 18);
/// ```
pub fn fill_chunks<T: Send>(out: &mut [T], f: impl Fn(usize, &mut [T]) + Sync + Send) {
    fill_pieces(out, CHUNK, out.len() >= THRESHOLD, &f);
}

/// `f(offset, piece)` over pieces of `piece` elements of `out`, in parallel when `parallel`, else one call.
fn fill_pieces<T: Send>(out: &mut [T], piece: usize, parallel: bool, f: &(impl Fn(usize, &mut [T]) + Sync)) {
    if out.is_empty() {
        return;
    }
    if parallel {
        super::par_chunks_mut(out, piece, &|i, c| f(i * piece, c));
    } else {
        f(0, out);
    }
}

/// Writes row `rows[r]` of `src` (rows of `row_len` elements) as row `r` of `out`, for every `r`.
///
/// `out` holds `rows.len() * row_len` elements. A plain copy per (part of a) row, parallel over fixed chunks of
/// `out` from [`THRESHOLD`] elements.
///
/// # Panics
/// When `out` has another length or a row index is past the end of `src` (the caller checks indices).
///
/// # Examples
/// ```
/// let table = [0, 1, 10, 11, 20, 21]; // 3 rows of 2
/// let mut out = [0; 6];
/// purestate::kernels::gather_rows(&table, 2, &[2, 0, 2], &mut out);
/// assert_eq!(out, [20, 21, 0, 1, 20, 21]);
/// ```
pub fn gather_rows<T: Copy + Send + Sync>(src: &[T], row_len: usize, rows: &[usize], out: &mut [T]) {
    assert_eq!(out.len(), rows.len() * row_len, "gather_rows: one output row per index");
    fill_chunks(out, |offset, chunk| {
        let mut done = 0;
        while done < chunk.len() {
            let at = offset + done;
            let (r, col) = (at / row_len, at % row_len);
            let n = (row_len - col).min(chunk.len() - done);
            let from = rows[r] * row_len + col;
            chunk[done..done + n].copy_from_slice(&src[from..from + n]);
            done += n;
        }
    });
}

/// Writes into row `d` of `out` (rows of `row_len` elements) the sum of `f` over the rows `s` of `src` with
/// `dest[s] == d`, added in increasing `s` from zero (see the module docs); rows no source names are zero.
///
/// `src` holds `dest.len() * row_len` elements and `out` a whole number of rows. O(`src.len()` + `out.len()`),
/// plus a counting sort of `dest`. From [`THRESHOLD`] elements of work (`src` and `out` together), pieces of
/// `out` of about [`CHUNK`] elements of work each (at least a row, so a small table fed by many rows still
/// spreads) are summed in parallel; the cut depends only on the sizes, and each element is written by one
/// task in the fixed order, so the bits never depend on the thread count.
///
/// # Panics
/// When the lengths disagree or a destination is past the end of `out` (the caller checks indices).
///
/// # Examples
/// ```
/// let g = [1.0f32, 2.0, 10.0, 20.0, 100.0, 200.0]; // 3 rows of 2
/// let mut table = [f32::NAN; 6]; // every element is written
/// purestate::kernels::scatter_add_rows(&g, 2, &[2, 0, 2], &mut table, |v| v);
/// assert_eq!(table, [10.0, 20.0, 0.0, 0.0, 101.0, 202.0]);
/// ```
pub fn scatter_add_rows<T, A>(
    src: &[T],
    row_len: usize,
    dest: &[usize],
    out: &mut [A],
    f: impl Fn(T) -> A + Sync + Send,
) where
    T: Copy + Sync,
    A: Acc,
{
    assert_eq!(src.len(), dest.len() * row_len, "scatter_add_rows: one source row per destination index");
    if row_len == 0 {
        return;
    }
    assert_eq!(out.len() % row_len, 0, "scatter_add_rows: a whole number of destination rows");
    let n_rows = out.len() / row_len;
    // A stable counting sort: `order[start[d]..start[d + 1]]` lists the sources of row `d` in source order.
    let mut start = vec![0usize; n_rows + 1];
    for &d in dest {
        start[d + 1] += 1;
    }
    for d in 0..n_rows {
        start[d + 1] += start[d];
    }
    let mut next = start.clone();
    let mut order = vec![0usize; dest.len()];
    for (s, &d) in dest.iter().enumerate() {
        order[next[d]] = s;
        next[d] += 1;
    }
    // Pieces of about CHUNK elements of work each (reads plus writes), at least a row long: a small table fed
    // by many lookups (a character vocabulary) still spreads over the pool, one row or more per task.
    let work = src.len() + out.len();
    let piece = (CHUNK * out.len() / work.max(1)).max(row_len.min(CHUNK)).clamp(1, CHUNK);
    fill_pieces(out, piece, work >= THRESHOLD, &|offset, chunk: &mut [A]| {
        let mut done = 0;
        while done < chunk.len() {
            let at = offset + done;
            let (d, col) = (at / row_len, at % row_len);
            let n = (row_len - col).min(chunk.len() - done);
            let acc = &mut chunk[done..done + n];
            acc.fill(A::ZERO);
            for &s in &order[start[d]..start[d + 1]] {
                let from = s * row_len + col;
                for (a, &v) in acc.iter_mut().zip(&src[from..from + n]) {
                    *a = a.acc_add(f(v));
                }
            }
            done += n;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain sequential loop the scatter-add must reproduce bit for bit.
    fn naive(src: &[f32], row_len: usize, dest: &[usize], n_rows: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; n_rows * row_len];
        for (s, &d) in dest.iter().enumerate() {
            for c in 0..row_len {
                out[d * row_len + c] += src[s * row_len + c];
            }
        }
        out
    }

    #[test]
    fn scatter_add_equals_the_sequential_loop_at_any_thread_count() {
        // Large enough to run in parallel, with rows that straddle chunks (row_len 3 does not divide CHUNK).
        for (row_len, n_rows, n_src) in
            [(3, 5, 17), (3, THRESHOLD / 3 + 11, 40_000), (128, 2_100, 8_000), (128, 65, 8_192)]
        {
            let dest: Vec<usize> = (0..n_src).map(|s| (s * 7919 + s / 3) % n_rows.min(50)).collect();
            let src: Vec<f32> =
                (0..n_src * row_len).map(|i| ((i * 2_654_435_761) % 1_000_003) as f32 * 1e-3 - 500.0).collect();
            let want = naive(&src, row_len, &dest, n_rows);
            for threads in [1, 2, 7] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let mut out = vec![f32::NAN; n_rows * row_len];
                pool.install(|| scatter_add_rows(&src, row_len, &dest, &mut out, |v| v));
                assert!(
                    out.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{row_len}x{n_rows} at {threads}"
                );
            }
        }
    }

    #[test]
    fn gather_copies_rows_across_chunk_edges() {
        let (row_len, n_rows) = (5, 1000);
        let src: Vec<u32> = (0..(row_len * n_rows) as u32).collect();
        let rows: Vec<usize> = (0..THRESHOLD / row_len + 3).map(|r| (r * 31) % n_rows).collect();
        let mut out = vec![0u32; rows.len() * row_len];
        gather_rows(&src, row_len, &rows, &mut out);
        for (r, &from) in rows.iter().enumerate() {
            assert_eq!(&out[r * row_len..(r + 1) * row_len], &src[from * row_len..(from + 1) * row_len]);
        }
    }
}
