/* SPDX-License-Identifier: MIT */
/*
 * This file contains list_child, the unrelated process that tests/test_list.c
 * and tests/test_value.c exec: it attaches to a heap by name, opens an
 * object by directory name and runs one worker.  It also holds the worker
 * code and item format the tests share (test_list.c includes this file with
 * LIST_CHILD_NO_MAIN, so forked and exec'd workers run the same code).
 *
 *   list_child append HEAP LIST N WORKER   append N checksummed items
 *   list_child torture HEAP LIST WORKER    random append/insert/extend/pop
 *                                          until killed (log in "lc_scratch")
 *   list_child incr HEAP VALUE N           N locked read-modify-writes
 *   list_child add HEAP VALUE N            N posh_value_add_i64(+1)
 *   list_child hold HEAP VALUE             lock, half-update, write 'R' on
 *                                          stdout, sleep until killed
 *   list_child array HEAP ARRAY SEED       fill Array ('i') with seed + i
 * Exit status: 0 success; 2 usage or setup failure; 3 a failed check.
 */
#ifndef LIST_CHILD_NO_MAIN
#define TU_NO_CMOCKA
#endif
#include "testutil.h"

#include <xxhash.h>

#include "posh/list.h"
#include "posh/value.h"

/* ------------------------------------------------------------------------
 * Items: [u64 XXH3 of the rest][u32 worker][u32 id][payload].
 * ---------------------------------------------------------------------- */
#define LC_BARRIER() __asm__ __volatile__("" ::: "memory")
#define LC_HDR 16u
#define LC_MAXW 4
#define LC_MAXID (1u << 21)
#define LC_SCRATCH_TAG 0x4c435343u /* "LCSC" */

static TU_UNUSED size_t lc_make_item(unsigned char *buf, uint32_t worker,
                                     uint32_t id, uint64_t rnd) {
  size_t pay = (rnd % 97 == 0) ? 3000 + rnd % 2000 : rnd % 200;
  memcpy(buf + 8, &worker, 4);
  memcpy(buf + 12, &id, 4);
  for (size_t i = 0; i < pay; i++)
    buf[LC_HDR + i] = (unsigned char)(rnd >> (i % 56)) ^ (unsigned char)i;
  uint64_t h = XXH3_64bits(buf + 8, LC_HDR - 8 + pay);
  memcpy(buf, &h, 8);
  return LC_HDR + pay;
}

/* 1 if the item is intact; its worker and id. */
static TU_UNUSED int lc_item_ok(const void *data, size_t len, uint32_t *worker,
                                uint32_t *id) {
  const unsigned char *b = data;
  if (len < LC_HDR)
    return 0;
  uint64_t h;
  memcpy(&h, b, 8);
  if (h != XXH3_64bits(b + 8, len - 8))
    return 0;
  memcpy(worker, b + 8, 4);
  memcpy(id, b + 12, 4);
  return 1;
}

/* ------------------------------------------------------------------------
 * Torture log, one record per worker, in a heap block bound "lc_scratch".
 * A worker announces an operation in `pend_*` before it starts and clears
 * it when it has returned, so the parent (after killing it) knows which
 * operation may have been cut.
 * ---------------------------------------------------------------------- */
enum { LC_NONE = 0, LC_CREATE = 1, LC_POP = 2 };
struct lc_worker {
  volatile uint32_t pend_op;
  volatile uint32_t pend_n;
  volatile uint64_t pend_lo;
  volatile uint64_t next_id; /* ids [0, next_id) handed out */
  volatile uint64_t ops;     /* operations completed */
};
struct lc_scratch {
  struct lc_worker w[LC_MAXW];
  /* popped[w][id]: item (w, id) was popped by someone (set after the pop
   * returned). */
  volatile unsigned char popped[LC_MAXW][LC_MAXID];
};

static TU_UNUSED struct lc_scratch *lc_scratch_open(posh_heap_t *h) {
  posh_off_t off;
  uint32_t tag;
  if (posh_name_lookup(h, "lc_scratch", &off, &tag) != 0 ||
      tag != LC_SCRATCH_TAG)
    return NULL;
  return posh_ptr(h, off);
}

