/* SPDX-License-Identifier: MIT */
/*
 * This file contains heap statistics and the full consistency check
 * (header, registry, directory, page table, every small page's free list),
 * used by the tests, by posh-stat --check and by debug builds.
 */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void posh__report(char *report, size_t len, size_t *used, const char *fmt, ...) {
  if (!report || len == 0 || *used + 1 >= len)
    return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(report + *used, len - *used, fmt, ap);
  va_end(ap);
  if (n > 0)
    *used += (size_t)n < len - *used ? (size_t)n : len - *used - 1;
}

POSH_EXTERN int posh_heap_stats(posh_heap_t *heap, posh_heap_stats_t *stats) {
  if (!heap || !stats)
    return POSH_EINVAL;
  if (heap->detached)
    return POSH_EDETACHED;
  posh__hdr_t *h = heap->hdr;
  memset(stats, 0, sizeof *stats);
  stats->capacity = h->capacity;
  stats->page_size = POSH_PAGE_SIZE;
  stats->pages_total = heap->npages;
  stats->bytes_metadata = h->data_off;
  posh__alloc_stats(heap, stats);
  for (uint32_t i = 0; i < h->max_slots; i++) {
    uint64_t w, st;
    posh__slot_read(&heap->slots[i], &w, &st);
    if (posh__slotw_state(w) == POSH_SLOT_LIVE &&
        posh__slotw_kind(w) == POSH_SLOT_PROCESS)
      stats->processes++;
  }
  stats->names = h->dir_count;
  return 0;
}

static int check_registry(posh_heap_t *heap, char *report, size_t len,
                          size_t *used) {
  int bad = 0;
  for (uint32_t i = 0; i < heap->hdr->max_slots; i++) {
    uint64_t w, st;
    posh__slot_read(&heap->slots[i], &w, &st);
    uint32_t state = posh__slotw_state(w), kind = posh__slotw_kind(w);
    if (state == POSH_SLOT_FREE)
      continue;
    if (state > POSH_SLOT_DEAD ||
        (kind != POSH_SLOT_PROCESS && kind != POSH_SLOT_THREAD) ||
        posh__slotw_pid(w) == 0 || posh__slotw_pid(w) > (1u << 22)) {
      posh__report(report, len, used,
                   "registry: slot %u has state %u kind %u pid %u\n", i, state,
                   kind, posh__slotw_pid(w));
      bad = 1;
    }
  }
  return bad ? POSH_ECORRUPT : 0;
}

POSH_EXTERN int posh_heap_check(posh_heap_t *heap, char *report,
                                size_t report_len) {
  if (!heap)
    return POSH_EINVAL;
  if (heap->detached)
    return POSH_EDETACHED;
  size_t used = 0;
  int bad = 0, r;
  if (report && report_len)
    report[0] = '\0';
  posh__hdr_t *h = heap->hdr;
  if (h->magic != POSH_MAGIC || h->abi_version != POSH_ABI_VERSION ||
      posh__header_checksum(h) != h->checksum) {
    posh__report(report, report_len, &used, "header: magic/version/checksum mismatch\n");
    return POSH_ECORRUPT;
  }
  if ((r = check_registry(heap, report, report_len, &used)) != 0)
    bad = 1;
  if ((r = posh__directory_check(heap, report, report_len, &used)) != 0)
    bad = 1;
  r = posh__objects_check(heap, report, report_len, &used);
  if (r == POSH_ECORRUPT)
    bad = 1;
  else if (r)
    return r;
  r = posh__pages_check(heap, report, report_len, &used);
  if (r == POSH_ECORRUPT)
    bad = 1;
  else if (r)
    return r;
  return bad ? POSH_ECORRUPT : 0;
}
