/* SPDX-License-Identifier: MIT */
/*
 * This file contains the tests of the list object (objects/list.c):
 * sequence semantics with Python's index and slice rules, inline and large
 * items, freeing, bad input, forked and exec'd processes (tests/list_child,
 * attached by name) appending at once, and SIGKILL of writers at random
 * instants while several processes append, insert, extend and pop, after
 * which every item must be intact (XXH3), no item duplicated or lost
 * beyond what the killed operations explain, each cut operation all or
 * nothing, and the heap consistent after a reap.
 * POSH_TEST_LIST_KILLS sets the number of kills (default 200).
 */
#define LIST_CHILD_NO_MAIN
#include "list_child.c"

#include <cmocka.h>

static int setup(void **state) {
  return tu_heap_fx_setup(state, "list", 256ull << 20);
}

static int teardown(void **state) { return tu_heap_fx_teardown(state); }

static size_t llen(posh_obj_t *l) {
  size_t n = 0;
  assert_int_equal(posh_list_len(l, &n), 0);
  return n;
}

/* The list's items as one string joined by ',' (items are short text). */
static void joined(posh_obj_t *l, char *out, size_t cap) {
  posh_list_item_t *it;
  size_t n, used = 0;
  assert_int_equal(posh_list_get_slice_alloc(l, 0, INT64_MAX, 1, &it, &n), 0);
  out[0] = '\0';
  for (size_t i = 0; i < n; i++)
    used += (size_t)snprintf(out + used, cap - used, "%s%.*s", i ? "," : "",
                             (int)it[i].len, (const char *)it[i].data);
  posh_list_items_free(it, n);
}

static void fill_digits(posh_obj_t *l, int n) {
  assert_int_equal(posh_list_clear(l), 0);
  for (int i = 0; i < n; i++) {
    char b[8];
    int k = snprintf(b, sizeof b, "%d", i);
    assert_int_equal(posh_list_append(l, b, (size_t)k), 0);
  }
}

/* Proves: append/insert/get/set/pop/delete/clear follow Python's index
 * rules (negative indices, insert clamping, POSH_ERANGE), EMSGSIZE leaves
 * the list unchanged and reports the length, allocating getters work. */
