/* SPDX-License-Identifier: MIT */
/*
 * This file contains the tests of sync/: every primitive's semantics, bad
 * input, timeouts, contention from threads, forked processes and exec'd
 * processes that attach by name (tests/sync_child), and recovery when a
 * holder or waiter is killed (SIGKILL at random points, many times, never
 * two owners at once, no hang).
 *
 * Cross-process tests keep every wait bounded: children run with timeouts
 * and are waited for with a deadline (then killed), so a hang fails the
 * test; an alarm per test is the last resort.  Each test uses its own
 * named heap /posh-test-sync-<pid>-<n>, unlinked at the end.
 * POSH_TEST_KILLS sets the number of kills of the torture test (default
 * 100).
 */
#include "sync_testutil.h"

#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/wait.h>

#include <cmocka.h>

/* ------------------------------------------------------------------------
 * Fixture: a named heap with a scratch block, and the children to reap.
 * ---------------------------------------------------------------------- */
struct fx {
  posh_heap_t *h;
  char name[64];
  struct tu_scratch *s;
};

static int heap_seq;
#define MAX_KIDS 64
static pid_t kids[MAX_KIDS];

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof *f);
  if (!f)
    return -1;
  snprintf(f->name, sizeof f->name, "/posh-test-sync-%d-%d", (int)getpid(),
           heap_seq++);
  posh_heap_options_t o = {.capacity = 64ull << 20};
  int r = posh_heap_create(f->name, &o, &f->h);
  if (r) {
    fprintf(stderr, "posh_heap_create %s: %s\n", f->name, posh_err_name(r));
    free(f);
    return -1;
  }
  f->s = posh_calloc(f->h, 1, sizeof *f->s);
  if (!f->s || posh_name_bind(f->h, "scratch", posh_off(f->h, f->s),
                              TU_SCRATCH_TAG) != 0) {
    posh_heap_detach(f->h);
    posh_heap_unlink(f->name);
    free(f);
    return -1;
  }
  alarm(240); /* last resort: a hang kills the suite, not the machine */
  *state = f;
  return 0;
}

static void kill_kids(void) {
  for (int i = 0; i < MAX_KIDS; i++)
    if (kids[i] > 0) {
      kill(kids[i], SIGKILL);
      waitpid(kids[i], NULL, 0);
      kids[i] = 0;
    }
}

static int teardown(void **state) {
  struct fx *f = *state;
  kill_kids();
  alarm(0);
  if (f) {
    posh_heap_detach(f->h);
    posh_heap_unlink(f->name);
    free(f);
  }
  return 0;
}

static void track(pid_t p) {
  for (int i = 0; i < MAX_KIDS; i++)
    if (kids[i] == 0) {
      kids[i] = p;
      return;
    }
  fail_msg("too many children");
}

static void untrack(pid_t p) {
  for (int i = 0; i < MAX_KIDS; i++)
    if (kids[i] == p)
      kids[i] = 0;
}

/* Fork a child running fn(f, arg); its return value is the exit status. */
static pid_t fork_child(int (*fn)(struct fx *, void *), struct fx *f, void *arg) {
  fflush(NULL);
  pid_t p = fork();
  assert_true(p >= 0);
  if (p == 0) {
    alarm(120);
    int rc = fn(f, arg);
    _exit(rc);
  }
  track(p);
  return p;
}

/* Exec tests/sync_child MODE <heap> N (see sync_child.c). */
static pid_t spawn_child(struct fx *f, const char *mode, long n) {
  char dir[PATH_MAX], path[PATH_MAX + 32], nbuf[32];
  const char *d = getenv("POSH_TEST_BINDIR");
  if (d) {
    snprintf(dir, sizeof dir, "%s", d);
  } else {
    ssize_t len = readlink("/proc/self/exe", dir, sizeof dir - 1);
    assert_true(len > 0);
    dir[len] = '\0';
    char *slash = strrchr(dir, '/');
    if (slash)
      *slash = '\0';
  }
  snprintf(path, sizeof path, "%s/sync_child", dir);
  snprintf(nbuf, sizeof nbuf, "%ld", n);
  fflush(NULL);
  pid_t p = fork();
  assert_true(p >= 0);
  if (p == 0) {
    execl(path, "sync_child", mode, f->name, nbuf, (char *)NULL);
    fprintf(stderr, "exec %s: %s\n", path, strerror(errno));
    _exit(127);
  }
  track(p);
  return p;
}

/* Wait for a child with a deadline.  Returns its exit status, 128 + signal
 * if a signal ended it, or -1 if it had to be killed at the deadline. */
static int wait_child(pid_t p, int64_t timeout_ns) {
  uint64_t end = tu_now_ns() + (uint64_t)timeout_ns;
  int st;
  for (;;) {
    pid_t r = waitpid(p, &st, WNOHANG);
    if (r == p)
      break;
    if (tu_now_ns() > end) {
      kill(p, SIGKILL);
      waitpid(p, &st, 0);
      untrack(p);
      fprintf(stderr, "child %d hung: killed\n", (int)p);
      return -1;
    }
    tu_sleep_ns(1 * TU_MS);
  }
  untrack(p);
  if (WIFEXITED(st))
    return WEXITSTATUS(st);
  return 128 + WTERMSIG(st);
}

static void kill_child(pid_t p) {
  kill(p, SIGKILL);
  waitpid(p, NULL, 0);
  untrack(p);
}

/* Wait (bounded) for the "ready" event that sync_child sets. */
static void wait_ready(struct fx *f, posh_off_t ready) {
  int r = posh_event_wait(f->h, ready, 10 * TU_SEC);
  assert_int_equal(r, 0);
  posh_event_clear(f->h, ready);
}

/* Wait until *v >= want (bounded); returns 1 if reached. */
static int wait_value(posh_atomic_t *v, uint64_t want, int64_t timeout_ns) {
  uint64_t end = tu_now_ns() + (uint64_t)timeout_ns;
  while (posh_atomic_load_acquire(v) < want) {
    if (tu_now_ns() > end)
      return 0;
    tu_sleep_ns(200 * 1000);
  }
  return 1;
}

#define RC(expr, want) assert_int_equal((expr), (want))

/* ========================================================================
 * Bad input.
 * ====================================================================== */
static int always_true(void *arg) {
  (void)arg;
  return 1;
}

/* Proves: bad arguments (null, out of the heap, misaligned, uninitialised,
 * wrong type, negative counts, unowned release) give clear codes. */
