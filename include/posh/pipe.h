/* SPDX-License-Identifier: MIT */
/*
 * This file contains the public API of the Pipe object: a duplex or one-way
 * message channel between two endpoints (the C core of Python's
 * multiprocessing.Pipe / Connection).  Messages keep their boundaries and
 * may have any size; the reader gets POSH_ECLOSED ("EOF") once the peer
 * endpoint is gone (closed by every holder, or its holders died) and
 * nothing is left; each endpoint can expose a file descriptor that is
 * readable when recv would not block, for select/poll/epoll and asyncio.
 * See docs/objects/pipe.md.
 */
#ifndef POSH_PIPE_H
#define POSH_PIPE_H

#include "posh/object.h"

#ifdef __cplusplus
extern "C" {
#endif

/* posh_pipe_flags bits. */
#define POSH_PIPE_READABLE 1u /* the endpoint can recv */
#define POSH_PIPE_WRITABLE 2u /* the endpoint can send */

/* Ring bytes per direction of posh_pipe_create. */
#define POSH_PIPE_DEFAULT_RING (64u << 10)

/* Create a pipe: two endpoint objects (type POSH_OBJ_PIPE) sharing one
 * channel object.  duplex != 0: both ends send and receive; duplex == 0:
 * end0 only receives and end1 only sends (multiprocessing.Pipe(False)
 * returns (reader, writer)).  Each endpoint counts its own references;
 * bind a name or pass a posh_obj_ref_t to reach it from another process. */
POSH_EXTERN int posh_pipe_create(posh_heap_t *heap, int duplex,
                                 posh_obj_t **end0, posh_obj_t **end1);
/* The same with ring_bytes of buffer per direction (0: the default;
 * rounded up to a power of two between 4 KiB and 1 GiB).  Messages larger
 * than the ring stream through it. */
POSH_EXTERN int posh_pipe_create_sized(posh_heap_t *heap, int duplex,
                                       size_t ring_bytes, posh_obj_t **end0,
                                       posh_obj_t **end1);

/* Send one message of len bytes (len may be 0).  Timeouts in ns: < 0
 * forever, 0 non-blocking (POSH_EAGAIN unless the whole message fits
 * now), > 0 bounded (POSH_ETIMEDOUT).  POSH_ECLOSED when the peer is gone,
 * POSH_EPERM on the read-only end of a one-way pipe.  When it returns an
 * error nothing of the message is ever delivered. */
POSH_EXTERN int posh_pipe_send(posh_obj_t *end, const void *buf, size_t len,
                               int64_t timeout_ns);
/* Receive one message into buf (cap bytes); *len_out gets its length.
 * POSH_EMSGSIZE when it is longer than cap: *len_out gets the length and
 * the message stays in the pipe.  POSH_ECLOSED (EOF) when the peer is gone
 * and no message is left; POSH_EAGAIN / POSH_ETIMEDOUT as send;
 * POSH_EPERM on the write-only end. */
POSH_EXTERN int posh_pipe_recv(posh_obj_t *end, void *buf, size_t cap,
                               size_t *len_out, int64_t timeout_ns);
/* Receive one message into a malloc()'d buffer of its size (*buf_out; the
 * caller frees it with free(); a 0-byte message still gets a buffer). */
POSH_EXTERN int posh_pipe_recv_alloc(posh_obj_t *end, void **buf_out,
                                     size_t *len_out, int64_t timeout_ns);
/* Wait until a message is waiting or the peer is gone (EOF): 1, or 0 when
 * the timeout passed (timeout 0 just looks).  Negative POSH_E* on error. */
POSH_EXTERN int posh_pipe_poll(posh_obj_t *end, int64_t timeout_ns);
/* A file descriptor (eventfd, owned by the handle, closed by
 * posh_pipe_close) that is readable while posh_pipe_poll would return 1.
 * Do not read it: only wait on it.  Created on first call (with a small
 * watcher thread per handle).  Never readable on the write-only end. */
POSH_EXTERN int posh_pipe_fileno(posh_obj_t *end, int *fd_out);
/* POSH_PIPE_READABLE / POSH_PIPE_WRITABLE of the endpoint. */
POSH_EXTERN int posh_pipe_flags(posh_obj_t *end, unsigned *flags_out);
/* Close the handle (posh_obj_close).  When the endpoint's last reference
 * goes, the peer gets EOF once it has drained the pipe. */
POSH_EXTERN int posh_pipe_close(posh_obj_t *end);

#ifdef __cplusplus
}
#endif

#endif /* POSH_PIPE_H */
