/* SPDX-License-Identifier: MIT */
/*
 * This file contains the helpers every libposh unit test shares: unique heap
 * names (with the pid, removed again by the group teardown), fork with a
 * timeout (a hang kills the child and fails the test instead of the suite),
 * checks usable in children (they must never return into cmocka), and the
 * launch of tests/attach_child as an unrelated process (found through
 * POSH_TEST_BINDIR, which `make check` sets, or beside argv[0]).
 */
#ifndef POSH_TESTUTIL_H
#define POSH_TESTUTIL_H

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef TU_NO_CMOCKA
#include <cmocka.h>
#endif

#include "posh.h"

#define TU_UNUSED __attribute__((unused))

/* Exit status of a child that hung (killed after its timeout). */
#define TU_HANG 1000
/* Default time a child may take before it counts as hung. */
#define TU_TIMEOUT_MS 30000
/* Status of a child killed by signal sig, as a shell reports it. */
#define TU_SIGNALED(sig) (128 + (sig))

/* ------------------------------------------------------------------------
 * Time.
 * ---------------------------------------------------------------------- */
static TU_UNUSED uint64_t tu_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static TU_UNUSED void tu_sleep_ms(unsigned ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

/* ------------------------------------------------------------------------
 * Heap names: "/posh-t<pid>-<tag><n>", remembered so the group teardown
 * can remove whatever a failed test left behind.
 * ---------------------------------------------------------------------- */
#define TU_MAX_NAMES 256
static TU_UNUSED char tu_names[TU_MAX_NAMES][POSH_NAME_MAX + 2];
static TU_UNUSED unsigned tu_nnames;
static TU_UNUSED pid_t tu_names_pid;

static TU_UNUSED const char *tu_heap_name(char *buf, size_t len,
                                          const char *tag) {
  static unsigned counter;
  snprintf(buf, len, "/posh-t%d-%.16s%u", (int)getpid(), tag, counter++);
  if (tu_names_pid == getpid() && tu_nnames < TU_MAX_NAMES)
    snprintf(tu_names[tu_nnames++], sizeof tu_names[0], "%s", buf);
  return buf;
}

/* /dev/shm path of a heap name ("/x" -> "/dev/shm/x"). */
static TU_UNUSED const char *tu_shm_path(char *buf, size_t len,
                                         const char *name) {
  snprintf(buf, len, "/dev/shm/%s", name[0] == '/' ? name + 1 : name);
  return buf;
}

static TU_UNUSED int tu_shm_exists(const char *name) {
  char path[128];
  struct stat st;
  return stat(tu_shm_path(path, sizeof path, name), &st) == 0;
}

/* ------------------------------------------------------------------------
 * Children.  Every pid we start is remembered until it is waited for, so a
 * test that fails half-way does not leave processes behind.
 * ---------------------------------------------------------------------- */
#define TU_MAX_KIDS 64
static TU_UNUSED pid_t tu_kids[TU_MAX_KIDS];

static TU_UNUSED void tu_kid_add(pid_t pid) {
  for (int i = 0; i < TU_MAX_KIDS; i++)
    if (tu_kids[i] == 0) {
      tu_kids[i] = pid;
      return;
    }
}
static TU_UNUSED void tu_kid_del(pid_t pid) {
  for (int i = 0; i < TU_MAX_KIDS; i++)
    if (tu_kids[i] == pid)
      tu_kids[i] = 0;
}

/* Check in a child process: on failure print where and _exit(1).  cmocka's
 * assertions must not be used in a child (they would longjmp back into the
 * test runner's copy and run the rest of the suite there). */
#define CHILD_CHECK(cond)                                                      \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "child %d: check failed: %s (%s:%d)\n", (int)getpid(),   \
              #cond, __FILE__, __LINE__);                                      \
      _exit(1);                                                                \
    }                                                                          \
  } while (0)
