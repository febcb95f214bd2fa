/* SPDX-License-Identifier: MIT */
/*
 * This file contains the tests of the shared-object core (objects/object.c)
 * through its simplest type, the Buffer: creation, names, opening by name
 * and by reference from the same process, a forked child and an exec'd
 * unrelated program (tests/object_child), reference counting and freeing,
 * stale references, bad input, references of killed processes dropped by
 * the reaper, pins (references stored in heap data), and repair of the
 * object lock after its holder was killed half-way through a change.
 */
#include "testutil.h"

#include "object_internal.h"

/* ------------------------------------------------------------------------
 * Fixture and helpers.
 * ---------------------------------------------------------------------- */
static int setup(void **state) {
  return tu_heap_fx_setup(state, "obj", 64ull << 20);
}

static int teardown(void **state) { return tu_heap_fx_teardown(state); }

/* Spawn tests/object_child (posix_spawn: an unrelated process) with args;
 * stdin from in_fd and stdout to out_fd when >= 0. */
static pid_t spawn_object_child(const char *const *args, int in_fd, int out_fd) {
  const char *dir = getenv("POSH_TEST_BINDIR");
  char path[PATH_MAX + 32];
  snprintf(path, sizeof path, "%s/object_child",
           dir && *dir ? dir : tu_argv0_dir);
  const char *argv[16];
  int n = 0;
  argv[n++] = path;
  for (int i = 0; args[i] && n < 15; i++)
    argv[n++] = args[i];
  argv[n] = NULL;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (in_fd >= 0)
    posix_spawn_file_actions_adddup2(&fa, in_fd, 0);
  if (out_fd >= 0)
    posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
  fflush(stdout);
  fflush(stderr);
  extern char **environ;
  pid_t pid;
  int r = posix_spawn(&pid, path, &fa, NULL, (char *const *)argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (r != 0)
    return -1;
  tu_kid_add(pid);
  return pid;
}

static posh_obj_t *make_buffer(posh_heap_t *h, const char *name, size_t size,
                               int byte) {
  posh_obj_t *b = NULL;
  assert_int_equal(posh_buffer_create(h, name, size, 0, &b), 0);
  void *data;
  size_t n;
  assert_int_equal(posh_buffer_data(b, &data, &n), 0);
  assert_int_equal(n, size);
  memset(data, byte, n);
  return b;
}

static void assert_refs(posh_obj_t *o, uint32_t procs, uint32_t names) {
  uint32_t p = 99, n = 99;
  assert_int_equal(posh_obj_refs(o, &p, &n), 0);
  assert_int_equal(p, procs);
  assert_int_equal(n, names);
}

static void assert_stale(posh_heap_t *h, const posh_obj_ref_t *ref) {
  posh_obj_t *o = NULL;
  assert_int_equal(posh_obj_open_ref(h, ref, &o), POSH_ESTALE);
  assert_null(o);
}

/* ------------------------------------------------------------------------
 * Tests.
 * ---------------------------------------------------------------------- */
/* Handles, names and references count correctly, and the last reference
 * frees the object and everything it used. */
static void test_lifetime(void **state) {
  struct tu_heap_fx *f = *state;
  posh_obj_t *b = make_buffer(f->h, "buf", 1000, 7);
  assert_refs(b, 1, 1);
  assert_int_equal(posh_obj_type(b), POSH_OBJ_BUFFER);
  assert_string_equal(posh_obj_type_name(POSH_OBJ_BUFFER), "buffer");
  assert_ptr_equal(posh_obj_heap(b), f->h);
  posh_obj_t *b2, *b3;
  assert_int_equal(posh_obj_open(f->h, "buf", POSH_OBJ_BUFFER, &b2), 0);
  assert_int_equal(posh_obj_open(f->h, "buf", 0, &b3), 0);
  assert_int_equal(posh_obj_off(b2).v, posh_obj_off(b).v);
  assert_refs(b, 1, 1); /* one process, however many handles */
  assert_int_equal(posh_obj_bind(b3, "alias"), 0);
  assert_refs(b, 1, 2);
  posh_obj_ref_t ref;
  assert_int_equal(posh_obj_ref(b, &ref), 0);
  assert_int_equal(ref.type, POSH_OBJ_BUFFER);
  assert_int_equal(posh_obj_close(b), 0);
  assert_int_equal(posh_obj_close(b2), 0);
  assert_int_equal(posh_obj_close(b3), 0);
  /* Only names hold it now. */
  assert_int_equal(posh_obj_open_ref(f->h, &ref, &b), 0);
  assert_refs(b, 1, 2);
  assert_int_equal(posh_obj_close(b), 0);
  assert_int_equal(posh_obj_unbind(f->h, "buf"), 0);
  assert_int_equal(posh_obj_open(f->h, "alias", POSH_OBJ_BUFFER, &b), 0);
  assert_refs(b, 1, 1);
  assert_int_equal(posh_obj_close(b), 0);
  assert_int_equal(posh_obj_unbind(f->h, "alias"), 0);
  assert_stale(f->h, &ref);
  assert_int_equal(tu_check(f->h), 0);
  assert_int_equal(tu_bytes_in_use(f->h), f->base_bytes);
}

/* An anonymous object lives exactly as long as its handles, and a ref to a
 * freed object stays stale even when its memory is reused. */
static void test_anonymous_and_stale(void **state) {
  struct tu_heap_fx *f = *state;
  posh_obj_t *b = make_buffer(f->h, NULL, 64, 1);
  posh_obj_ref_t ref;
  posh_obj_ref(b, &ref);
  assert_refs(b, 1, 0);
  assert_int_equal(posh_obj_close(b), 0);
  assert_stale(f->h, &ref);
  /* Same size again: likely the same block, but a new id. */
  posh_obj_t *c = make_buffer(f->h, NULL, 64, 2);
  posh_obj_ref_t ref2;
  posh_obj_ref(c, &ref2);
  assert_int_not_equal(ref2.id, ref.id);
  assert_stale(f->h, &ref);
  posh_obj_t *c2;
  assert_int_equal(posh_obj_open_ref(f->h, &ref2, &c2), 0);
  assert_int_equal(posh_obj_close(c2), 0);
  assert_int_equal(posh_obj_close(c), 0);
  assert_int_equal(tu_bytes_in_use(f->h), f->base_bytes);
}

struct counter {
  int n;
};
static int count_visit(const posh_obj_info_t *info, void *arg) {
  struct counter *c = arg;
  if (info->ref.type == POSH_OBJ_BUFFER && info->processes >= 1)
    c->n++;
  return 0;
}
static int stop_visit(const posh_obj_info_t *info, void *arg) {
  (void)info;
  (void)arg;
  return 42;
}

/* foreach sees every live object and stops when asked. */
static void test_foreach(void **state) {
  struct tu_heap_fx *f = *state;
  posh_obj_t *o[5];
  for (int i = 0; i < 5; i++)
    o[i] = make_buffer(f->h, NULL, 16 * (size_t)i, i);
  struct counter c = {0};
  assert_int_equal(posh_obj_foreach(f->h, count_visit, &c), 0);
  assert_int_equal(c.n, 5);
  assert_int_equal(posh_obj_foreach(f->h, stop_visit, NULL), 42);
  for (int i = 0; i < 5; i++)
    posh_obj_close(o[i]);
  c.n = 0;
  assert_int_equal(posh_obj_foreach(f->h, count_visit, &c), 0);
  assert_int_equal(c.n, 0);
}

/* Every public function rejects bad arguments with a clear code. */
static void test_bad_input(void **state) {
  struct tu_heap_fx *f = *state;
  posh_obj_t *o = NULL;
  posh_obj_ref_t ref = {0};
  assert_int_equal(posh_obj_open(NULL, "x", 0, &o), POSH_EINVAL);
  assert_int_equal(posh_obj_open(f->h, NULL, 0, &o), POSH_EINVAL);
  assert_int_equal(posh_obj_open(f->h, "x", 0, NULL), POSH_EINVAL);
  assert_int_equal(posh_obj_open(f->h, "x", 999, &o), POSH_EINVAL);
  assert_int_equal(posh_obj_open(f->h, "missing", 0, &o), POSH_ENOENT);
  assert_int_equal(posh_obj_open_ref(f->h, NULL, &o), POSH_EINVAL);
  assert_int_equal(posh_obj_open_ref(f->h, &ref, &o), POSH_EINVAL);
  ref = (posh_obj_ref_t){8, 1, POSH_OBJ_BUFFER, 0};
  assert_int_equal(posh_obj_open_ref(f->h, &ref, &o), POSH_EFAULT);
  ref.off = posh_heap_capacity(f->h) + 4096;
  assert_int_equal(posh_obj_open_ref(f->h, &ref, &o), POSH_EFAULT);
  ref.reserved = 1;
  assert_int_equal(posh_obj_open_ref(f->h, &ref, &o), POSH_EINVAL);
  /* A plausible offset that is no object: stale. */
  void *blk = posh_aligned_alloc(f->h, 64, 256);
  assert_non_null(blk);
  memset(blk, 0, 256);
  ref = (posh_obj_ref_t){posh_off(f->h, blk).v, 1, POSH_OBJ_BUFFER, 0};
  assert_int_equal(posh_obj_open_ref(f->h, &ref, &o), POSH_ESTALE);
  posh_free(f->h, blk);
  /* Names: bound to a non-object, duplicates, missing. */
  assert_int_equal(posh_name_bind(f->h, "raw", (posh_off_t){f->h ? 4096 * 2 : 0}, 7), 0);
  assert_int_equal(posh_obj_open(f->h, "raw", 0, &o), POSH_ETYPE);
  assert_int_equal(posh_obj_unbind(f->h, "raw"), POSH_ETYPE);
  assert_int_equal(posh_name_unbind(f->h, "raw", POSH_OFF_NULL), 0);
  posh_obj_t *b = make_buffer(f->h, "b", 8, 0);
  assert_int_equal(posh_obj_open(f->h, "b", POSH_OBJ_QUEUE, &o), POSH_ETYPE);
  assert_int_equal(posh_obj_bind(b, "b"), POSH_EEXIST);
  assert_int_equal(posh_obj_bind(b, NULL), POSH_EINVAL);
  assert_int_equal(posh_obj_bind(NULL, "c"), POSH_EINVAL);
  assert_int_equal(posh_obj_unbind(f->h, "nope"), POSH_ENOENT);
  assert_int_equal(posh_obj_unbind(NULL, "b"), POSH_EINVAL);
  assert_refs(b, 1, 1); /* failures changed nothing */
  ref.reserved = 0;
  ref.type = POSH_OBJ_QUEUE;
  posh_obj_ref(b, &ref);
  ref.type = POSH_OBJ_DICT;
  assert_int_equal(posh_obj_open_ref(f->h, &ref, &o), POSH_ETYPE);
  /* The id of an object this process holds with another object's offset
   * (regression: accepted, giving a handle on the other object without a
   * reference to it). */
  posh_obj_t *b2 = make_buffer(f->h, NULL, 8, 0);
  posh_obj_ref_t r1, r2;
  assert_int_equal(posh_obj_ref(b, &r1), 0);
  assert_int_equal(posh_obj_ref(b2, &r2), 0);
  posh_obj_ref_t forged = r1;
  forged.off = r2.off;
  assert_int_equal(posh_obj_open_ref(f->h, &forged, &o), POSH_ESTALE);
  forged = r2;
  forged.off = r1.off;
  assert_int_equal(posh_obj_open_ref(f->h, &forged, &o), POSH_ESTALE);
  assert_refs(b, 1, 1);
  assert_int_equal(posh_obj_close(b2), 0);
  assert_int_equal(posh_obj_dup(NULL, &o), POSH_EINVAL);
  assert_int_equal(posh_obj_dup(b, NULL), POSH_EINVAL);
  assert_int_equal(posh_obj_ref(NULL, &ref), POSH_EINVAL);
  assert_int_equal(posh_obj_refs(NULL, NULL, NULL), POSH_EINVAL);
  assert_int_equal(posh_obj_type(NULL), POSH_EINVAL);
  assert_null(posh_obj_heap(NULL));
  assert_int_equal(posh_obj_off(NULL).v, 0);
  assert_string_equal(posh_obj_type_name(0), "?");
  assert_int_equal(posh_obj_foreach(NULL, count_visit, NULL), POSH_EINVAL);
  assert_int_equal(posh_obj_foreach(f->h, NULL, NULL), POSH_EINVAL);
  assert_int_equal(posh_obj_close(NULL), 0);
  /* Buffer arguments. */
  assert_int_equal(posh_buffer_create(NULL, NULL, 8, 0, &o), POSH_EINVAL);
  assert_int_equal(posh_buffer_create(f->h, NULL, 8, 0, NULL), POSH_EINVAL);
  assert_int_equal(posh_buffer_create(f->h, NULL, 8, 3, &o), POSH_EINVAL);
  assert_int_equal(posh_buffer_create(f->h, NULL, 8, 1u << 20, &o), POSH_EINVAL);
  assert_int_equal(posh_buffer_create(f->h, NULL, SIZE_MAX - 10, 0, &o), POSH_ENOMEM);
  assert_int_equal(posh_buffer_create(f->h, NULL, 1ull << 40, 0, &o), POSH_ENOMEM);
  assert_int_equal(posh_buffer_data(NULL, NULL, NULL), POSH_EINVAL);
  assert_int_equal(posh_buffer_create(f->h, "b", 8, 0, &o), POSH_EEXIST);
  posh_obj_close(b);
  assert_int_equal(posh_obj_unbind(f->h, "b"), 0);
  assert_int_equal(tu_check(f->h), 0);
  assert_int_equal(tu_bytes_in_use(f->h), f->base_bytes);
}

/* Alignment requests up to 64 KiB are honoured, and the bytes are zeroed. */
static void test_buffer_alignment(void **state) {
  struct tu_heap_fx *f = *state;
  for (size_t align = 1; align <= 65536; align <<= 1) {
    posh_obj_t *b;
    assert_int_equal(posh_buffer_create(f->h, NULL, 3000, align, &b), 0);
    unsigned char *d;
    size_t n;
    assert_int_equal(posh_buffer_data(b, (void **)&d, &n), 0);
    assert_int_equal(((uintptr_t)d) % (align < 64 ? 64 : align), 0);
    for (size_t i = 0; i < n; i++)
      assert_int_equal(d[i], 0);
    posh_obj_close(b);
  }
  posh_obj_t *z;
  assert_int_equal(posh_buffer_create(f->h, NULL, 0, 0, &z), 0);
  size_t n = 1;
  assert_int_equal(posh_buffer_data(z, NULL, &n), 0);
  assert_int_equal(n, 0);
  posh_obj_close(z);
  assert_int_equal(tu_bytes_in_use(f->h), f->base_bytes);
}

struct fork_arg {
  posh_obj_t *b;
  int to_parent, from_parent;
};

static int fork_child(void *p) {
  struct fork_arg *a = p;
  unsigned char *d;
  size_t n;
  /* First use of the inherited handle takes the child's own reference. */
  CHILD_CHECK_EQ(posh_buffer_data(a->b, (void **)&d, &n), 0);
  uint32_t procs;
  CHILD_CHECK_EQ(posh_obj_refs(a->b, &procs, NULL), 0);
  CHILD_CHECK_EQ(procs, 2);
  CHILD_CHECK_EQ(tu_write_byte(a->to_parent, 'R'), 0);
  CHILD_CHECK_EQ(tu_read_byte(a->from_parent, 10000), 'C'); /* parent closed */
  for (size_t i = 0; i < n; i++)
    CHILD_CHECK_EQ(d[i], 5);
  CHILD_CHECK_EQ(posh_obj_refs(a->b, &procs, NULL), 0);
  CHILD_CHECK_EQ(procs, 1);
  CHILD_CHECK_EQ(posh_obj_close(a->b), 0); /* the last reference */
  return 0;
}

/* A forked child's inherited handle keeps the object alive after the
 * parent closed its own; the child's close frees it. */
static void test_fork_inherits(void **state) {
  struct tu_heap_fx *f = *state;
  posh_obj_t *b = make_buffer(f->h, NULL, 4096, 5);
  posh_obj_ref_t ref;
  posh_obj_ref(b, &ref);
  int up[2], down[2];
  assert_int_equal(pipe(up), 0);
  assert_int_equal(pipe(down), 0);
  struct fork_arg a = {b, up[1], down[0]};
  pid_t pid = tu_fork(fork_child, &a);
  assert_true(pid > 0);
  assert_int_equal(tu_read_byte(up[0], 10000), 'R');
  assert_int_equal(posh_obj_close(b), 0);
  assert_int_equal(tu_write_byte(down[1], 'C'), 0);
  assert_int_equal(tu_wait(pid, 10000), 0);
  assert_stale(f->h, &ref);
  close(up[0]);
  close(up[1]);
  close(down[0]);
  close(down[1]);
  posh_heap_reap(f->h, NULL);
  assert_int_equal(tu_check(f->h), 0);
  assert_int_equal(tu_bytes_in_use(f->h), f->base_bytes);
}

struct early_arg {
  posh_obj_t *b;
  int from_parent;
};

static int early_close_child(void *p) {
  struct early_arg *a = p;
  CHILD_CHECK_EQ(tu_read_byte(a->from_parent, 10000), 'C'); /* parent closed */
  unsigned char *d;
  size_t n;
  CHILD_CHECK_EQ(posh_buffer_data(a->b, (void **)&d, &n), 0);
  for (size_t i = 0; i < n; i++)
    CHILD_CHECK_EQ(d[i], 4);
  uint32_t procs;
  CHILD_CHECK_EQ(posh_obj_refs(a->b, &procs, NULL), 0);
  CHILD_CHECK_EQ(procs, 1);
  CHILD_CHECK_EQ(posh_obj_close(a->b), 0); /* the last reference */
  return 0;
}

/* The usual multiprocessing pattern: start a child with a handle, then
 * close the handle in the parent before the child ever used it.  The child
 * holds its own reference from the fork on, so the object survives. */
static void test_fork_parent_closes_first(void **state) {
  struct tu_heap_fx *f = *state;
  posh_obj_t *b = make_buffer(f->h, NULL, 4096, 4);
  posh_obj_ref_t ref;
  posh_obj_ref(b, &ref);
  int down[2];
  assert_int_equal(pipe(down), 0);
  struct early_arg a = {b, down[0]};
  pid_t pid = tu_fork(early_close_child, &a);
  assert_true(pid > 0);
  assert_int_equal(posh_obj_close(b), 0);
  assert_int_equal(tu_write_byte(down[1], 'C'), 0);
  assert_int_equal(tu_wait(pid, 10000), 0);
  assert_stale(f->h, &ref);
  close(down[0]);
  close(down[1]);
  assert_int_equal(posh_heap_reap(f->h, NULL), 0);
  assert_int_equal(tu_check(f->h), 0);
  assert_int_equal(tu_bytes_in_use(f->h), f->base_bytes);
}

static int fork_unused_child(void *p) {
  (void)p;
  return 0; /* exits without touching the handle */
}

/* A forked child that never uses an inherited handle drops nothing: its
 * reference (taken at fork) goes when it is reaped; the parent's stays. */
static void test_fork_unused_handle(void **state) {
  struct tu_heap_fx *f = *state;
  posh_obj_t *b = make_buffer(f->h, NULL, 64, 1);
  pid_t pid = tu_fork(fork_unused_child, NULL);
  assert_int_equal(tu_wait(pid, 10000), 0);
  posh_heap_reap(f->h, NULL);
  assert_refs(b, 1, 0);
  posh_obj_close(b);
  assert_int_equal(tu_bytes_in_use(f->h), f->base_bytes);
}

/* A child sent SIGTERM the moment fork returned (what Pool.terminate does
 * to a worker just started) dies after adopting the slot claimed for it,
 * so the reaper frees that slot and its references.  Before signals were
 * held back between fork and the adoption, a child could die with the slot
 * still under the parent's identity: unreapable while the parent lives. */
static void test_fork_sigterm_at_once(void **state) {
  struct tu_heap_fx *f = *state;
  posh_obj_t *b = make_buffer(f->h, NULL, 64, 1);
  posh_heap_info_t info;
  for (int i = 0; i < 300; i++) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
      for (;;)
        pause();
    }
    assert_true(pid > 0);
    tu_kid_add(pid);
    kill(pid, SIGTERM);
    assert_int_equal(tu_wait(pid, 10000), TU_SIGNALED(SIGTERM));
  }
  unsigned reaped = 0;
  assert_int_equal(posh_heap_reap(f->h, &reaped), 0);
  assert_int_equal(posh_heap_info(f->h, &info), 0);
  assert_int_equal(info.attached, 1);
  assert_refs(b, 1, 0);
  posh_obj_close(b);
  assert_int_equal(tu_check(f->h), 0);
  assert_int_equal(tu_bytes_in_use(f->h), f->base_bytes);
}

