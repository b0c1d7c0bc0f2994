/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Reading files whole, writing them durably: see fileio.h. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harvester/fileio.h"
#include "harvester/macro.h"

/* FD's stat, if it is a regular file: 0, -EISDIR, -EINVAL or -errno. */
static int fstat_regular(int fd, struct stat *st)
{
	if (fstat(fd, st) < 0)
		return negative_errno();
	if (S_ISDIR(st->st_mode))
		return -EISDIR;
	return S_ISREG(st->st_mode) ? 0 : -EINVAL;
}

int open_regular(const char *path, int flags, struct stat *ret_st)
{
	/* (O_NONBLOCK: a FIFO planted at PATH must not hang the open; a
	 * regular file's reads ignore it.) */
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | (flags & O_NOFOLLOW));
	struct stat st;
	int r;

	if (fd < 0)
		return negative_errno();
	if ((r = fstat_regular(fd, &st)) < 0)
		return r;
	if (ret_st)
		*ret_st = st;
	return TAKE_FD(fd);
}

int read_file(const char *path, size_t max, int flags, void **ret, size_t *ret_len, bool *ret_truncated)
{
	_cleanup_close_ int fd = open_regular(path, flags, NULL);

	if (fd < 0)
		return fd;
	return read_fd(fd, max, ret, ret_len, ret_truncated);
}

int read_fd(int fd, size_t max, void **ret, size_t *ret_len, bool *ret_truncated)
{
	struct stat st;
	_cleanup_free_ char *buf = NULL;
	size_t len = 0, size;
	int r;

	if ((r = fstat_regular(fd, &st)) < 0)
		return r;
	/* Sized from the file (at least a page: proc and cgroup files say 0),
	 * grown if it grows while read: up to one byte past MAX (to tell
	 * "more"), and one for the NUL. */
	size = (uint64_t)st.st_size < max ? (size_t)st.st_size + 1 : max + 1;
	if (size < 4096)
		size = 4096 < max + 1 ? 4096 : max + 1;
	for (;;) {
		if (!buf || len == size) {
			if (buf && size == max + 1)
				break;
			if (buf)
				size = size > (max + 1) / 2 ? max + 1 : size * 2;
			char *grown = realloc(buf, size + 1);
			if (!grown)
				return -ENOMEM;
			buf = grown;
		}
		ssize_t n = read(fd, buf + len, size - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return negative_errno();
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	bool more = len > max;
	if (more && !ret_truncated)
		return -EFBIG;
	if (more)
		len = max;
	if (ret_truncated)
		*ret_truncated = more;
	buf[len] = 0;
	*ret_len = len;
	*ret = TAKE_PTR(buf);
	return 0;
}

int write_full(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return negative_errno();
		}
		if (n == 0)
			return -EIO; /* no error and no progress: do not spin */
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int fsync_dir(const char *dir)
{
	_cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return negative_errno();
	return fsync(fd) < 0 ? negative_errno() : 0;
}

/* Write the buffers, fsync, and close FD (taking it), checking the close too:
 * the data is on disk before the caller makes the file visible. */
static int write_iov_sync_close(int *fd, const struct iovec *iov, size_t n_iov)
{
	int r = 0;

	for (size_t i = 0; r >= 0 && i < n_iov; i++)
		r = write_full(*fd, iov[i].iov_base, iov[i].iov_len);
	if (r >= 0 && fsync(*fd) < 0)
		r = negative_errno();
	if (r >= 0 && close(TAKE_FD(*fd)) < 0)
		r = negative_errno();
	return r;
}

int write_file_sync(const char *path, const struct iovec *iov, size_t n_iov, mode_t mode)
{
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0)
		return negative_errno();
	return write_iov_sync_close(&fd, iov, n_iov);
}

int write_file_atomic(const char *path, const struct iovec *iov, size_t n_iov, mode_t mode)
{
	char tmp[PATH_MAX], dir[PATH_MAX];
	const char *slash;
	int r;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	/* The folder to fsync, as dirname(3) gives it, without copying PATH to the heap. */
	slash = strrchr(path, '/');
	if (!slash)
		strcpy(dir, ".");
	else if (slash == path)
		strcpy(dir, "/");
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);

	/* A fixed temp name, not a unique one: a temp file left by a crash is
	 * replaced on the next write instead of piling up, and each file has
	 * one writer (the daemon's one thread). It is removed and created with
	 * O_EXCL rather than truncated, so the data goes into a fresh inode
	 * that nothing else links to, never through a link planted there. */
	if (unlink(tmp) < 0 && errno != ENOENT)
		return negative_errno(); /* e.g. -EISDIR: something that is not ours */
	_cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		return negative_errno();
	r = write_iov_sync_close(&fd, iov, n_iov);
	if (r >= 0 && rename(tmp, path) < 0)
		r = negative_errno();
	if (r < 0) {
		(void)unlink(tmp);
		return r;
	}
	/* And the rename itself must survive a crash. */
	return fsync_dir(dir);
}
