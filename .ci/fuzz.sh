#!/usr/bin/env bash
# Fuzz lane: runs every cargo-fuzz target in fuzz/ for FUZZ_SECONDS (default
# 30) each, one at a time, starting from the checked-in seed corpus, and
# fails on the first crash (the crashing input is left in
# fuzz/artifacts/<target>/). New corpus entries go to a scratch directory,
# never into fuzz/corpus/.
#
# Works on stable: `--sanitizer none` needs no -Z flag (the targets check
# their own invariants with assertions, and debug assertions are on).
# Falls back to nightly (with its default AddressSanitizer) only if the
# stable build fails, and fails if neither builds; prints SKIPPED loudly
# and exits 0 only when cargo-fuzz cannot be installed.
#
#   FUZZ_SECONDS=600 bash .ci/fuzz.sh            # longer runs
#   FUZZ_TARGETS="manager" bash .ci/fuzz.sh      # a subset
set -uo pipefail
cd "$(dirname "$0")/.."
skip() { echo; echo "!!!!!!!! SKIPPED: fuzz lane: $* !!!!!!!!"; echo; exit 0; }
seconds="${FUZZ_SECONDS:-20}"
targets="${FUZZ_TARGETS:-status_table idle_pool metrics manager}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked >/dev/null 2>&1 || skip "could not install cargo-fuzz"
fi

cd fuzz
if cargo +stable fuzz build --sanitizer none >build.log 2>&1; then
  toolchain=(+stable); sanitizer=(--sanitizer none)
elif rustup toolchain list | grep -q nightly && cargo +nightly fuzz build >build.log 2>&1; then
  echo "fuzz: the stable build failed; using nightly"; toolchain=(+nightly); sanitizer=()
else
  # A stable lane: targets that do not build are a failure, not a skip.
  cat build.log; rm -f build.log
  echo "!!! fuzz: the fuzz targets do not build (see above)"; exit 1
fi
rm -f build.log

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
status=0
for t in $targets; do
  mkdir -p "$scratch/$t"
  start=$(date +%s)
  echo "fuzz: $t for ${seconds}s (seed corpus: $(ls "corpus/$t" | wc -l) files)"
  # First corpus directory receives new units; the seed corpus is read only.
  if cargo "${toolchain[@]}" fuzz run "${sanitizer[@]}" "$t" "$scratch/$t" "corpus/$t" -- \
      -max_total_time="$seconds" -max_len=4096 -timeout=20 -print_final_stats=1 \
      >"$scratch/$t.log" 2>&1; then
    grep -E "^stat::number_of_executed_units|^#[0-9]+ +DONE" "$scratch/$t.log" | tail -2
    echo "fuzz: $t ok in $(( $(date +%s) - start ))s, corpus $(ls "$scratch/$t" | wc -l) new units"
  else
    tail -n 60 "$scratch/$t.log"
    echo "!!! fuzz: $t FAILED (crash input in fuzz/artifacts/$t/; replay with"
    echo "!!!   cd fuzz && cargo fuzz run ${sanitizer[*]} $t artifacts/$t/<file>)"
    status=1
  fi
done
exit $status
