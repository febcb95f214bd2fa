/* SPDX-License-Identifier: MIT */
/*
 * This file contains posh-stat, the command-line view of a live heap: its
 * header, attached processes, named objects and usage per size class, and
 * with --check the full consistency check (exit status 1 on corruption).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "posh.h"

static void usage(FILE *out) {
  fprintf(out,
          "usage: posh-stat [--check] [--reap] [--quiet] NAME\n"
          "  Print a live libposh heap's header, processes, named objects and\n"
          "  usage.  --check runs the full consistency check (exit 1 if the heap\n"
          "  is corrupt), --reap reclaims processes that died without detaching,\n"
          "  --quiet prints only the check result.\n");
}

static int print_object(const posh_obj_info_t *info, void *arg) {
  (void)arg;
  printf("  %-10s offset %-12" PRIu64 " id %-8" PRIu64 " %8" PRIu64
         " B  held by %" PRIu32 " process(es), %" PRIu32 " name(s), %" PRIu32
         " pin(s)\n",
         posh_obj_type_name(info->ref.type), info->ref.off, info->ref.id,
         info->size, info->processes, info->names, info->pins);
  return 0;
}

static int print_name(const char *name, posh_off_t off, uint32_t tag, void *arg) {
  (void)arg;
  printf("  %-40s offset %-12" PRIu64 " type 0x%08" PRIx32 "\n", name, off.v, tag);
  return 0;
}

static void human(uint64_t bytes, char *buf, size_t len) {
  const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = (double)bytes;
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    u++;
  }
  snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", v, units[u]);
}

int main(int argc, char **argv) {
  int check = 0, reap = 0, quiet = 0;
  const char *name = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--check"))
      check = 1;
    else if (!strcmp(argv[i], "--reap"))
      reap = 1;
    else if (!strcmp(argv[i], "--quiet"))
      quiet = 1;
    else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
      usage(stdout);
      return 0;
    } else if (argv[i][0] == '-' || name) {
      usage(stderr);
      return 2;
    } else
      name = argv[i];
  }
  if (!name) {
    usage(stderr);
    return 2;
  }
  posh_heap_t *heap;
  int r = posh_heap_attach(name, &heap);
  if (r) {
    fprintf(stderr, "posh-stat: cannot attach '%s': %s (%s)\n", name,
            posh_strerror(r), posh_err_name(r));
    return 2;
  }
  if (reap) {
    unsigned n = 0;
    posh_heap_reap(heap, &n);
    if (!quiet)
      printf("reaped %u dead registry slot(s)\n", n);
  }
  if (!quiet) {
    posh_heap_stats_t st;
    char a[32], b[32], c[32], d[32];
    posh_heap_stats(heap, &st);
    human(st.capacity, a, sizeof a);
    human(st.bytes_in_use, b, sizeof b);
    human(st.bytes_free, c, sizeof c);
    human(st.bytes_metadata, d, sizeof d);
    posh_heap_info_t info;
    posh_heap_info(heap, &info);
    printf("heap %s\n", posh_heap_name(heap) ? posh_heap_name(heap) : name);
    printf("  header      abi 0x%" PRIx32 ", flags 0x%" PRIx32 ", checksum %016" PRIx64
           ", data at offset %" PRIu64 "\n",
           info.abi_version, info.flags, info.checksum, info.data_offset);
    printf("  limits      %" PRIu32 " registry slots, %" PRIu32 " names; %" PRIu32
           " process(es) attached\n",
           info.max_processes, info.max_names, info.attached);
    printf("  capacity    %s (%" PRIu64 " pages of %" PRIu64 " KiB)\n", a,
           st.pages_total, st.page_size / 1024);
    printf("  metadata    %s\n", d);
    printf("  in use      %s   free %s\n", b, c);
    printf("  pages       %" PRIu64 " free, %" PRIu64 " small, %" PRIu64 " large\n",
           st.pages_free, st.pages_small, st.pages_large);

    size_t n = 0;
    posh_heap_processes(heap, NULL, 0, &n);
    posh_process_info_t *procs = calloc(n ? n : 1, sizeof *procs);
    if (procs && posh_heap_processes(heap, procs, n, &n) == 0) {
      printf("processes (%zu)\n", n);
      for (size_t i = 0; i < n; i++)
        printf("  slot %-5u pid %-8d %-5s threads %-3u%s\n", procs[i].slot,
               procs[i].pid, procs[i].state == POSH_PROC_LIVE ? "live" : "dead",
               procs[i].threads, procs[i].is_self ? " (posh-stat)" : "");
    }
    free(procs);

    printf("named objects (%u)\n", st.names);
    posh_name_foreach(heap, print_name, NULL);
    printf("shared objects\n");
    posh_obj_foreach(heap, print_object, NULL);

    printf("size classes in use\n");
    printf("  %8s %8s %12s %12s\n", "block", "pages", "in use", "free");
    for (uint32_t i = 0; i < st.size_classes; i++) {
      const posh_class_stats_t *cs = &st.classes[i];
      if (!cs->pages)
        continue;
      printf("  %8u %8u %12" PRIu64 " %12" PRIu64 "\n", cs->block_size, cs->pages,
             cs->blocks_in_use, cs->blocks_free);
    }
  }
  int status = 0;
  if (check) {
    char report[8192];
    r = posh_heap_check(heap, report, sizeof report);
    if (r == 0) {
      printf("check: ok\n");
    } else {
      printf("check: %s\n%s", posh_err_name(r), report);
      status = 1;
    }
  }
  posh_heap_detach(heap);
  return status;
}