#define CHILD_CHECK_EQ(a, b)                                                   \
  do {                                                                         \
    long long tu_a_ = (long long)(a), tu_b_ = (long long)(b);                  \
    if (tu_a_ != tu_b_) {                                                      \
      fprintf(stderr, "child %d: %s == %lld, expected %s == %lld (%s:%d)\n",   \
              (int)getpid(), #a, tu_a_, #b, tu_b_, __FILE__, __LINE__);        \
      _exit(1);                                                                \
    }                                                                          \
  } while (0)

/* Set up a freshly forked child: default handlers for the signals cmocka
 * catches, so a crash kills the child instead of resuming the runner. */
static TU_UNUSED void tu_child_init(void) {
  static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
    signal(sigs[i], SIG_DFL);
  memset(tu_kids, 0, sizeof tu_kids);
  tu_nnames = 0;
}

/* Fork; the child runs fn(arg) and _exits with its return value. */
static TU_UNUSED pid_t tu_fork(int (*fn)(void *), void *arg) {
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    tu_child_init();
    int rc = fn(arg);
    _exit(rc & 0xff);
  }
  if (pid > 0)
    tu_kid_add(pid);
  return pid;
}

/* Wait for pid at most timeout_ms.  Returns its exit status, TU_SIGNALED(sig)
 * if a signal killed it, or TU_HANG after killing it for taking too long. */
static TU_UNUSED int tu_wait(pid_t pid, int timeout_ms) {
  uint64_t deadline = tu_now_ms() + (uint64_t)timeout_ms;
  int status;
  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid)
      break;
    if (r < 0 && errno != EINTR) {
      tu_kid_del(pid);
      return -1;
    }
    if (tu_now_ms() >= deadline) {
      fprintf(stderr, "testutil: child %d hung for %d ms; killing it\n",
              (int)pid, timeout_ms);
      kill(pid, SIGKILL);
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
      tu_kid_del(pid);
      return TU_HANG;
    }
    tu_sleep_ms(2);
  }
  tu_kid_del(pid);
  if (WIFEXITED(status))
    return WEXITSTATUS(status);
  if (WIFSIGNALED(status))
    return TU_SIGNALED(WTERMSIG(status));
  return -1;
}

/* Fork, run fn(arg) in the child and wait for it with a timeout. */
static TU_UNUSED int tu_run_child(int (*fn)(void *), void *arg,
                                  int timeout_ms) {
  pid_t pid = tu_fork(fn, arg);
  if (pid < 0)
    return -1;
  return tu_wait(pid, timeout_ms);
}

/* SIGKILL pid and collect it; returns its status (TU_SIGNALED(SIGKILL)). */
static TU_UNUSED int tu_kill(pid_t pid) {
  kill(pid, SIGKILL);
  return tu_wait(pid, TU_TIMEOUT_MS);
}

/* Kill every child a failed test left running. */
static TU_UNUSED void tu_reap_kids(void) {
  for (int i = 0; i < TU_MAX_KIDS; i++)
    if (tu_kids[i] > 0)
      tu_kill(tu_kids[i]);
}

/* ------------------------------------------------------------------------
 * Pipes for "ready" / "go" handshakes.
 * ---------------------------------------------------------------------- */
/* Read one byte within timeout_ms: the byte, -1 on EOF/error, -2 on
 * timeout. */
static TU_UNUSED int tu_read_byte(int fd, int timeout_ms) {
  uint64_t deadline = tu_now_ms() + (uint64_t)timeout_ms;
  for (;;) {
    uint64_t now = tu_now_ms();
    if (now >= deadline)
      return -2;
    struct pollfd p = {fd, POLLIN, 0};
    int r = poll(&p, 1, (int)(deadline - now));
    if (r < 0 && errno == EINTR)
      continue;
    if (r == 0)
      return -2;
    unsigned char c;
    ssize_t n = read(fd, &c, 1);
    if (n == 1)
      return c;
    if (n < 0 && errno == EINTR)
      continue;
    return -1;
  }
}

static TU_UNUSED int tu_write_byte(int fd, unsigned char c) {
  ssize_t n;
  do
    n = write(fd, &c, 1);
  while (n < 0 && errno == EINTR);
  return n == 1 ? 0 : -1;
}

/* ------------------------------------------------------------------------
 * attach_child, the unrelated process.
 * ---------------------------------------------------------------------- */
static TU_UNUSED char tu_argv0_dir[PATH_MAX] = ".";

static TU_UNUSED const char *tu_attach_child_path(char *buf, size_t len) {
  const char *dir = getenv("POSH_TEST_BINDIR");
  if (!dir || !*dir)
    dir = tu_argv0_dir;
  snprintf(buf, len, "%s/attach_child", dir);
  return buf;
}

static TU_UNUSED int tu_have_attach_child(void) {
  char path[PATH_MAX + 32];
  return access(tu_attach_child_path(path, sizeof path), X_OK) == 0;
}

