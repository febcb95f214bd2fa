/* SPDX-License-Identifier: MIT */
/*
 * This file contains what the two halves of the allocator share: the size
 * class table (alloc.c) and the page-level entry points (pages.c) that hand
 * out, adopt and take back small pages.
 */
#ifndef POSH_ALLOC_INTERNAL_H
#define POSH_ALLOC_INTERNAL_H

#include "internal.h"

#define POSH_SMALL_MAX 16384u /* larger requests are page runs */

typedef struct posh__class_info {
  uint32_t block_size;
  uint32_t capacity;    /* blocks per page */
  uint32_t first_block; /* offset of block 0 in the page */
  uint32_t bitmap_words;/* words per bitmap (remote-free, owner's free) */
  uint32_t bitmap_stride;/* words from one bitmap to the next (whole lines) */
  uint32_t align;       /* every block is aligned to this */
  uint32_t reciprocal;  /* ceil(2^32 / block_size) */
} posh__class_info_t;

extern posh__class_info_t posh__classes[POSH_SIZE_CLASS_MAX];
extern int posh__nclasses;

/* Number of cache-line colors for page heads (see posh__page.head_off). */
#define POSH_PAGE_COLORS 16u

/* A small page's head (remote-free flag line), remote bitmap and the
 * owner's free bitmap. */
static inline posh__page_head_t *posh__page_head(unsigned char *page,
                                                 const posh__page_t *pg) {
  return (posh__page_head_t *)(page + pg->head_off);
}
static inline uint64_t *posh__page_remote_bitmap(unsigned char *page,
                                                 const posh__page_t *pg) {
  return (uint64_t *)(page + pg->head_off + sizeof(posh__page_head_t));
}
static inline uint64_t *posh__page_free_bitmap(unsigned char *page,
                                               const posh__page_t *pg) {
  return (uint64_t *)(page + pg->free_bitmap_off);
}

/* Format page idx as a small page of class cls owned by token.  Called by
 * pages.c under page_lock, before the page's kind says SMALL. */
void posh__small_page_format(posh_heap_t *heap, posh__page_t *pg, int cls,
                             uint32_t token);

/* pages.c: a fresh small page (formatted, owned by token), or NULL with *err. */
posh__page_t *posh__pages_alloc_small(posh_heap_t *heap, uint32_t token,
                                      int cls, int *err);
/* pages.c: take an abandoned page of class cls and make token its owner;
 * NULL if none.  The caller rebuilds its free list. */
posh__page_t *posh__pages_adopt(posh_heap_t *heap, uint32_t token, int cls);
/* pages.c: give an empty small page back (page_lock taken inside). */
void posh__pages_free_small(posh_heap_t *heap, uint32_t token,
                            posh__page_t *pg);

#endif