static void test_bad_input(void **state) {
  struct fx *f = *state;
  posh_heap_t *h = f->h;
  posh_off_t l, rl, sem, c, ev, bar, rw, off;
  uint32_t type;

  RC(posh_lock_create(NULL, NULL, 0, &l), POSH_EINVAL);
  RC(posh_lock_create(h, NULL, 7, &l), POSH_EINVAL);
  RC(posh_lock_create(h, NULL, 0, NULL), POSH_EINVAL);
  RC(posh_lock_create(h, "lk", 0, &l), 0);
  RC(posh_lock_create(h, "lk", 0, &off), POSH_EEXIST);
  RC(posh_lock_create(h, "a-name-that-is-much-too-long-for-the-directory-of-a-posh-heap-xx",
                      0, &off), POSH_ENAMETOOLONG);
  RC(posh_rlock_create(h, NULL, 0, &rl), 0);
  RC(posh_sem_create(h, "sm", 1, 0, &sem), 0);
  RC(posh_event_create(h, NULL, 0, &ev), 0);
  RC(posh_barrier_create(h, NULL, 2, 0, &bar), 0);
  RC(posh_rwlock_create(h, NULL, 0, &rw), 0);
  RC(posh_cond_create(h, NULL, l, 0, &c), 0);

  /* Null, outside, misaligned, uninitialised. */
  RC(posh_lock_acquire(h, POSH_OFF_NULL, 0), POSH_EINVAL);
  RC(posh_lock_acquire(NULL, l, 0), POSH_EINVAL);
  RC(posh_lock_acquire(h, (posh_off_t){posh_heap_capacity(h) + 4096}, 0), POSH_EFAULT);
  RC(posh_lock_acquire(h, (posh_off_t){l.v + 8}, 0), POSH_EFAULT);
  RC(posh_lock_acquire(h, (posh_off_t){16}, 0), POSH_EFAULT);
  unsigned char *raw = posh_calloc(h, 1, 256);
  assert_non_null(raw);
  off = posh_off(h, raw);
  RC(posh_lock_acquire(h, off, 0), POSH_EINVAL);
  RC(posh_sem_release(h, off, 1), POSH_EINVAL);
  RC(posh_event_set(h, off), POSH_EINVAL);
  RC(posh_sync_type(h, off, &type), POSH_EINVAL);
  memset(raw, 0xa5, 256);
  RC(posh_barrier_wait(h, off, 0, NULL, NULL, NULL), POSH_EINVAL);
  RC(posh_sync_destroy(h, off), POSH_EINVAL);

  /* Wrong type. */
  RC(posh_lock_acquire(h, sem, 0), POSH_ETYPE);
  RC(posh_lock_release(h, rl), POSH_ETYPE);
  RC(posh_rlock_acquire(h, l, 0), POSH_ETYPE);
  RC(posh_sem_acquire(h, l, 0), POSH_ETYPE);
  RC(posh_sem_value(h, ev), POSH_ETYPE);
  RC(posh_sem_bound(h, l), POSH_ETYPE);
  RC(posh_rlock_locked(h, l), POSH_ETYPE);
  RC(posh_cond_notify(h, l, 1), POSH_ETYPE);
  RC(posh_event_set(h, sem), POSH_ETYPE);
  RC(posh_barrier_wait(h, rw, 0, NULL, NULL, NULL), POSH_ETYPE);
  RC(posh_rwlock_rdlock(h, bar, 0), POSH_ETYPE);
  RC(posh_cond_create(h, NULL, sem, 0, &off), POSH_ETYPE);
  RC(posh_sync_type(h, rw, &type), 0);
  assert_int_equal(type, POSH_SYNC_RWLOCK);

  /* Negative and out-of-range counts. */
  RC(posh_sem_create(h, NULL, -1, 0, &off), POSH_EINVAL);
  RC(posh_sem_create(h, NULL, 1, 0x100, &off), POSH_EINVAL);
  RC(posh_sem_release(h, sem, 0), POSH_EINVAL);
  RC(posh_sem_release(h, sem, -3), POSH_EINVAL);
  RC(posh_barrier_create(h, NULL, 0, 0, &off), POSH_EINVAL);
  RC(posh_barrier_create(h, NULL, -2, 0, &off), POSH_EINVAL);
  RC(posh_barrier_create(h, NULL, 65536, 0, &off), POSH_EINVAL);

  /* Unowned release, consistent without cause, condition misuse. */
  RC(posh_lock_release(h, l), POSH_EPERM);
  RC(posh_rlock_release(h, rl), POSH_EPERM);
  RC(posh_rwlock_unlock(h, rw), POSH_EPERM);
  RC(posh_lock_consistent(h, l), POSH_EPERM);
  RC(posh_cond_wait(h, c, 1000), POSH_EPERM);
  RC(posh_cond_notify(h, c, 1), POSH_EPERM);
  RC(posh_cond_notify_all(h, c), POSH_EPERM);
  RC(posh_cond_wait_for(h, c, always_true, NULL, 0), POSH_EPERM);
  RC(posh_lock_acquire(h, l, 0), 0);
  RC(posh_lock_consistent(h, l), POSH_EINVAL);
  RC(posh_cond_notify(h, c, -1), POSH_EINVAL);
  RC(posh_cond_wait_for(h, c, NULL, NULL, 0), POSH_EINVAL);
  RC(posh_cond_wait_for(h, c, always_true, NULL, 0), 0);
  RC(posh_lock_destroy(h, l), POSH_EBUSY); /* held */
  RC(posh_lock_release(h, l), 0);

  /* Opening by name. */
  RC(posh_lock_open(h, "lk", &off), 0);
  assert_true(off.v == l.v);
  RC(posh_lock_open(h, "sm", &off), POSH_ETYPE);
  RC(posh_sem_open(h, "sm", &off), 0);
  RC(posh_event_open(h, "nope", &off), POSH_ENOENT);
  RC(posh_sync_open(h, "lk", 99, &off), POSH_EINVAL);
  RC(posh_sync_open(h, NULL, POSH_SYNC_LOCK, &off), POSH_EINVAL);
  RC(posh_sync_open(h, "scratch", POSH_SYNC_LOCK, &off), POSH_ETYPE);
  RC(posh_sync_bind(h, "lk2", l), 0);

  /* Destroy, then use: uninitialised; the names are gone. */
  RC(posh_cond_destroy(h, c), 0);
  RC(posh_lock_destroy(h, sem), POSH_ETYPE);
  RC(posh_lock_destroy(h, l), 0);
  RC(posh_lock_acquire(h, l, 0), POSH_EINVAL);
  RC(posh_lock_open(h, "lk", &off), POSH_ENOENT);
  RC(posh_lock_open(h, "lk2", &off), POSH_ENOENT);
  RC(posh_sync_destroy(h, sem), 0);
  RC(posh_sem_open(h, "sm", &off), POSH_ENOENT);
  RC(posh_sync_destroy(h, rl), 0);
  RC(posh_sync_destroy(h, ev), 0);
  RC(posh_sync_destroy(h, bar), 0);
  RC(posh_sync_destroy(h, rw), 0);
  posh_free(h, raw);
}

/* ========================================================================
 * Lock and RLock.
 * ====================================================================== */
struct thr_arg {
  struct fx *f;
  posh_off_t obj;
  int result[8];
  posh_atomic_t go, done;
};

static void *thr_lock_probe(void *p) {
  struct thr_arg *a = p;
  posh_heap_t *h = a->f->h;
  a->result[0] = posh_lock_owned(h, a->obj);
  a->result[1] = posh_lock_acquire(h, a->obj, 0);
  a->result[2] = posh_lock_release(h, a->obj);
  a->result[3] = posh_lock_acquire(h, a->obj, 5 * TU_MS);
  return NULL;
}

static int child_release_other(struct fx *f, void *arg) {
  posh_off_t l = *(posh_off_t *)arg;
  TU_CHECK_RC(posh_lock_release(f->h, l), POSH_EPERM);
  TU_CHECK_RC(posh_lock_acquire(f->h, l, 0), POSH_ETIMEDOUT);
  return 0;
}

/* Proves: Lock ownership is per thread: others cannot release it (EPERM)
 * nor take it; re-acquiring in the owner reports EBUSY, not a hang. */
static void test_lock_semantics(void **state) {
  struct fx *f = *state;
  posh_off_t l;
  RC(posh_lock_create(f->h, NULL, 0, &l), 0);
  RC(posh_lock_locked(f->h, l), 0);
  RC(posh_lock_acquire(f->h, l, POSH_FOREVER), 0);
  RC(posh_lock_locked(f->h, l), 1);
  RC(posh_lock_owned(f->h, l), 1);
  RC(posh_lock_acquire(f->h, l, 0), POSH_EBUSY);
  RC(posh_lock_acquire(f->h, l, 10 * TU_MS), POSH_EBUSY);

  struct thr_arg a = {.f = f, .obj = l};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, thr_lock_probe, &a), 0);
  pthread_join(t, NULL);
  RC(a.result[0], 0);
  RC(a.result[1], POSH_ETIMEDOUT);
  RC(a.result[2], POSH_EPERM);
  RC(a.result[3], POSH_ETIMEDOUT);

  pid_t p = fork_child(child_release_other, f, &l);
  RC(wait_child(p, 10 * TU_SEC), 0);
  RC(posh_lock_release(f->h, l), 0);
  RC(posh_lock_locked(f->h, l), 0);
  RC(posh_lock_destroy(f->h, l), 0);
}

static void *thr_lock_worker(void *p) {
  struct thr_arg *a = p;
  a->result[0] = tu_lock_worker(a->f->h, a->obj, a->f->s, 20000, 0);
  return NULL;
}

