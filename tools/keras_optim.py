#!/usr/bin/env python3
"""Writes tests/fixtures/keras_optim.json: parameter trajectories of real Keras 3 optimizers (JAX backend).

For each configuration, three float32 variables (`dense/kernel` (2, 3), `dense/bias` (3,), and `scale` (2,),
the last created with overwrite_with_gradient=True in the configurations that say so) start from fixed values
and take six steps of fixed gradients: random normal ones, a zero gradient at step 3 and a large one (x1000)
at step 4. After every step the fixture records each variable's value and each optimizer variable (slots,
iteration) by path. tests/integration/optim.rs replays the same gradients and compares within 2e-5 relative.

Usage: python3 tools/keras_optim.py   (creates a venv under tools/.venv-keras if needed; needs PyPI)
"""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VENV = os.path.join(HERE, ".venv-keras")
OUT = os.path.join(ROOT, "tests", "fixtures", "keras_optim.json")


def ensure_venv():
    if os.environ.get("PURESTATE_IN_VENV") == "1":
        return
    python = os.path.join(VENV, "bin", "python")
    if not os.path.exists(python):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
        subprocess.check_call([python, "-m", "pip", "install", "-q", "keras", "jax[cpu]", "numpy"])
    env = dict(os.environ, PURESTATE_IN_VENV="1", KERAS_BACKEND="jax")
    sys.exit(subprocess.call([python, __file__] + sys.argv[1:], env=env))


CONFIGS = [
    ("sgd", "SGD", {}, None),
    ("sgd_momentum", "SGD", {"learning_rate": 0.05, "momentum": 0.9}, None),
    ("sgd_nesterov", "SGD", {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True}, None),
    ("sgd_weight_decay", "SGD", {"learning_rate": 0.1, "weight_decay": 0.01}, None),
    ("sgd_global_clipnorm", "SGD", {"learning_rate": 0.1, "global_clipnorm": 1.0}, None),
    ("sgd_piecewise", "SGD", {}, ("PiecewiseConstantDecay", {"boundaries": [2, 4], "values": [0.1, 0.05, 0.01]})),
    ("adam", "Adam", {}, None),
    ("adam_amsgrad", "Adam", {"learning_rate": 0.01, "amsgrad": True}, None),
    ("adam_clipnorm", "Adam", {"learning_rate": 0.01, "clipnorm": 1.0}, None),
    ("adam_clipvalue", "Adam", {"learning_rate": 0.01, "clipvalue": 0.5}, None),
    ("adam_exponential_decay", "Adam", {}, ("ExponentialDecay", {"initial_learning_rate": 0.1, "decay_steps": 2, "decay_rate": 0.5})),
    ("adam_exponential_staircase", "Adam", {}, ("ExponentialDecay", {"initial_learning_rate": 0.1, "decay_steps": 2, "decay_rate": 0.5, "staircase": True})),
    ("adam_cosine", "Adam", {}, ("CosineDecay", {"initial_learning_rate": 0.1, "decay_steps": 5, "alpha": 0.1})),
    ("adam_overwrite", "Adam", {"learning_rate": 0.01}, None),
    ("adamw", "AdamW", {}, None),
    ("adamw_amsgrad", "AdamW", {"learning_rate": 0.01, "weight_decay": 0.1, "amsgrad": True}, None),
    ("rmsprop", "RMSprop", {}, None),
    ("rmsprop_centered_momentum", "RMSprop", {"learning_rate": 0.01, "rho": 0.8, "momentum": 0.5, "centered": True}, None),
    ("adagrad", "Adagrad", {}, None),
    ("adagrad_lr", "Adagrad", {"learning_rate": 0.1, "initial_accumulator_value": 0.5}, None),
]


def main():
    import keras
    import numpy as np

    rng = np.random.default_rng(1234)
    init = {
        "dense/kernel": rng.normal(size=(2, 3)).astype("float32"),
        "dense/bias": rng.normal(size=(3,)).astype("float32"),
        "scale": rng.normal(size=(2,)).astype("float32"),
    }
    grads = []
    for step in range(6):
        g = {k: rng.normal(size=v.shape).astype("float32") for k, v in init.items()}
        if step == 2:
            g = {k: np.zeros_like(v) for k, v in g.items()}
        if step == 3:
            g = {k: (v * 1000).astype("float32") for k, v in g.items()}
        grads.append(g)

    out = {"keras_version": keras.__version__, "initial": {k: v.tolist() for k, v in init.items()}, "configs": []}
    for name, cls, kwargs, schedule in CONFIGS:
        with keras.name_scope("dense"):
            kernel = keras.Variable(init["dense/kernel"], name="kernel")
            bias = keras.Variable(init["dense/bias"], name="bias")
        scale = keras.Variable(init["scale"], name="scale")
        if name == "adam_overwrite":
            scale.overwrite_with_gradient = True
        variables = [kernel, bias, scale]
        args = dict(kwargs)
        if schedule is not None:
            args["learning_rate"] = getattr(keras.optimizers.schedules, schedule[0])(**schedule[1])
        opt = getattr(keras.optimizers, cls)(**args)
        opt.build(variables)
        steps = []
        for g in grads:
            opt.apply_gradients([(keras.ops.convert_to_tensor(g[v.path]), v) for v in variables])
            steps.append({
                "params": {v.path: np.asarray(v.numpy()).tolist() for v in variables},
                "optimizer": {v.path: np.asarray(v.numpy()).tolist() for v in opt.variables},
            })
        out["configs"].append({
            "name": name,
            "optimizer": cls,
            "kwargs": kwargs,
            "schedule": None if schedule is None else {"class": schedule[0], "config": schedule[1]},
            "overwrite_with_gradient": ["scale"] if name == "adam_overwrite" else [],
            "optimizer_variables": [v.path for v in opt.variables],
            "steps": steps,
        })
    out["grads"] = [{k: v.tolist() for k, v in g.items()} for g in grads]
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {OUT}: {len(out['configs'])} configurations")


if __name__ == "__main__":
    ensure_venv()
    main()
