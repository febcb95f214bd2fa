#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Quick start, command 2: runs the whole test suite.  Sets up and builds
# first if needed (tools/setup.sh --no-demo), then `make check` in build/.
# With CI=true (as .ci/run sets it), or --full, it also builds with
# warnings as errors and runs the suite again under ASan+UBSan, and runs
# make distcheck.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
full=0
if [ "${CI:-}" = "true" ] || [ "${1:-}" = "--full" ]; then full=1; fi

if [ $full = 1 ]; then
  export CONFIGURE_FLAGS="--enable-werror"
  BUILD_DIR=build-ci tools/setup.sh --no-demo
  dirs=(build-ci)
else
  tools/setup.sh --no-demo
  dirs=(build)
fi

status=0
run_check() { # dir, label, make arguments...
  local dir=$1 label=$2
  shift 2
  echo "== make check ($label)"
  if ! make -C "$dir" -s check "$@"; then
    status=1
    for log in "$dir"/tests/*.log; do
      grep -q "^# FAIL\|FAIL\|ERROR" "$log" 2>/dev/null && { echo "--- $log"; tail -40 "$log"; }
    done
  fi
  # Print the per-test summaries so the closing counts are visible.
  cat "$dir"/test-suite.log 2>/dev/null | sed -n '1,12p'
}
if [ $full = 1 ]; then
  run_check "${dirs[0]}" "${dirs[0]}" PYBIND_CFLAGS=-Werror
else
  run_check "${dirs[0]}" "${dirs[0]}"
fi

if [ $full = 1 ]; then
  echo "== ASan+UBSan build"
  mkdir -p build-asan
  (cd build-asan && { [ -f Makefile ] || "$ROOT/configure" -q --enable-werror --enable-sanitizers --enable-debug PYTHON="${PYTHON:-/usr/bin/python3}"; } && make -s -j"$(nproc)" NO_PYBIND=1 >/dev/null)
  # The sanitizer build skips the Python suite (the interpreter is not
  # instrumented) and runs the multi-process stress tests with fewer
  # messages (ASan makes each one ~10x slower).
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    POSH_STRESS_MSGS=${POSH_STRESS_MSGS_ASAN:-100000} \
    run_check build-asan "ASan+UBSan, debug" NO_PYBIND=1
  echo "== make distcheck"
  if ! make -C build-ci -s distcheck DISTCHECK_CONFIGURE_FLAGS="PYTHON=${PYTHON:-/usr/bin/python3}" >/tmp/posh-distcheck.log 2>&1; then
    tail -40 /tmp/posh-distcheck.log
    status=1
  else
    grep -E "archives ready|distcheck" /tmp/posh-distcheck.log | tail -2
  fi
fi

# One closing line over every cmocka test case run above (all builds).
passed=0 failed=0
for d in "${dirs[@]}" build-asan; do
  [ -d "$d/tests" ] || continue
  [ "$d" = build-asan ] && [ $full = 0 ] && continue
  for log in "$d"/tests/test_*.log; do
    [ -f "$log" ] || continue
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test(s)\./\1/p' "$log" | tail -n 1)
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test(s), listed below:/\1/p' "$log" | tail -n 1)
    passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
    grep -q "^\[  PASSED  \]\|^\[  FAILED  \]" "$log" || failed=$((failed + 1)) # crashed suite
  done
done
# The Python suite (unittest): "Ran N tests", then "OK" or "FAILED (...)".
pylog="${dirs[0]}/pybind/test-python.log"
if [ -f "$pylog" ]; then
  p=$(sed -n 's/^Ran \([0-9]*\) tests\{0,1\} in .*/\1/p' "$pylog" | tail -n 1)
  f=$(sed -n 's/^FAILED (\(.*\))/\1/p' "$pylog" | tr ',' '\n' | sed -n 's/.*\(failures\|errors\)=\([0-9]*\)/\2/p' | awk '{s+=$1} END {print s+0}')
  [ $status != 0 ] && grep -q "^FAILED" "$pylog" && tail -n 60 "$pylog"
  passed=$((passed + ${p:-0} - ${f:-0})); failed=$((failed + ${f:-0}))
  echo "python: ${p:-0} tests run, ${f:-0} failed or errored"
fi
grep -h "^torture: " "${dirs[0]}"/tests/test_torture.log 2>/dev/null || true
echo
if [ $status = 0 ]; then echo "test.sh: all suites passed"; else echo "test.sh: FAILURES"; fi
echo "tests: $passed passed, $failed failed"
exit $status