/* Proves: four threads of one process never hold the Lock at once. */
static void test_lock_threads(void **state) {
  struct fx *f = *state;
  posh_off_t l;
  RC(posh_lock_create(f->h, NULL, 0, &l), 0);
  struct thr_arg a[4];
  pthread_t t[4];
  for (int i = 0; i < 4; i++) {
    a[i] = (struct thr_arg){.f = f, .obj = l};
    assert_int_equal(pthread_create(&t[i], NULL, thr_lock_worker, &a[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(t[i], NULL);
    RC(a[i].result[0], 0);
  }
  assert_int_equal(f->s->plain, 80000);
  assert_int_equal(posh_atomic_load_relaxed(&f->s->violations), 0);
}

static int child_lock_worker(struct fx *f, void *arg) {
  posh_off_t l = *(posh_off_t *)arg;
  return tu_lock_worker(f->h, l, f->s, 20000, 0);
}

/* Proves: forked processes and exec'd processes (attached by name, lock
 * opened by name) never hold the Lock at once: no lost update. */
static void test_lock_processes(void **state) {
  struct fx *f = *state;
  posh_off_t l;
  RC(posh_lock_create(f->h, "lock", 0, &l), 0);
  pid_t p[4];
  p[0] = fork_child(child_lock_worker, f, &l);
  p[1] = fork_child(child_lock_worker, f, &l);
  p[2] = spawn_child(f, "lock", 20000);
  p[3] = spawn_child(f, "lock", 20000);
  for (int i = 0; i < 4; i++)
    RC(wait_child(p[i], 60 * TU_SEC), 0);
  assert_int_equal(f->s->plain, 80000);
  assert_int_equal(posh_atomic_load_relaxed(&f->s->violations), 0);
  assert_int_equal(posh_atomic_load_relaxed(&f->s->max_inside), 1);
}

static int child_lock_and_die(struct fx *f, void *arg) {
  posh_off_t l = *(posh_off_t *)arg;
  TU_CHECK_RC(posh_lock_acquire(f->h, l, 5 * TU_SEC), 0);
  _exit(0); /* dies holding it */
}

static int child_expect(struct fx *f, void *arg) {
  int *want = arg; /* {want, kind: 0 lock acquire, 1 rwlock wr, 2 rwlock rd} */
  posh_off_t obj;
  int r;
  if (want[1] == 0) {
    TU_CHECK_RC(posh_lock_open(f->h, "lock", &obj), 0);
    r = posh_lock_acquire(f->h, obj, 2 * TU_SEC);
  } else {
    TU_CHECK_RC(posh_rwlock_open(f->h, "rw", &obj), 0);
    r = want[1] == 1 ? posh_rwlock_wrlock(f->h, obj, 2 * TU_SEC)
                     : posh_rwlock_rdlock(f->h, obj, 2 * TU_SEC);
  }
  TU_CHECK_RC(r, want[0]);
  return 0;
}

/* Proves: when a Lock's owner dies, the next acquirer gets EOWNERDEAD (and
 * holds the lock), can make it consistent; released without that, the
 * lock is not recoverable for everyone. */
static void test_lock_owner_death(void **state) {
  struct fx *f = *state;
  posh_off_t l;
  RC(posh_lock_create(f->h, "lock", 0, &l), 0);

  pid_t p = fork_child(child_lock_and_die, f, &l);
  RC(wait_child(p, 10 * TU_SEC), 0);
  uint64_t t0 = tu_now_ns();
  RC(posh_lock_acquire(f->h, l, 5 * TU_SEC), POSH_EOWNERDEAD);
  uint64_t dt = tu_now_ns() - t0;
  print_message("      owner death noticed by a new acquirer in %.1f ms\n", dt / 1e6);
  assert_true(dt < 2 * TU_SEC);
  RC(posh_lock_owned(f->h, l), 1);
  RC(posh_lock_consistent(f->h, l), 0);
  RC(posh_lock_consistent(f->h, l), POSH_EINVAL);
  RC(posh_lock_release(f->h, l), 0);
  RC(posh_lock_acquire(f->h, l, 0), 0);
  RC(posh_lock_release(f->h, l), 0);

  /* Not made consistent: not recoverable, for this process and others. */
  p = fork_child(child_lock_and_die, f, &l);
  RC(wait_child(p, 10 * TU_SEC), 0);
  RC(posh_lock_acquire(f->h, l, 5 * TU_SEC), POSH_EOWNERDEAD);
  RC(posh_lock_release(f->h, l), 0);
  RC(posh_lock_acquire(f->h, l, 0), POSH_ENOTRECOVERABLE);
  RC(posh_lock_acquire(f->h, l, 10 * TU_MS), POSH_ENOTRECOVERABLE);
  int want[2] = {POSH_ENOTRECOVERABLE, 0};
  p = fork_child(child_expect, f, want);
  RC(wait_child(p, 10 * TU_SEC), 0);
}

static int child_lock_waiter(struct fx *f, void *arg) {
  posh_off_t l = *(posh_off_t *)arg;
  int r = posh_lock_acquire(f->h, l, 10 * TU_SEC);
  posh_atomic_store_release(&f->s->last_acq_ns, tu_now_ns());
  TU_CHECK_RC(r, POSH_EOWNERDEAD);
  TU_CHECK_RC(posh_lock_consistent(f->h, l), 0);
  TU_CHECK_RC(posh_lock_release(f->h, l), 0);
  return 0;
}

/* Proves: a waiter already asleep behind an owner (an exec'd process,
 * attached by name) that is SIGKILLed notices within ~100 ms. */
static void test_lock_waiter_notices_death(void **state) {
  struct fx *f = *state;
  posh_off_t l, ready;
  RC(posh_lock_create(f->h, "lock", 0, &l), 0);
  RC(posh_event_create(f->h, "ready", 0, &ready), 0);
  double worst = 0;
  for (int i = 0; i < 5; i++) {
    pid_t holder = spawn_child(f, "hold", 0);
    wait_ready(f, ready);
    posh_atomic_store_release(&f->s->last_acq_ns, 0);
    pid_t waiter = fork_child(child_lock_waiter, f, &l);
    tu_sleep_ns(30 * TU_MS); /* let it fall asleep */
    uint64_t t_kill = tu_now_ns();
    kill_child(holder);
    RC(wait_child(waiter, 20 * TU_SEC), 0);
    double ms = (posh_atomic_load_acquire(&f->s->last_acq_ns) - t_kill) / 1e6;
    if (ms > worst)
      worst = ms;
  }
  print_message("      sleeping waiter noticed owner death within %.1f ms (worst of 5)\n",
                worst);
  assert_true(worst < 1000); /* 100 ms expected; slack for a loaded box */
}

struct torture_arg {
  posh_off_t lock;
};

static int child_torture_worker(struct fx *f, void *arg) {
  struct torture_arg *a = arg;
  return tu_lock_worker(f->h, a->lock, f->s, -1, 20 * 1000);
}

/* Proves: SIGKILL of Lock holders and waiters at random points, many
 * times: never two owners at once, no lost update beyond the victim's,
 * no hang, and the survivors always carry on (death noticed quickly). */
static void test_lock_kill_torture(void **state) {
  struct fx *f = *state;
  const char *env = getenv("POSH_TEST_KILLS");
  int kills = env ? atoi(env) : 100;
  struct torture_arg a;
  RC(posh_lock_create(f->h, NULL, 0, &a.lock), 0);
  pid_t w[3];
  for (int i = 0; i < 3; i++)
    w[i] = fork_child(child_torture_worker, f, &a);
  unsigned seed = (unsigned)getpid();
  double worst = 0, total = 0;
  for (int k = 0; k < kills; k++) {
    tu_sleep_ns((uint64_t)(rand_r(&seed) % 3000) * 1000);
    int v = rand_r(&seed) % 3;
    uint64_t before = posh_atomic_load_acquire(&f->s->acquisitions);
    uint64_t t_kill = tu_now_ns();
    kill_child(w[v]);
    /* The survivors must make progress soon. */
    uint64_t end = t_kill + 5 * TU_SEC;
    while (posh_atomic_load_acquire(&f->s->acquisitions) <= before + 1 &&
           tu_now_ns() < end)
      tu_sleep_ns(100 * 1000);
    uint64_t after = posh_atomic_load_acquire(&f->s->acquisitions);
    assert_true(after > before + 1);
    double ms = (tu_now_ns() - t_kill) / 1e6;
    total += ms;
    if (ms > worst)
      worst = ms;
    w[v] = fork_child(child_torture_worker, f, &a);
  }
  posh_atomic_store_release(&f->s->stop, 1);
  for (int i = 0; i < 3; i++)
    RC(wait_child(w[i], 60 * TU_SEC), 0);
  print_message("      %d kills: %lu acquisitions, %lu owner-died recoveries, "
                "progress after a kill: mean %.1f ms, worst %.1f ms\n",
                kills, (unsigned long)f->s->acquisitions,
                (unsigned long)f->s->owner_died, total / (kills ? kills : 1), worst);
  assert_int_equal(posh_atomic_load_relaxed(&f->s->violations), 0);
  assert_int_equal(posh_atomic_load_relaxed(&f->s->errors), 0);
  assert_true(posh_atomic_load_relaxed(&f->s->owner_died) > 0 || kills < 10);
  assert_true(worst < 3000);
  int r = posh_lock_acquire(f->h, a.lock, 2 * TU_SEC);
  assert_true(r == 0 || r == POSH_EOWNERDEAD);
  if (r == POSH_EOWNERDEAD)
    RC(posh_lock_consistent(f->h, a.lock), 0);
  RC(posh_lock_release(f->h, a.lock), 0);
}

static void *thr_rlock_probe(void *p) {
  struct thr_arg *a = p;
  posh_heap_t *h = a->f->h;
  a->result[0] = posh_rlock_owned(h, a->obj);
  a->result[1] = posh_rlock_acquire(h, a->obj, 0);
  a->result[2] = posh_rlock_release(h, a->obj);
  a->result[3] = posh_rlock_locked(h, a->obj); /* held by the other thread */
  return NULL;
}

static int child_rlock_and_die(struct fx *f, void *arg) {
  posh_off_t l = *(posh_off_t *)arg;
  TU_CHECK_RC(posh_rlock_acquire(f->h, l, 5 * TU_SEC), 0);
  TU_CHECK_RC(posh_rlock_acquire(f->h, l, 5 * TU_SEC), 0);
  _exit(0);
}

static int child_rlock_worker(struct fx *f, void *arg) {
  posh_off_t l = *(posh_off_t *)arg;
  for (int i = 0; i < 5000; i++) {
    TU_CHECK_RC(posh_rlock_acquire(f->h, l, 10 * TU_SEC), 0);
    TU_CHECK_RC(posh_rlock_acquire(f->h, l, 10 * TU_SEC), 0);
    tu_critical(f->s, 0);
    TU_CHECK_RC(posh_rlock_release(f->h, l), 0);
    TU_CHECK(posh_rlock_owned(f->h, l) == 1);
    TU_CHECK_RC(posh_rlock_release(f->h, l), 0);
  }
  return 0;
}

/* Proves: RLock counts recursion per owner, refuses other threads, drops a
 * dead owner's count, and excludes across processes. */
static void test_rlock(void **state) {
  struct fx *f = *state;
  posh_off_t l;
  RC(posh_rlock_create(f->h, "rl", 0, &l), 0);
  RC(posh_rlock_locked(f->h, l), 0);
  for (int i = 1; i <= 3; i++) {
    RC(posh_rlock_acquire(f->h, l, 0), 0);
    RC(posh_rlock_owned(f->h, l), i);
  }
  struct thr_arg a = {.f = f, .obj = l};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, thr_rlock_probe, &a), 0);
  pthread_join(t, NULL);
  RC(a.result[0], 0);
  RC(a.result[1], POSH_ETIMEDOUT);
  RC(a.result[2], POSH_EPERM);
  RC(a.result[3], 1);
  for (int i = 3; i >= 1; i--)
    RC(posh_rlock_release(f->h, l), 0);
  RC(posh_rlock_owned(f->h, l), 0);
  RC(posh_rlock_locked(f->h, l), 0);
  RC(posh_rlock_release(f->h, l), POSH_EPERM);

  pid_t p = fork_child(child_rlock_and_die, f, &l);
  RC(wait_child(p, 10 * TU_SEC), 0);
  RC(posh_rlock_acquire(f->h, l, 5 * TU_SEC), POSH_EOWNERDEAD);
  RC(posh_rlock_owned(f->h, l), 1); /* the dead owner's 2 are gone */
  RC(posh_rlock_consistent(f->h, l), 0);
  RC(posh_rlock_release(f->h, l), 0);
  RC(posh_rlock_owned(f->h, l), 0);

  pid_t w1 = fork_child(child_rlock_worker, f, &l);
  pid_t w2 = fork_child(child_rlock_worker, f, &l);
  RC(wait_child(w1, 60 * TU_SEC), 0);
  RC(wait_child(w2, 60 * TU_SEC), 0);
  assert_int_equal(f->s->plain, 10000);
  assert_int_equal(posh_atomic_load_relaxed(&f->s->violations), 0);
}

/* ========================================================================
 * Semaphore.
 * ====================================================================== */
static void *thr_sem_acquire(void *p) {
  struct thr_arg *a = p;
  a->result[0] = posh_sem_acquire(a->f->h, a->obj, 5 * TU_SEC);
  posh_atomic_store_release(&a->done, 1);
  return NULL;
}

/* Proves: Semaphore counts, times out, wakes a sleeper; BoundedSemaphore
 * rejects a release above its initial value. */
static void test_sem_basic(void **state) {
  struct fx *f = *state;
  posh_off_t s, b;
  RC(posh_sem_create(f->h, NULL, 2, POSH_SEM_BOUNDED, &b), 0);
  RC(posh_sem_value(f->h, b), 2);
  RC(posh_sem_acquire(f->h, b, 0), 0);
  RC(posh_sem_acquire(f->h, b, POSH_FOREVER), 0);
  RC(posh_sem_acquire(f->h, b, 0), POSH_ETIMEDOUT);
  RC(posh_sem_acquire(f->h, b, 5 * TU_MS), POSH_ETIMEDOUT);
  RC(posh_sem_value(f->h, b), 0);
  RC(posh_sem_release(f->h, b, 1), 0);
  RC(posh_sem_release(f->h, b, 2), POSH_EOVERFLOW);
  RC(posh_sem_value(f->h, b), 1);
  RC(posh_sem_release(f->h, b, 1), 0);
  RC(posh_sem_release(f->h, b, 1), POSH_EOVERFLOW);
  RC(posh_sem_value(f->h, b), 2);
  RC(posh_sem_bound(f->h, b), 2);

  RC(posh_sem_create(f->h, NULL, 0, 0, &s), 0);
  RC(posh_sem_bound(f->h, s), POSH_SEM_VALUE_MAX);
  RC(posh_sem_release(f->h, s, 1000), 0);
  RC(posh_sem_value(f->h, s), 1000);
  RC(posh_sem_release(f->h, s, POSH_SEM_VALUE_MAX), POSH_EOVERFLOW);
  RC(posh_sem_destroy(f->h, s), 0);

  /* A sleeper is woken by a release from another thread. */
  RC(posh_sem_create(f->h, NULL, 0, 0, &s), 0);
  struct thr_arg a = {.f = f, .obj = s};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, thr_sem_acquire, &a), 0);
  tu_sleep_ns(20 * TU_MS);
  assert_int_equal(posh_atomic_load_acquire(&a.done), 0);
  RC(posh_sem_release(f->h, s, 1), 0);
  pthread_join(t, NULL);
  RC(a.result[0], 0);
  RC(posh_sem_value(f->h, s), 0);
}

