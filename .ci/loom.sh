#!/usr/bin/env bash
# Runs every loom model (tests/loom_*.rs in core, pool and metrics, and the
# facade's dial-sharing models in async-facade/src/dial_share.rs).
# Release mode with debug assertions, small preemption bound, own target dir
# so the cfg(loom) build never mixes with the normal one.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="--cfg loom --cfg crossbeam_loom -C debug-assertions"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
for crate in core pool metrics; do
  pkg=$(sed -n 's/^name = "\(.*\)"/\1/p' "$crate/Cargo.toml" | head -1)
  tests=$(ls "$crate"/tests/loom_*.rs 2>/dev/null | xargs -rn1 basename | sed 's/\.rs$//')
  if [ -z "$tests" ]; then echo "loom: no models in $crate yet"; continue; fi
  args=(); for t in $tests; do args+=(--test "$t"); done
  echo "loom: $pkg: $tests"
  cargo test --release --target-dir target/loom -p "$pkg" "${args[@]}" -- --test-threads=2
done
# The facade: under --cfg loom it builds only its tokio-free dial-sharing
# protocol, whose models are unit tests (src/dial_share.rs).
echo "loom: connmgr: dial_share (lib)"
cargo test --release --target-dir target/loom -p connmgr --lib -- --test-threads=2
