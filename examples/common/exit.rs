//! How the examples start and end: the training loop runs on a worker of its rayon pool ([`in_pool`]), and an
//! error is printed as its message (`Display`, which names the file, variable or version involved), never as a
//! `Debug` dump, and the process exits non-zero.

#![allow(dead_code, unreachable_pub)]

use std::process::ExitCode;

/// `ExitCode::SUCCESS`, or the error's message on stderr and `ExitCode::FAILURE`.
pub fn exit_code(result: Result<(), Box<dyn std::error::Error>>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `run` on a worker thread of a new rayon pool of `threads` threads (0: rayon's default, one per core).
///
/// Every op above the parallel threshold then splits its work from inside the pool. Called from a thread outside
/// it, each op instead queues its job, wakes a worker and puts the caller to sleep until the job is done: that
/// hand-off, a few hundred times a step, was a fifth of the lm example's step at 1 thread (389 -> 316 ms) and
/// an eighth at 2 (215 -> 189 ms), for the same bits.
pub fn in_pool(
    threads: usize,
    run: impl FnOnce() -> Result<(), Box<dyn std::error::Error>> + Send,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut pool = rayon::ThreadPoolBuilder::new();
    if threads > 0 {
        pool = pool.num_threads(threads);
    }
    pool.build()?.install(|| run().map_err(|e| e.to_string()))?;
    Ok(())
}
