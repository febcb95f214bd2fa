/* SPDX-License-Identifier: MIT */
/*
 * This file contains the public API of the Value and Array objects: a typed
 * scalar and a fixed-length typed array in shared memory, with the type
 * codes of Python's multiprocessing/array module ('c' char, 'b'/'B' 8-bit,
 * 'h'/'H' 16-bit, 'i'/'I' 32-bit, 'l'/'L' C long, 'q'/'Q' 64-bit, 'f'
 * float, 'd' double), with or without a recursive lock (multiprocessing's
 * Value/Array vs RawValue/RawArray).  The data is directly addressable and
 * aligned to 64 bytes, so it can back a numpy array with no copy; the lock
 * lives on another cache line.  See docs/objects/value.md.
 */
#ifndef POSH_VALUE_H
#define POSH_VALUE_H

#include <stddef.h>
#include <stdint.h>

#include "posh.h"
#include "posh/object.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Alignment of the data of every Value and Array. */
#define POSH_VALUE_ALIGN 64

/* Bytes of one item of typecode, or POSH_EINVAL for an unknown code. */
POSH_EXTERN int posh_value_itemsize(char typecode);

/* A zeroed scalar.  with_lock: 1 for a recursive lock (Value), 0 for none
 * (RawValue).  POSH_EINVAL for a bad type code. */
POSH_EXTERN int posh_value_create(posh_heap_t *heap, const char *name,
                                  char typecode, int with_lock,
                                  posh_obj_t **value_out);
/* A zeroed array of length items (length may be 0). */
POSH_EXTERN int posh_array_create(posh_heap_t *heap, const char *name,
                                  char typecode, size_t length, int with_lock,
                                  posh_obj_t **array_out);

/* The data: local address and size in bytes (any output may be NULL). */
POSH_EXTERN int posh_value_data(posh_obj_t *value, void **data_out,
                                size_t *size_out);
POSH_EXTERN int posh_array_data(posh_obj_t *array, void **data_out,
                                size_t *length_out, size_t *itemsize_out);

/* The following take a Value or an Array. */
/* Type code (e.g. 'd'). */
POSH_EXTERN int posh_value_typecode(posh_obj_t *obj, char *typecode_out);
/* 1 if created with a lock, 0 if not. */
POSH_EXTERN int posh_value_has_lock(posh_obj_t *obj);
/* Take the recursive lock (multiprocessing's default RLock).  timeout_ns:
 * <0 forever, 0 try (POSH_EAGAIN when held by another thread), >0 bounded
 * (POSH_ETIMEDOUT).  POSH_EOWNERDEAD: taken, but its previous holder died
 * while holding it, so the data may be half-updated (reported once; the
 * lock is usable as usual afterwards).  POSH_ENOSYS: created without a
 * lock.  POSH_EOVERFLOW: recursion too deep. */
POSH_EXTERN int posh_value_lock(posh_obj_t *obj, int64_t timeout_ns);
/* Release one level.  POSH_EPERM if the calling thread does not hold it. */
POSH_EXTERN int posh_value_unlock(posh_obj_t *obj);
/* Recursion depth held by the calling thread (0: not held). */
POSH_EXTERN int posh_value_lock_owned(posh_obj_t *obj);

/* Read / write a Value's whole scalar (itemsize bytes), under its lock if
 * it has one; without a lock the access is a single atomic load or store.
 * load returns POSH_EOWNERDEAD (after reading) when it took the lock from a
 * dead holder. */
POSH_EXTERN int posh_value_load(posh_obj_t *value, void *out);
POSH_EXTERN int posh_value_store(posh_obj_t *value, const void *in);
/* Atomic fetch-and-add (under the lock, or lock-free without one):
 * integer codes only for add_i64 (wrapping at the type's width; 'c' is
 * not a number: POSH_EINVAL), 'f'/'d' only for add_f64.  *result_out (may
 * be NULL) gets the new value. */
POSH_EXTERN int posh_value_add_i64(posh_obj_t *value, int64_t delta,
                                   int64_t *result_out);
POSH_EXTERN int posh_value_add_f64(posh_obj_t *value, double delta,
                                   double *result_out);

/* Copy items [start, start + count) of an Array out / in, under its lock
 * if it has one.  POSH_ERANGE when the range is outside the array. */
POSH_EXTERN int posh_array_read(posh_obj_t *array, size_t start, size_t count,
                                void *out);
POSH_EXTERN int posh_array_write(posh_obj_t *array, size_t start, size_t count,
                                 const void *in);

#ifdef __cplusplus
}
#endif

#endif /* POSH_VALUE_H */
