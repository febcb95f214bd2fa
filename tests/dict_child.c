/* SPDX-License-Identifier: MIT */
/*
 * This file contains dict_child, the unrelated process of the dict tests:
 * it is exec'd (posix_spawn, no atfork handlers), attaches to a heap by
 * name, opens a dict by name and does one thing to it.
 *
 *   dict_child HEAP DICT verify N      keys "k<i>" (i < N) hold the values
 *                                      test_dict's fill_value(i) made; then
 *                                      set "from-exec" = "hello"
 *   dict_child HEAP DICT writer ID N K SEED
 *                                      N random writes (set/update/cas/pop)
 *                                      of checksummed values on K keys, as
 *                                      test_dict's stress writers, recording
 *                                      the last write per key in the buffer
 *                                      object named DICT-rec
 *
 * Exit status: 0 success; 2 usage; 3 attach failed; 4 open failed;
 * 5 contents wrong; 6 operation failed.
 *
 * test_dict.c includes this file with DICT_CHILD_NO_MAIN for the value
 * helpers below, so both sides make and check values the same way.
 */
#define TU_NO_CMOCKA
#include "testutil.h"

#include <inttypes.h>
#include <xxhash.h>

#include "posh/dict.h"

/* ------------------------------------------------------------------------
 * What the tests share (test_dict.c includes this file with
 * DICT_CHILD_NO_MAIN): deterministic values and the checksummed values of
 * the stress tests.
 * ---------------------------------------------------------------------- */
/* Value of key "k<i>" in the basic tests: lengths spread over inline
 * (< 100 bytes) and block-held (up to ~2 KB) values. */
static TU_UNUSED size_t fill_value(unsigned char *buf, unsigned i) {
  size_t len = (size_t)(i * 37u) % 2100u;
  tu_fill(buf, len, 1000u + i);
  return len;
}

/* Stress values: writer id, key index, sequence, length, payload, and the
 * XXH3 of everything before it in the last 8 bytes. */
#define DV_MIN 32u
#define DV_MAX 65536u
#define DV_MAX_WRITERS 64u
static TU_UNUSED size_t dv_make(unsigned char *buf, uint32_t writer,
                                uint32_t key, uint64_t seq, size_t len) {
  memcpy(buf, &writer, 4);
  memcpy(buf + 4, &key, 4);
  memcpy(buf + 8, &seq, 8);
  uint64_t l = len;
  memcpy(buf + 16, &l, 8);
  tu_fill(buf + 24, len - 32, seq ^ ((uint64_t)writer << 40));
  uint64_t h = XXH3_64bits(buf, len - 8);
  memcpy(buf + len - 8, &h, 8);
  return len;
}
/* 1 if buf[0..len) is a valid stress value of key index key. */
static TU_UNUSED int dv_check(const unsigned char *buf, size_t len,
                              uint32_t key) {
  if (len < DV_MIN || len > DV_MAX)
    return 0;
  uint64_t h, l;
  uint32_t k;
  memcpy(&h, buf + len - 8, 8);
  memcpy(&l, buf + 16, 8);
  memcpy(&k, buf + 4, 4);
  return h == XXH3_64bits(buf, len - 8) && l == len && k == key;
}
static TU_UNUSED void dv_fields(const unsigned char *buf, uint32_t *writer,
                                uint64_t *seq) {
  memcpy(writer, buf, 4);
  memcpy(seq, buf + 8, 8);
}
static TU_UNUSED size_t dv_key(char *kb, uint32_t k) {
  snprintf(kb, 16, "key-%04u", (unsigned)k);
  return 8;
}
static TU_UNUSED uint64_t dv_rand(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}
static TU_UNUSED size_t dv_len(uint64_t *rng) {
  uint64_t r = dv_rand(rng);
  if (r % 64 == 0) /* rare big ones: long copies under the lock */
    return DV_MIN + (size_t)(r >> 8) % (DV_MAX - DV_MIN);
  if (r % 16 == 0)
    return DV_MIN + (size_t)(r >> 8) % 5000;
  return DV_MIN + (size_t)(r >> 8) % 200; /* inline or just over */
}

