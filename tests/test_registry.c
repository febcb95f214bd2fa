/* SPDX-License-Identifier: MIT */
/*
 * This file contains the unit tests of the process registry
 * (src/registry.c): listing attached processes, finding and reaping dead
 * ones (also when a pid is reused), a full registry, thread slots claimed
 * and released with their threads, and the registrations fork makes.
 */
#include "internal.h"
#include "testutil.h"

#include <pthread.h>

#define CAP (16ull << 20)

static posh_heap_t *mk(const char *name, uint32_t max_processes) {
  posh_heap_options_t o = {.capacity = CAP, .max_processes = max_processes};
  posh_heap_t *h = NULL;
  int r = posh_heap_create(name, &o, &h);
  if (r)
    fprintf(stderr, "create: %s\n", posh_err_name(r));
  return h;
}

/* The listing, with at most 64 entries; returns the total count. */
static size_t list(posh_heap_t *h, posh_process_info_t out[64]) {
  size_t count = 0;
  assert_int_equal(posh_heap_processes(h, out, 64, &count), 0);
  return count;
}

static const posh_process_info_t *find_pid(const posh_process_info_t *p,
                                           size_t n, pid_t pid) {
  for (size_t i = 0; i < n && i < 64; i++)
    if (p[i].pid == pid)
      return &p[i];
  return NULL;
}

/* Number of non-free thread slots in the registry. */
static unsigned thread_slots(posh_heap_t *h) {
  unsigned n = 0;
  for (uint32_t i = 0; i < h->hdr->max_slots; i++) {
    uint64_t w, st;
    posh__slot_read(&h->slots[i], &w, &st);
    if (posh__slotw_state(w) != POSH_SLOT_FREE &&
        posh__slotw_kind(w) == POSH_SLOT_THREAD)
      n++;
  }
  return n;
}

/* ------------------------------------------------------------------------
 * Listing.
 * ---------------------------------------------------------------------- */

/* The creator lists itself (is_self, its pid and /proc start time, LIVE),
 * with one thread once it allocates; bad arguments are EINVAL. */
