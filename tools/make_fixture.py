#!/usr/bin/env python3
"""Makes and checks purestate's Python interop fixtures in tests/data/.

Python -> Rust: writes tests/data/python_fixture.safetensors with `safetensors.numpy.save_file` (plain
tensors, no metadata: bfloat16, bool, int64, a 0-d and a 3-d tensor among others) and records every tensor's
dtype, shape and values (floats also as bit patterns) in tests/data/fixtures.json. The Rust test
`python_fixture_loads_with_default_specs_in_name_order` loads the file and compares.

Rust -> Python: loads tests/data/rust_fixture.safetensors, written by purestate's `checkpoint::save`
(regenerate it with `PURESTATE_BLESS=1 cargo test rust_fixture` before running this script), with
`safetensors.numpy.load_file`, asserts its tensors hold the values stated below, that its `purestate` metadata
has the expected specs in creation order, and that an independent Python implementation of the fingerprint
(XXH3-128 over path, dtype, shape and 64 KiB chunks of the bytes) matches the one recorded. It writes what it read, the file's
sha256 and `"rust_file_loaded_in_python": true` into fixtures.json; the Rust test
`rust_fixture_is_the_file_python_verified` checks that the committed file is that file and that `save` still
writes it byte for byte.

Usage: python3 tools/make_fixture.py
The first run creates a virtual environment in target/fixture-venv and installs the pinned packages from PyPI.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
VENV = ROOT / "target" / "fixture-venv"
REQUIREMENTS = ["safetensors==0.8.0", "numpy==2.4.6", "ml_dtypes==0.6.0", "xxhash==3.6.0"]
IN_VENV = "PURESTATE_FIXTURE_VENV"


def reexec_in_venv():
    """Runs this script again with the venv's Python, creating the venv first if needed."""
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *REQUIREMENTS], check=True)
    env = dict(os.environ, **{IN_VENV: "1"})
    os.execve(str(python), [str(python), str(Path(__file__).resolve())], env)


if os.environ.get(IN_VENV) != "1":
    reexec_in_venv()

import ml_dtypes  # noqa: E402  (registers bfloat16 with numpy: import before touching a bfloat16 tensor)
import numpy as np  # noqa: E402
import safetensors  # noqa: E402
import xxhash  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

BF16 = ml_dtypes.bfloat16

# Python -> Rust: the tensors of python_fixture.safetensors. Names are variable paths; `layer.0.weight` is a
# PyTorch-style name without a scope.
PYTHON_TENSORS = {
    "dense/kernel": np.array([[0.25, -1.5], [3.0, 1e-3], [-2.0, 7.75]], dtype=np.float32),
    "dense/bias": np.array([0.5, -0.125], dtype=np.float16),
    "embedding": np.array([[1.0, 2.5, -3.0], [0.0078125, -0.0, 1e20]], dtype=BF16),
    "mask": np.array([True, False, True, True, False]),
    "global_step": np.array(2**62 + 1, dtype=np.int64),
    "block/conv/weights": np.arange(-6, 6, dtype=np.int16).reshape(2, 2, 3),
    "layer.0.weight": np.array([0, 7, 255], dtype=np.uint8),
    "stats/count": np.array([2**64 - 1], dtype=np.uint64),
    "stats/mean": np.array([np.pi], dtype=np.float64),
}

# Rust -> Python: what rust_fixture_store() in tests/integration/checkpoint.rs holds, in creation order.
RUST_EXPECTED = {
    "dense/kernel": ("float32", [[1.5, 3.5, 5.5], [2.5, 4.5, -6.5]]),
    "dense/bias": ("float16", [0.5, -1.25, 65504.0]),
    "dense/scale": ("float64", [0.1, -1e-300, 1e300]),
    "embed/table": ("bfloat16", [[1.0, -2.0], [0.15625, 2.0**100]]),
    "flags/mask": ("bool", [True, False, False, True]),
    "step": ("int64", -9007199254740993),
    "ints/i8": ("int8", [-128, -1, 0, 127]),
    "ints/i16": ("int16", [-32768, 2, 32767]),
    "ints/i32": ("int32", [[-(2**31), 0], [1, 2**31 - 1]]),
    "uints/u8": ("uint8", [[[0, 1], [2, 3]], [[252, 253], [254, 255]]]),
    "uints/u16": ("uint16", [0, 2**16 - 1]),
    "uints/u32": ("uint32", [0, 2**32 - 1]),
    "uints/u64": ("uint64", [0, 2**64 - 1]),
}
# Spec fields the Rust fixture sets off their defaults.
RUST_SPECS = {
    "dense/bias": {"aggregation": "mean"},
    "flags/mask": {"autocast": False, "synchronization": "on_read"},
    "step": {"trainable": False},
    "uints/u64": {"overwrite_with_gradient": True},
}
SPEC_DEFAULTS = {
    "trainable": True,
    "autocast": True,
    "aggregation": "none",
    "synchronization": "auto",
    "overwrite_with_gradient": False,
    "constraint": None,
    "regularizer": None,
}


