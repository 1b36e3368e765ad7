"""The peer of benches/grad.rs: one training step of the same two MLPs in JAX, timed at 1 and 2 threads.

The step is the one `cargo bench --bench grad` runs (`step/<mlp>/tape/<n>t`): a forward pass with relu hidden
layers, softmax cross-entropy from integer labels (mean over the batch), `jax.value_and_grad`, and an
`optax.adam(1e-3)` update, all under one `jax.jit` whose parameter and optimizer-state buffers are donated
(so XLA may update them in place, like purestate's `Adam::apply` on an owned state). Weights are Glorot
uniform and biases zero (the values differ from purestate's, the shapes and the arithmetic do not); the batch
is the fixed one of benches/grad.rs: pixel `((i * 7 + i // n_in) % 17) / 16` for flat index `i`, label
`(i * 3) % classes`.

Threads are pinned in a separate process per count: `taskset -c 0` (1 thread) or `taskset -c 0,1` (2 threads)
and `XLA_FLAGS=--xla_cpu_multi_thread_eigen=false|true`. What jaxlib 0.10.2 honours, as checked here:
- XLA sizes its CPU thread pools from the CPUs the process may run on (sched_getaffinity): the process has 15
  OS threads under `taskset -c 0` and 21 under `taskset -c 0,1`. taskset is what bounds the parallelism.
- `--xla_cpu_multi_thread_eigen` is a known flag and acts: under `taskset -c 0,1`, `=false` made the
  784-1024-1024-10 step slower than `=true` (93 vs 72 ms, one run on the loaded machine).
- `--intra_op_parallelism_threads=N` aborts the process ("Unknown flag in XLA_FLAGS"): that option belongs to
  TensorFlow's session config, not to XLA. Without the dashes, after another flag, it is silently ignored.
  It is not passed.
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are removed from the child's environment (they are set on some
machines here for old OpenBLAS builds). Each report also gives the process's CPU seconds per wall-clock second
over the timed steps: above 1 only if XLA really ran two threads at once (on a loaded machine it can be far
below 1 even then).

Each measurement: `--warmup` untimed steps (compilation included), then `--runs` steps each timed alone with
`time.perf_counter` around the call and `block_until_ready`; the median is reported.

Run: tools/.venv/bin/python tools/jax_step.py [--runs 50] [--json]
(make the venv with `python3 -m venv tools/.venv && tools/.venv/bin/pip install -r tools/requirements-peer.txt`;
tools/peer_step.py does it and prints the ratio to purestate's step.)
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# The two MLPs of benches/grad.rs: (layer sizes, batch).
MLPS = [((64, 128, 10), 128), ((784, 1024, 1024, 10), 256)]
THREADS = [1, 2]


def child_env(threads):
    """The environment of the process that measures at `threads` threads."""
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    eigen = "true" if threads > 1 else "false"
    env["XLA_FLAGS"] = f"--xla_cpu_multi_thread_eigen={eigen}"
    env["JAX_PLATFORMS"] = "cpu"
    return env


def measure(sizes, batch, warmup, runs):
    """Median seconds of one jitted step of the MLP `sizes` on the fixed batch of `batch` rows, and the
    process's CPU time per wall-clock second over the timed steps (above 1 only if XLA ran threads in parallel)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    key = jax.random.PRNGKey(0)
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        key, sub = jax.random.split(key)
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        w = jax.random.uniform(sub, (fan_in, fan_out), jnp.float32, -limit, limit)
        params.append((w, jnp.zeros((fan_out,), jnp.float32)))

    n_in, classes = sizes[0], sizes[-1]
    i = np.arange(batch * n_in)
    x = jnp.asarray((((i * 7 + i // n_in) % 17) / 16.0).reshape(batch, n_in), jnp.float32)
    labels = jnp.asarray((np.arange(batch) * 3) % classes, jnp.int32)

    opt = optax.adam(1e-3)
    opt_state = opt.init(params)

    def loss_fn(params, x, labels):
        h = x
        for k, (w, b) in enumerate(params):
            h = h @ w + b
            if k + 1 < len(params):
                h = jax.nn.relu(h)
        return optax.softmax_cross_entropy_with_integer_labels(h, labels).mean()

    def step(params, opt_state, x, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, labels)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(step, donate_argnums=(0, 1))

    for _ in range(warmup):
        params, opt_state, loss = step(params, opt_state, x, labels)
    jax.block_until_ready((params, opt_state, loss))
    times = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(runs):
        t0 = time.perf_counter()
        params, opt_state, loss = step(params, opt_state, x, labels)
        jax.block_until_ready((params, opt_state, loss))
        times.append(time.perf_counter() - t0)
    cpu_per_wall = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    if not np.isfinite(float(loss)):
        raise SystemExit(f"jax_step: non-finite loss for {sizes}")
    return statistics.median(times), cpu_per_wall


def run_child(args):
    """Measures every MLP in this (already pinned) process and prints one JSON object."""
    import jax

    out = {
        "jax": jax.__version__,
        "threads": args.threads,
        "affinity": sorted(os.sched_getaffinity(0)),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "results": [],
    }
    for sizes, batch in MLPS:
        median, cpu_per_wall = measure(sizes, batch, args.warmup, args.runs)
        out["results"].append(
            {"mlp": "-".join(map(str, sizes)), "batch": batch, "median_s": median, "cpu_per_wall": cpu_per_wall})
    out["os_threads"] = len(os.listdir("/proc/self/task"))
    print(json.dumps(out))


def run_all(args):
    """Measures at every thread count, each in its own pinned subprocess; returns the children's reports."""
    reports = []
    for threads in THREADS:
        cpus = ",".join(str(c) for c in range(threads))
        cmd = ["taskset", "-c", cpus, sys.executable, os.path.abspath(__file__), "--child", "--threads",
               str(threads), "--warmup", str(args.warmup), "--runs", str(args.runs)]
        done = subprocess.run(cmd, env=child_env(threads), capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stderr)
            raise SystemExit(f"jax_step: the {threads}-thread run failed ({done.returncode})")
        reports.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return reports


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print the reports as one JSON list")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return
    reports = run_all(args)
    if args.json:
        print(json.dumps(reports))
        return
    print(f"jax {reports[0]['jax']}")
    print("| MLP, batch | threads | JAX jit median | CPU s per wall s |")
    print("| --- | --- | --- | --- |")
    for report in reports:
        for r in report["results"]:
            print(f"| {r['mlp']}, {r['batch']} | {report['threads']} | {r['median_s'] * 1e3:.3f} ms "
                  f"| {r['cpu_per_wall']:.2f} |")


if __name__ == "__main__":
    main()
