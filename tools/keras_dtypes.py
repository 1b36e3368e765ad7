#!/usr/bin/env python3
"""Writes tests/fixtures/result_type.json: Keras 3's `keras.backend.result_type` for every pair of the 13
purestate dtypes, and for each dtype with a Python `int` and `float` (both orders), under floatx float16,
float32 and float64, on the JAX backend.

Each case records two answers:
  "keras":   what `keras.backend.result_type` returns on the JAX backend, which narrows every 64-bit result
             to 32 bits (`BIT64_TO_BIT32_DTYPE` in keras/src/backend/common/dtypes.py: float64 -> float32,
             int64 -> int32, uint64 -> uint32), because JAX runs with 64-bit types off by default;
  "lattice": the same call with that narrowing table emptied, i.e. Keras's promotion lattice
             (`_lattice_result_type`) before the final narrowing step.
purestate has real 64-bit types and follows "lattice"; tests/integration/ops.rs checks both: ours equals
"lattice", and ours narrowed with Keras's table equals "keras".

Usage: python3 tools/keras_dtypes.py            (creates .venv-keras beside this script if needed)
"""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VENV = os.path.join(HERE, ".venv-keras")
OUT = os.path.join(ROOT, "tests", "fixtures", "result_type.json")

DTYPES = [
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "bfloat16", "float32", "float64",
]


def ensure_venv():
    """Re-runs this script inside a venv that has keras and jax[cpu]."""
    if os.environ.get("PURESTATE_KERAS_VENV") == "1":
        return
    python = os.path.join(VENV, "bin", "python")
    if not os.path.exists(python):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
        subprocess.check_call([python, "-m", "pip", "install", "-q", "keras", "jax[cpu]"])
    env = dict(os.environ, PURESTATE_KERAS_VENV="1", KERAS_BACKEND="jax")
    sys.exit(subprocess.call([python, os.path.abspath(__file__)], env=env))


def main():
    ensure_venv()
    import keras
    from keras.src.backend.common import dtypes as kd

    assert keras.backend.backend() == "jax", keras.backend.backend()
    narrowing = dict(kd.BIT64_TO_BIT32_DTYPE)

    def both(*args):
        keras_answer = keras.backend.result_type(*args)
        saved = kd.BIT64_TO_BIT32_DTYPE
        kd.BIT64_TO_BIT32_DTYPE = {}
        try:
            lattice = keras.backend.result_type(*args)
        finally:
            kd.BIT64_TO_BIT32_DTYPE = saved
        return keras_answer, lattice

    def name(arg):
        return {int: "int", float: "float"}.get(arg, arg)

    cases = []
    for floatx in ["float16", "float32", "float64"]:
        keras.config.set_floatx(floatx)
        operands = [[a, b] for a in DTYPES for b in DTYPES]
        operands += [[d, w] for d in DTYPES for w in (int, float)]
        operands += [[w, d] for d in DTYPES for w in (int, float)]
        operands += [[d] for d in DTYPES]
        operands += [[int], [float], [int, float], [int, int], [float, float]]
        for args in operands:
            keras_answer, lattice = both(*args)
            cases.append(
                {"floatx": floatx, "operands": [name(a) for a in args], "keras": keras_answer, "lattice": lattice}
            )
    keras.config.set_floatx("float32")
    fixture = {
        "keras_version": keras.__version__,
        "backend": "jax",
        "narrowing": narrowing,
        "cases": cases,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    # One case per line keeps the fixture short and its diffs readable.
    header = {k: v for k, v in fixture.items() if k != "cases"}
    with open(OUT, "w") as f:
        f.write(json.dumps(header)[:-1] + ', "cases": [\n')
        f.write(",\n".join(json.dumps(c) for c in cases))
        f.write("\n]}\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
