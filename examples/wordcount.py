# SPDX-License-Identifier: MIT
"""Word count, twice: once with multiprocessing, once with posh.

The same code runs both ways; only the module differs (``import posh as
multiprocessing`` is all a program needs).  A generated corpus is cut into
chunks; a Pool of workers counts the words of each chunk and merges its
counts into one shared dict (under a shared Lock), as a program that
accumulates results in a Manager dict does.  With multiprocessing every
dict operation is a round trip to the Manager's server process; with posh
the dict lives in shared memory.

Usage: python3 examples/wordcount.py [--words N] [--procs P]
"""

import argparse
import collections
import multiprocessing
import random
import sys
import time

import posh

VOCABULARY = 3000


def make_corpus(n_words, seed=2003):
    """A deterministic corpus with a Zipf-like word distribution."""
    rng = random.Random(seed)
    vocab = ["w%04d" % i for i in range(VOCABULARY)]
    weights = [1.0 / (i + 1) for i in range(VOCABULARY)]
    words = rng.choices(vocab, weights, k=n_words)
    return [" ".join(words[i:i + 12]) for i in range(0, n_words, 12)]


_shared = {}


def _init(counts, lock):
    _shared["counts"] = counts
    _shared["lock"] = lock


def count_chunk(lines):
    local = collections.Counter()
    for line in lines:
        local.update(line.split())
    counts, lock = _shared["counts"], _shared["lock"]
    with lock:
        for word, n in local.items():
            counts[word] = counts.get(word, 0) + n
    return sum(local.values())


def run(mp, chunks, procs):
    with mp.Manager() as manager:
        counts = manager.dict()
        lock = manager.Lock()
        with mp.get_context("fork").Pool(procs, _init, (counts, lock)) as pool:
            pool.map(_warm, range(procs))  # workers started before the clock
            t0 = time.perf_counter()
            total = sum(pool.map(count_chunk, chunks, chunksize=1))
            elapsed = time.perf_counter() - t0
        result = dict(counts.items())
    return elapsed, total, result


def _warm(_):
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--words", type=int, default=600_000)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--chunks", type=int, default=8)
    args = ap.parse_args()

    lines = make_corpus(args.words)
    step = (len(lines) + args.chunks - 1) // args.chunks
    chunks = [lines[i:i + step] for i in range(0, len(lines), step)]
    print("wordcount: %d words, %d chunks, %d worker processes"
          % (args.words, len(chunks), args.procs))

    mp_time, mp_total, mp_counts = run(multiprocessing, chunks, args.procs)
    posh_time, posh_total, posh_counts = run(posh, chunks, args.procs)

    same = mp_counts == posh_counts and mp_total == posh_total == args.words
    top = sorted(posh_counts.items(), key=lambda kv: -kv[1])[:3]
    print("  most frequent: %s" % ", ".join("%s %d" % kv for kv in top))
    print("  %-16s %8.3f s" % ("multiprocessing", mp_time))
    print("  %-16s %8.3f s   (%.1fx faster)" % ("posh", posh_time,
                                               mp_time / posh_time))
    print("  results identical: %s" % ("yes" if same else "NO"))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
