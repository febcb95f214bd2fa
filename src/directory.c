/* SPDX-License-Identifier: MIT */
/*
 * This file contains the named-object directory: a fixed-size hash table
 * in the heap (open addressing, linear probing, XXH3 of the name) mapping
 * names to (offset, type tag).  Writers serialise on dir_lock; readers take
 * no lock and validate each entry with its seqlock, so they never wait
 * behind each other.  A writer killed mid-update leaves an odd sequence;
 * the next writer (which gets EOWNERDEAD on dir_lock) repairs it, and a
 * reader that spins too long on it takes the lock to force that repair.
 */
#include "internal.h"

#include <string.h>
#include <xxhash.h>

#define READ_SPIN_LIMIT 100000u

int posh__directory_init(posh_heap_t *heap) {
  (void)heap; /* zeroed segment: every entry EMPTY with sequence 0 */
  return 0;
}

/* Where a name of this hash starts probing, and how far entry i lies past
 * that home (linear probing wraps). */
static uint32_t dir_home(uint32_t n, uint64_t hash) { return (uint32_t)(hash % n); }
static uint32_t dir_distance(uint32_t n, uint32_t home, uint32_t i) {
  return (i + n - home) % n;
}

static int name_check(const char *name, size_t *len_out) {
  if (!name)
    return POSH_EINVAL;
  size_t len = strnlen(name, POSH_NAME_MAX + 1);
  if (len == 0)
    return POSH_EINVAL;
  if (len > POSH_NAME_MAX)
    return POSH_ENAMETOOLONG;
  *len_out = len;
  return 0;
}

/* Repair after a writer died: entries it left mid-update (odd sequence)
 * become tombstones, and the counters are recomputed.  dir_lock held. */
int posh__directory_repair(posh_heap_t *heap) {
  posh__hdr_t *h = heap->hdr;
  uint32_t live = 0, tomb = 0;
  for (uint32_t i = 0; i < h->max_names; i++) {
    posh__dirent_t *e = &heap->dir[i];
    uint32_t seq = posh_atomic32_load_relaxed(&e->xseq);
    if (seq & 1u) {
      e->state = POSH_DIRENT_TOMBSTONE;
      /* Release: readers that see the even sequence see the tombstone. */
      posh_atomic32_store_release(&e->xseq, seq + 1);
    }
    if (e->state == POSH_DIRENT_LIVE) {
      live++;
      /* A damaged bound must not hide a live name. */
      uint32_t home = dir_home(h->max_names, e->hash);
      uint32_t k = dir_distance(h->max_names, home, i);
      if (posh_atomic32_load_relaxed(&heap->dir[home].xprobe_max) < k)
        posh_atomic32_exchange_full(&heap->dir[home].xprobe_max, k);
    } else if (e->state == POSH_DIRENT_TOMBSTONE)
      tomb++;
  }
  h->dir_count = live;
  h->dir_tombstones = tomb;
  return 0;
}

static int dir_lock(posh_heap_t *heap, uint32_t *token_out) {
  int err = 0;
  uint32_t token = posh__self_token(heap, &err);
  if (!token)
    return err;
  int r = posh__lock_acquire(heap, &heap->hdr->dir_lock, token, -1);
  if (r == POSH_EOWNERDEAD) {
    posh__directory_repair(heap);
    posh__lock_consistent(&heap->hdr->dir_lock);
    r = 0;
  }
  if (r)
    return r;
  *token_out = token;
  return 0;
}

static void dir_unlock(posh_heap_t *heap, uint32_t token) {
  posh__lock_release(&heap->hdr->dir_lock, token);
}

/* Seqlock writer bracket (dir_lock held). */
static void entry_write_begin(posh__dirent_t *e) {
  uint32_t seq = posh_atomic32_load_relaxed(&e->xseq);
  posh_atomic32_store_relaxed(&e->xseq, seq + 1);
  /* Full fence: the odd sequence is visible before any field changes. */
  posh_fence_full();
}
static void entry_write_end(posh__dirent_t *e) {
  uint32_t seq = posh_atomic32_load_relaxed(&e->xseq);
  /* Release: the new fields are visible before the even sequence. */
  posh_atomic32_store_release(&e->xseq, seq + 1);
}

/* Consistent snapshot of an entry.  Returns 0, or POSH_EAGAIN if a writer
 * seems stuck (caller forces a repair through the lock). */
static int entry_read(posh__dirent_t *e, posh__dirent_t *snap) {
  for (uint32_t spins = 0; spins < READ_SPIN_LIMIT; spins++) {
    /* Acquire: pairs with entry_write_end's release. */
    uint32_t s1 = posh_atomic32_load_acquire(&e->xseq);
    if (s1 & 1u) {
      posh_cpu_relax();
      continue;
    }
    snap->state = e->state;
    snap->hash = e->hash;
    snap->off = e->off;
    snap->type_tag = e->type_tag;
    snap->name_len = e->name_len;
    if (snap->state == POSH_DIRENT_LIVE && snap->name_len <= POSH_NAME_MAX)
      memcpy(snap->name, e->name, POSH_NAME_MAX + 1);
    /* Full fence: the field reads complete before the re-check. */
    posh_fence_full();
    if (posh_atomic32_load_relaxed(&e->xseq) == s1) {
      if (snap->name_len > POSH_NAME_MAX)
        snap->state = POSH_DIRENT_TOMBSTONE; /* garbage: treat as absent */
      snap->name[snap->name_len <= POSH_NAME_MAX ? snap->name_len : 0] = '\0';
      return 0;
    }
  }
  return POSH_EAGAIN;
}

