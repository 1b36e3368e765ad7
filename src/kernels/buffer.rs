//! Output buffers for large results: recycled, and placed at staggered offsets.
//!
//! Two costs of a fresh large buffer are not in the arithmetic, and both were measured on the 2-core reference
//! machine (see ARCHITECTURE.md, "Large buffers"):
//!
//! - **First touch.** A buffer above glibc's mmap threshold (32 MiB at most) is a fresh mapping every time:
//!   the kernel zeroes and maps each 4 KiB page on first write and unmaps it on free. `&x + &y` at 1e7 f32
//!   elements ran at 0.26x of a plain memory copy for that reason alone. Buffers of at least [`MIN_BYTES`]
//!   that die unshared (the last [`Tensor`](crate::Tensor) holding them is dropped) are kept in a bounded
//!   pool and handed to the next output of the same element type and length, as a caching allocator does.
//! - **Address aliasing.** Buffers whose sizes are powers of two land exactly a power of two apart, so the
//!   streams of a fused loop (Adam's `p`, `m`, `v`, `g`) share their low address bits and fight over the same
//!   cache sets: a hand-written Adam loop over four separately allocated 2^25-element buffers ran 3.2x slower
//!   than over the same buffers shifted by 64 bytes each (2x at 2^22..2^24). Every buffer this module hands
//!   out starts at its own multiple of 64 bytes (0 to 4032) past the allocation, taken from a rotating
//!   counter, so buffers allocated one after another never share their address modulo 4 KiB.
//!
//! The pool holds at most [`limit`] bytes (256 MiB unless changed with [`set_limit`]; 0 turns recycling off),
//! dropping its oldest buffers first. Reuse never changes results: every element of a handed-out buffer is
//! overwritten by the kernel that asked for it.
//!
//! ```
//! use purestate::{kernels::buffer, Tensor};
//! let x = Tensor::from(vec![1.0f32; 1 << 20]); // 4 MiB
//! let first = &x + &x;
//! drop(first); // its buffer goes to the pool
//! let before = buffer::stats();
//! let again = &x + &x; // and comes back for the next sum of that type and length
//! assert_eq!(buffer::stats().reused, before.reused + 1);
//! assert_eq!(again.to_vec::<f32>()?, vec![2.0; 1 << 20]);
//! # Ok::<(), purestate::Error>(())
//! ```

use std::any::{Any, TypeId};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use ndarray::{Array, Array1, ArrayD, Axis, Dimension, IxDyn, Slice};

/// Buffers of at least this many bytes are staggered and recycled; smaller ones come from the allocator as
/// they are (malloc serves them from its heap without page faults).
pub const MIN_BYTES: usize = 1 << 20;

/// The pool's default size limit in bytes.
pub const DEFAULT_LIMIT: usize = 256 << 20;

/// Bytes between staggered start offsets (one cache line).
const STEP: usize = 64;
/// Staggered offsets span one 4 KiB page.
const SPAN: usize = 4096;

static NEXT_OFFSET: AtomicUsize = AtomicUsize::new(0);
static POOL: Mutex<Pool> = Mutex::new(Pool { entries: VecDeque::new(), bytes: 0, limit: DEFAULT_LIMIT, stats: ZERO });

const ZERO: Stats = Stats { reused: 0, allocated: 0, recycled: 0, evicted: 0, held_bytes: 0 };

struct Entry {
    type_id: TypeId,
    len: usize,
    bytes: usize,
    vec: Box<dyn Any + Send>,
}

struct Pool {
    entries: VecDeque<Entry>,
    bytes: usize,
    limit: usize,
    stats: Stats,
}

/// Counters of the buffer pool since the process started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Large buffers handed out from the pool.
    pub reused: u64,
    /// Large buffers freshly allocated (the pool had none of that type and length).
    pub allocated: u64,
    /// Large buffers returned to the pool when their last tensor was dropped.
    pub recycled: u64,
    /// Buffers the pool dropped to stay within its limit.
    pub evicted: u64,
    /// Bytes the pool holds now.
    pub held_bytes: usize,
}

