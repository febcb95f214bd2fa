/* SPDX-License-Identifier: MIT */
/*
 * This file contains the Pipe benchmark: libposh Pipe against an OS pipe
 * pair (the transport of multiprocessing.Pipe) between a parent and a
 * forked child: 8-byte round trip, one-way 64-byte messages, and 1 MiB
 * messages.  The OS baseline frames messages as multiprocessing does (a
 * 4-byte length, then the bytes).  Every figure is the best of 3
 * time-bounded repetitions, printed as `BENCH <metric> <value> <unit>`,
 * followed by ratio lines.  BENCH_SCALE multiplies the length of each
 * repetition (default 0.4 s).
 */
#define _GNU_SOURCE
#include "posh.h"
#include "posh/pipe.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define REPS 3
#define BIG (1u << 20)

static double scale = 1.0;
static posh_heap_t *heap;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, int err) {
  fprintf(stderr, "bench_pipe: %s: %s\n", what,
          err < 0 ? posh_strerror(err) : strerror(err));
  exit(1);
}

/* ---- a transport: posh Pipe or OS pipe pair, one side each */
typedef struct tp {
  int os;
  posh_obj_t *end;  /* posh */
  posh_obj_t *peer; /* posh: the child's end, closed after the warm-up */
  int rfd, wfd;    /* os */
} tp_t;

static void full_write(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n) {
    ssize_t w = write(fd, c, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      die("write", errno);
    c += w;
    n -= (size_t)w;
  }
}
static int full_read(int fd, void *p, size_t n) {
  char *c = p;
  while (n) {
    ssize_t r = read(fd, c, n);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return -1;
    c += r;
    n -= (size_t)r;
  }
  return 0;
}

static unsigned char *scratch;

static void tp_send(tp_t *t, const void *buf, size_t len) {
  if (!t->os) {
    int r = posh_pipe_send(t->end, buf, len, -1);
    if (r)
      die("posh_pipe_send", r);
    return;
  }
  uint32_t n = (uint32_t)len;
  if (len <= 16384) { /* one write, as multiprocessing does for small ones */
    memcpy(scratch, &n, 4);
    memcpy(scratch + 4, buf, len);
    full_write(t->wfd, scratch, len + 4);
  } else {
    full_write(t->wfd, &n, 4);
    full_write(t->wfd, buf, len);
  }
}

/* -1 on EOF. */
static int tp_recv(tp_t *t, void *buf, size_t cap, size_t *len) {
  if (!t->os) {
    int r = posh_pipe_recv(t->end, buf, cap, len, -1);
    if (r == POSH_ECLOSED)
      return -1;
    if (r)
      die("posh_pipe_recv", r);
    return 0;
  }
  uint32_t n;
  if (full_read(t->rfd, &n, 4) || n > cap || full_read(t->rfd, buf, n))
    return -1;
  *len = n;
  return 0;
}

/* Child: echo (mode 0) or sink that acks every message of length 0
 * (mode 1), until EOF. */
static void child_loop(tp_t *t, int mode) {
  unsigned char *buf = malloc(BIG);
  size_t len;
  while (tp_recv(t, buf, BIG, &len) == 0) {
    if (mode == 0 || len == 0)
      tp_send(t, buf, len);
  }
  _exit(0);
}

/* Set up a pair, fork the child; the parent gets its side in *t. */
static pid_t start(int os, int mode, tp_t *t) {
  memset(t, 0, sizeof *t);
  t->os = os;
  posh_obj_t *a = NULL, *b = NULL;
  int p2c[2], c2p[2];
  if (!os) {
    int r = posh_pipe_create_sized(heap, 1, 256u << 10, &a, &b);
    if (r)
      die("posh_pipe_create", r);
  } else if (pipe(p2c) || pipe(c2p)) {
    die("pipe", errno);
  }
  pid_t pid = fork();
  if (pid == 0) {
    tp_t c = {os, b, NULL, os ? p2c[0] : -1, os ? c2p[1] : -1};
    /* As with OS pipes, the child closes the end it does not use: a forked
     * child holds a reference to every object its parent held, so the
     * parent's end would otherwise stay open here and its close would
     * never give us EOF. */
    if (os) {
      close(p2c[1]);
      close(c2p[0]);
    } else {
      posh_pipe_close(a);
    }
    child_loop(&c, mode);
  }
  if (pid < 0)
    die("fork", errno);
  if (os) {
    close(p2c[0]);
    close(c2p[1]);
    t->rfd = c2p[0];
    t->wfd = p2c[1];
  } else {
    t->end = a;
    t->peer = b;
  }
  return pid;
}