/* Lock-free lookup.  Returns 0 with *snap filled, or POSH_ENOENT. */
static int lookup_nolock(posh_heap_t *heap, const char *name, size_t len,
                         uint64_t hash, posh__dirent_t *snap,
                         uint32_t *index_out) {
  uint32_t n = heap->hdr->max_names, home = dir_home(n, hash);
  /* Acquire: the bound is raised (full barrier) before an entry past the
   * old one becomes LIVE; a bind that returned before we started is seen. */
  uint32_t bound = posh_atomic32_load_acquire(&heap->dir[home].xprobe_max);
  for (uint32_t k = 0; k < n && k <= bound; k++) {
    uint32_t i = (home + k) % n;
    int r = entry_read(&heap->dir[i], snap);
    if (r)
      return r;
    if (snap->state == POSH_DIRENT_EMPTY)
      return POSH_ENOENT;
    if (snap->state == POSH_DIRENT_LIVE && snap->hash == hash &&
        snap->name_len == len && !memcmp(snap->name, name, len)) {
      if (index_out)
        *index_out = i;
      return 0;
    }
  }
  return POSH_ENOENT;
}

POSH_EXTERN int posh_name_lookup(posh_heap_t *heap, const char *name,
                                 posh_off_t *off_out, uint32_t *tag_out) {
  size_t len;
  int r;
  if (!heap || !off_out)
    return POSH_EINVAL;
  if (heap->detached)
    return POSH_EDETACHED;
  if ((r = name_check(name, &len)))
    return r;
  if (heap->hdr->max_names == 0)
    return POSH_ENOENT;
  uint64_t hash = XXH3_64bits(name, len);
  posh__dirent_t snap;
  r = lookup_nolock(heap, name, len, hash, &snap, NULL);
  if (r == POSH_EAGAIN) {
    /* A writer looks stuck: taking the lock repairs it if it died. */
    uint32_t token;
    if ((r = dir_lock(heap, &token)))
      return r;
    r = lookup_nolock(heap, name, len, hash, &snap, NULL);
    dir_unlock(heap, token);
  }
  if (r)
    return r;
  off_out->v = snap.off;
  if (tag_out)
    *tag_out = snap.type_tag;
  return 0;
}

POSH_EXTERN int posh_name_bind(posh_heap_t *heap, const char *name,
                               posh_off_t off, uint32_t type_tag) {
  size_t len;
  int r;
  uint32_t token;
  if (!heap || off.v == 0)
    return POSH_EINVAL;
  if (heap->detached)
    return POSH_EDETACHED;
  if ((r = name_check(name, &len)))
    return r;
  if (off.v >= heap->view.capacity)
    return POSH_ERANGE;
  posh__hdr_t *h = heap->hdr;
  if (h->max_names == 0)
    return POSH_ENOSPC;
  uint64_t hash = XXH3_64bits(name, len);
  if ((r = dir_lock(heap, &token)))
    return r;
  /* Under the lock the table does not change: probe for a duplicate and
   * remember the first reusable slot. */
  uint32_t n = h->max_names, home = dir_home(n, hash);
  uint32_t bound = posh_atomic32_load_relaxed(&heap->dir[home].xprobe_max);
  uint32_t target = UINT32_MAX, target_k = 0;
  r = POSH_ENOSPC;
  for (uint32_t k = 0; k < n; k++) {
    uint32_t i = (home + k) % n;
    posh__dirent_t *e = &heap->dir[i];
    if (e->state == POSH_DIRENT_LIVE) {
      if (e->hash == hash && e->name_len == len && !memcmp(e->name, name, len)) {
        r = POSH_EEXIST;
        goto out;
      }
      continue;
    }
    if (target == UINT32_MAX) {
      target = i;
      target_k = k;
    }
    /* A duplicate lies within the bound; past it only a free entry is
     * looked for. */
    if (e->state == POSH_DIRENT_EMPTY || k >= bound)
      break;
  }
  if (target == UINT32_MAX)
    goto out;
  if (target_k > bound) /* full barrier: before the entry becomes LIVE */
    posh_atomic32_exchange_full(&heap->dir[home].xprobe_max, target_k);
  posh__dirent_t *e = &heap->dir[target];
  int was_tomb = e->state == POSH_DIRENT_TOMBSTONE;
  entry_write_begin(e);
  e->hash = hash;
  e->off = off.v;
  e->type_tag = type_tag;
  e->name_len = (uint16_t)len;
  memcpy(e->name, name, len);
  e->name[len] = '\0';
  e->state = POSH_DIRENT_LIVE;
  entry_write_end(e);
  h->dir_count++;
  if (was_tomb)
    h->dir_tombstones--;
  r = 0;
out:
  dir_unlock(heap, token);
  return r;
}

