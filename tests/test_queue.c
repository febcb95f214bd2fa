/* SPDX-License-Identifier: MIT */
/*
 * This file contains the unit tests of the Queue object (posh/queue.h):
 * messages of every size class, FIFO order, bounds, timeouts, close,
 * JoinableQueue, zero-copy, batches, bad input, cross-process use through a
 * forked child and an exec'd unrelated program (tests/queue_child), and
 * the exact crash states a kill -9 can leave (a slot claimed by a dead
 * producer, a slot taken by a dead consumer), built through the internal
 * layout (objects/queue_internal.h).
 */
#include "testutil.h"

#include <pthread.h>
#include <xxhash.h>

#include "queue_internal.h"

#define SEC 1000000000ll

#include "queue_msg.h"

/* Same size cycle as queue_child's producer. */
static size_t child_size_of(uint64_t seq) {
  static const size_t sizes[] = {0,   8,   16,   40,    100,
                                 112, 113, 1000, 70000, 1u << 20};
  return sizes[seq % (sizeof sizes / sizeof sizes[0])];
}

typedef struct fixture {
  char name[64];
  posh_heap_t *heap;
} fixture_t;

static int setup(void **state) {
  fixture_t *f = calloc(1, sizeof *f);
  if (!f)
    return -1;
  tu_heap_name(f->name, sizeof f->name, "q");
  posh_heap_options_t o = {256ull << 20, 0, 0, 0, 0};
  if (posh_heap_create(f->name, &o, &f->heap) != 0) {
    free(f);
    return -1;
  }
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture_t *f = *state;
  tu_reap_kids();
  posh_heap_detach(f->heap);
  posh_heap_unlink(f->name);
  free(f);
  return 0;
}

static posh_obj_t *mkq(posh_heap_t *heap, const char *name, uint32_t cap,
                       uint32_t flags, uint64_t max_msgs, uint64_t max_bytes) {
  posh_queue_options_t o = {cap, flags, max_msgs, max_bytes, 0, 0};
  posh_obj_t *q = NULL;
  assert_int_equal(posh_queue_create(heap, name, &o, &q), 0);
  return q;
}

/* ------------------------------------------------------------------------ */

/* Messages of every size class (empty, inline, just above inline, large)
 * arrive intact and in order, and large blocks are freed after the get. */
static void test_sizes_fifo(void **state) {
  fixture_t *f = *state;
  posh_obj_t *q = mkq(f->heap, NULL, 64, 0, 0, 0);
  posh_queue_info_t info;
  assert_int_equal(posh_queue_info(q, &info), 0);
  assert_int_equal(info.capacity, 64);
  assert_int_equal(info.inline_max, POSH_QUEUE_DEFAULT_SLOT - 16);
  size_t sizes[] = {0,    1,       15, 16, info.inline_max, info.inline_max + 1,
                    4096, 1u << 20};
  size_t n = sizeof sizes / sizeof sizes[0];
  unsigned char *buf = malloc((1u << 20) + 1), *out = malloc((1u << 20) + 1);
  assert_non_null(buf);
  assert_non_null(out);
  /* Round 0 warms the allocator's pages and the queue's block cache, so
   * the in-use figure after the later rounds must equal the one after it
   * (nothing leaks per message). */
  uint64_t before = 0;
  for (int round = 0; round < 3; round++) {
    if (round == 1)
      before = tu_bytes_in_use(f->heap);
    for (size_t i = 0; i < n; i++) {
      msg_fill(buf, sizes[i], 100 + i);
      assert_int_equal(posh_queue_put(q, buf, sizes[i], 0), 0);
    }
    uint64_t qs;
    assert_int_equal(posh_queue_qsize(q, &qs), 0);
    assert_int_equal(qs, n);
    assert_int_equal(posh_queue_empty(q), 0);
    for (size_t i = 0; i < n; i++) {
      size_t len = 0;
      uint64_t id;
      assert_int_equal(posh_queue_get(q, out, (1u << 20) + 1, &len, 0), 0);
      assert_int_equal(len, sizes[i]);
      assert_true(msg_check(out, len, &id));
      if (len >= 16)
        assert_int_equal(id, 100 + i);
    }
    assert_int_equal(posh_queue_empty(q), 1);
    if (round > 0)
      assert_int_equal(tu_bytes_in_use(f->heap), before);
  }
  free(buf);
  free(out);
  assert_int_equal(tu_check(f->heap), 0);
  posh_obj_close(q);
}

/* Large messages copied into their block with streaming stores (512 KiB
 * and more) arrive byte-exact whatever the source's alignment and the
 * length's remainder modulo a cache line, as do those just below. */