/* An exec'd unrelated process opens objects by name and by reference, and
 * a reference to a freed object is stale there too. */
static void test_exec_child_opens(void **state) {
  struct tu_heap_fx *f = *state;
  posh_obj_t *b = make_buffer(f->h, "shared", 10000, 9);
  posh_obj_ref_t ref;
  posh_obj_ref(b, &ref);
  char off[32], id[32];
  snprintf(off, sizeof off, "%llu", (unsigned long long)ref.off);
  snprintf(id, sizeof id, "%llu", (unsigned long long)ref.id);
  const char *by_name[] = {f->name, "name", "shared", "9", "close", NULL};
  pid_t pid = spawn_object_child(by_name, -1, -1);
  assert_true(pid > 0);
  assert_int_equal(tu_wait(pid, 20000), 0);
  const char *by_ref[] = {f->name, "ref", off, id, "9", "close", NULL};
  pid = spawn_object_child(by_ref, -1, -1);
  assert_int_equal(tu_wait(pid, 20000), 0);
  assert_refs(b, 1, 1);
  posh_obj_close(b);
  assert_int_equal(posh_obj_unbind(f->h, "shared"), 0);
  const char *stale[] = {f->name, "ref", off, id, "9", "stale", NULL};
  pid = spawn_object_child(stale, -1, -1);
  assert_int_equal(tu_wait(pid, 20000), 0);
  assert_int_equal(tu_check(f->h), 0);
}

