/* SPDX-License-Identifier: MIT */
/*
 * This file contains the tests of the Pipe object (objects/pipe.c):
 * message boundaries for every size (also far larger than the ring),
 * duplex and one-way pipes, EOF when the peer closes or dies, poll and the
 * eventfd, timeouts, bad input, forked and exec'd peers (tests/pipe_child
 * attaches by name), and SIGKILL of a sender or a receiver in the middle
 * of a message (the others continue, nothing partial shows).
 * POSH_TEST_KILLS sets the number of kills of the kill tests (default 20).
 */
#include "testutil.h"
#include "posh/pipe.h"

#include <pthread.h>
#include <sys/select.h>

#define SEC 1000000000ll

static posh_heap_t *heap;
static char heap_name[64];

static int setup(void **state) {
  (void)state;
  tu_heap_name(heap_name, sizeof heap_name, "pipe");
  posh_heap_options_t o = {.capacity = 64ull << 20};
  int r = posh_heap_create(heap_name, &o, &heap);
  if (r)
    fprintf(stderr, "posh_heap_create: %s\n", posh_err_name(r));
  alarm(300);
  return r ? -1 : 0;
}

static int teardown(void **state) {
  tu_reap_kids();
  alarm(0);
  assert_int_equal(tu_check(heap), 0);
  posh_heap_detach(heap);
  posh_heap_unlink(heap_name);
  return tu_group_teardown(state);
}

static int kills(void) {
  const char *e = getenv("POSH_TEST_KILLS");
  return e && *e ? atoi(e) : 20;
}

/* Message `seq` of length len: an 8-byte sequence number, then pattern. */
static void make_msg(unsigned char *m, size_t len, uint64_t seq) {
  tu_fill(m, len, seq);
  if (len >= 8)
    memcpy(m, &seq, 8);
}
/* Exact check: regenerate and compare. */
static int msg_exact(const unsigned char *m, size_t len, uint64_t *seq_out) {
  uint64_t seq = 0;
  if (len < 8)
    return 0;
  memcpy(&seq, m, 8);
  *seq_out = seq;
  for (size_t i = 8; i < len; i++)
    if (m[i] != tu_pattern_byte(seq, i))
      return 0;
  return 1;
}

/* Length of message seq in the stress tests: mostly small, some far
 * larger than a 4 KiB ring. */
static size_t len_of(uint64_t seq) {
  uint64_t x = seq * 0x9E3779B97F4A7C15ull;
  x ^= x >> 29;
  switch (x % 8) {
  case 0: return 8 + (size_t)(x >> 8) % 40000; /* streamed */
  case 1: return 8 + (size_t)(x >> 8) % 4000;
  default: return 8 + (size_t)(x >> 8) % 200;
  }
}

/* ------------------------------------------------------------------------ */
struct one_arg {
  posh_obj_t *end;
  const void *buf;
  size_t len;
  int rc;
};
static void *send_one(void *p) {
  struct one_arg *a = p;
  a->rc = posh_pipe_send(a->end, a->buf, a->len, 20 * SEC);
  return NULL;
}

struct sender_arg {
  posh_obj_t *end;
  size_t n;
  size_t maxlen;
};
static void *sender_thread(void *p) {
  struct sender_arg *a = p;
  unsigned char *m = malloc(a->maxlen + 8);
  for (size_t i = 0; i < a->n; i++) {
    size_t len = 8 + (i * 7919) % a->maxlen;
    make_msg(m, len, i);
    if (posh_pipe_send(a->end, m, len, 20 * SEC) != 0)
      break;
  }
  free(m);
  return NULL;
}

/* Proves: messages of every size (0, 1, ring-sized, many times the ring)
 * keep their boundaries and contents in both directions of a duplex pipe,
 * including while a concurrent sender streams through a small ring. */
