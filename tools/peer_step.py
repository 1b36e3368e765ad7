"""purestate's training step beside JAX's: `cargo bench --bench grad` and tools/jax_step.py, interleaved.

Each round runs `cargo bench --bench grad -- --warm-up-time 1 --measurement-time 3 step/` (criterion's median
estimate of every `step/<mlp>/<variant>/<n>t`, read from target/criterion/**/new/estimates.json), then
tools/jax_step.py (each thread count in its own process under taskset). After the rounds it prints one table:
for each model (the two MLPs and the CNN `cnn-8x8-32-64`) and thread count, the median over the rounds of
purestate's tape step on an owned state, of the same step committed through a `Trainer` (keep_last(2)), and of
JAX's jitted step, and the ratios to JAX (each the median over the rounds of that round's ratio, so that both
sides of a ratio ran minutes apart at most). After each round tools/two_cores.rs (built with rustc) measures what
a second thread adds on this machine at that moment, the baseline for the "2 threads over 1" figures.
A model or variant that criterion did not report (e.g. `step/cnn-8x8-32-64/tape/1t` before that benchmark
exists) is shown as "n/a".

The venv (tools/.venv, ignored by git) is made on first use from tools/requirements-peer.txt. Neither tests nor
CI need any of this.

Run from the repository root: python3 tools/peer_step.py [--rounds 3] [--runs 50] [--only step/cnn]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, "tools", ".venv")
PYTHON = os.path.join(VENV, "bin", "python")
# cargo's target directory (CARGO_TARGET_DIR when set), where criterion writes its estimates.
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
REQUIREMENTS = os.path.join(ROOT, "tools", "requirements-peer.txt")
BENCH = ["cargo", "bench", "--bench", "grad", "--", "--warm-up-time", "1", "--measurement-time", "3", "step/"]
# (criterion variant, column title)
VARIANTS = [("tape", "purestate"), ("tape_committed", "purestate committed")]


def ensure_venv():
    if os.path.exists(PYTHON):
        return
    print(f"making {VENV} from {REQUIREMENTS}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    subprocess.run([PYTHON, "-m", "pip", "install", "-q", "-r", REQUIREMENTS], check=True)


def criterion_medians(since):
    """{full benchmark id: median seconds} of the `step/` benchmarks criterion wrote after `since`."""
    medians = {}
    for dirpath, _, files in os.walk(os.path.join(TARGET, "criterion")):
        if os.path.basename(dirpath) != "new" or "estimates.json" not in files or "benchmark.json" not in files:
            continue
        estimates = os.path.join(dirpath, "estimates.json")
        if os.path.getmtime(estimates) < since:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            full_id = json.load(f)["full_id"]
        if full_id.startswith("step/"):
            with open(estimates) as f:
                medians[full_id] = json.load(f)["median"]["point_estimate"] * 1e-9
    return medians


def build_two_cores(directory):
    """tools/two_cores.rs compiled into `directory`; returns the executable's path."""
    exe = os.path.join(directory, "two_cores")
    subprocess.run(["rustc", "-O", "-C", "target-cpu=native", os.path.join(ROOT, "tools", "two_cores.rs"), "-o", exe],
                   check=True)
    return exe


def run_round(runs, only):
    """One round: purestate's benchmarks, then JAX's. Returns ({bench id: s}, [jax reports])."""
    start = time.time()
    bench = subprocess.run(BENCH[:-1] + [only], cwd=ROOT, capture_output=True, text=True)
    if bench.returncode != 0:
        sys.stderr.write(bench.stderr)
        raise SystemExit(f"peer_step: cargo bench failed ({bench.returncode})")
    ours = criterion_medians(start)
    if not ours:
        raise SystemExit("peer_step: criterion wrote no step/ estimates")
    done = subprocess.run([PYTHON, os.path.join(ROOT, "tools", "jax_step.py"), "--json", "--runs", str(runs)],
                          cwd=ROOT, check=True, capture_output=True, text=True)
    return ours, json.loads(done.stdout.strip().splitlines()[-1])