/* References of a process killed while holding an object are dropped by
 * the reaper, which frees the object when they were the last ones. */
static void test_killed_holder_reaped(void **state) {
  struct tu_heap_fx *f = *state;
  posh_obj_t *b = make_buffer(f->h, NULL, 2048, 3);
  posh_obj_ref_t ref;
  posh_obj_ref(b, &ref);
  char off[32], id[32];
  snprintf(off, sizeof off, "%llu", (unsigned long long)ref.off);
  snprintf(id, sizeof id, "%llu", (unsigned long long)ref.id);
  int in[2], out[2];
  assert_int_equal(pipe(in), 0);
  assert_int_equal(pipe(out), 0);
  const char *args[] = {f->name, "ref", off, id, "3", "hold", NULL};
  pid_t pid = spawn_object_child(args, in[0], out[1]);
  assert_true(pid > 0);
  close(in[0]);
  close(out[1]);
  assert_int_equal(tu_read_byte(out[0], 20000), 'R');
  assert_refs(b, 2, 0);
  assert_int_equal(posh_obj_close(b), 0); /* the child still holds it */
  posh_obj_t *again;
  assert_int_equal(posh_obj_open_ref(f->h, &ref, &again), 0);
  assert_refs(again, 2, 0);
  posh_obj_close(again);
  kill(pid, SIGKILL);
  assert_int_equal(tu_wait(pid, 10000), TU_SIGNALED(SIGKILL));
  unsigned reaped = 0;
  assert_int_equal(posh_heap_reap(f->h, &reaped), 0);
  assert_int_equal(reaped, 1);
  assert_stale(f->h, &ref);
  close(in[1]);
  close(out[0]);
  assert_int_equal(tu_check(f->h), 0);
  assert_int_equal(tu_bytes_in_use(f->h), f->base_bytes);
}