static TU_UNUSED uint64_t lc_rand(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* Random operations on the list until killed (or `limit` ops if > 0). */
static TU_UNUSED int lc_torture(posh_heap_t *h, posh_obj_t *l,
                                struct lc_scratch *s, uint32_t worker,
                                uint64_t limit) {
  struct lc_worker *me = &s->w[worker];
  /* A predecessor killed inside a create: never reuse its ids. */
  if (me->pend_op == LC_CREATE && me->next_id < me->pend_lo + me->pend_n)
    me->next_id = me->pend_lo + me->pend_n;
  me->pend_op = LC_NONE;
  uint64_t seed = ((uint64_t)getpid() << 20) ^ tu_now_ms() ^ 0x9e3779b97f4a7c15ull;
  static unsigned char bufs[3][LC_HDR + 5000];
  static unsigned char out[LC_HDR + 5000];
  (void)h;
  for (uint64_t k = 0; limit == 0 || k < limit; k++) {
    uint64_t rnd = lc_rand(&seed);
    size_t len = 0;
    CHILD_CHECK(posh_list_len(l, &len) == 0);
    unsigned op = (unsigned)(rnd % 100);
    uint32_t n = op % 5 == 0 ? 3 : 1;
    if (me->next_id + n > LC_MAXID && len == 0) {
      tu_sleep_ms(1); /* out of ids: only pops are left to do */
      continue;
    }
    if (me->next_id + n <= LC_MAXID && (len > 400 ? op < 30 : op < 60)) {
      /* append / insert / extend: announce, reserve ids, run. */
      uint64_t lo = me->next_id;
      struct iovec iov[3];
      for (uint32_t i = 0; i < n; i++) {
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = lc_make_item(bufs[i], worker, (uint32_t)(lo + i),
                                      lc_rand(&seed));
      }
      me->pend_lo = lo;
      me->pend_n = n;
      LC_BARRIER();
      me->pend_op = LC_CREATE;
      LC_BARRIER();
      me->next_id = lo + n;
      LC_BARRIER();
      int r;
      if (n == 3)
        r = posh_list_extend(l, iov, 3);
      else if (op % 3 == 0)
        r = posh_list_insert(l, (int64_t)(rnd >> 32) % (int64_t)(len + 2) - 1,
                             iov[0].iov_base, iov[0].iov_len);
      else
        r = posh_list_append(l, iov[0].iov_base, iov[0].iov_len);
      CHILD_CHECK_EQ(r, 0);
    } else if (len > 0) {
      int64_t idx = (op & 1) ? -1 : (int64_t)((rnd >> 32) % len);
      me->pend_op = LC_POP;
      LC_BARRIER();
      size_t got = 0;
      int r = posh_list_pop(l, idx, out, sizeof out, &got);
      if (r == POSH_ERANGE) { /* another worker emptied it meanwhile */
        me->pend_op = LC_NONE;
        continue;
      }
      CHILD_CHECK_EQ(r, 0);
      uint32_t w, id;
      CHILD_CHECK(lc_item_ok(out, got, &w, &id));
      CHILD_CHECK(w < LC_MAXW && id < LC_MAXID);
      CHILD_CHECK(s->popped[w][id] == 0);
      s->popped[w][id] = 1;
    }
    LC_BARRIER();
    me->pend_op = LC_NONE;
    me->ops++;
  }
  return 0;
}

/* Append n checksummed items as `worker` (ids 0..n-1). */
static TU_UNUSED int lc_append_worker(posh_obj_t *l, uint32_t worker, long n) {
  static unsigned char buf[LC_HDR + 5000];
  for (long i = 0; i < n; i++) {
    size_t len = lc_make_item(buf, worker, (uint32_t)i,
                              (uint64_t)i * 2654435761u + worker);
    CHILD_CHECK_EQ(posh_list_append(l, buf, len), 0);
  }
  return 0;
}

/* n locked read-modify-write increments (as `with v.get_lock(): v.value
 * += 1`) of a 'q' Value. */
static TU_UNUSED int lc_incr_worker(posh_obj_t *v, long n) {
  for (long i = 0; i < n; i++) {
    CHILD_CHECK_EQ(posh_value_lock(v, 20ll * 1000000000), 0);
    int64_t x;
    void *p;
    CHILD_CHECK_EQ(posh_value_data(v, &p, NULL), 0);
    memcpy(&x, p, 8);
    x++;
    memcpy(p, &x, 8);
    CHILD_CHECK_EQ(posh_value_unlock(v), 0);
  }
  return 0;
}

static TU_UNUSED int lc_add_worker(posh_obj_t *v, long n) {
  for (long i = 0; i < n; i++)
    CHILD_CHECK_EQ(posh_value_add_i64(v, 1, NULL), 0);
  return 0;
}

#ifndef LIST_CHILD_NO_MAIN
static posh_obj_t *open_or_die(posh_heap_t *h, const char *name, uint32_t type) {
  posh_obj_t *o;
  int r = posh_obj_open(h, name, type, &o);
  if (r) {
    fprintf(stderr, "list_child: open %s: %s\n", name, posh_err_name(r));
    _exit(2);
  }
  return o;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: list_child MODE HEAP NAME [ARGS]\n");
    return 2;
  }
  const char *mode = argv[1];
  posh_heap_t *h;
  int r = posh_heap_attach(argv[2], &h);
  if (r) {
    fprintf(stderr, "list_child: attach %s: %s\n", argv[2], posh_err_name(r));
    return 2;
  }
  long a4 = argc > 4 ? strtol(argv[4], NULL, 10) : 0;
  long a5 = argc > 5 ? strtol(argv[5], NULL, 10) : 0;
  int rc = 2;
  if (!strcmp(mode, "append") && argc > 5) {
    rc = lc_append_worker(open_or_die(h, argv[3], POSH_OBJ_LIST), (uint32_t)a5, a4);
  } else if (!strcmp(mode, "torture") && argc > 4) {
    struct lc_scratch *s = lc_scratch_open(h);
    if (!s)
      return 2;
    rc = lc_torture(h, open_or_die(h, argv[3], POSH_OBJ_LIST), s, (uint32_t)a4, 0);
  } else if (!strcmp(mode, "incr") && argc > 4) {
    rc = lc_incr_worker(open_or_die(h, argv[3], POSH_OBJ_VALUE), a4);
  } else if (!strcmp(mode, "add") && argc > 4) {
    rc = lc_add_worker(open_or_die(h, argv[3], POSH_OBJ_VALUE), a4);
  } else if (!strcmp(mode, "hold")) {
    posh_obj_t *v = open_or_die(h, argv[3], POSH_OBJ_VALUE);
    CHILD_CHECK_EQ(posh_value_lock(v, -1), 0);
    CHILD_CHECK_EQ(posh_value_lock(v, -1), 0); /* recursive: depth 2 */
    int64_t half = 12345;
    void *p;
    CHILD_CHECK_EQ(posh_value_data(v, &p, NULL), 0);
    memcpy(p, &half, 4); /* half-updated */
    tu_write_byte(1, 'R');
    for (int i = 0; i < 600; i++)
      tu_sleep_ms(100); /* until killed */
    return 5;
  } else if (!strcmp(mode, "array") && argc > 4) {
    posh_obj_t *a = open_or_die(h, argv[3], POSH_OBJ_ARRAY);
    int32_t *d;
    size_t n, isz;
    CHILD_CHECK_EQ(posh_array_data(a, (void **)&d, &n, &isz), 0);
    CHILD_CHECK_EQ(isz, 4);
    CHILD_CHECK_EQ((uintptr_t)d % 64, 0);
    for (size_t i = 0; i < n; i++)
      d[i] = (int32_t)(a4 + (long)i);
    rc = 0;
  }
  posh_heap_detach(h);
  return rc;
}
#endif
