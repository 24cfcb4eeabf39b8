#!/usr/bin/env bash
# ThreadSanitizer lane (nightly, best effort): the integration and unit
# tests of core, pool and metrics, with std rebuilt under TSan
# (-Zbuild-std, so std's own synchronisation is instrumented too).
#
# Judged by the exit code AND by the output: TSan's report can be followed
# by a passing test summary, so any "WARNING: ThreadSanitizer" fails the
# lane. Prints SKIPPED loudly and exits 0 only when nightly, rust-src or an
# x86_64 Linux host is missing, or the instrumented build itself fails.
#
# --cfg crossbeam_sanitize: crossbeam-epoch's own sanitizer setting (small
# garbage bags, so memory is reclaimed, and raced on, far more often).
#
#   TSAN_PACKAGES="connmgr-core" bash .ci/tsan.sh
set -uo pipefail
cd "$(dirname "$0")/.."
skip() { echo; echo "!!!!!!!! SKIPPED: TSan lane: $* !!!!!!!!"; echo; exit 0; }
target=x86_64-unknown-linux-gnu
[ "$(uname -sm)" = "Linux x86_64" ] || skip "needs an x86_64 Linux host"
command -v rustup >/dev/null || skip "no rustup"
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal >/dev/null 2>&1 || skip "no nightly toolchain"
rustup component list --toolchain nightly --installed 2>/dev/null | grep -q rust-src ||
  rustup component add --toolchain nightly rust-src >/dev/null 2>&1 || skip "no rust-src for nightly (-Zbuild-std)"

export RUSTFLAGS="-Zsanitizer=thread --cfg crossbeam_sanitize"
export RUSTDOCFLAGS="$RUSTFLAGS"
export TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
export CARGO_TARGET_DIR="${TSAN_TARGET_DIR:-target/tsan}"
packages="${TSAN_PACKAGES:-connmgr-core connmgr-pool connmgr-metrics}"
logs="$CARGO_TARGET_DIR/tsan-logs"; mkdir -p "$logs"
cargo_tsan() { cargo +nightly "$1" -Zbuild-std --target "$target" "${@:2}"; }

args=(); for p in $packages; do args+=(-p "$p"); done
echo "tsan: building ${packages} (std rebuilt with TSan)"
if ! cargo_tsan test "${args[@]}" --lib --tests --no-run >"$logs/build.log" 2>&1; then
  tail -n 40 "$logs/build.log"
  skip "the TSan build failed (see above)"
fi

status=0
for p in $packages; do
  log="$logs/$p.log"
  start=$(date +%s)
  # Tests skipped under TSan: none (the proptests and the fuzz-body test
  # scale fine; loom models are cfg(loom)-only and do not build here).
  cargo_tsan test -p "$p" --lib --tests --no-fail-fast -- --test-threads=2 >"$log" 2>&1
  code=$?
  grep -E "^test result|FAILED|panicked|WARNING: ThreadSanitizer" "$log"
  if grep -q "WARNING: ThreadSanitizer" "$log"; then
    grep -A30 "WARNING: ThreadSanitizer" "$log" | head -n 120
    echo "!!! tsan: $p: ThreadSanitizer reported a race (full log: $log)"
    status=1
  elif [ "$code" -ne 0 ]; then
    tail -n 40 "$log"
    echo "!!! tsan: $p: tests failed under TSan (exit $code; full log: $log)"
    status=1
  else
    echo "tsan: $p ok in $(( $(date +%s) - start ))s"
  fi
done
exit $status
