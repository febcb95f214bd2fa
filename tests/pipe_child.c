/* SPDX-License-Identifier: MIT */
/*
 * This file contains pipe_child, the unrelated program tests/test_pipe.c
 * execs: it attaches to a heap by name, opens a Pipe endpoint by its
 * directory name and runs one mode.  Usage: pipe_child MODE HEAP NAME [N]
 *   echo N   receive N messages and send each one back unchanged
 *   hold     send "hello", then sleep until killed (at most a minute)
 *   stream N send messages of N bytes forever (byte i of message k is
 *            (k + i) & 0xff, k from 0), until killed or 60 s pass
 * Exit status 0 on success, 2 on a setup failure, 3 on a failed operation.
 */
#define TU_NO_CMOCKA
#include "testutil.h"
#include "posh/pipe.h"

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: pipe_child MODE HEAP NAME [N]\n");
    return 2;
  }
  long n = argc > 4 ? strtol(argv[4], NULL, 10) : 0;
  posh_heap_t *h;
  int r = posh_heap_attach(argv[2], &h);
  if (r) {
    fprintf(stderr, "pipe_child: attach %s: %s\n", argv[2], posh_err_name(r));
    return 2;
  }
  posh_obj_t *end;
  r = posh_obj_open(h, argv[3], POSH_OBJ_PIPE, &end);
  if (r) {
    fprintf(stderr, "pipe_child: open %s: %s\n", argv[3], posh_err_name(r));
    return 2;
  }
  if (!strcmp(argv[1], "echo")) {
    for (long i = 0; i < n; i++) {
      void *m;
      size_t len;
      r = posh_pipe_recv_alloc(end, &m, &len, 20000000000ll);
      if (r == 0)
        r = posh_pipe_send(end, m, len, 20000000000ll);
      free(m);
      if (r) {
        fprintf(stderr, "pipe_child: echo %ld: %s\n", i, posh_err_name(r));
        return 3;
      }
    }
  } else if (!strcmp(argv[1], "hold")) {
    if ((r = posh_pipe_send(end, "hello", 5, -1)) != 0) {
      fprintf(stderr, "pipe_child: send: %s\n", posh_err_name(r));
      return 3;
    }
    for (int i = 0; i < 600; i++)
      tu_sleep_ms(100);
    return 5;
  } else if (!strcmp(argv[1], "stream")) {
    unsigned char *m = malloc((size_t)n);
    if (!m || n < 1)
      return 2;
    for (uint64_t k = 0;; k++) {
      for (long i = 0; i < n; i++)
        m[i] = (unsigned char)(k + (uint64_t)i);
      if ((r = posh_pipe_send(end, m, (size_t)n, 60000000000ll)) != 0) {
        fprintf(stderr, "pipe_child: stream: %s\n", posh_err_name(r));
        return 3;
      }
    }
  } else {
    return 2;
  }
  posh_pipe_close(end);
  posh_heap_detach(h);
  return 0;
}
