#!/usr/bin/env bash
# Every loom model at preemption bound 3, the slow ones included: a deeper
# search than CI's lane, for changes to the lock-free structures. Takes
# well over an hour on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
LOOM_MAX_PREEMPTIONS=3 LOOM_SLOW_PREEMPTIONS=3 exec bash .ci/loom.sh
