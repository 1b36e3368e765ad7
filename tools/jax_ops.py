#!/usr/bin/env python3
"""Writes tests/fixtures/jax_ops.json: forward values and vector-Jacobian products of Keras 3 ops on JAX.

Every case calls one `keras.ops.*` function on the JAX backend (so Keras's semantics and JAX's numerics: conv,
max_pool, average_pool, take, one_hot, concatenate, stack, split, slice, the activations, var/std/moments/
logsumexp) and differentiates it with `jax.vjp` with respect to its float inputs (integer inputs, such as
`take`'s indices, are held fixed and get `null`). Inputs and cotangents come from numpy's
`default_rng(<case number>)`, so the file is reproducible.

Format (all arrays flat, row-major; float32 values written as the Python float of the float32, so they
round-trip exactly):
    {"generator": "tools/jax_ops.py", "jax": ..., "keras": ...,
     "cases": [{"name", "op", "params",
                "inputs":     [{"shape", "dtype", "data"}, ...],
                "outputs":    [{"shape", "dtype", "data"}, ...],    one per output
                "cotangents": [{"shape", "dtype", "data"}, ...],    one per output (absent for one_hot)
                "vjp":        [{"shape", "dtype", "data"} | null, ...]}]}   one per input (absent for one_hot)
Params use purestate's names: conv2d {"strides", "padding", "dilation"}; max_pool2d/avg_pool2d
{"pool_size", "strides", "padding"}; take {"axis"}; one_hot {"num_classes", "axis"}; concatenate/stack
{"axis"}; split {"indices_or_sections", "axis"}; slice {"start", "shape"}; gelu {"approximate"}; leaky_relu
{"negative_slope"}; elu {"alpha"}; var/std/logsumexp {"axis", "keepdims"}; moments {"axes", "keepdims"};
triu/tril {"k"}; softmax_masked {"axis"} (inputs x and a bool mask: `keras.layers.Softmax(axis)(x, mask)`);
where {} (inputs: a bool condition, x, y, broadcasting together). Bool inputs are written as true/false.

Run from the repository root: python3 tools/jax_ops.py
(makes tools/.venv from tools/requirements-peer.txt on first use and re-runs itself there with KERAS_BACKEND=jax)
"""

import json
import os
import sys

from _venv import ensure_venv

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "tests", "fixtures", "jax_ops.json")