static void assert_pins(posh_obj_t *o, uint32_t pins) {
  posh_obj_info_t info;
  memset(&info, 0xff, sizeof info);
  assert_int_equal(posh_obj_stat(o, &info), 0);
  assert_int_equal(info.pins, pins);
  assert_int_equal(info.reserved, 0);
}

/* A pin keeps an object with no handle and no name alive; the last unpin
 * frees it; unpinning what is not pinned, or is gone, changes nothing. */
static void test_pins(void **state) {
  struct tu_heap_fx *f = *state;
  posh_obj_t *b = make_buffer(f->h, NULL, 512, 9);
  posh_obj_ref_t ref;
  posh_obj_ref(b, &ref);
  assert_pins(b, 0);
  assert_int_equal(posh_obj_unpin(f->h, &ref), POSH_EINVAL); /* no pin */
  assert_int_equal(posh_obj_pin(b), 0);
  assert_int_equal(posh_obj_pin(b), 0);
  assert_pins(b, 2);
  posh_obj_info_t info;
  assert_int_equal(posh_obj_stat(b, &info), 0);
  assert_int_equal(info.ref.off, ref.off);
  assert_int_equal(info.ref.id, ref.id);
  assert_int_equal(info.processes, 1);
  assert_int_equal(info.names, 0);
  assert_int_equal(posh_obj_close(b), 0);
  /* Held by pins only. */
  assert_int_equal(posh_obj_open_ref(f->h, &ref, &b), 0);
  assert_pins(b, 2);
  assert_int_equal(posh_obj_close(b), 0);
  posh_obj_ref_t wrong = ref;
  wrong.type = POSH_OBJ_QUEUE;
  assert_int_equal(posh_obj_unpin(f->h, &wrong), POSH_ETYPE);
  assert_int_equal(posh_obj_unpin(f->h, &ref), 0);
  assert_int_equal(tu_check(f->h), 0);
  assert_int_equal(posh_obj_unpin(f->h, &ref), 0); /* the last reference */
  assert_stale(f->h, &ref);
  assert_int_equal(posh_obj_unpin(f->h, &ref), POSH_ESTALE);
  assert_int_equal(tu_check(f->h), 0);
  assert_int_equal(tu_bytes_in_use(f->h), f->base_bytes);
  /* Bad input. */
  assert_int_equal(posh_obj_pin(NULL), POSH_EINVAL);
  assert_int_equal(posh_obj_unpin(NULL, &ref), POSH_EINVAL);
  assert_int_equal(posh_obj_unpin(f->h, NULL), POSH_EINVAL);
  posh_obj_ref_t bad = {1, ref.id, POSH_OBJ_BUFFER, 0};
  assert_int_equal(posh_obj_unpin(f->h, &bad), POSH_EFAULT);
  bad = ref;
  bad.id = 0;
  assert_int_equal(posh_obj_unpin(f->h, &bad), POSH_EINVAL);
  bad = ref;
  bad.reserved = 1;
  assert_int_equal(posh_obj_unpin(f->h, &bad), POSH_EINVAL);
  assert_int_equal(posh_obj_stat(NULL, &info), POSH_EINVAL);
}