static void stop(tp_t *t, pid_t pid) {
  if (t->os) {
    close(t->wfd);
    close(t->rfd);
  } else {
    posh_pipe_close(t->end);
  }
  int st;
  waitpid(pid, &st, 0);
}

/* One repetition: returns the figure. */
static double run(int os, const char *what) {
  tp_t t;
  int mode = strcmp(what, "rtt") ? 1 : 0;
  pid_t pid = start(os, mode, &t);
  static unsigned char msg[BIG];
  size_t len;
  /* Warm-up.  The child has used its end after it (so it holds its own
   * reference): only then may the parent drop its copy, so that the
   * child sees EOF when the parent closes its end at the end. */
  tp_send(&t, msg, 8);
  if (mode == 1)
    tp_send(&t, msg, 0);
  if (tp_recv(&t, msg, BIG, &len))
    die("warm-up", 0);
  if (t.peer)
    posh_pipe_close(t.peer);
  uint64_t budget = (uint64_t)(0.4e9 * scale), t0 = now_ns(), n = 0;
  double fig = 0;
  if (!strcmp(what, "rtt")) {
    do {
      for (int i = 0; i < 100; i++) {
        tp_send(&t, msg, 8);
        tp_recv(&t, msg, BIG, &len);
      }
      n += 100;
    } while (now_ns() - t0 < budget);
    fig = (double)(now_ns() - t0) / 1e3 / (double)n; /* us */
  } else {
    size_t sz = strcmp(what, "big") ? 64 : BIG;
    unsigned batch = sz == BIG ? 4 : 1000;
    do {
      for (unsigned i = 0; i < batch; i++)
        tp_send(&t, msg, sz);
      tp_send(&t, msg, 0);
      tp_recv(&t, msg, BIG, &len);
      n += batch;
    } while (now_ns() - t0 < budget);
    double secs = (double)(now_ns() - t0) / 1e9;
    fig = sz == BIG ? (double)n * BIG / secs / 1e9 : (double)n / secs;
  }
  stop(&t, pid);
  return fig;
}

static double best(int os, const char *what, int lower_better) {
  double b = 0;
  for (int i = 0; i < REPS; i++) {
    double v = run(os, what);
    if (i == 0 || (lower_better ? v < b : v > b))
      b = v;
  }
  return b;
}

int main(void) {
  const char *s = getenv("BENCH_SCALE");
  if (s && atof(s) > 0)
    scale = atof(s);
  alarm((unsigned)(120 * scale) + 30);
  scratch = malloc(16384 + 4);
  posh_heap_options_t o = {.capacity = 256ull << 20};
  int r = posh_heap_create(NULL, &o, &heap);
  if (r)
    die("posh_heap_create", r);
  double rp = best(0, "rtt", 1), ro = best(1, "rtt", 1);
  printf("BENCH pipe.rtt.8B.posh %.2f us\n", rp);
  printf("BENCH pipe.rtt.8B.os %.2f us\n", ro);
  printf("BENCH pipe.rtt.8B.ratio %.2f x\n", rp / ro);
  double sp = best(0, "small", 0), so = best(1, "small", 0);
  printf("BENCH pipe.oneway.64B.posh %.0f msgs/s\n", sp);
  printf("BENCH pipe.oneway.64B.os %.0f msgs/s\n", so);
  printf("BENCH pipe.oneway.64B.ratio %.2f x\n", sp / so);
  double bp = best(0, "big", 0), bo = best(1, "big", 0);
  printf("BENCH pipe.oneway.1MiB.posh %.2f GB/s\n", bp);
  printf("BENCH pipe.oneway.1MiB.os %.2f GB/s\n", bo);
  printf("BENCH pipe.oneway.1MiB.ratio %.2f x\n", bp / bo);
  fflush(stdout);
  posh_heap_detach(heap);
  return 0;
}
