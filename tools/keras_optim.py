#!/usr/bin/env python3
"""Writes tests/fixtures/keras_optim.json: parameter trajectories of real Keras 3 optimizers (JAX backend).

For each configuration, three float32 variables (`dense/kernel` (2, 3), `dense/bias` (3,), and `scale` (2,),
the last created with overwrite_with_gradient=True in the configurations that say so) start from fixed values
and take six steps of fixed gradients: random normal ones, a zero gradient at step 3 and a large one (x1000)
at step 4. After every step the fixture records each variable's value and each optimizer variable (slots,
iteration, moving averages, gradient accumulators, loss scale) by path. tests/integration/optim.rs replays the
same gradients and compares within 2e-5 relative.

The base optimizer's own state: use_ema (momentum 0.9, with and without ema_overwrite_frequency),
gradient_accumulation_steps (with momentum, a schedule, overwrite_with_gradient, and EMA on top). The
LossScaleOptimizer configurations wrap SGD and Adam with dynamic_growth_steps=2 and take their own gradients
(`"grads"` in the configuration): the shared ones times a power of two (so unscaling is exact), with an
infinity at step 3 and a NaN at step 5. JSON has no inf or NaN, so non-finite numbers are written as the
strings "inf", "-inf" and "nan".

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
# The version the fixture was first written with; its instance names and numbers are what the tests hold.
KERAS = "keras==3.15.1"


def ensure_venv():
    if os.environ.get("PURESTATE_IN_VENV") == "1":
        return
    python = os.path.join(VENV, "bin", "python")
    if not os.path.exists(python):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
        subprocess.check_call([python, "-m", "pip", "install", "-q", KERAS, "jax[cpu]", "numpy"])
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
    # The base optimizer's own state (appended, so that the instance names above stay as they were).
    ("adam_ema", "Adam", {"learning_rate": 0.01, "use_ema": True, "ema_momentum": 0.9}, None),
    ("adam_ema_overwrite", "Adam", {"learning_rate": 0.01, "use_ema": True, "ema_momentum": 0.9, "ema_overwrite_frequency": 3}, None),
    ("sgd_momentum_accumulate", "SGD", {"learning_rate": 0.05, "momentum": 0.9, "gradient_accumulation_steps": 3}, None),
    ("adam_ema_accumulate", "Adam", {"learning_rate": 0.01, "use_ema": True, "ema_momentum": 0.9, "ema_overwrite_frequency": 2, "gradient_accumulation_steps": 2}, None),
    ("adam_accumulate_decay", "Adam", {"gradient_accumulation_steps": 2}, ("ExponentialDecay", {"initial_learning_rate": 0.1, "decay_steps": 2, "decay_rate": 0.5})),
    ("adam_overwrite_accumulate", "Adam", {"learning_rate": 0.01, "gradient_accumulation_steps": 2}, None),
    ("adamw_ema_clipnorm", "AdamW", {"learning_rate": 0.01, "weight_decay": 0.1, "clipnorm": 1.0, "use_ema": True, "ema_momentum": 0.9}, None),
]

# LossScaleOptimizer around an inner optimizer: (name, inner class, inner kwargs, LossScaleOptimizer kwargs,
# gradient multiplier).
LOSS_SCALE_CONFIGS = [
    ("loss_scale_sgd", "SGD", {"learning_rate": 0.1, "momentum": 0.9}, {"initial_scale": 16.0, "dynamic_growth_steps": 2}, 16.0),
    ("loss_scale_adam", "Adam", {"learning_rate": 0.01}, {"dynamic_growth_steps": 2}, 2.0**15),
    ("loss_scale_adam_ema_accumulate", "Adam", {"learning_rate": 0.01, "use_ema": True, "ema_momentum": 0.9, "gradient_accumulation_steps": 2}, {"initial_scale": 4.0, "dynamic_growth_steps": 2}, 4.0),
]

OVERWRITE_WITH_GRADIENT = {"adam_overwrite", "adam_overwrite_accumulate"}


def encode(x):
    """A nested list of floats with the non-finite ones as strings (JSON has no inf or NaN)."""
    if isinstance(x, list):
        return [encode(v) for v in x]
    if x != x:
        return "nan"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    return x


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

    def loss_scale_grads(multiplier):
        """The shared gradients times `multiplier`, an infinity at step 3 and a NaN at step 5."""
        scaled = [{k: (v * multiplier).astype("float32") for k, v in g.items()} for g in grads]
        scaled[2]["dense/kernel"][0, 1] = np.inf
        scaled[4]["dense/bias"][1] = np.nan
        return scaled

    def run(opt, variables, config_grads, stateless=False):
        opt.build(variables)
        steps = []
        for g in config_grads:
            grads_of = [keras.ops.convert_to_tensor(g[v.path]) for v in variables]
            if stateless:
                # As Keras's JAX trainer steps (LossScaleOptimizer's stateful apply cannot run eagerly on JAX).
                new_params, new_opt = opt.stateless_apply(
                    [v.value for v in opt.variables], grads_of, [v.value for v in variables]
                )
                for v, value in zip(variables, new_params):
                    v.assign(value)
                for v, value in zip(opt.variables, new_opt):
                    v.assign(value)
            else:
                opt.apply_gradients(list(zip(grads_of, variables)))
            steps.append({
                "params": {v.path: encode(np.asarray(v.numpy()).tolist()) for v in variables},
                "optimizer": {v.path: encode(np.asarray(v.numpy()).tolist()) for v in opt.variables},
            })
        return steps

    def make_variables(overwrite):
        with keras.name_scope("dense"):
            kernel = keras.Variable(init["dense/kernel"], name="kernel")
            bias = keras.Variable(init["dense/bias"], name="bias")
        scale = keras.Variable(init["scale"], name="scale")
        if overwrite:
            scale.overwrite_with_gradient = True
        return [kernel, bias, scale]

    out = {"keras_version": keras.__version__, "initial": {k: v.tolist() for k, v in init.items()}, "configs": []}
    for name, cls, kwargs, schedule in CONFIGS:
        variables = make_variables(name in OVERWRITE_WITH_GRADIENT)
        args = dict(kwargs)
        if schedule is not None:
            args["learning_rate"] = getattr(keras.optimizers.schedules, schedule[0])(**schedule[1])
        opt = getattr(keras.optimizers, cls)(**args)
        steps = run(opt, variables, grads)
        out["configs"].append({
            "name": name,
            "optimizer": cls,
            "kwargs": kwargs,
            "schedule": None if schedule is None else {"class": schedule[0], "config": schedule[1]},
            "overwrite_with_gradient": ["scale"] if name in OVERWRITE_WITH_GRADIENT else [],
            "optimizer_variables": [v.path for v in opt.variables],
            "steps": steps,
        })
    for name, cls, kwargs, loss_scale, multiplier in LOSS_SCALE_CONFIGS:
        variables = make_variables(False)
        inner = getattr(keras.optimizers, cls)(**kwargs)
        opt = keras.optimizers.LossScaleOptimizer(inner, **loss_scale)
        config_grads = loss_scale_grads(multiplier)
        steps = run(opt, variables, config_grads, stateless=True)
        out["configs"].append({
            "name": name,
            "optimizer": cls,
            "kwargs": kwargs,
            "schedule": None,
            "loss_scale": loss_scale,
            "overwrite_with_gradient": [],
            "optimizer_variables": [v.path for v in opt.variables],
            "grads": [{k: encode(v.tolist()) for k, v in g.items()} for g in config_grads],
            "steps": steps,
        })
    out["grads"] = [{k: v.tolist() for k, v in g.items()} for g in grads]
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1, allow_nan=False)
    print(f"wrote {OUT}: {len(out['configs'])} configurations")


if __name__ == "__main__":
    ensure_venv()
    main()
