/* SPDX-License-Identifier: MIT */
/*
 * This file contains the process registry: a slot per attached process and
 * per thread that allocates or locks, holding pid and process start time so
 * a reused pid is never mistaken for a live owner.  Liveness of lock owners
 * and page owners is asked here; dead slots are found and reclaimed here.
 */
#include "internal.h"

#include <string.h>

/* Slots are claimed and released with one double-width CAS over
 * {control word, start time}: the slot is either free or fully claimed,
 * whatever instant its claimer is killed at. */
#if !defined(AO_HAVE_compare_double_and_swap_double_full)
#error "libposh needs AO_compare_double_and_swap_double_full (build with -mcx16)"
#endif

static int slot_cas(posh__slot_t *slot, uint64_t old_w, uint64_t old_start,
                    uint64_t new_w, uint64_t new_start) {
  return AO_compare_double_and_swap_double_full(&slot->xid, (AO_t)old_w,
                                                (AO_t)old_start, (AO_t)new_w,
                                                (AO_t)new_start);
}

void posh__slot_read(posh__slot_t *slot, uint64_t *word, uint64_t *start) {
  posh_atomic_t *w = (posh_atomic_t *)&slot->xid.AO_val1;
  posh_atomic_t *s = (posh_atomic_t *)&slot->xid.AO_val2;
  for (;;) {
    /* Acquire loads: the start time is read after the first word and
     * before the second; equal words mean no CAS happened in between. */
    uint64_t w1 = posh_atomic_load_acquire(w);
    uint64_t st = posh_atomic_load_acquire(s);
    if (posh_atomic_load_acquire(w) == w1) {
      *word = w1;
      *start = st;
      return;
    }
  }
}

int posh__registry_init(posh_heap_t *heap) {
  /* A fresh segment reads as zeros: every slot FREE, generation 0. */
  (void)heap;
  return 0;
}

/* Next generation for a slot; never one whose token bits are all zero, so
 * no token is 0. */
static uint32_t next_gen(uint32_t gen) {
  do
    gen = (gen + 1) & 0x0fffffffu;
  while ((gen & ((1u << POSH_TOKEN_GEN_BITS) - 1u)) == 0);
  return gen;
}

static int claim(posh_heap_t *heap, uint32_t kind, uint32_t *slot_out,
                 uint32_t *token_out) {
  uint32_t n = heap->hdr->max_slots;
  uint32_t pid = (uint32_t)heap->proc_pid;
  uint32_t first = (pid * 2654435761u) % n; /* spread claimers apart */
  for (int pass = 0; pass < 2; pass++) {
    for (uint32_t k = 0; k < n; k++) {
      uint32_t i = (first + k) % n;
      posh__slot_t *slot = &heap->slots[i];
      uint64_t w, st;
      posh__slot_read(slot, &w, &st);
      if (posh__slotw_state(w) != POSH_SLOT_FREE)
        continue;
      uint32_t gen = next_gen(posh__slotw_gen(w));
      uint64_t nw = posh__slotw_make(POSH_SLOT_LIVE, kind, gen, pid);
      if (slot_cas(slot, w, st, nw, heap->proc_start)) {
        /* Informational fields, written after the claim (readers never
         * rely on them for liveness). */
        slot->parent = kind == POSH_SLOT_THREAD ? heap->proc_slot : i;
        slot->tid = (int32_t)posh__prim_gettid();
        *slot_out = i;
        *token_out = posh__token_make(i, gen);
        return 0;
      }
    }
    /* Full: reclaim slots of dead processes and try once more (reaping
     * needs no slot of its own). */
    if (pass == 0)
      posh_heap_reap(heap, NULL);
  }
  return POSH_ENOSPC;
}

int posh__registry_register_process(posh_heap_t *heap) {
  return claim(heap, POSH_SLOT_PROCESS, &heap->proc_slot, &heap->proc_token);
}

/* Claim a process slot, in a parent about to fork, for the child: it is
 * claimed under the parent's identity (so it stays alive while the parent
 * does) and the child takes it over with posh__registry_adopt_fork_slot.
 * Counts as an attached process. */
int posh__registry_claim_fork_slot(posh_heap_t *heap, uint32_t *slot_out,
                                   uint32_t *token_out) {
  return claim(heap, POSH_SLOT_PROCESS, slot_out, token_out);
}