static void test_basic(void **state) {
  struct tu_heap_fx *f = *state;
  posh_obj_t *l;
  char s[512], buf[64];
  size_t n;
  assert_int_equal(posh_list_create(f->h, "L", &l), 0);
  assert_int_equal(llen(l), 0);
  assert_int_equal(posh_list_get(l, 0, buf, sizeof buf, &n), POSH_ERANGE);
  assert_int_equal(posh_list_pop(l, -1, buf, sizeof buf, &n), POSH_ERANGE);
  assert_int_equal(posh_list_append(l, "b", 1), 0);
  assert_int_equal(posh_list_append(l, "c", 1), 0);
  assert_int_equal(posh_list_insert(l, 0, "a", 1), 0);
  assert_int_equal(posh_list_insert(l, 100, "z", 1), 0);
  assert_int_equal(posh_list_insert(l, -100, "0", 1), 0);
  assert_int_equal(posh_list_insert(l, -1, "y", 1), 0);
  joined(l, s, sizeof s);
  assert_string_equal(s, "0,a,b,c,y,z");
  assert_int_equal(posh_list_get(l, -1, buf, sizeof buf, &n), 0);
  assert_int_equal(n, 1);
  assert_memory_equal(buf, "z", 1);
  assert_int_equal(posh_list_get(l, 6, buf, sizeof buf, &n), POSH_ERANGE);
  assert_int_equal(posh_list_get(l, -7, buf, sizeof buf, &n), POSH_ERANGE);
  assert_int_equal(posh_list_set(l, 1, "a long item, longer than 7", 26), 0);
  assert_int_equal(posh_list_set(l, 9, "x", 1), POSH_ERANGE);
  assert_int_equal(posh_list_get(l, 1, buf, 3, &n), POSH_EMSGSIZE);
  assert_int_equal(n, 26);
  assert_int_equal(posh_list_pop(l, 1, buf, 3, &n), POSH_EMSGSIZE);
  assert_int_equal(llen(l), 6);
  void *m;
  assert_int_equal(posh_list_get_alloc(l, 1, &m, &n), 0);
  assert_int_equal(n, 26);
  assert_memory_equal(m, "a long item, longer than 7", 26);
  free(m);
  assert_int_equal(posh_list_pop_alloc(l, 1, &m, &n), 0);
  assert_memory_equal(m, "a long item, longer than 7", 26);
  free(m);
  assert_int_equal(posh_list_pop(l, 0, buf, sizeof buf, &n), 0);
  assert_memory_equal(buf, "0", 1);
  assert_int_equal(posh_list_delete(l, -2), 0);
  joined(l, s, sizeof s);
  assert_string_equal(s, "b,c,z");
  assert_int_equal(posh_list_pop(l, -1, NULL, 0, NULL), POSH_EMSGSIZE);
  assert_int_equal(posh_list_delete(l, 3), POSH_ERANGE);
  /* Empty items, items of every inline length, one large item. */
  assert_int_equal(posh_list_clear(l), 0);
  assert_int_equal(llen(l), 0);
  static unsigned char big[100000];
  tu_fill(big, sizeof big, 7);
  for (size_t k = 0; k <= 9; k++)
    assert_int_equal(posh_list_append(l, "0123456789", k), 0);
  assert_int_equal(posh_list_append(l, NULL, 0), 0);
  assert_int_equal(posh_list_append(l, big, sizeof big), 0);
  for (size_t k = 0; k <= 9; k++) {
    assert_int_equal(posh_list_get(l, (int64_t)k, buf, sizeof buf, &n), 0);
    assert_int_equal(n, k);
    assert_memory_equal(buf, "0123456789", k);
  }
  assert_int_equal(posh_list_get(l, 10, NULL, 0, &n), 0);
  assert_int_equal(n, 0);
  assert_int_equal(posh_list_get_alloc(l, -1, &m, &n), 0);
  assert_int_equal(n, sizeof big);
  assert_true(tu_verify(m, n, 7));
  free(m);
  /* Growth and shrinking through many appends and pops from the front. */
  assert_int_equal(posh_list_clear(l), 0);
  for (int i = 0; i < 3000; i++)
    assert_int_equal(posh_list_append(l, &i, sizeof i), 0);
  for (int i = 0; i < 2990; i++) {
    int x = -1;
    assert_int_equal(posh_list_pop(l, 0, &x, sizeof x, &n), 0);
    assert_int_equal(x, i);
  }
  assert_int_equal(llen(l), 10);
  assert_int_equal(posh_obj_close(l), 0);
  assert_int_equal(tu_check(f->h), 0);
}

/* Proves: slices read, assign and delete like Python's (cases checked
 * against CPython), including negative and extended steps, size changes
 * of a step-1 assignment and POSH_EINVAL for a mismatched extended one. */