/* One stress writer: n random writes on nkeys keys; after each successful
 * write rec[writer * nkeys + k] = seq << 1 | (1 if it removed the key).
 * 0, or the line of the first failure. */
static TU_UNUSED int dv_writer(posh_obj_t *d, uint64_t *rec, uint32_t w,
                               uint64_t n, uint32_t nkeys, uint64_t seed) {
  static unsigned char vb[DV_MAX], cur[DV_MAX], b2[3][DV_MAX];
  uint64_t rng = seed | 1;
  char kb[3][16];
  for (uint64_t seq = 1; seq <= n; seq++) {
    uint32_t k = (uint32_t)(dv_rand(&rng) % nkeys);
    unsigned op = (unsigned)(dv_rand(&rng) % 100);
    size_t kl = dv_key(kb[0], k), vl = dv_make(vb, w, k, seq, dv_len(&rng));
    int r;
    if (op < 55) {
      if (posh_dict_set(d, kb[0], kl, vb, vl))
        return __LINE__;
      rec[w * nkeys + k] = seq << 1;
    } else if (op < 67) {
      posh_dict_item_t it[3];
      uint32_t ks[3];
      for (int j = 0; j < 3; j++) {
        ks[j] = (k + (uint32_t)j) % nkeys;
        dv_key(kb[j], ks[j]);
        size_t l = dv_make(b2[j], w, ks[j], seq, dv_len(&rng));
        it[j] = (posh_dict_item_t){kb[j], 8, b2[j], l};
      }
      if (ks[1] == ks[0] || ks[2] == ks[0] || ks[2] == ks[1])
        continue; /* fewer than 3 keys */
      if (posh_dict_update(d, it, 3))
        return __LINE__;
      for (int j = 0; j < 3; j++)
        rec[w * nkeys + ks[j]] = seq << 1;
    } else if (op < 79) {
      size_t cl = 0;
      r = posh_dict_get(d, kb[0], kl, cur, sizeof cur, &cl);
      if (r == POSH_ENOENT)
        r = posh_dict_cas(d, kb[0], kl, NULL, 0, vb, vl);
      else if (r == 0 && dv_check(cur, cl, k))
        r = posh_dict_cas(d, kb[0], kl, cur, cl, vb, vl);
      else
        return __LINE__;
      if (r == 0)
        rec[w * nkeys + k] = seq << 1;
      else if (r != POSH_EAGAIN && r != POSH_EEXIST && r != POSH_ENOENT)
        return __LINE__;
    } else if (op < 88) {
      int ins = -1;
      size_t cl = 0;
      r = posh_dict_setdefault(d, kb[0], kl, vb, vl, cur, sizeof cur, &cl, &ins);
      if (r)
        return __LINE__;
      if (ins)
        rec[w * nkeys + k] = seq << 1;
      else if (!dv_check(cur, cl, k))
        return __LINE__;
    } else if (op < 95) {
      size_t cl = 0;
      r = posh_dict_pop(d, kb[0], kl, cur, sizeof cur, &cl);
      if (r == 0) {
        if (!dv_check(cur, cl, k))
          return __LINE__;
        rec[w * nkeys + k] = seq << 1 | 1;
      } else if (r != POSH_ENOENT) {
        return __LINE__;
      }
    } else if (op == 99 && dv_rand(&rng) % 4 == 0) {
      if (posh_dict_clear(d))
        return __LINE__;
      for (uint32_t j = 0; j < nkeys; j++)
        rec[w * nkeys + j] = seq << 1 | 1;
    } else {
      r = posh_dict_delete(d, kb[0], kl);
      if (r == 0)
        rec[w * nkeys + k] = seq << 1 | 1;
      else if (r != POSH_ENOENT)
        return __LINE__;
    }
  }
  return 0;
}

