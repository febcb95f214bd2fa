/* SPDX-License-Identifier: MIT */
/*
 * This file contains the heap segment's life cycle: name validation, layout
 * and header of a new heap, validation on attach, detach and unlink, the
 * per-thread state (registry slot and allocator caches) and fork handling.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

/* ------------------------------------------------------------------------
 * Process-wide state: the list of attached handles (for fork) and the
 * thread-exit hook.  Protected by handles_lock (process-private).
 * ---------------------------------------------------------------------- */
static pthread_mutex_t handles_lock = PTHREAD_MUTEX_INITIALIZER;
static posh_heap_t *handles;      /* handles_lock */
static uint32_t next_heap_id = 1; /* handles_lock */
static pthread_once_t process_once = PTHREAD_ONCE_INIT;
static pthread_key_t tld_key;

POSH_TLS posh__tld_t *posh__tld_cache;
static POSH_TLS posh__tld_t *tld_list; /* this thread's per-heap states */

static void thread_exit(void *arg);
static void atfork_prepare(void) { pthread_mutex_lock(&handles_lock); }
static void atfork_parent(void) { pthread_mutex_unlock(&handles_lock); }
static void atfork_child(void);

static void process_init(void) {
  pthread_key_create(&tld_key, thread_exit);
  pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* ------------------------------------------------------------------------
 * Names: "/name" or "name", 1..POSH_NAME_MAX bytes in all, portable
 * filename characters only.  Stored with the leading '/'.
 * ---------------------------------------------------------------------- */
static int normalize_name(const char *name, char out[POSH_NAME_MAX + 2]) {
  if (!name)
    return POSH_EINVAL;
  const char *p = name[0] == '/' ? name + 1 : name;
  size_t len = strnlen(p, POSH_NAME_MAX + 1);
  if (len == 0)
    return POSH_EINVAL;
  if (len + 1 > POSH_NAME_MAX)
    return POSH_ENAMETOOLONG;
  if (!strcmp(p, ".") || !strcmp(p, ".."))
    return POSH_EINVAL;
  for (size_t i = 0; i < len; i++) {
    char c = p[i];
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
             (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok)
      return POSH_EINVAL;
  }
  out[0] = '/';
  memcpy(out + 1, p, len + 1);
  return 0;
}

uint64_t posh__header_checksum(const posh__hdr_t *hdr) {
  return XXH3_64bits(hdr, offsetof(posh__hdr_t, checksum));
}

/* ------------------------------------------------------------------------
 * Layout of a new heap.
 * ---------------------------------------------------------------------- */
void posh__compute_layout(posh__hdr_t *h) {
  uint64_t off = POSH_HEADER_SIZE;
  h->registry_off = off;
  off += (uint64_t)h->max_slots * sizeof(posh__slot_t);
  off = posh__align_up(off, POSH_CACHELINE);
  h->directory_off = off;
  off += (uint64_t)h->max_names * sizeof(posh__dirent_t);
  off = posh__align_up(off, POSH_CACHELINE);
  uint64_t est = h->capacity >> POSH_PAGE_SHIFT; /* upper bound on pages */
  h->pagetab_off = off;
  off += est * sizeof(posh__page_t);
  h->freemap_off = off;
  off += ((est + 63) / 64) * 8;
  h->data_off = posh__align_up(off, POSH_PAGE_SIZE);
  h->npages = h->data_off >= h->capacity
                  ? 0
                  : (h->capacity - h->data_off) >> POSH_PAGE_SHIFT;
}

/* Fill in a handle from a mapped, validated header. */
static void handle_bind(posh_heap_t *heap, void *base, int fd) {
  posh__hdr_t *h = base;
  heap->view.base = base;
  heap->view.capacity = h->capacity;
  heap->hdr = h;
  heap->slots = (posh__slot_t *)((unsigned char *)base + h->registry_off);
  heap->dir = (posh__dirent_t *)((unsigned char *)base + h->directory_off);
  heap->pages = (posh__page_t *)((unsigned char *)base + h->pagetab_off);
  heap->freemap = (uint64_t *)((unsigned char *)base + h->freemap_off);
  heap->data = (unsigned char *)base + h->data_off;
  heap->npages = h->npages;
  heap->map_size = h->capacity;
  heap->fd = fd;
}

static int handle_register(posh_heap_t *heap) {
  pthread_once(&process_once, process_init);
  heap->proc_pid = posh__prim_getpid();
  int r = posh__prim_proc_start_time(heap->proc_pid, &heap->proc_start);
  if (r)
    return r;
  r = posh__registry_register_process(heap);
  if (r)
    return r;
  posh__heap_update_ready(heap);
  pthread_mutex_lock(&handles_lock);
  heap->id = next_heap_id++;
  heap->next = handles;
  handles = heap;
  pthread_mutex_unlock(&handles_lock);
  return 0;
}

POSH_EXTERN int posh_heap_create(const char *name,
                                 const posh_heap_options_t *opts,
                                 posh_heap_t **heap_out) {
  posh_heap_options_t o = {0};
  char norm[POSH_NAME_MAX + 2] = {0};
  int r, fd = -1, created_name = 0;
  void *base = NULL;
  posh_heap_t *heap = NULL;

  if (!heap_out)
    return POSH_EINVAL;
  *heap_out = NULL;
  if (opts)
    o = *opts;
  if (name && (r = normalize_name(name, norm)))
    return r;
  if (o.capacity == 0)
    o.capacity = POSH_DEFAULT_CAPACITY;
  if (o.capacity < POSH_MIN_CAPACITY || o.capacity > (1ull << 46))
    return POSH_EINVAL;
  o.capacity = posh__align_up(o.capacity, POSH_PAGE_SIZE);
  if (o.max_processes == 0)
    o.max_processes = POSH_DEFAULT_SLOTS;
  if (o.max_processes < 2 || o.max_processes > POSH_MAX_SLOTS)
    return POSH_EINVAL;
  if (o.max_names == 0)
    o.max_names = POSH_DEFAULT_NAMES;
  if (o.max_names > POSH_MAX_NAMES)
    return POSH_EINVAL;
  if (o.flags & ~(uint32_t)POSH_HEAP_UNLINK_ON_LAST_DETACH)
    return POSH_EINVAL;
  if (o.mode == 0)
    o.mode = 0600;
  if (o.mode & ~0777u)
    return POSH_EINVAL;

  posh__hdr_t layout = {0};
  layout.capacity = o.capacity;
  layout.max_slots = o.max_processes;
  layout.max_names = o.max_names;
  posh__compute_layout(&layout);
  if (layout.npages < POSH_MIN_DATA_PAGES)
    return POSH_EINVAL; /* metadata would leave too little room */

  heap = calloc(1, sizeof *heap);
  if (!heap)
    return POSH_ENOMEM;
  heap->fd = -1;
  if (name) {
    if ((r = posh__prim_shm_create(norm, o.mode, &fd)))
      goto err;
    created_name = 1;
  } else if ((r = posh__prim_memfd_create("posh-heap", &fd))) {
    goto err;
  }
  /* Sparse: tmpfs allocates pages only when first touched. */
  if ((r = posh__prim_truncate(fd, o.capacity)))
    goto err;
  if ((r = posh__prim_map(fd, o.capacity, POSH_PAGE_SIZE, &base)))
    goto err;

  posh__hdr_t *h = base;
  *h = layout;
  h->magic = 0; /* published last */
  h->abi_version = POSH_ABI_VERSION;
  h->header_size = POSH_HEADER_SIZE;
  h->flags = o.flags;
  h->page_shift = POSH_PAGE_SHIFT;
  h->create_time_ns = posh__prim_now_ns();
  if (name)
    memcpy(h->name, norm, strlen(norm) + 1);
  handle_bind(heap, base, fd);
  posh__lock_init(&h->page_lock);
  posh__lock_init(&h->dir_lock);
  posh__lock_init(&h->obj_lock);
  posh__registry_init(heap);
  if ((r = posh__directory_init(heap)))
    goto err;
  posh__pages_init(heap);
  /* The checksum covers the immutable part with magic already set, so
   * compute it as attachers will see it, then publish magic. */
  h->magic = POSH_MAGIC;
  h->checksum = posh__header_checksum(h);
  h->magic = 0;
  /* Release-store of magic: pairs with the acquire-load in attach, so an
   * attacher that sees the magic sees the whole initialised header. */
  posh_atomic_store_release((posh_atomic_t *)&h->magic, POSH_MAGIC);

  if (name) {
    memcpy(heap->name, norm, strlen(norm) + 1);
    heap->named = 1;
  }
  if ((r = handle_register(heap)))
    goto err;
  *heap_out = heap;
  return 0;

err:
  if (base)
    posh__prim_unmap(base, o.capacity);
  if (fd >= 0)
    close(fd);
  if (created_name)
    posh__prim_shm_unlink(norm);
  free(heap);
  return r;
}

/* Read and validate the header of the segment behind fd. */
static int validate_header(int fd, posh__hdr_t *out) {
  uint64_t size;
  int r = posh__prim_fd_size(fd, &size);
  if (r)
    return r;
  if (size < POSH_HEADER_SIZE)
    return POSH_ENOTHEAP;
  /* A creator publishes magic last; give one that is still initialising a
   * moment (bounded), then decide. */
  for (int tries = 0;; tries++) {
    ssize_t n = pread(fd, out, sizeof *out, 0);
    if (n != (ssize_t)sizeof *out)
      return POSH_ENOTHEAP;
    if (out->magic == POSH_MAGIC)
      break;
    if (out->magic != 0 || tries >= 100)
      return POSH_ENOTHEAP;
    usleep(10000);
  }
  if (out->abi_version != POSH_ABI_VERSION)
    return POSH_EVERSION;
  if (posh__header_checksum(out) != out->checksum)
    return POSH_ECORRUPT;
  if (out->capacity != size)
    return POSH_ENOTHEAP; /* truncated (or grown) behind our back */
  posh__hdr_t expect = {0};
  expect.capacity = out->capacity;
  expect.max_slots = out->max_slots;
  expect.max_names = out->max_names;
  if (out->header_size != POSH_HEADER_SIZE ||
      out->page_shift != POSH_PAGE_SHIFT || out->max_slots < 2 ||
      out->max_slots > POSH_MAX_SLOTS || out->max_names > POSH_MAX_NAMES ||
      out->capacity < POSH_MIN_CAPACITY || out->capacity > (1ull << 46) ||
      out->capacity % POSH_PAGE_SIZE)
    return POSH_ECORRUPT;
  posh__compute_layout(&expect);
  if (expect.registry_off != out->registry_off ||
      expect.directory_off != out->directory_off ||
      expect.pagetab_off != out->pagetab_off ||
      expect.freemap_off != out->freemap_off ||
      expect.data_off != out->data_off || expect.npages != out->npages)
    return POSH_ECORRUPT;
  /* The same floor as creation: a layout whose tables leave no room for
   * data pages (or run past the end) cannot be a heap we made. */
  if (out->npages < POSH_MIN_DATA_PAGES ||
      out->data_off + (out->npages << POSH_PAGE_SHIFT) > out->capacity)
    return POSH_ECORRUPT;
  return 0;
}

static int attach_fd_owned(int fd, const char *norm, posh_heap_t **heap_out) {
  posh__hdr_t hdr;
  void *base = NULL;
  int r;
  posh_heap_t *heap = calloc(1, sizeof *heap);
  if (!heap) {
    close(fd);
    return POSH_ENOMEM;
  }
  if ((r = validate_header(fd, &hdr)))
    goto err;
  if ((r = posh__prim_map(fd, hdr.capacity, POSH_PAGE_SIZE, &base)))
    goto err;
  handle_bind(heap, base, fd);
  if (hdr.name[0] || norm) {
    const char *nm = norm ? norm : hdr.name;
    memcpy(heap->name, nm, strnlen(nm, POSH_NAME_MAX) + 1);
    heap->name[POSH_NAME_MAX] = '\0';
    heap->named = 1;
  }
  if ((r = handle_register(heap)))
    goto err;
  /* A newcomer cleans up after processes that died without detaching. */
  posh_heap_reap(heap, NULL);
  *heap_out = heap;
  return 0;
err:
  if (base)
    posh__prim_unmap(base, hdr.capacity);
  close(fd);
  free(heap);
  return r;
}

POSH_EXTERN int posh_heap_attach(const char *name, posh_heap_t **heap_out) {
  char norm[POSH_NAME_MAX + 2];
  int fd, r;
  if (!heap_out)
    return POSH_EINVAL;
  *heap_out = NULL;
  if ((r = normalize_name(name, norm)))
    return r;
  if ((r = posh__prim_shm_open(norm, &fd)))
    return r;
  return attach_fd_owned(fd, norm, heap_out);
}

POSH_EXTERN int posh_heap_attach_fd(int fd, posh_heap_t **heap_out) {
  if (!heap_out || fd < 0)
    return POSH_EINVAL;
  *heap_out = NULL;
  int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (nfd < 0)
    return errno == EBADF ? POSH_EINVAL : POSH_EIO;
  return attach_fd_owned(nfd, NULL, heap_out);
}

POSH_EXTERN int posh_heap_attach_pid_fd(pid_t pid, int fd,
                                        posh_heap_t **heap_out) {
  if (!heap_out || pid <= 0 || fd < 0)
    return POSH_EINVAL;
  *heap_out = NULL;
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)pid, fd);
  int nfd = open(path, O_RDWR | O_CLOEXEC);
  if (nfd < 0)
    return errno == ENOENT ? POSH_ENOENT
           : errno == EACCES || errno == EPERM ? POSH_EACCES
                                               : POSH_EIO;
  return attach_fd_owned(nfd, NULL, heap_out);
}