static void test_basic_duplex(void **state) {
  (void)state;
  posh_obj_t *a, *b;
  assert_int_equal(posh_pipe_create_sized(heap, 1, 4096, &a, &b), 0);
  unsigned fl;
  assert_int_equal(posh_pipe_flags(a, &fl), 0);
  assert_int_equal(fl, POSH_PIPE_READABLE | POSH_PIPE_WRITABLE);
  static const size_t sizes[] = {0, 1, 7, 16, 100, 4064, 4065, 5000, 100000};
  unsigned char *buf = malloc(200000), *out = malloc(200000);
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    size_t len = sizes[i];
    tu_fill(buf, len, i);
    /* a -> b with a thread sending (the large ones stream), then b -> a. */
    struct one_arg oa = {a, buf, len, -1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, send_one, &oa), 0);
    size_t got = 99;
    assert_int_equal(posh_pipe_recv(b, out, 200000, &got, 20 * SEC), 0);
    pthread_join(th, NULL);
    assert_int_equal(oa.rc, 0);
    assert_int_equal(got, len);
    assert_memory_equal(out, buf, len);
    oa.end = b;
    assert_int_equal(pthread_create(&th, NULL, send_one, &oa), 0);
    void *m = NULL;
    assert_int_equal(posh_pipe_recv_alloc(a, &m, &got, 20 * SEC), 0);
    pthread_join(th, NULL);
    assert_int_equal(got, len);
    assert_memory_equal(m, buf, len);
    free(m);
  }
  /* Streamed: a thread sends 200 messages up to 100 KB through 4 KiB. */
  struct sender_arg sa = {a, 200, 100000};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, sender_thread, &sa), 0);
  for (size_t i = 0; i < 200; i++) {
    void *m = NULL;
    size_t len;
    assert_int_equal(posh_pipe_recv_alloc(b, &m, &len, 20 * SEC), 0);
    uint64_t seq = 0;
    assert_int_equal(len, 8 + (i * 7919) % 100000);
    assert_true(msg_exact(m, len, &seq));
    assert_int_equal(seq, i);
    free(m);
  }
  pthread_join(th, NULL);
  /* Several small messages queue up and come out one by one. */
  for (int i = 0; i < 10; i++)
    assert_int_equal(posh_pipe_send(b, &i, sizeof i, 0), 0);
  for (int i = 0; i < 10; i++) {
    int v = -1;
    size_t got;
    assert_int_equal(posh_pipe_recv(a, &v, sizeof v, &got, 0), 0);
    assert_int_equal(got, sizeof v);
    assert_int_equal(v, i);
  }
  /* EMSGSIZE keeps the message. */
  assert_int_equal(posh_pipe_send(a, "abcdef", 6, 0), 0);
  size_t got = 0;
  char small[4];
  assert_int_equal(posh_pipe_recv(b, small, sizeof small, &got, 0), POSH_EMSGSIZE);
  assert_int_equal(got, 6);
  char big[16];
  assert_int_equal(posh_pipe_recv(b, big, sizeof big, &got, 0), 0);
  assert_int_equal(got, 6);
  assert_memory_equal(big, "abcdef", 6);
  /* A zero-length message still gets a buffer from recv_alloc. */
  assert_int_equal(posh_pipe_send(a, NULL, 0, 0), 0);
  void *z = NULL;
  assert_int_equal(posh_pipe_recv_alloc(b, &z, &got, 0), 0);
  assert_non_null(z);
  assert_int_equal(got, 0);
  free(z);
  free(buf);
  free(out);
  assert_int_equal(posh_pipe_close(a), 0);
  assert_int_equal(posh_pipe_close(b), 0);
}

/* Proves: a one-way pipe's end0 only receives and end1 only sends
 * (POSH_EPERM otherwise), as multiprocessing.Pipe(duplex=False). */
static void test_one_way(void **state) {
  (void)state;
  posh_obj_t *r, *w;
  assert_int_equal(posh_pipe_create(heap, 0, &r, &w), 0);
  unsigned fl;
  assert_int_equal(posh_pipe_flags(r, &fl), 0);
  assert_int_equal(fl, POSH_PIPE_READABLE);
  assert_int_equal(posh_pipe_flags(w, &fl), 0);
  assert_int_equal(fl, POSH_PIPE_WRITABLE);
  size_t got;
  char c;
  assert_int_equal(posh_pipe_send(r, "x", 1, 0), POSH_EPERM);
  assert_int_equal(posh_pipe_recv(w, &c, 1, &got, 0), POSH_EPERM);
  assert_int_equal(posh_pipe_poll(w, 0), POSH_EPERM);
  assert_int_equal(posh_pipe_send(w, "x", 1, 0), 0);
  assert_int_equal(posh_pipe_recv(r, &c, 1, &got, 0), 0);
  assert_int_equal(c, 'x');
  posh_pipe_close(r);
  posh_pipe_close(w);
}

/* Proves: after the peer closes, the reader gets what was left, then
 * POSH_ECLOSED (EOF); sending to a closed peer gets POSH_ECLOSED; the
 * channel object is freed when both ends are gone (no leak). */
static void test_eof(void **state) {
  (void)state;
  uint64_t before = tu_bytes_in_use(heap);
  posh_obj_t *a, *b;
  assert_int_equal(posh_pipe_create(heap, 1, &a, &b), 0);
  assert_int_equal(posh_pipe_send(b, "one", 3, 0), 0);
  assert_int_equal(posh_pipe_send(b, "two", 3, 0), 0);
  assert_int_equal(posh_pipe_close(b), 0);
  char buf[8];
  size_t got;
  assert_int_equal(posh_pipe_poll(a, 0), 1);
  assert_int_equal(posh_pipe_recv(a, buf, sizeof buf, &got, 0), 0);
  assert_memory_equal(buf, "one", 3);
  assert_int_equal(posh_pipe_recv(a, buf, sizeof buf, &got, -1), 0);
  assert_memory_equal(buf, "two", 3);
  assert_int_equal(posh_pipe_recv(a, buf, sizeof buf, &got, -1), POSH_ECLOSED);
  assert_int_equal(posh_pipe_recv(a, buf, sizeof buf, &got, 0), POSH_ECLOSED);
  assert_int_equal(posh_pipe_poll(a, -1), 1); /* EOF is "readable" */
  assert_int_equal(posh_pipe_send(a, "x", 1, -1), POSH_ECLOSED);
  assert_int_equal(posh_pipe_close(a), 0);
  assert_int_equal(tu_bytes_in_use(heap), before);
}

/* Proves: poll and timeouts: poll(0) = 0 on an empty pipe, recv with
 * timeout 0 is POSH_EAGAIN, a bounded one POSH_ETIMEDOUT, send on a full
 * pipe the same, and a message sent makes poll return 1. */
