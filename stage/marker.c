/* SPDX-License-Identifier: MIT */
/*
 * marker.c: the file that binds a stage directory to its store and its id.
 * A directory named like a stage proves nothing: another store's stage, or
 * anybody's mkdir, looks the same. The marker, written by the stager
 * through the log as entry 1, says whose it is; the orphan scan removes
 * only what carries this store's marker, and a removal that cannot compare
 * device numbers (a FUSE daemon restarted) accepts the inode only with it.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "stage-private.h"

#define MARKER_MAGIC "stagelog stage marker 1"

int stage_marker_write(int top_fd, const char *id, const struct store_identity *store)
{
	_cleanup_close_ int fd = -1;
	char buf[STAGE_MARKER_MAX];
	int n, r;

	n = snprintf(buf, sizeof(buf), MARKER_MAGIC "\nstage %s\nstore %llu %lld\npath %s\n", id,
		     (unsigned long long)store->ino, (long long)store->btime, store->path);
	if (n < 0 || (size_t)n >= sizeof(buf))
		return -ENAMETOOLONG;
	fd = openat(top_fd, STAGE_MARKER_NAME, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return negerrno();
	r = write_all(fd, buf, (size_t)n);
	if (r == 0 && close(TAKE_FD(fd)) < 0)
		r = negerrno();
	return r;
}

/* Takes the literal lit at *p and moves past it; false when it is not
 * there. */
static bool take(const char **p, const char *lit)
{
	size_t n = strlen(lit);

	if (strncmp(*p, lit, n) != 0)
		return false;
	*p += n;
	return true;
}

/* Copies the rest of the line at *p (one or more bytes, then '\n') into
 * out, of size bytes, and moves past the '\n'; false when there is no such
 * line or it does not fit. */
static bool take_line(const char **p, char *out, size_t size)
{
	const char *nl = strchr(*p, '\n');
	size_t len = nl ? (size_t)(nl - *p) : 0;

	if (len == 0 || len >= size)
		return false;
	memcpy(out, *p, len);
	out[len] = '\0';
	*p = nl + 1;
	return true;
}

/* Parses the four lines stage_marker_write() writes, exactly: the magic,
 * "stage ID", "store INO BTIME", "path PATH", each ended by '\n'. The
 * numbers are read strictly (no sign where none belongs, refused when they
 * do not fit), and nothing may follow. */
static bool parse_marker(const char *p, char id[SL_ID_SIZE], unsigned long long *ino, long long *btime, char *path,
			 size_t path_size)
{
	return take(&p, MARKER_MAGIC "\nstage ") && take_line(&p, id, SL_ID_SIZE) && take(&p, "store ") &&
	       read_ull(&p, ino) && take(&p, " ") && read_ll(&p, btime) && take(&p, "\npath ") &&
	       take_line(&p, path, path_size) && *p == '\0';
}

int stage_marker_read(int top_fd, struct stage_marker *ret)
{
	_cleanup_close_ int fd = -1;
	char buf[STAGE_MARKER_MAX + 1];
	unsigned long long ino;
	long long btime;
	ssize_t n;

	struct stat st;

	fd = openat(top_fd, STAGE_MARKER_NAME, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return negerrno();
	if (fstat(fd, &st) < 0)
		return negerrno();
	if (!S_ISREG(st.st_mode))
		return -EBADMSG;
	n = read(fd, buf, sizeof(buf) - 1);
	if (n < 0)
		return negerrno();
	buf[n] = '\0';
	/* Anything else (a partial write, a foreign file) proves nothing. */
	if (!parse_marker(buf, ret->id, &ino, &btime, ret->store.path, sizeof(ret->store.path)) ||
	    !stage_id_valid(ret->id))
		return -EBADMSG;
	ret->store.ino = ino;
	ret->store.btime = btime;
	return 0;
}

bool stage_marker_names(const struct stage_marker *m, const char *id, const struct store_identity *store)
{
	if (strcmp(m->id, id) != 0)
		return false;
	/* The same store file (a rename keeps it), or whatever store now
	 * lives at the same path: a store lost and made anew there still
	 * owns what the old one left. */
	if (m->store.ino == store->ino && m->store.btime != 0 && m->store.btime == store->btime)
		return true;
	return strcmp(m->store.path, store->path) == 0;
}
