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

# Test targets run under TSan: all but the single-threaded ones that only
# measure memory and sizes (no second thread, so nothing for TSan to
# find; they run in every other lane).
single_threaded="heap heap_churn heap_release sizing"
targets() {
  local dir=${1#connmgr-} t name
  for t in "$dir"/tests/*.rs; do
    name=$(basename "$t" .rs)
    [ "$1" = connmgr-core ] && [[ " $single_threaded " == *" $name "* ]] && continue
    printf -- '--test %s ' "$name"
  done
}

args=(); for p in $packages; do args+=(-p "$p"); done
echo "tsan: building ${packages} (std rebuilt with TSan)"
build_targets=""; for p in $packages; do build_targets+="$(targets "$p")"; done
# shellcheck disable=SC2086 # word splitting of the target list is meant
if ! cargo_tsan test "${args[@]}" --lib $build_targets --no-run >"$logs/build.log" 2>&1; then
  tail -n 40 "$logs/build.log"
  skip "the TSan build failed (see above)"
fi

status=0
for p in $packages; do
  log="$logs/$p.log"
  start=$(date +%s)
  # Skipped under TSan: core's single-threaded memory and sizing tests
  # (see `targets`); loom models are cfg(loom)-only and do not build here.
  # shellcheck disable=SC2046 # word splitting of the target list is meant
  cargo_tsan test -p "$p" --lib $(targets "$p") --no-fail-fast -- --test-threads=2 >"$log" 2>&1
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
