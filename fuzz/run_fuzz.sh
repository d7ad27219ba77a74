#!/bin/sh
# fuzz/run_fuzz.sh: one bounded libFuzzer run of a target on a copy of its seed corpus (ctest).
#   run_fuzz.sh BINARY NAME SEED_DIR BUILD_DIR [DICT]
#   KPI_FUZZ_SECONDS   how long to fuzz (default 5)
#   KPI_FUZZ_ARGS      extra libFuzzer flags (e.g. "-jobs=2 -workers=2")
# New inputs accumulate in BUILD_DIR/corpus/NAME across runs; a crash, leak or timeout is
# written to BUILD_DIR/artifacts/NAME/ and fails the test (libFuzzer exits non-zero).
set -eu
bin=$1 name=$2 seeds=$3 out=$4 dict=${5:-}
secs=${KPI_FUZZ_SECONDS:-5}
work=$out/corpus/$name
art=$out/artifacts/$name
mkdir -p "$work" "$art"
# The copy keeps the committed seeds untouched: libFuzzer writes into its first directory.
cp -n "$seeds"/* "$work"/ 2>/dev/null || true
set -- -max_total_time="$secs" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$art/"
if [ -n "$dict" ]; then set -- "$@" -dict="$dict"; fi
# shellcheck disable=SC2086 # KPI_FUZZ_ARGS is a list of flags
exec timeout --kill-after=10 $((secs + 60)) "$bin" "$@" ${KPI_FUZZ_ARGS:-} "$work"