/* The directory became empty: every entry becomes EMPTY and every probe
 * bound 0, which undoes what churn left (tombstones, bounds raised by a
 * crowded moment).  A lock-free reader probing meanwhile finds nothing
 * either way.  dir_lock held. */
static void reset_if_empty(posh_heap_t *heap) {
  posh__hdr_t *h = heap->hdr;
  if (h->dir_count != 0)
    return;
  for (uint32_t i = 0; i < h->max_names; i++) {
    posh__dirent_t *e = &heap->dir[i];
    if (e->state == POSH_DIRENT_TOMBSTONE) {
      entry_write_begin(e);
      e->state = POSH_DIRENT_EMPTY;
      entry_write_end(e);
    }
    posh_atomic32_store_relaxed(&e->xprobe_max, 0); /* nothing is LIVE */
  }
  h->dir_tombstones = 0;
}

POSH_EXTERN int posh_name_unbind(posh_heap_t *heap, const char *name,
                                 posh_off_t expect_off) {
  size_t len;
  int r;
  uint32_t token, index;
  if (!heap)
    return POSH_EINVAL;
  if (heap->detached)
    return POSH_EDETACHED;
  if ((r = name_check(name, &len)))
    return r;
  if (heap->hdr->max_names == 0)
    return POSH_ENOENT;
  uint64_t hash = XXH3_64bits(name, len);
  if ((r = dir_lock(heap, &token)))
    return r;
  posh__dirent_t snap;
  r = lookup_nolock(heap, name, len, hash, &snap, &index);
  if (r == 0 && expect_off.v && snap.off != expect_off.v)
    r = POSH_EBUSY;
  if (r == 0) {
    posh__dirent_t *e = &heap->dir[index];
    entry_write_begin(e);
    e->state = POSH_DIRENT_TOMBSTONE;
    entry_write_end(e);
    heap->hdr->dir_count--;
    heap->hdr->dir_tombstones++;
    reset_if_empty(heap);
  }
  dir_unlock(heap, token);
  return r;
}

POSH_EXTERN int posh_name_foreach(posh_heap_t *heap, posh_name_visit_fn visit,
                                  void *arg) {
  if (!heap || !visit)
    return POSH_EINVAL;
  if (heap->detached)
    return POSH_EDETACHED;
  for (uint32_t i = 0; i < heap->hdr->max_names; i++) {
    posh__dirent_t snap;
    if (entry_read(&heap->dir[i], &snap) != 0)
      continue; /* stuck writer: skip (documented snapshot semantics) */
    if (snap.state != POSH_DIRENT_LIVE)
      continue;
    int r = visit(snap.name, (posh_off_t){snap.off}, snap.type_tag, arg);
    if (r)
      return r;
  }
  return 0;
}

int posh__directory_check(posh_heap_t *heap, char *report, size_t len,
                          size_t *used) {
  int bad = 0, mid_update = 0;
  uint32_t live = 0;
  for (uint32_t i = 0; i < heap->hdr->max_names; i++) {
    posh__dirent_t *e = &heap->dir[i];
    uint32_t seq = posh_atomic32_load_acquire(&e->xseq);
    if (seq & 1u) {
      mid_update = 1;
      continue; /* being written (or its writer died: repaired on lock) */
    }
    if (e->state > POSH_DIRENT_TOMBSTONE) {
      posh__report(report, len, used, "directory: entry %u has state %u\n", i,
                   e->state);
      bad = 1;
      continue;
    }
    if (e->state != POSH_DIRENT_LIVE)
      continue;
    live++;
    if (e->name_len == 0 || e->name_len > POSH_NAME_MAX ||
        e->name[e->name_len] != '\0' ||
        XXH3_64bits(e->name, e->name_len) != e->hash) {
      posh__report(report, len, used, "directory: entry %u name/hash broken\n", i);
      bad = 1;
    }
    if (e->off == 0 || e->off >= heap->view.capacity) {
      posh__report(report, len, used,
                   "directory: entry %u offset %llu out of range\n", i,
                   (unsigned long long)e->off);
      bad = 1;
    }
    uint32_t n = heap->hdr->max_names, home = dir_home(n, e->hash);
    uint32_t k = dir_distance(n, home, i);
    if (posh_atomic32_load_acquire(&heap->dir[home].xprobe_max) < k) {
      posh__report(report, len, used,
                   "directory: entry %u lies %u past its home %u, whose probe "
                   "bound is %u\n", i, k, home,
                   posh_atomic32_load_relaxed(&heap->dir[home].xprobe_max));
      bad = 1;
    }
  }
  /* The counter is kept under dir_lock; read without it, it can only be
   * off while a writer is active, so only report a mismatch when no entry
   * was mid-update and the lock is free. */
  if (!bad && !mid_update && posh__lock_owner(&heap->hdr->dir_lock) == 0 &&
      live != heap->hdr->dir_count) {
    posh__report(report, len, used, "directory: %u live entries, counter says %u\n",
                 live, heap->hdr->dir_count);
    bad = 1;
  }
  return bad ? POSH_ECORRUPT : 0;
}
