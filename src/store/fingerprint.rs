//! [`Fingerprint`]: a stable 128-bit hash of a store's contents, an order-free set hash: each variable's
//! (path, dtype, shape, little-endian bytes) has its own XXH3-128 digest, the digests are added (wrapping,
//! so in any order) and the sum and the count are hashed once more. It does not depend on creation order, so
//! a commit rehashes only the variables that changed: O(changed).
//!
//! A variable's digest hashes its bytes in chunks of [`DIGEST_CHUNK_BYTES`] (XXH3-128 each) and then its
//! header and the chunk digests (XXH3-128): the chunks can be hashed in parallel, and by the pass that wrote
//! them while they are still in cache (the optimizers do), and the result does not depend on the thread count.

use twox_hash::xxhash3_128::Hasher as Xxh3;

use super::StateStore;
use crate::base::Fingerprint;
use crate::tensor::{Element, Tensor};

/// XXH3-128 of `bytes` (twox-hash picks the AVX2 kernel at run time where the CPU has it).
#[inline]
fn xxh3_128(bytes: &[u8]) -> u128 {
    Xxh3::oneshot(bytes)
}

/// Bytes of each chunk a variable's digest hashes on its own (64 KiB; part of the fingerprint format).
pub(crate) const DIGEST_CHUNK_BYTES: usize = 1 << 16;

/// The digest of one variable: XXH3-128 of its length-prefixed path, dtype name, dims, byte count, and then
/// the XXH3-128 of each [`DIGEST_CHUNK_BYTES`] chunk of its little-endian bytes (16 bytes each, little-endian).
/// The chunks are hashed in parallel when the value is large.
pub(crate) fn variable_digest(path: &str, value: &Tensor) -> u128 {
    let mut chunks = Vec::new();
    // Bytes of a chunk that spans two runs of `for_each_le_chunk` (a contiguous value is one run).
    let mut carry: Vec<u8> = Vec::new();
    value.for_each_le_chunk(|mut bytes| {
        if !carry.is_empty() {
            let take = (DIGEST_CHUNK_BYTES - carry.len()).min(bytes.len());
            carry.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if carry.len() == DIGEST_CHUNK_BYTES {
                chunks.push(xxh3_128(&carry));
                carry.clear();
            }
        }
        let whole = bytes.len() / DIGEST_CHUNK_BYTES * DIGEST_CHUNK_BYTES;
        chunks.extend(byte_chunk_digests(&bytes[..whole]));
        carry.extend_from_slice(&bytes[whole..]);
    });
    if !carry.is_empty() {
        chunks.push(xxh3_128(&carry));
    }
    digest_from_chunks(path, value, &chunks)
}

/// The digests of the [`DIGEST_CHUNK_BYTES`] chunks of `bytes`, in order (in parallel when large).
fn byte_chunk_digests(bytes: &[u8]) -> Vec<u128> {
    let n = bytes.len().div_ceil(DIGEST_CHUNK_BYTES);
    crate::kernels::map_indices(n, bytes.len() / 4, |i| {
        xxh3_128(&bytes[i * DIGEST_CHUNK_BYTES..((i + 1) * DIGEST_CHUNK_BYTES).min(bytes.len())])
    })
}

/// The digest of one chunk of a variable's elements (`chunk` must start at a multiple of
/// [`DIGEST_CHUNK_BYTES`] bytes and hold that many bytes, or be the last chunk), as [`variable_digest`] hashes it.
pub(crate) fn chunk_digest<T: Element + bytemuck::NoUninit>(chunk: &[T]) -> u128 {
    if cfg!(target_endian = "little") {
        xxh3_128(bytemuck::cast_slice(chunk))
    } else {
        let mut bytes = Vec::with_capacity(std::mem::size_of_val(chunk));
        for &x in chunk {
            bytes.extend_from_slice(x.to_le_bytes().as_ref());
        }
        xxh3_128(&bytes)
    }
}

/// The elements of `T` in one digest chunk.
pub(crate) const fn chunk_elements<T>() -> usize {
    DIGEST_CHUNK_BYTES / std::mem::size_of::<T>()
}

/// A variable's digest from the digests of its chunks (computed by [`chunk_digest`] on consecutive chunks of
/// [`chunk_elements`]): equal to [`variable_digest`] of the same path and value.
pub(crate) fn digest_from_chunks(path: &str, value: &Tensor, chunks: &[u128]) -> u128 {
    let mut hasher = header_hasher(path, value);
    for c in chunks {
        hasher.write(&c.to_le_bytes());
    }
    hasher.finish_128()
}

/// A hasher fed a variable's header, as both digest formats start: the length-prefixed path and dtype name, the
/// number of dims, each dim and the byte count (all lengths and numbers as little-endian u64).
fn header_hasher(path: &str, value: &Tensor) -> Xxh3 {
    let mut hasher = Xxh3::new();
    hasher.write(&(path.len() as u64).to_le_bytes());
    hasher.write(path.as_bytes());
    let dtype = value.dtype().name();
    hasher.write(&(dtype.len() as u64).to_le_bytes());
    hasher.write(dtype.as_bytes());
    hasher.write(&(value.ndim() as u64).to_le_bytes());
    for &d in value.dims() {
        hasher.write(&(d as u64).to_le_bytes());
    }
    hasher.write(&(value.nbytes() as u64).to_le_bytes());
    hasher
}

