//! [`for_rows`]: whole rows of an output written in parallel, each by a function of its row index.
//!
//! The gather loops of convolution and pooling (`im2col`, `col2im`, a pool's forward and backward) write one
//! output row (an image row of one sample) from inputs they only read. A row's values depend only on its index,
//! never on which thread writes it or on how rows are grouped into tasks, so the result is the same for any
//! thread count.

use super::{CHUNK, THRESHOLD};

/// Calls `f(i, row_i)` for every row of `row_len` elements of `out` (a trailing partial row is left alone).
///
/// `work` is the number of elements the calls read and write in all (at least `out.len()`). Below
/// [`THRESHOLD`] the rows are written in order on the calling thread; from it, groups of whole rows of about
/// [`CHUNK`] elements of work each run on the rayon pool. `f` sees only its row and its index, so the result
/// never depends on the thread count.
///
/// # Examples
/// ```
/// let mut out = vec![0u32; 6];
/// purestate::kernels::for_rows(&mut out, 3, 6, |i, row| row.iter_mut().for_each(|x| *x = i as u32));
/// assert_eq!(out, [0, 0, 0, 1, 1, 1]);
/// ```
pub fn for_rows<T: Send>(out: &mut [T], row_len: usize, work: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    if row_len == 0 {
        return;
    }
    let n_rows = out.len() / row_len;
    let out = &mut out[..n_rows * row_len];
    if work < THRESHOLD || n_rows < 2 {
        out.chunks_mut(row_len).enumerate().for_each(|(i, row)| f(i, row));
    } else {
        let per_row = (work / n_rows).max(1);
        let rows = (CHUNK / per_row).clamp(1, n_rows);
        super::par_chunks_mut(out, rows * row_len, &|t, group| {
            group.chunks_mut(row_len).enumerate().for_each(|(j, row)| f(t * rows + j, row));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_once_with_its_index_at_every_size() {
        for (n_rows, row_len, work) in [(0, 3, 0), (1, 5, THRESHOLD * 4), (7, 1, 7), (1000, 300, THRESHOLD * 2)] {
            let mut out = vec![usize::MAX; n_rows * row_len + row_len - 1];
            for_rows(&mut out, row_len, work, |i, row| row.iter_mut().enumerate().for_each(|(j, x)| *x = i * 1000 + j));
            let want: Vec<usize> = (0..n_rows).flat_map(|i| (0..row_len).map(move |j| i * 1000 + j)).collect();
            assert_eq!(out[..n_rows * row_len], want[..]);
            assert!(out[n_rows * row_len..].iter().all(|&x| x == usize::MAX), "a partial row is not written");
        }
        for_rows(&mut [0u8; 4], 0, 4, |_, _| panic!("no rows of length 0"));
    }
}