def dtype_name(array):
    """The Keras dtype name of a numpy array (`bool`, `int64`, `bfloat16`, ...)."""
    return "bool" if array.dtype == np.bool_ else str(array.dtype)


def describe(array):
    """dtype, shape and row-major values; floats also as their bit patterns, so Rust compares exactly."""
    entry = {"dtype": dtype_name(array), "shape": list(array.shape)}
    flat = array.reshape(-1)
    if array.dtype.kind == "f" or array.dtype == BF16:
        entry["values"] = flat.astype(np.float64).tolist()
        entry["bits"] = flat.view(f"uint{8 * array.dtype.itemsize}").tolist()
    else:
        entry["values"] = flat.tolist()
    return entry


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


CHUNK_BYTES = 1 << 16


def fingerprint(tensors_in_creation_order):
    """purestate's Fingerprint, reimplemented (src/store/fingerprint.rs, format 2): each variable's digest is
    the XXH3-128 of its length-prefixed path, dtype name, dims and byte count followed by the XXH3-128 (16 bytes,
    little-endian) of each 64 KiB chunk of its little-endian row-major bytes; the fingerprint is the XXH3-128 of
    a domain tag, the wrapping (mod 2**128) sum of the digests, and the count."""
    u64 = lambda n: int(n).to_bytes(8, "little")  # noqa: E731
    total = 0
    for path, array in tensors_in_creation_order:
        h = xxhash.xxh3_128()
        data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        name = dtype_name(array).encode()
        h.update(u64(len(path.encode())) + path.encode())
        h.update(u64(len(name)) + name)
        h.update(u64(array.ndim) + b"".join(u64(d) for d in array.shape))
        h.update(u64(len(data)))
        for start in range(0, len(data), CHUNK_BYTES):
            h.update(xxhash.xxh3_128_intdigest(data[start : start + CHUNK_BYTES]).to_bytes(16, "little"))
        total = (total + h.intdigest()) % (1 << 128)
    h = xxhash.xxh3_128()
    h.update(b"purestate-fingerprint-v2" + total.to_bytes(16, "little") + u64(len(tensors_in_creation_order)))
    return f"{h.intdigest():032x}"


def make_python_fixture():
    path = DATA / "python_fixture.safetensors"
    save_file(PYTHON_TENSORS, str(path))
    loaded = load_file(str(path))
    for name, array in PYTHON_TENSORS.items():
        assert loaded[name].dtype == array.dtype and np.array_equal(loaded[name], array), name
    return {
        "file": path.name,
        "sha256": sha256(path),
        "written_by": "safetensors.numpy.save_file, no metadata",
        "tensors": {name: describe(array) for name, array in PYTHON_TENSORS.items()},
    }


def check_rust_fixture():
    path = DATA / "rust_fixture.safetensors"
    loaded = load_file(str(path))
    assert sorted(loaded) == sorted(RUST_EXPECTED), sorted(loaded)
    for name, (dtype, values) in RUST_EXPECTED.items():
        array = loaded[name]
        expected = np.array(values, dtype=BF16 if dtype == "bfloat16" else dtype)
        assert dtype_name(array) == dtype, (name, array.dtype)
        assert array.shape == expected.shape, (name, array.shape)
        assert array.tobytes() == expected.tobytes(), (name, array, expected)

    with safe_open(str(path), framework="np") as f:
        header = json.loads(f.metadata()["purestate"])
    assert header["format"] == "purestate.checkpoint" and header["format_version"] == 2, header
    assert header["floatx"] == "float64" and header["seed"] == [0, 42] and header["base_version"] == 1, header
    records = header["variables"]
    assert [r["path"] for r in records] == list(RUST_EXPECTED), "creation order"
    for record in records:
        array = loaded[record["path"]]
        assert record["dtype"] == dtype_name(array) and record["shape"] == list(array.shape), record
        assert record["name"] == record["path"].rsplit("/", 1)[-1], record
        for field, default in SPEC_DEFAULTS.items():
            assert record[field] == RUST_SPECS.get(record["path"], {}).get(field, default), (record, field)
    recomputed = fingerprint([(p, loaded[p]) for p in RUST_EXPECTED])
    assert recomputed == header["fingerprint"], (recomputed, header["fingerprint"])

    return {
        "file": path.name,
        "sha256": sha256(path),
        "rust_file_loaded_in_python": True,
        "fingerprint": header["fingerprint"],
        "fingerprint_recomputed_in_python": recomputed,
        "creation_order": [r["path"] for r in records],
        "tensors": {name: describe(loaded[name]) for name in RUST_EXPECTED},
    }


def main():
    fixtures = {
        "generated_by": "tools/make_fixture.py",
        "versions": {
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "safetensors": safetensors.__version__,
            "ml_dtypes": ml_dtypes.__version__,
            "xxhash": xxhash.VERSION,
        },
        "python_fixture": make_python_fixture(),
        "rust_fixture": check_rust_fixture(),
    }
    out = DATA / "fixtures.json"
    out.write_text(json.dumps(fixtures, indent=1) + "\n")
    print(f"wrote {DATA / 'python_fixture.safetensors'} and {out}; the Rust fixture loads in Python")


if __name__ == "__main__":
    main()