def build_cases(np):
    """[(name, op, params, [numpy inputs], function of the inputs returning a tensor or a list of them)]."""
    import keras

    ops = keras.ops
    cases = []

    def rng():
        return np.random.default_rng(1000 + len(cases))

    def normal(r, *shape):
        return r.normal(size=shape).astype(np.float32)

    def add(name, op, params, inputs, fn):
        cases.append((name, op, params, inputs, fn))

    # conv2d: x NHWC, kernel HWIO.
    conv = [
        ("valid_s1", (2, 6, 6, 3), (3, 3, 3, 4), [1, 1], "valid", [1, 1]),
        ("same_s1", (2, 6, 6, 3), (3, 3, 3, 4), [1, 1], "same", [1, 1]),
        ("same_s2_odd", (2, 7, 7, 3), (3, 3, 3, 4), [2, 2], "same", [1, 1]),
        ("valid_s2", (2, 7, 7, 3), (3, 3, 3, 4), [2, 2], "valid", [1, 1]),
        ("valid_d2", (2, 7, 7, 3), (3, 3, 3, 4), [1, 1], "valid", [2, 2]),
        ("same_d2", (2, 6, 6, 3), (3, 3, 3, 4), [1, 1], "same", [2, 2]),
        ("k1x1", (2, 5, 5, 3), (1, 1, 3, 4), [1, 1], "valid", [1, 1]),
        ("k2x3_s2x1_same", (2, 6, 7, 3), (2, 3, 3, 4), [2, 1], "same", [1, 1]),
    ]
    for tag, xs, ks, strides, padding, dilation in conv:
        r = rng()
        params = {"strides": strides, "padding": padding, "dilation": dilation}

        def fn(x, k, strides=strides, padding=padding, dilation=dilation):
            return ops.conv(x, k, strides=tuple(strides), padding=padding, dilation_rate=tuple(dilation),
                            data_format="channels_last")

        add(f"conv2d/{tag}", "conv2d", params, [normal(r, *xs), normal(r, *ks)], fn)

    # Pools.
    pools = [
        ("p2_s2_valid", (2, 6, 6, 3), [2, 2], [2, 2], "valid", False),
        ("p3_s1_same", (2, 6, 6, 3), [3, 3], [1, 1], "same", False),
        ("p3_s2_same_7x7", (2, 7, 7, 3), [3, 3], [2, 2], "same", False),
        ("p2_s1_valid", (2, 6, 6, 3), [2, 2], [1, 1], "valid", False),
    ]
    max_pools = pools + [
        ("ties_p2_s2_valid", (2, 6, 6, 2), [2, 2], [2, 2], "valid", True),
        ("ties_p3_s1_same", (2, 5, 5, 2), [3, 3], [1, 1], "same", True),
    ]
    for op, fn_name, table in [("max_pool2d", "max_pool", max_pools), ("avg_pool2d", "average_pool", pools)]:
        for tag, xs, pool, strides, padding, ties in table:
            r = rng()
            x = r.integers(0, 3, size=xs).astype(np.float32) if ties else normal(r, *xs)
            params = {"pool_size": pool, "strides": strides, "padding": padding}

            def fn(x, pool=pool, strides=strides, padding=padding, f=getattr(ops, fn_name)):
                return f(x, pool_size=tuple(pool), strides=tuple(strides), padding=padding,
                         data_format="channels_last")

            add(f"{op}/{tag}", op, params, [x], fn)

    # take.
    r = rng()
    add("take/axis0_repeats", "take", {"axis": 0},
        [normal(r, 10, 4), np.array([[0, 3, 3, 9, 1], [2, 0, 9, 9, 5], [7, 7, 7, 4, 0]], np.int32)],
        lambda x, i: ops.take(x, i, axis=0))
    r = rng()
    add("take/axis1_negative", "take", {"axis": 1}, [normal(r, 3, 6, 2), np.array([1, -1, 4, 1], np.int32)],
        lambda x, i: ops.take(x, i, axis=1))
    r = rng()
    add("take/axis_minus1", "take", {"axis": -1}, [normal(r, 2, 3, 5), np.array([[4, 0], [2, 4]], np.int32)],
        lambda x, i: ops.take(x, i, axis=-1))

    # one_hot (forward only).
    r = rng()
    add("one_hot/c7", "one_hot", {"num_classes": 7, "axis": -1}, [r.integers(0, 7, size=(2, 5)).astype(np.int32)],
        lambda i: ops.one_hot(i, 7, axis=-1))

    # concatenate / stack / split / slice.
    for tag, axis, shapes in [
        ("axis0", 0, [(2, 3, 2), (1, 3, 2), (3, 3, 2)]),
        ("axis1", 1, [(2, 1, 2), (2, 4, 2), (2, 2, 2)]),
        ("axis_minus1", -1, [(2, 3, 1), (2, 3, 3), (2, 3, 2)]),
    ]:
        r = rng()
        add(f"concatenate/{tag}", "concatenate", {"axis": axis}, [normal(r, *s) for s in shapes],
            lambda *xs, axis=axis: ops.concatenate(list(xs), axis=axis))
    r = rng()
    add("stack/axis0", "stack", {"axis": 0}, [normal(r, 2, 3) for _ in range(3)],
        lambda *xs: ops.stack(list(xs), axis=0))
    r = rng()
    add("stack/axis_minus1", "stack", {"axis": -1}, [normal(r, 2, 3, 2) for _ in range(2)],
        lambda *xs: ops.stack(list(xs), axis=-1))
    r = rng()
    add("split/sections3_axis1", "split", {"indices_or_sections": 3, "axis": 1}, [normal(r, 2, 6, 3)],
        lambda x: ops.split(x, 3, axis=1))
    r = rng()
    add("split/indices_2_5_axis0", "split", {"indices_or_sections": [2, 5], "axis": 0}, [normal(r, 7, 3)],
        lambda x: ops.split(x, [2, 5], axis=0))
    r = rng()
    add("slice/4x5x6", "slice", {"start": [1, 0, 2], "shape": [2, 4, 3]}, [normal(r, 4, 5, 6)],
        lambda x: ops.slice(x, [1, 0, 2], [2, 4, 3]))

    # Elementwise: 55 evenly spaced values on [-6, 6] (0 and +-6 exactly) and 9 near 0.
    spread = np.concatenate([np.linspace(-6.0, 6.0, 55),
                             [1e-6, -1e-6, 1e-3, -1e-3, 0.05, -0.05, 0.5, -0.5, 1e-30]]).astype(np.float32)
    wide = np.concatenate([np.linspace(-30.0, 30.0, 63), [20.5]]).astype(np.float32)
    positive = np.geomspace(0.0101, 9.99, 64).astype(np.float32)
    for name, op, params, x, fn in [
        ("erf", "erf", {}, spread, ops.erf),
        ("gelu/approximate", "gelu", {"approximate": True}, spread, lambda x: ops.gelu(x, approximate=True)),
        ("gelu/exact", "gelu", {"approximate": False}, spread, lambda x: ops.gelu(x, approximate=False)),
        ("silu", "silu", {}, spread, ops.silu),
        ("softplus", "softplus", {}, spread, ops.softplus),
        ("softplus/wide", "softplus", {}, wide, ops.softplus),
        ("leaky_relu", "leaky_relu", {"negative_slope": 0.2}, spread,
         lambda x: ops.leaky_relu(x, negative_slope=0.2)),
        ("elu", "elu", {"alpha": 1.0}, spread, lambda x: ops.elu(x, alpha=1.0)),
        ("rsqrt", "rsqrt", {}, positive, ops.rsqrt),
        ("relu6", "relu6", {}, spread, ops.relu6),
        ("log_sigmoid", "log_sigmoid", {}, spread, ops.log_sigmoid),
    ]:
        rng()  # keeps each case's seed its position
        add(name, op, params, [x], fn)

    # Reductions on 3x4x5.
    for op, f in [("var", ops.var), ("std", ops.std)]:
        for tag, axis, keepdims in [("axis0", 0, False), ("all", [0, 1, 2], False), ("null", None, False),
                                    ("last_keepdims", -1, True)]:
            r = rng()
            add(f"{op}/{tag}", op, {"axis": axis, "keepdims": keepdims}, [normal(r, 3, 4, 5)],
                lambda x, f=f, axis=axis, keepdims=keepdims: f(x, axis=axis, keepdims=keepdims))
    for tag, axes, keepdims in [("axes0", [0], False), ("all", [0, 1, 2], False), ("last_keepdims", [-1], True),
                                ("axes0_2_keepdims", [0, 2], True)]:
        r = rng()
        add(f"moments/{tag}", "moments", {"axes": axes, "keepdims": keepdims}, [normal(r, 3, 4, 5)],
            lambda x, axes=axes, keepdims=keepdims: list(ops.moments(x, axes=axes, keepdims=keepdims)))
    for tag, axis, keepdims, scale in [("axis0", 0, False, 1.0), ("null", None, False, 1.0),
                                       ("last_keepdims", -1, True, 1.0), ("large_axis1", 1, False, 80.0)]:
        r = rng()
        if scale == 1.0:
            x = normal(r, 3, 4, 5)
        else:  # values of magnitude near 80, both signs
            x = (np.sign(r.normal(size=(3, 4, 5))) * r.uniform(70.0, 80.0, size=(3, 4, 5))).astype(np.float32)
        add(f"logsumexp/{tag}", "logsumexp", {"axis": axis, "keepdims": keepdims}, [x],
            lambda x, axis=axis, keepdims=keepdims: ops.logsumexp(x, axis=axis, keepdims=keepdims))
    # Attention ops (appended: the cases above keep their numbers and so their random inputs).
    for op in ["triu", "tril"]:
        for tag, shape, k in [("3x4_k0", (3, 4), 0), ("2x4x3_k1", (2, 4, 3), 1), ("2x3x5_km1", (2, 3, 5), -1)]:
            r = rng()
            add(f"{op}/{tag}", op, {"k": k}, [normal(r, *shape)],
                lambda x, op=op, k=k: getattr(ops, op)(x, k=k))
    # softmax_masked: Keras's Softmax layer called with a bool mask (where(mask, x, -1e9), softmax, then
    # where(mask, p, 0)); the mask is held fixed.
    for tag, shape, mask_shape, axis, full_row in [("same_shape", (2, 3, 5), (2, 3, 5), -1, False),
                                                  ("broadcast_rows", (2, 3, 5), (1, 5), -1, False),
                                                  ("broadcast_4d", (2, 2, 3, 4), (2, 1, 3, 4), -1, True),
                                                  ("axis1", (2, 4, 3), (2, 4, 1), 1, False)]:
        r = rng()
        x = normal(r, *shape) * np.float32(3.0)
        mask = r.uniform(size=mask_shape) < 0.7
        mask.reshape(-1, mask_shape[-1])[0, :] = True
        if full_row:  # one row with no key at all: Keras's Softmax gives zeros there
            mask.reshape(-1, mask_shape[-1])[1, :] = False
        add(f"softmax_masked/{tag}", "softmax_masked", {"axis": axis}, [x, mask],
            lambda x, m, axis=axis: keras.layers.Softmax(axis=axis)(x, mask=m))
    # where with broadcasting: the cotangents of x and y are summed back to their shapes.
    for tag, cs, xs, ys in [("cond_col_x_row", (3, 1), (1, 4), (3, 4)), ("x_full_y_scalar_like", (2, 3, 4), (2, 3, 4), (4,)),
                            ("all_broadcast", (2, 1, 4), (3, 1), (1, 3, 1))]:
        r = rng()
        cond = r.uniform(size=cs) < 0.5
        add(f"where/{tag}", "where", {}, [cond, normal(r, *xs), normal(r, *ys)],
            lambda c, x, y: ops.where(c, x, y))
    return cases


