#!/usr/bin/env bash
# Best-effort Miri lane (tree borrows) over the crates with unsafe code.
# Prints SKIPPED loudly and exits 0 when nightly or Miri cannot be had.
set -uo pipefail
cd "$(dirname "$0")/.."
skip() { echo; echo "!!!!!!!! SKIPPED: Miri lane: $* !!!!!!!!"; echo; exit 0; }
command -v rustup >/dev/null || skip "no rustup"
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal >/dev/null 2>&1 || skip "no nightly toolchain"
if ! cargo +nightly miri --version >/dev/null 2>&1; then
  rustup component add --toolchain nightly miri rust-src >/dev/null 2>&1 || skip "could not install miri"
fi
cargo +nightly miri setup >/dev/null 2>&1 || skip "miri setup failed (no sysroot)"
# Isolation off: proptest looks up its working directory for failure
# persistence, and `Instant::now` then reads the real clock.
export MIRIFLAGS="-Zmiri-tree-borrows -Zmiri-ignore-leaks -Zmiri-disable-isolation"
status=0
for pkg in ${MIRI_PACKAGES:-connmgr-core connmgr-pool}; do
  echo "miri: $pkg (lib + integration tests; tests scale themselves down under cfg(miri))"
  cargo +nightly miri test --no-fail-fast --target-dir target/miri -p "$pkg" --lib --tests || status=1
done
exit $status
