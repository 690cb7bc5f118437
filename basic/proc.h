/* SPDX-License-Identifier: MIT */
/*
 * proc.h: process identity, as recorded for the owner of a stage and for a
 * recoverer's claim. Private: never installed.
 */
#ifndef STAGELOG_PROC_H
#define STAGELOG_PROC_H

#include <stdint.h>
#include <sys/types.h>

#include "macro.h"

#define BOOT_ID_LEN 36

/* Who a stage (or a claim on it) belongs to. */
struct proc_owner {
	char boot_id[BOOT_ID_LEN + 1];
	int64_t pid;
	uint64_t start_time; /* field 22 of /proc/PID/stat, in clock ticks */
	uint64_t pidns;      /* inode of /proc/PID/ns/pid */
};

/* Reads the identity of process pid (0: self): boot id, start time, and
 * the pid namespace the pid was read in (ours). -ESRCH when there is no
 * such process or it is a zombie (see proc_start_time()). */
HIDDEN int proc_identity(pid_t pid, struct proc_owner *ret);

/* The start time of pid (field 22 of /proc/PID/stat). -ESRCH when there is
 * no such process, or when it has exited and only waits to be reaped
 * (state Z or X: a zombie runs nothing); other errors say nothing about
 * its liveness. */
HIDDEN int proc_start_time(pid_t pid, uint64_t *ret);

/* The inode of our pid namespace. */
HIDDEN int proc_pidns(uint64_t *ret);

/* This boot's id. */
HIDDEN int proc_boot_id(char ret[BOOT_ID_LEN + 1]);

#endif
