/* SPDX-License-Identifier: MIT */
/*
 * proc.c: who owns a stage. A pid alone is not an identity: pids are reused
 * and restart at each boot. The boot id, the process's start time and its
 * pid namespace together name one process for its whole life.
 */
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/stat.h>

#include "proc.h"

/* What is read of /proc/sys/kernel/random/boot_id: its UUID and newline fit
 * with room to spare. */
#define BOOT_ID_READ_MAX 64

/* What is read of /proc/PID/stat: its 52 numeric fields and a command name
 * of at most 16 bytes fit with room to spare. */
#define PROC_STAT_MAX 1024

/* The start time's field in /proc/PID/stat (proc(5): starttime). */
#define STAT_FIELD_STARTTIME 22

/* Reads at most size - 1 bytes of path into buf, NUL-terminated; the number
 * read, or a negative errno. */
static int read_small(const char *path, char *buf, size_t size)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	ssize_t n;

	if (fd < 0)
		return negerrno();
	n = read(fd, buf, size - 1);
	if (n < 0)
		return negerrno();
	buf[n] = '\0';
	return (int)n;
}

/*
 * A process lives in one boot and one pid namespace: each is read once
 * (recovery asks once per stage) and kept. Threads may ask at the same
 * time (sl-basic.h's thread rule), so the cache is published with C11
 * atomics: a thread that sees BOOT_ID_READY (acquire) sees the bytes
 * written before it was stored (release); the one thread that wins the
 * compare-and-swap writes them, and every other reads its own copy from
 * /proc meanwhile. No lock: a fork() in another thread cannot leave one
 * held in the child, and a failed read (EMFILE) is not kept.
 */
enum { BOOT_ID_EMPTY, BOOT_ID_WRITING, BOOT_ID_READY };
static atomic_int boot_id_state = BOOT_ID_EMPTY;
static char boot_id_cached[BOOT_ID_LEN + 1];
static atomic_uint_least64_t pidns_cached;

int proc_boot_id(char ret[BOOT_ID_LEN + 1])
{
	char buf[BOOT_ID_READ_MAX];
	int expected = BOOT_ID_EMPTY;
	int r;

	if (atomic_load_explicit(&boot_id_state, memory_order_acquire) == BOOT_ID_READY) {
		memcpy(ret, boot_id_cached, sizeof(boot_id_cached));
		return 0;
	}
	r = read_small("/proc/sys/kernel/random/boot_id", buf, sizeof(buf));
	if (r < 0)
		return r;
	if (r < BOOT_ID_LEN)
		return -EBADMSG;
	memcpy(ret, buf, BOOT_ID_LEN);
	ret[BOOT_ID_LEN] = '\0';
	if (atomic_compare_exchange_strong_explicit(&boot_id_state, &expected, BOOT_ID_WRITING, memory_order_relaxed,
						    memory_order_relaxed)) {
		memcpy(boot_id_cached, ret, sizeof(boot_id_cached));
		atomic_store_explicit(&boot_id_state, BOOT_ID_READY, memory_order_release);
	}
	return 0;
}

int proc_start_time(pid_t pid, uint64_t *ret)
{
	char path[sizeof("/proc/-2147483648/stat")], buf[PROC_STAT_MAX];
	const char *p;
	int r;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	r = read_small(path, buf, sizeof(buf));
	if (r < 0)
		return r == -ENOENT || r == -ESRCH ? -ESRCH : r;
	/* The command name (field 2) may hold spaces and parentheses, and
	 * anyone can choose it (prctl PR_SET_NAME): "a) Z (b" is a valid
	 * name. Only the fields after the LAST ')' are ours to read: the
	 * state (field 3), then plain numbers up to the start time (field
	 * 22, the 20th after that parenthesis). */
	p = strrchr(buf, ')');
	if (!p || p[1] != ' ' || !p[2])
		return -EBADMSG;
	/* A process that exited but is not reaped yet (a zombie, Z) or is
	 * being reaped (X) keeps its pid and start time, and nothing of it
	 * runs any more: its stage is nobody's. */
	if (p[2] == 'Z' || p[2] == 'X')
		return -ESRCH;
	for (int field = 2; field < STAT_FIELD_STARTTIME; field++) {
		p = strchr(p + 1, ' ');
		if (!p)
			return -EBADMSG;
	}
	*ret = strtoull(p + 1, NULL, 10);
	return 0;
}

int proc_pidns(uint64_t *ret)
{
	uint64_t ino = atomic_load_explicit(&pidns_cached, memory_order_relaxed);
	struct stat st;

	/* One value, never changed once set: a relaxed load sees 0 or it. */
	if (!ino) {
		if (stat("/proc/self/ns/pid", &st) < 0)
			return negerrno();
		ino = (uint64_t)st.st_ino;
		atomic_store_explicit(&pidns_cached, ino, memory_order_relaxed);
	}
	*ret = ino;
	return 0;
}

int proc_identity(pid_t pid, struct proc_owner *ret)
{
	int r;

	memset(ret, 0, sizeof(*ret));
	if (pid == 0)
		pid = getpid();
	r = proc_boot_id(ret->boot_id);
	if (r == 0)
		r = proc_start_time(pid, &ret->start_time);
	/* The owner's pid namespace (see "Recovery" in docs/design.md). Reading it
	 * needs ptrace access to the owner, which a non-root stagelog started
	 * by another user's process lacks: then the pid was at least read in
	 * ours, and that is what is recorded. */
	if (r == 0) {
		char path[sizeof("/proc/-2147483648/ns/pid")];
		struct stat st;

		snprintf(path, sizeof(path), "/proc/%d/ns/pid", (int)pid);
		if (stat(path, &st) == 0)
			ret->pidns = (uint64_t)st.st_ino;
		else if (errno == ENOENT)
			r = -ESRCH;
		else
			r = proc_pidns(&ret->pidns);
	}
	if (r < 0)
		return r;
	ret->pid = pid;
	return 0;
}
