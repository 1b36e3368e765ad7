#!/usr/bin/env python3
"""Writes tests/fixtures/keras_layers.json: Keras 3 (JAX backend) ground truth for three small Sequential models.

Models (`keras.utils.set_random_seed(0)` before building each; every layer named):
- "cnn", input (8, 8, 3) float32: Conv2D(6, 3, same) conv_a, BatchNormalization bn_a, MaxPooling2D(2) pool_a,
  Conv2D(8, 3, same) conv_b, AveragePooling2D(2) pool_b, LayerNormalization ln, Dropout(0.5, seed=7) drop,
  Flatten flat, Dense(5) head;
- "gap", input (8, 8, 3) float32: Conv2D(4, 3, strides=2, same) conv, BatchNormalization(momentum=0.9,
  epsilon=1e-5) bn, GlobalAveragePooling2D gap, Dense(3) out;
- "embed", input (6,) int32 tokens in [0, 20): Embedding(20, 4) emb, LayerNormalization(epsilon=1e-5) ln,
  Flatten flat, Dense(3, use_bias=False) out.
For each model: "layers" (class, name, the config keys needed to rebuild it), "input" (per-example shape,
dtype), "variables" (every entry of `model.variables` in order, trainable or not, seed generator states
included, with path/name/shape/dtype/trainable and the value right after building), "batches" (three fixed
batches of 4), "inference" (`model(batches[0], training=False)`, computed first), "training" (the outputs of
`model(batches[i], training=True)` for i = 0, 1, 2 on the same model, so BatchNormalization's moving
statistics move and Dropout's seed generator advances) and "after" (every variable's path and value after
those three calls).
"dropout": `keras.layers.Dropout(0.3, seed=11)` called three times in training mode on one fixed 3x8 float32
input: the seed generator state before each call and each output.
"notes": the aggregation/synchronization of BatchNormalization's moving statistics and the dtype/aggregation
of the SeedGenerator state variable, read from the built variables (and from the Keras source).

Tensors are {"shape", "dtype", "data"} with data flat row-major; float32 values are written as the Python
float of the float32 (exact round trip), integers as numbers.

Run from the repository root: python3 tools/keras_layers.py
(makes tools/.venv from tools/requirements-peer.txt on first use and re-runs itself there with KERAS_BACKEND=jax)
"""

import json
import os
import sys

from _venv import ensure_venv

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "tests", "fixtures", "keras_layers.json")

CONFIG_KEYS = ["units", "filters", "kernel_size", "strides", "padding", "dilation_rate", "use_bias", "activation",
               "pool_size", "rate", "seed", "epsilon", "momentum", "axis", "input_dim", "output_dim", "center",
               "scale"]


