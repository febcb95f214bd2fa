#!/bin/sh
# SPDX-License-Identifier: MIT
# This file contains the benchmark runner of `make bench`: it runs every
# bench/bench_* program found in $BENCH_BINDIR and every bench/*.py script
# (with $PYTHON, when the posh Python module imports), collects their
# `BENCH <metric> <value> <unit>` lines, and prints a summary: posh-vs-
# baseline ratio lines computed from this run's figures, and the targets.
#
# Usage: BENCH_BINDIR=build/bench PYTHON=python3 sh bench/run.sh [NAME...]
#   NAME: run only programs/scripts whose file name contains NAME.
#   BENCH_ROUNDS: rounds of the compiled programs (default 2); the summary
#   keeps the best value of each metric.
#   BENCH_SCALE: multiplies the time of every figure (programs that honour
#   it; the allocator benchmarks do).
# Exit status: 1 if a program or script failed, 0 otherwise (a missed
# target is reported, not an error: this machine is noisy).
set -u

srcdir=$(cd "$(dirname "$0")" && pwd)
top_srcdir=$(dirname "$srcdir")
BENCH_BINDIR=${BENCH_BINDIR:-$top_srcdir/build/bench}
PYTHON=${PYTHON:-python3}
top_builddir=$(cd "$BENCH_BINDIR/.." 2>/dev/null && pwd || echo "$top_srcdir")

all=$(mktemp "${TMPDIR:-/tmp}/posh-bench.XXXXXX") || exit 1
cur=$(mktemp "${TMPDIR:-/tmp}/posh-bench.XXXXXX") || exit 1
trap 'rm -f "$all" "$cur"' EXIT
status=0

wanted() { # file name -> 0 if selected by the NAME arguments
  [ $# -ge 1 ] || return 0
  n=$1
  shift
  [ $# -eq 0 ] && return 0
  for pat in "$@"; do
    case $n in *"$pat"*) return 0 ;; esac
  done
  return 1
}

# Remove shared-memory segments a crashed benchmark left behind.  Benchmarks
# name their segments <what>-bench-<pid>-..., so only this run's are touched.
cleanup_shm() {
  for f in /dev/shm/posh-bench-"$1"-* /dev/shm/boost-bench-"$1"-*; do
    if [ -e "$f" ]; then
      echo "run.sh: removing leftover $f" >&2
      rm -f "$f"
    fi
  done
}

run_one() { # label command...
  label=$1
  shift
  echo "== $label"
  start=$(date +%s)
  "$@" >"$cur" 2>&1 &
  pid=$!
  wait "$pid"
  rc=$?
  cat "$cur"
  grep '^BENCH ' "$cur" >>"$all"
  cleanup_shm "$pid"
  if [ "$rc" -ne 0 ]; then
    echo "run.sh: FAIL $label (exit $rc)"
    status=1
  fi
  echo "   ($label: $(($(date +%s) - start)) s)"
}

# The machine is shared and small: say how busy it was, so that odd figures
# can be told from regressions.
load_before=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo '?')
echo "run.sh: $(nproc 2>/dev/null || echo '?') CPUs, load average $load_before at start"

# ---- compiled benchmarks, in BENCH_ROUNDS rounds (default 2): a burst of
# load from elsewhere then spoils one round of a figure, not the figure.
rounds=${BENCH_ROUNDS:-2}
found=0
round=1
while [ "$round" -le "$rounds" ]; do
  for prog in "$BENCH_BINDIR"/bench_*; do
    [ -f "$prog" ] && [ -x "$prog" ] || continue
    name=$(basename "$prog")
    case $name in *.*) continue ;; esac # objects, sources, scripts
    wanted "$name" "$@" || continue
    found=1
    run_one "$name (round $round/$rounds)" "$prog"
  done
  round=$((round + 1))
done
[ "$found" -eq 1 ] || echo "run.sh: no bench_* programs in $BENCH_BINDIR (run \`make bench\`)"

