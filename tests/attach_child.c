/* SPDX-License-Identifier: MIT */
/*
 * This file contains attach_child, the unrelated process of the libposh
 * tests: it is exec'd (not forked), attaches to a heap by name, by an
 * inherited fd or through /proc/PID/fd, does one thing to it and exits with
 * a status the calling test checks.
 *
 *   attach_child [-a ADDR] HEAP MODE [ARGS...]
 *
 * HEAP is a heap name ("/x"), "fd:N" (posh_heap_attach_fd on inherited fd
 * N) or "pidfd:PID:FD" (posh_heap_attach_pid_fd).  With -a ADDR (hex) the
 * address ADDR is reserved first, so the heap cannot be mapped where the
 * caller has it.  Modes:
 *
 *   check                      posh_heap_check passes
 *   expect-err CODE            attaching fails with exactly CODE
 *   verify NAME SEED           object bound to NAME is intact
 *   rewrite NAME SEED NEWSEED  verify, then rewrite it with NEWSEED
 *   verify-off OFF SEED        object at offset OFF is intact
 *   list NAME COUNT            walk an offset-linked list of COUNT nodes
 *   free-offs OFF...           posh_free_off each block, then check
 *   free-named NAME            free every block of the tu_blocklist bound
 *                              to NAME (verifying contents), the list, and
 *                              unbind NAME
 *   alloc-publish NAME N SEED  allocate N blocks of assorted sizes with
 *                              contents, publish them as a tu_blocklist
 *                              bound to NAME, detach (blocks stay)
 *   alloc-free N SEED          allocate, verify and free N blocks, check
 *   hold                       write 'R' to stdout, wait for EOF on stdin,
 *                              then detach
 *
 * Exit status: 0 success; 2 usage; 3 attach failed; 4 name lookup failed;
 * 5 contents wrong; 6 free failed; 7 heap check failed; 8 allocation
 * failed; 9 heap mapped at the reserved address; 10 detach failed;
 * 11 expect-err got another code; 77 attach not permitted here (skip).
 */
#define TU_NO_CMOCKA
#include "testutil.h"

#include <inttypes.h>

enum {
  X_USAGE = 2,
  X_ATTACH = 3,
  X_LOOKUP = 4,
  X_CONTENT = 5,
  X_FREE = 6,
  X_CHECK = 7,
  X_ALLOC = 8,
  X_SAMEADDR = 9,
  X_DETACH = 10,
  X_EXPECT = 11,
  X_SKIP = 77,
};

static int usage(void) {
  fprintf(stderr, "usage: attach_child [-a ADDR] HEAP MODE [ARGS...]\n");
  return X_USAGE;
}

static uint64_t num(const char *s) { return strtoull(s, NULL, 0); }

static int attach(const char *spec, posh_heap_t **heap) {
  if (!strncmp(spec, "fd:", 3))
    return posh_heap_attach_fd((int)num(spec + 3), heap);
  if (!strncmp(spec, "pidfd:", 6)) {
    char *end;
    long pid = strtol(spec + 6, &end, 10);
    if (*end != ':')
      return POSH_EINVAL;
    return posh_heap_attach_pid_fd((pid_t)pid, (int)num(end + 1), heap);
  }
  return posh_heap_attach(spec, heap);
}

static int check(posh_heap_t *heap) {
  char report[2048];
  int r = posh_heap_check(heap, report, sizeof report);
  if (r) {
    fprintf(stderr, "attach_child: check: %s\n%s", posh_err_name(r), report);
    return X_CHECK;
  }
  return 0;
}

static int lookup(posh_heap_t *heap, const char *name, posh_off_t *off) {
  int r = posh_name_lookup(heap, name, off, NULL);
  if (r)
    fprintf(stderr, "attach_child: lookup %s: %s\n", name, posh_err_name(r));
  return r ? X_LOOKUP : 0;
}

/* Sizes used by the allocating modes: small classes, medium, large. */
static size_t assorted_size(uint64_t i) {
  static const size_t sizes[] = {1,    16,   24,   64,    100,   128,   500,
                                 1024, 3000, 8192, 16384, 20000, 70000, 200000};
  return sizes[i % (sizeof sizes / sizeof sizes[0])];
}