static void test_large_copy_edges(void **state) {
  fixture_t *f = *state;
  posh_obj_t *q = mkq(f->heap, NULL, 16, 0, 0, 0);
  const size_t k512 = 512u * 1024;
  const size_t sizes[] = {k512 - 1, k512, k512 + 1, k512 + 63, k512 + 64,
                          (1u << 20) + 5};
  const size_t offs[] = {0, 1, 8, 63};
  size_t max = (1u << 20) + 5 + 64;
  unsigned char *src = malloc(max), *out = malloc(max);
  assert_non_null(src);
  assert_non_null(out);
  for (size_t i = 0; i < max; i++)
    src[i] = (unsigned char)(i * 131 + (i >> 9));
  for (size_t a = 0; a < sizeof offs / sizeof offs[0]; a++) {
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
      size_t len = 0;
      assert_int_equal(posh_queue_put(q, src + offs[a], sizes[i], 0), 0);
      memset(out, 0xee, max);
      assert_int_equal(posh_queue_get(q, out, max, &len, 0), 0);
      assert_int_equal(len, sizes[i]);
      assert_memory_equal(out, src + offs[a], len);
      assert_int_equal(out[len], 0xee); /* nothing written past the end */
    }
  }
  free(src);
  free(out);
  posh_obj_close(q);
  assert_int_equal(tu_check(f->heap), 0);
}

/* Non-blocking calls report POSH_EAGAIN, bounded waits POSH_ETIMEDOUT, on
 * an empty and on a full queue (the ring is the bound). */
static void test_timeouts(void **state) {
  fixture_t *f = *state;
  posh_obj_t *q = mkq(f->heap, NULL, 4, 0, 0, 0);
  char b[8] = "abcdefg";
  size_t len;
  assert_int_equal(posh_queue_get(q, b, sizeof b, &len, 0), POSH_EAGAIN);
  assert_int_equal(posh_queue_get(q, b, sizeof b, &len, 2000000),
                   POSH_ETIMEDOUT);
  for (int i = 0; i < 4; i++)
    assert_int_equal(posh_queue_put(q, b, 8, 0), 0);
  assert_int_equal(posh_queue_full(q), 1);
  assert_int_equal(posh_queue_put(q, b, 8, 0), POSH_EAGAIN);
  assert_int_equal(posh_queue_put(q, b, 8, 2000000), POSH_ETIMEDOUT);
  assert_int_equal(posh_queue_get(q, b, sizeof b, &len, 0), 0);
  assert_int_equal(posh_queue_full(q), 0);
  assert_int_equal(posh_queue_put(q, b, 8, 0), 0);
  posh_obj_close(q);
}

/* A message that does not fit the buffer is reported with its length and
 * stays queued. */
static void test_emsgsize_peek(void **state) {
  fixture_t *f = *state;
  posh_obj_t *q = mkq(f->heap, NULL, 8, 0, 0, 0);
  unsigned char big[5000], out[5000];
  msg_fill(big, 5000, 7);
  assert_int_equal(posh_queue_put(q, big, 5000, 0), 0);
  assert_int_equal(posh_queue_put(q, big, 40, 0), 0);
  size_t len = 0;
  assert_int_equal(posh_queue_get(q, out, 100, &len, 0), POSH_EMSGSIZE);
  assert_int_equal(len, 5000);
  assert_int_equal(posh_queue_get(q, out, 16, &len, 0), POSH_EMSGSIZE);
  assert_int_equal(posh_queue_get(q, out, sizeof out, &len, 0), 0);
  assert_int_equal(len, 5000);
  assert_memory_equal(out, big, 5000);
  assert_int_equal(posh_queue_get(q, out, 40, &len, 0), 0);
  assert_int_equal(len, 40);
  posh_obj_close(q);
}

/* The message bound and the byte bound block puts exactly; a message larger
 * than the byte bound is refused. */
static void test_bounds(void **state) {
  fixture_t *f = *state;
  posh_obj_t *q = mkq(f->heap, NULL, 16, 0, 3, 0);
  char b[600] = {0};
  size_t len;
  for (int i = 0; i < 3; i++)
    assert_int_equal(posh_queue_put(q, b, 1, 0), 0);
  assert_int_equal(posh_queue_put(q, b, 1, 0), POSH_EAGAIN);
  assert_int_equal(posh_queue_full(q), 1);
  assert_int_equal(posh_queue_get(q, b, sizeof b, &len, 0), 0);
  assert_int_equal(posh_queue_put(q, b, 1, 0), 0);
  assert_int_equal(posh_queue_put(q, b, 1, 0), POSH_EAGAIN);
  posh_obj_close(q);

  q = mkq(f->heap, NULL, 16, 0, 0, 1000);
  assert_int_equal(posh_queue_put(q, b, 600, 0), 0);
  assert_int_equal(posh_queue_put(q, b, 600, 0), POSH_EAGAIN);
  assert_int_equal(posh_queue_put(q, b, 400, 0), 0);
  assert_int_equal(posh_queue_full(q), 1);
  assert_int_equal(posh_queue_put(q, b, 1, 0), POSH_EAGAIN);
  char *huge = calloc(1, 1001);
  assert_int_equal(posh_queue_put(q, huge, 1001, 0), POSH_EMSGSIZE);
  free(huge);
  assert_int_equal(posh_queue_get(q, b, sizeof b, &len, 0), 0);
  assert_int_equal(len, 600);
  assert_int_equal(posh_queue_put(q, b, 600, 0), 0);
  posh_obj_close(q);
}

static int blocked_getter(void *arg) {
  posh_obj_t *q = arg;
  char b[8];
  size_t len;
  /* The message put before close is drained first, then ECLOSED. */
  int r = posh_queue_get(q, b, sizeof b, &len, POSH_FOREVER);
  CHILD_CHECK_EQ(r, 0);
  r = posh_queue_get(q, b, sizeof b, &len, POSH_FOREVER);
  CHILD_CHECK_EQ(r, POSH_ECLOSED);
  return 0;
}