static int child_sem_worker(struct fx *f, void *arg) {
  posh_off_t s = *(posh_off_t *)arg;
  for (int i = 0; i < 2000; i++) {
    TU_CHECK_RC(posh_sem_acquire(f->h, s, 10 * TU_SEC), 0);
    uint64_t in = posh_atomic_fetch_add_full(&f->s->inside, 1) + 1;
    tu_max(&f->s->max_inside, in);
    if (in > 2)
      posh_atomic_fetch_add_full(&f->s->violations, 1);
    tu_spin_ns(2000);
    posh_atomic_fetch_add_full(&f->s->inside, (uint64_t)-1);
    TU_CHECK_RC(posh_sem_release(f->h, s, 1), 0);
  }
  return 0;
}

/* Proves: a Semaphore of 2 (plain and robust) admits at most 2 of 4
 * contending processes at once, and ends with its initial value. */
static void test_sem_processes(void **state) {
  struct fx *f = *state;
  for (int robust = 0; robust < 2; robust++) {
    posh_off_t s;
    RC(posh_sem_create(f->h, NULL, 2, POSH_SEM_BOUNDED | (robust ? POSH_SEM_ROBUST : 0), &s), 0);
    posh_atomic_store_relaxed(&f->s->max_inside, 0);
    pid_t p[4];
    for (int i = 0; i < 4; i++)
      p[i] = fork_child(child_sem_worker, f, &s);
    for (int i = 0; i < 4; i++)
      RC(wait_child(p[i], 60 * TU_SEC), 0);
    assert_int_equal(posh_atomic_load_relaxed(&f->s->violations), 0);
    assert_true(posh_atomic_load_relaxed(&f->s->max_inside) <= 2);
    RC(posh_sem_value(f->h, s), 2);
  }
}

static void *thr_sem_take_and_exit(void *p) {
  struct thr_arg *a = p;
  a->result[0] = posh_sem_acquire(a->f->h, a->obj, 0);
  return NULL; /* exits holding the unit */
}

/* Proves: a robust Semaphore gets back the units of a process killed while
 * holding them (a plain one does not), and of a thread that exits; a unit
 * handed on to another releaser is not returned twice. */
static void test_sem_robust(void **state) {
  struct fx *f = *state;
  posh_off_t s, ready;
  RC(posh_event_create(f->h, "ready", 0, &ready), 0);

  RC(posh_sem_create(f->h, "sem", 2, POSH_SEM_ROBUST | POSH_SEM_BOUNDED, &s), 0);
  pid_t p = spawn_child(f, "semhold", 2);
  wait_ready(f, ready);
  RC(posh_sem_value(f->h, s), 0);
  kill_child(p);
  uint64_t t0 = tu_now_ns();
  RC(posh_sem_acquire(f->h, s, 5 * TU_SEC), 0);
  double ms = (tu_now_ns() - t0) / 1e6;
  RC(posh_sem_acquire(f->h, s, 0), 0);
  print_message("      units of a killed holder returned after %.1f ms\n", ms);
  assert_true(ms < 2000);
  RC(posh_sem_release(f->h, s, 2), 0);
  RC(posh_sem_release(f->h, s, 1), POSH_EOVERFLOW);
  RC(posh_sem_destroy(f->h, s), 0);

  /* Plain: the units are lost with their holder (documented). */
  RC(posh_sem_create(f->h, "sem", 1, 0, &s), 0);
  p = spawn_child(f, "semhold", 1);
  wait_ready(f, ready);
  kill_child(p);
  RC(posh_sem_acquire(f->h, s, 100 * TU_MS), POSH_ETIMEDOUT);
  RC(posh_sem_destroy(f->h, s), 0);

  /* Handed on: the holder's unit is released by someone else first. */
  RC(posh_sem_create(f->h, "sem", 1, POSH_SEM_ROBUST | POSH_SEM_BOUNDED, &s), 0);
  p = spawn_child(f, "semhold", 1);
  wait_ready(f, ready);
  RC(posh_sem_release(f->h, s, 1), 0); /* matches the child's unit */
  kill_child(p);
  unsigned back = 99;
  RC(posh_sem_reap(f->h, s, &back), 0);
  assert_int_equal(back, 0);
  RC(posh_sem_value(f->h, s), 1);
  RC(posh_sem_release(f->h, s, 1), POSH_EOVERFLOW);

  /* A thread that exits holding a unit. */
  struct thr_arg a = {.f = f, .obj = s};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, thr_sem_take_and_exit, &a), 0);
  pthread_join(t, NULL);
  RC(a.result[0], 0);
  RC(posh_sem_value(f->h, s), 0);
  RC(posh_sem_acquire(f->h, s, 2 * TU_SEC), 0);
  RC(posh_sem_release(f->h, s, 1), 0);
  RC(posh_sem_value(f->h, s), 1);
}

/* ========================================================================
 * Condition and Event.
 * ====================================================================== */
static int pred_items_or_stop(void *arg) {
  struct tu_scratch *s = arg;
  return posh_atomic_load_relaxed(&s->items) > 0 || posh_atomic_load_relaxed(&s->stop);
}

static int pred_flag(void *arg) {
  struct tu_scratch *s = arg;
  return posh_atomic_load_relaxed(&s->flag) != 0;
}

/* Proves: Condition wait releases and retakes the lock (all RLock levels,
 * or a plain Lock), times out distinctly, and wait_for checks the
 * predicate. */
static void test_cond_basic(void **state) {
  struct fx *f = *state;
  posh_off_t c, lk, l2, c2;
  RC(posh_cond_create(f->h, NULL, POSH_OFF_NULL, 0, &c), 0);
  RC(posh_cond_lock(f->h, c, &lk), 0);
  RC(posh_cond_acquire(f->h, c, 0), 0);
  RC(posh_cond_acquire(f->h, c, 0), 0); /* own lock is an RLock */
  RC(posh_rlock_owned(f->h, lk), 2);
  RC(posh_cond_wait(f->h, c, 10 * TU_MS), POSH_ETIMEDOUT);
  RC(posh_rlock_owned(f->h, lk), 2);
  RC(posh_cond_wait(f->h, c, 0), POSH_ETIMEDOUT);
  RC(posh_cond_wait_for(f->h, c, pred_flag, f->s, 10 * TU_MS), POSH_ETIMEDOUT);
  RC(posh_cond_notify(f->h, c, 0), 0);
  RC(posh_cond_notify(f->h, c, 3), 0);
  RC(posh_cond_notify_all(f->h, c), 0);
  RC(posh_cond_release(f->h, c), 0);
  RC(posh_cond_release(f->h, c), 0);
  RC(posh_cond_release(f->h, c), POSH_EPERM);

  RC(posh_lock_create(f->h, NULL, 0, &l2), 0);
  RC(posh_cond_create(f->h, NULL, l2, 0, &c2), 0);
  RC(posh_lock_acquire(f->h, l2, 0), 0);
  RC(posh_cond_wait(f->h, c2, 10 * TU_MS), POSH_ETIMEDOUT);
  RC(posh_lock_owned(f->h, l2), 1);
  RC(posh_lock_release(f->h, l2), 0);
  RC(posh_cond_destroy(f->h, c2), 0);
  RC(posh_lock_locked(f->h, l2), 0); /* not the condition's own: kept */
  RC(posh_cond_acquire(f->h, c, 0), 0);
  RC(posh_cond_destroy(f->h, c), POSH_EBUSY); /* its own lock is held */
  RC(posh_cond_release(f->h, c), 0);
  RC(posh_cond_destroy(f->h, c), 0);
  RC(posh_rlock_owned(f->h, lk), POSH_EINVAL); /* own lock went with it */
}

