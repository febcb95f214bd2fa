#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Quick start, command 1: installs what libposh needs from Debian's packages
# (only what is missing), builds it in build/, and runs the demo.
#   tools/setup.sh            set up, build, run the demo
#   tools/setup.sh --no-demo  set up and build only (used by tools/test.sh)
# Honours PYTHON=... (default /usr/bin/python3) and BUILD_DIR=... (default build).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build}
run_demo=1
[ "${1:-}" = "--no-demo" ] && run_demo=0

PACKAGES=(build-essential autoconf automake libtool pkg-config
          libatomic-ops-dev libjemalloc-dev libxxhash-dev libcmocka-dev
          libboost-dev python3 python3-dev python3-setuptools python3-numpy
          python3-pytest)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# CPython's own multiprocessing tests, which the Python suite runs against
# posh (pybind/tests/test_cpython_mp.py): the test package of Debian's
# python3, named after its version.
pyver=$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
testsuite=libpython$pyver-testsuite
if ! dpkg-query -W -f='${Status}' "$testsuite" 2>/dev/null | grep -q "install ok installed"; then
  echo "setup: installing $testsuite"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$testsuite" >/dev/null
fi

if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt Makefile.in ]; then
  echo "setup: generating the build system (autogen.sh)"
  ./autogen.sh
fi
mkdir -p "$BUILD_DIR"
cd "$BUILD_DIR"
if [ ! -f Makefile ] || [ "$ROOT/configure" -nt Makefile ]; then
  echo "setup: configuring in $BUILD_DIR/ ${CONFIGURE_FLAGS:-}"
  "$ROOT/configure" -q ${CONFIGURE_FLAGS:-} PYTHON="${PYTHON:-/usr/bin/python3}"
fi
echo "setup: building"
make -s -j"$(nproc)" >/dev/null
make -s -j"$(nproc)" check TESTS= >/dev/null   # build the test programs too

if [ $run_demo = 1 ]; then
  echo
  echo "== demo: forked workers share objects through one heap; an unrelated process attaches by name"
  ./examples/demo
  echo
  echo "== demo: the same Python word count with multiprocessing and with posh (import changed only)"
  PYTHONPATH="$PWD/pybind${PYTHONPATH:+:$PYTHONPATH}" "${PYTHON:-/usr/bin/python3}" \
    "$ROOT/examples/wordcount.py"
fi