static void test_slices(void **state) {
  struct tu_heap_fx *f = *state;
  posh_obj_t *l;
  char s[512];
  assert_int_equal(posh_list_create(f->h, NULL, &l), 0);
  static const struct {
    int64_t start, stop, step;
    const char *want;
  } cases[] = {
      {INT64_MAX, INT64_MIN, -1, "9,8,7,6,5,4,3,2,1,0"},
      {1, 8, 3, "1,4,7"},
      {-3, INT64_MAX, 1, "7,8,9"},
      {8, 2, -2, "8,6,4"},
      {-100, 100, 4, "0,4,8"},
      {5, 1, 1, ""},
      {INT64_MAX, INT64_MIN, -3, "9,6,3,0"},
      {7, -12, -3, "7,4,1"},
  };
  fill_digits(l, 10);
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    posh_list_item_t *it;
    size_t n, used = 0;
    assert_int_equal(posh_list_get_slice_alloc(l, cases[c].start, cases[c].stop,
                                               cases[c].step, &it, &n), 0);
    s[0] = '\0';
    for (size_t i = 0; i < n; i++)
      used += (size_t)snprintf(s + used, sizeof s - used, "%s%.*s",
                               i ? "," : "", (int)it[i].len,
                               (const char *)it[i].data);
    posh_list_items_free(it, n);
    assert_string_equal(s, cases[c].want);
  }
  /* l[2:5] = [x, y] ; l[1:1] = [p] ; l[-2:] = [] ; l[3:1] = [q] */
  struct iovec two[2] = {{"x", 1}, {"y-long-item", 11}};
  assert_int_equal(posh_list_set_slice(l, 2, 5, 1, two, 2), 0);
  joined(l, s, sizeof s);
  assert_string_equal(s, "0,1,x,y-long-item,5,6,7,8,9");
  struct iovec p = {"p", 1};
  assert_int_equal(posh_list_set_slice(l, 1, 1, 1, &p, 1), 0);
  assert_int_equal(posh_list_set_slice(l, -2, INT64_MAX, 1, NULL, 0), 0);
  struct iovec q = {"q", 1};
  assert_int_equal(posh_list_set_slice(l, 3, 1, 1, &q, 1), 0);
  joined(l, s, sizeof s);
  assert_string_equal(s, "0,p,1,q,x,y-long-item,5,6,7");
  /* del l[::2] ; del l[::-1] of a short one ; l[::-1] = reversed */
  fill_digits(l, 10);
  assert_int_equal(posh_list_delete_slice(l, INT64_MAX, INT64_MIN, -2), 0);
  joined(l, s, sizeof s);
  assert_string_equal(s, "0,2,4,6,8");
  struct iovec rev[5] = {{"a", 1}, {"b", 1}, {"c-long-item", 11}, {"d", 1}, {"e", 1}};
  assert_int_equal(posh_list_set_slice(l, INT64_MAX, INT64_MIN, -1, rev, 5), 0);
  joined(l, s, sizeof s);
  assert_string_equal(s, "e,d,c-long-item,b,a");
  assert_int_equal(posh_list_set_slice(l, 0, INT64_MAX, 2, rev, 2), POSH_EINVAL);
  assert_int_equal(posh_list_set_slice(l, 0, INT64_MAX, 2, rev, 3), 0);
  joined(l, s, sizeof s);
  assert_string_equal(s, "a,d,b,b,c-long-item");
  assert_int_equal(posh_list_delete_slice(l, 1, 4, 1), 0);
  joined(l, s, sizeof s);
  assert_string_equal(s, "a,c-long-item");
  assert_int_equal(posh_list_get_slice(l, 0, 1, 0, NULL, NULL), POSH_EINVAL);
  assert_int_equal(posh_list_delete_slice(l, 0, 1, 0), POSH_EINVAL);
  assert_int_equal(posh_obj_close(l), 0);
  assert_int_equal(tu_check(f->h), 0);
}

/* Reference model for the fuzz: an array of ints. */
static size_t model_slice(int64_t len, int64_t start, int64_t stop, int64_t step,
                          int64_t *idx) {
  /* slice.indices, written out plainly. */
  int64_t lo = step < 0 ? -1 : 0, hi = step < 0 ? len - 1 : len;
  if (start < 0) start = start + len < lo ? lo : start + len;
  else if (start > hi) start = hi;
  if (stop < 0) stop = stop + len < lo ? lo : stop + len;
  else if (stop > hi) stop = hi;
  size_t n = 0;
  if (step > 0)
    for (int64_t i = start; i < stop; i += step)
      idx[n++] = i;
  else
    for (int64_t i = start; i > stop; i += step)
      idx[n++] = i;
  return n;
}

static int check_item_visit(void *arg, size_t i, const void *data, size_t len) {
  const int *model = arg;
  int x;
  if (len != sizeof x)
    return 1;
  memcpy(&x, data, sizeof x);
  return x == model[i] ? 0 : 2;
}

/* Proves: random slice assignments and deletions (all steps, bounds in
 * and out of range) keep the list equal to a plain array model. */
