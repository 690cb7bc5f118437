/* SPDX-License-Identifier: MIT */
/*
 * fuzz-main.c: replays a corpus through a fuzz target without libFuzzer
 * (systemd's fuzz-main.c pattern), so that every seed and every input a
 * fuzzer once crashed on runs under `meson test` with any compiler.
 *
 * Usage: fuzz-TARGET FILE-OR-DIR...   Each regular file is one input; a
 * folder's files are replayed in name order. The target aborts on a broken
 * invariant; a run that reaches the end replayed every input cleanly.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>

#include "macro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(int dirfd, const char *name)
{
	_cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	_cleanup_free_ char *buf = NULL;
	struct stat st;
	size_t len = 0;

	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "fuzz-main: %s: %s\n", name, strerror(errno));
		return -1;
	}
	/* One byte more than the file, so that an empty file still has a
	 * buffer: libFuzzer never passes NULL either. */
	buf = malloc((size_t)st.st_size + 1);
	if (!buf)
		return -1;
	while (len < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + len, (size_t)st.st_size - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "fuzz-main: %s: short read\n", name);
			return -1;
		}
		len += (size_t)n;
	}
	printf("%s (%zu bytes)\n", name, len);
	fflush(stdout);
	(void)LLVMFuzzerTestOneInput((const uint8_t *)buf, len);
	return 0;
}

static int replay_dir(const char *path)
{
	struct dirent **names = NULL;
	_cleanup_close_ int dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int n, r = 0;

	if (dirfd < 0) {
		fprintf(stderr, "fuzz-main: %s: %s\n", path, strerror(errno));
		return -1;
	}
	n = scandir(path, &names, NULL, alphasort);
	if (n < 0) {
		fprintf(stderr, "fuzz-main: %s: %s\n", path, strerror(errno));
		return -1;
	}
	for (int i = 0; i < n; i++) {
		if (names[i]->d_name[0] != '.' && replay_file(dirfd, names[i]->d_name) < 0)
			r = -1;
		free(names[i]);
	}
	free(names);
	return r;
}

int main(int argc, char **argv)
{
	int r = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE-OR-DIR...\n", argv[0]);
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		struct stat st;

		if (stat(argv[i], &st) < 0) {
			fprintf(stderr, "fuzz-main: %s: %s\n", argv[i], strerror(errno));
			r = -1;
		} else if (S_ISDIR(st.st_mode)) {
			r |= replay_dir(argv[i]);
		} else {
			r |= replay_file(AT_FDCWD, argv[i]);
		}
	}
	return r < 0 ? 1 : 0;
}