def main():
    import jax
    import keras
    import numpy as np

    def tensor(a):
        a = np.asarray(a)
        if a.dtype == np.float32:
            if not np.all(np.isfinite(a)):
                raise SystemExit("jax_ops: a non-finite value")
            data = [np.float32(v).item() for v in a.ravel()]
        elif a.dtype == np.int32:
            data = [int(v) for v in a.ravel()]
        elif a.dtype == np.bool_:
            data = [bool(v) for v in a.ravel()]
        else:
            raise SystemExit(f"jax_ops: unexpected dtype {a.dtype}")
        return {"shape": list(a.shape), "dtype": str(a.dtype), "data": data}

    out = {"generator": "tools/jax_ops.py", "jax": jax.__version__, "keras": keras.__version__, "cases": []}
    names = set()
    for number, (name, op, params, inputs, fn) in enumerate(build_cases(np)):
        assert name not in names, name
        names.add(name)
        floats = [k for k, x in enumerate(inputs) if x.dtype == np.float32]

        def as_list(y):
            return list(y) if isinstance(y, (list, tuple)) else [y]

        def f(*float_args):
            args = list(inputs)
            for k, a in zip(floats, float_args):
                args[k] = a
            return as_list(fn(*args))

        case = {"name": name, "op": op, "params": params, "inputs": [tensor(x) for x in inputs]}
        if op == "one_hot":
            outputs = f()
            case["outputs"] = [tensor(y) for y in outputs]
        else:
            outputs, pullback = jax.vjp(f, *[inputs[k] for k in floats])
            r = np.random.default_rng(5000 + number)
            cotangents = [r.normal(size=np.shape(y)).astype(np.float32) for y in outputs]
            grads = pullback([jax.numpy.asarray(c) for c in cotangents])
            vjp = [None] * len(inputs)
            for k, g in zip(floats, grads):
                vjp[k] = tensor(g)
            case["outputs"] = [tensor(y) for y in outputs]
            case["cotangents"] = [tensor(c) for c in cotangents]
            case["vjp"] = vjp
        out["cases"].append(case)

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as fh:
        json.dump(out, fh, separators=(",", ":"))
        fh.write("\n")
    print(f"wrote {os.path.relpath(OUT, ROOT)}: {len(out['cases'])} cases, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    ensure_venv(__file__)
    main()
