"""The peer of `examples/lm.rs`: the same GPT training step in JAX, timed at 1 and 2 threads.

The model is examples/common/gpt.rs's: vocabulary 83 (the characters of data/shakespeare.txt.gz), context 64,
4 pre-LayerNorm blocks of d_model 128 (4 heads of 32, causal softmax attention with biases on the query, key,
value and output projections, a 512-wide exact-GELU MLP), LayerNorm epsilon 1e-3 (Keras's), a final
LayerNorm and a Dense head; mean softmax cross-entropy over the 32 x 64 next-character targets. One
`jax.jit` step: `jax.value_and_grad`, `optax.adamw(lr, b2=0.99, eps=1e-7, weight_decay=0.01)`, and the
moving averages of the weights (`avg = 0.99 * avg + 0.01 * w`, Keras's `use_ema`), with the parameters,
optimizer state and averages donated. The batch is a fixed one (ids `(i * 7) % 83`).

Each thread count runs in its own process: `taskset -c 0` with `--xla_cpu_multi_thread_eigen=false`, or
`taskset -c 0,1` with `=true` (see tools/jax_step.py for what jaxlib honours). It prints one JSON line per
count: the median, min and max of `--runs` timed steps after 5 warm-up steps.

Run from the repository root: python3 tools/jax_lm_step.py [--runs 30]. The venv (tools/.venv) is made on
first use from tools/requirements-peer.txt. Neither tests nor CI need this.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

V, T, L, H, D, B = 83, 64, 4, 4, 128, 32


def measure(runs):
    import jax
    import jax.numpy as jnp
    import optax

    def dense(key, n_in, n_out):
        limit = math.sqrt(6.0 / (n_in + n_out))
        return (jax.random.uniform(key, (n_in, n_out), jnp.float32, -limit, limit), jnp.zeros(n_out))

    keys = iter(jax.random.split(jax.random.PRNGKey(0), 64))
    params = {
        "tok": jax.random.uniform(next(keys), (V, D), jnp.float32, -0.05, 0.05),
        "pos": dense(next(keys), T, D)[0],
        "blocks": [
            {
                "ln1": (jnp.ones(D), jnp.zeros(D)),
                "q": dense(next(keys), D, D),
                "k": dense(next(keys), D, D),
                "v": dense(next(keys), D, D),
                "o": dense(next(keys), D, D),
                "ln2": (jnp.ones(D), jnp.zeros(D)),
                "up": dense(next(keys), D, 4 * D),
                "down": dense(next(keys), 4 * D, D),
            }
            for _ in range(L)
        ],
        "lnf": (jnp.ones(D), jnp.zeros(D)),
        "head": dense(next(keys), D, V),
    }

    def ln(x, p):
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        return (x - m) / jnp.sqrt(v + 1e-3) * p[0] + p[1]

    mask = jnp.tril(jnp.ones((T, T), bool))

    def loss(p, x, y):
        h = p["tok"][x] + p["pos"][None]
        for b in p["blocks"]:
            a = ln(h, b["ln1"])
            heads = lambda w: (a @ w[0] + w[1]).reshape(B, T, H, D // H).transpose(0, 2, 1, 3)
            q, k, v = heads(b["q"]) / math.sqrt(D // H), heads(b["k"]), heads(b["v"])
            s = jnp.where(mask, q @ k.transpose(0, 1, 3, 2), -jnp.inf)
            o = (jax.nn.softmax(s, -1) @ v).transpose(0, 2, 1, 3).reshape(B, T, D)
            h = h + o @ b["o"][0] + b["o"][1]
            m = jax.nn.gelu(ln(h, b["ln2"]) @ b["up"][0] + b["up"][1], approximate=False)
            h = h + m @ b["down"][0] + b["down"][1]
        logits = ln(h, p["lnf"]) @ p["head"][0] + p["head"][1]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    opt = optax.adamw(3e-3, b2=0.99, eps=1e-7, weight_decay=0.01)

    def step(p, s, avg, x, y):
        l, g = jax.value_and_grad(loss)(p, x, y)
        u, s = opt.update(g, s, p)
        p = optax.apply_updates(p, u)
        avg = jax.tree_util.tree_map(lambda a, w: 0.99 * a + 0.01 * w, avg, p)
        return p, s, avg, l

    step = jax.jit(step, donate_argnums=(0, 1, 2))
    ids = (jnp.arange(B * (T + 1)) * 7 % V).reshape(B, T + 1).astype(jnp.int32)
    x, y = ids[:, :T], ids[:, 1:]
    state, avg = opt.init(params), jax.tree_util.tree_map(jnp.copy, params)
    times = []
    for i in range(5 + runs):
        t0 = time.perf_counter()
        params, state, avg, l = step(params, state, avg, x, y)
        l.block_until_ready()
        if i >= 5:
            times.append(time.perf_counter() - t0)
    times.sort()
    return {"median_ms": times[len(times) // 2] * 1e3, "min_ms": times[0] * 1e3, "max_ms": times[-1] * 1e3,
            "jax": jax.__version__}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--child", type=int, default=0, help="(internal) measure at this many threads")
    args = parser.parse_args()
    if args.child:
        out = measure(args.runs)
        out["threads"] = args.child
        print(json.dumps(out))
        return
    from _venv import ensure_venv

    ensure_venv(__file__)  # re-runs this script in tools/.venv unless already there
    python = sys.executable
    for threads in (1, 2):
        env = dict(os.environ, XLA_FLAGS=f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}")
        cpus = "0" if threads == 1 else "0,1"
        cmd = ["taskset", "-c", cpus, python, os.path.abspath(__file__), "--runs", str(args.runs), "--child", str(threads)]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        print(result.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