int posh__registry_adopt_fork_slot(posh_heap_t *heap, uint32_t slot_idx,
                                   uint32_t token, pid_t pid, uint64_t start) {
  posh__slot_t *slot = &heap->slots[slot_idx];
  uint64_t w, st;
  posh__slot_read(slot, &w, &st);
  if (posh__slotw_state(w) != POSH_SLOT_LIVE ||
      posh__token_make(slot_idx, posh__slotw_gen(w)) != token)
    return POSH_ESTALE; /* reaped meanwhile: the parent died */
  /* Same generation, so the token (and every holder bit set for it)
   * stays valid; only the identity changes. */
  uint64_t nw = posh__slotw_make(POSH_SLOT_LIVE, POSH_SLOT_PROCESS,
                                 posh__slotw_gen(w), (uint32_t)pid);
  if (!slot_cas(slot, w, st, nw, start))
    return POSH_EAGAIN;
  slot->parent = slot_idx;
  slot->tid = (int32_t)posh__prim_gettid();
  return 0;
}

/* Release a slot we own (LIVE, our token) back to FREE. */
static int release_slot(posh_heap_t *heap, uint32_t slot_idx, uint32_t token,
                        uint32_t from_state) {
  posh__slot_t *slot = &heap->slots[slot_idx];
  for (;;) {
    uint64_t w, st;
    posh__slot_read(slot, &w, &st);
    if (posh__slotw_state(w) != from_state ||
        posh__token_make(slot_idx, posh__slotw_gen(w)) != token)
      return 0;
    uint64_t nw = posh__slotw_make(POSH_SLOT_FREE, 0, posh__slotw_gen(w), 0);
    if (slot_cas(slot, w, st, nw, 0))
      return 1;
  }
}

int posh__registry_claim_thread(posh_heap_t *heap, uint32_t *slot_out,
                                uint32_t *token_out) {
  return claim(heap, POSH_SLOT_THREAD, slot_out, token_out);
}

void posh__registry_release_thread(posh_heap_t *heap, uint32_t slot,
                                   uint32_t token) {
  release_slot(heap, slot, token, POSH_SLOT_LIVE);
}

void posh__registry_unregister_process(posh_heap_t *heap) {
  /* Thread slots of this process that were not released by their threads
   * (threads still alive, or the main thread): release them; their pages
   * are swept up by the next allocator (posh__pages_note_stale_owners). */
  unsigned freed = 0;
  uint32_t n = heap->hdr->max_slots;
  for (uint32_t i = 0; i < n; i++) {
    uint64_t w, st;
    posh__slot_read(&heap->slots[i], &w, &st);
    /* Ours: this process, and claimed under this handle's process slot
     * (another handle of the same heap in this process keeps its own). */
    if (posh__slotw_state(w) != POSH_SLOT_LIVE ||
        posh__slotw_kind(w) != POSH_SLOT_THREAD ||
        posh__slotw_pid(w) != (uint32_t)heap->proc_pid ||
        st != heap->proc_start || heap->slots[i].parent != heap->proc_slot)
      continue;
    uint32_t token = posh__token_make(i, posh__slotw_gen(w));
    freed += (unsigned)release_slot(heap, i, token, POSH_SLOT_LIVE);
  }
  posh__pages_note_stale_owners(heap, freed);
  release_slot(heap, heap->proc_slot, heap->proc_token, POSH_SLOT_LIVE);
}

uint32_t posh__registry_count_processes(posh_heap_t *heap) {
  /* Whoever releases its slot (a full-barrier CAS) and then counts cannot
   * miss a concurrent detacher's release and see it too: of two detachers
   * at least one sees the other gone. */
  posh_fence_full();
  uint32_t n = heap->hdr->max_slots, live = 0;
  for (uint32_t i = 0; i < n; i++) {
    uint64_t w, st;
    posh__slot_read(&heap->slots[i], &w, &st);
    live += posh__slotw_state(w) == POSH_SLOT_LIVE &&
            posh__slotw_kind(w) == POSH_SLOT_PROCESS;
  }
  return live;
}

/* Mark a LIVE slot DEAD (same generation).  Idempotent. */
static void mark_dead(posh__slot_t *slot, uint64_t w, uint64_t st) {
  uint64_t nw = posh__slotw_make(POSH_SLOT_DEAD, posh__slotw_kind(w),
                                 posh__slotw_gen(w), posh__slotw_pid(w));
  slot_cas(slot, w, st, nw, st);
}

int posh__token_alive(posh_heap_t *heap, uint32_t token, int thorough) {
  uint32_t idx = posh__token_slot(token);
  if (idx >= heap->hdr->max_slots)
    return 0;
  posh__slot_t *slot = &heap->slots[idx];
  uint64_t w, st;
  posh__slot_read(slot, &w, &st);
  if (posh__slotw_state(w) != POSH_SLOT_LIVE ||
      posh__token_make(idx, posh__slotw_gen(w)) != token)
    return 0; /* released (exited) or found dead, or the slot was reused */
  pid_t pid = (pid_t)posh__slotw_pid(w);
  if (pid == heap->proc_pid && st == heap->proc_start)
    return 1; /* our own process; a thread's slot is released at its exit */
  if (!thorough)
    return 1;
  if (posh__prim_proc_alive(pid, st))
    return 1;
  mark_dead(slot, w, st);
  return 0;
}

