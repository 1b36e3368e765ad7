#!/usr/bin/env python3
"""Writes tests/fixtures/keras_attention.json: Keras 3.15.1 (JAX backend) ground truth for MultiHeadAttention.

Cases (`keras.utils.set_random_seed(0)` before building each; inputs from numpy's `default_rng(<case number>)`):
- "self": MultiHeadAttention(num_heads=2, key_dim=3, name="mha"), self-attention on a (2, 4, 5) float32 batch;
- "cross": MultiHeadAttention(num_heads=3, key_dim=2, value_dim=4, dropout=0.3, output_shape=6, seed=5,
  name="cross"), query (2, 3, 5), value (2, 4, 7), key (2, 4, 6); called with training=False, so the dropout
  is off (and Keras takes its explicit-scores path, `Softmax` with a mask, instead of dot_product_attention);
- "nobias": MultiHeadAttention(num_heads=1, key_dim=4, use_bias=False, name="nobias"), self-attention on a
  (1, 5, 3) batch.
For each case: "config" (the constructor arguments), "variables" (every entry of `layer.variables` in order:
path, shape, dtype, trainable, value), "inputs" (query, value, key: the tensors, key may be null) and "calls":
the output for no mask, `use_causal_mask=True`, an explicit padding `attention_mask` of shape (B, T, S)
(key positions at or past each example's length are masked; every row keeps at least one key), and the
padding mask together with the causal one.

Tensors are {"shape", "dtype", "data"} with data flat row-major; float32 values are written as the Python
float of the float32 (exact round trip), bools as true/false, integers as numbers.

Run from the repository root: python3 tools/keras_attention.py
(makes tools/.venv from tools/requirements-peer.txt on first use and re-runs itself there with KERAS_BACKEND=jax)
"""

import json
import os
import sys

from _venv import ensure_venv

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "tests", "fixtures", "keras_attention.json")


def main():
    import jax
    import keras
    import numpy as np
    from keras import layers

    def tensor(a):
        a = np.asarray(a)
        if a.dtype == np.float32:
            if not np.all(np.isfinite(a)):
                raise SystemExit("keras_attention: a non-finite value")
            data = [np.float32(v).item() for v in a.ravel()]
        elif a.dtype == np.bool_:
            data = [bool(v) for v in a.ravel()]
        elif a.dtype in (np.int32, np.uint32, np.int64, np.uint64):
            data = [int(v) for v in a.ravel()]
        else:
            raise SystemExit(f"keras_attention: unexpected dtype {a.dtype}")
        return {"shape": list(a.shape), "dtype": str(a.dtype), "data": data}

    specs = [
        ("self", dict(num_heads=2, key_dim=3, name="mha"), (2, 4, 5), None, None, [4, 2]),
        ("cross", dict(num_heads=3, key_dim=2, value_dim=4, dropout=0.3, output_shape=6, seed=5, name="cross"),
         (2, 3, 5), (2, 4, 7), (2, 4, 6), [3, 1]),
        ("nobias", dict(num_heads=1, key_dim=4, use_bias=False, name="nobias"), (1, 5, 3), None, None, [3]),
    ]
    out = {"generator": "tools/keras_attention.py", "jax": jax.__version__, "keras": keras.__version__,
           "cases": []}
    for number, (name, config, q_shape, v_shape, k_shape, lengths) in enumerate(specs):
        keras.utils.set_random_seed(0)
        r = np.random.default_rng(number)
        query = r.normal(size=q_shape).astype(np.float32)
        value = query if v_shape is None else r.normal(size=v_shape).astype(np.float32)
        key = None if k_shape is None else r.normal(size=k_shape).astype(np.float32)
        layer = layers.MultiHeadAttention(**config)
        # Build on first call, as a user does; keep the built weights for every call.
        layer(query, value, key=key, training=False)
        t, s = query.shape[1], value.shape[1]
        padding = np.array([[[j < n for j in range(s)] for _ in range(t)] for n in lengths], dtype=bool)
        calls = []
        for tag, mask, causal in [("none", None, False), ("causal", None, True), ("padding", padding, False),
                                  ("padding_causal", padding, True)]:
            y = layer(query, value, key=key, attention_mask=mask, use_causal_mask=causal, training=False)
            calls.append({"name": tag, "attention_mask": None if mask is None else tensor(mask),
                          "use_causal_mask": causal, "output": tensor(np.asarray(y))})
        out["cases"].append({
            "name": name,
            "config": config,
            "variables": [{"path": v.path, "shape": list(v.shape), "dtype": str(v.dtype),
                           "trainable": bool(v.trainable), "value": tensor(np.asarray(v.numpy()))}
                          for v in layer.variables],
            "inputs": {"query": tensor(query), "value": None if v_shape is None else tensor(value),
                       "key": None if key is None else tensor(key)},
            "calls": calls,
        })

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as fh:
        json.dump(out, fh, separators=(",", ":"))
        fh.write("\n")
    print(f"wrote {os.path.relpath(OUT, ROOT)}: {len(out['cases'])} cases, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    ensure_venv(__file__)
    main()