def main():
    import jax
    import keras
    import numpy as np
    from keras import layers

    def tensor(a):
        a = np.asarray(a)
        if a.dtype == np.float32:
            if not np.all(np.isfinite(a)):
                raise SystemExit("keras_layers: a non-finite value")
            data = [np.float32(v).item() for v in a.ravel()]
        elif a.dtype in (np.int32, np.uint32, np.int64, np.uint64):
            data = [int(v) for v in a.ravel()]
        else:
            raise SystemExit(f"keras_layers: unexpected dtype {a.dtype}")
        return {"shape": list(a.shape), "dtype": str(a.dtype), "data": data}

    def plain(v):
        return list(v) if isinstance(v, tuple) else v

    def variables(model, with_meta):
        out = []
        for v in model.variables:
            value = tensor(v.numpy())
            entry = {"path": v.path}
            if with_meta:
                entry.update({"name": v.name, "shape": list(v.shape), "dtype": v.dtype, "trainable": v.trainable})
            entry["value"] = value["data"]
            out.append(entry)
        return out

    models = [
        ("cnn", (8, 8, 3), "float32", lambda: [
            layers.Conv2D(6, 3, padding="same", name="conv_a"),
            layers.BatchNormalization(name="bn_a"),
            layers.MaxPooling2D(2, name="pool_a"),
            layers.Conv2D(8, 3, padding="same", name="conv_b"),
            layers.AveragePooling2D(2, name="pool_b"),
            layers.LayerNormalization(name="ln"),
            layers.Dropout(0.5, seed=7, name="drop"),
            layers.Flatten(name="flat"),
            layers.Dense(5, name="head"),
        ]),
        ("gap", (8, 8, 3), "float32", lambda: [
            layers.Conv2D(4, 3, strides=2, padding="same", dilation_rate=1, name="conv"),
            layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="bn"),
            layers.GlobalAveragePooling2D(name="gap"),
            layers.Dense(3, name="out"),
        ]),
        ("embed", (6,), "int32", lambda: [
            layers.Embedding(20, 4, name="emb"),
            layers.LayerNormalization(epsilon=1e-5, name="ln"),
            layers.Flatten(name="flat"),
            layers.Dense(3, use_bias=False, name="out"),
        ]),
    ]

    out = {"generator": "tools/keras_layers.py", "jax": jax.__version__, "keras": keras.__version__,
           "backend": keras.backend.backend(), "models": []}
    for number, (name, shape, dtype, make_layers) in enumerate(models):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input(shape=shape, dtype=dtype)] + make_layers(), name=name)
        rng = np.random.default_rng(100 + number)
        if dtype == "int32":
            batches = [rng.integers(0, 20, size=(4,) + shape).astype(np.int32) for _ in range(3)]
        else:
            batches = [rng.normal(size=(4,) + shape).astype(np.float32) for _ in range(3)]
        record = {
            "name": name,
            "layers": [{"class": type(layer).__name__, "name": layer.name,
                        "config": {k: plain(v) for k, v in layer.get_config().items() if k in CONFIG_KEYS}}
                       for layer in model.layers],
            "input": {"shape": list(shape), "dtype": dtype},
            "variables": variables(model, True),
            "batches": [tensor(b) for b in batches],
        }
        record["inference"] = tensor(model(batches[0], training=False))
        record["training"] = [tensor(model(b, training=True)) for b in batches]
        record["after"] = variables(model, False)
        out["models"].append(record)

    # Dropout's mask derivation: the seed state before each call, and each output.
    drop = layers.Dropout(0.3, seed=11)
    x = np.random.default_rng(7).normal(size=(3, 8)).astype(np.float32)
    calls = []
    for _ in range(3):
        before = tensor(drop.seed_generator.state.numpy())
        calls.append({"state_before": before, "output": tensor(drop(x, training=True))})
    out["dropout"] = {"rate": 0.3, "seed": 11, "input": tensor(x), "calls": calls,
                      "state_after": tensor(drop.seed_generator.state.numpy())}

    bn = layers.BatchNormalization()
    bn.build((None, 3))
    gen = keras.random.SeedGenerator(1)
    out["notes"] = [
        f"BatchNormalization moving_mean: aggregation={bn.moving_mean.aggregation!r}, "
        f"synchronization={bn.moving_mean.synchronization!r}; moving_variance: "
        f"aggregation={bn.moving_variance.aggregation!r}, synchronization={bn.moving_variance.synchronization!r} "
        "(keras/src/layers/normalization/batch_normalization.py build() calls add_weight(trainable=False, "
        "autocast=False) without either argument, so add_weight's aggregation='none' and Variable's "
        "synchronization='auto' apply; gamma/beta are the same)",
        f"SeedGenerator state ('seed_generator_state', shape (2,)): dtype={gen.state.dtype!r}, "
        f"aggregation={gen.state.aggregation!r}, synchronization={gen.state.synchronization!r}, "
        f"trainable={gen.state.trainable!r}; initial value [seed, 0]; next() returns the current state and "
        "adds [0, 1] (keras/src/random/seed_generator.py; the dtype is backend.random_seed_dtype(), 'uint32' on "
        "JAX)",
    ]

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as fh:
        json.dump(out, fh, separators=(",", ":"))
        fh.write("\n")
    print(f"wrote {os.path.relpath(OUT, ROOT)}: {len(out['models'])} models, {os.path.getsize(OUT)} bytes")
    for note in out["notes"]:
        print("note:", note)


if __name__ == "__main__":
    ensure_venv(__file__)
    main()
