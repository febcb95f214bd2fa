/* SPDX-License-Identifier: MIT */
/*
 * This file contains the multi-process stress tests of the Queue: N
 * producer processes and M consumer processes move POSH_STRESS_MSGS
 * messages (default 1000000) of 0 B to 1 MiB (most small, a few of 1 MiB),
 * each carrying an XXH3 checksum that the consumer verifies, and the test
 * checks at the end that nothing was lost, duplicated or corrupted and
 * that each consumer saw each producer's messages in order.  A second run
 * SIGKILLs producers and consumers at random and restarts them, then
 * checks: no hang, no corrupted or duplicated message, every message whose
 * put returned 0 delivered exactly once unless a consumer died with it (at
 * most one per killed consumer), and a clean heap check after the reap.
 *
 * Environment: POSH_STRESS_MSGS (messages of the first run; the kill run
 * moves a tenth of it).
 */
#include "testutil.h"

#include <xxhash.h>

#include "atomic.h"
#include "posh/queue.h"

#define SEC 1000000000ll
#define MAX_INCARNATIONS 64
#define BIG (1u << 20)

static uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  return x ^ (x >> 33);
}

/* Size of message id: 95% 16..120 B, 4% 0..15 B (too short to carry an
 * id: counted anonymously), ~1% 1..16 KiB, 0.025% 64 KiB..1 MiB and
 * 0.005% exactly 1 MiB. */
static size_t pick_size(uint64_t id) {
  uint64_t r = mix64(id), u = r % 100000;
  r >>= 20;
  if (u < 5)
    return BIG;
  if (u < 30)
    return 65536 + (size_t)(r % (BIG - 65536));
  if (u < 1000)
    return 1024 + (size_t)(r % (15 * 1024));
  if (u < 5000)
    return (size_t)(r % 16);
  return 16 + (size_t)(r % 105);
}

#include "queue_msg.h"

/* Results shared by the test and its children (a MAP_SHARED mapping made
 * before the forks, outside the heap under test). */
typedef struct results {
  posh_atomic_t errors;   /* bad checksums, order violations */
  posh_atomic_t anon_put; /* short messages whose put returned 0 */
  posh_atomic_t anon_got;
  posh_atomic_t got;                      /* messages received */
  posh_atomic_t put_ok[MAX_INCARNATIONS]; /* seqs < this: put returned 0 */
  posh_atomic_t quota[MAX_INCARNATIONS];
  uint64_t per;             /* seq slots per incarnation in counts[] */
  posh_atomic32_t counts[]; /* deliveries of (incarnation, seq) */
} results_t;

static results_t *res;
static size_t res_size;
static posh_obj_t *queue;

static void results_new(uint64_t per) {
  res_size = sizeof(results_t) + MAX_INCARNATIONS * per * sizeof(uint32_t);
  res = mmap(NULL, res_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
             -1, 0);
  assert_true(res != MAP_FAILED);
  res->per = per;
}

static int producer(void *arg) {
  uint64_t inc = (uint64_t)(uintptr_t)arg;
  uint64_t quota = posh_atomic_load_relaxed(&res->quota[inc]);
  unsigned char *buf = malloc(BIG + 64);
  CHILD_CHECK(buf != NULL);
  for (uint64_t s = 0; s < quota; s++) {
    uint64_t id = inc << 40 | s;
    size_t len = pick_size(id);
    msg_fill(buf, len, id);
    int r = posh_queue_put(queue, buf, len, 120 * SEC);
    CHILD_CHECK_EQ(r, 0);
    if (len < 16)
      posh_atomic_fetch_add_full(&res->anon_put, 1);
    posh_atomic_store_release(&res->put_ok[inc], s + 1);
  }
  free(buf);
  return 0;
}