static void test_poll_timeouts(void **state) {
  (void)state;
  posh_obj_t *a, *b;
  assert_int_equal(posh_pipe_create_sized(heap, 1, 4096, &a, &b), 0);
  char buf[8];
  size_t got;
  assert_int_equal(posh_pipe_poll(a, 0), 0);
  assert_int_equal(posh_pipe_poll(a, 20000000), 0);
  assert_int_equal(posh_pipe_recv(a, buf, sizeof buf, &got, 0), POSH_EAGAIN);
  assert_int_equal(posh_pipe_recv(a, buf, sizeof buf, &got, 20000000), POSH_ETIMEDOUT);
  static unsigned char big[3000];
  assert_int_equal(posh_pipe_send(b, big, sizeof big, 0), 0);
  assert_int_equal(posh_pipe_send(b, big, sizeof big, 0), POSH_EAGAIN);
  assert_int_equal(posh_pipe_send(b, big, sizeof big, 20000000), POSH_ETIMEDOUT);
  /* Larger than the ring: cannot go without blocking; a bounded send
   * that times out half-way leaves nothing behind. */
  static unsigned char huge[20000];
  assert_int_equal(posh_pipe_send(b, huge, sizeof huge, 0), POSH_EAGAIN);
  assert_int_equal(posh_pipe_send(b, huge, sizeof huge, 20000000), POSH_ETIMEDOUT);
  assert_int_equal(posh_pipe_poll(a, 0), 1);
  static unsigned char out[30000];
  assert_int_equal(posh_pipe_recv(a, out, sizeof out, &got, 0), 0);
  assert_int_equal(got, sizeof big);
  /* The aborted stream is skipped: the next message is "ok". */
  assert_int_equal(posh_pipe_send(b, "ok", 2, SEC), 0);
  assert_int_equal(posh_pipe_recv(a, out, sizeof out, &got, SEC), 0);
  assert_int_equal(got, 2);
  assert_memory_equal(out, "ok", 2);
  assert_int_equal(posh_pipe_poll(a, 0), 0);
  posh_pipe_close(a);
  posh_pipe_close(b);
}