static void test_processes_self(void **state) {
  (void)state;
  posh_heap_t *h = mk(NULL, 0);
  assert_non_null(h);
  posh_process_info_t p[64];
  assert_int_equal(list(h, p), 1);
  assert_true(p[0].is_self);
  assert_int_equal(p[0].pid, getpid());
  assert_int_equal(p[0].state, POSH_PROC_LIVE);
  assert_int_equal(p[0].slot, (uint32_t)posh_heap_self_slot(h));
  uint64_t start;
  assert_int_equal(posh__prim_proc_start_time(getpid(), &start), 0);
  assert_int_equal(p[0].start_time, start);
  assert_int_equal(p[0].threads, 0);

  void *b = posh_alloc(h, 10);
  assert_non_null(b);
  assert_int_equal(list(h, p), 1);
  assert_int_equal(p[0].threads, 1);

  size_t count = 99;
  assert_int_equal(posh_heap_processes(h, NULL, 0, &count), 0);
  assert_int_equal(count, 1);
  assert_int_equal(posh_heap_processes(NULL, p, 64, &count), POSH_EINVAL);
  assert_int_equal(posh_heap_processes(h, NULL, 1, &count), POSH_EINVAL);
  assert_int_equal(posh_heap_processes(h, p, 64, NULL), POSH_EINVAL);
  assert_int_equal(posh_heap_reap(NULL, NULL), POSH_EINVAL);
  unsigned reaped = 99;
  assert_int_equal(posh_heap_reap(h, &reaped), 0);
  assert_int_equal(reaped, 0);
  assert_int_equal(posh_free(h, b), 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

struct kid {
  posh_heap_t *heap;
  int ready; /* write end: the child reports */
  int go;    /* read end: the child waits for EOF or a byte */
  int alloc_threads;
  int parent_ends[2]; /* the parent's ends, closed in the child */
};

static void *alloc_thread(void *arg) {
  posh_heap_t *h = arg;
  /* Allocates and keeps the block: the thread holds a slot until exit. */
  return posh_alloc(h, 48);
}

/* Child: optionally allocate from the main thread and from threads that
 * stay alive, list the processes from its side, report, wait, detach. */
static int kid_main(void *arg) {
  struct kid *k = arg;
  close(k->parent_ends[0]);
  close(k->parent_ends[1]);
  /* A forked child registers when it first uses the heap. */
  CHILD_CHECK(posh_heap_self_slot(k->heap) >= 0);
  pthread_t th[4];
  int nth = 0;
  if (k->alloc_threads) {
    CHILD_CHECK(posh_alloc(k->heap, 32) != NULL);
    for (; nth < k->alloc_threads - 1 && nth < 4; nth++)
      CHILD_CHECK(pthread_create(&th[nth], NULL, alloc_thread, k->heap) == 0);
    for (int i = 0; i < nth; i++)
      pthread_join(th[i], NULL); /* slots released at their exit */
  }
  posh_process_info_t p[64];
  size_t count = 0;
  CHILD_CHECK_EQ(posh_heap_processes(k->heap, p, 64, &count), 0);
  int selves = 0;
  for (size_t i = 0; i < count; i++)
    if (p[i].is_self) {
      selves++;
      CHILD_CHECK_EQ(p[i].pid, getpid());
      CHILD_CHECK_EQ(p[i].slot, posh_heap_self_slot(k->heap));
    }
  CHILD_CHECK_EQ(selves, 1);
  tu_write_byte(k->ready, 'R');
  tu_read_byte(k->go, 60000);
  CHILD_CHECK_EQ(posh_heap_detach(k->heap), 0);
  return 0;
}

/* Start kid_main; returns its pid once it reported ready.  *go_fd is the
 * parent's end of the go pipe (close it to let the child finish). */
static pid_t start_kid(posh_heap_t *h, int alloc_threads, int *go_fd) {
  int ready[2], go[2];
  assert_int_equal(pipe(ready), 0);
  assert_int_equal(pipe(go), 0);
  struct kid k = {h, ready[1], go[0], alloc_threads, {ready[0], go[1]}};
  pid_t pid = tu_fork(kid_main, &k);
  assert_true(pid > 0);
  close(ready[1]);
  close(go[0]);
  int c = tu_read_byte(ready[0], 20000);
  close(ready[0]);
  if (c != 'R') {
    close(go[1]);
    fail_msg("child %d did not get ready (%d, status %d)", (int)pid, c,
             tu_wait(pid, 1000));
  }
  *go_fd = go[1];
  return pid;
}

/* A forked child is listed with its pid from the parent's side (not
 * is_self) and lists itself as is_self; it is gone once it detached. */
static void test_processes_forked(void **state) {
  (void)state;
  posh_heap_t *h = mk(NULL, 0);
  assert_non_null(h);
  int go;
  pid_t pid = start_kid(h, 1, &go);
  posh_process_info_t p[64];
  size_t n = list(h, p);
  assert_int_equal(n, 2);
  const posh_process_info_t *me = find_pid(p, n, getpid());
  const posh_process_info_t *kid = find_pid(p, n, pid);
  assert_non_null(me);
  assert_non_null(kid);
  assert_true(me->is_self);
  assert_false(kid->is_self);
  assert_int_equal(kid->state, POSH_PROC_LIVE);
  assert_int_equal(kid->threads, 1);
  assert_int_not_equal(kid->slot, me->slot);
  /* Only the first `max` entries are written, the count is the total. */
  posh_process_info_t one[2];
  memset(one, 0xee, sizeof one);
  size_t count = 0;
  assert_int_equal(posh_heap_processes(h, one, 1, &count), 0);
  assert_int_equal(count, 2);
  assert_int_equal(one[1].slot, 0xeeeeeeeeu);

  close(go);
  assert_int_equal(tu_wait(pid, TU_TIMEOUT_MS), 0);
  n = list(h, p);
  assert_int_equal(n, 1);
  assert_true(p[0].is_self);
  assert_int_equal(thread_slots(h), 0); /* the child's thread slot too */
  assert_int_equal(posh_heap_detach(h), 0);
}

/* ------------------------------------------------------------------------
 * Dead processes.
 * ---------------------------------------------------------------------- */

/* A SIGKILLed child stays listed as LIVE (nobody looked yet) until
 * posh_heap_reap reclaims it; then it disappears and its slot is free. */
static void test_killed_child_reaped(void **state) {
  (void)state;
  posh_heap_t *h = mk(NULL, 0);
  assert_non_null(h);
  int go;
  pid_t pid = start_kid(h, 0, &go);
  assert_int_equal(tu_kill(pid), TU_SIGNALED(SIGKILL));
  close(go);
  posh_process_info_t p[64];
  size_t n = list(h, p);
  assert_int_equal(n, 2);
  const posh_process_info_t *kid = find_pid(p, n, pid);
  assert_non_null(kid);
  assert_int_equal(kid->state, POSH_PROC_LIVE);
  uint32_t kid_slot = kid->slot;
  unsigned reaped = 0;
  assert_int_equal(posh_heap_reap(h, &reaped), 0);
  assert_int_equal(reaped, 1);
  n = list(h, p);
  assert_int_equal(n, 1);
  assert_null(find_pid(p, n, pid));
  uint64_t w, st;
  posh__slot_read(&h->slots[kid_slot], &w, &st);
  assert_int_equal(posh__slotw_state(w), POSH_SLOT_FREE);
  posh_heap_stats_t s;
  assert_int_equal(posh_heap_stats(h, &s), 0);
  assert_int_equal(s.processes, 1);
  assert_int_equal(posh_heap_reap(h, &reaped), 0);
  assert_int_equal(reaped, 0);
  assert_int_equal(posh_heap_reap(h, NULL), 0);
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* posh_heap_reap's count is of processes ("find registered processes that
 * died ... *reaped gets how many were reclaimed"): one killed child that
 * had an allocating thread is 1, and its thread slot is reclaimed with it
 * (regression test: slots were counted before 449f87f). */
static void test_reap_counts_processes(void **state) {
  (void)state;
  posh_heap_t *h = mk(NULL, 0);
  assert_non_null(h);
  int go;
  pid_t pid = start_kid(h, 1, &go);
  assert_int_equal(thread_slots(h), 1);
  assert_int_equal(tu_kill(pid), TU_SIGNALED(SIGKILL));
  close(go);
  unsigned reaped = 0;
  assert_int_equal(posh_heap_reap(h, &reaped), 0);
  size_t count = 0;
  assert_int_equal(posh_heap_processes(h, NULL, 0, &count), 0);
  assert_int_equal(count, 1);
  assert_int_equal(thread_slots(h), 0);
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(posh_heap_detach(h), 0);
  assert_int_equal(reaped, 1);
}

/* Write a LIVE slot by hand (the test is the only user of the heap). */
static uint32_t fake_slot(posh_heap_t *h, uint32_t kind, pid_t pid,
                          uint64_t start) {
  for (uint32_t i = 0; i < h->hdr->max_slots; i++) {
    uint64_t w, st;
    posh__slot_read(&h->slots[i], &w, &st);
    if (posh__slotw_state(w) != POSH_SLOT_FREE)
      continue;
    uint32_t gen = posh__slotw_gen(w) + 1;
    h->slots[i].xid.AO_val2 = start;
    h->slots[i].xid.AO_val1 =
        posh__slotw_make(POSH_SLOT_LIVE, kind, gen, (uint32_t)pid);
    h->slots[i].parent = i;
    return posh__token_make(i, gen);
  }
  fail_msg("no free slot");
  return 0;
}

/* A slot whose pid is alive but whose start time is not that process's
 * (the pid was reused) is dead: the thorough liveness check says so and
 * marks it DEAD, the listing shows it DEAD and reap reclaims it.  The same
 * pid with the right start time is alive. */
static void test_reused_pid_is_dead(void **state) {
  (void)state;
  /* A pid that no longer exists: a child already waited for (forked
   * before the heap exists, so it never registered). */
  pid_t gone = fork();
  if (gone == 0)
    _exit(0);
  assert_true(gone > 0);
  waitpid(gone, NULL, 0);
  pid_t other = getppid();
  uint64_t start;
  if (posh__prim_proc_start_time(other, &start) != 0)
    skip();
  posh_heap_t *h = mk(NULL, 16);
  assert_non_null(h);

  uint32_t good = fake_slot(h, POSH_SLOT_PROCESS, other, start);
  assert_int_equal(posh__token_alive(h, good, 1), 1);
  uint32_t stale = fake_slot(h, POSH_SLOT_PROCESS, other, start + 12345);
  uint32_t stale_thr = fake_slot(h, POSH_SLOT_THREAD, other, start + 12345);
  /* A process slot of a pid that does not exist at all. */
  uint32_t nopid = fake_slot(h, POSH_SLOT_PROCESS, gone, start);

  posh_process_info_t p[64];
  size_t n = list(h, p);
  assert_int_equal(n, 4); /* self, good, stale, nopid */

  assert_int_equal(posh__token_alive(h, stale, 1), 0);
  uint64_t w, st;
  posh__slot_read(&h->slots[posh__token_slot(stale)], &w, &st);
  assert_int_equal(posh__slotw_state(w), POSH_SLOT_DEAD);
  n = list(h, p);
  int dead = 0;
  for (size_t i = 0; i < n; i++)
    if (p[i].slot == posh__token_slot(stale)) {
      assert_int_equal(p[i].state, POSH_PROC_DEAD);
      dead = 1;
    }
  assert_true(dead);
  /* Another generation of a slot, or a slot index out of range, is dead. */
  uint32_t wrong_gen =
      posh__token_make(posh__token_slot(good), posh__token_gen(good) + 1);
  assert_int_equal(posh__token_alive(h, wrong_gen, 1), 0);
  assert_int_equal(posh__token_alive(h, posh__token_make(4000, 1), 1), 0);

  unsigned reaped = 0;
  assert_int_equal(posh_heap_reap(h, &reaped), 0);
  /* stale (process), stale_thr (thread) and nopid; good stays. */
  assert_true(reaped >= 2);
  assert_int_equal(posh__token_alive(h, stale_thr, 1), 0);
  assert_int_equal(posh__token_alive(h, nopid, 1), 0);
  assert_int_equal(posh__token_alive(h, good, 1), 1);
  n = list(h, p);
  assert_int_equal(n, 2);
  assert_non_null(find_pid(p, n, other));
  assert_int_equal(find_pid(p, n, other)->state, POSH_PROC_LIVE);
  uint64_t w2, st2;
  posh__slot_read(&h->slots[posh__token_slot(stale_thr)], &w2, &st2);
  assert_int_equal(posh__slotw_state(w2), POSH_SLOT_FREE);
  /* Release the fake "good" slot so detach accounting stays sane. */
  h->slots[posh__token_slot(good)].xid.AO_val1 =
      posh__slotw_make(POSH_SLOT_FREE, 0, posh__token_gen(good), 0);
  h->slots[posh__token_slot(good)].xid.AO_val2 = 0;
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* posh_heap_check reports a registry slot in an impossible state (bad
 * state, no pid) and passes once it is cleared. */
static void test_check_detects_registry_damage(void **state) {
  (void)state;
  posh_heap_t *h = mk(NULL, 8);
  assert_non_null(h);
  assert_int_equal(tu_check(h), 0);
  uint32_t i = 0;
  uint64_t w, st;
  for (;; i++) {
    assert_true(i < 8);
    posh__slot_read(&h->slots[i], &w, &st);
    if (posh__slotw_state(w) == POSH_SLOT_FREE)
      break;
  }
  char report[512];
  h->slots[i].xid.AO_val1 =
      posh__slotw_make(3, POSH_SLOT_PROCESS, 1, (uint32_t)getpid());
  assert_int_equal(posh_heap_check(h, report, sizeof report), POSH_ECORRUPT);
  assert_non_null(strstr(report, "registry"));
  h->slots[i].xid.AO_val1 =
      posh__slotw_make(POSH_SLOT_LIVE, POSH_SLOT_PROCESS, 1, 0);
  assert_int_equal(posh_heap_check(h, report, sizeof report), POSH_ECORRUPT);
  h->slots[i].xid.AO_val1 = w;
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

static void *token_thread(void *arg) {
  posh_heap_t *h = arg;
  int err = 0;
  uint32_t t = posh__self_token(h, &err);
  return (void *)(uintptr_t)t;
}

/* The calling thread's token is alive; after the thread exits, its token
 * is not, and a new claim of the same slot gets a new generation. */
static void test_token_generations(void **state) {
  (void)state;
  posh_heap_t *h = mk(NULL, 3); /* one process slot, two thread slots */
  assert_non_null(h);
  int err = 0;
  uint32_t mine = posh__self_token(h, &err);
  assert_int_not_equal(mine, 0);
  assert_int_equal(posh__token_alive(h, mine, 1), 1);
  uint32_t prev = 0;
  for (int i = 0; i < 5; i++) {
    pthread_t th;
    void *ret;
    assert_int_equal(pthread_create(&th, NULL, token_thread, h), 0);
    assert_int_equal(pthread_join(th, &ret), 0);
    uint32_t t = (uint32_t)(uintptr_t)ret;
    assert_int_not_equal(t, 0);
    assert_int_not_equal(t, mine);
    assert_int_not_equal(t, prev);
    assert_int_equal(posh__token_alive(h, t, 1), 0);
    assert_int_equal(posh__token_alive(h, t, 0), 0);
    prev = t;
  }
  assert_int_equal(posh_heap_detach(h), 0);
}

/* ------------------------------------------------------------------------
 * A full registry.
 * ---------------------------------------------------------------------- */
struct full_ctx {
  posh_heap_t *heap;
  const char *name;
};

static int child_in_full_registry(void *arg) {
  struct full_ctx *c = arg;
  /* This child cannot register: the inherited handle is unusable (ENOSPC
   * when it registers on first use, EDETACHED if registered at fork). */
  int r = posh_heap_self_slot(c->heap);
  CHILD_CHECK(r == POSH_ENOSPC || r == POSH_EDETACHED);
  CHILD_CHECK(posh_alloc(c->heap, 16) == NULL);
  r = posh_last_error();
  CHILD_CHECK(r == POSH_ENOSPC || r == POSH_EDETACHED);
  posh_heap_t *h2 = (posh_heap_t *)&h2;
  CHILD_CHECK_EQ(posh_heap_attach(c->name, &h2), POSH_ENOSPC);
  CHILD_CHECK(h2 == NULL);
  /* It can still be detached (unmapped and freed). */
  CHILD_CHECK_EQ(posh_heap_detach(c->heap), 0);
  return 0;
}

static void *alloc_expect_enospc(void *arg) {
  posh_heap_t *h = arg;
  void *p = posh_alloc(h, 16);
  return (void *)(intptr_t)(p ? 0 : posh_last_error());
}

/* With max_processes = 2 and the creator's process and thread slots taken,
 * a forked child and an exec'd process cannot attach (ENOSPC; the child's
 * inherited handle reports EDETACHED) and a new thread cannot allocate. */
static void test_registry_full(void **state) {
  (void)state;
  char name[64];
  posh_heap_t *h = mk(tu_heap_name(name, sizeof name, "full"), 2);
  assert_non_null(h);
  void *b = posh_alloc(h, 16); /* our thread slot: now full */
  assert_non_null(b);

  pthread_t th;
  void *ret;
  assert_int_equal(pthread_create(&th, NULL, alloc_expect_enospc, h), 0);
  assert_int_equal(pthread_join(th, &ret), 0);
  assert_int_equal((int)(intptr_t)ret, POSH_ENOSPC);

  struct full_ctx c = {h, name};
  assert_int_equal(tu_run_child(child_in_full_registry, &c, TU_TIMEOUT_MS), 0);
  if (tu_have_attach_child()) {
    char code[16];
    snprintf(code, sizeof code, "%d", POSH_ENOSPC);
    const char *args[] = {name, "expect-err", code, NULL};
    assert_int_equal(tu_exec_child(args, TU_TIMEOUT_MS), 0);
  }
  size_t count = 0;
  assert_int_equal(posh_heap_processes(h, NULL, 0, &count), 0);
  assert_int_equal(count, 1);
  assert_int_equal(posh_free(h, b), 0);
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(posh_heap_detach(h), 0);
  assert_int_equal(posh_heap_unlink(name), 0);
}

static int child_claims_in_full_registry(void *arg) {
  posh_heap_t *h = arg;
  /* The fork's registration had to reclaim the dead child's slot. */
  CHILD_CHECK(posh_heap_self_slot(h) >= 0);
  CHILD_CHECK_EQ(posh_heap_detach(h), 0);
  return 0;
}

/* When the registry is full and one of its slots belongs to a dead
 * process, a new claim (an unrelated process's attach, a forked child's
 * registration) reclaims that slot and succeeds.  (Regression: the claim's
 * posh_heap_reap once asked for the caller's token, which claimed a slot,
 * which reaped ...: unbounded recursion.  Every claimant runs in a child.) */
static void test_full_registry_reclaims_dead(void **state) {
  (void)state;
  char name[64];
  posh_heap_t *h = mk(tu_heap_name(name, sizeof name, "fulldead"), 2);
  assert_non_null(h);
  /* Slot 1: us.  Slot 2: a child that is then killed. */
  int go;
  pid_t pid = start_kid(h, 0, &go);
  assert_int_equal(tu_kill(pid), TU_SIGNALED(SIGKILL));
  close(go);

  int st_exec = 0;
  if (tu_have_attach_child()) {
    const char *args[] = {name, "expect-err", "0", NULL};
    st_exec = tu_exec_child(args, TU_TIMEOUT_MS);
    if (st_exec == 0) {
      /* It took the dead slot and gave it back: make another dead one. */
      pid = start_kid(h, 0, &go);
      assert_int_equal(tu_kill(pid), TU_SIGNALED(SIGKILL));
      close(go);
    }
  }
  int st_fork = tu_run_child(child_claims_in_full_registry, h, TU_TIMEOUT_MS);
  assert_int_equal(posh_heap_detach(h), 0);
  assert_int_equal(posh_heap_unlink(name), 0);
  if (st_exec)
    fail_msg("exec'd attach to a full registry with a dead slot: status %d",
             st_exec);
  if (st_fork)
    fail_msg("forked child of a full registry with a dead slot: status %d",
             st_fork);
}

/* ------------------------------------------------------------------------
 * Threads.
 * ---------------------------------------------------------------------- */
struct thr_ctx {
  posh_heap_t *heap;
  pthread_barrier_t *in, *out;
  int result;
};

static void *claim_and_hold(void *arg) {
  struct thr_ctx *c = arg;
  void *p = posh_alloc(c->heap, 64);
  c->result = p ? 0 : posh_last_error();
  if (p)
    posh_free(c->heap, p);
  pthread_barrier_wait(c->in);  /* everybody has claimed */
  pthread_barrier_wait(c->out); /* the parent has looked */
  return NULL;
}

/* Threads that allocate claim a slot each (counted under their process)
 * and give it back at exit; once the registry is full a further thread
 * gets ENOSPC, and it succeeds after a holder exited. */
static void test_threads_claim_release(void **state) {
  (void)state;
  posh_heap_t *h = mk(NULL, 4); /* process + 3 thread slots */
  assert_non_null(h);
  pthread_barrier_t in, out;
  pthread_barrier_init(&in, NULL, 4);
  pthread_barrier_init(&out, NULL, 4);
  struct thr_ctx c[3];
  pthread_t th[3];
  for (int i = 0; i < 3; i++) {
    c[i] = (struct thr_ctx){h, &in, &out, -1};
    assert_int_equal(pthread_create(&th[i], NULL, claim_and_hold, &c[i]), 0);
  }
  pthread_barrier_wait(&in);
  for (int i = 0; i < 3; i++)
    assert_int_equal(c[i].result, 0);
  posh_process_info_t p[64];
  assert_int_equal(list(h, p), 1);
  assert_int_equal(p[0].threads, 3);
  assert_int_equal(thread_slots(h), 3);
  /* Full: one more thread cannot claim. */
  pthread_t extra;
  void *ret;
  assert_int_equal(pthread_create(&extra, NULL, alloc_expect_enospc, h), 0);
  assert_int_equal(pthread_join(extra, &ret), 0);
  assert_int_equal((int)(intptr_t)ret, POSH_ENOSPC);
  pthread_barrier_wait(&out);
  for (int i = 0; i < 3; i++)
    pthread_join(th[i], NULL);
  assert_int_equal(list(h, p), 1);
  assert_int_equal(p[0].threads, 0);
  assert_int_equal(thread_slots(h), 0);
  /* Slots are reused: many short-lived threads in a row all succeed. */
  for (int i = 0; i < 20; i++) {
    assert_int_equal(pthread_create(&extra, NULL, alloc_expect_enospc, h), 0);
    assert_int_equal(pthread_join(extra, &ret), 0);
    assert_int_equal((int)(intptr_t)ret, 0);
  }
  assert_int_equal(thread_slots(h), 0);
  pthread_barrier_destroy(&in);
  pthread_barrier_destroy(&out);
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* ------------------------------------------------------------------------
 * Registrations made by fork and by several handles.
 * ---------------------------------------------------------------------- */

/* A process that attached a heap and then starts another program with
 * fork+exec does not make that program an attached process (regression
 * test: the atfork handler used to register every forked child, and the
 * registration survived exec under the same pid and start time; fixed in
 * 449f87f). */
static void test_fork_exec_not_registered(void **state) {
  (void)state;
  posh_heap_t *h = mk(NULL, 0);
  assert_non_null(h);
  int in[2];
  assert_int_equal(pipe(in), 0);
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(in[0], 0);
    close(in[1]);
    execl("/bin/cat", "cat", (char *)NULL);
    _exit(127);
  }
  assert_true(pid > 0);
  tu_kid_add(pid);
  close(in[0]);
  /* Wait until it runs cat. */
  char path[64], comm[64] = "";
  snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
  for (int i = 0; i < 2000 && strncmp(comm, "cat", 3); i++) {
    FILE *f = fopen(path, "r");
    if (f) {
      if (!fgets(comm, sizeof comm, f))
        comm[0] = '\0';
      fclose(f);
    }
    if (strncmp(comm, "cat", 3))
      tu_sleep_ms(5);
  }
  size_t count = 0;
  assert_int_equal(posh_heap_processes(h, NULL, 0, &count), 0);
  close(in[1]);
  assert_int_equal(tu_wait(pid, TU_TIMEOUT_MS), 0);
  posh_heap_reap(h, NULL);
  assert_int_equal(posh_heap_detach(h), 0);
  assert_int_equal(count, 1);
}

/* Two handles on one heap in one process are independent: detaching the
 * second leaves the first handle's thread slot alive and its pages owned,
 * not abandoned for adoption by others (regression test: fixed in
 * 449f87f). */
static void test_two_handles_one_process(void **state) {
  (void)state;
  char name[64];
  posh_heap_t *h1 = mk(tu_heap_name(name, sizeof name, "two"), 0);
  assert_non_null(h1);
  void *p = posh_alloc(h1, 64);
  assert_non_null(p);
  int err = 0;
  uint32_t t1 = posh__self_token(h1, &err);
  assert_int_not_equal(t1, 0);
  posh__page_t *pg =
      &h1->pages[((unsigned char *)p - h1->data) >> POSH_PAGE_SHIFT];
  assert_int_equal(posh_atomic32_load_relaxed(&pg->xowner), t1);

  posh_heap_t *h2 = NULL;
  assert_int_equal(posh_heap_attach(name, &h2), 0);
  void *q = posh_alloc(h2, 64);
  assert_non_null(q);
  assert_int_equal(posh_free(h2, q), 0);
  assert_int_equal(posh_heap_detach(h2), 0);

  int alive = posh__token_alive(h1, t1, 1);
  uint32_t owner = posh_atomic32_load_relaxed(&pg->xowner);
  assert_int_equal(posh_free(h1, p), 0);
  assert_int_equal(posh_heap_detach(h1), 0);
  assert_int_equal(posh_heap_unlink(name), 0);
  assert_int_equal(alive, 1);
  assert_int_equal(owner, t1);
}

int main(int argc, char **argv) {
  tu_init(argc, argv);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_processes_self),
      cmocka_unit_test(test_processes_forked),
      cmocka_unit_test(test_killed_child_reaped),
      cmocka_unit_test(test_reap_counts_processes),
      cmocka_unit_test(test_reused_pid_is_dead),
      cmocka_unit_test(test_token_generations),
      cmocka_unit_test(test_check_detects_registry_damage),
      cmocka_unit_test(test_registry_full),
      cmocka_unit_test(test_full_registry_reclaims_dead),
      cmocka_unit_test(test_threads_claim_release),
      cmocka_unit_test(test_fork_exec_not_registered),
      cmocka_unit_test(test_two_handles_one_process),
  };
  return cmocka_run_group_tests(tests, NULL, tu_group_teardown);
}
