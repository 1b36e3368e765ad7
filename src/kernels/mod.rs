//! The rayon engine: chunked parallel elementwise loops and fixed-tree reductions. The only module that
//! talks to rayon.
//!
//! Work is cut into fixed-size chunks of [`CHUNK`] elements whatever the thread count, and below
//! [`THRESHOLD`] elements it stays on the calling thread. Elementwise results never depend on how chunks are
//! scheduled; reductions combine chunk results in chunk order, so they are bit-identical for any
//! `RAYON_NUM_THREADS`.

use ndarray::{ArcArray, Array, ArrayBase, Data, Dimension, IxDyn};
use rayon::prelude::*;

mod fill;
pub use fill::fill_indexed;

/// Elements below which a loop stays on the calling thread.
pub const THRESHOLD: usize = 1 << 15;
/// Elements per parallel chunk (and per leaf of a reduction tree).
pub const CHUNK: usize = 1 << 14;

/// `f` applied to every element of `a`, in a new standard-layout array.
pub fn map<S, A, B, D>(a: &ArrayBase<S, D>, f: impl Fn(A) -> B + Sync + Send) -> Array<B, D>
where
    S: Data<Elem = A>,
    A: Copy + Send + Sync,
    B: Copy + Send + Sync + Default,
    D: Dimension,
{
    match a.as_slice() {
        Some(src) => {
            let mut out = vec![B::default(); src.len()];
            if src.len() < THRESHOLD {
                out.iter_mut().zip(src).for_each(|(o, &x)| *o = f(x));
            } else {
                out.par_chunks_mut(CHUNK)
                    .zip(src.par_chunks(CHUNK))
                    .for_each(|(o, s)| o.iter_mut().zip(s).for_each(|(o, &x)| *o = f(x)));
            }
            Array::from_shape_vec(a.raw_dim(), out).expect("same length as the source")
        }
        None => a.map(|&x| f(x)),
    }
}

/// True when `pred` holds for every element (short-circuits per chunk).
pub fn all<A: Copy + Send + Sync>(a: &ArcArray<A, IxDyn>, pred: impl Fn(A) -> bool + Sync + Send) -> bool {
    match a.as_slice() {
        Some(s) if s.len() >= THRESHOLD => s.par_chunks(CHUNK).all(|c| c.iter().all(|&x| pred(x))),
        Some(s) => s.iter().all(|&x| pred(x)),
        None => a.iter().all(|&x| pred(x)),
    }
}
