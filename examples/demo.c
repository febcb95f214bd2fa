/* SPDX-License-Identifier: MIT */
/*
 * This file contains the libposh demo: a parent creates a named heap,
 * forked workers allocate messages in it and publish them by name, then
 * each worker takes, checks and frees another worker's messages (frees
 * across processes), and finally an unrelated process (this program run
 * again through exec) attaches by name, reads the summary the workers
 * left and checks the heap.  It prints what happened at each step.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "posh.h"

#define WORKERS 4
#define MESSAGES 2000
#define TAG_MESSAGE 0x4d534731u /* "MSG1" */
#define TAG_SUMMARY 0x53554d31u

struct summary {
  uint64_t created[WORKERS];  /* written by worker i only */
  uint64_t received[WORKERS]; /* written by worker i only */
  uint64_t bytes[WORKERS];
};

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int err) {
  fprintf(stderr, "demo: %s: %s\n", what, posh_strerror(err));
  exit(1);
}

/* Phase 1: worker w allocates MESSAGES strings and names them. */
static int produce(posh_heap_t *heap, struct summary *sum, int w) {
  char name[POSH_NAME_MAX + 1], text[128];
  for (int j = 0; j < MESSAGES; j++) {
    int len = snprintf(text, sizeof text, "message %d from worker %d (pid %d)",
                       j, w, (int)getpid());
    size_t size = (size_t)len + 1 + (size_t)(j % 7) * 100; /* mixed sizes */
    char *p = posh_alloc(heap, size);
    if (!p)
      return posh_last_error();
    memcpy(p, text, (size_t)len + 1);
    snprintf(name, sizeof name, "msg.%d.%d", w, j);
    int r = posh_name_bind(heap, name, posh_off(heap, p), TAG_MESSAGE);
    if (r)
      return r;
    sum->created[w]++;
    sum->bytes[w] += size;
  }
  return 0;
}

/* Phase 2: worker w consumes worker (w+1)'s messages and frees them. */
static int consume(posh_heap_t *heap, struct summary *sum, int w) {
  int from = (w + 1) % WORKERS;
  char name[POSH_NAME_MAX + 1], expect[64];
  for (int j = 0; j < MESSAGES; j++) {
    posh_off_t off;
    uint32_t tag;
    snprintf(name, sizeof name, "msg.%d.%d", from, j);
    int r = posh_name_lookup(heap, name, &off, &tag);
    if (r)
      return r;
    const char *text = posh_ptr(heap, off);
    snprintf(expect, sizeof expect, "message %d from worker %d ", j, from);
    if (tag != TAG_MESSAGE || strncmp(text, expect, strlen(expect)) != 0)
      return POSH_ECORRUPT;
    if ((r = posh_name_unbind(heap, name, off)) || (r = posh_free_off(heap, off)))
      return r;
    sum->received[w]++;
  }
  return 0;
}

static void run_phase(posh_heap_t *heap, struct summary *sum,
                      int (*fn)(posh_heap_t *, struct summary *, int)) {
  pid_t pids[WORKERS];
  for (int w = 0; w < WORKERS; w++) {
    pids[w] = fork();
    if (pids[w] < 0) {
      perror("fork");
      exit(1);
    }
    if (pids[w] == 0) {
      int r = fn(heap, sum, w);
      if (r)
        fprintf(stderr, "demo worker %d: %s\n", w, posh_strerror(r));
      _exit(r ? 1 : 0);
    }
  }
  for (int w = 0; w < WORKERS; w++) {
    int status;
    waitpid(pids[w], &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      fprintf(stderr, "demo: worker %d failed\n", w);
      exit(1);
    }
  }
}

/* The unrelated process: attach by name, read the summary, check. */
static int observer(const char *name) {
  posh_heap_t *heap;
  int r = posh_heap_attach(name, &heap);
  if (r)
    die("observer attach", r);
  posh_off_t off;
  uint32_t tag;
  if ((r = posh_name_lookup(heap, "demo.summary", &off, &tag)))
    die("observer lookup", r);
  struct summary *sum = posh_ptr(heap, off);
  printf("[observer pid %d] attached to %s by name, mapped at %p\n",
         (int)getpid(), name, posh_heap_contains(heap, sum) ? (void *)sum : NULL);
  for (int w = 0; w < WORKERS; w++)
    printf("[observer] worker %d created %llu messages (%llu bytes), received "
           "%llu\n",
           w, (unsigned long long)sum->created[w],
           (unsigned long long)sum->bytes[w],
           (unsigned long long)sum->received[w]);
  char report[2048];
  r = posh_heap_check(heap, report, sizeof report);
  printf("[observer] consistency check: %s\n", r ? report : "ok");
  posh_heap_detach(heap);
  return r ? 1 : 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "--observe"))
    return observer(argv[2]);

  char name[64];
  snprintf(name, sizeof name, "/posh-demo-%d", (int)getpid());
  setvbuf(stdout, NULL, _IOLBF, 0);
  posh_heap_options_t opts = {.capacity = 256ull << 20,
                              .max_names = 4 * WORKERS * MESSAGES,
                              .flags = POSH_HEAP_UNLINK_ON_LAST_DETACH};
  posh_heap_t *heap;
  int r = posh_heap_create(name, &opts, &heap);
  if (r)
    die("create", r);
  printf("[parent pid %d] created heap %s: %llu MiB reserved (sparse)\n",
         (int)getpid(), name, (unsigned long long)(opts.capacity >> 20));

  posh_off_t soff = posh_alloc_off(heap, sizeof(struct summary));
  if (posh_off_is_null(soff))
    die("alloc summary", posh_last_error());
  struct summary *sum = posh_ptr(heap, soff);
  memset(sum, 0, sizeof *sum);
  if ((r = posh_name_bind(heap, "demo.summary", soff, TAG_SUMMARY)))
    die("bind summary", r);

  double t0 = now_s();
  run_phase(heap, sum, produce);
  double t1 = now_s();
  posh_heap_stats_t st;
  posh_heap_stats(heap, &st);
  printf("[parent] %d forked workers allocated and named %d messages each in "
         "%.1f ms; heap holds %u names, %llu KiB in use\n",
         WORKERS, MESSAGES, (t1 - t0) * 1e3, st.names,
         (unsigned long long)(st.bytes_in_use >> 10));
  run_phase(heap, sum, consume);
  double t2 = now_s();
  posh_heap_stats(heap, &st);
  printf("[parent] each worker took and freed its neighbour's messages "
         "(cross-process frees) in %.1f ms; %u names left, %llu KiB in use\n",
         (t2 - t1) * 1e3, st.names, (unsigned long long)(st.bytes_in_use >> 10));

  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    execl("/proc/self/exe", argv[0], "--observe", name, (char *)NULL);
    perror("exec");
    _exit(127);
  }
  int status;
  waitpid(pid, &status, 0);
  int ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;

  unsigned reaped = 0;
  posh_heap_reap(heap, &reaped);
  printf("[parent] reaped %u registry slot(s) of exited workers that did not "
         "detach\n", reaped);
  char report[2048];
  r = posh_heap_check(heap, report, sizeof report);
  printf("[parent] final check: %s\n", r ? report : "ok");
  posh_heap_detach(heap);
  char path[96];
  snprintf(path, sizeof path, "/dev/shm%s", name);
  printf("[parent] detached; the last process out unlinked the heap: %s\n",
         access(path, F_OK) == 0 ? "no" : "yes");
  return ok && r == 0 ? 0 : 1;
}
