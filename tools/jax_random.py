"""Writes tests/fixtures/jax_random.json: keys and draws of JAX's partitionable Threefry PRNG.

purestate's `random` module follows jax/_src/random/threefry2x32.py (`_threefry_random_bits_partitionable`,
`_threefry_split_foldlike`, `_threefry_fold_in`) and jax/_src/random/core.py (`_uniform`, `_normal_real`,
`_truncated_normal`, `_bernoulli`, `_randint`, `_shuffle`). This script records what JAX itself draws, so the
Rust tests can compare bits without Python.

Run (from the repository root):
    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install "jax[cpu]" keras
    /tmp/venv/bin/python tools/jax_random.py

Floats are stored as the hex of their bits ("3f800000"), integers as numbers, keys as [hi, lo] words.
"""

import json
import os

import jax

jax.config.update("jax_threefry_partitionable", True)
jax.config.update("jax_enable_x64", True)  # for float64/int64 draws; 32-bit draws do not depend on it

import jax.numpy as jnp  # noqa: E402
import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "jax_random.json")

UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def key_of(words):
    return jnp.array(words, dtype=jnp.uint32)


def words(key):
    return [int(w) for w in np.asarray(key)]


def hexbits(x):
    a = np.asarray(x)
    u = a.view(UINT[a.dtype.itemsize]).ravel()
    width = a.dtype.itemsize * 2
    return [format(int(v), f"0{width}x") for v in u]


DTYPES = {"float16": jnp.float16, "bfloat16": jnp.bfloat16, "float32": jnp.float32, "float64": jnp.float64}

KEYS = {"seed0": [0, 0], "seed42": [0, 42], "raw": [0x12345678, 0x9ABCDEF0], "keras1337": [1337, 0]}


def main():
    out = {"jax_version": jax.__version__, "ml_dtypes_version": ml_dtypes.__version__, "keys": KEYS}

    out["prng_key"] = {str(s): words(jax.random.PRNGKey(s)) for s in [0, 42, 2**32 + 5]}
    out["split"] = {k: [words(s) for s in jax.random.split(key_of(w), 3)] for k, w in KEYS.items()}
    out["fold_in"] = {k: {str(d): words(jax.random.fold_in(key_of(w), d)) for d in [0, 1, 7, 2**32 - 1]}
                      for k, w in KEYS.items()}
    out["bits32"] = {k: [int(v) for v in np.asarray(jax.random.bits(key_of(w), (2, 5), jnp.uint32)).ravel()]
                     for k, w in KEYS.items()}
    out["bits64"] = {k: [str(int(v)) for v in np.asarray(jax.random.bits(key_of(w), (6,), jnp.uint64))]
                     for k, w in KEYS.items()}

    uniform = []
    for k, w in KEYS.items():
        for dname, dt in DTYPES.items():
            for lo, hi in [(0.0, 1.0), (-0.05, 0.05), (-3.0, 7.5)]:
                x = jax.random.uniform(key_of(w), (64,), dt, lo, hi)
                uniform.append({"key": k, "dtype": dname, "minval": lo, "maxval": hi, "bits": hexbits(x)})
    out["uniform"] = uniform

    n_normal = 512
    normal = []
    for k, w in KEYS.items():
        for dname, dt in DTYPES.items():
            x = jax.random.normal(key_of(w), (n_normal,), dt)
            normal.append({"key": k, "dtype": dname, "bits": hexbits(x)})
    out["normal"] = normal

    truncated = []
    for k, w in KEYS.items():
        for dname, dt in DTYPES.items():
            x = jax.random.truncated_normal(key_of(w), -2.0, 2.0, (n_normal,), dt)
            truncated.append({"key": k, "dtype": dname, "bits": hexbits(x)})
    out["truncated_normal"] = truncated

    out["bernoulli"] = [
        {"key": k, "p": p, "values": [bool(v) for v in np.asarray(jax.random.bernoulli(key_of(w), np.float32(p), (64,)))]}
        for k, w in KEYS.items() for p in [0.0, 0.3, 0.5, 1.0]
    ]

    randint = []
    for k, w in KEYS.items():
        for dname, lo, hi in [("int32", -5, 17), ("int32", -(2**31), 2**31 - 1), ("uint8", 0, 256),
                              ("int8", -128, 100), ("int64", -(10**12), 10**15), ("uint32", 3, 2**32 - 1),
                              ("int16", 0, 1)]:
            x = jax.random.randint(key_of(w), (32,), lo, hi, dtype=dname)
            randint.append({"key": k, "dtype": dname, "minval": lo, "maxval": hi,
                            "values": [str(int(v)) for v in np.asarray(x)]})
    out["randint"] = randint

    out["permutation"] = [
        {"key": k, "n": n, "values": [int(v) for v in np.asarray(jax.random.permutation(key_of(w), n))]}
        for k, w in KEYS.items() for n in [0, 1, 2, 10, 1625, 1700]
    ]

    with open(OUT, "w") as f:
        json.dump(out, f, indent=None, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