static int fd_readable(int fd, int ms) {
  struct pollfd p = {fd, POLLIN, 0};
  return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

/* Proves: the fileno is readable exactly while a message (or EOF) is
 * waiting, works with select() too, and is closed with the handle. */
static void test_fileno(void **state) {
  (void)state;
  posh_obj_t *a, *b;
  assert_int_equal(posh_pipe_create(heap, 1, &a, &b), 0);
  int fds_before = tu_count_fds();
  int fd = -1, fd2 = -1;
  assert_int_equal(posh_pipe_fileno(a, &fd), 0);
  assert_true(fd >= 0);
  assert_int_equal(posh_pipe_fileno(a, &fd2), 0);
  assert_int_equal(fd, fd2);
  assert_false(fd_readable(fd, 50));
  assert_int_equal(posh_pipe_send(b, "m", 1, 0), 0);
  assert_true(fd_readable(fd, 5000));
  fd_set rs;
  FD_ZERO(&rs);
  FD_SET(fd, &rs);
  struct timeval tv = {5, 0};
  assert_int_equal(select(fd + 1, &rs, NULL, NULL, &tv), 1);
  char c;
  size_t got;
  assert_int_equal(posh_pipe_recv(a, &c, 1, &got, 0), 0);
  assert_false(fd_readable(fd, 0)); /* reset by recv at once */
  assert_false(fd_readable(fd, 50));
  /* Several messages, then drained one by one. */
  for (int i = 0; i < 3; i++)
    assert_int_equal(posh_pipe_send(b, "m", 1, 0), 0);
  for (int i = 0; i < 3; i++) {
    assert_true(fd_readable(fd, 5000));
    assert_int_equal(posh_pipe_recv(a, &c, 1, &got, 0), 0);
  }
  assert_false(fd_readable(fd, 50));
  posh_pipe_close(b); /* EOF makes it readable */
  assert_true(fd_readable(fd, 5000));
  assert_int_equal(posh_pipe_close(a), 0);
  assert_int_equal(tu_count_fds(), fds_before);
}

struct fileno_arg {
  posh_obj_t *end;
  int parent_fd;
};
static int child_fileno(void *p) {
  struct fileno_arg *a = p;
  int fd = -1;
  CHILD_CHECK_EQ(posh_pipe_fileno(a->end, &fd), 0);
  CHILD_CHECK(fd >= 0);
  /* Not readable before the message, readable once it is there. */
  struct pollfd pf = {fd, POLLIN, 0};
  CHILD_CHECK_EQ(poll(&pf, 1, 0), 0);
  CHILD_CHECK_EQ(posh_pipe_send(a->end, "go", 2, 10 * SEC), 0);
  pf.revents = 0;
  CHILD_CHECK_EQ(poll(&pf, 1, 10000), 1);
  char buf[4];
  size_t got;
  CHILD_CHECK_EQ(posh_pipe_recv(a->end, buf, sizeof buf, &got, 0), 0);
  CHILD_CHECK_EQ(got, 2);
  CHILD_CHECK_EQ(posh_pipe_close(a->end), 0);
  return 0;
}

/* Proves: a forked child's inherited handle gets its own eventfd and
 * watcher (the parent's thread does not exist in the child), and the
 * parent's keeps working. */
static void test_fileno_fork(void **state) {
  (void)state;
#if defined(__SANITIZE_ADDRESS__)
  /* Not under ASan: its allocator is not fork-safe while other threads
   * allocate.  A child forked while one of this process's watcher threads
   * is inside free() (it reads /proc when it reaps) inherits ASan's
   * allocator lock held and deadlocks on its own first free (seen with
   * GCC 12's libasan: the child's watcher stuck in
   * SizeClassAllocator64::GetFromAllocator).  glibc's malloc resets its
   * locks in the child, so builds without ASan are not affected. */
  skip();
#endif
  posh_obj_t *a, *b;
  assert_int_equal(posh_pipe_create(heap, 1, &a, &b), 0);
  int fa = -1, fb = -1;
  assert_int_equal(posh_pipe_fileno(a, &fa), 0);
  assert_int_equal(posh_pipe_fileno(b, &fb), 0);
  struct fileno_arg arg = {b, fb};
  pid_t pid = tu_fork(child_fileno, &arg);
  assert_true(pid > 0);
  /* Echo the child's "go" back. */
  assert_true(fd_readable(fa, 10000));
  char buf[4];
  size_t got;
  assert_int_equal(posh_pipe_recv(a, buf, sizeof buf, &got, 0), 0);
  assert_int_equal(posh_pipe_send(a, buf, got, 0), 0);
  assert_int_equal(tu_wait(pid, 30000), 0);
  /* The child got the echo, so the parent's own fd for b was not
   * consumed by the child; it is unreadable again. */
  uint64_t t0 = tu_now_ms(); /* the parent's watcher clears it */
  while (fd_readable(fb, 0) && tu_now_ms() - t0 < 10000)
    tu_sleep_ms(5);
  assert_false(fd_readable(fb, 0));
  assert_int_equal(posh_pipe_send(a, "x", 1, 0), 0);
  assert_true(fd_readable(fb, 5000));
  posh_pipe_close(a);
  posh_pipe_close(b);
}

/* Proves: bad input is refused with the right code and no crash: NULL
 * arguments, a handle of another type (POSH_ETYPE), a stale reference to
 * a freed endpoint (POSH_ESTALE), an oversized ring. */
static void test_bad_input(void **state) {
  (void)state;
  posh_obj_t *a, *b, *buf;
  char c;
  size_t got;
  void *m;
  int fd;
  unsigned fl;
  assert_int_equal(posh_pipe_create(NULL, 1, &a, &b), POSH_EINVAL);
  assert_int_equal(posh_pipe_create(heap, 1, NULL, &b), POSH_EINVAL);
  assert_int_equal(posh_pipe_create(heap, 1, &a, NULL), POSH_EINVAL);
  assert_int_equal(posh_pipe_create_sized(heap, 1, (size_t)4 << 30, &a, &b), POSH_EINVAL);
  assert_int_equal(posh_pipe_send(NULL, "x", 1, 0), POSH_EINVAL);
  assert_int_equal(posh_pipe_recv(NULL, &c, 1, &got, 0), POSH_EINVAL);
  assert_int_equal(posh_pipe_recv_alloc(NULL, &m, &got, 0), POSH_EINVAL);
  assert_int_equal(posh_pipe_poll(NULL, 0), POSH_EINVAL);
  assert_int_equal(posh_pipe_fileno(NULL, &fd), POSH_EINVAL);
  assert_int_equal(posh_pipe_flags(NULL, &fl), POSH_EINVAL);
  assert_int_equal(posh_pipe_close(NULL), 0);
  assert_int_equal(posh_buffer_create(heap, NULL, 16, 0, &buf), 0);
  assert_int_equal(posh_pipe_send(buf, "x", 1, 0), POSH_ETYPE);
  assert_int_equal(posh_pipe_recv(buf, &c, 1, &got, 0), POSH_ETYPE);
  assert_int_equal(posh_pipe_recv_alloc(buf, &m, &got, 0), POSH_ETYPE);
  assert_int_equal(posh_pipe_poll(buf, 0), POSH_ETYPE);
  assert_int_equal(posh_pipe_fileno(buf, &fd), POSH_ETYPE);
  assert_int_equal(posh_pipe_flags(buf, &fl), POSH_ETYPE);
  assert_int_equal(posh_pipe_close(buf), POSH_ETYPE);
  posh_obj_close(buf);
  assert_int_equal(posh_pipe_create(heap, 1, &a, &b), 0);
  assert_int_equal(posh_pipe_send(a, NULL, 1, 0), POSH_EINVAL);
  assert_int_equal(posh_pipe_recv(a, NULL, 1, &got, 0), POSH_EINVAL);
  assert_int_equal(posh_pipe_recv(a, &c, 1, NULL, 0), POSH_EINVAL);
  assert_int_equal(posh_pipe_recv_alloc(a, NULL, &got, 0), POSH_EINVAL);
  assert_int_equal(posh_pipe_recv_alloc(a, &m, NULL, 0), POSH_EINVAL);
  assert_int_equal(posh_pipe_fileno(a, NULL), POSH_EINVAL);
  assert_int_equal(posh_pipe_flags(a, NULL), POSH_EINVAL);
  /* Stale: the endpoint is freed once every handle is closed. */
  posh_obj_ref_t ref;
  assert_int_equal(posh_obj_ref(b, &ref), 0);
  posh_pipe_close(b);
  posh_obj_t *again;
  assert_int_equal(posh_obj_open_ref(heap, &ref, &again), POSH_ESTALE);
  /* The closed peer: EOF and EPIPE-like errors. */
  assert_int_equal(posh_pipe_recv(a, &c, 1, &got, 0), POSH_ECLOSED);
  assert_int_equal(posh_pipe_send(a, "x", 1, 0), POSH_ECLOSED);
  /* The core is internal: opening it as a pipe is a type error. */
  posh_pipe_close(a);
}

/* ------------------------------------------------------------------------
 * Cross-process.
 * ---------------------------------------------------------------------- */
static char child_path[PATH_MAX + 32];
static pid_t spawn_pipe_child(const char *mode, const char *name, long n) {
  const char *dir = getenv("POSH_TEST_BINDIR");
  snprintf(child_path, sizeof child_path, "%s/pipe_child",
           dir && *dir ? dir : tu_argv0_dir);
  char nbuf[32];
  snprintf(nbuf, sizeof nbuf, "%ld", n);
  char *argv[] = {child_path, (char *)mode, heap_name, (char *)name, nbuf, NULL};
  extern char **environ;
  pid_t pid;
  fflush(stdout);
  fflush(stderr);
  if (posix_spawn(&pid, child_path, NULL, NULL, argv, environ) != 0)
    return -1;
  tu_kid_add(pid);
  return pid;
}

struct echo_arg {
  posh_obj_t *end;
  int n;
};
static int child_echo(void *p) {
  struct echo_arg *a = p;
  for (int i = 0; i < a->n; i++) {
    void *m;
    size_t len;
    CHILD_CHECK_EQ(posh_pipe_recv_alloc(a->end, &m, &len, 20 * SEC), 0);
    CHILD_CHECK_EQ(posh_pipe_send(a->end, m, len, 20 * SEC), 0);
    free(m);
  }
  return 0;
}

static void echo_round(posh_obj_t *a, int n) {
  unsigned char *m = malloc(50000);
  static unsigned char out[50000];
  for (int i = 0; i < n; i++) {
    size_t len = len_of((uint64_t)i);
    make_msg(m, len, (uint64_t)i);
    assert_int_equal(posh_pipe_send(a, m, len, 20 * SEC), 0);
    size_t got;
    uint64_t seq = 0;
    assert_int_equal(posh_pipe_recv(a, out, sizeof out, &got, 20 * SEC), 0);
    assert_int_equal(got, len);
    assert_true(msg_exact(out, got, &seq));
    assert_int_equal(seq, (uint64_t)i);
  }
  free(m);
}

/* Proves: a forked child using its inherited handle and an exec'd
 * unrelated process that attaches by name echo messages of all sizes
 * (also streamed through a small ring), and after the exec'd peer exits
 * and its name is gone, the other end reads EOF. */
static void test_fork_and_exec(void **state) {
  (void)state;
  posh_obj_t *a, *b;
  assert_int_equal(posh_pipe_create_sized(heap, 1, 8192, &a, &b), 0);
  struct echo_arg ea = {b, 200};
  pid_t pid = tu_fork(child_echo, &ea);
  assert_true(pid > 0);
  echo_round(a, 200);
  assert_int_equal(tu_wait(pid, 30000), 0);
  /* exec'd: opens "pipe.b" by name. */
  assert_int_equal(posh_obj_bind(b, "pipe.b"), 0);
  posh_pipe_close(b);
  pid = spawn_pipe_child("echo", "pipe.b", 200);
  assert_true(pid > 0);
  echo_round(a, 200);
  assert_int_equal(tu_wait(pid, 30000), 0);
  assert_int_equal(posh_obj_unbind(heap, "pipe.b"), 0);
  char c;
  size_t got;
  assert_int_equal(posh_pipe_recv(a, &c, 1, &got, 10 * SEC), POSH_ECLOSED);
  posh_pipe_close(a);
}

/* Proves: when the only holder of the peer end is killed (SIGKILL) and
 * nobody reaps it, a blocked reader still gets the data it sent and then
 * EOF (the liveness backstop reaps), without hanging; the fileno turns
 * readable too. */
static void test_peer_killed_eof(void **state) {
  (void)state;
  posh_obj_t *a, *b;
  assert_int_equal(posh_pipe_create(heap, 1, &a, &b), 0);
  assert_int_equal(posh_obj_bind(b, "pipe.peer"), 0);
  posh_pipe_close(b);
  pid_t pid = spawn_pipe_child("hold", "pipe.peer", 0);
  assert_true(pid > 0);
  char buf[8];
  size_t got;
  assert_int_equal(posh_pipe_recv(a, buf, sizeof buf, &got, 20 * SEC), 0);
  assert_int_equal(got, 5);
  assert_memory_equal(buf, "hello", 5);
  assert_int_equal(posh_obj_unbind(heap, "pipe.peer"), 0);
  int fd;
  assert_int_equal(posh_pipe_fileno(a, &fd), 0);
  assert_false(fd_readable(fd, 20));
  assert_int_equal(tu_kill(pid), TU_SIGNALED(SIGKILL));
  uint64_t t0 = tu_now_ms();
  assert_int_equal(posh_pipe_recv(a, buf, sizeof buf, &got, 20 * SEC), POSH_ECLOSED);
  assert_true(tu_now_ms() - t0 < 15000);
  assert_true(fd_readable(fd, 5000));
  assert_int_equal(posh_pipe_send(a, "x", 1, 0), POSH_ECLOSED);
  posh_pipe_close(a);
}

/* Proves: a reader that only polls or receives with short or zero timeouts
 * (never one wait long enough for the liveness backstop) still sees its
 * killed peer's EOF within a few reap periods (regression test: poll(0),
 * recv(0) and 10 ms polls reported "nothing yet" forever). */
static void test_peer_killed_eof_short_timeouts(void **state) {
  (void)state;
  for (int mode = 0; mode < 3; mode++) {
    posh_obj_t *a, *b;
    assert_int_equal(posh_pipe_create(heap, 1, &a, &b), 0);
    assert_int_equal(posh_obj_bind(b, "pipe.peer2"), 0);
    posh_pipe_close(b);
    pid_t pid = spawn_pipe_child("hold", "pipe.peer2", 0);
    assert_true(pid > 0);
    char buf[8];
    size_t got;
    assert_int_equal(posh_pipe_recv(a, buf, sizeof buf, &got, 20 * SEC), 0);
    assert_int_equal(posh_obj_unbind(heap, "pipe.peer2"), 0);
    assert_int_equal(tu_kill(pid), TU_SIGNALED(SIGKILL));
    uint64_t t0 = tu_now_ms();
    int r = 0;
    while (tu_now_ms() - t0 < 10000) {
      if (mode == 0) {
        if ((r = posh_pipe_poll(a, 0)) != 0)
          break;
      } else if (mode == 1) {
        if ((r = posh_pipe_poll(a, 10 * 1000 * 1000)) != 0)
          break;
      } else if ((r = posh_pipe_recv(a, buf, sizeof buf, &got, 0)) != POSH_EAGAIN) {
        break;
      }
    }
    if (mode < 2) {
      if (r != 1)
        fail_msg("mode %d: poll never reported the dead peer (%d)", mode, r);
      assert_int_equal(posh_pipe_recv(a, buf, sizeof buf, &got, 0), POSH_ECLOSED);
    } else if (r != POSH_ECLOSED) {
      fail_msg("recv(0) returned %s, not POSH_ECLOSED", posh_err_name(r));
    }
    posh_pipe_close(a);
  }
}

/* A sender that never stops: messages len_of(seq), seq counting from
 * `first`. */
struct stream_arg {
  posh_obj_t *end;
  uint64_t first;
};
static int child_stream_sender(void *p) {
  struct stream_arg *a = p;
  unsigned char *m = malloc(50000);
  for (uint64_t s = a->first;; s++) {
    size_t len = len_of(s);
    make_msg(m, len, s);
    CHILD_CHECK_EQ(posh_pipe_send(a->end, m, len, 30 * SEC), 0);
  }
  return 0;
}

/* Receive until message `marker` (exact length 8); every message must be
 * intact and in order.  Returns how many came before the marker. */
static int drain_until(posh_obj_t *a, uint64_t marker, uint64_t *last_seq) {
  static unsigned char out[50000];
  int n = 0;
  for (;;) {
    size_t got;
    uint64_t seq = 0;
    int r = posh_pipe_recv(a, out, sizeof out, &got, 20 * SEC);
    assert_int_equal(r, 0);
    assert_true(msg_exact(out, got, &seq));
    if (seq == marker)
      return n;
    assert_int_equal(got, len_of(seq));
    if (*last_seq != UINT64_MAX)
      assert_true(seq > *last_seq);
    *last_seq = seq;
    n++;
  }
}

/* Proves: a sender killed (SIGKILL) at random points, often in the middle
 * of a message streamed through a ring smaller than the message, never
 * makes a partial message visible and never blocks the pipe: every message
 * the reader gets is whole and in order, and the next sender's message
 * comes through. */
static void test_kill_sender(void **state) {
  (void)state;
  posh_obj_t *a, *b;
  assert_int_equal(posh_pipe_create_sized(heap, 1, 4096, &a, &b), 0);
  uint64_t last = UINT64_MAX;
  int total = 0;
  unsigned rnd = (unsigned)getpid();
  for (int k = 0; k < kills(); k++) {
    struct stream_arg sa = {b, (uint64_t)k * 1000000};
    pid_t pid = tu_fork(child_stream_sender, &sa);
    assert_true(pid > 0);
    /* Receive a few, then kill while it is (often) mid-stream. */
    static unsigned char out[50000];
    int want = (int)(rand_r(&rnd) % 20);
    for (int i = 0; i < want; i++) {
      size_t got;
      uint64_t seq = 0;
      assert_int_equal(posh_pipe_recv(a, out, sizeof out, &got, 20 * SEC), 0);
      assert_true(msg_exact(out, got, &seq));
      assert_int_equal(got, len_of(seq));
      if (last != UINT64_MAX)
        assert_true(seq > last);
      last = seq;
      total++;
    }
    tu_sleep_ms(rand_r(&rnd) % 3);
    assert_int_equal(tu_kill(pid), TU_SIGNALED(SIGKILL));
    /* A thread of the parent (another holder of b) sends a marker (the
     * dead child's stream is aborted first) while we drain. */
    unsigned char mk[8];
    uint64_t marker = UINT64_MAX - 1 - (uint64_t)k;
    make_msg(mk, 8, marker);
    struct one_arg oa = {b, mk, 8, -1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, send_one, &oa), 0);
    total += drain_until(a, marker, &last);
    pthread_join(th, NULL);
    assert_int_equal(oa.rc, 0);
  }
  assert_true(total > 0);
  assert_int_equal(posh_pipe_poll(a, 0), 0);
  assert_int_equal(tu_check(heap), 0);
  posh_pipe_close(a);
  posh_pipe_close(b);
}

