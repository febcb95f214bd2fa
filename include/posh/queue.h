/* SPDX-License-Identifier: MIT */
/*
 * This file contains the public API of libposh's Queue (and JoinableQueue):
 * a multi-producer, multi-consumer FIFO of variable-size byte messages in a
 * shared heap, usable at once by every process attached to the heap, and
 * safe against the death (kill -9) of any of them in the middle of any
 * operation.  docs/objects/queue.md has the guarantees and the design.
 *
 * Conventions:
 *  - A queue is a shared object (posh/object.h): create returns a handle;
 *    other processes open it by name (posh_obj_open(heap, name,
 *    POSH_OBJ_QUEUE, &q)) or by reference (posh_obj_open_ref) and close it
 *    with posh_obj_close.
 *  - Functions return 0 (or a documented non-negative value) or a negative
 *    POSH_E* code.  A NULL handle is POSH_EINVAL, a handle of another object
 *    type POSH_ETYPE.
 *  - timeout_ns: < 0 (POSH_FOREVER) waits without limit, 0 never blocks
 *    (POSH_EAGAIN when the call would block), > 0 waits at most that long
 *    (POSH_ETIMEDOUT).
 *  - Messages are FIFO per producer thread; messages of different
 *    producers interleave in the order their puts took a slot.
 *  - Messages up to posh_queue_info().inline_max bytes are copied into the
 *    ring (no allocation); larger ones travel in one heap block each
 *    (copied once in and once out, or handed over without copying with
 *    posh_queue_put_block / posh_queue_get_msg).
 */
#ifndef POSH_QUEUE_H
#define POSH_QUEUE_H

#include <sys/uio.h>

#include "posh.h"
#include "posh/object.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Creation flags. */
enum posh_queue_flags {
  /* JoinableQueue: puts count unfinished tasks, posh_queue_task_done and
   * posh_queue_join are available. */
  POSH_QUEUE_JOINABLE = 1u << 0,
};

#define POSH_QUEUE_DEFAULT_CAPACITY 4096u /* slots */
#define POSH_QUEUE_MAX_CAPACITY (1u << 24)
#define POSH_QUEUE_DEFAULT_SLOT 128u /* bytes per slot */

typedef struct posh_queue_options {
  /* Ring slots: a power of two from 2 to POSH_QUEUE_MAX_CAPACITY, or 0 for
   * POSH_QUEUE_DEFAULT_CAPACITY.  A put blocks when the ring is full, so
   * an "unbounded" queue is bounded by its capacity. */
  uint32_t capacity;
  uint32_t flags; /* enum posh_queue_flags */
  /* Most messages queued at once (0: capacity; at most capacity).  Exact. */
  uint64_t max_messages;
  /* Most payload bytes queued at once (0: no byte bound).  A message
   * larger than the bound is refused (POSH_EMSGSIZE).  Exact with one
   * producer; concurrent producers may overshoot it by the messages they
   * are putting at that moment. */
  uint64_t max_bytes;
  /* Bytes per ring slot: 64, 128 or 256, or 0 for POSH_QUEUE_DEFAULT_SLOT.
   * A slot carries up to slot_size - 16 payload bytes inline. */
  uint32_t slot_size;
  uint32_t reserved; /* 0 */
} posh_queue_options_t;

typedef struct posh_queue_info {
  uint32_t capacity; /* ring slots */
  uint32_t flags;    /* enum posh_queue_flags */
  uint64_t max_messages;
  uint64_t max_bytes; /* 0: none */
  uint32_t slot_size;
  uint32_t inline_max; /* largest message carried inline in a slot */
} posh_queue_info_t;

/* A received message (posh_queue_get_msg).  data/len describe it; data
 * points into the inline buffer for small messages and into a heap block
 * for large ones.  Release it with posh_queue_msg_release. */
typedef struct posh_queue_msg {
  void *data;
  size_t len;
  void *block; /* heap block owned by this message, or NULL (internal) */
  uint64_t reserved;
  unsigned char inline_buf[256];
} posh_queue_msg_t;

/* Create a queue (opts may be NULL: defaults); bind it to name if not NULL
 * (POSH_EEXIST when taken). */
POSH_EXTERN int posh_queue_create(posh_heap_t *heap, const char *name,
                                  const posh_queue_options_t *opts,
                                  posh_obj_t **q_out);
