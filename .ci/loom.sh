#!/usr/bin/env bash
# Runs every loom model: tests/loom_*.rs in core, pool and metrics, and the
# facade's tokio-free models (unit tests of async-facade/src, the only part
# of the facade that builds under --cfg loom).
#
# Release mode with debug assertions, in its own target dir so the cfg(loom)
# build never mixes with the normal one. Every model runs at
# LOOM_MAX_PREEMPTIONS (default 2), except the models listed in SLOW below,
# which run at LOOM_SLOW_PREEMPTIONS (default 1) so the lane fits CI's time.
# `.ci/loom-deep.sh` runs everything at 3.
#
#   LOOM_MAX_PREEMPTIONS=3 LOOM_SLOW_PREEMPTIONS=3 bash .ci/loom.sh   # deep
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg loom --cfg crossbeam_loom -C debug-assertions"
bound="${LOOM_MAX_PREEMPTIONS:-2}"
slow_bound="${LOOM_SLOW_PREEMPTIONS:-1}"

# Models that take over about 20 s each at bound 2 on a 2-core machine
# (seconds at bound 1): package/test/model. (connmgr-core's
# remove_vs_insert_vs_get: 106 s at bound 2, 5 s at bound 1.)
SLOW=(
  connmgr-core/loom_table/remove_vs_insert_vs_get
  connmgr-pool/loom_pool/reap_vs_take_vs_put
  connmgr-pool/loom_pool/take_vs_take_vs_put_never_hands_out_twice
)

run() { # package, test selector args..., -- test args...
  local pkg=$1; shift
  cargo test --release --target-dir target/loom -p "$pkg" "$@"
}

slow_for() { # package, test: prints that test's slow models
  local m; for m in "${SLOW[@]}"; do
    case "$m" in "$1/$2/"*) echo "${m##*/}" ;; esac
  done
}

for crate in core pool metrics; do
  pkg=$(sed -n 's/^name = "\(.*\)"/\1/p' "$crate/Cargo.toml" | head -1)
  for t in $(ls "$crate"/tests/loom_*.rs 2>/dev/null | xargs -rn1 basename | sed 's/\.rs$//'); do
    slow=$(slow_for "$pkg" "$t")
    skips=(); for m in $slow; do skips+=(--skip "$m"); done
    echo "loom: $pkg $t (bound $bound)"
    LOOM_MAX_PREEMPTIONS=$bound run "$pkg" --test "$t" -- --test-threads=2 "${skips[@]}"
    for m in $slow; do
      echo "loom: $pkg $t $m (slow model: bound $slow_bound)"
      LOOM_MAX_PREEMPTIONS=$slow_bound run "$pkg" --test "$t" -- --exact "$m"
    done
  done
done
echo "loom: connmgr lib (bound $bound)"
LOOM_MAX_PREEMPTIONS=$bound run connmgr --lib -- --test-threads=2
