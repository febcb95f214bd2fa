/* SPDX-License-Identifier: MIT */
/*
 * This file contains the OS layer: shared-memory segments (shm_open, memfd),
 * aligned mappings, hole punching, shared futexes, and process liveness from
 * /proc.  Contract in prim.h.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <signal.h>
#include <stdlib.h>

static int errno_to_posh(int e) {
  switch (e) {
  case EPERM: return POSH_EPERM;
  case ENOENT: return POSH_ENOENT;
  case EINTR: return POSH_EINTR;
  case EAGAIN: return POSH_EAGAIN;
  case ENOMEM: return POSH_ENOMEM;
  case EACCES: return POSH_EACCES;
  case EEXIST: return POSH_EEXIST;
  case EINVAL: return POSH_EINVAL;
  case ENOSPC: return POSH_ENOMEM;
  case EFBIG: return POSH_ENOMEM;
  case ENAMETOOLONG: return POSH_ENAMETOOLONG;
  case ENOSYS: return POSH_ENOSYS;
  case ETIMEDOUT: return POSH_ETIMEDOUT;
  case EBADF: return POSH_EINVAL;
  default: return POSH_EIO;
  }
}

int posh__prim_shm_create(const char *name, unsigned mode, int *fd_out) {
  int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0)
    return errno_to_posh(errno);
  *fd_out = fd;
  return 0;
}

int posh__prim_shm_open(const char *name, int *fd_out) {
  int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
  if (fd < 0)
    return errno_to_posh(errno);
  *fd_out = fd;
  return 0;
}

int posh__prim_shm_unlink(const char *name) {
  return shm_unlink(name) == 0 ? 0 : errno_to_posh(errno);
}

int posh__prim_memfd_create(const char *label, int *fd_out) {
  int fd = (int)syscall(SYS_memfd_create, label, (unsigned)MFD_CLOEXEC);
  if (fd < 0)
    return errno_to_posh(errno);
  *fd_out = fd;
  return 0;
}

int posh__prim_fd_size(int fd, uint64_t *size_out) {
  struct stat st;
  if (fstat(fd, &st) != 0)
    return errno_to_posh(errno);
  *size_out = (uint64_t)st.st_size;
  return 0;
}

int posh__prim_truncate(int fd, uint64_t size) {
  int r;
  do
    r = ftruncate(fd, (off_t)size);
  while (r != 0 && errno == EINTR);
  return r == 0 ? 0 : errno_to_posh(errno);
}

int posh__prim_map(int fd, uint64_t size, uint64_t align, void **addr_out) {
  /* Reserve size + align of address space, then map the segment over an
   * aligned part of it and return the slack, so the base is aligned to
   * `align` in every process (the allocator's 64 KiB pages rely on it). */
  uint64_t span = size + align;
  unsigned char *res = mmap(NULL, span, PROT_NONE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (res == MAP_FAILED)
    return errno_to_posh(errno);
  unsigned char *base = (unsigned char *)posh__align_up((uint64_t)res, align);
  void *m = mmap(base, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
                 fd, 0);
  if (m == MAP_FAILED) {
    int err = errno_to_posh(errno);
    munmap(res, span);
    return err;
  }
  if (base > res)
    munmap(res, (size_t)(base - res));
  if (res + span > base + size)
    munmap(base + size, (size_t)(res + span - (base + size)));
  *addr_out = base;
  return 0;
}

int posh__prim_unmap(void *addr, uint64_t size) {
  return munmap(addr, size) == 0 ? 0 : errno_to_posh(errno);
}

int posh__prim_punch_hole(int fd, uint64_t offset, uint64_t len) {
  if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset,
                (off_t)len) != 0)
    return errno_to_posh(errno);
  return 0;
}

int posh__prim_futex_wait(volatile uint32_t *addr, uint32_t expected,
                          const struct timespec *timeout) {
  /* FUTEX_WAIT (shared): the word lives in a MAP_SHARED mapping used by
   * several processes, so the _PRIVATE variant would never be woken. */
  long r = syscall(SYS_futex, addr, FUTEX_WAIT, expected, timeout, NULL, 0);
  if (r == 0)
    return 0;
  switch (errno) {
  case EAGAIN: return 0; /* value already changed */
  case ETIMEDOUT: return POSH_ETIMEDOUT;
  case EINTR: return POSH_EINTR;
  default: return errno_to_posh(errno);
  }
}

int posh__prim_futex_wake(volatile uint32_t *addr, int count) {
  long r = syscall(SYS_futex, addr, FUTEX_WAKE, count, NULL, NULL, 0);
  return r < 0 ? errno_to_posh(errno) : (int)r;
}

pid_t posh__prim_getpid(void) { return getpid(); }
pid_t posh__prim_gettid(void) { return (pid_t)syscall(SYS_gettid); }

/* Reads /proc/pid/stat: start time (field 22) and state letter (field 3). */
static int read_proc_stat(pid_t pid, uint64_t *start_out, char *state_out) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT || errno == ESRCH ? POSH_ENOENT : errno_to_posh(errno);
  ssize_t n;
  do
    n = read(fd, buf, sizeof buf - 1);
  while (n < 0 && errno == EINTR);
  close(fd);
  if (n <= 0)
    return POSH_ENOENT;
  buf[n] = '\0';
  /* Field 2 (comm) may contain spaces and ')': fields restart after the
   * last ')'.  Then " S f4 ... f22". */
  char *p = strrchr(buf, ')');
  if (!p || p[1] != ' ' || !p[2])
    return POSH_EIO;
  *state_out = p[2];
  p += 2;
  int field = 3;
  while (*p && field < 22) {
    if (*p == ' ')
      field++;
    p++;
  }
  if (field != 22)
    return POSH_EIO;
  char *end;
  unsigned long long v = strtoull(p, &end, 10);
  if (end == p)
    return POSH_EIO;
  *start_out = v;
  return 0;
}

int posh__prim_proc_start_time(pid_t pid, uint64_t *start_out) {
  char state;
  return read_proc_stat(pid, start_out, &state);
}

int posh__prim_proc_alive(pid_t pid, uint64_t start_time) {
  if (pid <= 0)
    return 0;
  if (kill(pid, 0) != 0 && errno == ESRCH)
    return 0;
  uint64_t st;
  char state;
  int r = read_proc_stat(pid, &st, &state);
  if (r == POSH_ENOENT)
    return 0;
  if (r != 0)
    return 1; /* cannot tell: assume alive rather than steal from it */
  if (st != start_time)
    return 0; /* the pid was reused by another process */
  /* A zombie can never run again: whatever it held is abandoned. */
  return !(state == 'Z' || state == 'X');
}

uint64_t posh__prim_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
