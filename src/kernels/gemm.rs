//! Matrix products of float32 and float64 through the `gemm` crate (faer's kernels), on the rayon pool of the
//! caller. The crate's only `unsafe` block is here, in one audited function ([`gemm_on`]).
//!
//! Operands are strided views: a transposed view (the backward pass's `x.T @ dy`, `dy @ w.T`) is passed with
//! its strides, never copied. Views with a negative stride, and the operands of products with at most 256
//! outputs or a single row or column, are copied to standard layout first (see [`gemm_on`]), so that the bits
//! of a product never depend on its operands' layout.
//!
//! **Determinism.** The `gemm` crate walks the reduction dimension in blocks of `kc` in a fixed order on the
//! calling thread and splits only the output tiles of each block across threads; a tile's sum is always
//! accumulated by one thread in the same order. Block sizes (`kc`, `mc`, `nc`) depend on the shape, the
//! element size and the cache sizes, never on the thread count, and every call passes `Parallelism::Rayon`
//! (with 1 thread below [`THRESHOLD`]), so all calls take the same path. Results are bit-identical for any
//! `RAYON_NUM_THREADS` on one machine (tested at 1, 2 and 7 threads in `tests/integration/kernels.rs`).
//!
//! **Machines.** The crate picks its kernel at run time from the CPU's features ([`kernel`] names it): AVX-512F
//! (with the default `avx512` feature of this crate), else AVX2+FMA, else scalar. Products agree bit for bit
//! between machines that run the same kernel; an AVX-512F kernel sums in other blocks than the AVX2 one, so a
//! run replayed on a CPU of the other kind diverges at its first product. Build without the `avx512` feature
//! to run the AVX2+FMA kernel on every x86-64-v3 CPU, AVX-512 or not.

use gemm::Parallelism;
use ndarray::{ArrayView2, ArrayView3, Axis, CowArray, Ix2};

/// Multiply-adds (`m * n * k`) below which a product runs on the calling thread.
///
/// Measured on the 2-core reference machine (AMD EPYC, float32). Alone in a loop (`cargo bench --bench matmul --
/// threshold`), products of 1 Mi multiply-adds (128x64x128, 64x128x128: the 64-128-10 MLP's first layer and its
/// weight gradient) run 1.4-1.7x faster on two threads, 256x256x256 2.0x, and at 512 Ki and below `gemm` does not
/// split the work. Inside a training step the second thread has gone to sleep between products and must be woken:
/// with the line at 1 Mi the 64-128-10 step (`cargo bench --bench grad -- step/64-128-10/tape/`) took 150.6 us at
/// two threads against 127.1 us at one; at 2 Mi it takes 127.6 us at both (each measured alone). Every product of
/// the 784-1024-1024-10 MLP is above 2 Mi (the smallest, 256x1024x10, is 2.6 Mi).
pub const THRESHOLD: usize = 1 << 21;

/// The `gemm` kernel this process runs: `"avx512f"`, `"fma"` (AVX2+FMA), `"neon"` or `"scalar"`, by the crate's
/// own rule (the first the CPU supports, AVX-512F only with the `avx512` feature). Two processes give the same
/// bits for a product when they name the same kernel.
///
/// ```
/// let k = purestate::kernels::gemm::kernel();
/// assert!(["avx512f", "fma", "neon", "scalar"].contains(&k));
/// ```
pub fn kernel() -> &'static str {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        if cfg!(feature = "avx512") && std::arch::is_x86_feature_detected!("avx512f") {
            return "avx512f";
        }
        if std::arch::is_x86_feature_detected!("fma") {
            return "fma";
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            return "neon";
        }
    }
    "scalar"
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// The element types with a GEMM kernel: `f32` and `f64`.
pub trait Float: sealed::Sealed + Copy + Default + Send + Sync + 'static {
    /// `1` in this type.
    const ONE: Self;
}

impl Float for f32 {
    const ONE: f32 = 1.0;
}

impl Float for f64 {
    const ONE: f64 = 1.0;
}

