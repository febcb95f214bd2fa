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

# --tsan [SUITE...]: the suites that run threads in one process (or the
# ones named) built with -fsanitize=thread in build-tsan/; any report fails.
# ThreadSanitizer sees the threads of one process only, not the other
# processes on the heap.  Not part of CI (~1.5 min, build included).
if [ "${1:-}" = "--tsan" ]; then
  tools/setup.sh --no-demo >/dev/null
  shift
  suites=${*:-test_alloc test_sync test_queue test_dict}
  mkdir -p build-tsan
  (cd build-tsan && { [ -f Makefile ] || "$ROOT/configure" -q PYTHON="${PYTHON:-/usr/bin/python3}" \
    CFLAGS="-O1 -g -fsanitize=thread" LDFLAGS="-fsanitize=thread"; } &&
    make -s -j"$(nproc)" NO_PYBIND=1 $(for t in $suites; do echo tests/$t; done) \
      tests/sync_child tests/queue_child tests/dict_child tests/attach_child >/dev/null)
  status=0
  for t in $suites; do
    rc=0
    POSH_TEST_BINDIR=$ROOT/build-tsan/tests POSH_STRESS_MSGS=20000 \
      TSAN_OPTIONS="halt_on_error=0 report_signal_unsafe=0" \
      "build-tsan/tests/$t" >"build-tsan/$t.out" 2>&1 || rc=$?
    races=$(grep -c 'WARNING: ThreadSanitizer' "build-tsan/$t.out" || true)
    echo "$t rc=$rc reports=$races"
    if [ $rc != 0 ] || [ "$races" != 0 ]; then
      status=1
      grep -m2 -A20 'WARNING: ThreadSanitizer' "build-tsan/$t.out" || tail -20 "build-tsan/$t.out"
    fi
  done
  [ $status = 0 ] && echo "test.sh: clean under ThreadSanitizer" || echo "test.sh: ThreadSanitizer FAILURES"
  exit $status
fi

# --valgrind [SUITE...]: every cmocka suite of build/ (or the ones named,
# e.g. test_dict) under memcheck, children and exec'd programs included,
# with the stress tests scaled down (~45 min on two cores; not part of CI,
# whose budget is 30 min).
if [ "${1:-}" = "--valgrind" ]; then
  tools/setup.sh --no-demo
  command -v valgrind >/dev/null || { echo "test.sh: valgrind is not installed (apt-get install valgrind)"; exit 1; }
  out=build/valgrind
  rm -rf "$out" && mkdir -p "$out"
  export POSH_TEST_BINDIR=$ROOT/build/tests POSH_STRESS_MSGS=3000 POSH_TORTURE_KILLS=40 \
    POSH_TEST_KILLS=20 POSH_TEST_LIST_KILLS=20 POSH_DAMAGE_ROUNDS=50
  # One suite: its output in $out/NAME.out, memcheck's reports in
  # $out/NAME.PID.vg (empty when clean), and "NAME rc=N" on stdout.
  vg_one() {
    valgrind -q --trace-children=yes --error-exitcode=99 \
      --log-file="$out/$1.%p.vg" "build/tests/$1" >"$out/$1.out" 2>&1
    echo "$1 rc=$?"
  }
  export -f vg_one
  export out
  shift
  suites=${*:-$(cd build/tests && ls test_* | grep -v '\.')}
  printf '%s\n' $suites | xargs -P"$(nproc)" -I{} bash -c 'vg_one {}' | tee "$out/summary"
  dirty=$(find "$out" -name '*.vg' -size +0)
  if grep -qv ' rc=0$' "$out/summary" || [ -n "$dirty" ]; then
    for f in $dirty; do echo "--- $f"; head -40 "$f"; done
    echo "test.sh: valgrind FAILURES"
    exit 1
  fi
  echo "test.sh: every suite clean under valgrind ($(ls "$out"/*.vg | wc -l) processes)"
  exit 0
fi

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
