/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Writing files durably: whole contents, modes, atomic replacement, and no
 * temp file left behind, on success or on failures that happen as root too. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "harvester/fileio.h"
#include "harvester/macro.h"

static char dir[64], path[128], tmp[160];

static int setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/test-fileio.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(path, sizeof(path), "%s/file", dir);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	umask(022);
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void put(const char *p, const char *text)
{
	FILE *f = fopen(p, "we");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
}

/* The whole file P, NUL-terminated; its length in *ret_len. */
static char *slurp(const char *p, size_t *ret_len)
{
	struct stat st;
	FILE *f = fopen(p, "re");
	assert_non_null(f);
	assert_int_equal(fstat(fileno(f), &st), 0);
	char *buf = malloc((size_t)st.st_size + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)st.st_size, f), (size_t)st.st_size);
	buf[st.st_size] = '\0';
	fclose(f);
	*ret_len = (size_t)st.st_size;
	return buf;
}

static void assert_content(const char *p, const char *want)
{
	size_t len;
	_cleanup_free_ char *got = slurp(p, &len);
	assert_int_equal(len, strlen(want));
	assert_string_equal(got, want);
}

/* The names in the test folder, sorted and joined by spaces: shows any temp
 * file left behind. */
static void assert_entries(const char *want)
{
	struct dirent **list;
	char got[512] = "";
	int n = scandir(dir, &list, NULL, alphasort);

	assert_true(n >= 0);
	for (int i = 0; i < n; i++) {
		if (strcmp(list[i]->d_name, ".") && strcmp(list[i]->d_name, "..")) {
			if (got[0])
				strcat(got, " ");
			strcat(got, list[i]->d_name);
		}
		free(list[i]);
	}
	free(list);
	assert_string_equal(got, want);
}

#define IOV(s) { .iov_base = (char *)(s), .iov_len = strlen(s) }

static void test_atomic_content_and_mode(void **state)
{
	/* A body bigger than one write usually takes on a pipe, and an empty
	 * buffer between: all of it, in order. */
	size_t big = 3 * 1024 * 1024 + 7;
	_cleanup_free_ char *body = malloc(big + 1), *want = NULL, *got = NULL;
	size_t len;
	struct stat st;

	assert_non_null(body);
	for (size_t i = 0; i < big; i++)
		body[i] = (char)('a' + i % 26);
	body[big] = '\0';
	struct iovec iov[] = { IOV("SIG:"), IOV(""), { .iov_base = body, .iov_len = big } };
	assert_int_equal(write_file_atomic(path, iov, ELEMENTSOF(iov), 0640), 0);
	got = slurp(path, &len);
	assert_int_equal(len, 4 + big);
	assert_memory_equal(got, "SIG:", 4);
	assert_memory_equal(got + 4, body, big);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_entries("file");

	/* The mode is the one asked for less the umask, as open(2) gives it. */
	struct iovec one[] = { IOV("x") };
	assert_int_equal(write_file_atomic(path, one, 1, 0666), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	assert_int_equal(write_file_atomic(path, one, 1, 0600), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);

	/* Nothing at all is a file of nothing. */
	assert_int_equal(write_file_atomic(path, NULL, 0, 0600), 0);
	assert_content(path, "");
	assert_entries("file");
}

static void test_atomic_replaces(void **state)
{
	char other[160];
	struct stat before, after;
	struct iovec iov[] = { IOV("new "), IOV("contents\n") };

	put(path, "old contents, longer than the new ones\n");
	snprintf(other, sizeof(other), "%s/other", dir);
	assert_int_equal(link(path, other), 0);
	assert_int_equal(stat(path, &before), 0);

	assert_int_equal(write_file_atomic(path, iov, ELEMENTSOF(iov), 0600), 0);
	assert_content(path, "new contents\n");
	/* A new inode renamed over the name, not the old one rewritten: the
	 * other link to the old file still reads the old contents whole. */
	assert_int_equal(stat(path, &after), 0);
	assert_true(after.st_ino != before.st_ino);
	assert_content(other, "old contents, longer than the new ones\n");
	assert_entries("file other");
}

/* Failures that really fail as root: PATH keeps its old contents and no
 * temp file stays behind. */
static void test_atomic_failures_keep_old(void **state)
{
	char missing[160], longname[PATH_MAX + 16], victim[160], sub[160];
	struct iovec iov[] = { IOV("new") };

	put(path, "old");

	/* The temp name is taken by something that is not a stale file. */
	assert_int_equal(mkdir(tmp, 0700), 0);
	assert_int_equal(write_file_atomic(path, iov, 1, 0600), -EISDIR);
	assert_content(path, "old");
	assert_int_equal(rmdir(tmp), 0);

	/* A folder that does not exist. */
	snprintf(missing, sizeof(missing), "%s/no/such/file", dir);
	assert_int_equal(write_file_atomic(missing, iov, 1, 0600), -ENOENT);

	/* A name too long for its ".tmp". */
	memset(longname, 'a', sizeof(longname));
	longname[PATH_MAX - 2] = '\0';
	assert_int_equal(write_file_atomic(longname, iov, 1, 0600), -ENAMETOOLONG);

	/* The rename fails after the temp file was written (a file cannot
	 * replace a folder that has something in it): the temp file goes. */
	snprintf(sub, sizeof(sub), "%s/sub", dir);
	assert_int_equal(mkdir(sub, 0700), 0);
	snprintf(victim, sizeof(victim), "%s/keep", sub);
	put(victim, "x");
	assert_int_equal(write_file_atomic(sub, iov, 1, 0600), -EISDIR);
	assert_content(victim, "x");
	assert_entries("file sub");

	/* The write itself fails half-way: a file size limit binds root too.
	 * The first write is short (cut at the limit), the next one fails. */
	struct rlimit old_lim, lim = { .rlim_cur = 2, .rlim_max = RLIM_INFINITY };
	void (*old_sig)(int) = signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old_lim), 0);
	lim.rlim_max = old_lim.rlim_max;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	int r = write_file_atomic(path, iov, 1, 0600);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old_lim), 0);
	signal(SIGXFSZ, old_sig);
	assert_int_equal(r, -EFBIG);
	assert_content(path, "old");
	assert_entries("file sub");
}

