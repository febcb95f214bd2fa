/* SPDX-License-Identifier: MIT */
/*
 * This file contains the Queue benchmark: round trips between two processes
 * over two libposh queues against the machine's floor (a cache-line
 * ping-pong) and against pipes, Unix sockets and POSIX message queues; and
 * one-way throughput between a producer process and a consumer process for
 * 8 B, 64 B, 4 KiB and 1 MiB messages (plain single-message put/get), with
 * memcpy's bandwidth as the reference for the large case, and two
 * producers with two consumers for 64 B.  Every figure is the best of 3
 * repetitions, printed as `BENCH <metric> <value> <unit>`, then the two
 * ratios the targets are stated in.
 *
 * Usage: bench_queue [FILTER...]   (run only metrics containing a FILTER)
 * BENCH_SCALE multiplies the length of every repetition.
 */
#define _GNU_SOURCE
#include "posh.h"
#include "posh/queue.h"

#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
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
  fprintf(stderr, "bench_queue: %s: %s\n", what,
          err < 0 ? posh_strerror(err) : strerror(err));
  exit(1);
}

/* Shared control block (MAP_SHARED, made before the forks). */
struct ctl {
  volatile uint64_t ping; /* own cache line: spin ping-pong */
  char pad0[56];
  volatile uint64_t pong;
  char pad1[56];
  volatile int go, stop;
  volatile uint64_t ops[8]; /* per child: messages put (0..3), got (4..7) */
};
static struct ctl *ctl;

static pid_t spawn(void (*fn)(void *), void *arg) {
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0)
    die("fork", errno);
  if (pid == 0) {
    alarm(120); /* a hang ends the benchmark instead of the machine */
    fn(arg);
    _exit(0);
  }
  return pid;
}

static void reap(pid_t pid) {
  int st;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
    ;
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    fprintf(stderr, "bench_queue: child failed (status %d)\n", st);
    exit(1);
  }
}

static uint64_t budget(double seconds) {
  return (uint64_t)(seconds * scale * 1e9);
}

static void print(const char *metric, double v, const char *unit) {
  printf("BENCH %s %.6g %s\n", metric, v, unit);
  fflush(stdout);
}

/* ------------------------------------------------------------------------
 * Round trips (microseconds per round trip).
 * ---------------------------------------------------------------------- */
/* Machine floor: one cache line each way, spinning. */
static void spin_child(void *arg) {
  (void)arg;
  uint64_t v = 0;
  for (;;) {
    uint64_t p;
    while ((p = ctl->ping) == v)
      ;
    if (p == UINT64_MAX)
      return;
    v = p;
    ctl->pong = p;
  }
}

static double spin_rtt(void) {
  ctl->ping = 0;
  ctl->pong = 0;
  pid_t kid = spawn(spin_child, NULL);
  uint64_t n = 0, t0 = 0, end = budget(0.4);
  for (uint64_t i = 1;; i++) {
    if (i == 1000)
      t0 = now_ns(); /* after a warm-up */
    ctl->ping = i;
    while (ctl->pong != i)
      ;
    if (i > 1000 && (i & 1023) == 0 && now_ns() - t0 > end) {
      n = i - 1000;
      break;
    }
  }
  double us = (double)(now_ns() - t0) / 1e3 / (double)n;
  ctl->ping = UINT64_MAX;
  reap(kid);
  return us;
}

static posh_obj_t *q_ping, *q_pong;

static void posh_echo(void *arg) {
  (void)arg;
  char b[64];
  size_t len;
  for (;;) {
    int r = posh_queue_get(q_ping, b, sizeof b, &len, POSH_FOREVER);
    if (r == POSH_ECLOSED)
      return;
    if (r)
      die("echo get", r);
    if ((r = posh_queue_put(q_pong, b, len, POSH_FOREVER)))
      die("echo put", r);
  }
}