static int child_consumer(struct fx *f, void *arg) {
  posh_off_t c = *(posh_off_t *)arg;
  for (;;) {
    TU_CHECK_RC(posh_cond_acquire(f->h, c, 10 * TU_SEC), 0);
    int r = posh_cond_wait_for(f->h, c, pred_items_or_stop, f->s, 10 * TU_SEC);
    TU_CHECK_RC(r, 0);
    if (posh_atomic_load_relaxed(&f->s->items) > 0) {
      posh_atomic_fetch_add_full(&f->s->items, (uint64_t)-1);
      posh_atomic_fetch_add_full(&f->s->consumed, 1);
    } else if (posh_atomic_load_relaxed(&f->s->stop)) {
      TU_CHECK_RC(posh_cond_release(f->h, c), 0);
      return 0;
    }
    TU_CHECK_RC(posh_cond_release(f->h, c), 0);
  }
}

/* Proves: producer/consumer between processes over a Condition loses no
 * item and no wake-up (notify(1) per item, notify_all at the end). */
static void test_cond_prodcons(void **state) {
  struct fx *f = *state;
  posh_off_t c;
  RC(posh_cond_create(f->h, "cond", POSH_OFF_NULL, 0, &c), 0);
  pid_t p[2];
  for (int i = 0; i < 2; i++)
    p[i] = fork_child(child_consumer, f, &c);
  const int n = 3000;
  for (int i = 0; i < n; i++) {
    RC(posh_cond_acquire(f->h, c, 10 * TU_SEC), 0);
    posh_atomic_fetch_add_full(&f->s->items, 1);
    RC(posh_cond_notify(f->h, c, 1), 0);
    RC(posh_cond_release(f->h, c), 0);
    if (i % 64 == 0)
      tu_sleep_ns(100 * 1000);
  }
  assert_true(wait_value(&f->s->consumed, n, 20 * TU_SEC));
  RC(posh_cond_acquire(f->h, c, 10 * TU_SEC), 0);
  posh_atomic_store_release(&f->s->stop, 1);
  RC(posh_cond_notify_all(f->h, c), 0);
  RC(posh_cond_release(f->h, c), 0);
  for (int i = 0; i < 2; i++)
    RC(wait_child(p[i], 20 * TU_SEC), 0);
  assert_int_equal(posh_atomic_load_relaxed(&f->s->consumed), n);
}

static int child_cond_wait_flag(struct fx *f, void *arg) {
  posh_off_t c = *(posh_off_t *)arg;
  TU_CHECK_RC(posh_cond_acquire(f->h, c, 10 * TU_SEC), 0);
  posh_atomic_fetch_add_full(&f->s->readers_in, 1); /* "I am waiting" */
  TU_CHECK_RC(posh_cond_wait_for(f->h, c, pred_flag, f->s, 20 * TU_SEC), 0);
  TU_CHECK_RC(posh_cond_release(f->h, c), 0);
  return 0;
}

static int child_cond_wait_forever(struct fx *f, void *arg) {
  posh_off_t c = *(posh_off_t *)arg;
  TU_CHECK_RC(posh_cond_acquire(f->h, c, 10 * TU_SEC), 0);
  posh_atomic_fetch_add_full(&f->s->readers_in, 1);
  posh_cond_wait(f->h, c, 30 * TU_SEC); /* killed while in here */
  return 9;
}

static int child_cond_wait_once(struct fx *f, void *arg) {
  posh_off_t c = *(posh_off_t *)arg;
  TU_CHECK_RC(posh_cond_acquire(f->h, c, 10 * TU_SEC), 0);
  posh_atomic_fetch_add_full(&f->s->readers_in, 1); /* under the lock */
  int r = posh_cond_wait(f->h, c, 20 * TU_SEC);
  if (r == 0)
    posh_atomic_fetch_add_full(&f->s->consumed, 1);
  TU_CHECK_RC(posh_cond_release(f->h, c), 0);
  return r == 0 ? 0 : 1;
}

/* Proves: notify(n) lets exactly n of the waiters return (plain waits, no
 * predicate: multiprocessing's contract), notify(0) none, and a wait that
 * timed out is not counted as a waiter by a later notify. */
static void test_cond_notify_n(void **state) {
  struct fx *f = *state;
  posh_off_t c;
  RC(posh_cond_create(f->h, NULL, POSH_OFF_NULL, 0, &c), 0);
  /* A wait that times out leaves: notify(1) after it must still reach a
   * live waiter. */
  RC(posh_cond_acquire(f->h, c, 0), 0);
  RC(posh_cond_wait(f->h, c, 5 * TU_MS), POSH_ETIMEDOUT);
  RC(posh_cond_release(f->h, c), 0);
  pid_t p[4];
  for (int i = 0; i < 4; i++)
    p[i] = fork_child(child_cond_wait_once, f, &c);
  assert_true(wait_value(&f->s->readers_in, 4, 10 * TU_SEC));
  /* Each child counted itself with the lock held and waits with it
   * released, so holding it now means all four wait. */
  RC(posh_cond_acquire(f->h, c, 10 * TU_SEC), 0);
  RC(posh_cond_notify(f->h, c, 0), 0);
  RC(posh_cond_notify(f->h, c, 1), 0);
  RC(posh_cond_release(f->h, c), 0);
  assert_true(wait_value(&f->s->consumed, 1, 10 * TU_SEC));
  tu_sleep_ns(200 * TU_MS); /* room for wrongly woken ones to show */
  assert_int_equal(posh_atomic_load_relaxed(&f->s->consumed), 1);
  RC(posh_cond_acquire(f->h, c, 10 * TU_SEC), 0);
  RC(posh_cond_notify(f->h, c, 2), 0);
  RC(posh_cond_release(f->h, c), 0);
  assert_true(wait_value(&f->s->consumed, 3, 10 * TU_SEC));
  tu_sleep_ns(200 * TU_MS);
  assert_int_equal(posh_atomic_load_relaxed(&f->s->consumed), 3);
  RC(posh_cond_acquire(f->h, c, 10 * TU_SEC), 0);
  RC(posh_cond_notify(f->h, c, 5), 0); /* more than wait: the last one */
  RC(posh_cond_release(f->h, c), 0);
  for (int i = 0; i < 4; i++)
    RC(wait_child(p[i], 20 * TU_SEC), 0);
  assert_int_equal(posh_atomic_load_relaxed(&f->s->consumed), 4);
  RC(posh_cond_destroy(f->h, c), 0);
}

/* Proves: notify_all wakes every waiter across processes, and a waiter
 * killed while waiting does not stall a later notify(1). */
static void test_cond_notify_all_and_dead_waiter(void **state) {
  struct fx *f = *state;
  posh_off_t c;
  RC(posh_cond_create(f->h, NULL, POSH_OFF_NULL, 0, &c), 0);
  pid_t p[3];
  for (int i = 0; i < 3; i++)
    p[i] = fork_child(child_cond_wait_flag, f, &c);
  assert_true(wait_value(&f->s->readers_in, 3, 10 * TU_SEC));
  tu_sleep_ns(20 * TU_MS);
  RC(posh_cond_acquire(f->h, c, TU_SEC), 0);
  posh_atomic_store_release(&f->s->flag, 1);
  RC(posh_cond_notify_all(f->h, c), 0);
  RC(posh_cond_release(f->h, c), 0);
  for (int i = 0; i < 3; i++)
    RC(wait_child(p[i], 5 * TU_SEC), 0);

  /* A dead waiter. */
  posh_atomic_store_release(&f->s->flag, 0);
  posh_atomic_store_release(&f->s->readers_in, 0);
  pid_t dead = fork_child(child_cond_wait_forever, f, &c);
  assert_true(wait_value(&f->s->readers_in, 1, 10 * TU_SEC));
  tu_sleep_ns(30 * TU_MS); /* asleep in the kernel by now */
  kill_child(dead);
  pid_t live = fork_child(child_cond_wait_flag, f, &c);
  assert_true(wait_value(&f->s->readers_in, 2, 10 * TU_SEC));
  tu_sleep_ns(30 * TU_MS);
  RC(posh_cond_acquire(f->h, c, TU_SEC), 0);
  posh_atomic_store_release(&f->s->flag, 1);
  RC(posh_cond_notify(f->h, c, 1), 0);
  RC(posh_cond_release(f->h, c), 0);
  RC(wait_child(live, 5 * TU_SEC), 0);
}

static int child_event_wait(struct fx *f, void *arg) {
  posh_off_t e = *(posh_off_t *)arg;
  posh_atomic_fetch_add_full(&f->s->readers_in, 1);
  TU_CHECK_RC(posh_event_wait(f->h, e, 10 * TU_SEC), 0);
  return 0;
}

/* Proves: Event set/clear/is_set/wait; a set wakes waiters in other
 * processes, even when cleared again at once; exec'd ping-pong by name. */
