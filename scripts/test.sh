#!/usr/bin/env bash
# scripts/test.sh: the one command that runs every test, as CI does. Installs what is missing
# (scripts/bootstrap.sh), builds twice (-Werror; and ASan+UBSan), and runs ctest in both trees;
# then builds the libFuzzer targets (clang) and runs each briefly (the `fuzz` label).
# Each ctest run starts its own real stack (PostgreSQL, Kafka, SMTP) through the "stack"
# fixture and stops it at the end, pass or fail.
#   KPI_TEST_JOBS=N      parallel tests (default 4: most tests wait on servers, not CPU)
#   KPI_TEST_ONLY=asan   run only one tree (asan | release | fuzz)
#   KPI_FUZZ_SECONDS=N   seconds per target in the fuzz tree (default 5; docs/fuzzing.md)
#   extra arguments go to ctest (e.g. -R evaluator)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
JOBS=${KPI_TEST_JOBS:-4}
start=$(date +%s)

bash scripts/bootstrap.sh

build() { # build DIR CMAKE-ARGS...
  local dir=$1
  shift
  cmake -S . -B "$dir" -DKPI_WERROR=ON "$@" >/dev/null
  cmake --build "$dir" -j"$(nproc)"
}

status=0
run_tree() { # run_tree NAME DIR
  echo "== ctest: $1 =="
  if ! ctest --test-dir "$2" --output-on-failure -j"$JOBS" "${@:3}"; then status=1; fi
}
# The third tree: clang with libFuzzer + ASan + UBSan. Only the fuzz targets are built and
# only the `fuzz` label runs, each target for KPI_FUZZ_SECONDS on a copy of its corpus.
fuzz_tree() {
  CC=clang cmake -S . -B build/fuzz -DKPI_WERROR=ON -DKPI_FUZZ=ON >/dev/null
  cmake --build build/fuzz -j"$(nproc)" --target kpi_fuzz
  run_tree "fuzz (libFuzzer)" build/fuzz -L fuzz
}
if [ "${KPI_TEST_ONLY:-}" = fuzz ]; then
  fuzz_tree
  echo "tests finished in $(( $(date +%s) - start )) s"
  exit $status
fi

if [ "${KPI_TEST_ONLY:-}" != asan ]; then
  build build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKPI_TEST_HOOKS=ON
fi
if [ "${KPI_TEST_ONLY:-}" != release ]; then
  build build/asan -DCMAKE_BUILD_TYPE=Debug -DKPI_SANITIZE=ON -DKPI_TEST_HOOKS=ON
fi
# Sanitizers: any report fails the test that triggered it.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
if [ "${KPI_TEST_ONLY:-}" != release ]; then run_tree "ASan+UBSan" build/asan "$@"; fi
if [ "${KPI_TEST_ONLY:-}" != asan ]; then run_tree "release" build/release "$@"; fi
if [ -z "${KPI_TEST_ONLY:-}" ]; then fuzz_tree; fi

echo "tests finished in $(( $(date +%s) - start )) s"
exit $status
