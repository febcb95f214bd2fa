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
run_check() { # dir, label
  echo "== make check ($2)"
  if ! make -C "$1" -s check; then
    status=1
    for log in "$1"/tests/*.log; do
      grep -q "^# FAIL\|FAIL\|ERROR" "$log" 2>/dev/null && { echo "--- $log"; tail -40 "$log"; }
    done
  fi
  # Print the per-test summaries so the closing counts are visible.
  cat "$1"/test-suite.log 2>/dev/null | sed -n '1,12p'
}
run_check "${dirs[0]}" "${dirs[0]}"

if [ $full = 1 ]; then
  echo "== ASan+UBSan build"
  mkdir -p build-asan
  (cd build-asan && { [ -f Makefile ] || "$ROOT/configure" -q --enable-werror --enable-sanitizers --enable-debug PYTHON="${PYTHON:-/usr/bin/python3}"; } && make -s -j"$(nproc)" >/dev/null)
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_check build-asan "ASan+UBSan, debug"
  echo "== make distcheck"
  if ! make -C build-ci -s distcheck DISTCHECK_CONFIGURE_FLAGS="PYTHON=${PYTHON:-/usr/bin/python3}" >/tmp/posh-distcheck.log 2>&1; then
    tail -40 /tmp/posh-distcheck.log
    status=1
  else
    grep -E "archives ready|distcheck" /tmp/posh-distcheck.log | tail -2
  fi
fi

echo
if [ $status = 0 ]; then echo "test.sh: all suites passed"; else echo "test.sh: FAILURES"; fi
exit $status
