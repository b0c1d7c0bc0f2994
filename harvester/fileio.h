/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Writing files durably: every byte (short writes and EINTR retried), fsync
 * before anything depends on the data, and for a file that replaces another
 * the temp-file-and-rename dance, so that a crash leaves the old file or the
 * new one, never half of either. No printing; 0 or -errno.
 */
#pragma once

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

/* Write all LEN bytes of BUF to FD, writing again after a short write or
 * EINTR. 0, or -errno; -EIO where write() wrote nothing. */
int write_full(int fd, const void *buf, size_t len);

/* fsync the folder DIR, so that the entries created, renamed or removed in
 * it survive a crash. 0 or -errno. */
int fsync_dir(const char *dir);

/* Create PATH, or truncate it where it exists (a symlink is refused), with
 * MODE less the umask for a new file; write the N_IOV buffers of IOV one
 * after the other and fsync the file. In place and without fsyncing the
 * folder: for a file nobody reads until the caller has written all of its
 * folder and fsynced it (fsync_dir). 0 or -errno. */
int write_file_sync(const char *path, const struct iovec *iov, size_t n_iov, mode_t mode);

/* Replace PATH atomically with the N_IOV buffers of IOV, concatenated in
 * order: write "PATH.tmp" (created afresh with MODE less the umask; a stale
 * one from a crash is removed first), fsync it, rename it over PATH, then
 * fsync PATH's folder. On any error before the rename the temp file is
 * removed and PATH is untouched. -ENAMETOOLONG where "PATH.tmp" does not fit
 * PATH_MAX; otherwise 0 or -errno of the step that failed (after the rename,
 * only the folder's fsync can fail: PATH is then new but maybe not durable). */
int write_file_atomic(const char *path, const struct iovec *iov, size_t n_iov, mode_t mode);
