"""Writes tests/fixtures/jax_mlp.json: jax.value_and_grad of a fixed two-layer MLP with softmax cross-entropy.

The model is `relu(x @ w1 + b1) @ w2 + b2`, the loss Keras 3's
`keras.losses.SparseCategoricalCrossentropy(from_logits=True)` (mean over the batch) on the JAX backend,
differentiated with `jax.value_and_grad` in float32. Parameters and data come from numpy's
`RandomState(0)`, so the fixture is reproducible; the Rust test (`tests/integration/grad.rs`,
`mlp_gradients_equal_jax_to_float32_rounding`) reads it without Python.

Run: KERAS_BACKEND=jax python3 tools/jax_mlp.py   (tested with jax 0.10.2, keras 3.15.1; a venv with
`pip install "jax[cpu]" keras` is enough)
"""

import json
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import jax.numpy as jnp
import keras
import numpy as np

BATCH, INPUTS, HIDDEN, CLASSES = 16, 8, 32, 5


def main():
    rng = np.random.RandomState(0)
    params = {
        "w1": rng.normal(0.0, 0.5, (INPUTS, HIDDEN)).astype(np.float32),
        "b1": rng.normal(0.0, 0.1, (HIDDEN,)).astype(np.float32),
        "w2": rng.normal(0.0, 0.5, (HIDDEN, CLASSES)).astype(np.float32),
        "b2": rng.normal(0.0, 0.1, (CLASSES,)).astype(np.float32),
    }
    x = rng.uniform(-2.0, 2.0, (BATCH, INPUTS)).astype(np.float32)
    labels = rng.randint(0, CLASSES, (BATCH,)).astype(np.int32)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def loss(p):
        h = jax.nn.relu(x @ p["w1"] + p["b1"])
        logits = h @ p["w2"] + p["b2"]
        return loss_fn(labels, logits)

    value, grads = jax.value_and_grad(loss)({k: jnp.asarray(v) for k, v in params.items()})

    def tensor(a):
        a = np.asarray(a, dtype=np.float32)
        return {"shape": list(a.shape), "data": [float(v) for v in a.ravel()]}

    out = {
        "about": "jax.value_and_grad of relu(x @ w1 + b1) @ w2 + b2 with keras SparseCategoricalCrossentropy"
        f"(from_logits=True); jax {jax.__version__}, keras {keras.__version__}; written by tools/jax_mlp.py",
        "x": tensor(x),
        "labels": [int(v) for v in labels],
        "loss": float(np.float32(value)),
    }
    for k, v in params.items():
        out[k] = tensor(v)
        out[f"grad_{k}"] = tensor(grads[k])
    path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "jax_mlp.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {path}: loss {float(value)}")


if __name__ == "__main__":
    main()