struct pin_arg {
  posh_heap_t *h;
  posh_obj_ref_t ref;
};

static int pin_and_die_child(void *p) {
  struct pin_arg *a = p;
  posh_obj_t *b;
  CHILD_CHECK_EQ(posh_obj_open_ref(a->h, &a->ref, &b), 0);
  CHILD_CHECK_EQ(posh_obj_pin(b), 0);
  raise(SIGKILL); /* the pin outlives its writer */
  return 1;
}

static int pinned_visit(const posh_obj_info_t *info, void *arg) {
  const posh_obj_ref_t *ref = arg;
  return info->ref.id == ref->id ? (int)info->pins + 1 : 0;
}

/* A pin written by a process that was killed afterwards stays (the data
 * holding the reference is still there), and an unrelated process can drop
 * it: the object is freed then. */
static void test_pin_outlives_process(void **state) {
  struct tu_heap_fx *f = *state;
  posh_obj_t *b = make_buffer(f->h, NULL, 300, 6);
  struct pin_arg a = {f->h, {0}};
  posh_obj_ref(b, &a.ref);
  assert_int_equal(posh_obj_close(b), 0); /* the fork gives the child one */
  assert_stale(f->h, &a.ref);
  b = make_buffer(f->h, NULL, 300, 6);
  posh_obj_ref(b, &a.ref);
  pid_t pid = tu_fork(pin_and_die_child, &a);
  assert_true(pid > 0);
  assert_int_equal(tu_wait(pid, 10000), TU_SIGNALED(SIGKILL));
  assert_int_equal(posh_obj_close(b), 0);
  unsigned reaped = 0;
  assert_int_equal(posh_heap_reap(f->h, &reaped), 0);
  assert_int_equal(reaped, 1);
  /* Only the dead child's pin holds it. */
  assert_int_equal(posh_obj_foreach(f->h, pinned_visit, &a.ref), 2);
  assert_int_equal(tu_check(f->h), 0);
  char off[32], id[32];
  snprintf(off, sizeof off, "%llu", (unsigned long long)a.ref.off);
  snprintf(id, sizeof id, "%llu", (unsigned long long)a.ref.id);
  const char *args[] = {f->name, "ref", off, id, "6", "unpin", NULL};
  pid = spawn_object_child(args, -1, -1);
  assert_true(pid > 0);
  assert_int_equal(tu_wait(pid, 20000), 0);
  assert_stale(f->h, &a.ref);
  assert_int_equal(tu_check(f->h), 0);
  assert_int_equal(tu_bytes_in_use(f->h), f->base_bytes);
}