static posh_obj_t *mkq_bytes(uint32_t cap, uint64_t max_bytes) {
  posh_queue_options_t o = {cap, 0, 0, max_bytes, 0, 0};
  posh_obj_t *q;
  int r = posh_queue_create(heap, NULL, &o, &q);
  if (r)
    die("queue_create", r);
  return q;
}
static posh_obj_t *mkq(uint32_t cap) { return mkq_bytes(cap, 0); }

static double posh_rtt(void) {
  q_ping = mkq(64);
  q_pong = mkq(64);
  pid_t kid = spawn(posh_echo, NULL);
  char b[64] = "8 bytes";
  size_t len;
  uint64_t n = 0, t0 = 0, end = budget(0.4);
  for (uint64_t i = 1;; i++) {
    if (i == 1000)
      t0 = now_ns();
    int r = posh_queue_put(q_ping, b, 8, POSH_FOREVER);
    if (r == 0)
      r = posh_queue_get(q_pong, b, sizeof b, &len, POSH_FOREVER);
    if (r)
      die("rtt", r);
    if (i > 1000 && (i & 255) == 0 && now_ns() - t0 > end) {
      n = i - 1000;
      break;
    }
  }
  double us = (double)(now_ns() - t0) / 1e3 / (double)n;
  posh_queue_close(q_ping);
  reap(kid);
  posh_obj_close(q_ping);
  posh_obj_close(q_pong);
  return us;
}

/* Baselines over file descriptors: fds[0] parent->child, fds[1] back. */
static int fd_a[2], fd_b[2];
static void fd_echo(void *arg) {
  (void)arg;
  char b[8];
  close(fd_a[1]); /* so that the parent's close is our EOF */
  close(fd_b[0]);
  for (;;) {
    ssize_t r = read(fd_a[0], b, 8);
    if (r <= 0)
      return;
    if (write(fd_b[1], b, (size_t)r) != r)
      return;
  }
}

static double fd_rtt(int sock) {
  if (sock) {
    int s1[2], s2[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, s1) ||
        socketpair(AF_UNIX, SOCK_STREAM, 0, s2))
      die("socketpair", errno);
    fd_a[0] = s1[0];
    fd_a[1] = s1[1];
    fd_b[0] = s2[0];
    fd_b[1] = s2[1];
  } else if (pipe(fd_a) || pipe(fd_b)) {
    die("pipe", errno);
  }
  pid_t kid = spawn(fd_echo, NULL);
  char b[8] = "8 bytes";
  uint64_t n = 0, t0 = 0, end = budget(0.4);
  for (uint64_t i = 1;; i++) {
    if (i == 200)
      t0 = now_ns();
    if (write(fd_a[1], b, 8) != 8 || read(fd_b[0], b, 8) != 8)
      die("fd rtt", errno);
    if (i > 200 && (i & 63) == 0 && now_ns() - t0 > end) {
      n = i - 200;
      break;
    }
  }
  double us = (double)(now_ns() - t0) / 1e3 / (double)n;
  close(fd_a[1]);
  reap(kid);
  close(fd_a[0]);
  close(fd_b[0]);
  close(fd_b[1]);
  return us;
}

static mqd_t mq_a, mq_b;
static void mq_echo(void *arg) {
  (void)arg;
  char b[64];
  for (;;) {
    ssize_t r = mq_receive(mq_a, b, sizeof b, NULL);
    if (r <= 0 || b[0] == 'X')
      return;
    if (mq_send(mq_b, b, (size_t)r, 0))
      return;
  }
}