/* Drop this thread's state for heap (the thread slot is released by
 * unregister_process, which covers every thread of the process). */
static void forget_tld(posh_heap_t *heap) {
  posh__tld_t **pp = &tld_list;
  while (*pp) {
    posh__tld_t *t = *pp;
    if (t->heap == heap && t->heap_id == heap->id) {
      *pp = t->next;
      free(t);
    } else {
      pp = &t->next;
    }
  }
  posh__tld_cache = NULL;
}

/* 1 if name still refers to the segment behind our fd (it may have been
 * unlinked and re-created by someone else since). */
static int name_is_ours(posh_heap_t *heap) {
  int fd;
  if (posh__prim_shm_open(heap->name, &fd) != 0)
    return 0;
  struct stat a, b;
  int same = fstat(fd, &a) == 0 && fstat(heap->fd, &b) == 0 &&
             a.st_dev == b.st_dev && a.st_ino == b.st_ino;
  close(fd);
  return same;
}

POSH_EXTERN int posh_heap_detach(posh_heap_t *heap) {
  if (!heap)
    return POSH_EINVAL;
  /* First: a pipe handle's watcher thread left running would go on using
   * the heap (it reaps, it reads the ring) after it is unmapped. */
  posh__objects_heap_detaching(heap);
  int was_registered = !heap->detached && posh__heap_registered(heap);
  pthread_mutex_lock(&handles_lock);
  for (posh_heap_t **pp = &handles; *pp; pp = &(*pp)->next)
    if (*pp == heap) {
      *pp = heap->next;
      break;
    }
  pthread_mutex_unlock(&handles_lock);

  forget_tld(heap);
  posh__objects_forget_heap(heap);
  posh__hdr_t *h = heap->hdr;
  if (was_registered) {
    /* Processes killed while attached would keep the count above zero:
     * reap them first when the count decides the heap's name. */
    if (heap->named && (h->flags & POSH_HEAP_UNLINK_ON_LAST_DETACH))
      posh_heap_reap(heap, NULL);
    /* Our object references go with us (handles still open are the
     * caller's leak; their memory is freed with the hold records). */
    posh__objects_drop_slot(heap, heap->proc_slot);
    posh__registry_unregister_process(heap);
    /* The count is of the registry's live process slots (ours is released
     * now): a count kept apart from the slots went wrong when a process
     * died between claiming its slot and counting itself. */
    if (heap->named && (h->flags & POSH_HEAP_UNLINK_ON_LAST_DETACH) &&
        posh__registry_count_processes(heap) == 0 &&
        posh_atomic_cas_bool_full(&h->xunlinked, 0, 1) && name_is_ours(heap))
      posh__prim_shm_unlink(heap->name);
  }
  heap->detached = 1;
  posh__prim_unmap(heap->view.base, heap->map_size);
  close(heap->fd);
  free(heap);
  return 0;
}

