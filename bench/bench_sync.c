/* SPDX-License-Identifier: MIT */
/*
 * This file contains the sync/ benchmark: libposh's Lock against glibc's
 * process-shared robust mutex (uncontended, and two processes incrementing
 * a shared counter), and a wake-up round trip between two processes over
 * libposh Events (and a Condition) against a pair of POSIX semaphores.
 * Every figure is the best of 3 time-bounded repetitions after a warm-up,
 * printed as `BENCH <metric> <value> <unit>`, followed by ratio lines
 * (posh / baseline, in the metric's unit).
 *
 * Usage: bench_sync [FILTER...]   (run only metrics containing a FILTER)
 * BENCH_SCALE multiplies the length of every repetition.  The ping-pongs
 * wait without timeouts on both sides (as sem_wait does); an alarm ends a
 * run that hangs.
 */
#define _GNU_SOURCE
#include "posh.h"
#include "posh/sync.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define REPS 3

static double scale = 1.0;
static int nfilters;
static char **filters;
static posh_heap_t *heap;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int wanted(const char *metric) {
  if (nfilters == 0)
    return 1;
  for (int i = 0; i < nfilters; i++)
    if (strstr(metric, filters[i]))
      return 1;
  return 0;
}

static void die(const char *what, int err) {
  fprintf(stderr, "bench_sync: %s: %s\n", what, err < 0 ? posh_strerror(err) : strerror(err));
  exit(1);
}

/* Shared memory for the baselines and the two-process handshakes. */
struct shared {
  pthread_mutex_t mutex;
  sem_t sem_ping, sem_pong;
  volatile uint64_t counter;
  volatile int go, stop;
  volatile uint64_t child_ops;
  char pad[64];
};
static struct shared *sh;

/* ------------------------------------------------------------------------
 * Uncontended lock+unlock (ns per pair).
 * ---------------------------------------------------------------------- */
static double unc_posh(posh_off_t lock, uint64_t budget_ns) {
  const int batch = 100000;
  uint64_t n = 0, t0 = now_ns(), t;
  do {
    for (int i = 0; i < batch; i++) {
      posh_lock_acquire(heap, lock, POSH_FOREVER);
      posh_lock_release(heap, lock);
    }
    n += batch;
    t = now_ns();
  } while (t - t0 < budget_ns);
  return (double)(t - t0) / (double)n;
}

static double unc_pthread(uint64_t budget_ns) {
  const int batch = 100000;
  uint64_t n = 0, t0 = now_ns(), t;
  do {
    for (int i = 0; i < batch; i++) {
      pthread_mutex_lock(&sh->mutex);
      pthread_mutex_unlock(&sh->mutex);
    }
    n += batch;
    t = now_ns();
  } while (t - t0 < budget_ns);
  return (double)(t - t0) / (double)n;
}

/* ------------------------------------------------------------------------
 * Two processes incrementing a shared counter under the lock (ops/s).
 * ---------------------------------------------------------------------- */
static void contend_loop(int use_posh, posh_off_t lock, uint64_t *ops) {
  uint64_t n = 0;
  while (!sh->go)
    ;
  while (!sh->stop) {
    for (int i = 0; i < 64; i++) {
      if (use_posh)
        posh_lock_acquire(heap, lock, POSH_FOREVER);
      else
        pthread_mutex_lock(&sh->mutex);
      sh->counter++;
      if (use_posh)
        posh_lock_release(heap, lock);
      else
        pthread_mutex_unlock(&sh->mutex);
    }
    n += 64;
  }
  *ops = n;
}

static void *stopper(void *arg) {
  uint64_t budget = *(uint64_t *)arg;
  struct timespec ts = {(time_t)(budget / 1000000000ull),
                        (long)(budget % 1000000000ull)};
  nanosleep(&ts, NULL);
  sh->stop = 1;
  return NULL;
}