/* Proves: a sender killed mid-stream while the reader waits inside that
 * message (nobody else sends) does not hang the reader: it drops the
 * partial message and gets EOF once the dead sender is reaped. */
static void test_kill_sender_reader_waiting(void **state) {
  (void)state;
  posh_obj_t *a, *b;
  assert_int_equal(posh_pipe_create_sized(heap, 0, 4096, &a, &b), 0);
  struct stream_arg sa = {b, 5};
  pid_t pid = tu_fork(child_stream_sender, &sa);
  assert_true(pid > 0);
  /* Let it block mid-way through a message larger than the ring. */
  static unsigned char out[50000];
  size_t got;
  uint64_t seq = 0;
  uint64_t s = 5;
  while (len_of(s) < 8192) { /* receive the small ones before it */
    assert_int_equal(posh_pipe_recv(a, out, sizeof out, &got, 20 * SEC), 0);
    assert_true(msg_exact(out, got, &seq));
    assert_int_equal(seq, s);
    if (s == 5) /* the child holds its own reference now */
      posh_pipe_close(b); /* so it is the only writer */
    s++;
  }
  if (s == 5)
    posh_pipe_close(b);
  assert_int_equal(posh_pipe_poll(a, 20 * SEC), 1); /* the stream started */
  tu_sleep_ms(50);
  assert_int_equal(tu_kill(pid), TU_SIGNALED(SIGKILL));
  uint64_t t0 = tu_now_ms();
  assert_int_equal(posh_pipe_recv(a, out, sizeof out, &got, 20 * SEC), POSH_ECLOSED);
  assert_true(tu_now_ms() - t0 < 15000);
  posh_pipe_close(a);
}

