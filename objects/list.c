/* SPDX-License-Identifier: MIT */
/*
 * This file contains the list object: a growable sequence of byte strings
 * shared by processes.  Every operation runs under one robust lock word and
 * commits with a single 8-byte store, so a process killed at any instant
 * leaves the list as it was before or after its operation.
 *
 * Layout: the object block holds the lock and the offset of the current
 * item array; the array block holds its length, its capacity and one word
 * per item.  An item word is either an inline item (bit 0 set: up to 7
 * bytes, length in bits 1..3, the bytes in bits 8..63) or the offset of a
 * heap block {uint64_t len; bytes}.
 *
 * Commits (all under the lock; new item blocks are built before it):
 *   - append/extend with room: write the words past `len`, then store len;
 *   - truncation at the end (pop(-1), clearing a tail): store len;
 *   - replacing one item: store its word;
 *   - anything else (insert, delete or pop in the middle, slices, growth):
 *     build a new array, then store the list's array offset.
 * Blocks that an operation removes (old items, the old array) are freed
 * after the commit, outside the lock; a process killed between its commit
 * and those frees, or between building new item blocks and the commit,
 * leaks them (the list stays consistent; the blocks are never reused).
 * Readers take the lock too.
 */
#include "object_internal.h"
#include "sync_internal.h"
#include "posh/list.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#define INLINE_MAX 7u
#define MIN_CAP 8u

/* Item array.  Invariant: len <= cap; e[0, len) are the items in order,
 * each word referenced by no other array of this or any list. */
typedef struct posh__list_array {
  uint64_t len; /* lock: the commit word of in-place appends/truncations */
  uint64_t cap; /* immutable */
  uint64_t e[]; /* lock: item words; [len, cap) unused */
} posh__list_array_t;

/* The list object.  Invariant: array_off is 0 (empty list) or a live
 * array block owned by this list alone. */
typedef struct posh__list_shared {
  posh__obj_hdr_t hdr;
  /* Serialises every operation, readers included.  A dead holder's
   * successor runs list_repair.  Synchronization: its own. */
  posh__lockword_t lock;
  uint64_t array_off; /* lock: current array (commit word of rebuilds) */
  uint64_t repairs;   /* lock: times the lock was taken from a dead holder */
  uint64_t pad[5];
} posh__list_shared_t;
_Static_assert(sizeof(posh__list_shared_t) == 128, "list object: two lines");

static void list_finalize(posh_heap_t *heap, posh__obj_hdr_t *obj);
const posh__obj_ops_t posh__list_ops = {"list", list_finalize, NULL, NULL};

/* Test hook (tests/test_list.c): a process whose posh__list_crash_point
 * equals a crash point's number kills itself there, so the test can check
 * the list after a death at each step that matters.  One load and an
 * untaken branch per point. */
int posh__list_crash_point;
#define CRASH_POINT(n)                                                       \
  do {                                                                       \
    if (posh_unlikely(posh__list_crash_point == (n)))                        \
      raise(SIGKILL);                                                        \
  } while (0)

/* ------------------------------------------------------------------------
 * Items.
 * ---------------------------------------------------------------------- */
static inline int word_inline(uint64_t w) { return (int)(w & 1u); }

/* A word for (data, len): inline, or a new block.  0 with *err on failure. */
static uint64_t item_make(posh_heap_t *heap, const void *data, size_t len,
                          int *err) {
  if (len <= INLINE_MAX) {
    uint64_t w = 1u | ((uint64_t)len << 1);
    unsigned char *b = (unsigned char *)&w;
    if (len)
      memcpy(b + 1, data, len);
    return w;
  }
  uint64_t *blk = posh_alloc(heap, sizeof(uint64_t) + len);
  if (!blk) {
    *err = posh_last_error() ? posh_last_error() : POSH_ENOMEM;
    return 0;
  }
  blk[0] = len;
  memcpy(blk + 1, data, len);
  return posh__off_of(heap, blk);
}

/* Where the bytes of word w are (*tmp holds an inline item's copy), or
 * NULL when w names no block inside the heap: the array lives in shared
 * memory, and a stray write of a faulty process must give POSH_ECORRUPT,
 * not a fault. */
