/* SPDX-License-Identifier: MIT */
/*
 * This file contains tests/queue_child, an unrelated program (started with
 * posix_spawn, so it shares nothing with the test but the heap's name) that
 * attaches to a heap by name, opens a Queue by name, and produces or
 * consumes checksummed messages, for tests/test_queue's cross-process
 * tests.
 *
 * Usage:
 *   queue_child HEAP QUEUE produce N PRODUCER   put N messages (ids
 *                                               PRODUCER << 40 | seq)
 *   queue_child HEAP QUEUE consume N            get N messages, verify
 *                                               them, print "OK <sum>"
 *   queue_child HEAP QUEUE drain                get until closed, print
 *                                               "OK <count> <sum>"
 * Message format (as in test_queue.c): length < 16: bytes (len*31 + i);
 * otherwise u64 id, u64 XXH3(body, seed id), body from a PRNG seeded by id.
 * Exit status: 0 ok, 2 bad message, 3 order violated, 1 other failure.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "posh.h"
#include "posh/queue.h"

#include "queue_msg.h"

static size_t size_of(uint64_t seq) {
  static const size_t sizes[] = {0,   8,   16,   40,    100,
                                 112, 113, 1000, 70000, 1u << 20};
  return sizes[seq % (sizeof sizes / sizeof sizes[0])];
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr,
            "usage: queue_child HEAP QUEUE produce|consume|drain ...\n");
    return 1;
  }
  posh_heap_t *heap;
  int r = posh_heap_attach(argv[1], &heap);
  if (r) {
    fprintf(stderr, "queue_child: attach %s: %s\n", argv[1], posh_err_name(r));
    return 1;
  }
  posh_obj_t *q;
  r = posh_obj_open(heap, argv[2], POSH_OBJ_QUEUE, &q);
  if (r) {
    fprintf(stderr, "queue_child: open %s: %s\n", argv[2], posh_err_name(r));
    return 1;
  }
  unsigned char *buf = malloc((1u << 20) + 64);
  if (!buf)
    return 1;
  int rc = 0;
  if (!strcmp(argv[3], "produce") && argc >= 6) {
    uint64_t n = strtoull(argv[4], NULL, 10),
             prod = strtoull(argv[5], NULL, 10);
    for (uint64_t s = 0; s < n && rc == 0; s++) {
      size_t len = size_of(s);
      msg_fill(buf, len, prod << 40 | s);
      r = posh_queue_put(q, buf, len, 20ll * 1000 * 1000 * 1000);
      if (r) {
        fprintf(stderr, "queue_child: put: %s\n", posh_err_name(r));
        rc = 1;
      }
    }
  } else if (!strcmp(argv[3], "consume") || !strcmp(argv[3], "drain")) {
    int drain = !strcmp(argv[3], "drain");
    uint64_t n = drain ? UINT64_MAX : strtoull(argv[4], NULL, 10);
    uint64_t sum = 0, count = 0, last[64];
    memset(last, 0xff, sizeof last);
    for (; count < n && rc == 0; count++) {
      size_t len;
      r = posh_queue_get(q, buf, (1u << 20) + 64, &len,
                         20ll * 1000 * 1000 * 1000);
      if (r == POSH_ECLOSED && drain)
        break;
      if (r) {
        fprintf(stderr, "queue_child: get: %s\n", posh_err_name(r));
        rc = 1;
        break;
      }
      uint64_t id;
      if (!msg_check(buf, len, &id)) {
        fprintf(stderr, "queue_child: bad message (len %zu)\n", len);
        rc = 2;
        break;
      }
      if (id != UINT64_MAX) {
        uint64_t p = (id >> 40) & 63, s = id & ((1ull << 40) - 1);
        if (last[p] != UINT64_MAX && s <= last[p]) {
          fprintf(stderr, "queue_child: producer %llu: %llu after %llu\n",
                  (unsigned long long)p, (unsigned long long)s,
                  (unsigned long long)last[p]);
          rc = 3;
        }
        last[p] = s;
        sum += id;
      }
      sum += len;
    }
    if (rc == 0) {
      if (drain)
        printf("OK %llu %llu\n", (unsigned long long)count,
               (unsigned long long)sum);
      else
        printf("OK %llu\n", (unsigned long long)sum);
      fflush(stdout);
    }
  } else {
    fprintf(stderr, "queue_child: bad mode %s\n", argv[3]);
    rc = 1;
  }
  free(buf);
  posh_obj_close(q);
  posh_heap_detach(heap);
  return rc;
}
