//! Task parallelism: a few coarse, independent jobs (one per replica) run on rayon's pool, results in order;
//! and [`keep_awake`], which keeps the pool's threads looking for work through a burst of parallel operations.

/// `[f(0), .., f(n - 1)]`, each call a rayon task (whatever the work size), collected in index order.
///
/// For coarse jobs such as the replicas of a data-parallel step: unlike [`map_indices`](super::map_indices)
/// there is no threshold, since each call is expected to be large. Results do not depend on scheduling: each
/// call sees only its index, and the vector is in index order.
///
/// # Examples
/// ```
/// let squares = purestate::kernels::par::map_tasks(4, |i| i * i);
/// assert_eq!(squares, [0, 1, 4, 9]);
/// ```
pub fn map_tasks<R: Send>(n: usize, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
    if n < 2 {
        (0..n).map(f).collect()
    } else {
        super::par_map(n, &f)
    }
}

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a thread that [`keep_awake`] woke keeps looking for work, spinning, before it goes back to
/// rayon's sleep.
pub const AWAKE_FOR: Duration = Duration::from_millis(2);

/// Whether threads woken by [`keep_awake`] are still spinning (process-wide: one burst at a time).
static AWAKE: AtomicBool = AtomicBool::new(false);

/// Keeps the current rayon pool's other threads looking for work, spinning, until none has come for
/// [`AWAKE_FOR`]: call it when a burst of parallel operations with short serial stretches between them
/// starts (a differentiated step, an optimizer update). It returns at once; results never depend on it.
///
/// Between two parallel operations rayon lets an idle thread sleep after some tens of microseconds, and
/// waking it costs about 100 us on the 2-core VM this crate is measured on, each time: a training step runs
/// hundreds of parallel operations with serial work between them, and the second thread used to join most of
/// them late. A woken thread spins with `rayon::yield_now` (taking any pending job at once) and
/// `std::thread::yield_now` (giving its core to any other runnable thread), as OpenMP runtimes spin before
/// sleeping. Does nothing in a pool of one thread, or while an earlier call's threads are still awake.
///
/// # Examples
/// ```
/// use purestate::kernels::par;
/// let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
/// let squares = pool.install(|| {
///     par::keep_awake();
///     par::map_tasks(4, |i| i * i)
/// });
/// assert_eq!(squares, [0, 1, 4, 9]);
/// ```
pub fn keep_awake() {
    if rayon::current_num_threads() < 2 || AWAKE.swap(true, Ordering::AcqRel) {
        return;
    }
    let me = rayon::current_thread_index();
    let others = rayon::current_num_threads() - usize::from(me.is_some());
    let left = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(others));
    rayon::spawn_broadcast(move |ctx| {
        if Some(ctx.index()) == me {
            return; // the calling thread does the burst's serial work itself
        }
        let mut idle_since = Instant::now();
        loop {
            match rayon::yield_now() {
                Some(rayon::Yield::Executed) => idle_since = Instant::now(),
                _ if idle_since.elapsed() >= AWAKE_FOR => break,
                _ => std::thread::yield_now(),
            }
        }
        if left.fetch_sub(1, Ordering::AcqRel) == 1 {
            AWAKE.store(false, Ordering::Release);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_awake_threads_run_the_work_and_go_back_to_sleep() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        let sums = pool.install(|| {
            keep_awake();
            keep_awake(); // a second call while awake does nothing
            map_tasks(64, |i| (0..=i as u64).sum::<u64>())
        });
        assert_eq!(sums, (0..64u64).map(|i| i * (i + 1) / 2).collect::<Vec<_>>());
        let started = Instant::now();
        while AWAKE.load(Ordering::Acquire) {
            assert!(started.elapsed() < Duration::from_secs(10), "the woken threads never went back to sleep");
            std::thread::sleep(Duration::from_millis(1));
        }
        // A pool of one thread has no other thread to wake: the call returns and the work runs.
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        assert_eq!(
            one.install(|| {
                keep_awake();
                map_tasks(3, |i| i)
            }),
            [0, 1, 2]
        );
    }
}