/// Writes `a @ b` into `out`, row-major (`out[i * n + j]`), over every rayon thread of the calling pool when the
/// product has at least [`THRESHOLD`] multiply-adds.
///
/// # Panics
/// When the inner dimensions differ or `out` does not have `m * n` elements (bugs in the caller).
///
/// # Examples
/// ```
/// use ndarray::array;
/// use purestate::kernels::gemm::gemm;
/// let a = array![[1.0f32, 2.0], [3.0, 4.0]];
/// let mut out = [0.0f32; 4];
/// gemm(a.view(), a.t(), &mut out); // a @ a.T, the transpose read in place
/// assert_eq!(out, [5.0, 11.0, 11.0, 25.0]);
/// ```
pub fn gemm<T: Float>(a: ArrayView2<'_, T>, b: ArrayView2<'_, T>, out: &mut [T]) {
    let work = a.nrows().saturating_mul(b.ncols()).saturating_mul(a.ncols());
    gemm_on(a, b, out, if work < THRESHOLD { 1 } else { rayon::current_num_threads() });
}

/// [`gemm()`] on `threads` threads of the calling pool whatever the size (1: the calling thread only). The
/// result is the same for every count; `benches/matmul.rs` measures the split threshold with it.
///
/// # Panics
/// As [`gemm()`].
#[allow(unsafe_code)]
pub fn gemm_on<T: Float>(a: ArrayView2<'_, T>, b: ArrayView2<'_, T>, out: &mut [T], threads: usize) {
    let ((m, k), (k2, n)) = (a.dim(), b.dim());
    assert_eq!(k, k2, "gemm: inner dimensions differ");
    assert_eq!(out.len(), m * n, "gemm: output length is not m * n");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out.fill(T::default());
        return;
    }
    // The crate's paths for small outputs (at most 256 elements: dot products across SIMD lanes) and for
    // matrix-vector products are picked by the operands' strides, and sum in another order than its blocked
    // kernel. Passing such operands in standard layout makes the path, and so the bits, a function of the shape
    // alone: a transposed view gives the same product as its contiguous copy.
    let standard = m * n <= 256 || m == 1 || n == 1;
    let (a, b) = (prepare(a, standard), prepare(b, standard));
    let (sa, sb) = (a.strides(), b.strides());
    debug_assert!(sa.iter().chain(sb).all(|&s| s >= 0));
    let threads = threads.max(1);
    // SAFETY: `gemm::gemm` reads `lhs[i * lhs_rs + p * lhs_cs]` for `i < m`, `p < k`, reads
    // `rhs[p * rhs_rs + j * rhs_cs]` for `p < k`, `j < n`, and writes `dst[i * dst_rs + j * dst_cs]` for
    // `i < m`, `j < n` (with `read_dst == false` and alpha 0 it never reads `dst`); it panics on no type but
    // f32, f64, f16, c32 and c64, and `Float` is sealed to f32 and f64.
    // - lhs: `a` is a live `ArrayView2` of shape (m, k) whose strides (in elements, all >= 0 after
    //   `prepare`) are `sa`; ndarray guarantees every such offset from `a.as_ptr()` is an element of its
    //   allocation. Zero strides (broadcast rows) only repeat reads. Same for rhs with `b`, shape (k, n), `sb`.
    // - dst: `out` is a `&mut [T]` of exactly `m * n` elements (asserted above); with row stride `n` and
    //   column stride 1 the largest offset written is `(m - 1) * n + n - 1 = m * n - 1`, in bounds, and each
    //   element is written by one tile only. `m`, `n`, `k` are all > 0 here.
    // - aliasing: `out` is borrowed mutably while `a` and `b` are shared borrows (or owned copies), so the
    //   borrow checker rules out any overlap between the destination and the operands; the operands are only read.
    // - threads: the kernel runs its tasks inside `rayon` scopes that end before it returns, so no pointer
    //   outlives the borrows; the views are `Sync` data (`T: Sync`).
    // - strides fit `isize` (ndarray's `strides()` are `isize`), and `n <= out.len()` fits `isize` as the length
    //   of an allocation.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            sa[1],
            sa[0],
            b.as_ptr(),
            sb[1],
            sb[0],
            T::default(),
            T::ONE,
            false,
            false,
            false,
            Parallelism::Rayon(threads),
        );
    }
}

