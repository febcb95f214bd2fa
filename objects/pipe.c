/* SPDX-License-Identifier: MIT */
/*
 * This file contains the Pipe object: two endpoint objects (POSH_OBJ_PIPE)
 * that share one core object (POSH_OBJ_PIPE_CORE) holding one channel per
 * direction.  A channel is a byte ring of frames {16-byte header, bytes};
 * a message is one frame or, when larger than the ring, a stream of
 * frames (FIRST ... LAST) that the receiver consumes while the sender
 * writes.  The eventfd of posh_pipe_fileno is fed by a watcher thread of
 * the handle.
 *
 * Death safety rests on three facts.  (1) A sender writes a frame past the
 * committed tail and publishes it with one release-store of the tail, so a
 * frame is either wholly visible or not at all.  (2) Both indices carry a
 * "mid-message" bit (bit 0; positions are multiples of 16), changed in the
 * same store as the position, so the state of a stream never depends on two
 * stores.  (3) Senders never fill the last 16 bytes of the ring, so whoever
 * holds the send lock can always append an ABORT frame without waiting: the
 * next sender (EOWNERDEAD repair), or a receiver that finds the stream's
 * sender dead, ends a dead sender's stream that way, and the receiver drops
 * the partial message.  A receiver killed mid-stream leaves the head's bit
 * set; the next receiver discards up to the end of that message.
 * See docs/objects/pipe.md.
 */
#include "object_internal.h"
#include "sync_internal.h"
#include "posh/pipe.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* ------------------------------------------------------------------------
 * Shared layout.
 * ---------------------------------------------------------------------- */
#define FRAME_HDR 16u
#define F_FIRST 1u
#define F_LAST 2u
#define F_ABORT 4u
#define MID 1ull /* bit 0 of xtail / xhead: a stream is in progress */
#define RING_MIN (4ull << 10)
#define RING_MAX (1ull << 30)
#define REAP_PERIOD_NS (100ull * 1000 * 1000)

/* Header of each frame in the ring (16-byte aligned, never wraps). */
typedef struct frame_hdr {
  uint32_t len;   /* data bytes of this frame */
  uint32_t flags; /* F_FIRST | F_LAST | F_ABORT */
  uint64_t total; /* bytes of the whole message */
} frame_hdr_t;
_Static_assert(sizeof(frame_hdr_t) == FRAME_HDR, "frame header size");

/* One direction.
 * Invariants: head <= tail <= head + cap - 16 (positions without the MID
 * bit; the last 16 bytes are reserved for an ABORT frame); the bytes in
 * [head, tail) are whole committed frames, immutable until head passes
 * them; tail has MID set iff the last committed frame is a stream frame
 * without F_LAST; head has MID set iff the receivers are inside a message
 * (the next frame continues it). */
typedef struct pipe_chan {
  /* ---- sender side */
  /* Serialises senders for a whole message.  Synchronization: its own;
   * repair (send_repair) ends a dead holder's stream. */
  POSH_ALIGNED(64) posh__lockword_t send_lock;
  /* Committed write position | MID.  Synchronization: written (release)
   * only by the send_lock holder; read (acquire) by receivers. */
  posh_atomic_t xtail;
  /* Bumped after every commit and on close: receivers sleep on it.
   * Synchronization: atomic fetch-add. */
  posh_atomic32_t xdata_seq;
  /* Threads asleep on xdata_seq (a hint; a dead sleeper leaves it high,
   * costing a spurious wake syscall).  Atomic fetch-add. */
  posh_atomic32_t xdata_sleepers;
  /* Adaptive spin of receivers (posh__sync_wait).  Relaxed. */
  posh_atomic32_t xrecv_spin;
  /* ---- receiver side */
  /* Serialises receivers for a whole message.  Synchronization: its own
   * (no repair needed: the head's MID bit records a dead holder's state). */
  POSH_ALIGNED(64) posh__lockword_t recv_lock;
  /* Consumed position | MID.  Synchronization: written (release) only by
   * the recv_lock holder; read (acquire) by senders and pollers. */
  posh_atomic_t xhead;
  /* Bumped after every consume and on close: senders waiting for space
   * (and watchers of a readable ring) sleep on it.  Atomic fetch-add. */
  posh_atomic32_t xspace_seq;
  posh_atomic32_t xspace_sleepers; /* as xdata_sleepers */
  posh_atomic32_t xsend_spin;      /* adaptive spin of senders.  Relaxed. */
  /* ---- immutable */
  POSH_ALIGNED(64) uint64_t ring_off; /* the ring block */
  uint64_t cap;                       /* ring bytes, a power of two */
} pipe_chan_t;

/* The channels of one pipe.  Invariant: xclosed[s] is set once endpoint s
 * has been finalized and never cleared.  Freed when both endpoints are
 * gone (each holds an inner reference). */