static int many_child(void *p) {
  posh_heap_t *h = p;
  for (int i = 0; i < 150; i++) {
    posh_obj_t *b;
    CHILD_CHECK_EQ(posh_buffer_create(h, NULL, (size_t)i * 10, 0, &b), 0);
  }
  raise(SIGKILL);
  return 1;
}

/* A killed process's many objects (more than one reaper batch) are all
 * freed by one reap. */
static void test_killed_creator_many(void **state) {
  struct tu_heap_fx *f = *state;
  pid_t pid = tu_fork(many_child, f->h);
  assert_int_equal(tu_wait(pid, 20000), TU_SIGNALED(SIGKILL));
  struct counter c = {0};
  assert_int_equal(posh_obj_foreach(f->h, count_visit, &c), 0);
  assert_int_equal(c.n, 150);
  assert_int_equal(posh_heap_reap(f->h, NULL), 0);
  c.n = 0;
  assert_int_equal(posh_obj_foreach(f->h, count_visit, &c), 0);
  assert_int_equal(c.n, 0);
  assert_int_equal(tu_check(f->h), 0);
  assert_int_equal(tu_bytes_in_use(f->h), f->base_bytes);
}

static int die_child(void *p) {
  (void)p;
  raise(SIGKILL);
  return 1;
}

/* A damaged object list, as a faulty process's stray writes leave it (a
 * holder bitmap outside the heap, a cycle, a misaligned link), makes the
 * walks report POSH_ECORRUPT instead of faulting or spinning, the check
 * says so, and a dead process's slot stays DEAD (its references cannot be
 * dropped for sure) until the list is whole again. */
