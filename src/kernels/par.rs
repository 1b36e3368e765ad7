//! Task parallelism: a few coarse, independent jobs (one per replica) run on rayon's pool, results in order.

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
