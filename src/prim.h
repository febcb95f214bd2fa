/* SPDX-License-Identifier: MIT */
/*
 * This file contains the contract of libposh's OS layer ("prim"): the only
 * place that makes Linux system calls for segments, futexes and process
 * liveness.  Every function returns 0 or a negative POSH_E* code and never
 * leaves a meaningful errno behind.
 */
#ifndef POSH_PRIM_H
#define POSH_PRIM_H

#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* Shared memory segments.  Names are already validated ("/x"). */
int posh__prim_shm_create(const char *name, unsigned mode, int *fd_out);
int posh__prim_shm_open(const char *name, int *fd_out);
int posh__prim_shm_unlink(const char *name);
int posh__prim_memfd_create(const char *label, int *fd_out);
int posh__prim_fd_size(int fd, uint64_t *size_out);
int posh__prim_truncate(int fd, uint64_t size);
/* Map fd [0, size) shared read-write at an address aligned to `align`
 * (a power of two >= the OS page size). */
int posh__prim_map(int fd, uint64_t size, uint64_t align, void **addr_out);
int posh__prim_unmap(void *addr, uint64_t size);
/* Give [offset, offset+len) of the segment back to the OS; reads as zero
 * afterwards in every process. */
int posh__prim_punch_hole(int fd, uint64_t offset, uint64_t len);

/* Futexes on shared memory (never the _PRIVATE variants).  wait returns 0
 * when woken or when *addr != expected, POSH_ETIMEDOUT, or POSH_EINTR.
 * timeout is relative; NULL waits forever. */
int posh__prim_futex_wait(volatile uint32_t *addr, uint32_t expected,
                          const struct timespec *timeout);
int posh__prim_futex_wake(volatile uint32_t *addr, int count);

/* Process identity and liveness. */
pid_t posh__prim_getpid(void);
pid_t posh__prim_gettid(void);
/* Start time of pid (clock ticks since boot, /proc/pid/stat field 22);
 * POSH_ENOENT if the process does not exist. */
int posh__prim_proc_start_time(pid_t pid, uint64_t *start_out);
/* 1 if a process with this pid and start time exists, 0 if not. */
int posh__prim_proc_alive(pid_t pid, uint64_t start_time);

/* Monotonic clock in nanoseconds. */
uint64_t posh__prim_now_ns(void);

#endif /* POSH_PRIM_H */