static int child_stream_receiver(void *p) {
  posh_obj_t *a = p;
  static unsigned char out[50000];
  for (;;) {
    size_t got;
    CHILD_CHECK_EQ(posh_pipe_recv(a, out, sizeof out, &got, 30 * SEC), 0);
  }
  return 0;
}

/* Proves: a receiver killed at random points (often mid-message) loses at
 * most the message it took; the next receiver continues at a message
 * boundary with whole, ordered messages. */
static void test_kill_receiver(void **state) {
  (void)state;
  posh_obj_t *a, *b;
  assert_int_equal(posh_pipe_create_sized(heap, 1, 4096, &a, &b), 0);
  uint64_t last = UINT64_MAX;
  unsigned rnd = (unsigned)getpid() * 7u;
  unsigned char *m = malloc(50000);
  uint64_t s = 0;
  for (int k = 0; k < kills(); k++) {
    pid_t pid = tu_fork(child_stream_receiver, a);
    assert_true(pid > 0);
    int n = 1 + (int)(rand_r(&rnd) % 30);
    for (int i = 0; i < n; i++, s++) {
      size_t len = len_of(s);
      make_msg(m, len, s);
      assert_int_equal(posh_pipe_send(b, m, len, 20 * SEC), 0);
    }
    assert_int_equal(tu_kill(pid), TU_SIGNALED(SIGKILL));
    uint64_t marker = UINT64_MAX - 1 - (uint64_t)k;
    unsigned char mk[8];
    make_msg(mk, 8, marker);
    struct one_arg oa = {b, mk, 8, -1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, send_one, &oa), 0);
    drain_until(a, marker, &last);
    pthread_join(th, NULL);
    assert_int_equal(oa.rc, 0);
  }
  free(m);
  assert_int_equal(posh_pipe_poll(a, 0), 0);
  posh_pipe_close(a);
  posh_pipe_close(b);
}

