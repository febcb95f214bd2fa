/* SPDX-License-Identifier: MIT */
/*
 * This file contains the Buffer object: raw, aligned, zeroed bytes in the
 * heap for zero-copy use (numpy arrays, MPI windows).  The bytes follow the
 * object header in the same block, at the requested alignment; libposh
 * puts no synchronisation on them.
 */
#include "object_internal.h"

#include <string.h>

typedef struct posh__buffer_shared {
  posh__obj_hdr_t hdr;
  uint64_t size;     /* bytes the user asked for; immutable */
  uint64_t data_off; /* offset of the bytes from the object start; immutable */
} posh__buffer_shared_t;

const posh__obj_ops_t posh__buffer_ops = {"buffer", NULL, NULL, NULL};

#define BUFFER_MAX_ALIGN ((size_t)POSH_PAGE_SIZE)

POSH_EXTERN int posh_buffer_create(posh_heap_t *heap, const char *name,
                                   size_t size, size_t align,
                                   posh_obj_t **obj_out) {
  if (!heap || !obj_out)
    return POSH_EINVAL;
  if ((align & (align - 1)) != 0 || align > BUFFER_MAX_ALIGN)
    return POSH_EINVAL;
  if (align < POSH_CACHELINE) /* 0 too: the data gets a line of its own */
    align = POSH_CACHELINE;
  size_t head = sizeof(posh__buffer_shared_t);
  size_t data_off = (size_t)posh__align_up(head, align);
  if (size > heap->view.capacity || size > SIZE_MAX - data_off)
    return POSH_ENOMEM;
  int err = 0;
  posh__buffer_shared_t *b =
      posh__obj_alloc(heap, POSH_OBJ_BUFFER, 0, data_off + size, align, &err);
  if (!b)
    return err;
  b->size = size;
  b->data_off = data_off;
  return posh__obj_publish(heap, b, name, obj_out);
}

POSH_EXTERN int posh_buffer_data(posh_obj_t *obj, void **data_out,
                                 size_t *size_out) {
  posh__buffer_shared_t *b;
  int r = posh__obj_get(obj, POSH_OBJ_BUFFER, (void **)&b);
  if (r)
    return r;
  if (data_out)
    *data_out = (unsigned char *)b + b->data_off;
  if (size_out)
    *size_out = (size_t)b->size;
  return 0;
}