static void test_slice_fuzz(void **state) {
  struct tu_heap_fx *f = *state;
  posh_obj_t *l;
  assert_int_equal(posh_list_create(f->h, NULL, &l), 0);
  int model[4096], tmp[4096], next = 0;
  int64_t idx[4096];
  size_t mlen = 0;
  uint64_t seed = 12345;
  for (int round = 0; round < 3000; round++) {
    uint64_t r = lc_rand(&seed);
    int64_t len = (int64_t)mlen;
    int64_t start = (int64_t)(r % 41) - 20, stop = (int64_t)((r >> 8) % 41) - 20;
    int64_t step = (int64_t)((r >> 16) % 7) - 3;
    if (step == 0)
      step = 1;
    if ((r >> 24) % 8 == 0) start = step > 0 ? 0 : INT64_MAX;
    if ((r >> 27) % 8 == 0) stop = step > 0 ? INT64_MAX : INT64_MIN;
    size_t n = model_slice(len, start, stop, step, idx);
    unsigned op = (unsigned)((r >> 32) % 3);
    if (op == 0 || mlen > 3000) { /* delete */
      assert_int_equal(posh_list_delete_slice(l, start, stop, step), 0);
      unsigned char del[4096] = {0};
      for (size_t k = 0; k < n; k++)
        del[idx[k]] = 1;
      size_t o = 0;
      for (size_t j = 0; j < mlen; j++)
        if (!del[j])
          model[o++] = model[j];
      mlen = o;
    } else { /* assign */
      if (step != 1 && n > 8)
        continue;
      size_t m = step == 1 ? (size_t)((r >> 40) % 6) : n;
      struct iovec iov[8];
      int vals[8];
      for (size_t k = 0; k < m; k++) {
        vals[k] = next++;
        iov[k].iov_base = &vals[k];
        iov[k].iov_len = sizeof(int);
      }
      assert_int_equal(posh_list_set_slice(l, start, stop, step, iov, m), 0);
      if (step == 1) {
        int64_t a = n ? idx[0] : (start < 0 ? (start + len < 0 ? 0 : start + len) : (start > len ? len : start));
        size_t b = (size_t)a + n;
        size_t o = 0;
        for (size_t j = 0; j < (size_t)a; j++)
          tmp[o++] = model[j];
        for (size_t k = 0; k < m; k++)
          tmp[o++] = vals[k];
        for (size_t j = b; j < mlen; j++)
          tmp[o++] = model[j];
        memcpy(model, tmp, o * sizeof(int));
        mlen = o;
      } else {
        for (size_t k = 0; k < n; k++)
          model[idx[k]] = vals[k];
      }
    }
    assert_int_equal(llen(l), mlen);
    assert_int_equal(posh_list_get_slice(l, 0, INT64_MAX, 1, check_item_visit, model), 0);
    if (mlen < 20) { /* refill */
      for (int k = 0; k < 30; k++) {
        model[mlen++] = next;
        assert_int_equal(posh_list_append(l, &next, sizeof next), 0);
        next++;
      }
    }
  }
  assert_int_equal(posh_obj_close(l), 0);
  assert_int_equal(tu_check(f->h), 0);
}

/* Proves: closing the last handle frees every item block and the array
 * (bytes in use return to the baseline), also with a name bound. */
static void test_frees_items(void **state) {
  struct tu_heap_fx *f = *state;
  posh_obj_t *l;
  uint64_t base = tu_bytes_in_use(f->h);
  assert_int_equal(posh_list_create(f->h, "freed", &l), 0);
  static unsigned char buf[3000];
  for (int i = 0; i < 500; i++)
    assert_int_equal(posh_list_append(l, buf, (size_t)(i * 7) % sizeof buf), 0);
  for (int i = 0; i < 100; i++)
    assert_int_equal(posh_list_set(l, i, buf, 100), 0);
  assert_true(tu_bytes_in_use(f->h) > base);
  assert_int_equal(posh_obj_close(l), 0);
  assert_true(tu_bytes_in_use(f->h) > base); /* the name holds it */
  assert_int_equal(posh_obj_unbind(f->h, "freed"), 0);
  assert_int_equal(tu_bytes_in_use(f->h), base);
  assert_int_equal(tu_check(f->h), 0);
}

/* Path of tests/list_child. */
static const char *child_path(char *buf, size_t len) {
  const char *dir = getenv("POSH_TEST_BINDIR");
  snprintf(buf, len, "%s/list_child", dir && *dir ? dir : tu_argv0_dir);
  return buf;
}

