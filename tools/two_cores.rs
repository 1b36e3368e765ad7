//! What two threads get from this machine, as a baseline for a step's "2 threads over 1" measured in the same
//! run. Each test runs the same work on one thread alone and then on two threads at once (each thread the whole
//! work, on its own data), and prints 2 x t(1 thread) / t(2 threads): 2.00x when the second core adds a whole
//! core, 1.00x when the two threads share one.
//!
//! - `fma`: independent fused multiply-adds at the core's full throughput (twelve 8-lane chains: both FMA pipes
//!   busy), the work of a matrix product's inner kernel;
//! - `in-cache`: a scale-and-add pass over 256 KiB per thread (inside each core's L2), an elementwise op;
//! - `memory`: the same pass over 64 MiB per thread, bound by memory bandwidth.
//!
//! Each figure is the median of 7 trials. No dependencies: `tools/lm_peer_rounds.sh` and `tools/peer_step.py`
//! build it with `rustc -O -C target-cpu=native tools/two_cores.rs -o DIR/two_cores`.

use std::hint::black_box;
use std::time::Instant;

/// `iters` rounds of 96 independent fused multiply-adds.
#[inline(never)]
fn fma(seed: f32, iters: usize) -> f32 {
    let mut acc = [seed; 96];
    for i in 0..iters {
        let m = black_box(0.999_999f32);
        for a in acc.iter_mut() {
            *a = a.mul_add(m, 1e-7);
        }
        if i % 1024 == 0 {
            acc = black_box(acc);
        }
    }
    acc.iter().sum()
}

/// `passes` passes of `x = 0.5 x + 1` over `buf`.
#[inline(never)]
fn stream(buf: &mut [f32], passes: usize) -> f32 {
    for _ in 0..passes {
        for x in buf.iter_mut() {
            *x = *x * 0.5 + 1.0;
        }
        black_box(&mut *buf);
    }
    buf.iter().step_by(4096).sum()
}

/// Seconds that `job` takes (it times itself, after its set-up) on one thread, and on each of two threads
/// running it at once (the slower).
fn alone_and_together(job: fn() -> f64) -> (f64, f64) {
    let one = job();
    let both: Vec<_> = (0..2).map(|_| std::thread::spawn(job)).collect();
    let two = both.into_iter().map(|h| h.join().expect("trial thread")).fold(0.0, f64::max);
    (one, two)
}

/// `work` timed after `buf` (`len` floats) is allocated and written once.
fn timed(len: usize, work: impl FnOnce(&mut [f32]) -> f32) -> f64 {
    let mut buf = vec![1.0f32; len];
    black_box(stream(&mut buf, 1));
    let t = Instant::now();
    black_box(work(&mut buf));
    t.elapsed().as_secs_f64()
}

fn median_ratio(job: fn() -> f64) -> f64 {
    job(); // warm up: frequency, the allocator
    let mut ratios: Vec<f64> = (0..7)
        .map(|_| {
            let (one, two) = alone_and_together(job);
            2.0 * one / two
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios[ratios.len() / 2]
}

fn main() {
    let fma_job: fn() -> f64 = || timed(0, |_| fma(1.0, 4_000_000));
    let cache_job: fn() -> f64 = || timed(64 << 10, |b| stream(b, 2000));
    let memory_job: fn() -> f64 = || timed(16 << 20, |b| stream(b, 8));
    println!(
        "two threads over one, each thread the same work: fma {:.2}x, in-cache {:.2}x, memory {:.2}x",
        median_ratio(fma_job),
        median_ratio(cache_job),
        median_ratio(memory_job)
    );
}