static double mq_rtt(void) {
  char na[64], nb[64];
  snprintf(na, sizeof na, "/posh-bench-%d-mqa", (int)getpid());
  snprintf(nb, sizeof nb, "/posh-bench-%d-mqb", (int)getpid());
  struct mq_attr at = {0, 8, 64, 0, {0}};
  mq_a = mq_open(na, O_RDWR | O_CREAT | O_EXCL, 0600, &at);
  mq_b = mq_open(nb, O_RDWR | O_CREAT | O_EXCL, 0600, &at);
  mq_unlink(na);
  mq_unlink(nb);
  if (mq_a == (mqd_t)-1 || mq_b == (mqd_t)-1)
    return -1;
  pid_t kid = spawn(mq_echo, NULL);
  char b[64] = "8 bytes";
  uint64_t n = 0, t0 = 0, end = budget(0.4);
  for (uint64_t i = 1;; i++) {
    if (i == 200)
      t0 = now_ns();
    if (mq_send(mq_a, b, 8, 0) || mq_receive(mq_b, b, sizeof b, NULL) != 8)
      die("mq rtt", errno);
    if (i > 200 && (i & 63) == 0 && now_ns() - t0 > end) {
      n = i - 200;
      break;
    }
  }
  double us = (double)(now_ns() - t0) / 1e3 / (double)n;
  b[0] = 'X';
  mq_send(mq_a, b, 1, 0);
  reap(kid);
  mq_close(mq_a);
  mq_close(mq_b);
  return us;
}

/* ------------------------------------------------------------------------
 * One-way throughput.
 * ---------------------------------------------------------------------- */
static posh_obj_t *q_tp;
static size_t tp_size;
static unsigned char *tp_buf;

/* Producer: put until stop, counting. */
static void tp_producer(void *arg) {
  int idx = (int)(intptr_t)arg;
  uint64_t n = 0;
  while (!ctl->go)
    ;
  while (!ctl->stop) {
    int r = posh_queue_put(q_tp, tp_buf, tp_size, 100000000);
    if (r == POSH_ECLOSED)
      break;
    if (r == 0)
      n++;
    else if (r != POSH_ETIMEDOUT)
      die("tp put", r);
  }
  ctl->ops[idx] = n;
}

static void tp_consumer(void *arg) {
  int idx = (int)(intptr_t)arg;
  unsigned char *b = malloc(tp_size + 64);
  uint64_t n = 0;
  size_t len;
  while (!ctl->go)
    ;
  for (;;) {
    int r = posh_queue_get(q_tp, b, tp_size + 64, &len, POSH_FOREVER);
    if (r == POSH_ECLOSED)
      break;
    if (r)
      die("tp get", r);
    n++;
  }
  free(b);
  ctl->ops[idx] = n;
}

/* msgs/s delivered with np producer and nc consumer processes. */
static double throughput(size_t size, int np, int nc, double seconds) {
  /* Large messages: a byte bound (4 MiB) keeps a few blocks circulating
   * (see docs/objects/queue.md) instead of gigabytes of fresh ones. */
  q_tp = mkq_bytes(4096, size >= 65536 ? 4u << 20 : 0);
  tp_size = size;
  tp_buf = malloc(size + 1);
  memset(tp_buf, 7, size + 1);
  ctl->go = ctl->stop = 0;
  memset((void *)ctl->ops, 0, sizeof ctl->ops);
  pid_t prod[4], cons[4];
  for (int i = 0; i < nc; i++)
    cons[i] = spawn(tp_consumer, (void *)(intptr_t)(4 + i));
  for (int i = 0; i < np; i++)
    prod[i] = spawn(tp_producer, (void *)(intptr_t)i);
  usleep(20000);
  uint64_t t0 = now_ns();
  ctl->go = 1;
  usleep((useconds_t)(budget(seconds) / 1000));
  ctl->stop = 1;
  for (int i = 0; i < np; i++)
    reap(prod[i]);
  /* Consumers drain what is left, then see the close; count only what
   * the producers put, over the time until the queue is drained. */
  posh_queue_close(q_tp);
  for (int i = 0; i < nc; i++)
    reap(cons[i]);
  uint64_t t1 = now_ns(), put = 0, got = 0;
  for (int i = 0; i < 4; i++) {
    put += ctl->ops[i];
    got += ctl->ops[4 + i];
  }
  if (got != put) {
    fprintf(stderr, "bench_queue: %llu put, %llu got\n",
            (unsigned long long)put, (unsigned long long)got);
    exit(1);
  }
  posh_obj_close(q_tp);
  free(tp_buf);
  return (double)put / ((double)(t1 - t0) / 1e9);
}