static int consumer(void *arg) {
  (void)arg;
  unsigned char *buf = malloc(BIG + 64);
  CHILD_CHECK(buf != NULL);
  uint64_t last[MAX_INCARNATIONS];
  memset(last, 0xff, sizeof last);
  for (;;) {
    size_t len;
    int r = posh_queue_get(queue, buf, BIG + 64, &len, 120 * SEC);
    if (r == POSH_ECLOSED)
      break;
    CHILD_CHECK_EQ(r, 0);
    uint64_t id;
    if (!msg_check(buf, len, &id)) {
      fprintf(stderr, "consumer %d: corrupt message of %zu bytes\n",
              (int)getpid(), len);
      posh_atomic_fetch_add_full(&res->errors, 1);
      continue;
    }
    if (id == UINT64_MAX) {
      posh_atomic_fetch_add_full(&res->anon_got, 1);
    } else {
      uint64_t inc = id >> 40, s = id & ((1ull << 40) - 1);
      if (inc >= MAX_INCARNATIONS || s >= res->per) {
        posh_atomic_fetch_add_full(&res->errors, 1);
        continue;
      }
      if (last[inc] != UINT64_MAX && s <= last[inc]) {
        fprintf(stderr, "consumer %d: producer %llu: seq %llu after %llu\n",
                (int)getpid(), (unsigned long long)inc, (unsigned long long)s,
                (unsigned long long)last[inc]);
        posh_atomic_fetch_add_full(&res->errors, 1);
      }
      last[inc] = s;
      posh_atomic32_fetch_add_full(&res->counts[inc * res->per + s], 1);
    }
    posh_atomic_fetch_add_full(&res->got, 1);
  }
  free(buf);
  return 0;
}

typedef struct fixture {
  char name[64];
  posh_heap_t *heap;
} fixture_t;

static int setup(void **state) {
  fixture_t *f = calloc(1, sizeof *f);
  if (!f)
    return -1;
  tu_heap_name(f->name, sizeof f->name, "qs");
  posh_heap_options_t o = {1ull << 30, 0, 0, 0, 0};
  if (posh_heap_create(f->name, &o, &f->heap) != 0) {
    free(f);
    return -1;
  }
  posh_queue_options_t qo = {1024, 0, 0, 64u << 20, 0, 0};
  if (posh_queue_create(f->heap, "stress", &qo, &queue) != 0)
    return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture_t *f = *state;
  tu_reap_kids();
  posh_obj_close(queue);
  queue = NULL;
  posh_heap_detach(f->heap);
  posh_heap_unlink(f->name);
  free(f);
  if (res)
    munmap(res, res_size);
  res = NULL;
  return 0;
}

static uint64_t stress_msgs(void) {
  const char *e = getenv("POSH_STRESS_MSGS");
  uint64_t n = e && *e ? strtoull(e, NULL, 10) : 1000000;
  return n < 1000 ? 1000 : n;
}

/* Every message counted once (or, with kills, at most once and exactly once
 * unless lost with a killed consumer); returns the number lost. */
static uint64_t verify(unsigned incarnations, int strict) {
  uint64_t lost = 0, dup = 0, phantom = 0;
  for (unsigned inc = 0; inc < incarnations; inc++) {
    uint64_t ok = posh_atomic_load_acquire(&res->put_ok[inc]);
    uint64_t quota = posh_atomic_load_relaxed(&res->quota[inc]);
    for (uint64_t s = 0; s < quota && s < res->per; s++) {
      if (pick_size((uint64_t)inc << 40 | s) < 16)
        continue;
      uint32_t c = posh_atomic32_load_relaxed(&res->counts[inc * res->per + s]);
      if (c > 1)
        dup++;
      else if (c == 0 && s < ok)
        lost++;
      else if (c == 1 && s > ok) /* at most the one in flight at the kill */
        phantom++;
    }
  }
  uint64_t ap = posh_atomic_load_relaxed(&res->anon_put);
  uint64_t ag = posh_atomic_load_relaxed(&res->anon_got);
  if (strict) {
    assert_int_equal(ag, ap);
  } else if (ag < ap) {
    lost += ap - ag;
  }
  fprintf(stderr,
          "stress: %llu received, %llu lost, %llu duplicated, "
          "%llu errors, %llu phantom\n",
          (unsigned long long)posh_atomic_load_relaxed(&res->got),
          (unsigned long long)lost, (unsigned long long)dup,
          (unsigned long long)posh_atomic_load_relaxed(&res->errors),
          (unsigned long long)phantom);
  assert_int_equal(dup, 0);
  assert_int_equal(phantom, 0);
  assert_int_equal(posh_atomic_load_relaxed(&res->errors), 0);
  if (strict)
    assert_int_equal(lost, 0);
  return lost;
}

/* 3 producers x 3 consumers move POSH_STRESS_MSGS checksummed messages of
 * 0 B..1 MiB: none lost, duplicated, corrupted or out of per-producer
 * order; the heap checks clean and no block is left in use. */
