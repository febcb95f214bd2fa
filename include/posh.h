/* SPDX-License-Identifier: MIT */
/*
 * This file contains the public API of libposh: shared heaps that several
 * processes map at once, the multi-process allocator that serves them, the
 * named-object directory, statistics and the consistency check.  Objects built
 * on the heap (sync primitives, queues, containers) have their own headers
 * under include/posh/ and are included from here.
 *
 * Conventions: functions return 0 or a negative POSH_E* code (never errno);
 * allocation functions return NULL and leave the code in posh_last_error().
 * Objects built on the heap have their own headers (posh/sync.h, ...),
 * included at the end of this file.
 */
#ifndef POSH_H
#define POSH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(POSH_BUILDING_LIBRARY)
#define POSH_EXTERN __attribute__((visibility("default")))
#else
#define POSH_EXTERN
#endif

#define POSH_VERSION_MAJOR 0
#define POSH_VERSION_MINOR 1
#define POSH_VERSION_PATCH 0

/* ---------------------------------------------------------------------------
 * Error codes.  One table generates the codes, posh_strerror and
 * posh_err_name.  Codes that mirror an errno value use its negation, so
 * callers that think in errno terms are not surprised.
 * ------------------------------------------------------------------------- */
#define POSH_ERRNO_MAP(X)                                                      \
  X(EPERM, -1, "operation not permitted (not the owner)")                      \
  X(ENOENT, -2, "no such heap or name")                                        \
  X(EINTR, -4, "interrupted")                                                  \
  X(EIO, -5, "I/O or system call failure")                                     \
  X(EAGAIN, -11, "resource temporarily unavailable (would block)")             \
  X(ENOMEM, -12, "out of memory: the heap is exhausted")                       \
  X(EACCES, -13, "permission denied")                                          \
  X(EFAULT, -14, "pointer does not belong to this heap")                       \
  X(EBUSY, -16, "resource busy")                                               \
  X(EEXIST, -17, "already exists")                                             \
  X(EINVAL, -22, "invalid argument")                                           \
  X(ENOSPC, -28, "no space left in a fixed-size table")                        \
  X(ERANGE, -34, "value out of range")                                         \
  X(ENAMETOOLONG, -36, "name too long")                                        \
  X(ENOSYS, -38, "not supported on this system")                               \
  X(EOVERFLOW, -75, "value would overflow its bound")                          \
  X(ETIMEDOUT, -110, "timed out")                                              \
  X(EOWNERDEAD, -130, "previous owner died; protected state may be "          \
                      "inconsistent")                                          \
  X(ENOTRECOVERABLE, -131, "state not recoverable (owner died, not made "      \
                           "consistent)")                                      \
  X(ENOTHEAP, -1001, "not a libposh heap (bad magic or truncated)")            \
  X(EVERSION, -1002, "libposh heap of an incompatible ABI version")            \
  X(ECORRUPT, -1003, "heap corruption detected (checksum or invariant)")       \
  X(EDOUBLEFREE, -1004, "double free detected")                                \
  X(ETYPE, -1005, "object handle has the wrong type")                          \
  X(ECLOSED, -1006, "object is closed")                                        \
  X(EBROKEN, -1007, "barrier is broken")                                       \
  X(EDETACHED, -1008, "heap handle is detached")                              \
  X(ESTALE, -1009, "stale object reference: the object no longer exists")     \
  X(EMSGSIZE, -1010, "message larger than the buffer or the object's bound")

enum posh_errno {
  POSH_OK = 0,
#define POSH__ERR_ENUM(name, value, text) POSH_##name = (value),
  POSH_ERRNO_MAP(POSH__ERR_ENUM)
#undef POSH__ERR_ENUM
};

/* Human-readable text and symbolic name ("POSH_ENOMEM") of a code. */
POSH_EXTERN const char *posh_strerror(int err);
POSH_EXTERN const char *posh_err_name(int err);

/* Code of the last failed allocation call (posh_alloc & co.) in this thread. */
POSH_EXTERN int posh_last_error(void);