# ---- Python benchmarks: bench/*.py, when the posh module imports
PYTHONPATH="$top_builddir/pybind:$top_srcdir/pybind${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH
py_ok=
for py in "$srcdir"/*.py; do
  [ -f "$py" ] || continue
  name=$(basename "$py")
  wanted "$name" "$@" || continue
  if [ -z "$py_ok" ]; then
    if command -v "$PYTHON" >/dev/null 2>&1 &&
      "$PYTHON" -c 'import posh' >/dev/null 2>&1; then
      py_ok=yes
    else
      py_ok=no
    fi
  fi
  if [ "$py_ok" = yes ]; then
    run_one "$name" "$PYTHON" "$py"
  else
    echo "== $name: SKIP (python module posh not importable with $PYTHON)"
  fi
done

# ---- summary: ratios of posh to each baseline measured in this run.
# For metric P.posh and a sibling P.X in the same unit (X not posh, not a
# ratio), print `BENCH P.posh_vs_X <r> x`: r = posh/X for rates (unit .../s),
# X/posh for times (ns, us, ms, s), so r > 1 always means posh is faster.
# Ratio lines a program printed itself are not duplicated.
echo "== summary"
# The best value of each metric over the rounds: the highest rate (unit
# .../s), the lowest time (ns, us, ms, s), otherwise the last value.
best=$(awk '
  $1 != "BENCH" || NF < 4 { next }
  !($2 in val) { order[++n] = $2; val[$2] = $3; unit[$2] = $4; next }
  $4 ~ /\/s$/ { if ($3 + 0 > val[$2] + 0) val[$2] = $3; next }
  $4 ~ /^(ns|us|ms|s)$/ { if ($3 + 0 < val[$2] + 0) val[$2] = $3; next }
  { val[$2] = $3 }
  END { for (i = 1; i <= n; i++) printf "BENCH %s %s %s\n", order[i], val[order[i]], unit[order[i]] }' "$all")
echo "$best" >"$all"
[ -n "$best" ] && echo "$best"
if awk -v l="$load_before" 'BEGIN { exit !(l + 0 > 0.5) }'; then
  echo "run.sh: load average at start: $load_before (above ~0.5: another job shared the CPUs; distrust the figures)"
fi
ratios=$(awk '
  $1 == "BENCH" && NF >= 4 { if (!($2 in val)) order[++n] = $2; val[$2] = $3; unit[$2] = $4 }
  function split_last(m) { if (match(m, /\.[^.]*$/)) { pre = substr(m, 1, RSTART - 1); var = substr(m, RSTART + 1); return 1 } return 0 }
  END {
    for (i = 1; i <= n; i++) {
      m = order[i]
      if (!split_last(m) || var != "posh") continue
      mp = pre
      for (j = 1; j <= n; j++) {
        o = order[j]
        if (o == m || !split_last(o) || pre != mp) continue
        if (var == "posh" || var ~ /_vs_/ || unit[o] != unit[m]) continue
        name = mp ".posh_vs_" var
        if (name in val) continue
        if (unit[m] ~ /\/s$/ && val[o] + 0 > 0) r = val[m] / val[o]
        else if (unit[m] ~ /^(ns|us|ms|s)$/ && val[m] + 0 > 0) r = val[o] / val[m]
        else continue
        printf "BENCH %s %.3g x\n", name, r
      }
    }
  }' "$all")
[ -n "$ratios" ] && echo "$ratios"
echo "$ratios" >>"$all"

# Targets: metric, comparison, bound (issues 2, 3, 4 and 5).
awk '
  FNR == NR { if ($1 == "BENCH") val[$2] = $3; next }
  NF >= 3 && $1 !~ /^#/ {
    if (!($1 in val)) { printf "TARGET %-36s %10s   %s %-5s n/a (not measured)\n", $1, "-", $2, $3; next }
    v = val[$1] + 0; b = $3 + 0
    ok = ($2 == ">=") ? (v >= b) : (v <= b)
    printf "TARGET %-36s %10.3g   %s %-5s %s\n", $1, v, $2, $3, ok ? "met" : "MISSED"
  }' "$all" - <<'EOF'
alloc.threadtest.posh_vs_jemalloc >= 1.5
alloc.larson.posh_vs_jemalloc >= 1.0
alloc.threadtest.posh_vs_boost >= 10
alloc.prodcon.posh_vs_boost >= 30
alloc.larson.posh.overhead <= 1.2
sync.lock.uncontended.posh_vs_pthread_robust >= 1.0
sync.lock.contended2p.posh_vs_pthread_robust >= 1.0
sync.wake.roundtrip.posh_vs_sem >= 1.0
queue.rtt.8B.posh_per_spin <= 2
queue.1p1c.8B.posh >= 10000000
queue.1p1c.1MiB.posh_per_memcpy >= 0.5
dict.get.posh >= 10000000
py.manager_dict.posh_vs_mp >= 50
py.queue.small.posh_vs_mp >= 20
py.queue.rtt.posh_vs_mp >= 20
py.pool.apply_async.posh_vs_mp >= 5
py.pool.imap_unordered1.posh_vs_mp >= 5
py.numpy100MB.posh_vs_mp >= 10
EOF

exit $status