/* Proves: an exec'd unrelated sender killed while it streams a message
 * larger than the ring leaves no partial message: the reader gets whole
 * messages only, then the next sender's message. */
static void test_kill_exec_sender(void **state) {
  (void)state;
  posh_obj_t *a, *b;
  assert_int_equal(posh_pipe_create_sized(heap, 1, 4096, &a, &b), 0);
  assert_int_equal(posh_obj_bind(b, "pipe.stream"), 0);
  static unsigned char out[20000];
  for (int k = 0; k < 5; k++) {
    pid_t pid = spawn_pipe_child("stream", "pipe.stream", 10000);
    assert_true(pid > 0);
    size_t got;
    assert_int_equal(posh_pipe_recv(a, out, sizeof out, &got, 20 * SEC), 0);
    assert_int_equal(got, 10000);
    for (size_t i = 0; i < got; i++)
      assert_int_equal(out[i], (unsigned char)i);
    /* It is now blocked inside message 1 or 2 (the ring holds < 4 KiB). */
    tu_sleep_ms(20);
    assert_int_equal(tu_kill(pid), TU_SIGNALED(SIGKILL));
    struct one_arg oa = {b, "marker", 6, -1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, send_one, &oa), 0);
    for (;;) {
      assert_int_equal(posh_pipe_recv(a, out, sizeof out, &got, 20 * SEC), 0);
      if (got == 6) {
        assert_memory_equal(out, "marker", 6);
        break;
      }
      assert_int_equal(got, 10000); /* a whole earlier message */
      for (size_t i = 1; i < got; i++)
        assert_int_equal(out[i], (unsigned char)(out[0] + i));
    }
    pthread_join(th, NULL);
    assert_int_equal(oa.rc, 0);
  }
  assert_int_equal(posh_obj_unbind(heap, "pipe.stream"), 0);
  posh_pipe_close(a);
  posh_pipe_close(b);
}