POSH_EXTERN int posh_heap_reap(posh_heap_t *heap, unsigned *reaped) {
  if (!heap)
    return POSH_EINVAL;
  if (heap->detached)
    return POSH_EDETACHED;
  uint32_t n = heap->hdr->max_slots;
  unsigned count = 0, freed = 0;
  /* Pass 1: find LIVE slots whose process is gone (one /proc look-up per
   * distinct process: remember the last answer). */
  pid_t last_pid = -1;
  uint64_t last_start = 0;
  int last_alive = 1;
  for (uint32_t i = 0; i < n; i++) {
    uint64_t w, st;
    posh__slot_read(&heap->slots[i], &w, &st);
    if (posh__slotw_state(w) != POSH_SLOT_LIVE)
      continue;
    pid_t pid = (pid_t)posh__slotw_pid(w);
    if (pid == heap->proc_pid && st == heap->proc_start)
      continue;
    if (pid != last_pid || st != last_start) {
      last_pid = pid;
      last_start = st;
      last_alive = posh__prim_proc_alive(pid, st);
    }
    if (!last_alive)
      mark_dead(&heap->slots[i], w, st);
  }
  /* Pass 2: reclaim DEAD slots.  Their pages need no work here: a page
   * whose owner token's slot is no longer LIVE with that generation is
   * abandoned by definition, and the next allocator to take page_lock
   * sweeps such pages onto the abandoned lists.  So reaping needs no slot
   * or lock of its own, and a reaper killed half-way leaves slots DEAD
   * for the next one. */
  for (int kind = POSH_SLOT_THREAD; kind >= POSH_SLOT_PROCESS; kind--) {
    for (uint32_t i = 0; i < n; i++) {
      uint64_t w, st;
      posh__slot_read(&heap->slots[i], &w, &st);
      if (posh__slotw_state(w) != POSH_SLOT_DEAD || (int)posh__slotw_kind(w) != kind)
        continue;
      uint32_t token = posh__token_make(i, posh__slotw_gen(w));
      /* A dead process's object references go before its slot can be
       * reused (a newcomer in the slot must not inherit them); if that
       * cannot be done now the slot stays DEAD for the next reaper. */
      if (kind == POSH_SLOT_PROCESS && posh__objects_drop_slot(heap, i) != 0)
        continue;
      if (release_slot(heap, i, token, POSH_SLOT_DEAD)) {
        freed++;
        if (kind == POSH_SLOT_PROCESS)
          count++; /* reported in processes; their threads come along */
      }
    }
  }
  posh__pages_note_stale_owners(heap, freed);
  if (reaped)
    *reaped = count;
  return 0;
}

POSH_EXTERN int posh_heap_processes(posh_heap_t *heap, posh_process_info_t *out,
                                    size_t max, size_t *count) {
  if (!heap || (!out && max) || !count)
    return POSH_EINVAL;
  if (heap->detached)
    return POSH_EDETACHED;
  uint32_t n = heap->hdr->max_slots;
  size_t found = 0;
  for (uint32_t i = 0; i < n; i++) {
    uint64_t w, st;
    posh__slot_read(&heap->slots[i], &w, &st);
    uint32_t state = posh__slotw_state(w);
    if (state == POSH_SLOT_FREE || posh__slotw_kind(w) != POSH_SLOT_PROCESS)
      continue;
    if (found < max) {
      posh_process_info_t *p = &out[found];
      memset(p, 0, sizeof *p);
      p->slot = i;
      p->state = state == POSH_SLOT_LIVE ? POSH_PROC_LIVE : POSH_PROC_DEAD;
      p->pid = (int32_t)posh__slotw_pid(w);
      p->start_time = st;
      p->is_self = (pid_t)p->pid == heap->proc_pid && st == heap->proc_start;
      for (uint32_t j = 0; j < n; j++) {
        uint64_t w2, st2;
        posh__slot_read(&heap->slots[j], &w2, &st2);
        if (posh__slotw_state(w2) != POSH_SLOT_FREE &&
            posh__slotw_kind(w2) == POSH_SLOT_THREAD &&
            posh__slotw_pid(w2) == posh__slotw_pid(w) && st2 == st)
          p->threads++;
      }
    }
    found++;
  }
  *count = found;
  return 0;
}