static void test_atomic_stale_temp(void **state)
{
	char victim[160];
	struct iovec iov[] = { IOV("new") };

	/* A temp file a crash left is replaced, not appended to, and goes. */
	put(tmp, "half a file that was longer");
	assert_int_equal(write_file_atomic(path, iov, 1, 0600), 0);
	assert_content(path, "new");
	assert_entries("file");

	/* A link planted at the temp name is removed, never written through. */
	snprintf(victim, sizeof(victim), "%s/victim", dir);
	put(victim, "mine");
	assert_int_equal(symlink(victim, tmp), 0);
	assert_int_equal(write_file_atomic(path, iov, 1, 0600), 0);
	assert_content(victim, "mine");
	assert_content(path, "new");
	assert_entries("file victim");
}

static void test_atomic_relative(void **state)
{
	char cwd[PATH_MAX];
	struct iovec iov[] = { IOV("here") };

	/* No '/' in the name: the folder to fsync is the current one. */
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir(dir), 0);
	int r = write_file_atomic("file", iov, 1, 0600);
	assert_int_equal(chdir(cwd), 0);
	assert_int_equal(r, 0);
	assert_content(path, "here");
	assert_entries("file");
}

static void test_sync_in_place(void **state)
{
	char other[160], missing[160], target[160];
	struct stat before, after;
	struct iovec iov[] = { IOV("ab"), IOV("cd") };

	/* New: the mode asked for, the buffers in order, no temp file. */
	assert_int_equal(write_file_sync(path, iov, ELEMENTSOF(iov), 0640), 0);
	assert_content(path, "abcd");
	assert_int_equal(stat(path, &before), 0);
	assert_int_equal(before.st_mode & 07777, 0640);
	assert_entries("file");

	/* Existing: rewritten in place and cut to the new length (the same
	 * inode, so another link sees it), its mode kept. */
	snprintf(other, sizeof(other), "%s/other", dir);
	assert_int_equal(link(path, other), 0);
	struct iovec one[] = { IOV("z") };
	assert_int_equal(write_file_sync(path, one, 1, 0600), 0);
	assert_int_equal(stat(path, &after), 0);
	assert_true(after.st_ino == before.st_ino);
	assert_int_equal(after.st_mode & 07777, 0640);
	assert_content(other, "z");

	/* A symlink at the name is refused, its target untouched. */
	snprintf(target, sizeof(target), "%s/link", dir);
	assert_int_equal(symlink(other, target), 0);
	assert_int_equal(write_file_sync(target, iov, ELEMENTSOF(iov), 0600), -ELOOP);
	assert_content(other, "z");

	snprintf(missing, sizeof(missing), "%s/no/such/file", dir);
	assert_int_equal(write_file_sync(missing, iov, ELEMENTSOF(iov), 0600), -ENOENT);
	assert_entries("file link other");
}