static int blocked_putter(void *arg) {
  posh_obj_t *q = arg;
  int r;
  do
    r = posh_queue_put(q, "x", 1, POSH_FOREVER);
  while (r == 0);
  CHILD_CHECK_EQ(r, POSH_ECLOSED);
  return 0;
}

/* Close: consumers drain what is queued and then get POSH_ECLOSED, puts fail
 * with POSH_ECLOSED, and blocked getters and putters wake up. */
static void test_close(void **state) {
  fixture_t *f = *state;
  posh_obj_t *q = mkq(f->heap, NULL, 4, 0, 0, 0);
  char b[8];
  size_t len;
  assert_int_equal(posh_queue_closed(q), 0);
  assert_int_equal(posh_queue_put(q, "ab", 2, 0), 0);
  assert_int_equal(posh_queue_close(q), 0);
  assert_int_equal(posh_queue_close(q), 0);
  assert_int_equal(posh_queue_closed(q), 1);
  assert_int_equal(posh_queue_put(q, "cd", 2, 0), POSH_ECLOSED);
  assert_int_equal(posh_queue_get(q, b, sizeof b, &len, 0), 0);
  assert_int_equal(len, 2);
  assert_int_equal(posh_queue_get(q, b, sizeof b, &len, 0), POSH_ECLOSED);
  assert_int_equal(posh_queue_get(q, b, sizeof b, &len, POSH_FOREVER),
                   POSH_ECLOSED);
  posh_obj_close(q);

  /* A getter blocked on an empty queue, in another process. */
  q = mkq(f->heap, NULL, 4, 0, 0, 0);
  pid_t kid = tu_fork(blocked_getter, q);
  assert_true(kid > 0);
  assert_int_equal(posh_queue_put(q, "x", 1, 0), 0);
  tu_sleep_ms(50);
  assert_int_equal(posh_queue_close(q), 0);
  assert_int_equal(tu_wait(kid, TU_TIMEOUT_MS), 0);
  posh_obj_close(q);

  /* A putter blocked on a full queue. */
  q = mkq(f->heap, NULL, 2, 0, 0, 0);
  kid = tu_fork(blocked_putter, q);
  assert_true(kid > 0);
  tu_sleep_ms(50);
  assert_int_equal(posh_queue_close(q), 0);
  assert_int_equal(tu_wait(kid, TU_TIMEOUT_MS), 0);
  posh_obj_close(q);
}

static int join_worker(void *arg) {
  posh_obj_t *q = arg;
  char b[8];
  size_t len;
  for (int i = 0; i < 5; i++) {
    CHILD_CHECK_EQ(posh_queue_get(q, b, sizeof b, &len, 10 * SEC), 0);
    tu_sleep_ms(5);
    CHILD_CHECK_EQ(posh_queue_task_done(q), 0);
  }
  return 0;
}

/* JoinableQueue: join waits until every put was task_done'd (by another
 * process), task_done too often is POSH_ERANGE, and a plain queue has no
 * task_done (POSH_ETYPE). */
static void test_joinable(void **state) {
  fixture_t *f = *state;
  posh_obj_t *q = mkq(f->heap, NULL, 8, POSH_QUEUE_JOINABLE, 0, 0);
  uint64_t n;
  assert_int_equal(posh_queue_join(q, 0), 0);
  assert_int_equal(posh_queue_task_done(q), POSH_ERANGE);
  for (int i = 0; i < 5; i++)
    assert_int_equal(posh_queue_put(q, "t", 1, 0), 0);
  assert_int_equal(posh_queue_unfinished(q, &n), 0);
  assert_int_equal(n, 5);
  assert_int_equal(posh_queue_join(q, 0), POSH_EAGAIN);
  assert_int_equal(posh_queue_join(q, 1000000), POSH_ETIMEDOUT);
  pid_t kid = tu_fork(join_worker, q);
  assert_true(kid > 0);
  assert_int_equal(posh_queue_join(q, 20 * SEC), 0);
  assert_int_equal(posh_queue_unfinished(q, &n), 0);
  assert_int_equal(n, 0);
  assert_int_equal(tu_wait(kid, TU_TIMEOUT_MS), 0);
  assert_int_equal(posh_queue_task_done(q), POSH_ERANGE);
  posh_obj_close(q);

  q = mkq(f->heap, NULL, 8, 0, 0, 0);
  assert_int_equal(posh_queue_task_done(q), POSH_ETYPE);
  assert_int_equal(posh_queue_join(q, 0), POSH_ETYPE);
  posh_obj_close(q);
}

/* Zero-copy: a heap block handed over by put_block arrives as the same
 * block through get_msg (no copy) and is freed by msg_release; small
 * messages arrive in the inline buffer. */