typedef struct pipe_core {
  posh__obj_hdr_t hdr;
  uint32_t duplex; /* immutable */
  uint32_t pad;
  /* Endpoint s is gone.  Synchronization: exchange (full barrier) by its
   * finalize; acquire loads by the peer. */
  posh_atomic32_t xclosed[2];
  POSH_ALIGNED(64) pipe_chan_t chan[2]; /* chan[s]: what endpoint s receives */
} pipe_core_t;

/* One endpoint.  Holds an inner reference on the core. */
typedef struct pipe_end {
  posh__obj_hdr_t hdr;
  uint64_t core_off; /* immutable (0 only before creation finished) */
  uint32_t side;     /* 0 or 1; immutable */
  uint32_t duplex;   /* immutable */
} pipe_end_t;

/* Process-local state of a handle: the eventfd and its watcher. */
typedef struct pipe_local {
  pthread_mutex_t mu;
  pid_t pid;     /* process that made this state (fork check) */
  int efd;       /* mu: -1 until fileno */
  int signaled;  /* mu: efd's counter is non-zero */
  int running;   /* mu: watcher thread started */
  /* Set by local_close to stop the watcher.  Synchronization: exchange
   * (full barrier) / acquire load. */
  posh_atomic32_t xstop;
  /* The watcher and what it watches: written under mu before the watcher
   * starts, immutable while it runs. */
  pthread_t th;
  posh_heap_t *heap;
  pipe_core_t *core;
  uint32_t side;
  uint32_t can_recv;
  struct pipe_local *wnext; /* watchers_lock: list of running watchers */
} pipe_local_t;

/* Every handle of this process whose watcher runs, so that detaching a heap
 * stops the watchers of handles left open on it (posh__pipe_heap_detaching)
 * before the heap is unmapped.  Emptied in a forked child, which has no
 * watcher threads. */
static pthread_mutex_t watchers_lock = PTHREAD_MUTEX_INITIALIZER;
static pipe_local_t *watchers; /* watchers_lock */

/* ------------------------------------------------------------------------
 * Helpers.
 * ---------------------------------------------------------------------- */
/* This process's pid without a syscall per recv (glibc no longer caches
 * getpid): reset in every forked child by an atfork handler. */
static pid_t cached_pid;
static pthread_once_t pid_once = PTHREAD_ONCE_INIT;
/* Serialises the re-initialisation of inherited handle state in a forked
 * child (posh_pipe_fileno); re-initialised in the child itself. */
static pthread_mutex_t refork_lock = PTHREAD_MUTEX_INITIALIZER;
static void pid_forget(void) {
  cached_pid = 0;
  pthread_mutex_init(&refork_lock, NULL);
  watchers = NULL; /* the parent's threads do not exist here */
  pthread_mutex_unlock(&watchers_lock); /* locked in fork_prepare */
}
/* Taken across fork so the child's copy of the list is whole. */
static void fork_prepare(void) { pthread_mutex_lock(&watchers_lock); }
static void fork_parent(void) { pthread_mutex_unlock(&watchers_lock); }
static void pid_init(void) { pthread_atfork(fork_prepare, fork_parent, pid_forget); }
static pid_t self_pid(void) {
  pthread_once(&pid_once, pid_init);
  if (posh_unlikely(cached_pid == 0))
    cached_pid = getpid();
  return cached_pid;
}

static uint64_t align16(uint64_t n) { return (n + 15) & ~15ull; }

static pipe_chan_t *recv_chan(pipe_core_t *c, uint32_t side) {
  return (c->duplex || side == 0) ? &c->chan[side] : NULL;
}
static pipe_chan_t *send_chan(pipe_core_t *c, uint32_t side) {
  return (c->duplex || side == 1) ? &c->chan[c->duplex ? 1 - side : 0] : NULL;
}

static void ring_put(unsigned char *ring, uint64_t cap, uint64_t pos,
                     const void *src, size_t n) {
  if (n == 0)
    return;
  uint64_t off = pos & (cap - 1);
  size_t first = (size_t)(cap - off) < n ? (size_t)(cap - off) : n;
  memcpy(ring + off, src, first);
  if (n > first)
    memcpy(ring, (const unsigned char *)src + first, n - first);
}

static void ring_get(const unsigned char *ring, uint64_t cap, uint64_t pos,
                     void *dst, size_t n) {
  if (n == 0)
    return;
  uint64_t off = pos & (cap - 1);
  size_t first = (size_t)(cap - off) < n ? (size_t)(cap - off) : n;
  memcpy(dst, ring + off, first);
  if (n > first)
    memcpy((unsigned char *)dst + first, ring, n - first);
}

/* Bump a sequence word and wake its sleepers.  The full-barrier add pairs
 * with the sleeper's full-barrier increment of *sleepers before the
 * kernel's compare (see posh__sync_wait). */
static void notify(posh_atomic32_t *seq, posh_atomic32_t *sleepers) {
  posh_atomic32_fetch_add_full(seq, 1);
  if (posh_atomic32_load_relaxed(sleepers))
    posh__futex_wake(seq, INT_MAX);
}