POSH_EXTERN int posh_heap_unlink(const char *name) {
  char norm[POSH_NAME_MAX + 2];
  int r = normalize_name(name, norm);
  if (r)
    return r;
  return posh__prim_shm_unlink(norm);
}

POSH_EXTERN int posh_heap_info(posh_heap_t *heap, posh_heap_info_t *info) {
  if (!heap || !info)
    return POSH_EINVAL;
  if (heap->detached)
    return POSH_EDETACHED;
  const posh__hdr_t *h = heap->hdr;
  memset(info, 0, sizeof *info);
  info->abi_version = h->abi_version;
  info->flags = h->flags;
  info->capacity = h->capacity;
  info->page_size = POSH_PAGE_SIZE;
  info->pages = h->npages;
  info->data_offset = h->data_off;
  info->max_processes = h->max_slots;
  info->max_names = h->max_names;
  info->create_time_ns = h->create_time_ns;
  info->attached = posh__registry_count_processes(heap);
  info->checksum = h->checksum;
  return 0;
}

POSH_EXTERN const char *posh_heap_name(const posh_heap_t *heap) {
  return heap && heap->named ? heap->name : NULL;
}
POSH_EXTERN int posh_heap_fd(const posh_heap_t *heap) {
  return heap ? heap->fd : POSH_EINVAL;
}
POSH_EXTERN uint64_t posh_heap_capacity(const posh_heap_t *heap) {
  return heap ? heap->view.capacity : 0;
}
POSH_EXTERN int posh_heap_self_slot(posh_heap_t *heap) {
  if (!heap)
    return POSH_EINVAL;
  if (heap->detached)
    return POSH_EDETACHED;
  int r = posh__heap_ensure_registered(heap);
  return r ? r : (int)heap->proc_slot;
}