/// Writes the products of a stack, `a[i] @ b[i]` for `a` of shape `(batch, m, k)` and `b` of `(batch, k, n)`, into
/// `out` (`batch * m * n` elements, row-major). Products of at least [`THRESHOLD`] multiply-adds run one after
/// another, each over every thread; smaller ones run side by side, one per thread. Either way each product is
/// the one [`gemm()`] computes, bit for bit.
///
/// # Panics
/// When the batch or inner dimensions differ or `out` has the wrong length (bugs in the caller).
pub fn gemm_batched<T: Float>(a: ArrayView3<'_, T>, b: ArrayView3<'_, T>, out: &mut [T]) {
    let ((batch, m, k), (batch2, k2, n)) = (a.dim(), b.dim());
    assert_eq!((batch, k), (batch2, k2), "gemm_batched: batch or inner dimensions differ");
    gemm_each(batch, (m, k, n), |i| (a.index_axis(Axis(0), i), b.index_axis(Axis(0), i)), out);
}

/// [`gemm_batched`] over products given by their index: `operands(i)` is the pair of views `(a_i, b_i)`, of
/// shapes `(m, k)` and `(k, n)`, in any layout (a broadcast or permuted stack is never copied whole: `gemm`
/// packs each operand's blocks itself). `a_i @ b_i` goes to `out[i * m * n..(i + 1) * m * n]`.
///
/// # Panics
/// When an operand has another shape or `out` has the wrong length (bugs in the caller).
pub fn gemm_each<'a, T: Float>(
    batch: usize,
    (m, k, n): (usize, usize, usize),
    operands: impl Fn(usize) -> (ArrayView2<'a, T>, ArrayView2<'a, T>) + Sync,
    out: &mut [T],
) {
    assert_eq!(out.len(), batch * m * n, "gemm_each: output length is not batch * m * n");
    let size = m * n;
    if size == 0 {
        return;
    }
    let work = size.saturating_mul(k);
    let member = |i: usize, o: &mut [T], threads: usize| {
        let (a, b) = operands(i);
        assert_eq!((a.dim(), b.dim()), ((m, k), (k, n)), "gemm_each: an operand has another shape");
        gemm_on(a, b, o, threads);
    };
    if work >= THRESHOLD || batch < 2 || work.saturating_mul(batch) < THRESHOLD {
        for (i, o) in out.chunks_mut(size).enumerate() {
            member(i, o, if work < THRESHOLD { 1 } else { rayon::current_num_threads() });
        }
    } else {
        super::par_chunks_mut(out, size, &|i, o| member(i, o, 1));
    }
}

/// `v` in standard layout when `standard` or when a stride is negative (reversed views are rare: `flip`),
/// else `v` itself, borrowed.
fn prepare<T: Clone>(v: ArrayView2<'_, T>, standard: bool) -> CowArray<'_, T, Ix2> {
    if (standard && !v.is_standard_layout()) || v.strides().iter().any(|&s| s < 0) {
        CowArray::from(v.as_standard_layout().into_owned())
    } else {
        CowArray::from(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array2};

    fn reference(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) -> Array2<f64> {
        a.dot(&b)
    }

    #[test]
    fn strided_and_reversed_operands_match_a_reference() {
        let x = Array2::from_shape_fn((9, 7), |(i, j)| (i * 7 + j) as f64 * 0.25 - 3.0);
        let y = Array2::from_shape_fn((9, 5), |(i, j)| (i + 2 * j) as f64 * 0.5 - 1.0);
        let cases: [(ArrayView2<'_, f64>, ArrayView2<'_, f64>); 3] = [
            (x.t(), y.view()),
            (x.slice(s![..;-1, ..]).reversed_axes(), y.slice(s![..;-1, ..;2])),
            (x.slice(s![..5, ..;-1]), x.slice(s![1..8, ..;-1])),
        ];
        for (a, b) in cases {
            let mut out = vec![f64::NAN; a.nrows() * b.ncols()];
            gemm(a, b, &mut out);
            assert_eq!(out, reference(a, b).into_raw_vec_and_offset().0);
        }
    }

    #[test]
    fn empty_inner_dimension_gives_zeros() {
        let (a, b) = (Array2::<f32>::zeros((3, 0)), Array2::<f32>::zeros((0, 2)));
        let mut out = [f32::NAN; 6];
        gemm(a.view(), b.view(), &mut out);
        assert_eq!(out, [0.0; 6]);
        gemm(Array2::<f32>::zeros((0, 4)).view(), Array2::<f32>::zeros((4, 2)).view(), &mut []);
    }
}