static void test_fsync_dir(void **state)
{
	char missing[160];

	put(path, "x");
	assert_int_equal(fsync_dir(dir), 0);
	assert_int_equal(fsync_dir(path), -ENOTDIR);
	snprintf(missing, sizeof(missing), "%s/none", dir);
	assert_int_equal(fsync_dir(missing), -ENOENT);
}

static volatile sig_atomic_t n_alarms;

static void on_alarm(int sig)
{
	n_alarms++;
}

/* A pipe whose reader is slow, and a timer whose signal (no SA_RESTART)
 * interrupts the blocked writer: write() comes back short, or with EINTR
 * where it had written nothing. write_full goes on until all of it is
 * through, in order. */
/* read_file: the whole file, NUL-terminated; the limit as an error or a
 * cut; a symlink refused on request; a folder and a FIFO refused at once
 * (an open of a FIFO must not wait for a writer); a file larger than the
 * first buffer read whole. */
/* read_fd(): what harvestctl's descriptor gives the daemon, from its offset. */
static void test_read_fd(void **state)
{
	int fd, p[2];
	void *buf = NULL;
	size_t len = 0;

	put(path, "harvested");
	fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(lseek(fd, 7, SEEK_SET), 7);
	assert_int_equal(read_fd(fd, 100, &buf, &len, NULL), 0);
	assert_int_equal(len, 2);
	assert_string_equal(buf, "ed");
	free(buf);
	close(fd);
	fd = open("/", O_RDONLY | O_CLOEXEC | O_DIRECTORY);
	assert_int_equal(read_fd(fd, 100, &buf, &len, NULL), -EISDIR);
	close(fd);
	assert_int_equal(pipe(p), 0);
	assert_int_equal(read_fd(p[0], 100, &buf, &len, NULL), -EINVAL);   /* would block on a pipe */
	close(p[0]);
	close(p[1]);
}

static void test_read_file(void **state)
{
	char link[160], fifo[160], big[200];
	void *buf = NULL;
	size_t len = 0;
	bool cut = true;

	put(path, "harvest");
	assert_int_equal(read_file(path, 100, 0, &buf, &len, NULL), 0);
	assert_int_equal(len, 7);
	assert_string_equal(buf, "harvest");
	free(buf);
	assert_int_equal(read_file(path, 7, 0, &buf, &len, &cut), 0);   /* exactly the limit */
	assert_int_equal(len, 7);
	assert_false(cut);
	free(buf);
	assert_int_equal(read_file(path, 6, 0, &buf, &len, NULL), -EFBIG);
	assert_int_equal(read_file(path, 4, 0, &buf, &len, &cut), 0);
	assert_int_equal(len, 4);
	assert_true(cut);
	assert_string_equal(buf, "harv");
	free(buf);
	put(path, "");
	assert_int_equal(read_file(path, 4, 0, &buf, &len, NULL), 0);
	assert_int_equal(len, 0);
	assert_string_equal(buf, "");
	free(buf);

	snprintf(link, sizeof(link), "%s/link", dir);
	assert_int_equal(symlink(path, link), 0);
	assert_int_equal(read_file(link, 100, O_NOFOLLOW, &buf, &len, NULL), -ELOOP);
	assert_int_equal(read_file(link, 100, 0, &buf, &len, NULL), 0);
	free(buf);
	assert_int_equal(read_file(dir, 100, 0, &buf, &len, NULL), -EISDIR);
	snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	assert_int_equal(read_file(fifo, 100, 0, &buf, &len, NULL), -EINVAL);
	assert_int_equal(read_file("/nonexistent/file", 100, 0, &buf, &len, NULL), -ENOENT);

	/* 100,000 bytes: more than any first guess, less than the limit */
	snprintf(big, sizeof(big), "%s/big", dir);
	FILE *f = fopen(big, "we");
	assert_non_null(f);
	for (int i = 0; i < 100000; i++)
		fputc('a' + i % 26, f);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(read_file(big, 1 << 20, 0, &buf, &len, NULL), 0);
	assert_int_equal(len, 100000);
	assert_int_equal(((char *)buf)[99999], 'a' + 99999 % 26);
	assert_int_equal(((char *)buf)[100000], 0);
	free(buf);
	assert_int_equal(read_file(big, 65536, 0, &buf, &len, &cut), 0);
	assert_int_equal(len, 65536);
	assert_true(cut);
	free(buf);
}