static void test_event(void **state) {
  struct fx *f = *state;
  posh_off_t e, ping, pong;
  RC(posh_event_create(f->h, NULL, 0, &e), 0);
  RC(posh_event_is_set(f->h, e), 0);
  RC(posh_event_wait(f->h, e, 0), POSH_ETIMEDOUT);
  RC(posh_event_wait(f->h, e, 5 * TU_MS), POSH_ETIMEDOUT);
  RC(posh_event_set(f->h, e), 0);
  RC(posh_event_set(f->h, e), 0);
  RC(posh_event_is_set(f->h, e), 1);
  RC(posh_event_wait(f->h, e, 0), 0);
  RC(posh_event_wait(f->h, e, POSH_FOREVER), 0);
  RC(posh_event_clear(f->h, e), 0);
  RC(posh_event_clear(f->h, e), 0);
  RC(posh_event_is_set(f->h, e), 0);

  for (int pulse = 0; pulse < 2; pulse++) {
    posh_atomic_store_release(&f->s->readers_in, 0);
    pid_t p[2];
    for (int i = 0; i < 2; i++)
      p[i] = fork_child(child_event_wait, f, &e);
    assert_true(wait_value(&f->s->readers_in, 2, 10 * TU_SEC));
    tu_sleep_ns(30 * TU_MS);
    RC(posh_event_set(f->h, e), 0);
    if (pulse)
      RC(posh_event_clear(f->h, e), 0); /* set then clear: still wakes */
    for (int i = 0; i < 2; i++)
      RC(wait_child(p[i], 5 * TU_SEC), 0);
    RC(posh_event_clear(f->h, e), 0);
  }

  RC(posh_event_create(f->h, "ping", 0, &ping), 0);
  RC(posh_event_create(f->h, "pong", 0, &pong), 0);
  const int rounds = 500;
  pid_t p = spawn_child(f, "pong", rounds);
  for (int i = 0; i < rounds; i++) {
    RC(posh_event_set(f->h, ping), 0);
    RC(posh_event_wait(f->h, pong, 10 * TU_SEC), 0);
    RC(posh_event_clear(f->h, pong), 0);
  }
  RC(wait_child(p, 10 * TU_SEC), 0);
}

/* ========================================================================
 * Barrier.
 * ====================================================================== */
static int child_barrier_worker(struct fx *f, void *arg) {
  posh_off_t b = *(posh_off_t *)arg;
  return tu_barrier_worker(f->h, b, f->s, 50);
}

static int child_barrier_worker30(struct fx *f, void *arg) {
  posh_off_t b = *(posh_off_t *)arg;
  return tu_barrier_worker(f->h, b, f->s, 30);
}

/* Proves: a Barrier of 4 forked processes over 50 rounds runs the action
 * exactly once per round before releasing anyone, with distinct indices;
 * and with exec'd processes that open it by name. */
static void test_barrier_processes(void **state) {
  struct fx *f = *state;
  posh_off_t b;
  RC(posh_barrier_create(f->h, "bar", 4, 0, &b), 0);
  RC(posh_barrier_parties(f->h, b), 4);
  pid_t p[4];
  for (int i = 0; i < 4; i++)
    p[i] = fork_child(child_barrier_worker, f, &b);
  for (int i = 0; i < 4; i++)
    RC(wait_child(p[i], 60 * TU_SEC), 0);
  assert_int_equal(posh_atomic_load_relaxed(&f->s->actions), 50);
  for (int r = 0; r < 50; r++)
    assert_int_equal(posh_atomic_load_relaxed(&f->s->round_index_bits[r]), 0xf);

  /* Exec'd participants. */
  RC(posh_barrier_destroy(f->h, b), 0);
  RC(posh_barrier_create(f->h, "bar", 3, 0, &b), 0);
  posh_atomic_store_relaxed(&f->s->actions, 0);
  for (int r = 0; r < 64; r++)
    posh_atomic_store_relaxed(&f->s->round_index_bits[r], 0);
  p[0] = spawn_child(f, "barrier", 30);
  p[1] = spawn_child(f, "barrier", 30);
  p[2] = fork_child(child_barrier_worker30, f, &b);
  for (int i = 0; i < 3; i++)
    RC(wait_child(p[i], 60 * TU_SEC), 0);
  assert_int_equal(posh_atomic_load_relaxed(&f->s->actions), 30);
  for (int r = 0; r < 30; r++)
    assert_int_equal(posh_atomic_load_relaxed(&f->s->round_index_bits[r]), 0x7);
}

static int child_barrier_expect(struct fx *f, void *arg) {
  int *want = arg; /* {want} */
  posh_off_t b;
  TU_CHECK_RC(posh_barrier_open(f->h, "bar", &b), 0);
  posh_atomic_fetch_add_full(&f->s->readers_in, 1);
  TU_CHECK_RC(posh_barrier_wait(f->h, b, 20 * TU_SEC, NULL, NULL, NULL), want[0]);
  return 0;
}

static int fail_action(void *arg) {
  (void)arg;
  return -1;
}

/* Proves: abort and reset break the current waiters (EBROKEN), a broken
 * barrier refuses arrivals until reset, a timeout and a failing action
 * break it, and a killed participant breaks it within ~100 ms. */
static void test_barrier_broken(void **state) {
  struct fx *f = *state;
  posh_off_t b;
  int broken[1] = {POSH_EBROKEN}, ok[1] = {0};
  RC(posh_barrier_create(f->h, "bar", 3, 0, &b), 0);

  /* abort */
  pid_t p1 = fork_child(child_barrier_expect, f, broken);
  pid_t p2 = fork_child(child_barrier_expect, f, broken);
  assert_true(wait_value(&f->s->readers_in, 2, 10 * TU_SEC));
  uint64_t end = tu_now_ns() + 10 * TU_SEC;
  while (posh_barrier_n_waiting(f->h, b) < 2 && tu_now_ns() < end)
    tu_sleep_ns(TU_MS);
  RC(posh_barrier_n_waiting(f->h, b), 2);
  RC(posh_barrier_abort(f->h, b), 0);
  RC(wait_child(p1, 5 * TU_SEC), 0);
  RC(wait_child(p2, 5 * TU_SEC), 0);
  RC(posh_barrier_broken(f->h, b), 1);
  RC(posh_barrier_wait(f->h, b, TU_SEC, NULL, NULL, NULL), POSH_EBROKEN);
  RC(posh_barrier_reset(f->h, b), 0);
  RC(posh_barrier_broken(f->h, b), 0);
  RC(posh_barrier_n_waiting(f->h, b), 0);

  /* after reset it works */
  posh_atomic_store_relaxed(&f->s->readers_in, 0);
  p1 = fork_child(child_barrier_expect, f, ok);
  p2 = fork_child(child_barrier_expect, f, ok);
  unsigned idx = 99;
  RC(posh_barrier_wait(f->h, b, 10 * TU_SEC, NULL, NULL, &idx), 0);
  assert_true(idx < 3);
  RC(wait_child(p1, 5 * TU_SEC), 0);
  RC(wait_child(p2, 5 * TU_SEC), 0);

  /* reset with waiters */
  posh_atomic_store_relaxed(&f->s->readers_in, 0);
  p1 = fork_child(child_barrier_expect, f, broken);
  end = tu_now_ns() + 10 * TU_SEC;
  while (posh_barrier_n_waiting(f->h, b) < 1 && tu_now_ns() < end)
    tu_sleep_ns(TU_MS);
  RC(posh_barrier_reset(f->h, b), 0);
  RC(wait_child(p1, 5 * TU_SEC), 0);
  RC(posh_barrier_broken(f->h, b), 0);

  /* a timeout breaks it */
  RC(posh_barrier_wait(f->h, b, 10 * TU_MS, NULL, NULL, NULL), POSH_ETIMEDOUT);
  RC(posh_barrier_broken(f->h, b), 1);
  RC(posh_barrier_reset(f->h, b), 0);

  /* a failing action breaks it */
  RC(posh_barrier_destroy(f->h, b), 0);
  RC(posh_barrier_create(f->h, "bar", 2, 0, &b), 0);
  p1 = fork_child(child_barrier_expect, f, broken);
  end = tu_now_ns() + 10 * TU_SEC;
  while (posh_barrier_n_waiting(f->h, b) < 1 && tu_now_ns() < end)
    tu_sleep_ns(TU_MS);
  RC(posh_barrier_wait(f->h, b, 5 * TU_SEC, fail_action, NULL, NULL), POSH_EBROKEN);
  RC(wait_child(p1, 5 * TU_SEC), 0);
  RC(posh_barrier_reset(f->h, b), 0);

  /* a participant killed while waiting breaks it for the others */
  RC(posh_barrier_destroy(f->h, b), 0);
  RC(posh_barrier_create(f->h, "bar", 3, 0, &b), 0);
  p1 = fork_child(child_barrier_expect, f, broken);
  end = tu_now_ns() + 10 * TU_SEC;
  while (posh_barrier_n_waiting(f->h, b) < 1 && tu_now_ns() < end)
    tu_sleep_ns(TU_MS);
  p2 = fork_child(child_barrier_expect, f, ok);
  while (posh_barrier_n_waiting(f->h, b) < 2 && tu_now_ns() < end)
    tu_sleep_ns(TU_MS);
  RC(posh_barrier_n_waiting(f->h, b), 2);
  tu_sleep_ns(20 * TU_MS);
  uint64_t t_kill = tu_now_ns();
  kill_child(p2);
  RC(wait_child(p1, 5 * TU_SEC), 0);
  double ms = (tu_now_ns() - t_kill) / 1e6;
  print_message("      dead participant broke the barrier after %.1f ms\n", ms);
  assert_true(ms < 2000);
  RC(posh_barrier_broken(f->h, b), 1);
}