static inline const void *item_view(posh_heap_t *heap, uint64_t w,
                                    uint64_t *tmp, size_t *len) {
  if (word_inline(w)) {
    *tmp = w;
    *len = (size_t)((w >> 1) & 7u);
    return (const unsigned char *)tmp + 1;
  }
  uint64_t hcap = heap->view.capacity;
  if (posh_unlikely(w < heap->hdr->data_off || (w & 7) != 0 ||
                    w > hcap - sizeof(uint64_t)))
    return NULL;
  const uint64_t *blk = posh__at(heap, w);
  if (posh_unlikely(blk[0] > hcap - w - sizeof(uint64_t)))
    return NULL;
  *len = (size_t)blk[0];
  return blk + 1;
}

static inline void item_free(posh_heap_t *heap, uint64_t w) {
  if (w && !word_inline(w))
    posh_free(heap, posh__at(heap, w));
}

static void items_free_words(posh_heap_t *heap, const uint64_t *w, size_t n) {
  for (size_t i = 0; i < n; i++)
    item_free(heap, w[i]);
}

static int check_item(const void *data, size_t len) {
  if (len > POSH_LIST_ITEM_MAX || (len && !data))
    return POSH_EINVAL;
  return 0;
}

/* The start of insert and set: validate the handle and the item, and make
 * the item's word (*w_out). */
static int item_for(posh_obj_t *list, const void *data, size_t len,
                    uint64_t *w_out) {
  void *shared;
  int r = posh__obj_get(list, POSH_OBJ_LIST, &shared);
  if (!r)
    r = check_item(data, len);
  if (r)
    return r;
  int err = 0;
  *w_out = item_make(list->heap, data, len, &err);
  return *w_out ? 0 : err;
}

/* New words for n items (all or nothing). */
static int items_make(posh_heap_t *heap, const struct iovec *items, size_t n,
                      uint64_t **words_out) {
  if (n && !items)
    return POSH_EINVAL;
  for (size_t i = 0; i < n; i++)
    if (check_item(items[i].iov_base, items[i].iov_len))
      return POSH_EINVAL;
  uint64_t *w = malloc((n ? n : 1) * sizeof *w);
  if (!w)
    return POSH_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    int err = 0;
    w[i] = item_make(heap, items[i].iov_base, items[i].iov_len, &err);
    if (!w[i]) {
      items_free_words(heap, w, i);
      free(w);
      return err;
    }
  }
  *words_out = w;
  return 0;
}

/* ------------------------------------------------------------------------
 * Lock.
 * ---------------------------------------------------------------------- */
/* The holder died.  Every change commits with one store, so the list is
 * consistent; only count (list_lock checks the array next). */
static void list_repair(posh_heap_t *heap, void *obj) {
  (void)heap;
  posh__list_shared_t *l = obj;
  l->repairs++;
}

/* Does the list's array lie inside the heap, with len <= cap?  (Checked
 * at every lock, for the reason given at item_view.) */
static int array_ok(posh_heap_t *heap, const posh__list_shared_t *l) {
  uint64_t off = l->array_off, hcap = heap->view.capacity;
  if (off == 0)
    return 1;
  if (off < heap->hdr->data_off || (off & 7) != 0 ||
      off > hcap - sizeof(posh__list_array_t))
    return 0;
  const posh__list_array_t *a = posh__at(heap, off);
  return a->cap <= (hcap - off - sizeof *a) / sizeof(uint64_t) &&
         a->len <= a->cap;
}

static int list_lock(posh_obj_t *o, posh__list_shared_t **out, uint32_t *tok) {
  posh__list_shared_t *l;
  int r = posh__obj_get(o, POSH_OBJ_LIST, (void **)&l);
  if (r)
    return r;
  int err = 0;
  uint32_t t = posh__obj_token(o, &err);
  if (!t)
    return err ? err : POSH_EAGAIN;
  r = posh__sync_acquire_fast(&l->lock, t);
  if (r == 1) {
    r = posh__sync_lock_internal(o->heap, &l->lock, t, 0, list_repair, l);
  } else if (r == POSH_EOWNERDEAD) {
    list_repair(o->heap, l);
    posh__lock_consistent(&l->lock);
    r = 0;
  }
  if (r)
    return r;
  if (posh_unlikely(!array_ok(o->heap, l))) {
    posh__sync_release_fast(&l->lock, t);
    return POSH_ECORRUPT;
  }
  *out = l;
  *tok = t;
  return 0;
}