static void test_damaged_list(void **state) {
  struct tu_heap_fx *f = *state;
  posh_obj_t *a = make_buffer(f->h, NULL, 64, 1);
  posh_obj_t *b = make_buffer(f->h, NULL, 64, 2);
  posh_obj_t *c = make_buffer(f->h, NULL, 64, 3);
  posh__obj_hdr_t *oa = a->hdr, *ob = b->hdr, *oc = c->hdr;
  struct counter n = {0};
  char report[512];
  uint32_t procs;

  uint64_t holders = ob->holders_off;
  ob->holders_off = 8; /* inside the header: not a bitmap */
  assert_int_equal(posh_obj_foreach(f->h, count_visit, &n), POSH_ECORRUPT);
  assert_int_equal(posh_obj_refs(b, &procs, NULL), POSH_ECORRUPT);
  assert_int_equal(posh_heap_check(f->h, report, sizeof report), POSH_ECORRUPT);
  posh_obj_ref_t ref;
  posh_obj_ref(b, &ref);
  posh_obj_t *again = NULL;
  /* A forked child holds a, b and c from the fork on; it dies at once. */
  pid_t pid = tu_fork(die_child, NULL);
  assert_int_equal(tu_wait(pid, 10000), TU_SIGNALED(SIGKILL));
  unsigned reaped = 99;
  assert_int_equal(posh_heap_reap(f->h, &reaped), 0);
  assert_int_equal(reaped, 0); /* b's holders unknown: the slot waits */
  ob->holders_off = holders;
  assert_int_equal(posh_heap_reap(f->h, &reaped), 0);
  assert_int_equal(reaped, 1);
  assert_refs(b, 1, 0);
  assert_int_equal(posh_obj_open_ref(f->h, &ref, &again), 0);
  posh_obj_close(again);

  uint64_t next = oa->next;
  oa->next = posh__off_of(f->h, oc); /* a -> c -> b -> a ... */
  n.n = 0;
  assert_int_equal(posh_obj_foreach(f->h, count_visit, &n), POSH_ECORRUPT);
  assert_int_equal(posh_heap_check(f->h, report, sizeof report), POSH_ECORRUPT);
  oa->next = next;

  next = oc->next;
  oc->next = posh__off_of(f->h, ob) + 8; /* misaligned */
  n.n = 0;
  assert_int_equal(posh_obj_foreach(f->h, count_visit, &n), POSH_ECORRUPT);
  assert_int_equal(posh_heap_check(f->h, report, sizeof report), POSH_ECORRUPT);
  oc->next = next;

  n.n = 0;
  assert_int_equal(posh_obj_foreach(f->h, count_visit, &n), 0);
  assert_int_equal(n.n, 3);
  posh_obj_close(a);
  posh_obj_close(b);
  posh_obj_close(c);
  assert_int_equal(tu_check(f->h), 0);
  assert_int_equal(tu_bytes_in_use(f->h), f->base_bytes);
}

struct lock_arg {
  posh_heap_t *h;
  uint64_t off;
  int what; /* 0: die mid name count, 1: die mid link, 2: mid unlink */
};

static int lock_killer(void *p) {
  struct lock_arg *a = p;
  posh_heap_t *h = a->h;
  int err = 0;
  uint32_t tok = posh__self_token(h, &err);
  CHILD_CHECK(tok != 0);
  posh__hdr_t *hdr = h->hdr;
  CHILD_CHECK_EQ(posh__lock_acquire(h, &hdr->obj_lock, tok, -1), 0);
  posh__obj_hdr_t *o = posh__at(h, a->off);
  if (a->what == 0) {
    hdr->obj_log_off = a->off;
    hdr->obj_log_op = POSH__OBJ_LOG_NAMES;
    o->names = 77; /* half-way: the count is wrong */
  } else if (a->what == 1) {
    /* A new object, our holder bit set, linked half-way: its next points
     * at the head but the head does not point at it yet. */
    posh__obj_hdr_t *n = posh__obj_alloc(h, POSH_OBJ_BUFFER, 0, 64, 0, &err);
    CHILD_CHECK(n != NULL);
    n->id = ++hdr->obj_serial;
    uint32_t s = (uint32_t)posh_heap_self_slot(h);
    ((uint64_t *)posh__at(h, n->holders_off))[s / 64] |= 1ull << (s % 64);
    n->next = hdr->obj_head;
    hdr->obj_log_off = posh__off_of(h, n);
    hdr->obj_log_op = POSH__OBJ_LOG_LINK;
  } else {
    /* Unlinking a (live) object half-way: its magic cleared, the list not
     * yet changed. */
    hdr->obj_log_off = a->off;
    hdr->obj_log_op = POSH__OBJ_LOG_UNLINK;
    posh_atomic32_store_relaxed(&o->xmagic, 0);
  }
  raise(SIGKILL);
  return 1;
}

/* A process killed holding the object lock in the middle of a name count,
 * a link or an unlink: the next holder finishes the change from the intent
 * record, and the heap checks clean. */
static void test_obj_lock_repair(void **state) {
  struct tu_heap_fx *f = *state;
  posh_obj_t *keep = make_buffer(f->h, NULL, 64, 0);
  posh_obj_t *b = make_buffer(f->h, "named", 64, 0);
  struct lock_arg a = {f->h, posh_obj_off(b).v, 0};
  pid_t pid = tu_fork(lock_killer, &a);
  assert_int_equal(tu_wait(pid, 20000), TU_SIGNALED(SIGKILL));
  assert_int_equal(posh_heap_reap(f->h, NULL), 0); /* its fork reference */
  assert_refs(b, 1, 1); /* recounted from the directory */

  a.what = 1;
  pid = tu_fork(lock_killer, &a);
  assert_int_equal(tu_wait(pid, 20000), TU_SIGNALED(SIGKILL));
  struct counter c = {0};
  assert_int_equal(posh_obj_foreach(f->h, count_visit, &c), 0);
  assert_int_equal(c.n, 3); /* the link was completed */
  assert_int_equal(posh_heap_reap(f->h, NULL), 0);
  c.n = 0;
  assert_int_equal(posh_obj_foreach(f->h, count_visit, &c), 0);
  assert_int_equal(c.n, 2); /* and its dead creator's reference dropped */
  assert_int_equal(tu_check(f->h), 0);

  /* Unlink completed: the object leaves the list (its blocks leak: the
   * documented window), the other objects are intact. */
  posh_obj_t *victim = make_buffer(f->h, NULL, 64, 0);
  a.off = posh_obj_off(victim).v;
  a.what = 2;
  pid = tu_fork(lock_killer, &a);
  assert_int_equal(tu_wait(pid, 20000), TU_SIGNALED(SIGKILL));
  c.n = 0;
  assert_int_equal(posh_obj_foreach(f->h, count_visit, &c), 0);
  assert_int_equal(c.n, 2);
  char report[512];
  assert_int_equal(posh_heap_check(f->h, report, sizeof report), 0);
  free(victim); /* the handle only: its object is gone */
  posh_obj_close(b);
  posh_obj_close(keep);
  assert_int_equal(posh_obj_unbind(f->h, "named"), 0);
  assert_int_equal(tu_check(f->h), 0);
}

