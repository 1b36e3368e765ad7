"""The peer of benches/grad.rs: one training step of two MLPs and a CNN in JAX, timed at 1 and 2 threads.

The step is the one `cargo bench --bench grad` runs (`step/<mlp>/tape/<n>t`): a forward pass with relu hidden
layers, softmax cross-entropy from integer labels (mean over the batch), `jax.value_and_grad`, and an
`optax.adam(1e-3)` update, all under one `jax.jit` whose parameter and optimizer-state buffers are donated
(so XLA may update them in place, like purestate's `Adam::apply` on an owned state). Weights are Glorot
uniform and biases zero (the values differ from purestate's, the shapes and the arithmetic do not); the batch
is the fixed one of benches/grad.rs: pixel `((i * 7 + i // n_in) % 17) / 16` for flat index `i`, label
`(i * 3) % classes`.

The CNN (`step/cnn-8x8-32-64/...`, reported as {"mlp": "cnn-8x8-32-64", "batch": 128, ...} like the MLP rows)
is plain JAX + optax on 8x8x1 inputs (NHWC, float32), batch 128, 10 classes: conv1 3x3 1->32 "SAME" + bias;
BatchNorm in training mode (batch mean and biased variance over N, H, W; epsilon 1e-3; gamma, beta; the moving
mean and variance updated as `moving * 0.99 + batch * 0.01` and returned as auxiliary state); relu; 2x2 max
pool stride 2 "VALID"; conv2 3x3 32->64 "SAME" + bias; BatchNorm; relu; global average pool over H, W; Dropout
0.25 (`jax.random.bernoulli` with keep probability 0.75 under `fold_in(key, step number)`, kept values scaled
by 1/0.75); Dense 64->10 + bias; mean softmax cross-entropy from integer labels; `optax.adam(1e-3)`. One jitted
step: `jax.value_and_grad(loss, has_aux=True)` (the aux is the new BN statistics), the optax update, with
params, optimizer state and BN state donated; the step number is carried as an int32 and returned plus one.
Kernels are Glorot uniform (fan in/out = kh * kw * channels), biases and beta zero, gamma one, moving mean
zero, moving variance one. The batch is the MLP formula with n_in = 64, reshaped to (128, 8, 8, 1).

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
# The CNN of benches/grad.rs: (name, batch, side, classes, conv1 channels, conv2 channels).
CNN = ("cnn-8x8-32-64", 128, 8, 10, 32, 64)
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


def timed(step_once, warmup, runs):
    """Median seconds of `step_once()` (which returns what to block on and the loss) over `runs` calls after
    `warmup` untimed ones, the process's CPU seconds per wall-clock second over the timed calls, and the last loss."""
    import jax

    for _ in range(warmup):
        jax.block_until_ready(step_once())
    times = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(runs):
        t0 = time.perf_counter()
        out, loss = jax.block_until_ready(step_once())
        times.append(time.perf_counter() - t0)
    cpu_per_wall = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    return statistics.median(times), cpu_per_wall, loss


def measure_cnn(warmup, runs):
    """Median seconds of one jitted step of the CNN on its fixed batch, and CPU seconds per wall-clock second."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    _, batch, side, classes, c1, c2 = CNN
    eps, momentum, rate = 1e-3, 0.99, 0.25

    def glorot(key, shape, fan_in, fan_out):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return jax.random.uniform(key, shape, jnp.float32, -limit, limit)

    k1, k2, k3, dropout_key = jax.random.split(jax.random.PRNGKey(0), 4)
    params = {
        "conv1": {"w": glorot(k1, (3, 3, 1, c1), 9 * 1, 9 * c1), "b": jnp.zeros((c1,), jnp.float32)},
        "bn1": {"gamma": jnp.ones((c1,), jnp.float32), "beta": jnp.zeros((c1,), jnp.float32)},
        "conv2": {"w": glorot(k2, (3, 3, c1, c2), 9 * c1, 9 * c2), "b": jnp.zeros((c2,), jnp.float32)},
        "bn2": {"gamma": jnp.ones((c2,), jnp.float32), "beta": jnp.zeros((c2,), jnp.float32)},
        "dense": {"w": glorot(k3, (c2, classes), c2, classes), "b": jnp.zeros((classes,), jnp.float32)},
    }
    bn_state = {
        "bn1": {"mean": jnp.zeros((c1,), jnp.float32), "var": jnp.ones((c1,), jnp.float32)},
        "bn2": {"mean": jnp.zeros((c2,), jnp.float32), "var": jnp.ones((c2,), jnp.float32)},
    }

    n_in = side * side
    i = np.arange(batch * n_in)
    x = jnp.asarray((((i * 7 + i // n_in) % 17) / 16.0).reshape(batch, side, side, 1), jnp.float32)
    labels = jnp.asarray((np.arange(batch) * 3) % classes, jnp.int32)

    opt = optax.adam(1e-3)
    opt_state = opt.init(params)

    def conv(h, p):
        h = jax.lax.conv_general_dilated(h, p["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return h + p["b"]

    def batch_norm(h, p, s):
        mean = jnp.mean(h, axis=(0, 1, 2))
        var = jnp.mean(jnp.square(h - mean), axis=(0, 1, 2))
        y = (h - mean) * jax.lax.rsqrt(var + eps) * p["gamma"] + p["beta"]
        new = {"mean": s["mean"] * momentum + mean * (1.0 - momentum),
               "var": s["var"] * momentum + var * (1.0 - momentum)}
        return y, new

    def loss_fn(params, bn_state, x, labels, step_no):
        h = conv(x, params["conv1"])
        h, s1 = batch_norm(h, params["bn1"], bn_state["bn1"])
        h = jax.nn.relu(h)
        h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        h = conv(h, params["conv2"])
        h, s2 = batch_norm(h, params["bn2"], bn_state["bn2"])
        h = jax.nn.relu(h)
        h = jnp.mean(h, axis=(1, 2))
        keep = jax.random.bernoulli(jax.random.fold_in(dropout_key, step_no), 1.0 - rate, h.shape)
        h = jnp.where(keep, h / (1.0 - rate), 0.0)
        logits = h @ params["dense"]["w"] + params["dense"]["b"]
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, {"bn1": s1, "bn2": s2}

    def step(params, opt_state, bn_state, step_no, x, labels):
        (loss, bn_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, bn_state, x, labels, step_no)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, bn_state, step_no + 1, loss

    step = jax.jit(step, donate_argnums=(0, 1, 2))
    state = [params, opt_state, bn_state, jnp.asarray(0, jnp.int32)]

    def step_once():
        *new, loss = step(*state, x, labels)
        state[:] = new
        return state, loss

    median, cpu_per_wall, loss = timed(step_once, warmup, runs)
    if not np.isfinite(float(loss)):
        raise SystemExit(f"jax_step: non-finite loss for {CNN[0]}")
    return median, cpu_per_wall


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
    median, cpu_per_wall = measure_cnn(args.warmup, args.runs)
    out["results"].append({"mlp": CNN[0], "batch": CNN[1], "median_s": median, "cpu_per_wall": cpu_per_wall})
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
    print("| model, batch | threads | JAX jit median | CPU s per wall s |")
    print("| --- | --- | --- | --- |")
    for report in reports:
        for r in report["results"]:
            print(f"| {r['mlp']}, {r['batch']} | {report['threads']} | {r['median_s'] * 1e3:.3f} ms "
                  f"| {r['cpu_per_wall']:.2f} |")


if __name__ == "__main__":
    main()