static void test_stress(void **state) {
  fixture_t *f = *state;
  const unsigned P = 3, C = 3;
  uint64_t n = stress_msgs(), quota = n / P + 1;
  results_new(quota);
  uint64_t before = tu_bytes_in_use(f->heap);
  pid_t kids[6];
  for (unsigned p = 0; p < P; p++) {
    posh_atomic_store_relaxed(&res->quota[p], quota);
    kids[p] = tu_fork(producer, (void *)(uintptr_t)p);
    assert_true(kids[p] > 0);
  }
  for (unsigned c = 0; c < C; c++) {
    kids[P + c] = tu_fork(consumer, NULL);
    assert_true(kids[P + c] > 0);
  }
  int limit = 600 * 1000;
  for (unsigned p = 0; p < P; p++)
    assert_int_equal(tu_wait(kids[p], limit), 0);
  assert_int_equal(posh_queue_close(queue), 0);
  for (unsigned c = 0; c < C; c++)
    assert_int_equal(tu_wait(kids[P + c], limit), 0);
  verify(P, 1);
  assert_int_equal(posh_atomic_load_relaxed(&res->got), P * quota);
  assert_int_equal(posh_queue_empty(queue), 1);
  assert_int_equal(posh_heap_reap(f->heap, NULL), 0);
  assert_int_equal(tu_check(f->heap), 0);
  /* Freeing the queue (its name and last handle gone; the children's
   * references went with the reap) frees its ring and cached blocks:
   * nothing leaked. */
  assert_int_equal(posh_obj_unbind(f->heap, "stress"), 0);
  posh_obj_close(queue);
  queue = NULL;
  uint64_t after = tu_bytes_in_use(f->heap);
  if (after >= before)
    fprintf(stderr, "stress: %llu bytes in use before, %llu after\n",
            (unsigned long long)before, (unsigned long long)after);
  assert_true(after < before);
}

/* Producers and consumers SIGKILLed at random and restarted: no hang, no
 * corrupted or duplicated message, every message whose put returned 0
 * delivered exactly once unless a killed consumer took it with it. */
static void test_stress_kill(void **state) {
  fixture_t *f = *state;
  const unsigned P = 3, C = 3;
  uint64_t n = stress_msgs() / 10, quota = n / P + 1;
  results_new(quota);
  unsigned seed = (unsigned)getpid() ^ (unsigned)tu_now_ms();
  pid_t prod[3], cons[3];
  unsigned next_inc = 0, consumer_kills = 0, producer_kills = 0;
  for (unsigned p = 0; p < P; p++) {
    posh_atomic_store_relaxed(&res->quota[next_inc], quota);
    prod[p] = tu_fork(producer, (void *)(uintptr_t)next_inc++);
    assert_true(prod[p] > 0);
  }
  for (unsigned c = 0; c < C; c++) {
    cons[c] = tu_fork(consumer, NULL);
    assert_true(cons[c] > 0);
  }
  /* Kill a random worker every few ms and start a replacement, while
   * incarnations last. */
  const unsigned kills = 40;
  for (unsigned k = 0; k < kills && next_inc < MAX_INCARNATIONS; k++) {
    tu_sleep_ms(2 + rand_r(&seed) % 30);
    unsigned who = rand_r(&seed) % (P + C);
    if (who < P) {
      int st = tu_kill(prod[who]);
      assert_true(st == TU_SIGNALED(SIGKILL) || st == 0);
      producer_kills++;
      posh_atomic_store_relaxed(&res->quota[next_inc], quota / 4);
      prod[who] = tu_fork(producer, (void *)(uintptr_t)next_inc++);
      assert_true(prod[who] > 0);
    } else {
      int st = tu_kill(cons[who - P]);
      assert_true(st == TU_SIGNALED(SIGKILL));
      consumer_kills++;
      cons[who - P] = tu_fork(consumer, NULL);
      assert_true(cons[who - P] > 0);
    }
  }
  for (unsigned p = 0; p < P; p++)
    assert_int_equal(tu_wait(prod[p], 600 * 1000), 0);
  assert_int_equal(posh_queue_close(queue), 0);
  for (unsigned c = 0; c < C; c++)
    assert_int_equal(tu_wait(cons[c], 600 * 1000), 0);
  uint64_t lost = verify(next_inc, 0);
  fprintf(stderr,
          "stress-kill: %u producer kills, %u consumer kills, %llu lost\n",
          producer_kills, consumer_kills, (unsigned long long)lost);
  assert_true(lost <= consumer_kills);
  assert_int_equal(posh_heap_reap(f->heap, NULL), 0);
  assert_int_equal(tu_check(f->heap), 0);
}

int main(int argc, char **argv) {
  tu_init(argc, argv);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_stress, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stress_kill, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, tu_group_teardown);
}
