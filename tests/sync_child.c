/* SPDX-License-Identifier: MIT */
/*
 * This file contains sync_child, the program tests/test_sync.c execs to
 * reach its heap from a process that was not forked from the creator: it
 * attaches by heap name, opens objects by directory name and runs one
 * worker.  Usage: sync_child MODE HEAP [N]
 *   lock N     N acquisitions of Lock "lock" (critical section checks)
 *   hold       acquire Lock "lock", set Event "ready", sleep (to be killed)
 *   rdhold     read-lock RWLock "rw", set Event "ready", sleep
 *   wrhold     write-lock RWLock "rw", set Event "ready", sleep
 *   semhold N  take N units of Semaphore "sem", set Event "ready", sleep
 *   barrier N  N rounds of Barrier "bar" (action counts in scratch)
 *   pong N     N round trips: wait Event "ping", clear it, set Event "pong"
 * Exit status 0 on success; 2 on a setup failure; 3/4 on a failed check.
 */
#include "sync_testutil.h"

static posh_off_t open_or_die(posh_heap_t *h, uint32_t type, const char *name) {
  posh_off_t off;
  int r = posh_sync_open(h, name, type, &off);
  if (r) {
    fprintf(stderr, "sync_child: open %s: %s\n", name, posh_err_name(r));
    _exit(2);
  }
  return off;
}

static void ready_and_sleep(posh_heap_t *h) {
  posh_off_t ev = open_or_die(h, POSH_SYNC_EVENT, "ready");
  TU_CHECK_RC(posh_event_set(h, ev), 0);
  for (int i = 0; i < 600; i++)
    tu_sleep_ns(100 * TU_MS); /* until killed (at most a minute) */
  _exit(5);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: sync_child MODE HEAP [N]\n");
    return 2;
  }
  const char *mode = argv[1];
  long n = argc > 3 ? strtol(argv[3], NULL, 10) : 0;
  posh_heap_t *h;
  int r = posh_heap_attach(argv[2], &h);
  if (r) {
    fprintf(stderr, "sync_child: attach %s: %s\n", argv[2], posh_err_name(r));
    return 2;
  }
  struct tu_scratch *s = tu_scratch_open(h);
  if (!s) {
    fprintf(stderr, "sync_child: no scratch\n");
    return 2;
  }
  int rc = 0;
  if (!strcmp(mode, "lock")) {
    rc = tu_lock_worker(h, open_or_die(h, POSH_SYNC_LOCK, "lock"), s, n, 0);
  } else if (!strcmp(mode, "hold")) {
    posh_off_t l = open_or_die(h, POSH_SYNC_LOCK, "lock");
    TU_CHECK_RC(posh_lock_acquire(h, l, 10 * TU_SEC), 0);
    ready_and_sleep(h);
  } else if (!strcmp(mode, "rdhold")) {
    posh_off_t rw = open_or_die(h, POSH_SYNC_RWLOCK, "rw");
    TU_CHECK_RC(posh_rwlock_rdlock(h, rw, 10 * TU_SEC), 0);
    ready_and_sleep(h);
  } else if (!strcmp(mode, "wrhold")) {
    posh_off_t rw = open_or_die(h, POSH_SYNC_RWLOCK, "rw");
    TU_CHECK_RC(posh_rwlock_wrlock(h, rw, 10 * TU_SEC), 0);
    ready_and_sleep(h);
  } else if (!strcmp(mode, "semhold")) {
    posh_off_t sem = open_or_die(h, POSH_SYNC_SEMAPHORE, "sem");
    for (long i = 0; i < n; i++)
      TU_CHECK_RC(posh_sem_acquire(h, sem, 10 * TU_SEC), 0);
    ready_and_sleep(h);
  } else if (!strcmp(mode, "barrier")) {
    rc = tu_barrier_worker(h, open_or_die(h, POSH_SYNC_BARRIER, "bar"), s, (int)n);
  } else if (!strcmp(mode, "pong")) {
    posh_off_t ping = open_or_die(h, POSH_SYNC_EVENT, "ping");
    posh_off_t pong = open_or_die(h, POSH_SYNC_EVENT, "pong");
    for (long i = 0; i < n; i++) {
      TU_CHECK_RC(posh_event_wait(h, ping, 10 * TU_SEC), 0);
      TU_CHECK_RC(posh_event_clear(h, ping), 0);
      TU_CHECK_RC(posh_event_set(h, pong), 0);
    }
  } else {
    fprintf(stderr, "sync_child: unknown mode %s\n", mode);
    rc = 2;
  }
  posh_heap_detach(h);
  return rc;
}