def fmt(seconds):
    return f"{seconds * 1e3:.1f} ms" if seconds >= 1e-2 else f"{seconds * 1e3:.3f} ms"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=50, help="timed JAX steps per model and thread count")
    parser.add_argument("--only", default="step/", help="criterion filter of our side, e.g. step/cnn (JAX runs all)")
    args = parser.parse_args()
    ensure_venv()

    rows = {}  # (mlp, batch, threads) -> {"jax": [...], variant: [...], variant + "/ratio": [...]}
    jax_version = None
    probe_dir = tempfile.mkdtemp()
    two_cores = build_two_cores(probe_dir)
    machine = []  # two_cores's line after each round
    for k in range(args.rounds):
        print(f"round {k + 1}/{args.rounds}", file=sys.stderr)
        ours, reports = run_round(args.runs, args.only)
        machine.append(subprocess.run([two_cores], check=True, capture_output=True, text=True).stdout.strip())
        for report in reports:
            jax_version = report["jax"]
            threads = report["threads"]
            for r in report["results"]:
                if not f"step/{r['mlp']}/".startswith(args.only) and not args.only.startswith(f"step/{r['mlp']}"):
                    continue
                row = rows.setdefault((r["mlp"], r["batch"], threads), {})
                row.setdefault("jax", []).append(r["median_s"])
                row.setdefault("jax_cpu", []).append(r["cpu_per_wall"])
                for variant, _ in VARIANTS:
                    ours_s = ours.get(f"step/{r['mlp']}/{variant}/{threads}t")
                    if ours_s is None:
                        continue
                    row.setdefault(variant, []).append(ours_s)
                    row.setdefault(variant + "/ratio", []).append(ours_s / r["median_s"])

    print(f"purestate `{' '.join(BENCH[:-1] + [args.only])}` vs JAX {jax_version} jit (tools/jax_step.py --runs {args.runs}); "
          f"medians of {args.rounds} interleaved rounds")
    print()
    head = ["model, batch", "threads"] + [t for _, t in VARIANTS[:1]] + ["JAX jit", "purestate / JAX"]
    head += [VARIANTS[1][1], "committed / JAX"]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    med = statistics.median

    def cell(row, key, show):
        return show(med(row[key])) if row.get(key) else "n/a"

    def ratio(x):
        return f"{x:.2f}x"

    # The MLPs as before (the larger first), then the CNN.
    order = sorted(rows.items(), key=lambda kv: (kv[0][0].startswith("cnn"), -len(kv[0][0]), kv[0][2]))
    for (mlp, batch, threads), row in order:
        cells = [f"{mlp}, {batch}", str(threads)]
        tape, committed = VARIANTS[0][0], VARIANTS[1][0]
        cells += [cell(row, tape, fmt), cell(row, "jax", fmt), cell(row, tape + "/ratio", ratio)]
        cells += [cell(row, committed, fmt), cell(row, committed + "/ratio", ratio)]
        print("| " + " | ".join(cells) + " |")
    print()
    print("per round: purestate tape / JAX in ms (JAX's CPU seconds per wall-clock second)")
    for (mlp, batch, threads), row in sorted(rows.items()):
        if not row.get(VARIANTS[0][0]):
            pairs = ", ".join(f"n/a/{b * 1e3:.3f} ({c:.2f})" for b, c in zip(row["jax"], row["jax_cpu"]))
            print(f"  {mlp} {threads}t: {pairs}")
            continue
        pairs = ", ".join(f"{a * 1e3:.3f}/{b * 1e3:.3f} ({c:.2f})"
                          for a, b, c in zip(row[VARIANTS[0][0]], row["jax"], row["jax_cpu"]))
        print(f"  {mlp} {threads}t: {pairs}")
    print()
    print("this machine after each round (tools/two_cores.rs):")
    for k, line in enumerate(machine):
        print(f"  round {k + 1}: {line}")
    shutil.rmtree(probe_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