fn pool() -> MutexGuard<'static, Pool> {
    // A panic while the lock is held cannot leave the pool inconsistent (every update is a push or a pop).
    POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The pool's size limit in bytes.
pub fn limit() -> usize {
    pool().limit
}

/// Sets the pool's size limit in bytes and drops the oldest buffers beyond it; 0 turns recycling off (large
/// buffers are still staggered).
pub fn set_limit(bytes: usize) {
    let evicted = {
        let mut p = pool();
        p.limit = bytes;
        p.evict()
    };
    drop(evicted);
}

/// Drops every buffer the pool holds.
pub fn clear() {
    let entries = {
        let mut p = pool();
        p.bytes = 0;
        std::mem::take(&mut p.entries)
    };
    drop(entries);
}

/// The pool's counters.
pub fn stats() -> Stats {
    let p = pool();
    Stats { held_bytes: p.bytes, ..p.stats }
}

impl Pool {
    /// Drops the oldest entries until the held bytes fit the limit; returns them so that the caller frees
    /// them after releasing the lock.
    fn evict(&mut self) -> Vec<Entry> {
        let mut out = Vec::new();
        while self.bytes > self.limit {
            let Some(e) = self.entries.pop_front() else { break };
            self.bytes -= e.bytes;
            self.stats.evicted += 1;
            out.push(e);
        }
        out
    }
}

/// A writable output buffer of `len` elements: from the pool, or new. Fill it through
/// [`Buffer::as_mut_slice`], then shape it with [`Buffer::into_array`].
#[derive(Debug)]
pub struct Buffer<T> {
    vec: Vec<T>,
    offset: usize,
    len: usize,
}

/// A buffer of `len` elements. Large ones (from [`MIN_BYTES`]) start at a staggered offset and may be reused:
/// their elements are unspecified (old values), so the caller must write every one. Small ones are new and
/// hold `T::default()`.
pub fn alloc<T: Copy + Default + Send + 'static>(len: usize) -> Buffer<T> {
    let size = std::mem::size_of::<T>().max(1);
    if len.saturating_mul(size) < MIN_BYTES {
        return Buffer { vec: vec![T::default(); len], offset: 0, len };
    }
    let want = NEXT_OFFSET.fetch_add(STEP, Ordering::Relaxed) % SPAN / size;
    let pad = SPAN / size;
    if let Some(vec) = take::<T>(len, pad) {
        // A recycled allocation has room for at most `pad` extra elements; stay inside it, on a line boundary.
        let room = vec.len() - len;
        let offset = if want <= room { want } else { room - room % (STEP / size).max(1) };
        return Buffer { vec, offset, len };
    }
    // `vec![zero; n]` comes from `calloc`: no zero-fill pass, pages are touched once by the kernel.
    Buffer { vec: vec![T::default(); len + pad], offset: want, len }
}

/// A buffer of `len` copies of `value` (filled in parallel when large).
pub fn filled<T: Copy + Default + Send + Sync + 'static>(len: usize, value: T) -> Buffer<T> {
    if len.saturating_mul(std::mem::size_of::<T>().max(1)) < MIN_BYTES {
        return Buffer { vec: vec![value; len], offset: 0, len };
    }
    let mut b = alloc::<T>(len);
    // `unary::fill`'s loop, written here: `unary` allocates through this module, not the other way round.
    let dst = b.as_mut_slice();
    if len < super::THRESHOLD {
        dst.fill(value);
    } else {
        super::par_chunks_mut(dst, super::CHUNK, &|_, o| o.fill(value));
    }
    b
}

/// The pooled allocation of `T` with room for `len` elements and at most `pad` more, if any.
fn take<T: Send + 'static>(len: usize, pad: usize) -> Option<Vec<T>> {
    let mut p = pool();
    let id = TypeId::of::<T>();
    let found = p.entries.iter().rposition(|e| e.type_id == id && e.len >= len && e.len <= len + pad);
    let Some(i) = found else {
        p.stats.allocated += 1;
        return None;
    };
    let e = p.entries.remove(i).expect("index from rposition");
    p.bytes -= e.bytes;
    p.stats.reused += 1;
    drop(p);
    Some(*e.vec.downcast::<Vec<T>>().expect("type checked by its TypeId"))
}