/* Liveness backstop of a wait, and of a call about to report "nothing
 * yet" (a zero timeout, or a deadline that passed): drop the references of
 * dead processes (which finalizes an endpoint nobody alive holds: its peer
 * gets EOF), at most once per REAP_PERIOD_NS per thread.  Returns 1 when it
 * reaped, so the caller looks at the pipe's state again.  Without the
 * second use a caller that only polls with short timeouts never saw its
 * dead peer's EOF. */
static int backstop_reap(posh_heap_t *heap) {
  static POSH_TLS uint64_t last;
  uint64_t now = posh__prim_now_ns();
  if (now - last < REAP_PERIOD_NS)
    return 0;
  last = now;
  posh_heap_reap(heap, NULL);
  return 1;
}

/* Append an ABORT frame at tail position t (send_lock held; the reserve
 * guarantees its room) and commit it with MID clear. */
static void write_abort(posh_heap_t *heap, pipe_chan_t *ch, uint64_t t) {
  frame_hdr_t h = {0, F_ABORT, 0};
  ring_put(posh__at(heap, ch->ring_off), ch->cap, t, &h, sizeof h);
  /* Release: the frame's bytes before the tail that publishes them (pairs
   * with the receivers' acquire-load of xtail). */
  posh_atomic_store_release(&ch->xtail, t + FRAME_HDR);
  notify(&ch->xdata_seq, &ch->xdata_sleepers);
}

/* Repair of send_lock (its holder died) and end of a stream whose sender
 * gave up: a stream left open gets an ABORT frame.  Idempotent. */
static void send_repair(posh_heap_t *heap, void *arg) {
  pipe_chan_t *ch = arg;
  /* Relaxed: we hold send_lock, the only writer of xtail. */
  uint64_t t = posh_atomic_load_relaxed(&ch->xtail);
  if (t & MID)
    write_abort(heap, ch, t & ~MID);
}

/* A receiver inside a stream that stopped moving: if the stream's sender
 * is dead (or gone without ending it), end the stream for it. */
static void rescue_stream(posh_heap_t *heap, pipe_chan_t *ch, uint32_t tok) {
  /* Deadline 1 (long past): a try-lock, which takes the lock from a dead
   * owner (EOWNERDEAD -> send_repair) and fails if a live one holds it. */
  if (posh__sync_lock_internal(heap, &ch->send_lock, tok, 1, send_repair,
                               ch) == 0) {
    send_repair(heap, ch); /* free lock but an open stream: end it */
    posh__lock_release(&ch->send_lock, tok);
  }
}

static int chan_readable(pipe_core_t *c, pipe_chan_t *ch, uint32_t side) {
  /* Acquire loads: pair with the release-stores of the indices, so a
   * reader that then takes recv_lock sees the frames. */
  uint64_t h = posh_atomic_load_acquire(&ch->xhead) & ~MID;
  uint64_t t = posh_atomic_load_acquire(&ch->xtail) & ~MID;
  return h != t || posh_atomic32_load_acquire(&c->xclosed[1 - side]) != 0;
}

struct ctx {
  posh_heap_t *heap;
  pipe_end_t *end;
  pipe_core_t *core;
  uint32_t side;
  uint32_t token;
};

/* The core an endpoint names, or NULL when the endpoint's fields or the
 * core's rings do not lie inside the heap as creation left them: a stray
 * write by a faulty process gives POSH_ECORRUPT, not ring accesses outside
 * the heap.  (A few compares per call: the rings' offsets and sizes are
 * immutable once the core is published.) */
static pipe_core_t *core_of(posh_heap_t *heap, const pipe_end_t *e) {
  uint64_t off = e->core_off, hcap = heap->view.capacity;
  if (e->side > 1 || off < heap->hdr->data_off || (off & 63) != 0 ||
      off > hcap - sizeof(pipe_core_t))
    return NULL;
  pipe_core_t *c = posh__at(heap, off);
  if (c->duplex > 1)
    return NULL;
  for (int i = 0; i < (c->duplex ? 2 : 1); i++) {
    const pipe_chan_t *ch = &c->chan[i];
    if (ch->cap < RING_MIN || ch->cap > RING_MAX || (ch->cap & (ch->cap - 1)) ||
        ch->ring_off < heap->hdr->data_off || ch->ring_off > hcap ||
        ch->cap > hcap - ch->ring_off)
      return NULL;
  }
  return c;
}