static void test_zero_copy(void **state) {
  fixture_t *f = *state;
  posh_obj_t *q = mkq(f->heap, NULL, 8, 0, 0, 0);
  unsigned char *blk = posh_alloc(f->heap, 300000);
  assert_non_null(blk);
  msg_fill(blk, 300000, 42);
  assert_int_equal(posh_queue_put_block(q, blk, 300000, 0), 0);
  assert_int_equal(posh_queue_put(q, "hello", 5, 0), 0);
  posh_queue_msg_t m;
  uint64_t id;
  assert_int_equal(posh_queue_get_msg(q, &m, 0), 0);
  assert_ptr_equal(m.data, blk);
  assert_int_equal(m.len, 300000);
  assert_true(msg_check(m.data, m.len, &id));
  assert_int_equal(id, 42);
  assert_int_equal(posh_queue_msg_release(q, &m), 0);
  /* Released into the queue's block cache, not freed. */
  assert_int_equal(posh_block_state(f->heap, blk), POSH_BLOCK_ALLOCATED);
  assert_int_equal(posh_queue_get_msg(q, &m, 0), 0);
  assert_int_equal(m.len, 5);
  assert_memory_equal(m.data, "hello", 5);
  assert_int_equal(posh_queue_msg_release(q, &m), 0);
  assert_int_equal(posh_queue_get_msg(q, &m, 0), POSH_EAGAIN);
  /* A large message put by copy can also be received without copy. */
  unsigned char *big = malloc(100000);
  msg_fill(big, 100000, 43);
  assert_int_equal(posh_queue_put(q, big, 100000, 0), 0);
  assert_int_equal(posh_queue_get_msg(q, &m, 0), 0);
  assert_ptr_equal(m.data, blk); /* the cached block was reused */
  assert_memory_equal(m.data, big, 100000);
  assert_int_equal(posh_queue_msg_release(q, &m), 0);
  /* msg_release takes back only a block that get_msg of this queue handed
   * out: not another live block (it would be reused under its owner), not
   * a block of another queue, and not the same message twice. */
  posh_obj_t *q2 = mkq(f->heap, NULL, 8, 0, 0, 0);
  assert_int_equal(posh_queue_put(q, big, 100000, 0), 0);
  assert_int_equal(posh_queue_get_msg(q, &m, 0), 0);
  posh_queue_msg_t forged = m, copy = m;
  unsigned char *other = posh_alloc(f->heap, 100000);
  assert_non_null(other);
  forged.block = forged.data = other;
  assert_int_equal(posh_queue_msg_release(q, &forged), POSH_EINVAL);
  assert_ptr_equal(forged.block, other); /* untouched */
  assert_int_equal(posh_queue_msg_release(q2, &copy), POSH_EINVAL);
  char local_junk[64];
  forged.block = local_junk;
  assert_int_equal(posh_queue_msg_release(q, &forged), POSH_EFAULT);
  assert_int_equal(posh_queue_msg_release(q, &m), 0);
  assert_null(m.block);
  assert_int_equal(posh_queue_msg_release(q, &m), 0); /* empty now: no-op */
  assert_int_equal(posh_queue_msg_release(q, &copy), POSH_EINVAL); /* twice */
  posh_free(f->heap, other);
  posh_obj_close(q2);
  free(big);
  /* put_block refuses what is not a live block of the heap. */
  char local[16];
  assert_int_equal(posh_queue_put_block(q, local, 16, 0), POSH_EFAULT);
  assert_int_equal(posh_queue_put_block(q, NULL, 16, 0), POSH_EINVAL);
  /* The last reference gone, the queue frees its cached blocks. */
  assert_int_equal(posh_block_state(f->heap, blk), POSH_BLOCK_ALLOCATED);
  posh_obj_close(q);
  assert_int_equal(posh_block_state(f->heap, blk), POSH_BLOCK_FREE);
}

/* put_many / get_many move batches in order and report partial progress. */
static void test_many(void **state) {
  fixture_t *f = *state;
  posh_obj_t *q = mkq(f->heap, NULL, 8, 0, 0, 0);
  char data[10][300];
  struct iovec iov[10];
  for (int i = 0; i < 10; i++) {
    memset(data[i], 'a' + i, sizeof data[i]);
    iov[i].iov_base = data[i];
    iov[i].iov_len = (size_t)(i * 30);
  }
  size_t done = 99;
  assert_int_equal(posh_queue_put_many(q, iov, 10, &done, 0), POSH_EAGAIN);
  assert_int_equal(done, 8);
  char out[10][300];
  struct iovec oiov[10];
  size_t lens[10];
  for (int i = 0; i < 10; i++) {
    oiov[i].iov_base = out[i];
    oiov[i].iov_len = sizeof out[i];
  }
  assert_int_equal(posh_queue_get_many(q, oiov, lens, 10, &done, 0), 0);
  assert_int_equal(done, 8);
  for (int i = 0; i < 8; i++) {
    assert_int_equal(lens[i], (size_t)(i * 30));
    assert_memory_equal(out[i], data[i], lens[i]);
  }
  assert_int_equal(posh_queue_put_many(q, iov + 8, 2, &done, SEC), 0);
  assert_int_equal(done, 2);
  assert_int_equal(posh_queue_get_many(q, oiov, lens, 10, &done, SEC), 0);
  assert_int_equal(done, 2);
  assert_int_equal(lens[1], 270);
  assert_int_equal(posh_queue_get_many(q, oiov, lens, 10, &done, 0),
                   POSH_EAGAIN);
  assert_int_equal(done, 0);
  posh_obj_close(q);
}

/* Bad input: NULL arguments, bad options, a handle of another type, a stale
 * reference to a freed queue. */