/* Check every key and an iteration: values valid.  0 or a line. */
static TU_UNUSED int dv_verify_all(posh_obj_t *d, uint32_t nkeys) {
  static unsigned char vb[DV_MAX];
  char kb[16];
  for (uint32_t k = 0; k < nkeys; k++) {
    size_t vl = 0;
    int r = posh_dict_get(d, kb, dv_key(kb, k), vb, sizeof vb, &vl);
    if (r == POSH_ENOENT)
      continue;
    if (r || !dv_check(vb, vl, k))
      return __LINE__;
  }
  posh_dict_iter_t it = POSH_DICT_ITER_INIT;
  char ik[64];
  size_t kl, vl;
  int r;
  while ((r = posh_dict_iter_next(d, &it, ik, sizeof ik, &kl, vb, sizeof vb,
                                  &vl)) == 0) {
    unsigned k;
    if (kl != 8)
      return __LINE__;
    ik[kl] = '\0'; /* the key comes without a terminator */
    if (sscanf(ik, "key-%4u", &k) != 1 || !dv_check(vb, vl, k))
      return __LINE__;
  }
  return r == POSH_ENOENT ? 0 : __LINE__;
}

/* A reader: n random gets (each value checked), a full check every 256.
 * 0 or a line. */
static TU_UNUSED int dv_reader(posh_obj_t *d, uint64_t n, uint32_t nkeys,
                               uint64_t seed) {
  static unsigned char vb[DV_MAX];
  uint64_t rng = seed | 1;
  char kb[16];
  for (uint64_t i = 0; i < n; i++) {
    uint32_t k = (uint32_t)(dv_rand(&rng) % nkeys);
    size_t vl = 0;
    int r = posh_dict_get(d, kb, dv_key(kb, k), vb, sizeof vb, &vl);
    if (r != POSH_ENOENT && (r || !dv_check(vb, vl, k)))
      return __LINE__;
    if (i % 256 == 0 && (r = dv_verify_all(d, nkeys)) != 0)
      return r;
  }
  return 0;
}

#ifndef DICT_CHILD_NO_MAIN
int main(int argc, char **argv) {
  if (argc < 4)
    return 2;
  posh_heap_t *heap;
  int r = posh_heap_attach(argv[1], &heap);
  if (r) {
    fprintf(stderr, "dict_child: attach: %s\n", posh_err_name(r));
    return 3;
  }
  posh_obj_t *d;
  if (posh_obj_open(heap, argv[2], POSH_OBJ_DICT, &d))
    return 4;
  if (strcmp(argv[3], "verify") == 0 && argc == 5) {
    unsigned n = (unsigned)strtoul(argv[4], NULL, 0);
    static unsigned char want[4096], got[4096];
    for (unsigned i = 0; i < n; i++) {
      char k[32];
      int kl = snprintf(k, sizeof k, "k%u", i);
      size_t wl = fill_value(want, i), gl = 0;
      if (posh_dict_get(d, k, (size_t)kl, got, sizeof got, &gl) || gl != wl ||
          memcmp(got, want, wl) != 0)
        return 5;
    }
    size_t len;
    if (posh_dict_len(d, &len) || len != n)
      return 5;
    if (posh_dict_set(d, "from-exec", 9, "hello", 5))
      return 6;
  } else if (strcmp(argv[3], "writer") == 0 && argc == 8) {
    char rn[80];
    snprintf(rn, sizeof rn, "%s-rec", argv[2]);
    posh_obj_t *rb;
    void *rec;
    if (posh_obj_open(heap, rn, POSH_OBJ_BUFFER, &rb) ||
        posh_buffer_data(rb, &rec, NULL))
      return 4;
    int line = dv_writer(d, rec, (uint32_t)strtoul(argv[4], NULL, 0),
                         strtoull(argv[5], NULL, 0),
                         (uint32_t)strtoul(argv[6], NULL, 0),
                         strtoull(argv[7], NULL, 0));
    if (line) {
      fprintf(stderr, "dict_child: writer failed at line %d\n", line);
      return 6;
    }
    posh_obj_close(rb);
  } else {
    return 2;
  }
  posh_obj_close(d);
  posh_heap_detach(heap);
  return 0;
}
#endif
