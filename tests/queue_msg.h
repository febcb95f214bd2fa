/* SPDX-License-Identifier: MIT */
/*
 * This file contains the message format of the queue tests (test_queue,
 * test_queue_stress and their exec'd child queue_child): a message of 16
 * bytes or more carries its id and an XXH3 checksum of the rest, which is
 * pseudo-random from the id; a shorter one is a pattern of its length.
 * msg_check verifies either and returns the id (UINT64_MAX for short
 * ones).
 */
#ifndef POSH_TESTS_QUEUE_MSG_H
#define POSH_TESTS_QUEUE_MSG_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <xxhash.h>

static inline void msg_fill(unsigned char *p, size_t len, uint64_t id) {
  if (len < 16) {
    for (size_t i = 0; i < len; i++)
      p[i] = (unsigned char)(len * 31 + i);
    return;
  }
  memcpy(p, &id, 8);
  uint64_t x = id * 0x9E3779B97F4A7C15ull + 1;
  size_t i = 16;
  for (; i + 8 <= len; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    memcpy(p + i, &x, 8);
  }
  for (; i < len; i++)
    p[i] = (unsigned char)(x >> (8 * (i & 7)));
  uint64_t h = XXH3_64bits_withSeed(p + 16, len - 16, id);
  memcpy(p + 8, &h, 8);
}

static inline int msg_check(const unsigned char *p, size_t len, uint64_t *id) {
  if (len < 16) {
    *id = UINT64_MAX;
    for (size_t i = 0; i < len; i++)
      if (p[i] != (unsigned char)(len * 31 + i))
        return 0;
    return 1;
  }
  uint64_t h;
  memcpy(id, p, 8);
  memcpy(&h, p + 8, 8);
  return h == XXH3_64bits_withSeed(p + 16, len - 16, *id);
}

#endif /* POSH_TESTS_QUEUE_MSG_H */