static void test_bad_input(void **state) {
  fixture_t *f = *state;
  posh_obj_t *q = NULL;
  char b[8];
  size_t len;
  posh_queue_options_t o = {3, 0, 0, 0, 0, 0};
  assert_int_equal(posh_queue_create(NULL, NULL, NULL, &q), POSH_EINVAL);
  assert_int_equal(posh_queue_create(f->heap, NULL, NULL, NULL), POSH_EINVAL);
  assert_int_equal(posh_queue_create(f->heap, NULL, &o, &q), POSH_EINVAL);
  o.capacity = 4;
  o.max_messages = 5;
  assert_int_equal(posh_queue_create(f->heap, NULL, &o, &q), POSH_EINVAL);
  o.max_messages = 0;
  o.slot_size = 96;
  assert_int_equal(posh_queue_create(f->heap, NULL, &o, &q), POSH_EINVAL);
  o.slot_size = 0;
  o.flags = 0x100;
  assert_int_equal(posh_queue_create(f->heap, NULL, &o, &q), POSH_EINVAL);
  o.flags = 0;
  o.capacity = 1u << 30;
  assert_int_equal(posh_queue_create(f->heap, NULL, &o, &q), POSH_EINVAL);
  o.capacity = 1u << 24; /* 2 GiB of slots: more than the heap */
  o.slot_size = 128;
  assert_int_equal(posh_queue_create(f->heap, NULL, &o, &q), POSH_ENOMEM);

  assert_int_equal(posh_queue_put(NULL, "x", 1, 0), POSH_EINVAL);
  assert_int_equal(posh_queue_get(NULL, b, 8, &len, 0), POSH_EINVAL);
  assert_int_equal(posh_queue_qsize(NULL, NULL), POSH_EINVAL);
  assert_int_equal(posh_queue_close(NULL), POSH_EINVAL);
  assert_int_equal(posh_queue_empty(NULL), POSH_EINVAL);
  assert_int_equal(posh_queue_task_done(NULL), POSH_EINVAL);
  assert_int_equal(posh_queue_get_msg(NULL, NULL, 0), POSH_EINVAL);

  /* Wrong type. */
  posh_obj_t *buf;
  assert_int_equal(posh_buffer_create(f->heap, NULL, 64, 0, &buf), 0);
  assert_int_equal(posh_queue_put(buf, "x", 1, 0), POSH_ETYPE);
  assert_int_equal(posh_queue_get(buf, b, 8, &len, 0), POSH_ETYPE);
  assert_int_equal(posh_queue_close(buf), POSH_ETYPE);
  assert_int_equal(posh_queue_join(buf, 0), POSH_ETYPE);
  posh_obj_close(buf);

  q = mkq(f->heap, "bad-q", 4, 0, 0, 0);
  assert_int_equal(posh_queue_put(q, NULL, 1, 0), POSH_EINVAL);
  /* Oversized: larger than the heap (no block can hold it; nothing is
   * read from the buffer first). */
  assert_int_equal(posh_queue_put(q, b, (size_t)512 << 20, 0), POSH_ENOMEM);
  assert_int_equal(posh_queue_put(q, NULL, 0, 0), 0);
  assert_int_equal(posh_queue_get(q, NULL, 8, &len, 0), POSH_EINVAL);
  assert_int_equal(posh_queue_get(q, b, 8, NULL, 0), POSH_EINVAL);
  assert_int_equal(posh_queue_get(q, NULL, 0, &len, 0), 0);
  assert_int_equal(len, 0);
  assert_int_equal(posh_queue_info(q, NULL), POSH_EINVAL);
  assert_int_equal(posh_queue_put_many(q, NULL, 1, NULL, 0), POSH_EINVAL);
  assert_int_equal(posh_queue_put_many(q, NULL, 0, NULL, 0), 0);
  assert_int_equal(posh_queue_put_many(NULL, NULL, 0, NULL, 0), POSH_EINVAL);
  assert_int_equal(posh_queue_get_many(q, NULL, NULL, 1, NULL, 0), POSH_EINVAL);
  /* Opening by name checks the type. */
  posh_obj_t *q2;
  assert_int_equal(posh_obj_open(f->heap, "bad-q", POSH_OBJ_DICT, &q2),
                   POSH_ETYPE);
  assert_int_equal(posh_obj_open(f->heap, "bad-q", POSH_OBJ_QUEUE, &q2), 0);
  posh_obj_close(q2);
  /* Stale reference once the queue is gone. */
  posh_obj_ref_t ref;
  assert_int_equal(posh_obj_ref(q, &ref), 0);
  assert_int_equal(posh_obj_unbind(f->heap, "bad-q"), 0);
  posh_obj_close(q);
  assert_int_equal(posh_obj_open_ref(f->heap, &ref, &q2), POSH_ESTALE);
  assert_int_equal(tu_check(f->heap), 0);
}

/* ------------------------------------------------------------------------
 * Cross-process.
 * ---------------------------------------------------------------------- */