static double contended(int use_posh, posh_off_t lock, uint64_t budget_ns) {
  sh->go = 0;
  sh->stop = 0;
  sh->counter = 0;
  sh->child_ops = 0;
  fflush(NULL);
  pid_t p = fork();
  if (p < 0)
    die("fork", errno);
  if (p == 0) {
    uint64_t ops;
    contend_loop(use_posh, lock, &ops);
    sh->child_ops = ops;
    _exit(0);
  }
  usleep(2000);
  uint64_t t0 = now_ns();
  sh->go = 1;
  /* The parent contends too; a helper thread ends the run. */
  uint64_t ops = 0;
  pthread_t timer;
  pthread_create(&timer, NULL, stopper, &budget_ns);
  contend_loop(use_posh, lock, &ops);
  uint64_t t = now_ns();
  pthread_join(timer, NULL);
  int st;
  waitpid(p, &st, 0);
  uint64_t total = ops + sh->child_ops;
  if (sh->counter != total) {
    fprintf(stderr, "bench_sync: lost updates: counter %llu, ops %llu\n",
            (unsigned long long)sh->counter, (unsigned long long)total);
    exit(1);
  }
  return (double)total / ((double)(t - t0) / 1e9);
}

/* ------------------------------------------------------------------------
 * Wake-up round trip between two processes (µs).
 * ---------------------------------------------------------------------- */
static double rt_events(posh_off_t ping, posh_off_t pong, uint64_t budget_ns) {
  sh->stop = 0;
  fflush(NULL);
  pid_t p = fork();
  if (p < 0)
    die("fork", errno);
  if (p == 0) {
    for (;;) {
      if (posh_event_wait(heap, ping, POSH_FOREVER) != 0)
        _exit(1);
      posh_event_clear(heap, ping);
      if (sh->stop) {
        posh_event_set(heap, pong);
        _exit(0);
      }
      posh_event_set(heap, pong);
    }
  }
  uint64_t n = 0, t0 = now_ns(), t;
  do {
    for (int i = 0; i < 100; i++) {
      posh_event_set(heap, ping);
      if (posh_event_wait(heap, pong, POSH_FOREVER) != 0)
        die("event round trip", POSH_ETIMEDOUT);
      posh_event_clear(heap, pong);
    }
    n += 100;
    t = now_ns();
  } while (t - t0 < budget_ns);
  sh->stop = 1;
  posh_event_set(heap, ping);
  posh_event_wait(heap, pong, POSH_FOREVER);
  posh_event_clear(heap, pong);
  waitpid(p, NULL, 0);
  return (double)(t - t0) / (double)n / 1000.0;
}

/* Condition ping-pong: a turn variable under the condition's lock. */
struct turn {
  volatile int turn;
};

static double rt_cond(posh_off_t cond, struct turn *tv, uint64_t budget_ns) {
  sh->stop = 0;
  tv->turn = 0;
  fflush(NULL);
  pid_t p = fork();
  if (p < 0)
    die("fork", errno);
  if (p == 0) {
    for (;;) {
      posh_cond_acquire(heap, cond, POSH_FOREVER);
      while (tv->turn != 1)
        if (posh_cond_wait(heap, cond, POSH_FOREVER) == POSH_ETIMEDOUT)
          _exit(1);
      int stop = sh->stop;
      tv->turn = 0;
      posh_cond_notify(heap, cond, 1);
      posh_cond_release(heap, cond);
      if (stop)
        _exit(0);
    }
  }
  uint64_t n = 0, t0 = now_ns(), t;
  do {
    for (int i = 0; i < 100; i++) {
      posh_cond_acquire(heap, cond, POSH_FOREVER);
      tv->turn = 1;
      posh_cond_notify(heap, cond, 1);
      while (tv->turn != 0)
        if (posh_cond_wait(heap, cond, POSH_FOREVER) == POSH_ETIMEDOUT)
          die("condition round trip", POSH_ETIMEDOUT);
      posh_cond_release(heap, cond);
    }
    n += 100;
    t = now_ns();
  } while (t - t0 < budget_ns);
  posh_cond_acquire(heap, cond, POSH_FOREVER);
  sh->stop = 1;
  tv->turn = 1;
  posh_cond_notify(heap, cond, 1);
  while (tv->turn != 0)
    posh_cond_wait(heap, cond, POSH_FOREVER);
  posh_cond_release(heap, cond);
  waitpid(p, NULL, 0);
  return (double)(t - t0) / (double)n / 1000.0;
}