/* ---------------------------------------------------------------------------
 * Offsets.  Inside a heap, memory refers to memory by offset from the heap's
 * base, never by pointer, because each process may map the heap at another
 * address.  posh_off_t is a one-field struct so it cannot be mixed with
 * integers by accident.  Offset 0 is the null offset (the heap header lives
 * there, so no object can have it).
 * ------------------------------------------------------------------------- */
typedef struct posh_off {
  uint64_t v;
} posh_off_t;

#define POSH_OFF_NULL ((posh_off_t){0})

typedef struct posh_heap posh_heap_t;

/* The first member of every posh_heap_t; lets the converters be inline. */
struct posh__heap_view {
  unsigned char *base;
  uint64_t capacity;
};

static inline int posh_off_is_null(posh_off_t off) { return off.v == 0; }

/* Offset -> local pointer.  NULL for the null offset. */
static inline void *posh_ptr(const posh_heap_t *heap, posh_off_t off) {
  const struct posh__heap_view *view = (const struct posh__heap_view *)heap;
  return off.v ? (void *)(view->base + off.v) : NULL;
}

/* Local pointer into the heap -> offset.  The null offset for NULL and for a
 * pointer outside the heap (check with posh_heap_contains first when the
 * pointer's origin is not known). */
static inline posh_off_t posh_off(const posh_heap_t *heap, const void *ptr) {
  const struct posh__heap_view *view = (const struct posh__heap_view *)heap;
  const unsigned char *p = (const unsigned char *)ptr;
  posh_off_t off = {0};
  if (p > view->base && p < view->base + view->capacity)
    off.v = (uint64_t)(p - view->base);
  return off;
}

static inline int posh_heap_contains(const posh_heap_t *heap, const void *ptr) {
  const struct posh__heap_view *view = (const struct posh__heap_view *)heap;
  const unsigned char *p = (const unsigned char *)ptr;
  return p > view->base && p < view->base + view->capacity;
}

/* ---------------------------------------------------------------------------
 * Heaps.
 * ------------------------------------------------------------------------- */
#define POSH_NAME_MAX 63          /* longest heap or object name, bytes */
#define POSH_DEFAULT_CAPACITY (1ull << 30) /* 1 GiB, reserved sparsely */
#define POSH_MIN_CAPACITY (4ull << 20)

/* Heap creation flags. */
enum posh_heap_flags {
  /* Named heaps only: the last process to detach unlinks the name, so the
   * memory goes back to the system once every process is gone. */
  POSH_HEAP_UNLINK_ON_LAST_DETACH = 1u << 0,
};

typedef struct posh_heap_options {
  uint64_t capacity;      /* bytes reserved; 0 = POSH_DEFAULT_CAPACITY */
  uint32_t max_processes; /* registry slots (processes + threads); 0 = 1024 */
  uint32_t max_names;     /* directory entries; 0 = 4096 */
  uint32_t flags;         /* enum posh_heap_flags */
  uint32_t mode;          /* file mode of a named heap; 0 = 0600 */
} posh_heap_options_t;

/* Create a heap.  name is "/something" or "something" (no other '/'; with
 * its leading '/' at most POSH_NAME_MAX bytes; letters, digits, '.', '_'
 * and '-') for a named heap (shm_open, O_EXCL: POSH_EEXIST if it
 * exists), or NULL for an anonymous heap (memfd) that forked children share
 * and that other processes can attach through posh_heap_fd.  opts may be
 * NULL. */
POSH_EXTERN int posh_heap_create(const char *name,
                                 const posh_heap_options_t *opts,
                                 posh_heap_t **heap_out);

/* Attach to an existing named heap.  Validates magic, ABI version, size and
 * checksum: POSH_ENOTHEAP, POSH_EVERSION or POSH_ECORRUPT otherwise. */
POSH_EXTERN int posh_heap_attach(const char *name, posh_heap_t **heap_out);

/* Attach through a file descriptor of a heap (the fd is duplicated; the
 * caller keeps its own).  Works for named and anonymous heaps. */
POSH_EXTERN int posh_heap_attach_fd(int fd, posh_heap_t **heap_out);

/* Attach to the heap that process pid holds open as fd (an anonymous heap of
 * an unrelated process of the same user, through /proc/pid/fd/fd). */
POSH_EXTERN int posh_heap_attach_pid_fd(pid_t pid, int fd,
                                        posh_heap_t **heap_out);

