//! [`for_chunks`]: one pass over several slices of one length, cut into chunks of a fixed size, with a result
//! per chunk. A step that must write each new buffer, hash it and check it for NaN does all three on a chunk
//! while the chunk is in cache, instead of three passes over memory.

use super::THRESHOLD;
use crate::error::{Error, Result};

/// Runs `f(outs_chunk, ins_chunk)` on consecutive chunks of `chunk` elements (the last may be shorter) of
/// every slice at once, and returns the results in chunk order.
///
/// `outs` are written (each chunk of each is handed to exactly one call), `ins` are read. From
/// [`THRESHOLD`] elements the chunks run in parallel on rayon; the cut does not depend on the thread count, so
/// a chunk's result never does either.
///
/// # Errors
/// [`Error::InvalidArgument`] when the slices' lengths differ or `chunk` is 0.
///
/// # Examples
/// ```
/// use purestate::kernels::for_chunks;
/// let mut out = vec![0u32; 10];
/// let x: Vec<u32> = (0..10).collect();
/// let sums = for_chunks(vec![&mut out[..]], vec![&x[..]], 4, |outs, ins| {
///     outs[0].copy_from_slice(ins[0]);
///     outs[0].iter().sum::<u32>()
/// })?;
/// assert_eq!(sums, [6, 22, 17]);
/// assert_eq!(out, x);
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn for_chunks<'a, T, U, R>(
    outs: Vec<&'a mut [T]>,
    ins: Vec<&'a [U]>,
    chunk: usize,
    f: impl Fn(&mut [&mut [T]], &[&[U]]) -> R + Sync + Send,
) -> Result<Vec<R>>
where
    T: Send,
    U: Sync,
    R: Send,
{
    let n = outs.first().map(|s| s.len()).or_else(|| ins.first().map(|s| s.len())).unwrap_or(0);
    if chunk == 0 || outs.iter().any(|s| s.len() != n) || ins.iter().any(|s| s.len() != n) {
        let lens: Vec<usize> = outs.iter().map(|s| s.len()).chain(ins.iter().map(|s| s.len())).collect();
        return Err(Error::InvalidArgument {
            op: "for_chunks",
            arg: "slices",
            reason: format!("every slice must have the same length and chunk must be positive, got lengths {lens:?} and chunk {chunk}"),
        });
    }
    let n_chunks = n.div_ceil(chunk);
    let (n_outs, n_ins) = (outs.len(), ins.len());
    let mut pieces: Vec<Piece<'a, T, U>> =
        (0..n_chunks).map(|_| (Vec::with_capacity(n_outs), Vec::with_capacity(n_ins))).collect();
    for s in outs {
        for (piece, c) in pieces.iter_mut().zip(s.chunks_mut(chunk)) {
            piece.0.push(c);
        }
    }
    for s in ins {
        for (piece, c) in pieces.iter_mut().zip(s.chunks(chunk)) {
            piece.1.push(c);
        }
    }
    let run = |(mut o, i): Piece<'a, T, U>| f(&mut o, &i);
    if n < THRESHOLD || n_chunks < 2 {
        Ok(pieces.into_iter().map(run).collect())
    } else {
        Ok(super::par_map_items(pieces, &run))
    }
}

/// One chunk of every written slice and of every read slice.
type Piece<'a, T, U> = (Vec<&'a mut [T]>, Vec<&'a [U]>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chunk_once_in_order_at_every_size() {
        for n in [0, 1, 1000, THRESHOLD - 1, THRESHOLD, THRESHOLD + 5000] {
            let mut a = vec![0u64; n];
            let x: Vec<u64> = (0..n as u64).collect();
            let firsts = for_chunks(vec![&mut a[..]], vec![&x[..]], 4096, |o, i| {
                for (o, i) in o[0].iter_mut().zip(i[0]) {
                    *o = i + 1;
                }
                i[0][0]
            })
            .unwrap();
            assert_eq!(firsts, (0..n.div_ceil(4096)).map(|c| (c * 4096) as u64).collect::<Vec<_>>());
            assert!(a.iter().zip(&x).all(|(a, x)| *a == x + 1));
        }
    }

    #[test]
    fn unequal_lengths_and_zero_chunk_are_errors() {
        let mut a = [0.0f32; 3];
        let b = [0.0f32; 4];
        assert!(for_chunks(vec![&mut a[..]], vec![&b[..]], 2, |_, _| ()).is_err());
        assert!(for_chunks(vec![&mut a[..]], Vec::<&[f32]>::new(), 0, |_, _| ()).is_err());
    }
}