static pid_t spawn_queue_child(const char *const *args, int stdout_fd) {
  char path[PATH_MAX + 32];
  const char *dir = getenv("POSH_TEST_BINDIR");
  snprintf(path, sizeof path, "%s/queue_child",
           dir && *dir ? dir : tu_argv0_dir);
  const char *argv[16];
  int n = 0;
  argv[n++] = path;
  for (int i = 0; args[i] && n < 15; i++)
    argv[n++] = args[i];
  argv[n] = NULL;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (stdout_fd >= 0)
    posix_spawn_file_actions_adddup2(&fa, stdout_fd, 1);
  fflush(stdout);
  fflush(stderr);
  extern char **environ;
  pid_t pid;
  int r = posix_spawn(&pid, path, &fa, NULL, (char *const *)argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (r != 0) {
    fprintf(stderr, "cannot spawn %s: %s\n", path, strerror(r));
    return -1;
  }
  tu_kid_add(pid);
  return pid;
}

typedef struct xp_arg {
  posh_obj_t *q;
  uint64_t n, producer;
} xp_arg_t;

static int fork_producer(void *arg) {
  xp_arg_t *a = arg;
  unsigned char *buf = malloc((1u << 20) + 16);
  CHILD_CHECK(buf != NULL);
  for (uint64_t s = 0; s < a->n; s++) {
    size_t len = child_size_of(s);
    msg_fill(buf, len, a->producer << 40 | s);
    CHILD_CHECK_EQ(posh_queue_put(a->q, buf, len, 20 * SEC), 0);
  }
  free(buf);
  return 0;
}

/* Two producers (a forked child and an exec'd unrelated program that opens
 * the queue by name) feed an exec'd consumer and this process: every
 * message arrives intact, once, in per-producer order. */
static void test_cross_process(void **state) {
  fixture_t *f = *state;
  posh_obj_t *q = mkq(f->heap, "xq", 16, 0, 0, 0);
  const uint64_t n = 200;
  xp_arg_t a = {q, n, 1};
  pid_t fp = tu_fork(fork_producer, &a);
  assert_true(fp > 0);
  char nbuf[32];
  snprintf(nbuf, sizeof nbuf, "%llu", (unsigned long long)n);
  const char *pargs[] = {f->name, "xq", "produce", nbuf, "2", NULL};
  pid_t ep = spawn_queue_child(pargs, -1);
  assert_true(ep > 0);
  /* The exec'd consumer drains until close; this process takes some too. */
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  const char *cargs[] = {f->name, "xq", "drain", NULL};
  pid_t ec = spawn_queue_child(cargs, fds[1]);
  close(fds[1]);
  assert_true(ec > 0);
  unsigned char *buf = malloc((1u << 20) + 16);
  uint64_t mine = 0, last[3] = {UINT64_MAX, UINT64_MAX, UINT64_MAX};
  for (int i = 0; i < 100; i++) {
    size_t len;
    uint64_t id;
    assert_int_equal(posh_queue_get(q, buf, (1u << 20) + 16, &len, 20 * SEC),
                     0);
    assert_true(msg_check(buf, len, &id));
    if (id != UINT64_MAX) {
      uint64_t p = id >> 40, s = id & ((1ull << 40) - 1);
      assert_true(p == 1 || p == 2);
      assert_true(last[p] == UINT64_MAX || s > last[p]);
      last[p] = s;
    }
    mine++;
  }
  assert_int_equal(tu_wait(fp, TU_TIMEOUT_MS), 0);
  assert_int_equal(tu_wait(ep, TU_TIMEOUT_MS), 0);
  assert_int_equal(posh_queue_close(q), 0);
  assert_int_equal(tu_wait(ec, TU_TIMEOUT_MS), 0);
  char out[128] = {0};
  ssize_t got = read(fds[0], out, sizeof out - 1);
  close(fds[0]);
  assert_true(got > 0);
  unsigned long long count = 0, sum = 0;
  assert_int_equal(sscanf(out, "OK %llu %llu", &count, &sum), 2);
  assert_int_equal(count + mine, 2 * n);
  free(buf);
  assert_int_equal(tu_check(f->heap), 0);
  posh_obj_close(q);
}

/* ------------------------------------------------------------------------
 * Exact crash states (kill -9 at the worst instants).
 * ---------------------------------------------------------------------- */
typedef struct crash_arg {
  posh_obj_t *q;
  int ready_fd;
  posh_off_t blk; /* out: block the child left in the slot */
  int mode;       /* 0: claim and die; 1: take and die */
} crash_arg_t;

/* In a child: leave the slot at the tail CLAIMED (mode 0: with a large
 * block and the joinable count, as a producer killed just before its FULL
 * CAS) or the slot at the head TAKEN (mode 1: a consumer killed while
 * copying), report, and wait for the SIGKILL. */
static int crash_child(void *arg) {
  crash_arg_t *a = arg;
  posh__queue_shared_t *sh;
  CHILD_CHECK_EQ(posh__obj_get(a->q, POSH_OBJ_QUEUE, (void **)&sh), 0);
  int err = 0;
  uint32_t tok = posh__obj_token(a->q, &err);
  CHILD_CHECK(tok != 0);
  posh_heap_t *heap = posh_obj_heap(a->q);
  if (a->mode == 0) {
    uint64_t t = posh_atomic_load_relaxed(&sh->xtail);
    posh__queue_slot_t *s = posh__q_slot_at(sh, t);
    uint32_t lap = posh__q_lap_of(sh, t);
    CHILD_CHECK(posh_atomic_cas_bool_full(
        &s->xword, posh__q_word(lap, POSH__Q_EMPTY, 0),
        posh__q_word(lap, POSH__Q_CLAIMED, tok)));
    /* Killed before it advanced the tail: others must help. */
    void *b = posh_alloc(heap, 200000);
    CHILD_CHECK(b != NULL);
    uint64_t off = posh_off(heap, b).v;
    memcpy(s->data, &off, sizeof off);
    s->meta = 200000 | POSH__Q_META_LARGE | POSH__Q_META_COUNTED;
    posh_atomic_fetch_add_full(&sh->xunfinished, 1);
    CHILD_CHECK(write(a->ready_fd, &off, sizeof off) == sizeof off);
  } else {
    uint64_t h = posh_atomic_load_relaxed(&sh->xhead);
    posh__queue_slot_t *s = posh__q_slot_at(sh, h);
    uint32_t lap = posh__q_lap_of(sh, h);
    CHILD_CHECK(
        posh_atomic_cas_bool_full(&s->xword, posh__q_word(lap, POSH__Q_FULL, 0),
                                  posh__q_word(lap, POSH__Q_TAKEN, tok)));
    posh_atomic_cas_bool_full(&sh->xhead, h, h + 1);
    uint64_t off = 0;
    memcpy(&off, s->data, sizeof off);
    CHILD_CHECK(write(a->ready_fd, &off, sizeof off) == sizeof off);
  }
  for (;;)
    pause();
  return 0;
}

static pid_t start_crash_child(crash_arg_t *a, uint64_t *off_out) {
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  a->ready_fd = fds[1];
  pid_t kid = tu_fork(crash_child, a);
  assert_true(kid > 0);
  close(fds[1]);
  uint64_t off = 0;
  assert_int_equal(read(fds[0], &off, sizeof off), (ssize_t)sizeof off);
  close(fds[0]);
  *off_out = off;
  return kid;
}

/* A producer killed after claiming a slot (before publishing it, before
 * advancing the tail, holding a large block and a joinable count): its
 * message never appears, the consumer is not stalled (it skips the slot),
 * the block is freed, the unfinished count is undone, and the heap checks
 * clean after the reap. */
static void test_kill_claimed(void **state) {
  fixture_t *f = *state;
  posh_obj_t *q = mkq(f->heap, NULL, 4, POSH_QUEUE_JOINABLE, 0, 0);
  assert_int_equal(posh_queue_put(q, "first", 5, 0), 0);
  crash_arg_t a = {q, -1, {0}, 0};
  uint64_t off;
  pid_t kid = start_crash_child(&a, &off);
  assert_int_equal(tu_kill(kid), TU_SIGNALED(SIGKILL));
  assert_int_equal(posh_queue_put(q, "second", 6, SEC), 0);
  char b[16];
  size_t len;
  assert_int_equal(posh_queue_get(q, b, sizeof b, &len, 10 * SEC), 0);
  assert_int_equal(len, 5);
  assert_memory_equal(b, "first", 5);
  assert_int_equal(posh_queue_get(q, b, sizeof b, &len, 10 * SEC), 0);
  assert_int_equal(len, 6);
  assert_memory_equal(b, "second", 6);
  assert_int_equal(
      posh_block_state(f->heap, posh_ptr(f->heap, (posh_off_t){off})),
      POSH_BLOCK_FREE);
  uint64_t n;
  assert_int_equal(posh_queue_unfinished(q, &n), 0);
  assert_int_equal(n, 2);
  assert_int_equal(posh_queue_get(q, b, sizeof b, &len, 0), POSH_EAGAIN);
  assert_int_equal(posh_heap_reap(f->heap, NULL), 0);
  assert_int_equal(tu_check(f->heap), 0);
  posh_obj_close(q);
}

/* The same death in a queue bounded in messages, with no consumer running:
 * the dead claim counts towards the bound, and another producer must
 * repair it rather than wait for a consumer (regression test: puts timed
 * out while the queue reported one message that did not exist). */
static void test_kill_claimed_bounded(void **state) {
  fixture_t *f = *state;
  posh_obj_t *q = mkq(f->heap, NULL, 4, 0, 1, 0);
  crash_arg_t a = {q, -1, {0}, 0};
  uint64_t off;
  pid_t kid = start_crash_child(&a, &off);
  assert_int_equal(tu_kill(kid), TU_SIGNALED(SIGKILL));
  assert_int_equal(posh_queue_put(q, "after", 5, 10 * SEC), 0);
  assert_int_equal(
      posh_block_state(f->heap, posh_ptr(f->heap, (posh_off_t){off})),
      POSH_BLOCK_FREE);
  char b[16];
  size_t len;
  assert_int_equal(posh_queue_get(q, b, sizeof b, &len, SEC), 0);
  assert_int_equal(len, 5);
  assert_memory_equal(b, "after", 5);
  assert_int_equal(posh_queue_get(q, b, sizeof b, &len, 0), POSH_EAGAIN);
  assert_int_equal(posh_heap_reap(f->heap, NULL), 0);
  assert_int_equal(tu_check(f->heap), 0);
  posh_obj_close(q);
}

/* A consumer killed while copying a large message out (slot TAKEN): the
 * others go on, a producer that wraps around to the slot repairs it (frees
 * the block) instead of waiting forever. */
static void test_kill_taken(void **state) {
  fixture_t *f = *state;
  posh_obj_t *q = mkq(f->heap, NULL, 2, 0, 0, 0);
  unsigned char *big = malloc(100000);
  msg_fill(big, 100000, 9);
  assert_int_equal(posh_queue_put(q, big, 100000, 0), 0);
  assert_int_equal(posh_queue_put(q, "B", 1, 0), 0);
  crash_arg_t a = {q, -1, {0}, 1};
  uint64_t off;
  pid_t kid = start_crash_child(&a, &off);
  assert_true(off != 0);
  assert_int_equal(tu_kill(kid), TU_SIGNALED(SIGKILL));
  char b[16];
  size_t len;
  assert_int_equal(posh_queue_get(q, b, sizeof b, &len, SEC), 0);
  assert_int_equal(len, 1);
  assert_int_equal(posh_queue_put(q, "C", 1, 10 * SEC),
                   0); /* slot 0, repaired */
  assert_int_equal(
      posh_block_state(f->heap, posh_ptr(f->heap, (posh_off_t){off})),
      POSH_BLOCK_FREE);
  assert_int_equal(posh_queue_get(q, b, sizeof b, &len, SEC), 0);
  assert_int_equal(len, 1);
  assert_int_equal(b[0], 'C');
  free(big);
  assert_int_equal(posh_heap_reap(f->heap, NULL), 0);
  assert_int_equal(tu_check(f->heap), 0);
  posh_obj_close(q);
}

static int kill_loop_producer(void *arg) {
  xp_arg_t *a = arg;
  unsigned char *buf = malloc((1u << 20) + 16);
  CHILD_CHECK(buf != NULL);
  for (uint64_t s = 0;; s++) {
    size_t len = (s & 1) ? 1u << 20 : 50;
    msg_fill(buf, len, a->producer << 40 | s);
    int r = posh_queue_put(a->q, buf, len, 20 * SEC);
    CHILD_CHECK(r == 0);
  }
  return 0;
}

/* Producers killed at random instants (mostly inside 1 MiB puts): the
 * consumer never hangs, never sees a torn or duplicated message, and the
 * heap checks clean after the reap. */
static void test_kill_random_producers(void **state) {
  fixture_t *f = *state;
  posh_obj_t *q = mkq(f->heap, NULL, 8, 0, 0, 0);
  unsigned char *buf = malloc((1u << 20) + 16);
  unsigned seed = (unsigned)getpid();
  for (int round = 0; round < 12; round++) {
    xp_arg_t a = {q, 0, (uint64_t)round + 1};
    pid_t kid = tu_fork(kill_loop_producer, &a);
    assert_true(kid > 0);
    tu_sleep_ms(1 + rand_r(&seed) % 20);
    uint64_t last = UINT64_MAX;
    /* Consume a little while it runs, then kill it. */
    for (int i = 0; i < 3; i++) {
      size_t len;
      uint64_t id;
      int r = posh_queue_get(q, buf, (1u << 20) + 16, &len, 10 * SEC);
      assert_int_equal(r, 0);
      assert_true(msg_check(buf, len, &id));
      assert_int_equal(id >> 40, (uint64_t)round + 1);
      assert_true(last == UINT64_MAX || (id & 0xffffffffffull) == last + 1);
      last = id & 0xffffffffffull;
    }
    assert_int_equal(tu_kill(kid), TU_SIGNALED(SIGKILL));
    /* Drain: whatever it published is intact and in order. */
    for (;;) {
      size_t len;
      uint64_t id;
      int r = posh_queue_get(q, buf, (1u << 20) + 16, &len, 200 * 1000000ll);
      if (r == POSH_ETIMEDOUT)
        break;
      assert_int_equal(r, 0);
      assert_true(msg_check(buf, len, &id));
      assert_int_equal(id & 0xffffffffffull, last + 1);
      last = id & 0xffffffffffull;
    }
    /* The queue still works end to end. */
    assert_int_equal(posh_queue_put(q, "ok", 2, 10 * SEC), 0);
    size_t len;
    assert_int_equal(posh_queue_get(q, buf, 16, &len, 10 * SEC), 0);
    assert_int_equal(len, 2);
  }
  free(buf);
  assert_int_equal(posh_heap_reap(f->heap, NULL), 0);
  assert_int_equal(tu_check(f->heap), 0);
  posh_obj_close(q);
}

int main(int argc, char **argv) {
  tu_init(argc, argv);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_sizes_fifo, setup, teardown),
      cmocka_unit_test_setup_teardown(test_large_copy_edges, setup, teardown),
      cmocka_unit_test_setup_teardown(test_timeouts, setup, teardown),
      cmocka_unit_test_setup_teardown(test_emsgsize_peek, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bounds, setup, teardown),
      cmocka_unit_test_setup_teardown(test_close, setup, teardown),
      cmocka_unit_test_setup_teardown(test_joinable, setup, teardown),
      cmocka_unit_test_setup_teardown(test_zero_copy, setup, teardown),
      cmocka_unit_test_setup_teardown(test_many, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cross_process, setup, teardown),
      cmocka_unit_test_setup_teardown(test_kill_claimed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_kill_claimed_bounded, setup, teardown),
      cmocka_unit_test_setup_teardown(test_kill_taken, setup, teardown),
      cmocka_unit_test_setup_teardown(test_kill_random_producers, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, tu_group_teardown);
}
