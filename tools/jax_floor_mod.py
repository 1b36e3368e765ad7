"""Writes tests/fixtures/jax_floor_mod.json: the value and gradient of `x % y` (`jnp.mod`, Python's floor
modulo) in JAX, for the Rust test `floor_mod_gradient_equals_jax` in `tests/integration/grad.rs`.

The loss is `sum(w * (x % y))` with fixed weights `w`, differentiated with `jax.grad` with respect to `x` and
`y`, in float32 and float64, with `y` broadcast along the first axis. Inputs cover every sign combination and
stay away from the jumps of `x % y` (where `x / y` is an integer). JAX's rule (jax/_src/numpy/ufuncs.py,
`remainder`, JAX 0.10): d/dx = 1, d/dy = -floor(x / y), computed as `[adjusted] - trunc(x / y)`.

Run: python3 tools/jax_floor_mod.py   (tested with jax 0.10.2 on CPU; a venv with `pip install jax` is enough)
"""

import json

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

ROWS, COLS = 4, 6


def case(dtype):
    rng = np.random.RandomState(7)
    x = rng.uniform(-9.0, 9.0, (ROWS, COLS))
    y = rng.uniform(0.3, 3.0, (COLS,)) * np.where(np.arange(COLS) % 2 == 0, 1.0, -1.0)
    q = x / y
    frac = q - np.floor(q)
    x = np.where((frac < 0.05) | (frac > 0.95), x + 0.3 * y, x)  # away from the jumps
    w = rng.uniform(-1.0, 1.0, (ROWS, COLS))
    x, y, w = (jnp.asarray(a, dtype=dtype) for a in (x, y, w))

    def loss(x, y):
        return jnp.sum(w * jnp.mod(x, y))

    gx, gy = jax.grad(loss, argnums=(0, 1))(x, y)

    def tensor(a):
        a = np.asarray(a)
        return {"shape": list(a.shape), "data": [float(v) for v in a.ravel()]}

    return {
        "dtype": np.dtype(dtype).name,
        "x": tensor(x),
        "y": tensor(y),
        "w": tensor(w),
        "value": tensor(jnp.mod(x, y)),
        "grad_x": tensor(gx),
        "grad_y": tensor(gy),
    }


def main():
    out = {
        "about": "jax.grad of sum(w * jnp.mod(x, y)) with y broadcast along axis 0",
        "jax": jax.__version__,
        "cases": [case(jnp.float32), case(jnp.float64)],
    }
    with open("tests/fixtures/jax_floor_mod.json", "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