static inline void list_unlock(posh__list_shared_t *l, uint32_t tok) {
  posh__sync_release_fast(&l->lock, tok);
}

static inline posh__list_array_t *arr(posh_heap_t *heap,
                                      posh__list_shared_t *l) {
  return posh__at(heap, l->array_off);
}
static inline uint64_t arr_len(posh__list_array_t *a) { return a ? a->len : 0; }

static posh__list_array_t *array_new(posh_heap_t *heap, uint64_t cap,
                                     int *err) {
  if (cap < MIN_CAP)
    cap = MIN_CAP;
  if (cap > (heap->view.capacity / sizeof(uint64_t))) {
    *err = POSH_ENOMEM;
    return NULL;
  }
  posh__list_array_t *a =
      posh_alloc(heap, sizeof *a + (size_t)cap * sizeof(uint64_t));
  if (!a) {
    *err = posh_last_error() ? posh_last_error() : POSH_ENOMEM;
    return NULL;
  }
  a->len = 0;
  a->cap = cap;
  return a;
}

/* Capacity for a rebuilt array of newlen items (old capacity oldcap). */
static uint64_t grow_cap(uint64_t oldcap, uint64_t newlen) {
  if (newlen <= oldcap && newlen >= oldcap / 4)
    return oldcap;
  uint64_t c = newlen + newlen / 2;
  return c < MIN_CAP ? MIN_CAP : c;
}

/* Publish a fully built array: the one store that commits a rebuild.  The
 * compiler barrier keeps every store into na before it, which is all a
 * kill -9 needs (the next holder's lock acquire orders the rest). */
static void array_commit(posh_heap_t *heap, posh__list_shared_t *l,
                         posh__list_array_t *na) {
  posh_compiler_barrier();
  l->array_off = posh__off_of(heap, na);
  posh_compiler_barrier();
}

/* Replace items [start, stop) (0 <= start <= stop <= len) by the n words
 * w (ownership passes to the list).  Lock held.  The removed words are
 * returned in *removed (malloc'd, *nremoved) and the old array in
 * *old_array, to be freed after unlocking.  On failure nothing changed. */
static int splice_locked(posh_heap_t *heap, posh__list_shared_t *l,
                         uint64_t start, uint64_t stop, const uint64_t *w,
                         uint64_t n, uint64_t **removed, uint64_t *nremoved,
                         void **old_array) {
  posh__list_array_t *a = arr(heap, l);
  uint64_t len = arr_len(a), nrem = stop - start;
  *removed = NULL;
  *nremoved = 0;
  *old_array = NULL;
  if (len - nrem > UINT64_MAX / 2 - n)
    return POSH_ENOMEM;
  if (nrem) {
    *removed = malloc(nrem * sizeof(uint64_t));
    if (!*removed)
      return POSH_ENOMEM;
    memcpy(*removed, &a->e[start], nrem * sizeof(uint64_t));
    *nremoved = nrem;
  }
  if (a && start == len && len + n <= a->cap) {
    /* Append in place: words past len are invisible until len moves. */
    memcpy(&a->e[len], w, n * sizeof(uint64_t));
    CRASH_POINT(1);
    /* Words before len (kill -9 needs program order only; other
     * processes read under the lock, whose acquire orders the rest). */
    posh_compiler_barrier();
    a->len = len + n; /* commit */
    CRASH_POINT(2);
    return 0;
  }
  if (a && n == 0 && stop == len) {
    CRASH_POINT(3);
    a->len = start; /* commit: truncation */
    CRASH_POINT(4);
    return 0;
  }
  if (a && n == 1 && nrem == 1) {
    a->e[start] = w[0]; /* commit: one word */
    return 0;
  }
  uint64_t newlen = len - nrem + n;
  int err = 0;
  posh__list_array_t *na = array_new(heap, grow_cap(a ? a->cap : 0, newlen), &err);
  if (!na) {
    free(*removed);
    *removed = NULL;
    *nremoved = 0;
    return err;
  }
  if (start)
    memcpy(na->e, a->e, start * sizeof(uint64_t));
  if (n)
    memcpy(&na->e[start], w, n * sizeof(uint64_t));
  if (len > stop)
    memcpy(&na->e[start + n], &a->e[stop], (len - stop) * sizeof(uint64_t));
  na->len = newlen;
  CRASH_POINT(7);
  array_commit(heap, l, na);
  CRASH_POINT(8);
  *old_array = a;
  return 0;
}