static void test_write_full_pipe(void **state)
{
	const size_t total = 4 * 1024 * 1024;
	_cleanup_free_ uint8_t *buf = malloc(total);
	struct sigaction sa = { .sa_handler = on_alarm }, old_sa;
	struct itimerval every_ms = { { 0, 1000 }, { 0, 1000 } }, off = {};
	int data[2], answer[2], status;
	uint64_t sum = 0, back = 0;

	assert_non_null(buf);
	for (size_t i = 0; i < total; i++) {
		buf[i] = (uint8_t)(i * 7 + i / 4096);
		sum = sum * 31 + buf[i];
	}
	assert_int_equal(pipe2(data, O_CLOEXEC), 0);
	assert_int_equal(pipe2(answer, O_CLOEXEC), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* The reader: small reads, a pause now and then, and the
		 * checksum of everything it got, in order. */
		uint8_t chunk[1000];
		uint64_t s = 0;
		size_t got = 0;
		ssize_t n;
		close(data[1]);
		close(answer[0]);
		while ((n = read(data[0], chunk, sizeof(chunk))) > 0) {
			for (ssize_t i = 0; i < n; i++)
				s = s * 31 + chunk[i];
			got += (size_t)n;
			if (got % 65000 < sizeof(chunk))
				usleep(2000);
		}
		_exit(n == 0 && got == total && write(answer[1], &s, sizeof(s)) == sizeof(s) ? 0 : 1);
	}
	close(data[0]);
	close(answer[1]);

	n_alarms = 0;
	assert_int_equal(sigaction(SIGALRM, &sa, &old_sa), 0);
	assert_int_equal(setitimer(ITIMER_REAL, &every_ms, NULL), 0);
	int r = write_full(data[1], buf, total);
	assert_int_equal(setitimer(ITIMER_REAL, &off, NULL), 0);
	assert_int_equal(sigaction(SIGALRM, &old_sa, NULL), 0);
	close(data[1]);

	assert_int_equal(r, 0);
	assert_int_equal(read(answer[0], &back, sizeof(back)), sizeof(back));
	close(answer[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_true(back == sum);
	/* The interruptions happened: otherwise this tested nothing. */
	printf("write_full: 4 MiB through a slow pipe under %d SIGALRMs\n", (int)n_alarms);
	assert_true(n_alarms > 0);

	/* A closed fd is an error, not a loop. */
	int fds[2];
	assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
	close(fds[0]);
	close(fds[1]);
	assert_int_equal(write_full(fds[1], "x", 1), -EBADF);
	assert_int_equal(write_full(-1, "x", 1), -EBADF);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_atomic_content_and_mode, setup, teardown),
		cmocka_unit_test_setup_teardown(test_atomic_replaces, setup, teardown),
		cmocka_unit_test_setup_teardown(test_atomic_failures_keep_old, setup, teardown),
		cmocka_unit_test_setup_teardown(test_atomic_stale_temp, setup, teardown),
		cmocka_unit_test_setup_teardown(test_atomic_relative, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sync_in_place, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fsync_dir, setup, teardown),
		cmocka_unit_test(test_write_full_pipe),
		cmocka_unit_test_setup_teardown(test_read_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_fd, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
