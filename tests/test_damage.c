/* SPDX-License-Identifier: MIT */
/*
 * This file contains the damaged-heap test: a heap holding every kind of
 * shared object (dict, queue, list, Value, Array, names, loose blocks) is
 * copied, and each copy gets random bytes overwritten in its metadata
 * (registry, directory, page table) and in the pages in use (object
 * headers, dict tables, queue rings, list arrays, page heads), as stray
 * writes of a faulty process would leave it.  A forked child attaches to
 * each copy, runs the consistency check, the statistics and the listings,
 * opens every named object and reads it, and in every other round also
 * writes to it and allocates.  Errors are the expected outcome; a fault or
 * a hang of the child is a failure.  The header page is left alone: its
 * checksum makes attach refuse a damaged one (tests/test_heap.c).
 *
 * POSH_DAMAGE_ROUNDS (default 300) copies; POSH_DAMAGE_SEED (default 1)
 * picks the damage, so a failing round is reproduced by the same seed;
 * POSH_DAMAGE_ONLY=N runs round N alone, in this process (no fork), for
 * a debugger.
 */
#include "testutil.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "posh/dict.h"
#include "posh/list.h"
#include "posh/object.h"
#include "posh/pipe.h"
#include "posh/queue.h"
#include "posh/sync.h"
#include "posh/value.h"

static uint64_t env_u64(const char *name, uint64_t dflt) {
  const char *s = getenv(name);
  return s && *s ? strtoull(s, NULL, 0) : dflt;
}