/* ------------------------------------------------------------------------
 * Per-thread state.
 * ---------------------------------------------------------------------- */
posh__tld_t *posh__tld_get_slow(posh_heap_t *heap, int *err) {
  if (!heap || heap->detached) {
    *err = heap ? POSH_EDETACHED : POSH_EINVAL;
    return NULL;
  }
  for (posh__tld_t *t = tld_list; t; t = t->next)
    if (t->heap == heap && t->heap_id == heap->id) {
      posh__tld_cache = t;
      return t;
    }
  if (posh_unlikely(!posh__heap_registered(heap))) {
    int r = posh__heap_ensure_registered(heap);
    if (r) {
      *err = r;
      return NULL;
    }
  }
  posh__tld_t *t = calloc(1, sizeof *t);
  if (!t) {
    *err = POSH_ENOMEM;
    return NULL;
  }
  int r = posh__registry_claim_thread(heap, &t->slot, &t->token);
  if (r) {
    free(t);
    *err = r;
    return NULL;
  }
  t->heap = heap;
  t->heap_id = heap->id;
  t->pid = heap->proc_pid;
  t->next = tld_list;
  tld_list = t;
  posh__tld_cache = t;
  /* Register the thread-exit hook (value just has to be non-NULL). */
  pthread_setspecific(tld_key, t);
  return t;
}