/* ========================================================================
 * RWLock.
 * ====================================================================== */
static void *thr_rw_probe(void *p) {
  struct thr_arg *a = p;
  posh_heap_t *h = a->f->h;
  a->result[0] = posh_rwlock_rdlock(h, a->obj, 0);
  if (a->result[0] == 0)
    posh_rwlock_unlock(h, a->obj);
  a->result[1] = posh_rwlock_wrlock(h, a->obj, 0);
  if (a->result[1] == 0)
    posh_rwlock_unlock(h, a->obj);
  a->result[2] = posh_rwlock_unlock(h, a->obj);
  return NULL;
}

/* Proves: RWLock basics: shared reads (recursive), exclusive write, no
 * upgrade, no read under own write, EPERM for an unowned unlock. */
static void test_rwlock_basic(void **state) {
  struct fx *f = *state;
  posh_off_t rw;
  RC(posh_rwlock_create(f->h, "rw", 0, &rw), 0);
  RC(posh_rwlock_rdlock(f->h, rw, 0), 0);
  RC(posh_rwlock_rdlock(f->h, rw, 0), 0);
  RC(posh_rwlock_readers(f->h, rw), 1);
  RC(posh_rwlock_wrlock(f->h, rw, 0), POSH_EBUSY);
  struct thr_arg a = {.f = f, .obj = rw};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, thr_rw_probe, &a), 0);
  pthread_join(t, NULL);
  RC(a.result[0], 0);             /* another reader gets in */
  RC(a.result[1], POSH_ETIMEDOUT); /* a writer does not */
  RC(a.result[2], POSH_EPERM);
  RC(posh_rwlock_unlock(f->h, rw), 0);
  RC(posh_rwlock_unlock(f->h, rw), 0);
  RC(posh_rwlock_unlock(f->h, rw), POSH_EPERM);
  RC(posh_rwlock_readers(f->h, rw), 0);

  RC(posh_rwlock_wrlock(f->h, rw, 0), 0);
  RC(posh_rwlock_wrlock(f->h, rw, 0), POSH_EBUSY);
  RC(posh_rwlock_rdlock(f->h, rw, 0), POSH_EBUSY);
  assert_int_equal(pthread_create(&t, NULL, thr_rw_probe, &a), 0);
  pthread_join(t, NULL);
  RC(a.result[0], POSH_ETIMEDOUT);
  RC(a.result[1], POSH_ETIMEDOUT);
  RC(posh_rwlock_consistent(f->h, rw), POSH_EINVAL);
  RC(posh_rwlock_unlock(f->h, rw), 0);
  RC(posh_rwlock_wrlock(f->h, rw, 10 * TU_MS), 0);
  RC(posh_rwlock_unlock(f->h, rw), 0);
}

struct rw_arg {
  posh_off_t rw;
  int writer;
  int iters;     /* < 0: until stop */
  uint64_t hold; /* ns inside */
};

static int child_rw_worker(struct fx *f, void *arg) {
  struct rw_arg *a = arg;
  struct tu_scratch *s = f->s;
  for (int i = 0; a->iters < 0 ? !posh_atomic_load_relaxed(&s->stop) : i < a->iters; i++) {
    if (a->writer) {
      TU_CHECK_RC(posh_rwlock_wrlock(f->h, a->rw, 20 * TU_SEC), 0);
      if (posh_atomic_fetch_add_full(&s->writers_in, 1) != 0 ||
          posh_atomic_load_acquire(&s->readers_in) != 0)
        posh_atomic_fetch_add_full(&s->violations, 1);
      s->plain = s->plain + 1;
      if (a->hold)
        tu_spin_ns(a->hold);
      posh_atomic_fetch_add_full(&s->writers_in, (uint64_t)-1);
    } else {
      TU_CHECK_RC(posh_rwlock_rdlock(f->h, a->rw, 20 * TU_SEC), 0);
      uint64_t in = posh_atomic_fetch_add_full(&s->readers_in, 1) + 1;
      tu_max(&s->max_inside, in);
      if (posh_atomic_load_acquire(&s->writers_in) != 0)
        posh_atomic_fetch_add_full(&s->violations, 1);
      if (a->hold)
        tu_spin_ns(a->hold);
      posh_atomic_fetch_add_full(&s->readers_in, (uint64_t)-1);
    }
    posh_atomic_fetch_add_full(&s->acquisitions, 1);
    TU_CHECK_RC(posh_rwlock_unlock(f->h, a->rw), 0);
  }
  return 0;
}

/* Proves: readers and writers in 4 processes: writers alone, readers
 * together (more than one reader inside at once is seen). */
static void test_rwlock_processes(void **state) {
  struct fx *f = *state;
  struct rw_arg r = {.writer = 0, .iters = 3000, .hold = 5000};
  struct rw_arg w = {.writer = 1, .iters = 1000, .hold = 2000};
  RC(posh_rwlock_create(f->h, "rw", 0, &r.rw), 0);
  w.rw = r.rw;
  pid_t p[5];
  p[0] = fork_child(child_rw_worker, f, &r);
  p[1] = fork_child(child_rw_worker, f, &r);
  p[2] = fork_child(child_rw_worker, f, &r);
  p[3] = fork_child(child_rw_worker, f, &w);
  p[4] = fork_child(child_rw_worker, f, &w);
  for (int i = 0; i < 5; i++)
    RC(wait_child(p[i], 120 * TU_SEC), 0);
  assert_int_equal(posh_atomic_load_relaxed(&f->s->violations), 0);
  assert_int_equal(f->s->plain, 2000);
  assert_true(posh_atomic_load_relaxed(&f->s->max_inside) >= 2);
  RC(posh_rwlock_readers(f->h, r.rw), 0);
}

/* Proves: no starvation: a writer gets in under a continuous stream of
 * overlapping readers, and a reader under a continuous stream of writers
 * (the fairness policy of docs/sync.md). */
static void test_rwlock_no_starvation(void **state) {
  struct fx *f = *state;
  posh_off_t rw;
  RC(posh_rwlock_create(f->h, NULL, 0, &rw), 0);
  for (int writers_stream = 0; writers_stream < 2; writers_stream++) {
    struct rw_arg a = {.rw = rw, .writer = writers_stream, .iters = -1,
                       .hold = 300 * 1000};
    posh_atomic_store_release(&f->s->stop, 0);
    pid_t p[3];
    int np = writers_stream ? 2 : 3;
    for (int i = 0; i < np; i++)
      p[i] = fork_child(child_rw_worker, f, &a);
    assert_true(wait_value(&f->s->acquisitions, 50, 10 * TU_SEC));
    double worst = 0;
    for (int i = 0; i < 20; i++) {
      uint64_t t0 = tu_now_ns();
      int r = writers_stream ? posh_rwlock_rdlock(f->h, rw, 5 * TU_SEC)
                             : posh_rwlock_wrlock(f->h, rw, 5 * TU_SEC);
      double ms = (tu_now_ns() - t0) / 1e6;
      RC(r, 0);
      if (ms > worst)
        worst = ms;
      tu_spin_ns(100 * 1000);
      RC(posh_rwlock_unlock(f->h, rw), 0);
      tu_sleep_ns(2 * TU_MS);
    }
    posh_atomic_store_release(&f->s->stop, 1);
    for (int i = 0; i < np; i++)
      RC(wait_child(p[i], 30 * TU_SEC), 0);
    print_message("      %s among %d %s: worst wait %.2f ms\n",
                  writers_stream ? "reader" : "writer", np,
                  writers_stream ? "looping writers" : "looping readers", worst);
    assert_true(worst < 2000);
    assert_int_equal(posh_atomic_load_relaxed(&f->s->violations), 0);
  }
}

static int child_rw_wrlock_and_die(struct fx *f, void *arg) {
  posh_off_t rw = *(posh_off_t *)arg;
  TU_CHECK_RC(posh_rwlock_wrlock(f->h, rw, 5 * TU_SEC), 0);
  _exit(0);
}

/* Proves: a dead writer (exec'd, killed) hands the next acquirer, reader or
 * writer, EOWNERDEAD with the write side held; unrepaired it becomes not
 * recoverable; a dead reader is subtracted so a writer gets in. */
static void test_rwlock_death(void **state) {
  struct fx *f = *state;
  posh_off_t rw, ready;
  RC(posh_rwlock_create(f->h, "rw", 0, &rw), 0);
  RC(posh_event_create(f->h, "ready", 0, &ready), 0);

  /* Writer killed; a reader is next. */
  pid_t p = spawn_child(f, "wrhold", 0);
  wait_ready(f, ready);
  kill_child(p);
  uint64_t t0 = tu_now_ns();
  RC(posh_rwlock_rdlock(f->h, rw, 5 * TU_SEC), POSH_EOWNERDEAD);
  print_message("      reader recovered a dead writer's lock after %.1f ms\n",
                (tu_now_ns() - t0) / 1e6);
  RC(posh_rwlock_wrlock(f->h, rw, 0), POSH_EBUSY); /* we hold the write side */
  RC(posh_rwlock_consistent(f->h, rw), 0);
  RC(posh_rwlock_unlock(f->h, rw), 0);
  RC(posh_rwlock_rdlock(f->h, rw, 0), 0);
  RC(posh_rwlock_unlock(f->h, rw), 0);

  /* Reader killed; a writer gets in. */
  p = spawn_child(f, "rdhold", 0);
  wait_ready(f, ready);
  RC(posh_rwlock_readers(f->h, rw), 1);
  RC(posh_rwlock_wrlock(f->h, rw, 0), POSH_ETIMEDOUT);
  kill_child(p);
  t0 = tu_now_ns();
  RC(posh_rwlock_wrlock(f->h, rw, 5 * TU_SEC), 0);
  print_message("      writer got past a dead reader after %.1f ms\n",
                (tu_now_ns() - t0) / 1e6);
  RC(posh_rwlock_readers(f->h, rw), 0);
  RC(posh_rwlock_unlock(f->h, rw), 0);

  /* Writer dies; a writer is next and does not repair: not recoverable. */
  p = fork_child(child_rw_wrlock_and_die, f, &rw);
  RC(wait_child(p, 10 * TU_SEC), 0);
  RC(posh_rwlock_wrlock(f->h, rw, 5 * TU_SEC), POSH_EOWNERDEAD);
  RC(posh_rwlock_unlock(f->h, rw), 0);
  RC(posh_rwlock_wrlock(f->h, rw, 0), POSH_ENOTRECOVERABLE);
  RC(posh_rwlock_rdlock(f->h, rw, 0), POSH_ENOTRECOVERABLE);
  int want[2] = {POSH_ENOTRECOVERABLE, 2};
  p = fork_child(child_expect, f, want);
  RC(wait_child(p, 10 * TU_SEC), 0);
}

