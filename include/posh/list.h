/* SPDX-License-Identifier: MIT */
/*
 * This file contains the public API of the list object: a growable,
 * process-shared sequence of byte strings (the storage under Python's
 * posh.list).  Every operation is atomic, also against a process killed
 * in the middle of it: the others then see the list as it was before the
 * operation or as it is after it, never in between (see docs/objects/list.md).
 *
 * Indices follow Python: a negative index counts from the end; get, set,
 * pop and delete report POSH_ERANGE for an index outside the list, insert
 * clamps.  Slices take (start, stop, step) as CPython's PySlice_Unpack
 * gives them (an omitted bound is INT64_MAX or INT64_MIN), and are
 * adjusted to the list's length under the list's lock, as
 * PySlice_AdjustIndices does.
 */
#ifndef POSH_LIST_H
#define POSH_LIST_H

#include <stdint.h>
#include <sys/uio.h>

#include "posh.h"
#include "posh/object.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest item (bytes). */
#define POSH_LIST_ITEM_MAX ((size_t)1 << 40)

/* Create an empty list; name (may be NULL) binds it in the directory. */
POSH_EXTERN int posh_list_create(posh_heap_t *heap, const char *name,
                                 posh_obj_t **list_out);
/* Number of items. */
POSH_EXTERN int posh_list_len(posh_obj_t *list, size_t *len_out);

/* Add one item at the end / n items at the end (all or nothing). */
POSH_EXTERN int posh_list_append(posh_obj_t *list, const void *data,
                                 size_t len);
POSH_EXTERN int posh_list_extend(posh_obj_t *list, const struct iovec *items,
                                 size_t n);
/* Insert before index (clamped to [0, len] after adding len to a negative
 * index). */
POSH_EXTERN int posh_list_insert(posh_obj_t *list, int64_t index,
                                 const void *data, size_t len);

/* Copy item `index` into buf (cap bytes).  *len_out (may be NULL) gets its
 * length; POSH_EMSGSIZE (nothing copied) when cap is too small. */
POSH_EXTERN int posh_list_get(posh_obj_t *list, int64_t index, void *buf,
                              size_t cap, size_t *len_out);
/* A malloc'd copy of item `index` (free() it; never NULL on success, even
 * for an empty item). */
POSH_EXTERN int posh_list_get_alloc(posh_obj_t *list, int64_t index,
                                    void **data_out, size_t *len_out);
/* Replace item `index`. */
POSH_EXTERN int posh_list_set(posh_obj_t *list, int64_t index,
                              const void *data, size_t len);
/* Remove item `index` and copy it out (as posh_list_get: POSH_EMSGSIZE
 * leaves the list unchanged).  buf may be NULL with cap 0 to drop it. */
POSH_EXTERN int posh_list_pop(posh_obj_t *list, int64_t index, void *buf,
                              size_t cap, size_t *len_out);
POSH_EXTERN int posh_list_pop_alloc(posh_obj_t *list, int64_t index,
                                    void **data_out, size_t *len_out);
/* Remove item `index`. */
POSH_EXTERN int posh_list_delete(posh_obj_t *list, int64_t index);
/* Remove every item. */
POSH_EXTERN int posh_list_clear(posh_obj_t *list);

/* Slices.  The visitor is called for each item of the slice in slice order,
 * with the list's lock held (it must not call list functions on the same
 * list: they would fail with POSH_EBUSY); a non-zero return stops the walk
 * and is returned. */
typedef int (*posh_list_visit_fn)(void *arg, size_t i, const void *data,
                                  size_t len);
POSH_EXTERN int posh_list_get_slice(posh_obj_t *list, int64_t start,
                                    int64_t stop, int64_t step,
                                    posh_list_visit_fn visit, void *arg);
/* The items of a slice as a malloc'd array of malloc'd copies (free with
 * posh_list_items_free). */
typedef struct posh_list_item {
  void *data;
  size_t len;
} posh_list_item_t;
POSH_EXTERN int posh_list_get_slice_alloc(posh_obj_t *list, int64_t start,
                                          int64_t stop, int64_t step,
                                          posh_list_item_t **items_out,
                                          size_t *n_out);
POSH_EXTERN void posh_list_items_free(posh_list_item_t *items, size_t n);
/* l[start:stop:step] = items.  With step 1 the slice is replaced by the n
 * items (any n); with another step n must equal the slice's length
 * (POSH_EINVAL otherwise).  step 0: POSH_EINVAL. */
POSH_EXTERN int posh_list_set_slice(posh_obj_t *list, int64_t start,
                                    int64_t stop, int64_t step,
                                    const struct iovec *items, size_t n);
/* del l[start:stop:step]. */
POSH_EXTERN int posh_list_delete_slice(posh_obj_t *list, int64_t start,
                                       int64_t stop, int64_t step);

/* Times the list's lock was taken over from a dead holder (diagnostics). */
POSH_EXTERN int posh_list_repairs(posh_obj_t *list, uint64_t *repairs_out);

#ifdef __cplusplus
}
#endif

#endif /* POSH_LIST_H */