uint32_t posh__self_token(posh_heap_t *heap, int *err) {
  posh__tld_t *t = posh__tld_get(heap, err);
  return t ? t->token : 0;
}

/* A thread that used heaps exits: give its pages up for adoption and its
 * slots back.  Handles detached meanwhile are skipped. */
static void thread_exit(void *arg) {
  (void)arg;
  pthread_mutex_lock(&handles_lock);
  posh__tld_t *t = tld_list;
  while (t) {
    posh__tld_t *next = t->next;
    for (posh_heap_t *h = handles; h; h = h->next)
      if (h == t->heap && h->id == t->heap_id) {
        posh__alloc_thread_exit(t);
        posh__registry_release_thread(h, t->slot, t->token);
        break;
      }
    free(t);
    t = next;
  }
  tld_list = NULL;
  posh__tld_cache = NULL;
  pthread_mutex_unlock(&handles_lock);
}

/* In a forked child: every inherited handle registers the child as a new
 * process; the parent's thread state (its slots, its pages) stays the
 * parent's. */
static void atfork_child(void) {
  /* atfork_prepare locked it in the thread that forked: the child's one
   * thread, so it may unlock it (re-initialising a locked mutex is
   * undefined). */
  pthread_mutex_unlock(&handles_lock);
  posh__tld_t *t = tld_list;
  while (t) {
    posh__tld_t *next = t->next;
    free(t);
    t = next;
  }
  tld_list = NULL;
  posh__tld_cache = NULL;
  for (posh_heap_t *h = handles; h; h = h->next) {
    h->proc_pid = posh__prim_getpid();
    h->proc_start = 0; /* matches no slot until we register */
    posh_atomic32_store_relaxed(&h->xneeds_register, 1); /* one thread now */
    posh__heap_update_ready(h);
  }
}

int posh__heap_ensure_registered(posh_heap_t *heap) {
  int r = 0;
  pthread_mutex_lock(&handles_lock);
  if (!posh__heap_registered(heap)) {
    r = posh__prim_proc_start_time(heap->proc_pid, &heap->proc_start);
    if (r == 0)
      r = posh__registry_register_process(heap);
    if (r == 0) { /* release: publishes proc_slot, proc_token, proc_start */
      posh_atomic32_store_release(&heap->xneeds_register, 0);
      posh__heap_update_ready(heap);
    } else
      heap->proc_start = 0;
  }
  pthread_mutex_unlock(&handles_lock);
  return r;
}
