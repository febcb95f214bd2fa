/* SPDX-License-Identifier: MIT */
/*
 * This file contains object_child, the unrelated process of the shared-
 * object core tests (tests/test_object.c): it is exec'd, attaches to a heap
 * by name, opens a Buffer by name or by reference, checks its bytes, and
 * then either exits (closing the handle) or holds it.
 *
 *   object_child HEAP name NAME BYTE MODE
 *   object_child HEAP ref OFF ID BYTE MODE
 *
 * BYTE: the value every byte of the buffer must have (decimal).
 * MODE: "close" (close, detach, exit), "hold" (write 'R' to stdout, then
 * wait for EOF on stdin and exit without closing: the reap drops the
 * reference), "stale" (the open must fail with POSH_ESTALE), "unpin"
 * (close, then drop a pin of the object by its reference: the parent
 * pinned it).
 * Exit status: 0 success; 2 usage; 3 attach failed; 4 open failed;
 * 5 contents wrong; 6 expected an error and got another result.
 */
#define TU_NO_CMOCKA
#include "testutil.h"

#include <inttypes.h>

int main(int argc, char **argv) {
  if (argc < 6)
    return 2;
  posh_heap_t *heap;
  if (posh_heap_attach(argv[1], &heap) != 0)
    return 3;
  posh_obj_t *obj = NULL;
  int r, argi;
  if (strcmp(argv[2], "name") == 0) {
    r = posh_obj_open(heap, argv[3], POSH_OBJ_BUFFER, &obj);
    argi = 4;
  } else if (strcmp(argv[2], "ref") == 0 && argc >= 7) {
    posh_obj_ref_t ref = {strtoull(argv[3], NULL, 0), strtoull(argv[4], NULL, 0),
                          POSH_OBJ_BUFFER, 0};
    r = posh_obj_open_ref(heap, &ref, &obj);
    argi = 5;
  } else {
    return 2;
  }
  int byte = atoi(argv[argi]);
  const char *mode = argv[argi + 1];
  if (strcmp(mode, "stale") == 0)
    return r == POSH_ESTALE ? 0 : 6;
  if (r != 0) {
    fprintf(stderr, "object_child: open: %s\n", posh_err_name(r));
    return 4;
  }
  unsigned char *data;
  size_t size;
  if (posh_buffer_data(obj, (void **)&data, &size) != 0)
    return 5;
  for (size_t i = 0; i < size; i++)
    if (data[i] != (unsigned char)byte)
      return 5;
  if (strcmp(mode, "hold") == 0) {
    tu_write_byte(1, 'R');
    char c;
    while (read(0, &c, 1) > 0)
      ;
    _exit(0); /* no close, no detach: as if killed */
  }
  posh_obj_ref_t ref;
  posh_obj_ref(obj, &ref);
  posh_obj_close(obj);
  if (strcmp(mode, "unpin") == 0 && posh_obj_unpin(heap, &ref) != 0)
    return 6;
  posh_heap_detach(heap);
  return 0;
}
