//! [`fill_indexed`]: writes `f(i)` into every slot `i` of a slice, in parallel above [`THRESHOLD`].
//!
//! The value of a slot depends only on its index, so the result is the same for any thread count and any
//! chunking: this is the loop behind counter-based random sampling.

use rayon::prelude::*;

use super::{CHUNK, THRESHOLD};

/// Sets `out[i] = f(i)` for every index of `out`.
///
/// Below [`THRESHOLD`] elements the loop runs on the calling thread; above it, fixed chunks of [`CHUNK`]
/// elements run on the rayon pool. `f` sees only the index, so the result never depends on the thread count.
///
/// # Examples
/// ```
/// let mut out = vec![0u64; 5];
/// purestate::kernels::fill_indexed(&mut out, |i| (i * i) as u64);
/// assert_eq!(out, [0, 1, 4, 9, 16]);
/// ```
pub fn fill_indexed<T: Send>(out: &mut [T], f: impl Fn(usize) -> T + Sync) {
    if out.len() < THRESHOLD {
        out.iter_mut().enumerate().for_each(|(i, o)| *o = f(i));
    } else {
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
            let base = c * CHUNK;
            chunk.iter_mut().enumerate().for_each(|(j, o)| *o = f(base + j));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_fill_matches_sequential() {
        let n = THRESHOLD * 2 + 17;
        let mut par = vec![0u64; n];
        fill_indexed(&mut par, |i| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let seq: Vec<u64> = (0..n).map(|i| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
        assert_eq!(par, seq);
    }
}