/* posix_spawn list_child with args (as tu_spawn_child: no atfork). */
static pid_t spawn_child(const char *const *args) {
  char path[PATH_MAX + 32];
  child_path(path, sizeof path);
  const char *argv[16];
  int n = 0;
  argv[n++] = path;
  for (int i = 0; args[i] && n < 15; i++)
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

struct append_arg {
  posh_obj_t *l;
  uint32_t worker;
  long n;
};
static int append_child(void *p) {
  struct append_arg *a = p;
  return lc_append_worker(a->l, a->worker, a->n);
}

struct verify {
  uint32_t seen[LC_MAXW];
  unsigned char *present; /* [LC_MAXW * LC_MAXID] */
  int bad;
};
static int verify_visit(void *arg, size_t i, const void *data, size_t len) {
  (void)i;
  struct verify *v = arg;
  uint32_t w, id;
  if (!lc_item_ok(data, len, &w, &id) || w >= LC_MAXW || id >= LC_MAXID) {
    v->bad++;
    return 0;
  }
  if (v->present[(size_t)w * LC_MAXID + id]++)
    v->bad++; /* duplicate */
  v->seen[w]++;
  return 0;
}

/* Proves: two forked and two exec'd processes (which open the list by
 * name) append at once; every item arrives once, intact. */
static void test_processes(void **state) {
  struct tu_heap_fx *f = *state;
  posh_obj_t *l;
  assert_int_equal(posh_list_create(f->h, "shared", &l), 0);
  const long N = 2000;
  pid_t pids[4];
  struct append_arg args[2] = {{l, 0, N}, {l, 1, N}};
  for (int i = 0; i < 2; i++)
    pids[i] = tu_fork(append_child, &args[i]);
  char nb[32];
  snprintf(nb, sizeof nb, "%ld", N);
  const char *a2[] = {"append", f->name, "shared", nb, "2", NULL};
  const char *a3[] = {"append", f->name, "shared", nb, "3", NULL};
  pids[2] = spawn_child(a2);
  pids[3] = spawn_child(a3);
  for (int i = 0; i < 4; i++) {
    assert_true(pids[i] > 0);
    assert_int_equal(tu_wait(pids[i], 60000), 0);
  }
  assert_int_equal(llen(l), 4 * N);
  struct verify v = {{0}, calloc((size_t)LC_MAXW * LC_MAXID, 1), 0};
  assert_non_null(v.present);
  assert_int_equal(posh_list_get_slice(l, 0, INT64_MAX, 1, verify_visit, &v), 0);
  assert_int_equal(v.bad, 0);
  for (int w = 0; w < 4; w++)
    assert_int_equal(v.seen[w], N);
  free(v.present);
  assert_int_equal(posh_obj_close(l), 0);
  assert_int_equal(tu_check(f->h), 0);
}

struct torture_arg {
  posh_obj_t *l;
  struct lc_scratch *s;
  uint32_t worker;
  posh_heap_t *h;
};
static int torture_child(void *p) {
  struct torture_arg *a = p;
  return lc_torture(a->h, a->l, a->s, a->worker, 0);
}

#define NW 4
static pid_t start_worker(struct tu_heap_fx *f, posh_obj_t *l, struct lc_scratch *s,
                          uint32_t w) {
  if (w % 2 == 0) {
    static struct torture_arg args[NW];
    args[w] = (struct torture_arg){l, s, w, f->h};
    return tu_fork(torture_child, &args[w]);
  }
  char wb[16];
  snprintf(wb, sizeof wb, "%u", w);
  const char *a[] = {"torture", f->name, "tort", wb, NULL};
  return spawn_child(a);
}

/* Proves: SIGKILL of writers at random instants while two forked and two
 * exec'd processes append, insert, extend and pop leaves a list whose
 * length matches its items, every item intact and present once, every cut
 * extend all-or-nothing, no item lost beyond the cut pops, and a heap that
 * passes posh_heap_check after posh_heap_reap; the list stays usable. */
static void test_kill_torture(void **state) {
  struct tu_heap_fx *f = *state;
  const char *e = getenv("POSH_TEST_LIST_KILLS");
  int kills = e && *e ? atoi(e) : 200;
  posh_obj_t *l;
  assert_int_equal(posh_list_create(f->h, "tort", &l), 0);
  struct lc_scratch *s = posh_calloc(f->h, 1, sizeof *s);
  assert_non_null(s);
  assert_int_equal(posh_name_bind(f->h, "lc_scratch", posh_off(f->h, s),
                                  LC_SCRATCH_TAG), 0);
  /* Cut creates (worker, lo, n) and the number of cut pops. */
  static struct {
    uint32_t w, n;
    uint64_t lo;
  } cut[4096];
  int ncut = 0, cut_pops = 0;
  pid_t pids[NW];
  for (uint32_t w = 0; w < NW; w++)
    assert_true((pids[w] = start_worker(f, l, s, w)) > 0);
  uint64_t seed = (uint64_t)getpid() * 7919u + 1;
  tu_sleep_ms(20);
  for (int k = 0; k < kills; k++) {
    uint64_t r = lc_rand(&seed);
    struct timespec ts = {0, (long)(r % 8000) * 1000L};
    nanosleep(&ts, NULL);
    uint32_t w = (uint32_t)((r >> 20) % NW);
    int st = tu_kill(pids[w]);
    assert_true(st == TU_SIGNALED(SIGKILL) || st == 0);
    struct lc_worker *rec = &s->w[w];
    if (rec->pend_op == LC_CREATE && ncut < 4096) {
      cut[ncut].w = w;
      cut[ncut].lo = rec->pend_lo;
      cut[ncut].n = rec->pend_n;
      ncut++;
    } else if (rec->pend_op == LC_POP) {
      cut_pops++;
    }
    if (k % 16 == 0)
      assert_int_equal(posh_heap_reap(f->h, NULL), 0);
    assert_true((pids[w] = start_worker(f, l, s, w)) > 0);
  }
  tu_sleep_ms(20);
  for (uint32_t w = 0; w < NW; w++) {
    int st = tu_kill(pids[w]);
    assert_true(st == TU_SIGNALED(SIGKILL) || st == 0);
    struct lc_worker *rec = &s->w[w];
    if (rec->pend_op == LC_CREATE && ncut < 4096) {
      cut[ncut].w = w;
      cut[ncut].lo = rec->pend_lo;
      cut[ncut].n = rec->pend_n;
      ncut++;
    } else if (rec->pend_op == LC_POP) {
      cut_pops++;
    }
  }
  assert_int_equal(posh_heap_reap(f->h, NULL), 0);
  uint64_t ops = 0, repairs = 0;
  for (uint32_t w = 0; w < NW; w++)
    ops += s->w[w].ops;
  assert_int_equal(posh_list_repairs(l, &repairs), 0);
  fprintf(stderr, "list torture: %d kills, %llu ops, %llu lock repairs, "
                  "%d cut creates, %d cut pops\n",
          kills, (unsigned long long)ops, (unsigned long long)repairs, ncut,
          cut_pops);
  assert_true(ops > 0);

  /* Walk: every item intact, none twice. */
  struct verify v = {{0}, calloc((size_t)LC_MAXW * LC_MAXID, 1), 0};
  assert_non_null(v.present);
  assert_int_equal(posh_list_get_slice(l, 0, INT64_MAX, 1, verify_visit, &v), 0);
  assert_int_equal(v.bad, 0);
  size_t walked = 0;
  for (uint32_t w = 0; w < NW; w++)
    walked += v.seen[w];
  assert_int_equal(llen(l), walked);
  /* Cut creates: all or nothing (present = in the list or popped). */
  unsigned char *cutmark = calloc((size_t)LC_MAXW * LC_MAXID, 1);
  assert_non_null(cutmark);
  for (int c = 0; c < ncut; c++) {
    uint32_t there = 0;
    for (uint32_t i = 0; i < cut[c].n; i++) {
      size_t at = (size_t)cut[c].w * LC_MAXID + cut[c].lo + i;
      there += v.present[at] || s->popped[cut[c].w][cut[c].lo + i];
      cutmark[at] = 1;
    }
    assert_true(there == 0 || there == cut[c].n);
  }
  /* Everything handed out is in the list or was popped, except the cut
   * creates that did not happen and at most one item per cut pop. */
  int missing = 0;
  for (uint32_t w = 0; w < NW; w++)
    for (uint64_t id = 0; id < s->w[w].next_id; id++) {
      size_t at = (size_t)w * LC_MAXID + id;
      if (v.present[at])
        assert_int_equal(s->popped[w][id], 0);
      else if (!s->popped[w][id] && !cutmark[at])
        missing++;
    }
  assert_true(missing <= cut_pops);
  free(cutmark);
  free(v.present);
  /* Still usable; heap consistent. */
  assert_int_equal(posh_list_append(l, "after", 5), 0);
  assert_int_equal(posh_list_pop(l, -1, NULL, 0, NULL), POSH_EMSGSIZE);
  assert_int_equal(posh_list_delete(l, -1), 0);
  assert_int_equal(posh_list_clear(l), 0);
  assert_int_equal(tu_check(f->h), 0);
  assert_int_equal(posh_obj_close(l), 0);
}

/* objects/list.c's test hook: the crash point this process dies at. */
extern int posh__list_crash_point;

struct crash_arg {
  posh_obj_t *l;
  int point;
  int op;
};
static int crash_child(void *p) {
  struct crash_arg *a = p;
  posh__list_crash_point = a->point;
  struct iovec two[2] = {{"X-long-item", 11}, {"Y", 1}};
  switch (a->op) {
  case 0: posh_list_append(a->l, "e-long-item", 11); break;
  case 1: posh_list_extend(a->l, two, 2); break;
  case 2: posh_list_pop(a->l, -1, NULL, 0, NULL); posh_list_delete(a->l, -1); break;
  case 3: posh_list_set(a->l, 1, "X-long-item", 11); break;
  case 4: posh_list_insert(a->l, 0, "Z-long-item", 11); break;
  case 5: posh_list_delete_slice(a->l, INT64_MAX, INT64_MIN, -2); break;
  case 6: posh_list_clear(a->l); break;
  case 7: posh_list_set_slice(a->l, 1, 3, 1, two, 2); break;
  }
  return 0; /* the crash point was not reached: the parent fails */
}

/* Proves: a process killed at each step of each kind of commit (before
 * and after the store that commits, and between the frees that follow)
 * leaves the list exactly as before or exactly as after its operation,
 * with the lock taken over (repaired) and the heap consistent. */
static void test_crash_points(void **state) {
  struct tu_heap_fx *f = *state;
  static const struct {
    int op, point;
    const char *want;
  } cases[] = {
      {0, 1, "a,b,c-long-item,d-long-item"},
      {0, 2, "a,b,c-long-item,d-long-item,e-long-item"},
      {1, 1, "a,b,c-long-item,d-long-item"},
      {1, 2, "a,b,c-long-item,d-long-item,X-long-item,Y"},
      {2, 3, "a,b,c-long-item,d-long-item"},
      {2, 4, "a,b,c-long-item"},
      {2, 11, "a,b,c-long-item"},
      {3, 5, "a,b,c-long-item,d-long-item"},
      {3, 6, "a,X-long-item,c-long-item,d-long-item"},
      {4, 7, "a,b,c-long-item,d-long-item"},
      {4, 8, "Z-long-item,a,b,c-long-item,d-long-item"},
      {5, 9, "a,b,c-long-item,d-long-item"},
      {5, 10, "a,c-long-item"},
      {5, 11, "a,c-long-item"},
      {6, 3, "a,b,c-long-item,d-long-item"},
      {6, 4, ""},
      {6, 11, ""},
      {7, 7, "a,b,c-long-item,d-long-item"},
      {7, 8, "a,X-long-item,Y,d-long-item"},
      {7, 11, "a,X-long-item,Y,d-long-item"},
  };
  char s[512];
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    posh_obj_t *l;
    assert_int_equal(posh_list_create(f->h, NULL, &l), 0);
    const char *init[] = {"a", "b", "c-long-item", "d-long-item"};
    for (int i = 0; i < 4; i++)
      assert_int_equal(posh_list_append(l, init[i], strlen(init[i])), 0);
    uint64_t rep0, rep1;
    assert_int_equal(posh_list_repairs(l, &rep0), 0);
    struct crash_arg arg = {l, cases[c].point, cases[c].op};
    int st = tu_run_child(crash_child, &arg, 20000);
    if (st != TU_SIGNALED(SIGKILL))
      fail_msg("case %zu: child status %d, crash point %d not reached", c, st,
               cases[c].point);
    joined(l, s, sizeof s);
    if (strcmp(s, cases[c].want))
      fail_msg("case %zu (op %d, point %d): list \"%s\", want \"%s\"", c,
               cases[c].op, cases[c].point, s, cases[c].want);
    assert_int_equal(posh_list_repairs(l, &rep1), 0);
    assert_int_equal(rep1 - rep0, cases[c].point == 11 ? 0 : 1);
    assert_int_equal(posh_list_append(l, "more-than-seven", 15), 0);
    assert_int_equal(posh_list_delete(l, 0), 0);
    assert_int_equal(posh_heap_reap(f->h, NULL), 0);
    assert_int_equal(tu_check(f->h), 0);
    assert_int_equal(posh_obj_close(l), 0);
  }
}