struct multi_arg {
  posh_obj_t *end;
  uint64_t base;
};
static void *multi_sender(void *p) {
  struct multi_arg *a = p;
  unsigned char *m = malloc(50000);
  for (uint64_t i = 0; i < 100; i++) {
    uint64_t seq = a->base + i;
    size_t len = len_of(seq);
    make_msg(m, len, seq);
    if (posh_pipe_send(a->end, m, len, 20 * SEC) != 0)
      break;
  }
  free(m);
  return NULL;
}

/* Proves: several threads sending on one endpoint at once (streamed
 * messages through a small ring) never interleave their messages, and each
 * sender's messages arrive in its order. */
static void test_concurrent_senders(void **state) {
  (void)state;
  posh_obj_t *a, *b;
  assert_int_equal(posh_pipe_create_sized(heap, 0, 4096, &a, &b), 0);
  struct multi_arg ma[4];
  pthread_t th[4];
  for (int i = 0; i < 4; i++) {
    ma[i].end = b;
    ma[i].base = (uint64_t)i << 32;
    assert_int_equal(pthread_create(&th[i], NULL, multi_sender, &ma[i]), 0);
  }
  uint64_t next[4] = {0, 0, 0, 0};
  static unsigned char out[50000];
  for (int n = 0; n < 400; n++) {
    size_t got;
    uint64_t seq = 0;
    assert_int_equal(posh_pipe_recv(a, out, sizeof out, &got, 20 * SEC), 0);
    assert_true(msg_exact(out, got, &seq));
    assert_int_equal(got, len_of(seq));
    int who = (int)(seq >> 32);
    assert_true(who >= 0 && who < 4);
    assert_int_equal(seq & 0xffffffffu, next[who]);
    next[who]++;
  }
  for (int i = 0; i < 4; i++)
    pthread_join(th[i], NULL);
  assert_int_equal(posh_pipe_poll(a, 0), 0);
  posh_pipe_close(a);
  posh_pipe_close(b);
}

/* A heap detached while pipe handles with running watchers (fileno) are
 * still open: detach stops the watchers first, so none of them touches the
 * unmapped heap afterwards (each would wake within the 50 ms backstop). */
static void test_detach_stops_watchers(void **state) {
  (void)state;
  posh_heap_options_t o = {.capacity = 16ull << 20};
  posh_heap_t *h;
  assert_int_equal(posh_heap_create(NULL, &o, &h), 0);
  posh_obj_t *a, *b, *c, *d;
  assert_int_equal(posh_pipe_create(h, 1, &a, &b), 0);
  assert_int_equal(posh_pipe_create(h, 0, &c, &d), 0);
  int fa, fb, fc;
  assert_int_equal(posh_pipe_fileno(a, &fa), 0);
  assert_int_equal(posh_pipe_fileno(b, &fb), 0);
  assert_int_equal(posh_pipe_fileno(c, &fc), 0); /* the receiving end */
  assert_int_equal(posh_pipe_send(b, "x", 1, 0), 0);
  assert_int_equal(posh_heap_detach(h), 0); /* handles left open */
  /* Several backstop periods: a watcher still running would read the
   * unmapped heap and crash the test. */
  struct timespec ts = {0, 250 * 1000 * 1000};
  nanosleep(&ts, NULL);
  /* Watchers on another heap still work. */
  posh_obj_t *e, *f;
  assert_int_equal(posh_pipe_create(heap, 1, &e, &f), 0);
  int fe;
  assert_int_equal(posh_pipe_fileno(e, &fe), 0);
  assert_int_equal(posh_pipe_send(f, "y", 1, 0), 0);
  struct pollfd p = {.fd = fe, .events = POLLIN};
  assert_int_equal(poll(&p, 1, 5000), 1);
  posh_pipe_close(e);
  posh_pipe_close(f);
  /* The detached heap's handles are the caller's leak (posh_heap_detach):
   * they may no longer be used, not even closed. */
}

int main(int argc, char **argv) {
  tu_init(argc, argv);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_basic_duplex),
      cmocka_unit_test(test_one_way),
      cmocka_unit_test(test_eof),
      cmocka_unit_test(test_poll_timeouts),
      cmocka_unit_test(test_fileno),
      cmocka_unit_test(test_fileno_fork),
      cmocka_unit_test(test_detach_stops_watchers),
      cmocka_unit_test(test_bad_input),
      cmocka_unit_test(test_fork_and_exec),
      cmocka_unit_test(test_peer_killed_eof),
      cmocka_unit_test(test_peer_killed_eof_short_timeouts),
      cmocka_unit_test(test_kill_sender),
      cmocka_unit_test(test_kill_sender_reader_waiting),
      cmocka_unit_test(test_kill_receiver),
      cmocka_unit_test(test_kill_exec_sender),
      cmocka_unit_test(test_concurrent_senders),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