static double rt_sem(uint64_t budget_ns) {
  sh->stop = 0;
  fflush(NULL);
  pid_t p = fork();
  if (p < 0)
    die("fork", errno);
  if (p == 0) {
    for (;;) {
      while (sem_wait(&sh->sem_ping) != 0)
        ;
      int stop = sh->stop;
      sem_post(&sh->sem_pong);
      if (stop)
        _exit(0);
    }
  }
  uint64_t n = 0, t0 = now_ns(), t;
  do {
    for (int i = 0; i < 100; i++) {
      sem_post(&sh->sem_ping);
      while (sem_wait(&sh->sem_pong) != 0)
        ;
    }
    n += 100;
    t = now_ns();
  } while (t - t0 < budget_ns);
  sh->stop = 1;
  sem_post(&sh->sem_ping);
  while (sem_wait(&sh->sem_pong) != 0)
    ;
  waitpid(p, NULL, 0);
  return (double)(t - t0) / (double)n / 1000.0;
}

/* ------------------------------------------------------------------------ */
static void report(const char *metric, double v, const char *unit) {
  printf("BENCH %s %.4g %s\n", metric, v, unit);
  fflush(stdout);
}

static double best_min(double a, double b) { return a < b ? a : b; }
static double best_max(double a, double b) { return a > b ? a : b; }

int main(int argc, char **argv) {
  alarm(300); /* a hung ping-pong fails the run instead of hanging it */
  nfilters = argc - 1;
  filters = argv + 1;
  const char *sc = getenv("BENCH_SCALE");
  if (sc && atof(sc) > 0)
    scale = atof(sc);
  uint64_t budget = (uint64_t)(300e6 * scale); /* 0.3 s per repetition */

  sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (sh == MAP_FAILED)
    die("mmap", errno);
  memset(sh, 0, sizeof *sh);
  pthread_mutexattr_t ma;
  pthread_mutexattr_init(&ma);
  pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(&sh->mutex, &ma);
  sem_init(&sh->sem_ping, 1, 0);
  sem_init(&sh->sem_pong, 1, 0);

  char name[64];
  snprintf(name, sizeof name, "/posh-bench-%d-sync", (int)getpid());
  posh_heap_options_t o = {.capacity = 64ull << 20};
  int r = posh_heap_create(name, &o, &heap);
  if (r)
    die("posh_heap_create", r);
  posh_heap_unlink(name); /* forked children share the mapping */

  posh_off_t lock, ping, pong, cond;
  if ((r = posh_lock_create(heap, NULL, 0, &lock)) ||
      (r = posh_event_create(heap, NULL, 0, &ping)) ||
      (r = posh_event_create(heap, NULL, 0, &pong)) ||
      (r = posh_cond_create(heap, NULL, POSH_OFF_NULL, 0, &cond)))
    die("create", r);
  struct turn *tv = posh_calloc(heap, 1, 64);
  if (!tv)
    die("posh_calloc", posh_last_error());

  double a, b;
  if (wanted("sync.lock.uncontended")) {
    unc_posh(lock, budget / 4);
    unc_pthread(budget / 4);
    a = b = 1e30;
    for (int i = 0; i < REPS; i++) {
      a = best_min(a, unc_posh(lock, budget));
      b = best_min(b, unc_pthread(budget));
    }
    report("sync.lock.uncontended.posh", a, "ns");
    report("sync.lock.uncontended.pthread_robust", b, "ns");
    report("sync.lock.uncontended.ratio", a / b, "x");
  }
  if (wanted("sync.lock.contended2p")) {
    contended(1, lock, budget / 4);
    a = b = 0;
    for (int i = 0; i < REPS; i++) {
      a = best_max(a, contended(1, lock, budget));
      b = best_max(b, contended(0, lock, budget));
    }
    report("sync.lock.contended2p.posh", a, "ops/s");
    report("sync.lock.contended2p.pthread_robust", b, "ops/s");
    report("sync.lock.contended2p.ratio", a / b, "x");
  }
  if (wanted("sync.wake.roundtrip")) {
    rt_events(ping, pong, budget / 4);
    a = b = 1e30;
    for (int i = 0; i < REPS; i++) {
      a = best_min(a, rt_events(ping, pong, budget));
      b = best_min(b, rt_sem(budget));
    }
    report("sync.wake.roundtrip.posh", a, "us");
    report("sync.wake.roundtrip.sem", b, "us");
    report("sync.wake.roundtrip.ratio", a / b, "x");
  }
  if (wanted("sync.wake.cond_roundtrip")) {
    double c = 1e30;
    rt_cond(cond, tv, budget / 4);
    for (int i = 0; i < REPS; i++)
      c = best_min(c, rt_cond(cond, tv, budget));
    report("sync.wake.cond_roundtrip.posh", c, "us");
  }
  posh_heap_detach(heap);
  return 0;
}
