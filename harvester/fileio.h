/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Reading a file whole, with a limit; writing files durably: every byte (short writes and EINTR retried), fsync
 * before anything depends on the data, and for a file that replaces another
 * the temp-file-and-rename dance, so that a crash leaves the old file or the
 * new one, never half of either. No printing; 0 or -errno.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

/* Open PATH for reading if it is a regular file: the descriptor, or
 * -errno; -EISDIR for a folder, -EINVAL for anything else that is not a
 * regular file (opened without waiting, so a FIFO cannot hang it).
 * O_NOFOLLOW in FLAGS refuses a symlink (-ELOOP). RET_ST (optional) gets
 * the file's stat. */
int open_regular(const char *path, int flags, struct stat *ret_st);

/* Read the regular file PATH whole into *RET (malloc'd, NUL-terminated one
 * byte past *RET_LEN, so text can be used as a string). O_NOFOLLOW in
 * FLAGS refuses a symlink (-ELOOP); a folder is -EISDIR, anything else
 * but a regular file -EINVAL. More than MAX bytes: with RET_TRUNCATED, the first MAX and
 * *RET_TRUNCATED set; without, -EFBIG. 0 or -errno. */
int read_file(const char *path, size_t max, int flags, void **ret, size_t *ret_len, bool *ret_truncated);
/* The same from FD, a regular file opened for reading, from its offset. */
int read_fd(int fd, size_t max, void **ret, size_t *ret_len, bool *ret_truncated);

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