static int get_end(posh_obj_t *o, struct ctx *c, int need_token) {
  void *shared;
  int r = posh__obj_get(o, POSH_OBJ_PIPE, &shared);
  if (r)
    return r;
  c->heap = o->heap;
  c->end = shared;
  c->core = core_of(o->heap, c->end);
  c->side = c->end->side;
  if (!c->core)
    return POSH_ECORRUPT;
  c->token = 0;
  if (need_token) {
    int err = 0;
    c->token = posh__obj_token(o, &err);
    if (!c->token)
      return err ? err : POSH_EAGAIN;
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * Types.
 * ---------------------------------------------------------------------- */
static void core_finalize(posh_heap_t *heap, posh__obj_hdr_t *obj) {
  pipe_core_t *c = (pipe_core_t *)obj;
  for (int i = 0; i < 2; i++)
    if (c->chan[i].ring_off)
      posh_free(heap, posh__at(heap, c->chan[i].ring_off));
}

static void end_finalize(posh_heap_t *heap, posh__obj_hdr_t *obj) {
  pipe_end_t *e = (pipe_end_t *)obj;
  pipe_core_t *c = core_of(heap, e);
  if (!c)
    return; /* unfinished (core_off 0) or damaged: nothing to tell */
  /* Full barrier: everything this endpoint committed is visible before
   * the flag (pairs with the peer's acquire-load of xclosed). */
  posh_atomic32_exchange_full(&c->xclosed[e->side], 1);
  pipe_chan_t *rc = recv_chan(c, e->side), *sc = send_chan(c, e->side);
  if (rc) /* its senders: ECLOSED */
    notify(&rc->xspace_seq, &rc->xspace_sleepers);
  if (sc) /* its receivers: EOF once drained */
    notify(&sc->xdata_seq, &sc->xdata_sleepers);
  posh__obj_inner_ref(heap, &c->hdr, -1);
}

static int end_local_open(posh_obj_t *h) {
  pipe_local_t *l = calloc(1, sizeof *l);
  if (!l)
    return POSH_ENOMEM;
  pthread_mutex_init(&l->mu, NULL);
  l->pid = self_pid();
  l->efd = -1;
  h->local = l;
  return 0;
}

/* Take l off the list; 0 if it was not on it (a detach stopped it). */
static int watchers_remove(pipe_local_t *l) {
  int found = 0;
  pthread_mutex_lock(&watchers_lock);
  for (pipe_local_t **pp = &watchers; *pp; pp = &(*pp)->wnext)
    if (*pp == l) {
      *pp = l->wnext;
      found = 1;
      break;
    }
  pthread_mutex_unlock(&watchers_lock);
  return found;
}

/* Stop l's watcher and wait for it. */
static void watcher_stop(pipe_local_t *l) {
  /* Full barrier: pairs with the watcher's acquire-load of xstop; the
   * wakes below come after it. */
  posh_atomic32_exchange_full(&l->xstop, 1);
  pipe_chan_t *ch = recv_chan(l->core, l->side);
  /* Wake the watcher wherever it sleeps (others re-check and sleep). */
  posh__futex_wake(&ch->xdata_seq, INT_MAX);
  posh__futex_wake(&ch->xspace_seq, INT_MAX);
  pthread_join(l->th, NULL);
  pthread_mutex_lock(&l->mu);
  l->running = 0;
  pthread_mutex_unlock(&l->mu);
}

void posh__pipe_heap_detaching(posh_heap_t *heap) {
  pipe_local_t *mine = NULL;
  pthread_mutex_lock(&watchers_lock);
  for (pipe_local_t **pp = &watchers; *pp;) {
    pipe_local_t *l = *pp;
    if (l->heap == heap) {
      *pp = l->wnext;
      l->wnext = mine;
      mine = l;
    } else {
      pp = &l->wnext;
    }
  }
  pthread_mutex_unlock(&watchers_lock);
  while (mine) {
    pipe_local_t *next = mine->wnext;
    watcher_stop(mine);
    mine = next;
  }
}

static void end_local_close(posh_obj_t *h) {
  pipe_local_t *l = h->local;
  if (!l)
    return;
  h->local = NULL;
  if (l->pid != self_pid()) {
    /* Inherited through fork: no watcher runs here, the mutex may be in
     * any state; only our copy of the descriptor is ours. */
    if (l->efd >= 0)
      close(l->efd);
    free(l);
    return;
  }
  if (l->running && watchers_remove(l))
    watcher_stop(l);
  if (l->efd >= 0)
    close(l->efd);
  pthread_mutex_destroy(&l->mu);
  free(l);
}

const posh__obj_ops_t posh__pipe_ops = {"pipe", end_finalize, end_local_close,
                                        end_local_open};
const posh__obj_ops_t posh__pipe_core_ops = {"pipe-core", core_finalize, NULL,
                                             NULL};

/* ------------------------------------------------------------------------
 * The eventfd.
 * ---------------------------------------------------------------------- */
/* Make the eventfd's readability match `readable`.  l->mu held. */
static void set_signal(pipe_local_t *l, int readable) {
  if (readable && !l->signaled) {
    uint64_t one = 1;
    if (write(l->efd, &one, sizeof one) == (ssize_t)sizeof one)
      l->signaled = 1;
  } else if (!readable && l->signaled) {
    uint64_t v;
    if (read(l->efd, &v, sizeof v) == (ssize_t)sizeof v || errno == EAGAIN)
      l->signaled = 0;
  }
}

/* After a recv by this handle: drop the readiness now, not when the
 * watcher gets round to it, so the fd never promises a message that is
 * already gone. */
static void local_refresh(posh_obj_t *o, pipe_core_t *c, pipe_chan_t *ch,
                          uint32_t side) {
  pipe_local_t *l = o->local;
  if (!l || l->pid != self_pid())
    return;
  pthread_mutex_lock(&l->mu);
  if (l->efd >= 0 && l->running)
    set_signal(l, chan_readable(c, ch, side));
  pthread_mutex_unlock(&l->mu);
}

static void *watcher(void *arg) {
  pipe_local_t *l = arg;
  pipe_chan_t *ch = recv_chan(l->core, l->side);
  /* Acquire: pairs with local_close's exchange of xstop. */
  while (!posh_atomic32_load_acquire(&l->xstop)) {
    /* Read both words before the state (acquire: pairs with the
     * full-barrier bump in notify, which follows the index store), so a
     * change after this read makes the sleep below return at once. */
    uint32_t dseq = posh_atomic32_load_acquire(&ch->xdata_seq);
    uint32_t sseq = posh_atomic32_load_acquire(&ch->xspace_seq);
    pthread_mutex_lock(&l->mu);
    int rd = chan_readable(l->core, ch, l->side);
    set_signal(l, rd);
    pthread_mutex_unlock(&l->mu);
    int r;
    if (rd) /* readable until a receiver consumes */
      r = posh__sync_wait(&ch->xspace_seq, sseq, 0, NULL, &ch->xspace_sleepers, 1);
    else
      r = posh__sync_wait(&ch->xdata_seq, dseq, 0, NULL, &ch->xdata_sleepers, 1);
    if (r == POSH_EAGAIN && !rd)
      backstop_reap(l->heap);
  }
  return NULL;
}

POSH_EXTERN int posh_pipe_fileno(posh_obj_t *end, int *fd_out) {
  struct ctx c;
  int r = get_end(end, &c, 0);
  if (r)
    return r;
  if (!fd_out)
    return POSH_EINVAL;
  pipe_local_t *l = end->local;
  if (!l)
    return POSH_EINVAL;
  if (l->pid != self_pid()) {
    pthread_mutex_lock(&refork_lock);
    if (l->pid != self_pid()) {
      /* A forked child's inherited state: start afresh (the parent's
       * watcher does not exist here; its mutex may be in any state). */
      if (l->efd >= 0)
        close(l->efd);
      pthread_mutex_init(&l->mu, NULL);
      l->efd = -1;
      l->signaled = 0;
      l->running = 0;
      posh_atomic32_store_relaxed(&l->xstop, 0);
      l->pid = self_pid();
    }
    pthread_mutex_unlock(&refork_lock);
  }
  pthread_mutex_lock(&l->mu);
  if (l->efd < 0) {
    l->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (l->efd < 0) {
      r = errno == EMFILE || errno == ENFILE ? POSH_ENOSPC : POSH_EIO;
      goto out;
    }
    l->heap = c.heap;
    l->core = c.core;
    l->side = c.side;
    l->can_recv = recv_chan(c.core, c.side) != NULL;
    if (l->can_recv) {
      if (pthread_create(&l->th, NULL, watcher, l) != 0) {
        close(l->efd);
        l->efd = -1;
        r = POSH_ENOMEM;
        goto out;
      }
      l->running = 1;
      pthread_mutex_lock(&watchers_lock);
      l->wnext = watchers;
      watchers = l;
      pthread_mutex_unlock(&watchers_lock);
    }
  }
  *fd_out = l->efd;
out:
  pthread_mutex_unlock(&l->mu);
  return r;
}

/* ------------------------------------------------------------------------
 * Creation.
 * ---------------------------------------------------------------------- */
static int make_end(posh_heap_t *heap, pipe_core_t *core, uint32_t side,
                    posh_obj_t **out) {
  int err = 0;
  pipe_end_t *e = posh__obj_alloc(heap, POSH_OBJ_PIPE, 0, sizeof *e, 0, &err);
  if (!e)
    return err;
  e->side = side;
  e->duplex = core->duplex;
  if ((err = posh__obj_inner_ref(heap, &core->hdr, +1)) != 0) {
    posh__obj_discard(heap, e);
    return err;
  }
  e->core_off = posh__off_of(heap, core); /* finalize drops the reference */
  return posh__obj_publish(heap, e, NULL, out);
}

POSH_EXTERN int posh_pipe_create_sized(posh_heap_t *heap, int duplex,
                                       size_t ring_bytes, posh_obj_t **end0,
                                       posh_obj_t **end1) {
  if (!heap || !end0 || !end1)
    return POSH_EINVAL;
  uint64_t cap = ring_bytes ? ring_bytes : POSH_PIPE_DEFAULT_RING;
  if (cap > RING_MAX)
    return POSH_EINVAL;
  if (cap < RING_MIN)
    cap = RING_MIN;
  cap = 1ull << (64 - __builtin_clzll(cap - 1)); /* round up to a power of 2 */
  int err = 0;
  pipe_core_t *c =
      posh__obj_alloc(heap, POSH_OBJ_PIPE_CORE, 0, sizeof *c, 0, &err);
  if (!c)
    return err;
  c->duplex = duplex ? 1 : 0;
  for (uint32_t i = 0; i < (c->duplex ? 2u : 1u); i++) {
    pipe_chan_t *ch = &c->chan[i];
    posh__lock_init(&ch->send_lock);
    posh__lock_init(&ch->recv_lock);
    ch->cap = cap;
    void *ring = posh_aligned_alloc(heap, POSH_CACHELINE, (size_t)cap);
    if (!ring) {
      err = posh_last_error() ? posh_last_error() : POSH_ENOMEM;
      core_finalize(heap, &c->hdr);
      posh__obj_discard(heap, c);
      return err;
    }
    ch->ring_off = posh__off_of(heap, ring);
  }
  posh_obj_t *ch = NULL, *e0 = NULL, *e1 = NULL;
  int r = posh__obj_publish(heap, c, NULL, &ch);
  if (r)
    return r;
  if ((r = make_end(heap, c, 0, &e0)) == 0 &&
      (r = make_end(heap, c, 1, &e1)) != 0) {
    posh_obj_close(e0);
    e0 = NULL;
  }
  /* From here the endpoints' inner references keep the core alive. */
  posh_obj_close(ch);
  if (r)
    return r;
  *end0 = e0;
  *end1 = e1;
  return 0;
}

POSH_EXTERN int posh_pipe_create(posh_heap_t *heap, int duplex,
                                 posh_obj_t **end0, posh_obj_t **end1) {
  return posh_pipe_create_sized(heap, duplex, 0, end0, end1);
}

/* ------------------------------------------------------------------------
 * Send.
 * ---------------------------------------------------------------------- */
/* Wait until `want` bytes are free at tail t.  0 with *free_out, or
 * POSH_ECLOSED / POSH_ETIMEDOUT. */
static int wait_space(struct ctx *c, pipe_chan_t *ch, uint64_t t,
                      uint64_t want, uint64_t deadline, uint64_t *free_out) {
  for (;;) {
    /* Word before state (eventcount): acquire pairs with notify's
     * full-barrier bump after the receiver's head store. */
    uint32_t seq = posh_atomic32_load_acquire(&ch->xspace_seq);
    /* Acquire: pairs with the peer finalize's exchange of xclosed. */
    if (posh_atomic32_load_acquire(&c->core->xclosed[1 - c->side]))
      return POSH_ECLOSED;
    /* Acquire: pairs with the receiver's release-store of xhead, so its
     * reads of the bytes we are about to overwrite are done. */
    uint64_t h = posh_atomic_load_acquire(&ch->xhead) & ~MID;
    uint64_t free_ = ch->cap - (t - h);
    if (free_ >= want) {
      *free_out = free_;
      return 0;
    }
    int r = posh__sync_wait(&ch->xspace_seq, seq, deadline, &ch->xsend_spin,
                            &ch->xspace_sleepers, 1);
    if (r == POSH_ETIMEDOUT) {
      if (backstop_reap(c->heap) &&
          posh_atomic32_load_acquire(&c->core->xclosed[1 - c->side]))
        return POSH_ECLOSED; /* the receiver was dead: no room will come */
      return r;
    }
    if (r == POSH_EAGAIN)
      backstop_reap(c->heap);
  }
}

POSH_EXTERN int posh_pipe_send(posh_obj_t *end, const void *buf, size_t len,
                               int64_t timeout_ns) {
  struct ctx c;
  int r = get_end(end, &c, 1);
  if (r)
    return r;
  if (!buf && len)
    return POSH_EINVAL;
  pipe_chan_t *ch = send_chan(c.core, c.side);
  if (!ch)
    return POSH_EPERM;
  /* Acquire: pairs with the peer finalize's exchange of xclosed. */
  if (posh_atomic32_load_acquire(&c.core->xclosed[1 - c.side]))
    return POSH_ECLOSED;
  uint64_t deadline = posh__deadline_from_timeout(timeout_ns);
  r = posh__sync_lock_internal(c.heap, &ch->send_lock, c.token, deadline,
                               send_repair, ch);
  if (r)
    return r == POSH_ETIMEDOUT && timeout_ns == 0 ? POSH_EAGAIN : r;
  unsigned char *ring = posh__at(c.heap, ch->ring_off);
  const uint64_t cap = ch->cap, room = cap - 2 * FRAME_HDR;
  /* Relaxed: we hold send_lock, the only writer (repair cleared MID). */
  uint64_t t = posh_atomic_load_relaxed(&ch->xtail) & ~MID;
  const unsigned char *src = buf;
  size_t sent = 0;
  int first = 1;
  if (len > room && timeout_ns == 0) {
    r = POSH_EAGAIN; /* can never fit at once */
    goto out;
  }
  for (;;) {
    size_t rest = len - sent;
    /* A message that fits the ring goes in one frame; a larger one in
     * frames of at least a quarter ring (or its rest). */
    uint64_t need = len <= room ? align16(len)
                                : (rest < cap / 4 ? align16(rest) : cap / 4);
    uint64_t free_;
    r = wait_space(&c, ch, t, need + 2 * FRAME_HDR, deadline, &free_);
    if (r) {
      if (r == POSH_ETIMEDOUT && timeout_ns == 0)
        r = POSH_EAGAIN;
      if (!first) /* a stream started: end it so nothing partial shows */
        write_abort(c.heap, ch, t);
      goto out;
    }
    uint64_t fit = free_ - 2 * FRAME_HDR; /* a multiple of 16 */
    size_t chunk = rest <= fit ? rest : (size_t)fit;
    int last = chunk == rest;
    frame_hdr_t h = {(uint32_t)chunk,
                     (first ? F_FIRST : 0u) | (last ? F_LAST : 0u), len};
    ring_put(ring, cap, t, &h, sizeof h);
    if (chunk)
      ring_put(ring, cap, t + FRAME_HDR, src + sent, chunk);
    t += FRAME_HDR + align16(chunk);
    /* Release: the frame before the tail that commits it (pairs with the
     * receivers' acquire-load of xtail). */
    posh_atomic_store_release(&ch->xtail, t | (last ? 0 : MID));
    notify(&ch->xdata_seq, &ch->xdata_sleepers);
    sent += chunk;
    first = 0;
    if (last)
      break;
  }
  r = 0;
out:
  posh__lock_release(&ch->send_lock, c.token);
  return r;
}

/* ------------------------------------------------------------------------
 * Receive.
 * ---------------------------------------------------------------------- */
static int do_recv(posh_obj_t *end, void *buf, size_t cap, void **alloc_out,
                   size_t *len_out, int64_t timeout_ns) {
  struct ctx c;
  int r = get_end(end, &c, 1);
  if (r)
    return r;
  if (!len_out || (!buf && cap && !alloc_out))
    return POSH_EINVAL;
  pipe_chan_t *ch = recv_chan(c.core, c.side);
  if (!ch)
    return POSH_EPERM;
  uint64_t deadline = posh__deadline_from_timeout(timeout_ns);
  r = posh__sync_lock_internal(c.heap, &ch->recv_lock, c.token, deadline,
                               NULL, NULL);
  if (r)
    return r == POSH_ETIMEDOUT && timeout_ns == 0 ? POSH_EAGAIN : r;
  const unsigned char *ring = posh__at(c.heap, ch->ring_off);
  const uint64_t rcap = ch->cap;
  /* Relaxed: we hold recv_lock, the only writer of xhead.  MID set here
   * means a receiver died inside a message: discard its rest. */
  int discard = (posh_atomic_load_relaxed(&ch->xhead) & MID) != 0;
  int started = 0;
  size_t got = 0, total = 0;
  unsigned char *dst = buf, *mem = NULL;
  for (;;) {
    /* Word before state (eventcount): acquire pairs with notify's
     * full-barrier bump after the sender's tail store. */
    uint32_t seq = posh_atomic32_load_acquire(&ch->xdata_seq);
    uint64_t head = posh_atomic_load_relaxed(&ch->xhead) & ~MID;
    /* Acquire: pairs with the sender's release-store of xtail, so the
     * frames in [head, tail) are fully written. */
    uint64_t traw = posh_atomic_load_acquire(&ch->xtail), tail = traw & ~MID;
    if (head == tail) {
      int mid = started || discard;
      if (mid && !(traw & MID)) {
        /* Inside a message, all consumed, and no stream open: its end can
         * never come (cannot happen unless the ring was damaged).  Drop
         * the message rather than wait forever. */
        started = discard = 0;
        got = 0;
        free(mem);
        mem = NULL;
        dst = buf;
        posh_atomic_store_release(&ch->xhead, head); /* pairs as below */
        continue;
      }
      if (!mid) {
        /* Acquire: pairs with the peer's finalize; its commits came
         * before, so an empty ring after this load is final. */
        if (posh_atomic32_load_acquire(&c.core->xclosed[1 - c.side])) {
          if ((posh_atomic_load_acquire(&ch->xtail) & ~MID) == head) {
            r = POSH_ECLOSED;
            goto out;
          }
          continue;
        }
        if (timeout_ns == 0) {
          if (backstop_reap(c.heap))
            continue; /* a dead peer's end may be finalized now */
          r = POSH_EAGAIN;
          goto out;
        }
      }
      /* Inside a message the sender is streaming it: keep going whatever
       * the deadline (it ends, or aborts when the sender dies). */
      r = posh__sync_wait(&ch->xdata_seq, seq, mid ? 0 : deadline,
                          &ch->xrecv_spin, &ch->xdata_sleepers, 1);
      if (r == POSH_ETIMEDOUT) {
        if (backstop_reap(c.heap))
          continue; /* once more: EOF if the peer was dead */
        goto out;
      }
      if (r == POSH_EAGAIN) {
        if (mid)
          rescue_stream(c.heap, ch, c.token);
        else
          backstop_reap(c.heap);
      }
      continue;
    }
    frame_hdr_t h;
    ring_get(ring, rcap, head, &h, sizeof h);
    uint64_t next = head + FRAME_HDR + align16(h.len);
    if (next > tail || (h.flags & ~(F_FIRST | F_LAST | F_ABORT)) ||
        ((h.flags & F_ABORT) && h.len)) {
      r = POSH_ECORRUPT;
      goto out;
    }
    if (h.flags & F_ABORT) {
      /* The sender of the current message died or gave up: drop it. */
      started = 0;
      discard = 0;
      got = 0;
      free(mem);
      mem = NULL;
      dst = buf;
    } else if (discard) {
      if (h.flags & F_LAST)
        discard = 0;
    } else {
      if (!started) {
        if (!(h.flags & F_FIRST)) {
          r = POSH_ECORRUPT;
          goto out;
        }
        if (h.total > SIZE_MAX - 1) {
          r = POSH_ENOMEM;
          goto out;
        }
        total = (size_t)h.total;
        if (alloc_out) {
          mem = malloc(total ? total : 1);
          if (!mem) {
            r = POSH_ENOMEM;
            goto out;
          }
          dst = mem;
        } else if (total > cap) {
          *len_out = total; /* the message stays */
          r = POSH_EMSGSIZE;
          goto out;
        }
        started = 1;
      } else if (h.flags & F_FIRST) {
        r = POSH_ECORRUPT;
        goto out;
      }
      if (h.len > total - got || h.total != total) {
        r = POSH_ECORRUPT;
        goto out;
      }
      if (h.len)
        ring_get(ring, rcap, head + FRAME_HDR, dst + got, h.len);
      got += h.len;
    }
    int in_msg = started || discard;
    if ((h.flags & F_LAST) && started)
      in_msg = 0;
    /* Release: our reads of the frame are done before a sender may
     * overwrite it (pairs with the sender's acquire-load of xhead); the
     * MID bit goes in the same store. */
    posh_atomic_store_release(&ch->xhead, next | (in_msg ? MID : 0));
    notify(&ch->xspace_seq, &ch->xspace_sleepers);
    if (started && (h.flags & F_LAST)) {
      if (got != total) {
        r = POSH_ECORRUPT;
        goto out;
      }
      *len_out = got;
      if (alloc_out) {
        *alloc_out = mem;
        mem = NULL;
      }
      r = 0;
      break;
    }
  }
out:
  free(mem);
  posh__lock_release(&ch->recv_lock, c.token);
  if (r == POSH_ETIMEDOUT && timeout_ns == 0)
    r = POSH_EAGAIN;
  local_refresh(end, c.core, ch, c.side);
  return r;
}

POSH_EXTERN int posh_pipe_recv(posh_obj_t *end, void *buf, size_t cap,
                               size_t *len_out, int64_t timeout_ns) {
  return do_recv(end, buf, cap, NULL, len_out, timeout_ns);
}

POSH_EXTERN int posh_pipe_recv_alloc(posh_obj_t *end, void **buf_out,
                                     size_t *len_out, int64_t timeout_ns) {
  if (!buf_out)
    return POSH_EINVAL;
  return do_recv(end, NULL, 0, buf_out, len_out, timeout_ns);
}

/* ------------------------------------------------------------------------
 * Poll, flags, close.
 * ---------------------------------------------------------------------- */
POSH_EXTERN int posh_pipe_poll(posh_obj_t *end, int64_t timeout_ns) {
  struct ctx c;
  int r = get_end(end, &c, 0);
  if (r)
    return r;
  pipe_chan_t *ch = recv_chan(c.core, c.side);
  if (!ch)
    return POSH_EPERM;
  uint64_t deadline = posh__deadline_from_timeout(timeout_ns);
  for (;;) {
    /* Word before state: acquire pairs with notify's full-barrier bump. */
    uint32_t seq = posh_atomic32_load_acquire(&ch->xdata_seq);
    if (chan_readable(c.core, ch, c.side))
      return 1;
    if (timeout_ns == 0)
      return backstop_reap(c.heap) && chan_readable(c.core, ch, c.side);
    r = posh__sync_wait(&ch->xdata_seq, seq, deadline, &ch->xrecv_spin,
                        &ch->xdata_sleepers, 1);
    if (r == POSH_ETIMEDOUT)
      return backstop_reap(c.heap) && chan_readable(c.core, ch, c.side);
    if (r == POSH_EAGAIN)
      backstop_reap(c.heap);
    else if (r)
      return r;
  }
}

POSH_EXTERN int posh_pipe_flags(posh_obj_t *end, unsigned *flags_out) {
  struct ctx c;
  int r = get_end(end, &c, 0);
  if (r)
    return r;
  if (!flags_out)
    return POSH_EINVAL;
  *flags_out = (recv_chan(c.core, c.side) ? POSH_PIPE_READABLE : 0u) |
               (send_chan(c.core, c.side) ? POSH_PIPE_WRITABLE : 0u);
  return 0;
}

POSH_EXTERN int posh_pipe_close(posh_obj_t *end) {
  if (end && end->type != POSH_OBJ_PIPE)
    return POSH_ETYPE;
  return posh_obj_close(end);
}