/* Detach: leave the registry, unmap, close.  Memory allocated by this process
 * stays allocated (other processes may hold it).  The handle is freed. */
POSH_EXTERN int posh_heap_detach(posh_heap_t *heap);

/* Remove a heap's name.  Processes attached keep using it; the memory is
 * freed when the last one detaches. */
POSH_EXTERN int posh_heap_unlink(const char *name);

typedef struct posh_heap_info {
  uint32_t abi_version;    /* of the heap's layout */
  uint32_t flags;          /* enum posh_heap_flags given at creation */
  uint64_t capacity;       /* bytes reserved */
  uint64_t page_size;      /* allocator page (64 KiB) */
  uint64_t pages;          /* allocatable pages */
  uint64_t data_offset;    /* offset of the first page (after metadata) */
  uint32_t max_processes;  /* registry slots */
  uint32_t max_names;      /* directory entries */
  uint64_t create_time_ns; /* CLOCK_MONOTONIC at creation */
  uint32_t attached;       /* processes attached (dead ones until reaped) */
  uint64_t checksum;       /* XXH3 of the immutable header */
} posh_heap_info_t;

/* The heap's header, as validated at attach. */
POSH_EXTERN int posh_heap_info(posh_heap_t *heap, posh_heap_info_t *info);

/* Name ("/x") of a named heap, NULL for an anonymous one. */
POSH_EXTERN const char *posh_heap_name(const posh_heap_t *heap);
/* The heap's file descriptor (owned by the handle; do not close). */
POSH_EXTERN int posh_heap_fd(const posh_heap_t *heap);
POSH_EXTERN uint64_t posh_heap_capacity(const posh_heap_t *heap);
/* This process's registry slot in the heap (>= 0), or a negative code. */
POSH_EXTERN int posh_heap_self_slot(posh_heap_t *heap);

/* ---------------------------------------------------------------------------
 * Allocation.  Every attached process and thread may call these at once.
 * Blocks are 16-byte aligned.  Failures return NULL and set
 * posh_last_error(): POSH_ENOMEM (exhausted, or larger than the heap),
 * POSH_EINVAL (bad argument, e.g. calloc's count * size overflows),
 * POSH_EFAULT (realloc of a pointer that is not a live block).
 * ------------------------------------------------------------------------- */
POSH_EXTERN void *posh_alloc(posh_heap_t *heap, size_t size);
POSH_EXTERN void *posh_calloc(posh_heap_t *heap, size_t count, size_t size);
POSH_EXTERN void *posh_realloc(posh_heap_t *heap, void *ptr, size_t size);
/* alignment: a power of two (any up to the heap's page size, 64 KiB). */
POSH_EXTERN void *posh_aligned_alloc(posh_heap_t *heap, size_t alignment,
                                     size_t size);
/* Free a block.  NULL is a no-op (returns 0).  Returns POSH_EFAULT for a
 * pointer that is not the start of a live block of this heap,
 * POSH_EDOUBLEFREE for a detected double free and POSH_ECORRUPT when the
 * descriptor of the block's page is damaged; the heap is left unchanged in
 * these cases. */
POSH_EXTERN int posh_free(posh_heap_t *heap, void *ptr);
/* Usable bytes of a live block, 0 for an invalid pointer. */
POSH_EXTERN size_t posh_usable_size(posh_heap_t *heap, const void *ptr);

/* Offset flavours, for code that stores offsets. */
POSH_EXTERN posh_off_t posh_alloc_off(posh_heap_t *heap, size_t size);
POSH_EXTERN int posh_free_off(posh_heap_t *heap, posh_off_t off);

/* State of the block at ptr, as the allocator sees it. */
enum posh_block_state {
  POSH_BLOCK_INVALID = 0, /* not the start of a block of this heap */
  POSH_BLOCK_FREE = 1,
  POSH_BLOCK_ALLOCATED = 2,
};
POSH_EXTERN int posh_block_state(posh_heap_t *heap, const void *ptr);

/* ---------------------------------------------------------------------------
 * Process registry.
 * ------------------------------------------------------------------------- */
enum posh_process_state {
  POSH_PROC_FREE = 0,
  POSH_PROC_LIVE = 1,
  POSH_PROC_DEAD = 2, /* found dead, not yet reclaimed */
};

