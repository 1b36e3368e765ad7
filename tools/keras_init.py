"""Writes tests/fixtures/init_stats.json: Keras 3 initializers (JAX backend) as purestate's `init` tests see them.

For each initializer: its config defaults (`get_config()` without the seed), the fans Keras computes for a few
shapes, and, for a draw with `seed=7` in float32 (and a few in bfloat16), the sample statistics (min, max,
mean, std) and the bits of the first 64 elements. purestate's tests compare the statistics within tolerances,
and, because Keras's JAX backend draws from the key [seed, 0] (keras/src/random/seed_generator.py,
`draw_seed`) with JAX's partitionable Threefry, also the leading bits against `Key::from_keras_seed(7)`.
Orthogonal records max |QᵀQ - I| (or |QQᵀ - I| for a wide matrix) too.

Run (from the repository root):
    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install "jax[cpu]" keras
    /tmp/venv/bin/python tools/keras_init.py
"""

import json
import os

os.environ["KERAS_BACKEND"] = "jax"

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras.src.initializers.random_initializers import compute_fans  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "init_stats.json")
SEED = 7
UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}

# (name, constructor arguments besides the seed, shape, dtype)
CASES = [
    ("RandomNormal", {}, (1000, 1000), "float32"),
    ("RandomUniform", {}, (1000, 1000), "float32"),
    ("TruncatedNormal", {}, (1000, 1000), "float32"),
    ("RandomNormal", {"mean": 1.0, "stddev": 2.0}, (1000, 1000), "float32"),
    ("RandomUniform", {"minval": -3.0, "maxval": 7.5}, (1000, 1000), "float32"),
    ("TruncatedNormal", {"mean": -1.0, "stddev": 0.5}, (1000, 1000), "float32"),
    ("VarianceScaling", {}, (3, 3, 128, 256), "float32"),
    ("VarianceScaling", {"scale": 0.5, "mode": "fan_out", "distribution": "untruncated_normal"}, (3, 3, 128, 256),
     "float32"),
    ("VarianceScaling", {"scale": 3.0, "mode": "fan_avg", "distribution": "uniform"}, (3, 3, 128, 256), "float32"),
    ("GlorotUniform", {}, (3, 3, 128, 256), "float32"),
    ("GlorotNormal", {}, (3, 3, 128, 256), "float32"),
    ("HeUniform", {}, (3, 3, 128, 256), "float32"),
    ("HeNormal", {}, (3, 3, 128, 256), "float32"),
    ("LecunUniform", {}, (3, 3, 128, 256), "float32"),
    ("LecunNormal", {}, (3, 3, 128, 256), "float32"),
    ("GlorotUniform", {}, (512, 1024), "bfloat16"),
    ("HeNormal", {}, (512, 1024), "bfloat16"),
    ("Orthogonal", {}, (256, 128), "float32"),
    ("Orthogonal", {"gain": 2.0}, (64, 200), "float32"),
    ("Orthogonal", {}, (3, 3, 16, 32), "float32"),
    ("Identity", {"gain": 3.0}, (3, 5), "float32"),
]

DEFAULTS = ["RandomNormal", "RandomUniform", "TruncatedNormal", "VarianceScaling", "GlorotUniform", "GlorotNormal",
            "HeUniform", "HeNormal", "LecunUniform", "LecunNormal", "Orthogonal", "Identity", "Constant"]

FAN_SHAPES = [(), (7,), (64, 128), (3, 3, 16, 32), (5, 4, 8), (2, 3, 5, 7, 11)]


def hexbits(a):
    a = np.ascontiguousarray(a)
    u = a.view(UINT[a.dtype.itemsize]).ravel()
    return [format(int(v), f"0{a.dtype.itemsize * 2}x") for v in u]


def orthogonality(q):
    m = q.reshape(-1, q.shape[-1]).astype(np.float64)
    g = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    return float(np.max(np.abs(g / g[0, 0] - np.eye(g.shape[0]))))


def main():
    out = {"keras_version": keras.__version__, "jax_version": jax.__version__, "seed": SEED}
    defaults = {}
    for name in DEFAULTS:
        config = getattr(keras.initializers, name)().get_config()
        config.pop("seed", None)
        defaults[name] = config
    out["defaults"] = defaults
    out["fans"] = [{"shape": list(s), "fans": list(compute_fans(s))} for s in FAN_SHAPES]

    cases = []
    for name, args, shape, dtype in CASES:
        cls = getattr(keras.initializers, name)
        init = cls(**args) if name == "Identity" else cls(seed=SEED, **args)
        x = np.asarray(init(shape, dtype=dtype))
        w = x.astype(np.float64)
        case = {"name": name, "args": args, "shape": list(shape), "dtype": dtype,
                "min": float(w.min()), "max": float(w.max()), "mean": float(w.mean()), "std": float(w.std()),
                "head": hexbits(x.ravel()[:64])}
        if name == "Orthogonal":
            case["orthogonality_error"] = orthogonality(w)
        cases.append(case)
    out["cases"] = cases

    gen = keras.random.SeedGenerator(1337)
    out["seed_generator"] = {
        "seed": 1337,
        "state_path": gen.state.path,
        "draws": [hexbits(np.asarray(keras.random.normal((8,), seed=gen))) for _ in range(3)],
        "final_state": [int(v) for v in np.asarray(gen.state.value)],
    }

    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