struct thread_arg {
  posh_heap_t *h;
  posh_obj_ref_t ref;
  int fails;
};

static void *open_close_thread(void *p) {
  struct thread_arg *a = p;
  for (int i = 0; i < 2000; i++) {
    posh_obj_t *o;
    if (posh_obj_open_ref(a->h, &a->ref, &o) != 0) {
      a->fails++;
      continue;
    }
    void *d;
    if (posh_buffer_data(o, &d, NULL) != 0)
      a->fails++;
    if (posh_obj_close(o) != 0)
      a->fails++;
  }
  return NULL;
}

/* Threads opening and closing handles of one object concurrently never
 * free it from under each other. */
static void test_threads_open_close(void **state) {
  struct tu_heap_fx *f = *state;
  posh_obj_t *b = make_buffer(f->h, NULL, 64, 0);
  struct thread_arg a[4];
  pthread_t t[4];
  for (int i = 0; i < 4; i++) {
    a[i] = (struct thread_arg){f->h, {0}, 0};
    posh_obj_ref(b, &a[i].ref);
    assert_int_equal(pthread_create(&t[i], NULL, open_close_thread, &a[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(t[i], NULL);
    assert_int_equal(a[i].fails, 0);
  }
  assert_refs(b, 1, 0);
  posh_obj_close(b);
  assert_int_equal(tu_check(f->h), 0);
}

/* A sync owner destroys its sync object with its last reference, keeps
 * the owner it depends on alive until then, and rejects bad arguments. */
static void test_sync_owner(void **state) {
  struct tu_heap_fx *f = *state;
  posh_off_t lk, cv, off;
  uint32_t type;
  assert_int_equal(posh_lock_create(f->h, NULL, 0, &lk), 0);
  assert_int_equal(posh_cond_create(f->h, NULL, lk, 0, &cv), 0);
  posh_obj_t *lo, *co;
  assert_int_equal(posh_sync_own(f->h, lk, NULL, &lo), 0);
  assert_int_equal(posh_sync_own(f->h, cv, lo, &co), 0);
  assert_int_equal(posh_sync_owned(co, &off), 0);
  assert_int_equal(off.v, cv.v);
  assert_int_equal(posh_obj_type(co), POSH_OBJ_SYNC);
  /* The Condition's owner keeps the Lock's alive. */
  assert_int_equal(posh_obj_close(lo), 0);
  assert_int_equal(posh_sync_type(f->h, lk, &type), 0);
  assert_int_equal(posh_lock_acquire(f->h, lk, 0), 0);
  assert_int_equal(posh_lock_release(f->h, lk), 0);
  assert_int_equal(posh_obj_close(co), 0);
  assert_int_not_equal(posh_sync_type(f->h, cv, &type), 0);
  assert_int_not_equal(posh_sync_type(f->h, lk, &type), 0);
  assert_int_equal(tu_bytes_in_use(f->h), f->base_bytes);
  /* Bad input. */
  posh_obj_t *b = make_buffer(f->h, NULL, 8, 0);
  assert_int_equal(posh_lock_create(f->h, NULL, 0, &lk), 0);
  assert_int_equal(posh_sync_own(NULL, lk, NULL, &lo), POSH_EINVAL);
  assert_int_equal(posh_sync_own(f->h, lk, NULL, NULL), POSH_EINVAL);
  assert_int_equal(posh_sync_own(f->h, POSH_OFF_NULL, NULL, &lo), POSH_EINVAL);
  assert_int_equal(posh_sync_own(f->h, lk, b, &lo), POSH_ETYPE);
  assert_int_equal(posh_sync_owned(b, &off), POSH_ETYPE);
  assert_int_equal(posh_sync_owned(NULL, &off), POSH_EINVAL);
  posh_obj_close(b);
  assert_int_equal(posh_sync_destroy(f->h, lk), 0);
  assert_int_equal(tu_check(f->h), 0);
}

int main(int argc, char **argv) {
  tu_init(argc, argv);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_lifetime, setup, teardown),
      cmocka_unit_test_setup_teardown(test_anonymous_and_stale, setup, teardown),
      cmocka_unit_test_setup_teardown(test_foreach, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
      cmocka_unit_test_setup_teardown(test_buffer_alignment, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fork_inherits, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fork_parent_closes_first, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fork_unused_handle, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fork_sigterm_at_once, setup, teardown),
      cmocka_unit_test_setup_teardown(test_exec_child_opens, setup, teardown),
      cmocka_unit_test_setup_teardown(test_killed_holder_reaped, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pins, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pin_outlives_process, setup, teardown),
      cmocka_unit_test_setup_teardown(test_killed_creator_many, setup, teardown),
      cmocka_unit_test_setup_teardown(test_obj_lock_repair, setup, teardown),
      cmocka_unit_test_setup_teardown(test_threads_open_close, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sync_owner, setup, teardown),
      cmocka_unit_test_setup_teardown(test_damaged_list, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, tu_group_teardown);
}
