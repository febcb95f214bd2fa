/* SPDX-License-Identifier: MIT */
/*
 * This file contains the unit tests of the heap segment (src/heap.c):
 * creation of named and anonymous heaps and validation of their options,
 * attach by name, by fd and through /proc from forked and exec'd processes,
 * rejection of anything that is not a valid heap of this version, unlink
 * and unlink-on-last-detach, offsets, and the error-code table.
 */
#include "internal.h"
#include "testutil.h"

#include <xxhash.h>

#define CAP (16ull << 20)

static posh_heap_t *create_named(const char *name, uint64_t cap,
                                 uint32_t flags) {
  posh_heap_options_t o = {.capacity = cap, .flags = flags};
  posh_heap_t *h = NULL;
  int r = posh_heap_create(name, &o, &h);
  if (r)
    fprintf(stderr, "create %s: %s\n", name ? name : "(anon)",
            posh_err_name(r));
  return h;
}

/* ------------------------------------------------------------------------
 * Creation.
 * ---------------------------------------------------------------------- */

/* A named heap is created in /dev/shm with mode 0600, reports its name,
 * fd, capacity and slot, and can be detached and unlinked. */
static void test_create_named(void **state) {
  (void)state;
  char name[64], path[128];
  tu_heap_name(name, sizeof name, "named");
  posh_heap_t *h = NULL;
  assert_int_equal(posh_heap_create(name, NULL, &h), 0);
  assert_non_null(h);
  assert_string_equal(posh_heap_name(h), name);
  assert_true(posh_heap_fd(h) >= 0);
  assert_int_equal(posh_heap_capacity(h), POSH_DEFAULT_CAPACITY);
  assert_true(posh_heap_self_slot(h) >= 0);
  struct stat st;
  assert_int_equal(stat(tu_shm_path(path, sizeof path, name), &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  assert_int_equal((uint64_t)st.st_size, POSH_DEFAULT_CAPACITY);
  void *p = posh_alloc(h, 100);
  assert_non_null(p);
  assert_int_equal(posh_free(h, p), 0);
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(posh_heap_detach(h), 0);
  /* Without UNLINK_ON_LAST_DETACH the name outlives every handle. */
  assert_true(tu_shm_exists(name));
  assert_int_equal(posh_heap_unlink(name), 0);
  assert_false(tu_shm_exists(name));
  assert_int_equal(posh_heap_unlink(name), POSH_ENOENT);

  /* The leading '/' is optional; the name is reported with it. */
  char bare[64];
  tu_heap_name(bare, sizeof bare, "bare");
  assert_int_equal(posh_heap_create(bare + 1, NULL, &h), 0);
  assert_string_equal(posh_heap_name(h), bare);
  assert_true(tu_shm_exists(bare));
  assert_int_equal(posh_heap_detach(h), 0);
  assert_int_equal(posh_heap_unlink(bare + 1), 0);
}

/* An anonymous heap has no name and no /dev/shm entry, but a usable fd and
 * a working allocator; options are honoured (capacity rounded up to 64K). */
static void test_create_anonymous(void **state) {
  (void)state;
  posh_heap_options_t o = {.capacity = POSH_MIN_CAPACITY + 1, .mode = 0640};
  posh_heap_t *h = NULL;
  assert_int_equal(posh_heap_create(NULL, &o, &h), 0);
  assert_null(posh_heap_name(h));
  assert_true(posh_heap_fd(h) >= 0);
  assert_int_equal(posh_heap_capacity(h), POSH_MIN_CAPACITY + (64u << 10));
  struct stat st;
  assert_int_equal(fstat(posh_heap_fd(h), &st), 0);
  assert_int_equal((uint64_t)st.st_size, posh_heap_capacity(h));
  posh_off_t off = tu_obj_new(h, 1000, 42);
  assert_false(posh_off_is_null(off));
  assert_true(tu_obj_ok(posh_ptr(h, off), 42));
  assert_int_equal(posh_free_off(h, off), 0);
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* Bad names and bad options are rejected with EINVAL / ENAMETOOLONG and
 * leave nothing behind in /dev/shm. */
static void test_create_invalid(void **state) {
  (void)state;
  posh_heap_t *h = (posh_heap_t *)&h; /* must be reset to NULL */
  char longname[128];

  assert_int_equal(posh_heap_create("x", NULL, NULL), POSH_EINVAL);
  static const char *bad[] = {"",    "/",    "a/b",         "/a/b", "/a/",
                              ".",   "..",   "/..",         "/.",   "a b",
                              "a*b", "a\nb", "caf\xc3\xa9", "a:b",  "a\\b"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    h = (posh_heap_t *)&h;
    int r = posh_heap_create(bad[i], NULL, &h);
    if (r != POSH_EINVAL)
      fail_msg("create(\"%s\") returned %s, expected POSH_EINVAL", bad[i],
               posh_err_name(r));
    assert_null(h);
    assert_int_equal(posh_heap_attach(bad[i], &h), POSH_EINVAL);
    assert_int_equal(posh_heap_unlink(bad[i]), POSH_EINVAL);
  }
  assert_int_equal(posh_heap_attach(NULL, &h), POSH_EINVAL);
  assert_int_equal(posh_heap_unlink(NULL), POSH_EINVAL);

  /* Too long: "/" + 63 characters is 64 bytes, over POSH_NAME_MAX. */
  memset(longname, 'n', sizeof longname);
  longname[0] = '/';
  longname[1 + 63] = '\0';
  assert_int_equal(posh_heap_create(longname, NULL, &h), POSH_ENAMETOOLONG);
  assert_int_equal(posh_heap_attach(longname, &h), POSH_ENAMETOOLONG);
  longname[100] = '\0';
  memset(longname, 'n', 100);
  assert_int_equal(posh_heap_create(longname, NULL, &h), POSH_ENAMETOOLONG);
  assert_int_equal(posh_heap_unlink(longname), POSH_ENAMETOOLONG);

  /* Longest accepted: "/" + 62 characters = POSH_NAME_MAX bytes. */
  int n = snprintf(longname, sizeof longname, "/posh-t%d-", (int)getpid());
  memset(longname + n, 'L', (size_t)(POSH_NAME_MAX - n));
  longname[POSH_NAME_MAX] = '\0';
  assert_int_equal(strlen(longname), POSH_NAME_MAX);
  posh_heap_options_t small = {.capacity = POSH_MIN_CAPACITY};
  assert_int_equal(posh_heap_create(longname, &small, &h), 0);
  assert_string_equal(posh_heap_name(h), longname);
  posh_heap_t *h2 = NULL;
  assert_int_equal(posh_heap_attach(longname, &h2), 0);
  assert_int_equal(posh_heap_detach(h2), 0);
  assert_int_equal(posh_heap_detach(h), 0);
  assert_int_equal(posh_heap_unlink(longname), 0);

  /* Options. */
  char name[64];
  tu_heap_name(name, sizeof name, "opts");
  struct {
    posh_heap_options_t o;
    const char *what;
  } cases[] = {
      {{.capacity = POSH_MIN_CAPACITY - 1}, "capacity below minimum"},
      {{.capacity = 1}, "capacity 1"},
      {{.capacity = (1ull << 46) + 1}, "capacity above 2^46"},
      {{.capacity = UINT64_MAX}, "capacity UINT64_MAX"},
      {{.max_processes = POSH_MAX_SLOTS + 1}, "max_processes 4097"},
      {{.max_processes = 1}, "max_processes 1"},
      {{.max_processes = UINT32_MAX}, "max_processes UINT32_MAX"},
      {{.max_names = POSH_MAX_NAMES + 1}, "max_names above maximum"},
      {{.flags = 1u << 1}, "unknown flag bit 1"},
      {{.flags = 1u << 31}, "unknown flag bit 31"},
      {{.mode = 01000}, "mode with sticky bit"},
      {{.capacity = POSH_MIN_CAPACITY, .max_names = POSH_MAX_NAMES},
       "metadata larger than the heap"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    h = (posh_heap_t *)&h;
    int r = posh_heap_create(name, &cases[i].o, &h);
    if (r != POSH_EINVAL)
      fail_msg("%s: create returned %s, expected POSH_EINVAL", cases[i].what,
               posh_err_name(r));
    assert_null(h);
    if (tu_shm_exists(name))
      fail_msg("%s: failed create left %s behind", cases[i].what, name);
    r = posh_heap_create(NULL, &cases[i].o, &h);
    if (r != POSH_EINVAL)
      fail_msg("%s: anonymous create returned %s", cases[i].what,
               posh_err_name(r));
  }
  /* The extremes that are allowed. */
  posh_heap_options_t ok = {.capacity = POSH_MIN_CAPACITY,
                            .max_processes = POSH_MAX_SLOTS};
  assert_int_equal(posh_heap_create(NULL, &ok, &h), 0);
  assert_int_equal(posh_heap_detach(h), 0);
  ok = (posh_heap_options_t){
      .capacity = POSH_MIN_CAPACITY, .max_processes = 2, .max_names = 1};
  assert_int_equal(posh_heap_create(NULL, &ok, &h), 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* Creating a name that exists fails with EEXIST and leaves the existing
 * heap and its contents untouched. */
static void test_create_existing(void **state) {
  (void)state;
  char name[64];
  tu_heap_name(name, sizeof name, "exist");
  posh_heap_t *h = create_named(name, CAP, 0);
  assert_non_null(h);
  posh_off_t off = tu_obj_new(h, 100, 7);
  assert_int_equal(posh_name_bind(h, "obj", off, 1), 0);
  posh_heap_t *h2 = (posh_heap_t *)&h2;
  assert_int_equal(posh_heap_create(name, NULL, &h2), POSH_EEXIST);
  assert_null(h2);
  /* Without the leading '/', the same name. */
  assert_int_equal(posh_heap_create(name + 1, NULL, &h2), POSH_EEXIST);
  assert_true(tu_obj_ok(posh_ptr(h, off), 7));
  assert_int_equal(posh_heap_attach(name, &h2), 0);
  posh_off_t got;
  assert_int_equal(posh_name_lookup(h2, "obj", &got, NULL), 0);
  assert_int_equal(got.v, off.v);
  assert_int_equal(posh_heap_detach(h2), 0);
  assert_int_equal(posh_heap_detach(h), 0);
  assert_int_equal(posh_heap_unlink(name), 0);
}

/* Attaching to a name that does not exist fails with ENOENT. */
static void test_attach_missing(void **state) {
  (void)state;
  char name[64];
  tu_heap_name(name, sizeof name, "missing");
  posh_heap_t *h = (posh_heap_t *)&h;
  assert_int_equal(posh_heap_attach(name, &h), POSH_ENOENT);
  assert_null(h);
  assert_int_equal(posh_heap_attach(name, NULL), POSH_EINVAL);
}

/* ------------------------------------------------------------------------
 * Things that are not valid heaps.
 * ---------------------------------------------------------------------- */

/* A /dev/shm object with the given size and header bytes (hdr may be NULL:
 * left as zeros). */
static void make_shm(const char *name, uint64_t size, const void *hdr,
                     size_t hdr_len) {
  int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
  assert_true(fd >= 0);
  assert_int_equal(ftruncate(fd, (off_t)size), 0);
  if (hdr)
    assert_int_equal(pwrite(fd, hdr, hdr_len, 0), (ssize_t)hdr_len);
  close(fd);
}

static int attach_code(const char *name) {
  posh_heap_t *h = NULL;
  int r = posh_heap_attach(name, &h);
  if (r == 0)
    posh_heap_detach(h);
  return r;
}

/* Garbage, empty and all-zero objects are ENOTHEAP, from this process and
 * from an exec'd one, without crashing or leaking descriptors. */
static void test_attach_not_heap(void **state) {
  (void)state;
  char name[64];
  unsigned char junk[8192];
  for (size_t i = 0; i < sizeof junk; i++)
    junk[i] = (unsigned char)(i * 131 + 7);
  int fds = tu_count_fds();

  tu_heap_name(name, sizeof name, "junk");
  make_shm(name, sizeof junk, junk, sizeof junk);
  assert_int_equal(attach_code(name), POSH_ENOTHEAP);
  if (tu_have_attach_child()) {
    char code[16];
    snprintf(code, sizeof code, "%d", POSH_ENOTHEAP);
    const char *args[] = {name, "expect-err", code, NULL};
    assert_int_equal(tu_exec_child(args, TU_TIMEOUT_MS), 0);
  }
  shm_unlink(name);

  /* Big enough to look like one, with garbage: still not a heap. */
  tu_heap_name(name, sizeof name, "junkbig");
  make_shm(name, POSH_MIN_CAPACITY, junk, sizeof junk);
  assert_int_equal(attach_code(name), POSH_ENOTHEAP);
  shm_unlink(name);

  tu_heap_name(name, sizeof name, "empty");
  make_shm(name, 0, NULL, 0);
  assert_int_equal(attach_code(name), POSH_ENOTHEAP);
  shm_unlink(name);

  tu_heap_name(name, sizeof name, "small");
  make_shm(name, 100, junk, 100);
  assert_int_equal(attach_code(name), POSH_ENOTHEAP);
  shm_unlink(name);

  /* All zeros looks like a heap being created; after a bounded wait it is
   * ENOTHEAP. */
  tu_heap_name(name, sizeof name, "zeros");
  make_shm(name, POSH_MIN_CAPACITY, NULL, 0);
  assert_int_equal(attach_code(name), POSH_ENOTHEAP);
  shm_unlink(name);

  /* Through an fd: a pipe and a regular empty memfd are not heaps. */
  int p[2];
  assert_int_equal(pipe(p), 0);
  posh_heap_t *h = NULL;
  assert_int_equal(posh_heap_attach_fd(p[0], &h), POSH_ENOTHEAP);
  close(p[0]);
  close(p[1]);
  assert_int_equal(tu_count_fds(), fds);
}

/* Copy of src's header into a new shm object of `size` bytes, after
 * mutate(hdr) when given.  Returns the attach code of the copy. */
static int attach_copy(posh_heap_t *src, const char *name, uint64_t size,
                       void (*mutate)(posh__hdr_t *, void *), void *arg) {
  static union {
    posh__hdr_t hdr;
    unsigned char bytes[POSH_HEADER_SIZE];
  } buf;
  assert_int_equal(pread(posh_heap_fd(src), buf.bytes, sizeof buf.bytes, 0),
                   (ssize_t)sizeof buf.bytes);
  if (mutate)
    mutate(&buf.hdr, arg);
  make_shm(name, size, buf.bytes, sizeof buf.bytes);
  int r = attach_code(name);
  shm_unlink(name);
  return r;
}

static void flip_byte(posh__hdr_t *h, void *arg) {
  ((unsigned char *)h)[*(size_t *)arg] ^= 0x20;
}
static void reseal(posh__hdr_t *h) {
  h->checksum = XXH3_64bits(h, offsetof(posh__hdr_t, checksum));
}
static void set_version(posh__hdr_t *h, void *arg) {
  h->abi_version = *(uint32_t *)arg;
  reseal(h);
}
static void set_magic(posh__hdr_t *h, void *arg) {
  (void)arg;
  h->magic ^= 1;
  reseal(h);
}
static void move_registry(posh__hdr_t *h, void *arg) {
  (void)arg;
  h->registry_off += 64;
  reseal(h);
}
static void grow_slots(posh__hdr_t *h, void *arg) {
  (void)arg;
  h->max_slots = POSH_MAX_SLOTS + 1;
  reseal(h);
}
/* A consistent layout (offsets as posh__compute_layout gives them) that
 * leaves no data pages: the directory alone outgrows the file. */
static void no_room_for_data(posh__hdr_t *h, void *arg) {
  (void)arg;
  h->max_names = POSH_MAX_NAMES;
  posh__compute_layout(h);
  h->pages_free = 1;
  reseal(h);
}
static void halve_capacity(posh__hdr_t *h, void *arg) {
  (void)arg;
  h->capacity /= 2;
  reseal(h);
}

/* A byte-exact copy of a heap's header attaches; the same copy truncated
 * (or with a resealed capacity that does not match the size) is ENOTHEAP. */
static void test_attach_truncated(void **state) {
  (void)state;
  char src_name[64], name[64];
  posh_heap_t *src = create_named(
      tu_heap_name(src_name, sizeof src_name, "src"), POSH_MIN_CAPACITY, 0);
  assert_non_null(src);
  tu_heap_name(name, sizeof name, "copy");
  /* Control: the full-size copy is a valid heap. */
  assert_int_equal(attach_copy(src, name, POSH_MIN_CAPACITY, NULL, NULL), 0);
  assert_int_equal(attach_copy(src, name, POSH_MIN_CAPACITY / 2, NULL, NULL),
                   POSH_ENOTHEAP);
  assert_int_equal(
      attach_copy(src, name, POSH_MIN_CAPACITY - 65536, NULL, NULL),
      POSH_ENOTHEAP);
  assert_int_equal(attach_copy(src, name, POSH_HEADER_SIZE, NULL, NULL),
                   POSH_ENOTHEAP);
  assert_int_equal(
      attach_copy(src, name, POSH_MIN_CAPACITY + 65536, NULL, NULL),
      POSH_ENOTHEAP);
  assert_int_equal(
      attach_copy(src, name, POSH_MIN_CAPACITY, halve_capacity, NULL),
      POSH_ENOTHEAP);
  assert_int_equal(attach_copy(src, name, POSH_MIN_CAPACITY, set_magic, NULL),
                   POSH_ENOTHEAP);
  assert_int_equal(tu_check(src), 0);
  assert_int_equal(posh_heap_detach(src), 0);
  assert_int_equal(posh_heap_unlink(src_name), 0);
}

/* Any flipped byte of the checksummed header (other than magic and
 * abi_version) or of the checksum is ECORRUPT; a resealed header whose
 * layout does not follow from its parameters is ECORRUPT too. */
static void test_attach_corrupt(void **state) {
  (void)state;
  char src_name[64], name[64];
  posh_heap_t *src = create_named(
      tu_heap_name(src_name, sizeof src_name, "src"), POSH_MIN_CAPACITY, 0);
  assert_non_null(src);
  tu_heap_name(name, sizeof name, "corrupt");
  size_t ver = offsetof(posh__hdr_t, abi_version);
  for (size_t i = sizeof(uint64_t); i < offsetof(posh__hdr_t, checksum) + 8;
       i++) {
    if (i >= ver && i < ver + 4)
      continue;
    int r = attach_copy(src, name, POSH_MIN_CAPACITY, flip_byte, &i);
    if (r != POSH_ECORRUPT)
      fail_msg(
          "header byte %zu flipped: attach returned %s, expected POSH_ECORRUPT",
          i, posh_err_name(r));
  }
  assert_int_equal(
      attach_copy(src, name, POSH_MIN_CAPACITY, move_registry, NULL),
      POSH_ECORRUPT);
  assert_int_equal(attach_copy(src, name, POSH_MIN_CAPACITY, grow_slots, NULL),
                   POSH_ECORRUPT);
  assert_int_equal(
      attach_copy(src, name, POSH_MIN_CAPACITY, no_room_for_data, NULL),
      POSH_ECORRUPT);
  /* The original is untouched by all this. */
  assert_int_equal(tu_check(src), 0);
  assert_int_equal(posh_heap_detach(src), 0);
  assert_int_equal(posh_heap_unlink(src_name), 0);
}

/* A valid header of another ABI version (checksum recomputed) is
 * EVERSION, also when only the version field was altered. */
static void test_attach_other_version(void **state) {
  (void)state;
  char src_name[64], name[64];
  posh_heap_t *src = create_named(
      tu_heap_name(src_name, sizeof src_name, "src"), POSH_MIN_CAPACITY, 0);
  assert_non_null(src);
  tu_heap_name(name, sizeof name, "version");
  /* Including the other flavour's version (release 1, debug 0x80000001):
   * the two page layouts differ, so they must not mix. */
  uint32_t versions[] = {0, POSH_ABI_VERSION + 1,
                         POSH_ABI_VERSION ^ 0x80000000u, UINT32_MAX};
  for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++)
    assert_int_equal(
        attach_copy(src, name, POSH_MIN_CAPACITY, set_version, &versions[i]),
        POSH_EVERSION);
  size_t at = offsetof(posh__hdr_t, abi_version);
  assert_int_equal(attach_copy(src, name, POSH_MIN_CAPACITY, flip_byte, &at),
                   POSH_EVERSION);
  assert_int_equal(posh_heap_detach(src), 0);
  assert_int_equal(posh_heap_unlink(src_name), 0);
}

/* ------------------------------------------------------------------------
 * Attaching from other processes.
 * ---------------------------------------------------------------------- */
struct fork_ctx {
  posh_heap_t *heap;
  const char *name;
  int parent_slot;
  uint64_t seed;
};

static int child_attach_by_name(void *arg) {
  struct fork_ctx *c = arg;
  /* The inherited handle registered this child as a process of its own. */
  int slot = posh_heap_self_slot(c->heap);
  CHILD_CHECK(slot >= 0);
  CHILD_CHECK(slot != c->parent_slot);
  posh_off_t off;
  CHILD_CHECK_EQ(posh_name_lookup(c->heap, "obj", &off, NULL), 0);
  CHILD_CHECK(tu_obj_ok(posh_ptr(c->heap, off), c->seed));
  /* And attaching by name works as well. */
  posh_heap_t *h2 = NULL;
  CHILD_CHECK_EQ(posh_heap_attach(c->name, &h2), 0);
  posh_off_t off2;
  CHILD_CHECK_EQ(posh_name_lookup(h2, "obj", &off2, NULL), 0);
  CHILD_CHECK_EQ(off2.v, off.v);
  tu_obj_t *o = posh_ptr(h2, off2);
  CHILD_CHECK(tu_obj_ok(o, c->seed));
  tu_obj_write(h2, o, (size_t)o->len, c->seed + 1);
  CHILD_CHECK_EQ(posh_heap_detach(h2), 0);
  CHILD_CHECK_EQ(posh_heap_detach(c->heap), 0);
  return 0;
}

/* A forked child uses the inherited handle (registered as a new process)
 * and attaches by name; what it writes the parent reads. */
static void test_attach_forked(void **state) {
  (void)state;
  char name[64];
  posh_heap_t *h =
      create_named(tu_heap_name(name, sizeof name, "fork"), CAP, 0);
  assert_non_null(h);
  posh_off_t off = tu_obj_new(h, 5000, 100);
  assert_int_equal(posh_name_bind(h, "obj", off, 1), 0);
  struct fork_ctx c = {h, name, posh_heap_self_slot(h), 100};
  assert_int_equal(tu_run_child(child_attach_by_name, &c, TU_TIMEOUT_MS), 0);
  assert_true(tu_obj_ok(posh_ptr(h, off), 101));
  /* The child detached both of its handles: only we remain. */
  posh_heap_stats_t st;
  assert_int_equal(posh_heap_stats(h, &st), 0);
  assert_int_equal(st.processes, 1);
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(posh_heap_detach(h), 0);
  assert_int_equal(posh_heap_unlink(name), 0);
}

/* An exec'd, unrelated process attaches by name at another address and
 * follows offsets: it reads an object, walks an offset-linked list and
 * rewrites an object the parent then reads. */
static void test_attach_exec(void **state) {
  (void)state;
  if (!tu_have_attach_child())
    skip();
  char name[64], base[32], seed[32], seed2[32], offs[32];
  posh_heap_t *h =
      create_named(tu_heap_name(name, sizeof name, "exec"), CAP, 0);
  assert_non_null(h);
  posh_off_t off = tu_obj_new(h, 3000, 555);
  assert_int_equal(posh_name_bind(h, "obj", off, 1), 0);
  /* A list of 100 nodes {next, value}, built back to front. */
  posh_off_t head = POSH_OFF_NULL;
  for (int i = 99; i >= 0; i--) {
    uint64_t *node = posh_alloc(h, 16);
    assert_non_null(node);
    node[0] = head.v;
    node[1] = (uint64_t)i * 7 + 1;
    head = posh_off(h, node);
  }
  assert_int_equal(posh_name_bind(h, "list", head, 2), 0);

  snprintf(base, sizeof base, "%lx", (unsigned long)tu_heap_base(h));
  snprintf(seed, sizeof seed, "555");
  snprintf(seed2, sizeof seed2, "556");
  snprintf(offs, sizeof offs, "%llu", (unsigned long long)off.v);
  const char *verify[] = {"-a", base, name, "verify", "obj", seed, NULL};
  assert_int_equal(tu_exec_child(verify, TU_TIMEOUT_MS), 0);
  const char *byoff[] = {"-a", base, name, "verify-off", offs, seed, NULL};
  assert_int_equal(tu_exec_child(byoff, TU_TIMEOUT_MS), 0);
  const char *list[] = {"-a", base, name + 1, "list", "list", "100", NULL};
  assert_int_equal(tu_exec_child(list, TU_TIMEOUT_MS), 0);
  const char *wrong[] = {name, "verify", "obj", seed2, NULL};
  assert_int_equal(tu_exec_child(wrong, TU_TIMEOUT_MS), 5); /* X_CONTENT */
  const char *rewrite[] = {"-a",  base, name,  "rewrite",
                           "obj", seed, seed2, NULL};
  assert_int_equal(tu_exec_child(rewrite, TU_TIMEOUT_MS), 0);

  tu_obj_t *o = posh_ptr(h, off);
  assert_true(tu_obj_ok(o, 556));
  /* It really was mapped somewhere else. */
  assert_true(o->writer_base != (uint64_t)tu_heap_base(h));
  const char *check[] = {name, "check", NULL};
  assert_int_equal(tu_exec_child(check, TU_TIMEOUT_MS), 0);
  posh_heap_stats_t st;
  assert_int_equal(posh_heap_stats(h, &st), 0);
  assert_int_equal(st.processes, 1);
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(posh_heap_detach(h), 0);
  assert_int_equal(posh_heap_unlink(name), 0);
}

/* An anonymous heap is attached through its fd (in this process and from
 * an exec'd one that inherits it) and through /proc/PID/fd/FD; bad fds and
 * pids are rejected. */
static void test_attach_fd(void **state) {
  (void)state;
  /* Forked before the heap exists, so it never registers in it. */
  pid_t gone = fork();
  if (gone == 0)
    _exit(0);
  assert_true(gone > 0);
  waitpid(gone, NULL, 0);
  posh_heap_options_t o = {.capacity = CAP};
  posh_heap_t *h = NULL, *h2 = NULL;
  assert_int_equal(posh_heap_create(NULL, &o, &h), 0);
  posh_off_t off = tu_obj_new(h, 2000, 9);
  assert_int_equal(posh_name_bind(h, "obj", off, 1), 0);
  int fd = posh_heap_fd(h);
  int fds = tu_count_fds();

  assert_int_equal(posh_heap_attach_fd(fd, &h2), 0);
  assert_null(posh_heap_name(h2));
  assert_int_equal(posh_heap_capacity(h2), posh_heap_capacity(h));
  assert_true(posh_heap_fd(h2) != fd); /* duplicated */
  posh_off_t got;
  assert_int_equal(posh_name_lookup(h2, "obj", &got, NULL), 0);
  assert_int_equal(got.v, off.v);
  assert_true(tu_obj_ok(posh_ptr(h2, got), 9));
  assert_int_equal(posh_heap_detach(h2), 0);
  assert_int_equal(tu_count_fds(), fds);        /* the duplicate is closed */
  assert_int_equal(fcntl(fd, F_GETFD) >= 0, 1); /* ours is not */

  h2 = (posh_heap_t *)&h2;
  assert_int_equal(posh_heap_attach_fd(-1, &h2), POSH_EINVAL);
  assert_int_equal(posh_heap_attach_fd(fd, NULL), POSH_EINVAL);
  assert_int_equal(posh_heap_attach_fd(4000, &h2), POSH_EINVAL); /* not open */
  assert_int_equal(posh_heap_attach_pid_fd(0, fd, &h2), POSH_EINVAL);
  assert_int_equal(posh_heap_attach_pid_fd(getpid(), -1, &h2), POSH_EINVAL);
  assert_int_equal(posh_heap_attach_pid_fd(getpid(), 4000, &h2), POSH_ENOENT);
  /* A pid that no longer exists: a child we already waited for. */
  assert_int_equal(posh_heap_attach_pid_fd(gone, fd, &h2), POSH_ENOENT);
  assert_int_equal(tu_count_fds(), fds);

  if (tu_have_attach_child()) {
    char spec[64], seed[16];
    snprintf(seed, sizeof seed, "9");
    snprintf(spec, sizeof spec, "fd:%d", fd);
    const char *byfd[] = {spec, "verify", "obj", seed, NULL};
    pid_t pid = tu_spawn_child(byfd, -1, -1, fd);
    assert_true(pid > 0);
    assert_int_equal(tu_wait(pid, TU_TIMEOUT_MS), 0);

    snprintf(spec, sizeof spec, "pidfd:%d:%d", (int)getpid(), fd);
    const char *bypid[] = {spec, "rewrite", "obj", seed, "10", NULL};
    int st = tu_exec_child(bypid, TU_TIMEOUT_MS);
    if (st == 77) {
      fprintf(stderr, "attach through /proc/PID/fd not permitted here\n");
    } else {
      assert_int_equal(st, 0);
      assert_true(tu_obj_ok(posh_ptr(h, off), 10));
    }
  }
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* ------------------------------------------------------------------------
 * Unlink.
 * ---------------------------------------------------------------------- */
static int child_use_unlinked(void *arg) {
  posh_heap_t *h = arg;
  posh_off_t off;
  CHILD_CHECK_EQ(posh_name_lookup(h, "obj", &off, NULL), 0);
  CHILD_CHECK(tu_obj_ok(posh_ptr(h, off), 3));
  void *p = posh_alloc(h, 300);
  CHILD_CHECK(p != NULL);
  CHILD_CHECK_EQ(posh_free(h, p), 0);
  CHILD_CHECK_EQ(posh_heap_detach(h), 0);
  return 0;
}

/* After unlink the name is gone (attach ENOENT, the name can be reused) but
 * attached processes, and children forked later, keep using the heap. */
static void test_unlink_while_attached(void **state) {
  (void)state;
  char name[64];
  posh_heap_t *h = create_named(tu_heap_name(name, sizeof name, "unl"), CAP, 0);
  assert_non_null(h);
  posh_off_t off = tu_obj_new(h, 1000, 3);
  assert_int_equal(posh_name_bind(h, "obj", off, 1), 0);
  assert_int_equal(posh_heap_unlink(name), 0);
  assert_false(tu_shm_exists(name));
  posh_heap_t *h2 = NULL;
  assert_int_equal(posh_heap_attach(name, &h2), POSH_ENOENT);
  assert_int_equal(posh_heap_unlink(name), POSH_ENOENT);

  void *p = posh_alloc(h, 70000);
  assert_non_null(p);
  memset(p, 1, 70000);
  assert_true(tu_obj_ok(posh_ptr(h, off), 3));
  assert_int_equal(tu_run_child(child_use_unlinked, h, TU_TIMEOUT_MS), 0);

  /* The name can be taken by a new, independent heap. */
  posh_heap_t *n = create_named(name, CAP, 0);
  assert_non_null(n);
  posh_off_t got;
  assert_int_equal(posh_name_lookup(n, "obj", &got, NULL), POSH_ENOENT);
  assert_int_equal(posh_heap_detach(n), 0);
  assert_int_equal(posh_heap_unlink(name), 0);

  assert_int_equal(posh_free(h, p), 0);
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* With UNLINK_ON_LAST_DETACH the name stays while an unrelated process is
 * attached and disappears when that last process detaches. */
static void test_unlink_on_last_detach(void **state) {
  (void)state;
  if (!tu_have_attach_child())
    skip();
  char name[64];
  posh_heap_t *h = create_named(tu_heap_name(name, sizeof name, "last"), CAP,
                                POSH_HEAP_UNLINK_ON_LAST_DETACH);
  assert_non_null(h);
  int in[2], out[2];
  assert_int_equal(pipe2(in, O_CLOEXEC), 0);
  assert_int_equal(pipe2(out, O_CLOEXEC), 0);
  const char *args[] = {name, "hold", NULL};
  pid_t pid = tu_spawn_child(args, in[0], out[1], -1);
  assert_true(pid > 0);
  close(in[0]);
  close(out[1]);
  assert_int_equal(tu_read_byte(out[0], 20000), 'R');
  size_t count = 0;
  assert_int_equal(posh_heap_processes(h, NULL, 0, &count), 0);
  assert_int_equal(count, 2);
  assert_int_equal(posh_heap_detach(h), 0);
  assert_true(tu_shm_exists(name)); /* the child still holds it */
  close(in[1]);                     /* child: detach and exit */
  assert_int_equal(tu_wait(pid, TU_TIMEOUT_MS), 0);
  close(out[0]);
  assert_false(tu_shm_exists(name));

  /* Alone: the creator's own detach removes it. */
  h = create_named(name, CAP, POSH_HEAP_UNLINK_ON_LAST_DETACH);
  assert_non_null(h);
  assert_int_equal(posh_heap_detach(h), 0);
  assert_false(tu_shm_exists(name));
  assert_int_equal(posh_heap_unlink(name), POSH_ENOENT);
}

struct kill_ctx {
  posh_heap_t *heap;
  int fd;
};

static int child_wait_for_kill(void *arg) {
  struct kill_ctx *c = arg;
  /* Use the heap, so this child is attached when it is killed. */
  CHILD_CHECK(posh_heap_self_slot(c->heap) >= 0);
  void *p = posh_alloc(c->heap, 100);
  CHILD_CHECK(p != NULL);
  tu_write_byte(c->fd, 'R');
  for (;;)
    pause();
  return 0;
}

/* With UNLINK_ON_LAST_DETACH, when the other attached process was killed,
 * the survivor's detach is the last one and removes the name ("the memory
 * goes back to the system once every process is gone"; regression test:
 * fixed in 449f87f). */
static void test_unlink_on_last_detach_after_kill(void **state) {
  (void)state;
  char name[64];
  posh_heap_t *h = create_named(tu_heap_name(name, sizeof name, "lastk"), CAP,
                                POSH_HEAP_UNLINK_ON_LAST_DETACH);
  assert_non_null(h);
  int p[2];
  assert_int_equal(pipe(p), 0);
  struct kill_ctx kc = {h, p[1]};
  pid_t pid = tu_fork(child_wait_for_kill, &kc);
  assert_true(pid > 0);
  assert_int_equal(tu_read_byte(p[0], 20000), 'R');
  posh_heap_info_t info;
  assert_int_equal(posh_heap_info(h, &info), 0);
  assert_int_equal(info.attached, 2);
  close(p[0]);
  close(p[1]);
  assert_int_equal(tu_kill(pid), TU_SIGNALED(SIGKILL));
  assert_int_equal(posh_heap_detach(h), 0);
  int exists = tu_shm_exists(name);
  if (exists)
    posh_heap_unlink(name);
  assert_false(exists);
}

/* The last detach of an UNLINK_ON_LAST_DETACH heap whose name was already
 * unlinked and then taken by a new heap leaves the new heap's name alone
 * (regression test: fixed in 8ede33c). */
static void test_unlink_on_last_detach_reused_name(void **state) {
  (void)state;
  char name[64];
  posh_heap_t *a = create_named(tu_heap_name(name, sizeof name, "reuse"), CAP,
                                POSH_HEAP_UNLINK_ON_LAST_DETACH);
  assert_non_null(a);
  assert_int_equal(posh_heap_unlink(name), 0);
  posh_heap_t *b = create_named(name, CAP, 0);
  assert_non_null(b);
  posh_off_t off = tu_obj_new(b, 10, 77);
  assert_int_equal(posh_name_bind(b, "mine", off, 1), 0);
  assert_int_equal(posh_heap_detach(a), 0);
  int exists = tu_shm_exists(name);
  assert_int_equal(posh_heap_detach(b), 0);
  posh_heap_unlink(name);
  assert_true(exists);
}

/* ------------------------------------------------------------------------
 * Small API contracts.
 * ---------------------------------------------------------------------- */

static int child_info(void *arg) {
  posh_heap_t *h = arg;
  posh_heap_info_t i;
  CHILD_CHECK(posh_heap_self_slot(h) >= 0); /* registers on first use */
  CHILD_CHECK_EQ(posh_heap_info(h, &i), 0);
  CHILD_CHECK_EQ(i.attached, 2);
  CHILD_CHECK_EQ(posh_heap_detach(h), 0);
  return 0;
}

/* posh_heap_info reports the header as created (options, defaults, ABI,
 * checksum) and the number of attached processes. */
static void test_heap_info(void **state) {
  (void)state;
  char name[64];
  posh_heap_options_t o = {.capacity = 32ull << 20,
                           .max_processes = 100,
                           .max_names = 300,
                           .flags = POSH_HEAP_UNLINK_ON_LAST_DETACH};
  posh_heap_t *h = NULL;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t before = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
  assert_int_equal(
      posh_heap_create(tu_heap_name(name, sizeof name, "info"), &o, &h), 0);
  posh_heap_info_t i;
  memset(&i, 0xff, sizeof i);
  assert_int_equal(posh_heap_info(h, &i), 0);
  assert_int_equal(i.abi_version, POSH_ABI_VERSION);
  assert_int_equal(i.flags, POSH_HEAP_UNLINK_ON_LAST_DETACH);
  assert_int_equal(i.capacity, 32ull << 20);
  assert_int_equal(i.page_size, 65536);
  assert_int_equal(i.max_processes, 100);
  assert_int_equal(i.max_names, 300);
  assert_int_equal(i.attached, 1);
  assert_true(i.create_time_ns >= before);
  posh_heap_stats_t st;
  assert_int_equal(posh_heap_stats(h, &st), 0);
  assert_int_equal(i.pages, st.pages_total);
  assert_int_equal(i.data_offset, st.bytes_metadata);
  assert_int_equal(i.data_offset % 65536, 0);
  assert_true(i.data_offset + i.pages * 65536 <= i.capacity);
  const posh__hdr_t *hdr = (const posh__hdr_t *)tu_heap_base(h);
  assert_int_equal(i.checksum,
                   XXH3_64bits(hdr, offsetof(posh__hdr_t, checksum)));
  assert_int_equal(tu_run_child(child_info, h, TU_TIMEOUT_MS), 0);
  assert_int_equal(posh_heap_info(h, &i), 0);
  assert_int_equal(i.attached, 1);
  assert_int_equal(posh_heap_info(NULL, &i), POSH_EINVAL);
  assert_int_equal(posh_heap_info(h, NULL), POSH_EINVAL);
  assert_int_equal(posh_heap_detach(h), 0);

  /* Defaults. */
  assert_int_equal(posh_heap_create(NULL, NULL, &h), 0);
  assert_int_equal(posh_heap_info(h, &i), 0);
  assert_int_equal(i.capacity, POSH_DEFAULT_CAPACITY);
  assert_int_equal(i.max_processes, 1024);
  assert_int_equal(i.max_names, 4096);
  assert_int_equal(i.flags, 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* posh_heap_check re-verifies the header: a changed byte of the
 * checksummed part makes it ECORRUPT, restoring it makes it pass. */
static void test_check_detects_header_damage(void **state) {
  (void)state;
  posh_heap_options_t o = {.capacity = CAP};
  posh_heap_t *h = NULL;
  assert_int_equal(posh_heap_create(NULL, &o, &h), 0);
  assert_int_equal(tu_check(h), 0);
  posh__hdr_t *hdr = (posh__hdr_t *)tu_heap_base(h);
  char report[256];
  hdr->create_time_ns ^= 1;
  assert_int_equal(posh_heap_check(h, report, sizeof report), POSH_ECORRUPT);
  assert_non_null(strstr(report, "header"));
  hdr->create_time_ns ^= 1;
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(posh_heap_check(NULL, report, sizeof report), POSH_EINVAL);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* posh_heap_detach(NULL) and the getters on NULL fail cleanly. */
static void test_null_handles(void **state) {
  (void)state;
  assert_int_equal(posh_heap_detach(NULL), POSH_EINVAL);
  assert_null(posh_heap_name(NULL));
  assert_int_equal(posh_heap_fd(NULL), POSH_EINVAL);
  assert_int_equal(posh_heap_capacity(NULL), 0);
  assert_int_equal(posh_heap_self_slot(NULL), POSH_EINVAL);
}

/* posh_off and posh_ptr are inverse for every pointer inside the heap;
 * NULL, the base and pointers outside map to the null offset. */
static void test_off_ptr(void **state) {
  (void)state;
  posh_heap_options_t o = {.capacity = CAP};
  posh_heap_t *h = NULL;
  assert_int_equal(posh_heap_create(NULL, &o, &h), 0);
  unsigned char *base = (unsigned char *)tu_heap_base(h);
  uint64_t cap = posh_heap_capacity(h);
  assert_int_equal((uintptr_t)base % 65536, 0);

  assert_true(posh_off_is_null(POSH_OFF_NULL));
  assert_null(posh_ptr(h, POSH_OFF_NULL));
  assert_true(posh_off_is_null(posh_off(h, NULL)));
  assert_true(posh_off_is_null(posh_off(h, base))); /* the header: offset 0 */
  assert_true(posh_off_is_null(posh_off(h, base + cap)));
  assert_true(posh_off_is_null(posh_off(h, base - 1)));
  int local;
  assert_true(posh_off_is_null(posh_off(h, &local)));
  assert_false(posh_heap_contains(h, &local));
  assert_false(posh_heap_contains(h, base));
  assert_false(posh_heap_contains(h, base + cap));
  assert_true(posh_heap_contains(h, base + 1));
  assert_true(posh_heap_contains(h, base + cap - 1));
  assert_int_equal(posh_off(h, base + cap - 1).v, cap - 1);
  assert_ptr_equal(posh_ptr(h, (posh_off_t){cap - 1}), base + cap - 1);

  for (size_t size = 1; size <= 300000; size = size * 3 + 1) {
    void *p = posh_alloc(h, size);
    assert_non_null(p);
    posh_off_t off = posh_off(h, p);
    assert_false(posh_off_is_null(off));
    assert_true(off.v < cap);
    assert_ptr_equal(posh_ptr(h, off), p);
    assert_true(posh_heap_contains(h, p));
    assert_int_equal(posh_free_off(h, off), 0);
  }
  posh_off_t off = posh_alloc_off(h, 64);
  assert_false(posh_off_is_null(off));
  assert_int_equal(posh_block_state(h, posh_ptr(h, off)), POSH_BLOCK_ALLOCATED);
  assert_int_equal(posh_free_off(h, off), 0);
  assert_int_equal(posh_free_off(h, POSH_OFF_NULL), 0);
  assert_int_equal(posh_free_off(NULL, off), POSH_EINVAL);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* Every code has its own text and symbolic name, errno-mirroring codes are
 * the negated errno, and unknown codes get a generic answer. */
static void test_error_table(void **state) {
  (void)state;
  assert_string_equal(posh_err_name(POSH_OK), "POSH_OK");
  assert_non_null(posh_strerror(POSH_OK));
  const char *unknown_text = posh_strerror(-999999);
  const char *unknown_name = posh_err_name(-999999);
  assert_non_null(unknown_text);
  assert_string_equal(unknown_name, "POSH_UNKNOWN");
  int codes[64];
  size_t n = 0;
#define CHECK_CODE(name, value, text)                                          \
  do {                                                                         \
    assert_int_equal(POSH_##name, value);                                      \
    assert_true(POSH_##name < 0);                                              \
    assert_string_equal(posh_strerror(POSH_##name), text);                     \
    assert_string_not_equal(posh_strerror(POSH_##name), unknown_text);         \
    assert_string_equal(posh_err_name(POSH_##name), "POSH_" #name);            \
    codes[n++] = value;                                                        \
  } while (0);
  POSH_ERRNO_MAP(CHECK_CODE)
#undef CHECK_CODE
  assert_true(n >= 27);
  /* Codes that mirror errno are its negation. */
  static const struct {
    int code, err;
  } mirror[] = {{POSH_EPERM, EPERM},
                {POSH_ENOENT, ENOENT},
                {POSH_EINTR, EINTR},
                {POSH_EIO, EIO},
                {POSH_EAGAIN, EAGAIN},
                {POSH_ENOMEM, ENOMEM},
                {POSH_EACCES, EACCES},
                {POSH_EFAULT, EFAULT},
                {POSH_EBUSY, EBUSY},
                {POSH_EEXIST, EEXIST},
                {POSH_EINVAL, EINVAL},
                {POSH_ENOSPC, ENOSPC},
                {POSH_ERANGE, ERANGE},
                {POSH_ENAMETOOLONG, ENAMETOOLONG},
                {POSH_ENOSYS, ENOSYS},
                {POSH_EOVERFLOW, EOVERFLOW},
                {POSH_ETIMEDOUT, ETIMEDOUT},
                {POSH_EOWNERDEAD, EOWNERDEAD},
                {POSH_ENOTRECOVERABLE, ENOTRECOVERABLE}};
  for (size_t i = 0; i < sizeof mirror / sizeof mirror[0]; i++)
    assert_int_equal(mirror[i].code, -mirror[i].err);
  for (size_t i = 0; i < n; i++)
    for (size_t j = i + 1; j < n; j++)
      assert_int_not_equal(codes[i], codes[j]);
  int unknown[] = {1, 22, -3, -1000, -12345, INT32_MIN, INT32_MAX};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    assert_string_equal(posh_strerror(unknown[i]), unknown_text);
    assert_string_equal(posh_err_name(unknown[i]), "POSH_UNKNOWN");
  }
}

int main(int argc, char **argv) {
  tu_init(argc, argv);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_create_named),
      cmocka_unit_test(test_create_anonymous),
      cmocka_unit_test(test_create_invalid),
      cmocka_unit_test(test_create_existing),
      cmocka_unit_test(test_attach_missing),
      cmocka_unit_test(test_attach_not_heap),
      cmocka_unit_test(test_attach_truncated),
      cmocka_unit_test(test_attach_corrupt),
      cmocka_unit_test(test_attach_other_version),
      cmocka_unit_test(test_attach_forked),
      cmocka_unit_test(test_attach_exec),
      cmocka_unit_test(test_attach_fd),
      cmocka_unit_test(test_unlink_while_attached),
      cmocka_unit_test(test_unlink_on_last_detach),
      cmocka_unit_test(test_unlink_on_last_detach_after_kill),
      cmocka_unit_test(test_unlink_on_last_detach_reused_name),
      cmocka_unit_test(test_heap_info),
      cmocka_unit_test(test_check_detects_header_damage),
      cmocka_unit_test(test_null_handles),
      cmocka_unit_test(test_off_ptr),
      cmocka_unit_test(test_error_table),
  };
  return cmocka_run_group_tests(tests, NULL, tu_group_teardown);
}
