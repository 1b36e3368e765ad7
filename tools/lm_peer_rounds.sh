#!/usr/bin/env bash
# The lm step beside JAX's, interleaved: each round runs `lm --steps 40` at 1 thread (taskset -c 0) and at 2
# (taskset -c 0,1), each into a fresh run directory, then tools/jax_lm_step.py (the median of 30 jitted steps
# at 1 and 2 threads). Our figure is the mean per committed step, the first steps included and the validation
# at the last step left out. Between the two, tools/two_cores.rs measures what a second thread adds on this
# machine at that moment (independent work on each thread: the ceiling for "2 threads over 1"). The README's lm
# table comes from this script.
#
# Run from the repository root after `cargo build --release --example lm`:
#   bash tools/lm_peer_rounds.sh [ROUNDS]
# The lm binary is $CARGO_TARGET_DIR/release/examples/lm (target/ without CARGO_TARGET_DIR). Neither tests nor
# CI need this.
set -euo pipefail
rounds=${1:-2}
lm="${CARGO_TARGET_DIR:-target}/release/examples/lm"
test -x "$lm" || { echo "no $lm: cargo build --release --example lm" >&2; exit 1; }
run=$(mktemp -d)
trap 'rm -rf "$run"' EXIT
rustc -O -C target-cpu=native tools/two_cores.rs -o "$run/two_cores"
for r in $(seq 1 "$rounds"); do
    for t in 1 2; do
        cpus=$([ "$t" = 1 ] && echo 0 || echo 0,1)
        rm -rf "$run/lm"
        ms=$(taskset -c "$cpus" "$lm" --run "$run/lm" --steps 40 --threads "$t" --eval-every 1000 --sample 10 \
            --replay 1 | sed -n 's/.*: \([0-9.]*\) ms per step.*/\1/p')
        echo "round $r purestate ${t}t: $ms ms"
    done
    "$run/two_cores" | sed "s/^/round $r machine: /"
    python3 tools/jax_lm_step.py --runs 30 | sed "s/^/round $r jax: /"
done