/// Returns an array's allocation to the pool when the array is large and holds it alone.
pub(crate) fn recycle<T: Send + 'static>(array: ndarray::ArcArray<T, IxDyn>) {
    let size = std::mem::size_of::<T>().max(1);
    let Ok(owned) = array.try_into_owned_nocopy() else { return };
    let (vec, _) = owned.into_raw_vec_and_offset();
    let bytes = vec.capacity().saturating_mul(size);
    if bytes < MIN_BYTES {
        return;
    }
    let entry = Entry { type_id: TypeId::of::<T>(), len: vec.len(), bytes, vec: Box::new(vec) };
    let evicted = {
        let mut p = pool();
        if bytes > p.limit {
            return;
        }
        p.bytes += bytes;
        p.stats.recycled += 1;
        p.entries.push_back(entry);
        p.evict()
    };
    drop(evicted);
}

impl<T> Buffer<T> {
    /// The `len` elements to write.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.vec[self.offset..self.offset + self.len]
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the buffer has no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The elements as a standard-layout array of shape `dim` (whose size must be the length).
    ///
    /// # Panics
    /// When the size of `dim` is not the buffer's length (a bug in the caller).
    pub fn into_array<D: Dimension>(self, dim: D) -> Array<T, D> {
        let (offset, len) = (self.offset, self.len);
        let mut flat = Array1::from_vec(self.vec);
        if offset != 0 || flat.len() != len {
            flat.slice_axis_inplace(Axis(0), Slice::from(offset..offset + len));
        }
        flat.into_shape_with_order(dim).expect("the shape's size is the buffer's length")
    }

    /// The elements as a standard-layout array of `shape` (whose product must be the length).
    ///
    /// # Panics
    /// When the product of `shape` is not the buffer's length (a bug in the caller).
    pub fn into_arrayd(self, shape: &[usize]) -> ArrayD<T> {
        self.into_array(IxDyn(shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The pool is process-wide and tests run in parallel: each test uses an element type and length of its own.

    #[test]
    fn large_buffers_start_at_distinct_line_offsets() {
        let n = (MIN_BYTES / 4) * 3 + 7;
        let bufs: Vec<Buffer<i32>> = (0..8).map(|_| alloc::<i32>(n)).collect();
        let mut offsets: Vec<usize> = bufs.iter().map(|b| b.offset * 4).collect();
        assert!(offsets.iter().all(|o| o % STEP == 0 && *o < SPAN));
        offsets.sort_unstable();
        offsets.dedup();
        assert!(offsets.len() >= 7, "consecutive allocations should differ: {offsets:?}");
    }

    #[test]
    fn small_buffers_are_plain_zeroed_vectors() {
        let mut b = alloc::<u16>(100);
        assert_eq!(b.offset, 0);
        assert!(b.as_mut_slice().iter().all(|&x| x == 0));
        let a = filled(5, 3u16).into_arrayd(&[5]);
        assert_eq!(a.as_slice().unwrap(), &[3; 5]);
    }

    #[test]
    fn a_recycled_buffer_is_reused_for_the_same_length() {
        let n = MIN_BYTES / 8 + 13;
        let mut b = alloc::<u64>(n);
        b.as_mut_slice().iter_mut().enumerate().for_each(|(i, x)| *x = i as u64);
        let a = b.into_arrayd(&[n]).into_shared();
        let ptr = a.as_ptr();
        assert_eq!(a[[n - 1]], n as u64 - 1);
        recycle(a);
        let mut again = alloc::<u64>(n);
        assert!(again.as_mut_slice().as_ptr() >= ptr.wrapping_sub(SPAN / 8) && again.len() == n);
        let r = again.into_arrayd(&[n]);
        assert_eq!(r.len(), n);
    }

    #[test]
    fn shared_or_small_arrays_are_not_recycled() {
        let n = MIN_BYTES / 2 + 1;
        let a = alloc::<i16>(n).into_arrayd(&[n]).into_shared();
        let other = a.clone();
        recycle(a);
        assert!(other.is_unique(), "a shared buffer stays with its other holder");
        assert_eq!(other.len(), n);
    }
}