/* ========================================================================
 * Timeouts.
 * ====================================================================== */
struct holder {
  struct fx *f;
  posh_off_t obj;
  int kind; /* 0 lock, 1 rlock, 2 rwlock write */
  posh_atomic_t held, release;
};

static void *thr_hold(void *p) {
  struct holder *a = p;
  posh_heap_t *h = a->f->h;
  int r = a->kind == 0   ? posh_lock_acquire(h, a->obj, TU_SEC)
          : a->kind == 1 ? posh_rlock_acquire(h, a->obj, TU_SEC)
                         : posh_rwlock_wrlock(h, a->obj, TU_SEC);
  posh_atomic_store_release(&a->held, r == 0 ? 1 : 2);
  while (!posh_atomic_load_acquire(&a->release))
    tu_sleep_ns(TU_MS);
  if (a->kind == 0)
    posh_lock_release(h, a->obj);
  else if (a->kind == 1)
    posh_rlock_release(h, a->obj);
  else
    posh_rwlock_unlock(h, a->obj);
  return NULL;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Proves: every blocking call times out no earlier than asked and, in the
 * median, less than 10 ms late (worst case checked with slack for a noisy
 * 2-vCPU machine). */
static void test_timeouts(void **state) {
  struct fx *f = *state;
  posh_heap_t *h = f->h;
  enum { SAMPLES = 5 };
  const int64_t T = 20 * TU_MS;
  const char *names[] = {"lock", "rlock", "sem", "event", "cond", "barrier",
                         "rw.rdlock", "rw.wrlock"};
  posh_off_t obj[8];
  RC(posh_lock_create(h, NULL, 0, &obj[0]), 0);
  RC(posh_rlock_create(h, NULL, 0, &obj[1]), 0);
  RC(posh_sem_create(h, NULL, 0, POSH_SEM_ROBUST, &obj[2]), 0);
  RC(posh_event_create(h, NULL, 0, &obj[3]), 0);
  RC(posh_cond_create(h, NULL, POSH_OFF_NULL, 0, &obj[4]), 0);
  RC(posh_barrier_create(h, NULL, 2, 0, &obj[5]), 0);
  RC(posh_rwlock_create(h, NULL, 0, &obj[6]), 0);
  obj[7] = obj[6];
  struct holder hold[3] = {{f, obj[0], 0, 0, 0}, {f, obj[1], 1, 0, 0},
                           {f, obj[6], 2, 0, 0}};
  pthread_t t[3];
  for (int i = 0; i < 3; i++) {
    assert_int_equal(pthread_create(&t[i], NULL, thr_hold, &hold[i]), 0);
    while (!posh_atomic_load_acquire(&hold[i].held))
      tu_sleep_ns(TU_MS);
    assert_int_equal(posh_atomic_load_relaxed(&hold[i].held), 1);
  }
  double worst_median = 0;
  for (int k = 0; k < 8; k++) {
    double late[SAMPLES];
    for (int i = 0; i < SAMPLES; i++) {
      int r;
      uint64_t t0 = tu_now_ns();
      switch (k) {
      case 0: r = posh_lock_acquire(h, obj[0], T); break;
      case 1: r = posh_rlock_acquire(h, obj[1], T); break;
      case 2: r = posh_sem_acquire(h, obj[2], T); break;
      case 3: r = posh_event_wait(h, obj[3], T); break;
      case 4:
        RC(posh_cond_acquire(h, obj[4], 0), 0);
        t0 = tu_now_ns();
        r = posh_cond_wait(h, obj[4], T);
        break;
      case 5: r = posh_barrier_wait(h, obj[5], T, NULL, NULL, NULL); break;
      case 6: r = posh_rwlock_rdlock(h, obj[6], T); break;
      default: r = posh_rwlock_wrlock(h, obj[7], T); break;
      }
      uint64_t dt = tu_now_ns() - t0;
      if (k == 4)
        RC(posh_cond_release(h, obj[4]), 0);
      if (k == 5)
        RC(posh_barrier_reset(h, obj[5]), 0);
      RC(r, POSH_ETIMEDOUT);
      assert_true(dt >= (uint64_t)T);
      late[i] = (double)(dt - (uint64_t)T) / 1e6;
    }
    qsort(late, SAMPLES, sizeof late[0], cmp_double);
    print_message("      %-10s timeout %d ms: late by median %.2f ms, max %.2f ms\n",
                  names[k], (int)(T / TU_MS), late[SAMPLES / 2], late[SAMPLES - 1]);
    if (late[SAMPLES / 2] > worst_median)
      worst_median = late[SAMPLES / 2];
    assert_true(late[SAMPLES - 1] < 200);
  }
  for (int i = 0; i < 3; i++) {
    posh_atomic_store_release(&hold[i].release, 1);
    pthread_join(t[i], NULL);
  }
  assert_true(worst_median < 10);
}

/* ========================================================================
 * Signals.
 * ====================================================================== */
static void on_usr1(int sig) { (void)sig; }

struct eintr_arg {
  struct fx *f;
  posh_off_t ev, sem, lock;
  int r_event, r_sem, r_lock;
  uint64_t dt_event;
  posh_atomic_t done;
};

static void *thr_eintr(void *p) {
  struct eintr_arg *a = p;
  uint64_t t0 = tu_now_ns();
  a->r_event = posh_event_wait(a->f->h, a->ev, 150 * TU_MS);
  a->dt_event = tu_now_ns() - t0;
  a->r_sem = posh_sem_acquire(a->f->h, a->sem, 5 * TU_SEC);
  a->r_lock = posh_lock_acquire(a->f->h, a->lock, 5 * TU_SEC);
  if (a->r_lock == 0)
    posh_lock_release(a->f->h, a->lock);
  posh_atomic_store_release(&a->done, 1);
  return NULL;
}

/* Proves: signals delivered to a sleeping waiter (EINTR from the futex)
 * neither end the wait early nor lose a wake-up. */
static void test_eintr(void **state) {
  struct fx *f = *state;
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1; /* no SA_RESTART: futex waits see EINTR */
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, &old);
  struct eintr_arg a = {.f = f};
  RC(posh_event_create(f->h, NULL, 0, &a.ev), 0);
  RC(posh_sem_create(f->h, NULL, 0, 0, &a.sem), 0);
  RC(posh_lock_create(f->h, NULL, 0, &a.lock), 0);
  RC(posh_lock_acquire(f->h, a.lock, 0), 0);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, thr_eintr, &a), 0);
  uint64_t start = tu_now_ns();
  int released_sem = 0, released_lock = 0;
  while (!posh_atomic_load_acquire(&a.done) && tu_now_ns() - start < 10 * TU_SEC) {
    pthread_kill(t, SIGUSR1);
    tu_sleep_ns(3 * TU_MS);
    uint64_t el = tu_now_ns() - start;
    if (!released_sem && el > 250 * TU_MS) {
      RC(posh_sem_release(f->h, a.sem, 1), 0);
      released_sem = 1;
    }
    if (!released_lock && el > 400 * TU_MS) {
      RC(posh_lock_release(f->h, a.lock), 0);
      released_lock = 1;
    }
  }
  pthread_join(t, NULL);
  sigaction(SIGUSR1, &old, NULL);
  RC(a.r_event, POSH_ETIMEDOUT);
  assert_true(a.dt_event >= 150 * TU_MS);
  RC(a.r_sem, 0);
  RC(a.r_lock, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
      cmocka_unit_test_setup_teardown(test_lock_semantics, setup, teardown),
      cmocka_unit_test_setup_teardown(test_lock_threads, setup, teardown),
      cmocka_unit_test_setup_teardown(test_lock_processes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_lock_owner_death, setup, teardown),
      cmocka_unit_test_setup_teardown(test_lock_waiter_notices_death, setup, teardown),
      cmocka_unit_test_setup_teardown(test_lock_kill_torture, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rlock, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sem_basic, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sem_processes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sem_robust, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cond_basic, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cond_prodcons, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cond_notify_n, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cond_notify_all_and_dead_waiter, setup, teardown),
      cmocka_unit_test_setup_teardown(test_event, setup, teardown),
      cmocka_unit_test_setup_teardown(test_barrier_processes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_barrier_broken, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rwlock_basic, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rwlock_processes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rwlock_no_starvation, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rwlock_death, setup, teardown),
      cmocka_unit_test_setup_teardown(test_timeouts, setup, teardown),
      cmocka_unit_test_setup_teardown(test_eintr, setup, teardown),
  };
  return cmocka_run_group_tests_name("sync", tests, NULL, NULL);
}