typedef struct posh_process_info {
  uint32_t slot;
  uint32_t state;      /* enum posh_process_state */
  int32_t pid;
  uint64_t start_time; /* in clock ticks since boot, from /proc */
  uint32_t threads;    /* allocating threads registered under it */
  int is_self;
} posh_process_info_t;

/* List the processes attached to the heap (live ones and dead ones not yet
 * reclaimed).  Fills at most max entries; *count gets the total. */
POSH_EXTERN int posh_heap_processes(posh_heap_t *heap, posh_process_info_t *out,
                                    size_t max, size_t *count);

/* Find registered processes that died without detaching and reclaim their
 * slots (their pages become adoptable, their locks report owner death).
 * *reaped (may be NULL) gets how many were reclaimed. */
POSH_EXTERN int posh_heap_reap(posh_heap_t *heap, unsigned *reaped);

/* ---------------------------------------------------------------------------
 * Named-object directory: name -> (offset, type tag).
 * ------------------------------------------------------------------------- */
/* POSH_EEXIST if bound, POSH_ENAMETOOLONG, POSH_ENOSPC when full. */
POSH_EXTERN int posh_name_bind(posh_heap_t *heap, const char *name,
                               posh_off_t off, uint32_t type_tag);
/* POSH_ENOENT if not bound.  tag_out may be NULL. */
POSH_EXTERN int posh_name_lookup(posh_heap_t *heap, const char *name,
                                 posh_off_t *off_out, uint32_t *tag_out);
/* Unbind; if expect_off is not null, only when bound to that offset
 * (POSH_EBUSY otherwise). */
POSH_EXTERN int posh_name_unbind(posh_heap_t *heap, const char *name,
                                 posh_off_t expect_off);

typedef int (*posh_name_visit_fn)(const char *name, posh_off_t off,
                                  uint32_t type_tag, void *arg);
/* Call visit for every bound name (a snapshot per entry; names bound or
 * unbound during the walk may or may not be seen).  A non-zero return from
 * visit stops the walk and is returned. */
POSH_EXTERN int posh_name_foreach(posh_heap_t *heap, posh_name_visit_fn visit,
                                  void *arg);

/* ---------------------------------------------------------------------------
 * Statistics and consistency check.
 * ------------------------------------------------------------------------- */
#define POSH_SIZE_CLASS_MAX 48

typedef struct posh_class_stats {
  uint32_t block_size;
  uint32_t pages;
  uint64_t blocks_in_use;
  uint64_t blocks_free;
} posh_class_stats_t;

typedef struct posh_heap_stats {
  uint64_t capacity;      /* bytes reserved */
  uint64_t page_size;     /* allocator page (64 KiB) */
  uint64_t pages_total;   /* allocatable pages */
  uint64_t pages_free;
  uint64_t pages_small;   /* pages carved into size classes */
  uint64_t pages_large;   /* pages in large runs */
  uint64_t bytes_in_use;  /* live blocks, rounded to their size class */
  uint64_t bytes_free;    /* free pages + free blocks in class pages */
  uint64_t bytes_metadata;/* header, registry, directory, page table */
  uint32_t processes;     /* live registered processes */
  uint32_t names;         /* bound directory names */
  uint32_t size_classes;  /* entries used in classes[] */
  posh_class_stats_t classes[POSH_SIZE_CLASS_MAX];
} posh_heap_stats_t;

/* A snapshot: exact when no other process is allocating. */
POSH_EXTERN int posh_heap_stats(posh_heap_t *heap, posh_heap_stats_t *stats);

/* Full consistency check of header, registry, directory, page table and
 * every free list.  Returns 0 or POSH_ECORRUPT and, when report is not NULL,
 * writes a description of the first problems found.  Exact when no other
 * process is allocating; otherwise it checks what is stable. */
POSH_EXTERN int posh_heap_check(posh_heap_t *heap, char *report,
                                size_t report_len);

#ifdef __cplusplus
}
#endif

#include "posh/sync.h"
#include "posh/object.h"
#include "posh/queue.h"
#include "posh/pipe.h"
#include "posh/dict.h"
#include "posh/list.h"
#include "posh/value.h"

#endif /* POSH_H */