static int do_mode(posh_heap_t *heap, int argc, char **argv) {
  const char *mode = argv[0];
  posh_off_t off;
  int r;

  if (!strcmp(mode, "check") && argc == 1)
    return check(heap);

  if ((!strcmp(mode, "verify") && argc == 3) ||
      (!strcmp(mode, "rewrite") && argc == 4)) {
    if ((r = lookup(heap, argv[1], &off)))
      return r;
    tu_obj_t *o = posh_ptr(heap, off);
    if (!tu_obj_ok(o, num(argv[2]))) {
      fprintf(stderr, "attach_child: object %s is not intact\n", argv[1]);
      return X_CONTENT;
    }
    if (argc == 4)
      tu_obj_write(heap, o, (size_t)o->len, num(argv[3]));
    return 0;
  }

  if (!strcmp(mode, "verify-off") && argc == 3) {
    off.v = num(argv[1]);
    if (off.v == 0 || off.v >= posh_heap_capacity(heap))
      return X_CONTENT;
    return tu_obj_ok(posh_ptr(heap, off), num(argv[2])) ? 0 : X_CONTENT;
  }

  if (!strcmp(mode, "list") && argc == 3) {
    if ((r = lookup(heap, argv[1], &off)))
      return r;
    uint64_t count = num(argv[2]), i = 0;
    /* Node: {next offset, value}; values 0..count-1 in order. */
    for (posh_off_t cur = off; !posh_off_is_null(cur); i++) {
      uint64_t *node = posh_ptr(heap, cur);
      if (i >= count || node[1] != i * 7 + 1)
        return X_CONTENT;
      cur.v = node[0];
    }
    return i == count ? 0 : X_CONTENT;
  }

  if (!strcmp(mode, "free-offs") && argc >= 2) {
    for (int i = 1; i < argc; i++) {
      r = posh_free_off(heap, (posh_off_t){num(argv[i])});
      if (r) {
        fprintf(stderr, "attach_child: free of %s: %s\n", argv[i],
                posh_err_name(r));
        return X_FREE;
      }
    }
    return check(heap);
  }

  if (!strcmp(mode, "free-named") && argc == 2) {
    if ((r = lookup(heap, argv[1], &off)))
      return r;
    tu_blocklist_t *bl = posh_ptr(heap, off);
    for (uint64_t i = 0; i < bl->count; i++) {
      void *p = posh_ptr(heap, (posh_off_t){bl->b[i].off});
      if (!tu_verify(p, (size_t)bl->b[i].size, bl->b[i].seed))
        return X_CONTENT;
      if ((r = posh_free(heap, p))) {
        fprintf(stderr, "attach_child: free: %s\n", posh_err_name(r));
        return X_FREE;
      }
    }
    if ((r = posh_name_unbind(heap, argv[1], off)) ||
        (r = posh_free_off(heap, off))) {
      fprintf(stderr, "attach_child: unbind/free list: %s\n", posh_err_name(r));
      return X_FREE;
    }
    return check(heap);
  }

  if (!strcmp(mode, "alloc-publish") && argc == 4) {
    uint64_t n = num(argv[2]), seed = num(argv[3]);
    tu_blocklist_t *bl = posh_alloc(heap, sizeof *bl + n * sizeof bl->b[0]);
    if (!bl)
      return X_ALLOC;
    bl->count = n;
    for (uint64_t i = 0; i < n; i++) {
      size_t size = assorted_size(i);
      void *p = posh_alloc(heap, size);
      if (!p)
        return X_ALLOC;
      tu_fill(p, size, seed + i);
      bl->b[i].off = posh_off(heap, p).v;
      bl->b[i].size = size;
      bl->b[i].seed = seed + i;
    }
    r = posh_name_bind(heap, argv[1], posh_off(heap, bl), 0xb10c);
    return r ? X_ALLOC : check(heap);
  }

  if (!strcmp(mode, "alloc-free") && argc == 3) {
    uint64_t n = num(argv[1]), seed = num(argv[2]);
    void **ps = calloc(n ? n : 1, sizeof *ps);
    if (!ps)
      return X_ALLOC;
    for (uint64_t i = 0; i < n; i++) {
      if (!(ps[i] = posh_alloc(heap, assorted_size(i)))) {
        free(ps);
        return X_ALLOC;
      }
      tu_fill(ps[i], assorted_size(i), seed + i);
    }
    int bad = 0;
    for (uint64_t i = 0; i < n; i++) {
      if (!tu_verify(ps[i], assorted_size(i), seed + i))
        bad = X_CONTENT;
      if (posh_free(heap, ps[i]) && !bad)
        bad = X_FREE;
    }
    free(ps);
    return bad ? bad : check(heap);
  }

  if (!strcmp(mode, "hold") && argc == 1) {
    if (tu_write_byte(1, 'R'))
      return X_USAGE;
    while (tu_read_byte(0, 60000) >= 0)
      ; /* until EOF (or an error) */
    return 0;
  }

  return usage();
}

int main(int argc, char **argv) {
  int argi = 1;
  uintptr_t avoid = 0;
  if (argc > 2 && !strcmp(argv[1], "-a")) {
    avoid = (uintptr_t)strtoull(argv[2], NULL, 16);
    argi = 3;
  }
  if (argc - argi < 2)
    return usage();
  const char *spec = argv[argi];
  const char *mode = argv[argi + 1];

  if (avoid) {
    /* Occupy the caller's base address: the heap must go elsewhere.  If
     * something is already there, the heap cannot land there either. */
    void *m = mmap((void *)avoid, 1 << 16, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (m != MAP_FAILED && m != (void *)avoid)
      munmap(m, 1 << 16); /* kernel without NOREPLACE: it is a hint */
  }

  posh_heap_t *heap = NULL;
  int r = attach(spec, &heap);
  if (!strcmp(mode, "expect-err")) {
    if (argc - argi != 3)
      return usage();
    int want = (int)strtol(argv[argi + 2], NULL, 0);
    if (r == 0)
      posh_heap_detach(heap);
    if (r != want) {
      fprintf(stderr, "attach_child: attach returned %s, expected %s\n",
              posh_err_name(r), posh_err_name(want));
      return X_EXPECT;
    }
    return 0;
  }
  if (r) {
    fprintf(stderr, "attach_child: attach %s: %s\n", spec, posh_err_name(r));
    return r == POSH_EACCES ? X_SKIP : X_ATTACH;
  }
  if (avoid && tu_heap_base(heap) == avoid) {
    fprintf(stderr, "attach_child: heap mapped at the reserved address\n");
    posh_heap_detach(heap);
    return X_SAMEADDR;
  }

  int status = do_mode(heap, argc - argi - 1, argv + argi + 1);
  r = posh_heap_detach(heap);
  if (r && status == 0) {
    fprintf(stderr, "attach_child: detach: %s\n", posh_err_name(r));
    status = X_DETACH;
  }
  return status;
}