/* Start attach_child with argv[1..] = args (NULL-terminated).  stdin_fd and
 * stdout_fd (-1: inherit) become the child's 0 and 1; keep_fd (-1: none) is
 * passed on without close-on-exec under its own number.
 *
 * posix_spawn, not fork+exec: glibc's posix_spawn runs no atfork handlers,
 * so the child starts as a really unrelated process (libposh registers
 * every forked child of an attached process in its atfork handler). */
static TU_UNUSED pid_t tu_spawn_child(const char *const *args, int stdin_fd,
                                      int stdout_fd, int keep_fd) {
  char path[PATH_MAX + 32];
  tu_attach_child_path(path, sizeof path);
  const char *argv[32];
  int n = 0;
  argv[n++] = path;
  for (int i = 0; args[i] && n < 31; i++)
    argv[n++] = args[i];
  argv[n] = NULL;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (stdin_fd >= 0 && stdin_fd != 0)
    posix_spawn_file_actions_adddup2(&fa, stdin_fd, 0);
  if (stdout_fd >= 0 && stdout_fd != 1)
    posix_spawn_file_actions_adddup2(&fa, stdout_fd, 1);
  if (keep_fd >= 0) /* dup2 onto itself clears FD_CLOEXEC (glibc >= 2.29) */
    posix_spawn_file_actions_adddup2(&fa, keep_fd, keep_fd);
  fflush(stdout);
  fflush(stderr);
  extern char **environ;
  pid_t pid;
  int r = posix_spawn(&pid, path, &fa, NULL, (char *const *)argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (r != 0) {
    fprintf(stderr, "testutil: cannot spawn %s: %s\n", path, strerror(r));
    return -1;
  }
  tu_kid_add(pid);
  return pid;
}

/* Run attach_child to completion with args; returns its status as tu_wait. */
static TU_UNUSED int tu_exec_child(const char *const *args, int timeout_ms) {
  pid_t pid = tu_spawn_child(args, -1, -1, -1);
  if (pid < 0)
    return -1;
  return tu_wait(pid, timeout_ms);
}

/* ------------------------------------------------------------------------
 * Set-up shared by every test program.
 * ---------------------------------------------------------------------- */
/* Record argv[0]'s directory; exit 77 (skip) when POSIX shared memory is not
 * usable here, since every test needs it. */
static TU_UNUSED void tu_init(int argc, char **argv) {
  (void)argc;
  if (argv && argv[0]) {
    snprintf(tu_argv0_dir, sizeof tu_argv0_dir, "%s", argv[0]);
    char *slash = strrchr(tu_argv0_dir, '/');
    if (slash)
      *slash = '\0';
    else
      snprintf(tu_argv0_dir, sizeof tu_argv0_dir, ".");
  }
  tu_names_pid = getpid();
  char probe[64];
  snprintf(probe, sizeof probe, "/posh-t%d-probe", (int)getpid());
  int fd = shm_open(probe, O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0) {
    fprintf(stderr, "SKIP: shm_open does not work here (%s)\n",
            strerror(errno));
    exit(77);
  }
  close(fd);
  shm_unlink(probe);
}

/* Group teardown: kill stray children and remove every heap name made. */
static TU_UNUSED int tu_group_teardown(void **state) {
  (void)state;
  tu_reap_kids();
  for (unsigned i = 0; i < tu_nnames; i++)
    shm_unlink(tu_names[i]);
  tu_nnames = 0;
  return 0;
}

/* ------------------------------------------------------------------------
 * Heap helpers for the parent side.
 * ---------------------------------------------------------------------- */
/* Consistency check that prints the report when it fails. */
static TU_UNUSED int tu_check(posh_heap_t *heap) {
  char report[2048];
  int r = posh_heap_check(heap, report, sizeof report);
  if (r != 0)
    fprintf(stderr, "posh_heap_check: %s\n%s", posh_err_name(r), report);
  return r;
}

static TU_UNUSED uint64_t tu_bytes_in_use(posh_heap_t *heap) {
  posh_heap_stats_t st;
  if (posh_heap_stats(heap, &st) != 0)
    return UINT64_MAX;
  return st.bytes_in_use;
}

static TU_UNUSED uint64_t tu_pages_free(posh_heap_t *heap) {
  posh_heap_stats_t st;
  if (posh_heap_stats(heap, &st) != 0)
    return UINT64_MAX;
  return st.pages_free;
}

/* Deterministic content: byte i of an object with this seed. */
static TU_UNUSED unsigned char tu_pattern_byte(uint64_t seed, size_t i) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + i * 0xBF58476D1CE4E5B9ull;
  x ^= x >> 31;
  return (unsigned char)(x ^ (x >> 17));
}
static TU_UNUSED void tu_fill(void *p, size_t len, uint64_t seed) {
  unsigned char *b = p;
  for (size_t i = 0; i < len; i++)
    b[i] = tu_pattern_byte(seed, i);
}
/* 1 if p holds the pattern, 0 otherwise. */
static TU_UNUSED int tu_verify(const void *p, size_t len, uint64_t seed) {
  const unsigned char *b = p;
  for (size_t i = 0; i < len; i++)
    if (b[i] != tu_pattern_byte(seed, i))
      return 0;
  return 1;
}

