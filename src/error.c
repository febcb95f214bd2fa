/* SPDX-License-Identifier: MIT */
/*
 * This file contains the error-code table's two generated functions,
 * posh_strerror and posh_err_name, the thread-local last allocation error,
 * and the assertion failure path.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>

static POSH_TLS int last_error;

void posh__set_last_error(int err) { last_error = err; }

POSH_EXTERN int posh_last_error(void) { return last_error; }

POSH_EXTERN const char *posh_strerror(int err) {
  switch (err) {
  case POSH_OK:
    return "success";
#define POSH__ERR_TEXT(name, value, text)                                      \
  case POSH_##name:                                                            \
    return text;
    POSH_ERRNO_MAP(POSH__ERR_TEXT)
#undef POSH__ERR_TEXT
  default:
    return "unknown libposh error";
  }
}

POSH_EXTERN const char *posh_err_name(int err) {
  switch (err) {
  case POSH_OK:
    return "POSH_OK";
#define POSH__ERR_NAME(name, value, text)                                      \
  case POSH_##name:                                                            \
    return "POSH_" #name;
    POSH_ERRNO_MAP(POSH__ERR_NAME)
#undef POSH__ERR_NAME
  default:
    return "POSH_UNKNOWN";
  }
}

void posh__assert_fail(const char *expr, const char *file, int line) {
  /* Invariant violated inside the library: no shared-heap allocation here. */
  fprintf(stderr, "libposh: assertion failed: %s (%s:%d)\n", expr, file, line);
  abort();
}
