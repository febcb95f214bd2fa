/* SPDX-License-Identifier: MIT */
/*
 * This file contains the sync owner: a shared object whose only job is to
 * give a sync/ object (Lock, Condition, Semaphore, ...) the reference
 * counting of shared objects.  When the owner's last reference goes, its
 * finalize destroys the sync object and drops the reference it may hold
 * on another owner (a Condition's Lock).
 */
#include "object_internal.h"
#include "sync_internal.h"

typedef struct posh__sync_owner_shared {
  posh__obj_hdr_t hdr;
  uint64_t sync_off;  /* the owned sync/ object; immutable */
  uint64_t depends;   /* another owner kept alive by an inner reference,
                         0 if none; immutable */
} posh__sync_owner_shared_t;

static void owner_finalize(posh_heap_t *heap, posh__obj_hdr_t *obj) {
  posh__sync_owner_shared_t *o = (posh__sync_owner_shared_t *)obj;
  /* Nobody alive can hold the object any more (their references are gone
   * with their handles); a lock still marked as held by a dead thread is
   * destroyed all the same.  EBUSY would mean a live thread holds it
   * without a reference: then leave it (a leak, not a use-after-free). */
  if (o->sync_off)
    posh_sync_destroy(heap, (posh_off_t){o->sync_off});
  if (o->depends)
    posh__obj_inner_ref(heap, posh__at(heap, o->depends), -1);
}

const posh__obj_ops_t posh__sync_owner_ops = {"sync", owner_finalize, NULL,
                                             NULL};

POSH_EXTERN int posh_sync_own(posh_heap_t *heap, posh_off_t sync_obj,
                              posh_obj_t *depends_on, posh_obj_t **owner_out) {
  if (!heap || !owner_out)
    return POSH_EINVAL;
  uint32_t type;
  int r = posh_sync_type(heap, sync_obj, &type);
  if (r)
    return r;
  posh__obj_hdr_t *dep = NULL;
  if (depends_on) {
    if (depends_on->heap != heap)
      return POSH_EINVAL;
    if ((r = posh__obj_get(depends_on, POSH_OBJ_SYNC, (void **)&dep)) != 0)
      return r;
  }
  int err = 0;
  posh__sync_owner_shared_t *o = posh__obj_alloc(
      heap, POSH_OBJ_SYNC, 0, sizeof *o, 0, &err);
  if (!o)
    return err;
  /* Published empty (a failed publish finalizes it: it must not destroy
   * the caller's object), then filled: nobody else knows the owner yet.
   * A death in between leaks the sync object, never frees it twice. */
  posh_obj_t *owner;
  if ((r = posh__obj_publish(heap, o, NULL, &owner)) != 0)
    return r;
  if (dep && (r = posh__obj_inner_ref(heap, dep, +1)) != 0) {
    posh_obj_close(owner);
    return r;
  }
  o->depends = posh__off_of(heap, dep);
  o->sync_off = sync_obj.v;
  *owner_out = owner;
  return 0;
}

POSH_EXTERN int posh_sync_owned(posh_obj_t *owner, posh_off_t *sync_obj_out) {
  posh__sync_owner_shared_t *o;
  int r = posh__obj_get(owner, POSH_OBJ_SYNC, (void **)&o);
  if (r)
    return r;
  if (!sync_obj_out)
    return POSH_EINVAL;
  sync_obj_out->v = o->sync_off;
  return 0;
}