/* Free what a splice removed (no lock held). */
static void splice_cleanup(posh_heap_t *heap, uint64_t *removed,
                           uint64_t nremoved, void *old_array) {
  if (removed) {
    for (uint64_t i = 0; i < nremoved; i++) {
      item_free(heap, removed[i]);
      CRASH_POINT(11);
    }
  }
  free(removed);
  if (old_array)
    posh_free(heap, old_array);
}

/* Python index -> position: POSH_ERANGE outside [0, len). */
static int norm_index(int64_t index, uint64_t len, uint64_t *out) {
  if (index < 0)
    index += (int64_t)len;
  if (index < 0 || (uint64_t)index >= len)
    return POSH_ERANGE;
  *out = (uint64_t)index;
  return 0;
}

/* PySlice_AdjustIndices: clamp start/stop to len; returns the slice
 * length. */
static uint64_t adjust_slice(uint64_t ulen, int64_t *start, int64_t *stop,
                             int64_t step) {
  int64_t len = (int64_t)ulen;
  if (*start < 0) {
    *start += len;
    if (*start < 0)
      *start = step < 0 ? -1 : 0;
  } else if (*start >= len) {
    *start = step < 0 ? len - 1 : len;
  }
  if (*stop < 0) {
    *stop += len;
    if (*stop < 0)
      *stop = step < 0 ? -1 : 0;
  } else if (*stop >= len) {
    *stop = step < 0 ? len - 1 : len;
  }
  if (step < 0) {
    if (*stop < *start)
      return (uint64_t)((*start - *stop - 1) / (-step) + 1);
  } else if (*start < *stop) {
    return (uint64_t)((*stop - *start - 1) / step + 1);
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * Public API.
 * ---------------------------------------------------------------------- */
POSH_EXTERN int posh_list_create(posh_heap_t *heap, const char *name,
                                 posh_obj_t **list_out) {
  if (!heap || !list_out)
    return POSH_EINVAL;
  int err = 0;
  posh__list_shared_t *l = posh__obj_alloc(heap, POSH_OBJ_LIST, 0, sizeof *l,
                                           0, &err);
  if (!l)
    return err;
  posh__lock_init(&l->lock);
  l->array_off = 0;
  return posh__obj_publish(heap, l, name, list_out);
}

static void list_finalize(posh_heap_t *heap, posh__obj_hdr_t *obj) {
  posh__list_shared_t *l = (posh__list_shared_t *)obj;
  posh__list_array_t *a = arr(heap, l);
  if (!a || !array_ok(heap, l))
    return; /* none, or damaged: its blocks stay (posh_heap_check says) */
  items_free_words(heap, a->e, (size_t)a->len);
  posh_free(heap, a);
  l->array_off = 0;
}

POSH_EXTERN int posh_list_len(posh_obj_t *list, size_t *len_out) {
  if (!len_out)
    return POSH_EINVAL;
  posh__list_shared_t *l;
  uint32_t tok;
  int r = list_lock(list, &l, &tok);
  if (r)
    return r;
  *len_out = (size_t)arr_len(arr(list->heap, l));
  list_unlock(l, tok);
  return 0;
}

POSH_EXTERN int posh_list_repairs(posh_obj_t *list, uint64_t *repairs_out) {
  if (!repairs_out)
    return POSH_EINVAL;
  posh__list_shared_t *l;
  uint32_t tok;
  int r = list_lock(list, &l, &tok);
  if (r)
    return r;
  *repairs_out = l->repairs;
  list_unlock(l, tok);
  return 0;
}

/* Insert the n words w at index (clamped; INT64_MAX = the end). */
static int insert_words(posh_obj_t *list, int64_t index, uint64_t *w,
                        size_t n) {
  posh__list_shared_t *l;
  uint32_t tok;
  int r = list_lock(list, &l, &tok);
  if (r)
    return r;
  posh_heap_t *heap = list->heap;
  uint64_t len = arr_len(arr(heap, l)), at;
  if (index < 0) {
    index += (int64_t)len;
    at = index < 0 ? 0 : (uint64_t)index;
  } else {
    at = (uint64_t)index > len ? len : (uint64_t)index;
  }
  uint64_t *removed, nremoved;
  void *old;
  r = splice_locked(heap, l, at, at, w, n, &removed, &nremoved, &old);
  list_unlock(l, tok);
  if (r == 0)
    splice_cleanup(heap, removed, nremoved, old);
  return r;
}

POSH_EXTERN int posh_list_insert(posh_obj_t *list, int64_t index,
                                 const void *data, size_t len) {
  uint64_t w;
  int r = item_for(list, data, len, &w);
  if (r)
    return r;
  r = insert_words(list, index, &w, 1);
  if (r)
    item_free(list->heap, w);
  return r;
}

POSH_EXTERN int posh_list_append(posh_obj_t *list, const void *data,
                                 size_t len) {
  return posh_list_insert(list, INT64_MAX, data, len);
}

POSH_EXTERN int posh_list_extend(posh_obj_t *list, const struct iovec *items,
                                 size_t n) {
  void *shared;
  int r = posh__obj_get(list, POSH_OBJ_LIST, &shared);
  if (r)
    return r;
  uint64_t *w;
  if ((r = items_make(list->heap, items, n, &w)) != 0)
    return r;
  r = n ? insert_words(list, INT64_MAX, w, n) : 0;
  if (r)
    items_free_words(list->heap, w, n);
  free(w);
  return r;
}

/* Copy word w's item into buf (cap) or a malloc'd block (alloc). */
static int copy_out(posh_heap_t *heap, uint64_t w, void *buf, size_t cap,
                    size_t *len_out, void **alloc_out) {
  uint64_t tmp;
  size_t len;
  const void *p = item_view(heap, w, &tmp, &len);
  if (!p)
    return POSH_ECORRUPT;
  if (len_out)
    *len_out = len;
  if (alloc_out) {
    void *m = malloc(len ? len : 1);
    if (!m)
      return POSH_ENOMEM;
    memcpy(m, p, len);
    *alloc_out = m;
    return 0;
  }
  if (len > cap)
    return POSH_EMSGSIZE;
  if (len)
    memcpy(buf, p, len);
  return 0;
}

static int get_common(posh_obj_t *list, int64_t index, void *buf, size_t cap,
                      size_t *len_out, void **alloc_out) {
  posh__list_shared_t *l;
  uint32_t tok;
  int r = list_lock(list, &l, &tok);
  if (r)
    return r;
  posh__list_array_t *a = arr(list->heap, l);
  uint64_t i;
  r = norm_index(index, arr_len(a), &i);
  if (r == 0)
    r = copy_out(list->heap, a->e[i], buf, cap, len_out, alloc_out);
  list_unlock(l, tok);
  return r;
}

POSH_EXTERN int posh_list_get(posh_obj_t *list, int64_t index, void *buf,
                              size_t cap, size_t *len_out) {
  if (!buf && cap)
    return POSH_EINVAL;
  return get_common(list, index, buf, cap, len_out, NULL);
}

POSH_EXTERN int posh_list_get_alloc(posh_obj_t *list, int64_t index,
                                    void **data_out, size_t *len_out) {
  if (!data_out)
    return POSH_EINVAL;
  return get_common(list, index, NULL, 0, len_out, data_out);
}

POSH_EXTERN int posh_list_set(posh_obj_t *list, int64_t index,
                              const void *data, size_t len) {
  uint64_t w;
  int r = item_for(list, data, len, &w);
  if (r)
    return r;
  posh__list_shared_t *l;
  uint32_t tok;
  if ((r = list_lock(list, &l, &tok)) != 0) {
    item_free(list->heap, w);
    return r;
  }
  posh__list_array_t *a = arr(list->heap, l);
  uint64_t i, old = 0;
  r = norm_index(index, arr_len(a), &i);
  if (r == 0) {
    old = a->e[i];
    CRASH_POINT(5);
    a->e[i] = w; /* commit: one word */
    CRASH_POINT(6);
  }
  list_unlock(l, tok);
  item_free(list->heap, r ? w : old);
  return r;
}

static int pop_common(posh_obj_t *list, int64_t index, void *buf, size_t cap,
                      size_t *len_out, void **alloc_out, int copy) {
  posh__list_shared_t *l;
  uint32_t tok;
  int r = list_lock(list, &l, &tok);
  if (r)
    return r;
  posh_heap_t *heap = list->heap;
  posh__list_array_t *a = arr(heap, l);
  uint64_t i, *removed = NULL, nremoved = 0;
  void *old = NULL;
  r = norm_index(index, arr_len(a), &i);
  if (r == 0 && copy)
    r = copy_out(heap, a->e[i], buf, cap, len_out, alloc_out);
  if (r == 0) {
    r = splice_locked(heap, l, i, i + 1, NULL, 0, &removed, &nremoved, &old);
    if (r && alloc_out) {
      free(*alloc_out);
      *alloc_out = NULL;
    }
  }
  list_unlock(l, tok);
  if (r == 0)
    splice_cleanup(heap, removed, nremoved, old);
  return r;
}

POSH_EXTERN int posh_list_pop(posh_obj_t *list, int64_t index, void *buf,
                              size_t cap, size_t *len_out) {
  if (!buf && cap)
    return POSH_EINVAL;
  return pop_common(list, index, buf, cap, len_out, NULL, 1);
}

POSH_EXTERN int posh_list_pop_alloc(posh_obj_t *list, int64_t index,
                                    void **data_out, size_t *len_out) {
  if (!data_out)
    return POSH_EINVAL;
  return pop_common(list, index, NULL, 0, len_out, data_out, 1);
}

POSH_EXTERN int posh_list_delete(posh_obj_t *list, int64_t index) {
  return pop_common(list, index, NULL, 0, NULL, NULL, 0);
}

POSH_EXTERN int posh_list_clear(posh_obj_t *list) {
  return posh_list_delete_slice(list, 0, INT64_MAX, 1);
}

POSH_EXTERN int posh_list_get_slice(posh_obj_t *list, int64_t start,
                                    int64_t stop, int64_t step,
                                    posh_list_visit_fn visit, void *arg) {
  if (!visit || step == 0 || step == INT64_MIN)
    return POSH_EINVAL;
  posh__list_shared_t *l;
  uint32_t tok;
  int r = list_lock(list, &l, &tok);
  if (r)
    return r;
  posh__list_array_t *a = arr(list->heap, l);
  uint64_t n = adjust_slice(arr_len(a), &start, &stop, step);
  for (uint64_t k = 0; k < n && r == 0; k++) {
    uint64_t tmp;
    size_t len;
    const void *p = item_view(list->heap, a->e[start + (int64_t)k * step],
                              &tmp, &len);
    r = p ? visit(arg, (size_t)k, p, len) : POSH_ECORRUPT;
  }
  list_unlock(l, tok);
  return r;
}

struct collect {
  posh_list_item_t *items;
  size_t n, cap;
};

static int collect_item(void *arg, size_t i, const void *data, size_t len) {
  (void)i;
  struct collect *c = arg;
  if (c->n == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 16;
    void *p = realloc(c->items, cap * sizeof *c->items);
    if (!p)
      return POSH_ENOMEM;
    c->items = p;
    c->cap = cap;
  }
  void *m = malloc(len ? len : 1);
  if (!m)
    return POSH_ENOMEM;
  memcpy(m, data, len);
  c->items[c->n].data = m;
  c->items[c->n].len = len;
  c->n++;
  return 0;
}

POSH_EXTERN void posh_list_items_free(posh_list_item_t *items, size_t n) {
  if (!items)
    return;
  for (size_t i = 0; i < n; i++)
    free(items[i].data);
  free(items);
}

POSH_EXTERN int posh_list_get_slice_alloc(posh_obj_t *list, int64_t start,
                                          int64_t stop, int64_t step,
                                          posh_list_item_t **items_out,
                                          size_t *n_out) {
  if (!items_out || !n_out)
    return POSH_EINVAL;
  struct collect c = {NULL, 0, 0};
  int r = posh_list_get_slice(list, start, stop, step, collect_item, &c);
  if (r) {
    posh_list_items_free(c.items, c.n);
    return r;
  }
  *items_out = c.items;
  *n_out = c.n;
  return 0;
}

/* Is position j (0 <= j) in the adjusted slice (start, step, n)? */
static int in_slice(int64_t j, int64_t start, int64_t step, uint64_t n) {
  int64_t d = step > 0 ? j - start : start - j;
  int64_t s = step > 0 ? step : -step;
  return d >= 0 && d % s == 0 && (uint64_t)(d / s) < n;
}

/* Rebuild for an extended slice: drop its items (w == NULL) or replace
 * them in slice order by w[0, n).  Lock held. */
static int extended_locked(posh_heap_t *heap, posh__list_shared_t *l,
                           int64_t start, int64_t step, uint64_t n,
                           const uint64_t *w, uint64_t **removed,
                           void **old_array) {
  posh__list_array_t *a = arr(heap, l);
  uint64_t len = arr_len(a), newlen = w ? len : len - n;
  *removed = malloc((n ? n : 1) * sizeof(uint64_t));
  if (!*removed)
    return POSH_ENOMEM;
  int err = 0;
  posh__list_array_t *na = array_new(heap, grow_cap(a->cap, newlen), &err);
  if (!na) {
    free(*removed);
    *removed = NULL;
    return err;
  }
  for (uint64_t k = 0; k < n; k++)
    (*removed)[k] = a->e[start + (int64_t)k * step];
  uint64_t o = 0;
  for (uint64_t j = 0; j < len; j++) {
    if (in_slice((int64_t)j, start, step, n)) {
      if (w) {
        int64_t d = step > 0 ? (int64_t)j - start : start - (int64_t)j;
        na->e[o++] = w[d / (step > 0 ? step : -step)];
      }
    } else {
      na->e[o++] = a->e[j];
    }
  }
  na->len = o;
  CRASH_POINT(9);
  array_commit(heap, l, na);
  CRASH_POINT(10);
  *old_array = a;
  return 0;
}

/* Shared by set_slice and delete_slice: w NULL deletes. */
static int slice_change(posh_obj_t *list, int64_t start, int64_t stop,
                        int64_t step, uint64_t *w, size_t nw) {
  posh__list_shared_t *l;
  uint32_t tok;
  int r = list_lock(list, &l, &tok);
  if (r)
    return r;
  posh_heap_t *heap = list->heap;
  posh__list_array_t *a = arr(heap, l);
  uint64_t n = adjust_slice(arr_len(a), &start, &stop, step);
  uint64_t *removed = NULL, nremoved = 0;
  void *old = NULL;
  if (step == 1) {
    if (stop < start)
      stop = start;
    if (stop > start || nw)
      r = splice_locked(heap, l, (uint64_t)start, (uint64_t)stop, w, nw,
                        &removed, &nremoved, &old);
  } else if (w && nw != n) {
    r = POSH_EINVAL;
  } else if (n) {
    r = extended_locked(heap, l, start, step, n, w, &removed, &old);
    nremoved = n;
  }
  list_unlock(l, tok);
  if (r == 0)
    splice_cleanup(heap, removed, nremoved, old);
  return r;
}

POSH_EXTERN int posh_list_set_slice(posh_obj_t *list, int64_t start,
                                    int64_t stop, int64_t step,
                                    const struct iovec *items, size_t n) {
  void *shared;
  int r = posh__obj_get(list, POSH_OBJ_LIST, &shared);
  if (r)
    return r;
  if (step == 0 || step == INT64_MIN)
    return POSH_EINVAL;
  uint64_t *w;
  if ((r = items_make(list->heap, items, n, &w)) != 0)
    return r;
  r = slice_change(list, start, stop, step, w, n);
  if (r)
    items_free_words(list->heap, w, n);
  free(w);
  return r;
}

POSH_EXTERN int posh_list_delete_slice(posh_obj_t *list, int64_t start,
                                       int64_t stop, int64_t step) {
  if (step == 0 || step == INT64_MIN)
    return POSH_EINVAL;
  return slice_change(list, start, stop, step, NULL, 0);
}
