/* SPDX-License-Identifier: MIT */
/*
 * This file contains the tests of Value and Array (objects/value.c): every
 * type code, alignment and layout of the data, the recursive lock (with
 * POSH_EOWNERDEAD after a holder is killed), exact totals of concurrent
 * locked increments and lock-free adds from forked and exec'd processes
 * (tests/list_child, attached by name), Array ranges, and bad input.
 * POSH_TEST_VALUE_INCR sets the increments per process (default 20000).
 */
#define LIST_CHILD_NO_MAIN
#include "list_child.c"

#include <cmocka.h>
#include <pthread.h>

static int setup(void **state) {
  return tu_heap_fx_setup(state, "value", 64ull << 20);
}

static int teardown(void **state) { return tu_heap_fx_teardown(state); }

static const char codes[] = "cbBhHiIlLqQfd";

/* Proves: every type code has multiprocessing's size, values round-trip
 * with and without a lock, data is 64-byte aligned and zeroed, the lock is
 * on another cache line than the data, integer adds wrap at the type's
 * width, float adds work, and bad codes are refused. */
static void test_types(void **state) {
  struct tu_heap_fx *f = *state;
  static const int sizes[] = {1, 1, 1, 2, 2, 4, 4, (int)sizeof(long),
                              (int)sizeof(long), 8, 8, 4, 8};
  for (int lock = 0; lock <= 1; lock++)
    for (size_t c = 0; c < sizeof codes - 1; c++) {
      posh_obj_t *v;
      assert_int_equal(posh_value_itemsize(codes[c]), sizes[c]);
      assert_int_equal(posh_value_create(f->h, NULL, codes[c], lock, &v), 0);
      void *p;
      size_t size;
      char tc;
      assert_int_equal(posh_value_data(v, &p, &size), 0);
      assert_int_equal(size, sizes[c]);
      assert_int_equal((uintptr_t)p % 64, 0);
      /* The lock word sits in the object before the data, on another line. */
      assert_true((uintptr_t)p - (uintptr_t)posh_ptr(f->h, posh_obj_off(v)) >= 128);
      assert_int_equal(posh_value_typecode(v, &tc), 0);
      assert_int_equal(tc, codes[c]);
      assert_int_equal(posh_value_has_lock(v), lock);
      unsigned char in[8] = {0}, out[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
      assert_int_equal(posh_value_load(v, out), 0);
      for (int i = 0; i < sizes[c]; i++)
        assert_int_equal(out[i], 0);
      for (int i = 0; i < 8; i++)
        in[i] = (unsigned char)(0x11 * (i + 1));
      if (codes[c] == 'f') {
        float x = 1.5f;
        memcpy(in, &x, 4);
      } else if (codes[c] == 'd') {
        double x = 2.25;
        memcpy(in, &x, 8);
      }
      assert_int_equal(posh_value_store(v, in), 0);
      assert_int_equal(posh_value_load(v, out), 0);
      assert_memory_equal(in, out, (size_t)sizes[c]);
      if (codes[c] == 'f' || codes[c] == 'd') {
        double res;
        assert_int_equal(posh_value_add_f64(v, 0.5, &res), 0);
        assert_true(res == (codes[c] == 'f' ? 2.0 : 2.75));
        assert_int_equal(posh_value_add_i64(v, 1, NULL), POSH_EINVAL);
      } else if (codes[c] == 'c') {
        assert_int_equal(posh_value_add_i64(v, 1, NULL), POSH_EINVAL);
      } else {
        assert_int_equal(posh_value_add_f64(v, 1, NULL), POSH_EINVAL);
        memset(in, 0, sizeof in);
        assert_int_equal(posh_value_store(v, in), 0);
        int64_t res;
        assert_int_equal(posh_value_add_i64(v, -1, &res), 0);
        int is_signed = codes[c] == 'b' || codes[c] == 'h' || codes[c] == 'i' ||
                        codes[c] == 'l' || codes[c] == 'q';
        if (is_signed || sizes[c] == 8)
          assert_int_equal(res, -1);
        else
          assert_int_equal(res, (int64_t)((1ull << (8 * sizes[c])) - 1));
        assert_int_equal(posh_value_add_i64(v, 2, &res), 0);
        assert_int_equal(res, 1);
        if (codes[c] == 'b') { /* 127 + 1 wraps to -128 */
          assert_int_equal(posh_value_add_i64(v, 126, &res), 0);
          assert_int_equal(posh_value_add_i64(v, 1, &res), 0);
          assert_int_equal(res, -128);
        }
      }
      assert_int_equal(posh_obj_close(v), 0);
    }
  posh_obj_t *v;
  assert_int_equal(posh_value_itemsize('x'), POSH_EINVAL);
  assert_int_equal(posh_value_create(f->h, NULL, 'x', 1, &v), POSH_EINVAL);
  assert_int_equal(posh_value_create(f->h, NULL, 'u', 0, &v), POSH_EINVAL);
  assert_int_equal(posh_array_create(f->h, NULL, 'Z', 4, 1, &v), POSH_EINVAL);
  assert_int_equal(posh_value_create(f->h, NULL, 'i', 2, &v), POSH_EINVAL);
  assert_int_equal(tu_check(f->h), 0);
}

/* Proves: Array data is aligned, zeroed and directly addressable; ranges
 * read and write with bounds (POSH_ERANGE); zero-length arrays work; an
 * exec'd process that opens the Array by name writes what we read. */
static void test_array(void **state) {
  struct tu_heap_fx *f = *state;
  posh_obj_t *a, *z;
  assert_int_equal(posh_array_create(f->h, "arr", 'i', 1000, 1, &a), 0);
  int32_t *d;
  size_t n, isz;
  assert_int_equal(posh_array_data(a, (void **)&d, &n, &isz), 0);
  assert_int_equal(n, 1000);
  assert_int_equal(isz, 4);
  assert_int_equal((uintptr_t)d % 64, 0);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(d[i], 0);
  int32_t buf[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, out[10];
  assert_int_equal(posh_array_write(a, 990, 10, buf), 0);
  assert_int_equal(posh_array_write(a, 991, 10, buf), POSH_ERANGE);
  assert_int_equal(posh_array_write(a, 1001, 0, buf), POSH_ERANGE);
  assert_int_equal(posh_array_read(a, 995, 5, out), 0);
  assert_memory_equal(out, buf + 5, 5 * sizeof(int32_t));
  assert_int_equal(posh_array_read(a, SIZE_MAX, 2, out), POSH_ERANGE);
  assert_int_equal(posh_array_read(a, 1000, 0, out), 0);
  assert_int_equal(d[999], 10);
  const char *args[] = {"array", f->name, "arr", "77", NULL};
  char path[PATH_MAX + 32];
  const char *dir = getenv("POSH_TEST_BINDIR");
  snprintf(path, sizeof path, "%s/list_child", dir && *dir ? dir : tu_argv0_dir);
  const char *argv[6] = {path, args[0], args[1], args[2], args[3], NULL};
  extern char **environ;
  pid_t pid;
  fflush(stderr);
  assert_int_equal(posix_spawn(&pid, path, NULL, NULL, (char *const *)argv, environ), 0);
  tu_kid_add(pid);
  assert_int_equal(tu_wait(pid, 30000), 0);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(d[i], 77 + (int)i);
  /* Without a lock, and of length 0. */
  assert_int_equal(posh_array_create(f->h, NULL, 'd', 0, 0, &z), 0);
  assert_int_equal(posh_array_data(z, NULL, &n, &isz), 0);
  assert_int_equal(n, 0);
  assert_int_equal(isz, 8);
  assert_int_equal(posh_array_read(z, 0, 0, NULL), 0);
  assert_int_equal(posh_array_read(z, 0, 1, out), POSH_ERANGE);
  assert_int_equal(posh_value_lock(z, 0), POSH_ENOSYS);
  assert_int_equal(posh_obj_close(z), 0);
  assert_int_equal(posh_obj_close(a), 0);
  assert_int_equal(posh_obj_unbind(f->h, "arr"), 0);
  assert_int_equal(tu_check(f->h), 0);
}

static void *other_thread(void *arg) {
  posh_obj_t *v = arg;
  intptr_t r1 = posh_value_lock(v, 0);
  intptr_t r2 = posh_value_unlock(v);
  intptr_t r3 = posh_value_lock(v, 20 * 1000000ll); /* 20 ms */
  intptr_t ok = r1 == POSH_EAGAIN && r2 == POSH_EPERM && r3 == POSH_ETIMEDOUT;
  return (void *)ok;
}

/* Proves: the lock is recursive, owned per thread (another thread gets
 * POSH_EAGAIN / POSH_ETIMEDOUT and cannot unlock it), works on Arrays
 * too, and objects without a lock refuse it with POSH_ENOSYS. */
static void test_lock(void **state) {
  struct tu_heap_fx *f = *state;
  posh_obj_t *v, *raw;
  assert_int_equal(posh_value_create(f->h, NULL, 'q', 1, &v), 0);
  assert_int_equal(posh_value_lock_owned(v), 0);
  assert_int_equal(posh_value_unlock(v), POSH_EPERM);
  assert_int_equal(posh_value_lock(v, -1), 0);
  assert_int_equal(posh_value_lock(v, 0), 0);
  assert_int_equal(posh_value_lock_owned(v), 2);
  int64_t x = 5;
  assert_int_equal(posh_value_store(v, &x), 0); /* recursion inside */
  pthread_t t;
  void *ok;
  assert_int_equal(pthread_create(&t, NULL, other_thread, v), 0);
  assert_int_equal(pthread_join(t, &ok), 0);
  assert_ptr_equal(ok, (void *)1);
  assert_int_equal(posh_value_unlock(v), 0);
  assert_int_equal(posh_value_lock_owned(v), 1);
  assert_int_equal(posh_value_unlock(v), 0);
  assert_int_equal(posh_value_unlock(v), POSH_EPERM);
  assert_int_equal(posh_value_create(f->h, NULL, 'q', 0, &raw), 0);
  assert_int_equal(posh_value_lock(raw, -1), POSH_ENOSYS);
  assert_int_equal(posh_value_unlock(raw), POSH_ENOSYS);
  assert_int_equal(posh_value_lock_owned(raw), POSH_ENOSYS);
  posh_obj_t *a;
  assert_int_equal(posh_array_create(f->h, NULL, 'B', 7, 1, &a), 0);
  assert_int_equal(posh_value_lock(a, -1), 0);
  assert_int_equal(posh_array_write(a, 0, 7, "abcdefg"), 0); /* recursion */
  assert_int_equal(posh_value_unlock(a), 0);
  assert_int_equal(posh_value_lock_owned(a), 0);
  assert_int_equal(posh_obj_close(a), 0);
  assert_int_equal(posh_obj_close(raw), 0);
  assert_int_equal(posh_obj_close(v), 0);
}

struct incr_arg {
  posh_obj_t *v;
  long n;
  int add;
};
static int incr_child(void *p) {
  struct incr_arg *a = p;
  return a->add ? lc_add_worker(a->v, a->n) : lc_incr_worker(a->v, a->n);
}

static pid_t spawn_list_child(const char *const *args) {
  char path[PATH_MAX + 32];
  const char *dir = getenv("POSH_TEST_BINDIR");
  snprintf(path, sizeof path, "%s/list_child", dir && *dir ? dir : tu_argv0_dir);
  const char *argv[8];
  int n = 0;
  argv[n++] = path;
  for (int i = 0; args[i] && n < 7; i++)
    argv[n++] = args[i];
  argv[n] = NULL;
  extern char **environ;
  pid_t pid;
  fflush(stdout);
  fflush(stderr);
  if (posix_spawn(&pid, path, NULL, NULL, (char *const *)argv, environ) != 0)
    return -1;
  tu_kid_add(pid);
  return pid;
}

/* Proves: locked read-modify-write increments of a Value from two forked
 * and two exec'd processes, and lock-free posh_value_add_i64 on a RawValue
 * and on a locked one, all give the exact total. */
static void test_concurrent_increments(void **state) {
  struct tu_heap_fx *f = *state;
  const char *e = getenv("POSH_TEST_VALUE_INCR");
  long n = e && *e ? atol(e) : 20000;
  static const struct {
    const char *name, *mode;
    int lock, add;
  } runs[] = {{"locked", "incr", 1, 0}, {"raw", "add", 0, 1}, {"locked_add", "add", 1, 1}};
  for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
    posh_obj_t *v;
    assert_int_equal(posh_value_create(f->h, runs[r].name, 'q', runs[r].lock, &v), 0);
    struct incr_arg arg = {v, n, runs[r].add};
    pid_t pids[4];
    pids[0] = tu_fork(incr_child, &arg);
    pids[1] = tu_fork(incr_child, &arg);
    char nb[32];
    snprintf(nb, sizeof nb, "%ld", n);
    const char *args[] = {runs[r].mode, f->name, runs[r].name, nb, NULL};
    pids[2] = spawn_list_child(args);
    pids[3] = spawn_list_child(args);
    for (int i = 0; i < 4; i++) {
      assert_true(pids[i] > 0);
      assert_int_equal(tu_wait(pids[i], 120000), 0);
    }
    int64_t x;
    assert_int_equal(posh_value_load(v, &x), 0);
    assert_int_equal(x, 4 * n);
    assert_int_equal(posh_obj_close(v), 0);
    assert_int_equal(posh_obj_unbind(f->h, runs[r].name), 0);
  }
  assert_int_equal(posh_heap_reap(f->h, NULL), 0);
  assert_int_equal(tu_check(f->h), 0);
}

/* Proves: a holder killed inside the (recursively taken) lock, after a
 * half update, does not hang anyone: the next locker gets POSH_EOWNERDEAD
 * with the lock held once and sees the half-updated data; the lock is
 * consistent again afterwards (plain 0), many times over. */
static void test_owner_death(void **state) {
  struct tu_heap_fx *f = *state;
  posh_obj_t *v;
  assert_int_equal(posh_value_create(f->h, "held", 'q', 1, &v), 0);
  for (int round = 0; round < 5; round++) {
    int64_t zero = 0;
    assert_int_equal(posh_value_store(v, &zero), 0);
    int out[2];
    assert_int_equal(pipe(out), 0);
    char path[PATH_MAX + 32];
    const char *dir = getenv("POSH_TEST_BINDIR");
    snprintf(path, sizeof path, "%s/list_child", dir && *dir ? dir : tu_argv0_dir);
    const char *argv[] = {path, "hold", f->name, "held", NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    extern char **environ;
    pid_t pid;
    fflush(stdout);
    assert_int_equal(posix_spawn(&pid, path, &fa, NULL, (char *const *)argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    tu_kid_add(pid);
    close(out[1]);
    assert_int_equal(tu_read_byte(out[0], 20000), 'R');
    close(out[0]);
    assert_int_equal(posh_value_lock(v, 0), POSH_EAGAIN);
    assert_int_equal(tu_kill(pid), TU_SIGNALED(SIGKILL));
    if (round % 2)
      assert_int_equal(posh_heap_reap(f->h, NULL), 0);
    assert_int_equal(posh_value_lock(v, 10ll * 1000000000), POSH_EOWNERDEAD);
    assert_int_equal(posh_value_lock_owned(v), 1);
    int64_t x;
    assert_int_equal(posh_value_load(v, &x), 0); /* recursive, consistent */
    assert_int_equal(x, 12345); /* the half update */
    assert_int_equal(posh_value_unlock(v), 0);
    assert_int_equal(posh_value_lock_owned(v), 0);
    assert_int_equal(posh_value_lock(v, 0), 0);
    assert_int_equal(posh_value_unlock(v), 0);
  }
  assert_int_equal(posh_obj_close(v), 0);
  assert_int_equal(posh_obj_unbind(f->h, "held"), 0);
  assert_int_equal(posh_heap_reap(f->h, NULL), 0);
  assert_int_equal(tu_check(f->h), 0);
}

/* Proves: bad arguments are refused: NULL (POSH_EINVAL), handles of the
 * wrong type (POSH_ETYPE: a list for a Value, a Value for an Array and
 * back), a reference to a freed Value (POSH_ESTALE). */
static void test_bad_input(void **state) {
  struct tu_heap_fx *f = *state;
  posh_obj_t *v, *a, *l, *stale;
  int64_t x = 0;
  void *p;
  char tc;
  assert_int_equal(posh_value_create(NULL, NULL, 'i', 1, &v), POSH_EINVAL);
  assert_int_equal(posh_value_create(f->h, NULL, 'i', 1, NULL), POSH_EINVAL);
  assert_int_equal(posh_array_create(f->h, NULL, 'i', SIZE_MAX / 2, 1, &a), POSH_ENOMEM);
  assert_int_equal(posh_value_load(NULL, &x), POSH_EINVAL);
  assert_int_equal(posh_value_lock(NULL, 0), POSH_EINVAL);
  assert_int_equal(posh_value_typecode(NULL, &tc), POSH_EINVAL);
  assert_int_equal(posh_value_create(f->h, NULL, 'q', 1, &v), 0);
  assert_int_equal(posh_array_create(f->h, NULL, 'q', 4, 1, &a), 0);
  assert_int_equal(posh_list_create(f->h, NULL, &l), 0);
  assert_int_equal(posh_value_load(v, NULL), POSH_EINVAL);
  assert_int_equal(posh_value_store(v, NULL), POSH_EINVAL);
  assert_int_equal(posh_value_typecode(v, NULL), POSH_EINVAL);
  assert_int_equal(posh_array_read(a, 0, 1, NULL), POSH_EINVAL);
  assert_int_equal(posh_value_load(a, &x), POSH_ETYPE);
  assert_int_equal(posh_value_data(a, &p, NULL), POSH_ETYPE);
  assert_int_equal(posh_array_data(v, &p, NULL, NULL), POSH_ETYPE);
  assert_int_equal(posh_array_read(v, 0, 1, &x), POSH_ETYPE);
  assert_int_equal(posh_value_add_i64(a, 1, NULL), POSH_ETYPE);
  assert_int_equal(posh_value_lock(l, 0), POSH_ETYPE);
  assert_int_equal(posh_value_typecode(l, &tc), POSH_ETYPE);
  assert_int_equal(posh_value_store(l, &x), POSH_ETYPE);
  assert_int_equal(posh_list_append(v, "x", 1), POSH_ETYPE);
  posh_obj_ref_t ref;
  assert_int_equal(posh_obj_ref(v, &ref), 0);
  assert_int_equal(posh_obj_close(v), 0);
  assert_int_equal(posh_obj_open_ref(f->h, &ref, &stale), POSH_ESTALE);
  assert_int_equal(posh_obj_close(a), 0);
  assert_int_equal(posh_obj_close(l), 0);
  assert_int_equal(tu_check(f->h), 0);
}

int main(int argc, char **argv) {
  tu_init(argc, argv);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_types, setup, teardown),
      cmocka_unit_test_setup_teardown(test_array, setup, teardown),
      cmocka_unit_test_setup_teardown(test_lock, setup, teardown),
      cmocka_unit_test_setup_teardown(test_concurrent_increments, setup, teardown),
      cmocka_unit_test_setup_teardown(test_owner_death, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
  };
  return cmocka_run_group_tests_name("value", tests, NULL, tu_group_teardown);
}