POSH_EXTERN int posh_queue_info(posh_obj_t *q, posh_queue_info_t *info);

/* Put one message of len bytes (msg may be NULL when len is 0).
 * POSH_ECLOSED (closed), POSH_EMSGSIZE (larger than max_bytes),
 * POSH_ENOMEM (a large message's block cannot be allocated), POSH_EAGAIN /
 * POSH_ETIMEDOUT (full). */
POSH_EXTERN int posh_queue_put(posh_obj_t *q, const void *msg, size_t len,
                               int64_t timeout_ns);
/* Zero-copy put: block (from posh_alloc on the queue's heap, at least len
 * bytes) becomes the queue's on success; on failure it stays the caller's.
 * POSH_EFAULT when block is not a live block of the heap. */
POSH_EXTERN int posh_queue_put_block(posh_obj_t *q, void *block, size_t len,
                                     int64_t timeout_ns);
/* Put the n messages of msgs in order; *done (may be NULL) gets how many
 * were put (all of them when 0 is returned).  The timeout covers the
 * whole call. */
POSH_EXTERN int posh_queue_put_many(posh_obj_t *q, const struct iovec *msgs,
                                    size_t n, size_t *done, int64_t timeout_ns);

/* Get one message into buf (cap bytes); *len_out gets its length.  When it
 * does not fit: POSH_EMSGSIZE, *len_out = its length, and the message stays
 * queued.  POSH_ECLOSED once the queue is closed and drained; POSH_EAGAIN /
 * POSH_ETIMEDOUT when empty. */
POSH_EXTERN int posh_queue_get(posh_obj_t *q, void *buf, size_t cap,
                               size_t *len_out, int64_t timeout_ns);
/* Get one message of any size without copying a large one (see
 * posh_queue_msg_t); release it with posh_queue_msg_release. */
POSH_EXTERN int posh_queue_get_msg(posh_obj_t *q, posh_queue_msg_t *m,
                                   int64_t timeout_ns);
/* Give a get_msg message's block back (m is emptied; an empty m is a
 * no-op).  POSH_EINVAL when m is not a message get_msg of this queue handed
 * out (made up, damaged, another queue's, or released already), POSH_EFAULT
 * when its block is not a live heap block: nothing is taken back then. */
POSH_EXTERN int posh_queue_msg_release(posh_obj_t *q, posh_queue_msg_t *m);
/* Get up to n messages: waits (timeout) for the first, then takes those
 * that are there without waiting.  bufs[i] is the buffer of message i;
 * lens[i] gets its length.  *done gets the number taken.  Stops early at a
 * message that does not fit its buffer (POSH_EMSGSIZE when it is the
 * first, with lens[0] = its length). */
POSH_EXTERN int posh_queue_get_many(posh_obj_t *q, const struct iovec *bufs,
                                    size_t *lens, size_t n, size_t *done,
                                    int64_t timeout_ns);

/* Messages queued (a snapshot; includes puts in progress). */
POSH_EXTERN int posh_queue_qsize(posh_obj_t *q, uint64_t *n_out);
/* 1 if empty / full, 0 if not, or a negative code. */
POSH_EXTERN int posh_queue_empty(posh_obj_t *q);
POSH_EXTERN int posh_queue_full(posh_obj_t *q);

/* Close: later puts fail with POSH_ECLOSED, gets drain what is queued and
 * then fail with POSH_ECLOSED; blocked callers wake up.  Idempotent. */
POSH_EXTERN int posh_queue_close(posh_obj_t *q);
/* 1 if closed, 0 if not, or a negative code. */
POSH_EXTERN int posh_queue_closed(posh_obj_t *q);

/* JoinableQueue only (POSH_ETYPE otherwise). */
/* One task taken from the queue is finished.  POSH_ERANGE when called more
 * times than messages were put. */
POSH_EXTERN int posh_queue_task_done(posh_obj_t *q);
/* Wait until every message put has been task_done'd. */
POSH_EXTERN int posh_queue_join(posh_obj_t *q, int64_t timeout_ns);
/* Unfinished tasks (a snapshot). */
POSH_EXTERN int posh_queue_unfinished(posh_obj_t *q, uint64_t *n_out);

#ifdef __cplusplus
}
#endif

#endif /* POSH_QUEUE_H */
