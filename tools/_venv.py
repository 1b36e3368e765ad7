"""The venv the fixture scripts run in: tools/.venv, made from tools/requirements-peer.txt on first use."""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(HERE, ".venv")
REQUIREMENTS = os.path.join(HERE, "requirements-peer.txt")


def ensure_venv(script):
    """Re-runs `script` in tools/.venv (made on first use) with KERAS_BACKEND=jax on the CPU, unless already there."""
    if os.environ.get("PURESTATE_IN_VENV") == "1":
        return
    python = os.path.join(VENV, "bin", "python")
    if not os.path.exists(python):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
        subprocess.check_call([python, "-m", "pip", "install", "-q", "-r", REQUIREMENTS])
    env = dict(os.environ, PURESTATE_IN_VENV="1", KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    sys.exit(subprocess.call([python, os.path.abspath(script)] + sys.argv[1:], env=env))