/* Proves: bad arguments are refused without side effects: NULL handles
 * and buffers (POSH_EINVAL), a handle of another type (POSH_ETYPE), a
 * reference to a freed list (POSH_ESTALE), oversized items. */
static void test_bad_input(void **state) {
  struct tu_heap_fx *f = *state;
  posh_obj_t *l, *b, *stale;
  size_t n;
  char buf[8];
  struct iovec iov = {NULL, 5};
  assert_int_equal(posh_list_create(NULL, NULL, &l), POSH_EINVAL);
  assert_int_equal(posh_list_create(f->h, NULL, NULL), POSH_EINVAL);
  assert_int_equal(posh_list_append(NULL, "x", 1), POSH_EINVAL);
  assert_int_equal(posh_list_len(NULL, &n), POSH_EINVAL);
  assert_int_equal(posh_list_create(f->h, NULL, &l), 0);
  assert_int_equal(posh_list_len(l, NULL), POSH_EINVAL);
  assert_int_equal(posh_list_append(l, NULL, 3), POSH_EINVAL);
  assert_int_equal(posh_list_append(l, "x", POSH_LIST_ITEM_MAX + 1), POSH_EINVAL);
  assert_int_equal(posh_list_extend(l, &iov, 1), POSH_EINVAL);
  assert_int_equal(posh_list_extend(l, NULL, 1), POSH_EINVAL);
  assert_int_equal(posh_list_extend(l, NULL, 0), 0);
  assert_int_equal(posh_list_get(l, 0, NULL, 4, &n), POSH_EINVAL);
  assert_int_equal(posh_list_get_alloc(l, 0, NULL, &n), POSH_EINVAL);
  assert_int_equal(posh_list_get_slice(l, 0, 1, 1, NULL, NULL), POSH_EINVAL);
  assert_int_equal(posh_list_get_slice_alloc(l, 0, 1, 1, NULL, &n), POSH_EINVAL);
  assert_int_equal(posh_list_repairs(l, NULL), POSH_EINVAL);
  assert_int_equal(llen(l), 0);
  /* Wrong type. */
  assert_int_equal(posh_buffer_create(f->h, NULL, 64, 0, &b), 0);
  assert_int_equal(posh_list_append(b, "x", 1), POSH_ETYPE);
  assert_int_equal(posh_list_get(b, 0, buf, sizeof buf, &n), POSH_ETYPE);
  assert_int_equal(posh_list_clear(b), POSH_ETYPE);
  assert_int_equal(posh_list_set_slice(b, 0, 1, 1, NULL, 0), POSH_ETYPE);
  assert_int_equal(posh_obj_close(b), 0);
  /* Stale reference. */
  posh_obj_ref_t ref;
  assert_int_equal(posh_obj_ref(l, &ref), 0);
  assert_int_equal(posh_obj_close(l), 0);
  assert_int_equal(posh_obj_open_ref(f->h, &ref, &stale), POSH_ESTALE);
  assert_int_equal(tu_check(f->h), 0);
}

int main(int argc, char **argv) {
  tu_init(argc, argv);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_basic, setup, teardown),
      cmocka_unit_test_setup_teardown(test_slices, setup, teardown),
      cmocka_unit_test_setup_teardown(test_slice_fuzz, setup, teardown),
      cmocka_unit_test_setup_teardown(test_frees_items, setup, teardown),
      cmocka_unit_test_setup_teardown(test_processes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_kill_torture, setup, teardown),
      cmocka_unit_test_setup_teardown(test_crash_points, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
  };
  return cmocka_run_group_tests_name("list", tests, NULL, tu_group_teardown);
}