static double memcpy_gbs(void) {
  size_t sz = 64u << 20;
  unsigned char *a = malloc(sz), *b = malloc(sz);
  memset(a, 1, sz);
  memset(b, 2, sz);
  uint64_t n = 0, t0 = now_ns(), t;
  do {
    memcpy(n & 1 ? a : b, n & 1 ? b : a, sz);
    n++;
    t = now_ns();
  } while (t - t0 < budget(0.3));
  free(a);
  free(b);
  return (double)n * (double)sz / ((double)(t - t0));
}

/* Best of REPS: min for times, max for rates. */
#define BEST(expr, lower_is_better)                                            \
  ({                                                                           \
    double best_ = 0;                                                          \
    for (int rep_ = 0; rep_ < REPS; rep_++) {                                  \
      double v_ = (expr);                                                      \
      if (rep_ == 0 || (lower_is_better ? v_ < best_ : v_ > best_))            \
        best_ = v_;                                                            \
    }                                                                          \
    best_;                                                                     \
  })

int main(int argc, char **argv) {
  const char *s = getenv("BENCH_SCALE");
  if (s && atof(s) > 0)
    scale = atof(s);
  nfilters = argc - 1;
  filters = argv + 1;
  ctl = mmap(NULL, sizeof *ctl, PROT_READ | PROT_WRITE,
             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (ctl == MAP_FAILED)
    die("mmap", errno);
  posh_heap_options_t o = {1ull << 30, 0, 0, 0, 0};
  int r = posh_heap_create(NULL, &o, &heap);
  if (r)
    die("heap_create", r);
  double spin = 0, rtt = 0, mc = 0, big = 0;
  if (wanted("queue.spin_rtt") || wanted("posh_per_spin"))
    print("queue.spin_rtt", spin = BEST(spin_rtt(), 1), "us");
  if (wanted("queue.rtt.8B.posh"))
    print("queue.rtt.8B.posh", rtt = BEST(posh_rtt(), 1), "us");
  if (wanted("queue.rtt.8B.pipe"))
    print("queue.rtt.8B.pipe", BEST(fd_rtt(0), 1), "us");
  if (wanted("queue.rtt.8B.unixsock"))
    print("queue.rtt.8B.unixsock", BEST(fd_rtt(1), 1), "us");
  if (wanted("queue.rtt.8B.mqueue"))
    print("queue.rtt.8B.mqueue", BEST(mq_rtt(), 1), "us");
  if (wanted("queue.1p1c.8B.posh"))
    print("queue.1p1c.8B.posh", BEST(throughput(8, 1, 1, 0.5), 0), "msgs/s");
  if (wanted("queue.1p1c.64B.posh"))
    print("queue.1p1c.64B.posh", BEST(throughput(64, 1, 1, 0.5), 0), "msgs/s");
  if (wanted("queue.1p1c.4KiB.posh"))
    print("queue.1p1c.4KiB.posh", BEST(throughput(4096, 1, 1, 0.5), 0),
          "msgs/s");
  if (wanted("queue.1p1c.1MiB.posh"))
    print("queue.1p1c.1MiB.posh",
          big = BEST(throughput(1u << 20, 1, 1, 0.8), 0) * (1u << 20) / 1e9,
          "GB/s");
  if (wanted("queue.memcpy") || big > 0)
    print("queue.memcpy", mc = BEST(memcpy_gbs(), 0), "GB/s");
  if (wanted("queue.2p2c.64B.posh"))
    print("queue.2p2c.64B.posh", BEST(throughput(64, 2, 2, 0.5), 0), "msgs/s");
  if (spin > 0 && rtt > 0)
    print("queue.rtt.8B.posh_per_spin", rtt / spin, "x");
  if (mc > 0 && big > 0)
    print("queue.1p1c.1MiB.posh_per_memcpy", big / mc, "x");
  posh_heap_detach(heap);
  return 0;
}