static uint64_t splitmix(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* ------------------------------------------------------------------------
 * The child: everything a process may do with a heap it attaches to.
 * ---------------------------------------------------------------------- */
struct use_arg {
  const char *name;
  int write;
};

static void use_object(posh_obj_t *o, int write) {
  unsigned char buf[512], kb[256];
  size_t n, kl;
  uint64_t u;
  switch (posh_obj_type(o)) {
  case POSH_OBJ_DICT: {
    posh_dict_len(o, &n);
    for (int i = 0; i < 60; i++) {
      char k[16];
      int len = snprintf(k, sizeof k, "k%d", i);
      posh_dict_get(o, k, (size_t)len, buf, sizeof buf, &n);
    }
    posh_dict_iter_t it = POSH_DICT_ITER_INIT;
    for (int i = 0; i < 300 && posh_dict_iter_next(o, &it, kb, sizeof kb, &kl,
                                                   buf, sizeof buf, &n) == 0;
         i++)
      ;
    if (write) {
      posh_dict_set(o, "new", 3, "value", 5);
      posh_dict_delete(o, "k3", 2);
      posh_dict_set(o, "k70", 3, buf, 200);
    }
    break;
  }
  case POSH_OBJ_QUEUE:
    posh_queue_qsize(o, &u);
    for (int i = 0; i < 6; i++)
      posh_queue_get(o, buf, sizeof buf, &n, 0);
    if (write)
      posh_queue_put(o, "abc", 3, 0);
    break;
  case POSH_OBJ_LIST:
    posh_list_len(o, &n);
    for (int i = 0; i < 40; i++)
      posh_list_get(o, i, buf, sizeof buf, &n);
    if (write) {
      posh_list_append(o, "z", 1);
      posh_list_pop(o, 0, buf, sizeof buf, &n);
    }
    break;
  case POSH_OBJ_VALUE:
    posh_value_load(o, buf);
    if (write)
      posh_value_add_i64(o, 1, NULL);
    break;
  case POSH_OBJ_ARRAY:
    posh_array_read(o, 0, 4, buf);
    if (write)
      posh_array_write(o, 1, 2, buf);
    break;
  case POSH_OBJ_PIPE:
    posh_pipe_poll(o, 0);
    for (int i = 0; i < 3; i++)
      posh_pipe_recv(o, buf, sizeof buf, &n, 0);
    if (write)
      posh_pipe_send(o, "ping", 4, 0);
    break;
  default:
    break;
  }
}

struct walk {
  posh_heap_t *h;
  int write;
  int seen;
};

static int visit_name(const char *name, posh_off_t off, uint32_t tag,
                      void *arg) {
  (void)off;
  (void)tag;
  struct walk *w = arg;
  posh_obj_t *o;
  if (++w->seen > 64)
    return 1; /* a damaged directory may repeat names: enough */
  if (posh_obj_open(w->h, name, 0, &o) == 0) {
    use_object(o, w->write);
    posh_obj_close(o);
  }
  return 0;
}

static int count_obj(const posh_obj_info_t *info, void *arg) {
  (void)info;
  ++*(int *)arg;
  return 0;
}

/* The lock and the semaphore, with short timeouts: a damaged word may well
 * name a live holder. */
static void use_sync(posh_heap_t *h) {
  posh_off_t lk, sem;
  if (posh_lock_open(h, "lock", &lk) == 0) {
    int r = posh_lock_acquire(h, lk, 1000000);
    if (r == POSH_EOWNERDEAD)
      posh_lock_consistent(h, lk);
    if (r == 0 || r == POSH_EOWNERDEAD)
      posh_lock_release(h, lk);
    posh_lock_locked(h, lk);
  }
  if (posh_sem_open(h, "sem", &sem) == 0) {
    posh_sem_value(h, sem);
    if (posh_sem_acquire(h, sem, 1000000) == 0)
      posh_sem_release(h, sem, 1);
  }
}

static int use_heap(void *p) {
  const struct use_arg *a = p;
  posh_heap_t *h;
  if (posh_heap_attach(a->name, &h) != 0)
    return 0; /* refused: fine */
  char report[1024];
  posh_heap_check(h, report, sizeof report);
  posh_heap_stats_t st;
  posh_heap_stats(h, &st);
  posh_process_info_t procs[8];
  size_t count;
  posh_heap_processes(h, procs, 8, &count);
  int objects = 0;
  posh_obj_foreach(h, count_obj, &objects);
  struct walk w = {h, a->write, 0};
  posh_name_foreach(h, visit_name, &w);
  use_sync(h);
  if (a->write) {
    void *blk[24];
    for (int i = 0; i < 24; i++)
      blk[i] = posh_alloc(h, 16 + (size_t)i * 97);
    for (int i = 0; i < 24; i++)
      posh_free(h, blk[i]);
  }
  posh_heap_detach(h);
  return 0;
}

/* ------------------------------------------------------------------------
 * The image and the rounds.
 * ---------------------------------------------------------------------- */
/* The objects' own blocks in the image (headers, the queue's ring). */
struct span {
  uint64_t off, len;
};
#define MAX_SPANS 16
static struct span spans[MAX_SPANS];
static int nspans;

static int note_object(const posh_obj_info_t *info, void *arg) {
  (void)arg;
  if (nspans < MAX_SPANS)
    spans[nspans++] = (struct span){info->ref.off, info->size};
  return 0;
}

/* A heap with one of each object, named, some with content in blocks of
 * their own; its bytes (up to the last one in use) in *img, its metadata
 * size in *meta, its objects' blocks in spans[]. */
static unsigned char *make_image(size_t *size, size_t *used, size_t *meta) {
  char name[64];
  tu_heap_name(name, sizeof name, "damsrc");
  posh_heap_options_t opt = {0};
  opt.capacity = 16ull << 20;
  posh_heap_t *h;
  assert_int_equal(posh_heap_create(name, &opt, &h), 0);
  posh_obj_t *d, *q, *l, *v, *arr;
  assert_int_equal(posh_dict_create(h, "dict", NULL, &d), 0);
  unsigned char val[300];
  for (int i = 0; i < 100; i++) {
    char k[16];
    int len = snprintf(k, sizeof k, "k%d", i);
    memset(val, 'a' + i % 26, sizeof val);
    assert_int_equal(posh_dict_set(d, k, (size_t)len, val, i < 50 ? 12 : 150), 0);
  }
  assert_int_equal(posh_queue_create(h, "queue", NULL, &q), 0);
  unsigned char msg[2000];
  for (int i = 0; i < 20; i++) {
    memset(msg, i, sizeof msg);
    assert_int_equal(posh_queue_put(q, msg, i < 10 ? 8 : 1500, 0), 0);
  }
  assert_int_equal(posh_list_create(h, "list", &l), 0);
  for (int i = 0; i < 30; i++)
    assert_int_equal(posh_list_append(l, val, (size_t)i * 10), 0);
  assert_int_equal(posh_value_create(h, "value", 'q', 1, &v), 0);
  assert_int_equal(posh_array_create(h, "array", 'd', 64, 1, &arr), 0);
  posh_obj_t *end0, *end1;
  assert_int_equal(posh_pipe_create(h, 1, &end0, &end1), 0);
  assert_int_equal(posh_obj_bind(end0, "pipe0"), 0);
  assert_int_equal(posh_obj_bind(end1, "pipe1"), 0);
  for (int i = 0; i < 4; i++)
    assert_int_equal(posh_pipe_send(end1, msg, i < 2 ? 8 : 1500, 0), 0);
  posh_off_t lk, sem;
  assert_int_equal(posh_lock_create(h, "lock", 0, &lk), 0);
  assert_int_equal(posh_sem_create(h, "sem", 2, 0, &sem), 0);
  for (int i = 0; i < 100; i++)
    assert_non_null(posh_alloc(h, 24 + (size_t)i * 31));
  posh_heap_stats_t st;
  assert_int_equal(posh_heap_stats(h, &st), 0);
  *meta = st.bytes_metadata;
  nspans = 0;
  assert_int_equal(posh_obj_foreach(h, note_object, NULL), 0);
  assert_true(nspans >= 7); /* five objects, two pipe ends and their channel */
  posh_obj_close(d);
  posh_obj_close(q);
  posh_obj_close(l);
  posh_obj_close(v);
  posh_obj_close(arr);
  posh_pipe_close(end0);
  posh_pipe_close(end1);
  assert_int_equal(posh_heap_detach(h), 0);

  char path[128];
  int fd = open(tu_shm_path(path, sizeof path, name), O_RDONLY);
  assert_true(fd >= 0);
  struct stat sb;
  assert_int_equal(fstat(fd, &sb), 0);
  *size = (size_t)sb.st_size;
  unsigned char *map = mmap(NULL, *size, PROT_READ, MAP_PRIVATE, fd, 0);
  assert_true(map != MAP_FAILED);
  close(fd);
  size_t u = *size;
  while (u > 0 && map[u - 1] == 0)
    u--;
  *used = u;
  unsigned char *img = malloc(u);
  assert_non_null(img);
  memcpy(img, map, u);
  munmap(map, *size);
  assert_int_equal(posh_heap_unlink(name), 0);
  assert_true(*meta > 4096 && *used > *meta);
  return img;
}

/* Attach-and-use children over damaged copies of a populated heap never
 * fault or hang. */
static void test_damaged_copies(void **state) {
  (void)state;
  size_t size, used, meta;
  unsigned char *img = make_image(&size, &used, &meta);
  uint64_t rounds = env_u64("POSH_DAMAGE_ROUNDS", 300);
  uint64_t seed = env_u64("POSH_DAMAGE_SEED", 1);
  const char *only = getenv("POSH_DAMAGE_ONLY");
  uint64_t first = only && *only ? strtoull(only, NULL, 0) : 0;
  if (only && *only)
    rounds = first + 1;
  for (uint64_t r = first; r < rounds; r++) {
    char name[64];
    tu_heap_name(name, sizeof name, "damaged");
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)size), 0);
    unsigned char *m =
        mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert_true(m != MAP_FAILED);
    close(fd);
    memcpy(m, img, used);
    /* 6 to 48 damaged bytes: a third in the metadata past the header
     * page, a third in the pages in use, a third in the objects' own
     * blocks; a byte gets a flipped bit or a random value. */
    uint64_t x = seed << 32 ^ r;
    int bytes = 6 << (r % 4);
    for (int k = 0; k < bytes; k++) {
      uint64_t at = splitmix(&x), how = splitmix(&x);
      const struct span *o = &spans[(at >> 32) % (uint64_t)nspans];
      size_t pos = k % 3 == 0   ? 4096 + at % (meta - 4096)
                   : k % 3 == 1 ? meta + at % (used - meta)
                                : o->off + at % o->len;
      if (how & 256)
        m[pos] = (unsigned char)how;
      else
        m[pos] ^= (unsigned char)(1u << (how & 7));
    }
    munmap(m, size);
    struct use_arg a = {name, (int)(r & 1)};
    int rc = only && *only ? use_heap(&a) : tu_run_child(use_heap, &a, 20000);
    if (rc != 0)
      fail_msg("round %llu (POSH_DAMAGE_SEED=%llu): the child %s",
               (unsigned long long)r, (unsigned long long)seed,
               rc == TU_HANG ? "hung" : "died of a signal or failed");
    assert_int_equal(shm_unlink(name), 0);
  }
  printf("damage: %llu damaged copies attached and used, no fault, no hang\n",
         (unsigned long long)rounds);
  free(img);
}

int main(int argc, char **argv) {
  tu_init(argc, argv);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_damaged_copies),
  };
  return cmocka_run_group_tests(tests, NULL, tu_group_teardown);
}