/// The digest of format 1 (checkpoints written before chunked digests): XXH3-128 of the same header followed
/// by all the bytes. Only [`StateStore::fingerprint_v1`] uses it, to verify such files.
fn variable_digest_v1(path: &str, value: &Tensor) -> u128 {
    let mut hasher = header_hasher(path, value);
    value.for_each_le_chunk(|bytes| hasher.write(bytes));
    hasher.finish_128()
}

impl StateStore {
    /// The fingerprint of every variable's path, dtype, shape and bytes.
    ///
    /// It is the XXH3-128 of the wrapping sum of the variables' own digests and their count: a set hash, so it
    /// can be kept up to date incrementally. Each variable's digest is computed once per value and cached in the
    /// store, so after a commit (which settles the cache) a fingerprint costs O(1), and a new version that
    /// changed k variables costs O(k log n) plus their bytes. Equal iff the stores hold the same paths, dtypes,
    /// shapes and element bits (up to a negligible chance of collision); metadata (trainable, constraint) is not
    /// part of it. Paths are unique, so the order of creation cannot make two different stores collide.
    ///
    /// # Examples
    /// ```
    /// use purestate::{StateStore, Tensor, VariableSpec};
    /// let mut a = StateStore::new();
    /// let w = a.create(VariableSpec::new(Tensor::from([1.0f32, 2.0])).name("w"))?;
    /// let b = a.clone();
    /// assert_eq!(a.fingerprint(), b.fingerprint());
    /// a.assign(&w, Tensor::from([1.0f32, 3.0]))?;
    /// assert_ne!(a.fingerprint(), b.fingerprint());
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn fingerprint(&self) -> Fingerprint {
        fingerprint_of_digest_sum(self.totals().digest_sum, self.len())
    }

    /// The fingerprint as format 1 computed it (whole-value digests, tag `purestate-fingerprint-v1`): what a
    /// checkpoint of `format_version` 1 records. O(total bytes) on every call; nothing is cached.
    pub(crate) fn fingerprint_v1(&self) -> Fingerprint {
        let sum = self.entries().fold(0u128, |sum, e| sum.wrapping_add(variable_digest_v1(e.var.path(), &e.value)));
        let mut hasher = Xxh3::new();
        hasher.write(b"purestate-fingerprint-v1");
        hasher.write(&sum.to_le_bytes());
        hasher.write(&(self.len() as u64).to_le_bytes());
        Fingerprint(hasher.finish_128())
    }
}

/// The fingerprint of a store whose `count` variables' digests add up (wrapping) to `digest_sum`: what
/// [`StateStore::fingerprint`] computes, for callers that hold only the digests (a run's journal).
pub(crate) fn fingerprint_of_digest_sum(digest_sum: u128, count: usize) -> Fingerprint {
    let mut hasher = Xxh3::new();
    hasher.write(b"purestate-fingerprint-v2");
    hasher.write(&digest_sum.to_le_bytes());
    hasher.write(&(count as u64).to_le_bytes());
    Fingerprint(hasher.finish_128())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest as the format defines it, written out: header, then the XXH3-128 of each 64 KiB chunk.
    fn by_definition(path: &str, value: &Tensor) -> u128 {
        let mut bytes = Vec::new();
        value.write_le_bytes(&mut bytes);
        let chunks: Vec<u128> = bytes.chunks(DIGEST_CHUNK_BYTES).map(xxh3_128).collect();
        digest_from_chunks(path, value, &chunks)
    }

    #[test]
    fn chunked_digest_follows_the_definition_at_every_size() {
        let per_chunk = chunk_elements::<f32>();
        for n in [0, 1, per_chunk - 1, per_chunk, per_chunk + 1, 3 * per_chunk + per_chunk / 2, 1 << 19] {
            let value = Tensor::from((0..n).map(|i| i as f32 * 0.25).collect::<Vec<f32>>());
            assert_eq!(variable_digest("w", &value), by_definition("w", &value), "n = {n}");
        }
    }

    #[test]
    fn a_strided_view_hashes_as_its_contiguous_copy() {
        let n = 300;
        let value = Tensor::from_fn([n, n], crate::dtype::DType::Float32, |i| i as f64);
        let transposed = value.transpose();
        let copy = transposed.to_standard_layout();
        assert_eq!(variable_digest("w", &transposed), variable_digest("w", &copy));
        assert_eq!(variable_digest("w", &copy), by_definition("w", &copy));
    }

    #[test]
    fn chunk_digests_of_slices_equal_the_tensor_digest() {
        let per_chunk = chunk_elements::<half::bf16>();
        let data: Vec<half::bf16> = (0..2 * per_chunk + 7).map(|i| half::bf16::from_f32(i as f32)).collect();
        let chunks: Vec<u128> = data.chunks(per_chunk).map(chunk_digest).collect();
        let value = Tensor::from(data);
        assert_eq!(digest_from_chunks("b", &value, &chunks), variable_digest("b", &value));
    }
}