/* Number of open file descriptors of this process. */
static TU_UNUSED int tu_count_fds(void) {
  int n = 0;
  for (int fd = 0; fd < 4096; fd++)
    if (fcntl(fd, F_GETFD) != -1)
      n++;
  return n;
}

/* ------------------------------------------------------------------------
 * Objects that tests and attach_child exchange: a header and `len` bytes
 * of tu_fill(seed).  writer_base records the address at which the last
 * writer mapped the heap.
 * ---------------------------------------------------------------------- */
/* Base address of a heap mapping (for "mapped elsewhere" checks). */
static TU_UNUSED uintptr_t tu_heap_base(posh_heap_t *heap) {
  return (uintptr_t)posh_ptr(heap, (posh_off_t){1}) - 1;
}

#define TU_OBJ_MAGIC 0x4a424f2d48534f50ull /* "POSH-OBJ" */
typedef struct tu_obj {
  uint64_t magic;
  uint64_t len;
  uint64_t seed;
  uint64_t writer_base;
  unsigned char data[];
} tu_obj_t;

static TU_UNUSED void tu_obj_write(posh_heap_t *heap, tu_obj_t *o, size_t len,
                                   uint64_t seed) {
  o->magic = TU_OBJ_MAGIC;
  o->len = len;
  o->seed = seed;
  o->writer_base = (uint64_t)tu_heap_base(heap);
  tu_fill(o->data, len, seed);
}

/* A new object of len data bytes, or the null offset. */
static TU_UNUSED posh_off_t tu_obj_new(posh_heap_t *heap, size_t len,
                                       uint64_t seed) {
  tu_obj_t *o = posh_alloc(heap, sizeof *o + len);
  if (!o)
    return POSH_OFF_NULL;
  tu_obj_write(heap, o, len, seed);
  return posh_off(heap, o);
}

/* 1 if the object is intact with this seed. */
static TU_UNUSED int tu_obj_ok(const tu_obj_t *o, uint64_t seed) {
  return o && o->magic == TU_OBJ_MAGIC && o->seed == seed &&
         tu_verify(o->data, (size_t)o->len, seed);
}

/* A published list of blocks: count, then {off, size, seed} per block. */
typedef struct tu_blocklist {
  uint64_t count;
  struct {
    uint64_t off, size, seed;
  } b[];
} tu_blocklist_t;

/* cmocka fixture of the object tests: a named heap of the given capacity
 * (tu_heap_fx_setup, from a test file's setup), detached and unlinked at
 * teardown after the test's children are reaped. */
struct tu_heap_fx {
  posh_heap_t *h;
  char name[64];
  uint64_t base_bytes; /* bytes in use right after creation */
};

static TU_UNUSED int tu_heap_fx_setup(void **state, const char *what,
                                      uint64_t capacity) {
  struct tu_heap_fx *f = calloc(1, sizeof *f);
  if (!f)
    return -1;
  tu_heap_name(f->name, sizeof f->name, what);
  posh_heap_options_t o = {.capacity = capacity};
  if (posh_heap_create(f->name, &o, &f->h) != 0) {
    free(f);
    return -1;
  }
  f->base_bytes = tu_bytes_in_use(f->h);
  *state = f;
  return 0;
}

static TU_UNUSED int tu_heap_fx_teardown(void **state) {
  struct tu_heap_fx *f = *state;
  tu_reap_kids();
  posh_heap_detach(f->h);
  posh_heap_unlink(f->name);
  free(f);
  return 0;
}

#endif /* POSH_TESTUTIL_H */
