#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Nothing left behind on any failure (issue 9): a tree that cannot be
removed ends every command quickly with the stage failed; a store that
cannot be written stops no removal; a signal aborts `stage` and `run` (before
the runtime) with 128+N; an id that could not be delivered is aborted with
74; publish refuses a destination before it changes anything; a published
tree is never an orphan; conditions a user can cause never exit 70.

Each test checks the exit code, what is left under the staging root (on
tmpfs) and the record. Tests that need root (mounts) skip without it."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_cli import STAGELOG, CANARY, Base, make_bundle  # noqa: E402

IS_ROOT = os.geteuid() == 0


def big_bundle(path, files=4000, per_dir=100):
    """A bundle whose copy takes long enough to be interrupted."""
    make_bundle(path)
    rootfs = os.path.join(path, "rootfs")
    for d in range(files // per_dir):
        dd = os.path.join(rootfs, "d%03d" % d)
        os.makedirs(dd)
        for f in range(per_dir):
            with open(os.path.join(dd, "f%03d" % f), "w") as fh:
                fh.write("x" * 64)
    return path


def chain(base, depth):
    """depth nested directories c/c/c/... under base; returns the deepest."""
    d = os.path.join(base, *(["c"] * depth))
    os.makedirs(d)
    return d


class Failures(Base):
    def record(self, stage_id):
        return self.slj("show", stage_id)

    def mount_tmpfs(self, where):
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "none", where], check=True)
        self.addCleanup(lambda: subprocess.run(["umount", "-l", where], capture_output=True))

    def assert_failed_with_reason(self, stage_id, want=None):
        rec = self.record(stage_id)
        self.assertEqual(rec["state"], "failed", rec)
        self.assertTrue(rec.get("reason"), rec)
        if want:
            self.assertIn(want, rec["reason"])
        return rec


@unittest.skipUnless(IS_ROOT, "mounts need root")
class TestUnremovableDeepTrees(Failures):
    """Item 1: chains of 1 to 300 directories with a mount at the bottom end
    quickly under release, recover, check --remove-orphans and run, with the
    stage failed and a reason naming the deepest path in the way."""

    DEPTHS = [1, 31, 32, 33, 64, 300]

    def staged_with_chain(self, depth):
        stage_id, path = self.stage("--owner", str(os.getpid()))
        bottom = chain(path, depth)
        os.mkdir(os.path.join(bottom, "m"))
        self.mount_tmpfs(os.path.join(bottom, "m"))
        with open(os.path.join(bottom, "m", "left"), "w") as f:
            f.write("x")
        return stage_id, path

    def test_release(self):
        for depth in self.DEPTHS:
            with self.subTest(depth=depth):
                stage_id, path = self.staged_with_chain(depth)
                t = time.monotonic()
                p = self.sl("release", stage_id, code=1, timeout=20)
                self.assertLess(time.monotonic() - t, 10, "release took too long")
                self.assertIn("mount", p.stderr)
                rec = self.assert_failed_with_reason(stage_id, "mount")
                self.assertTrue(rec["reason"].rstrip().split(":")[0].endswith("c/m")
                                or "/m:" in rec["reason"], rec["reason"])
                # Everything else is gone: config.json with the secrets first.
                self.assertFalse(os.path.exists(os.path.join(path, "config.json")))
                self.assertFalse(os.path.exists(os.path.join(path, "rootfs")))

    def test_recover_and_force(self):
        for depth in self.DEPTHS:
            with self.subTest(depth=depth):
                stage_id, _ = self.staged_with_chain(depth)
                t = time.monotonic()
                out = self.slj("recover", "--force", stage_id, code=1, timeout=20)
                self.assertLess(time.monotonic() - t, 10)
                self.assertEqual([f["id"] for f in out["failed"] if f["id"] == stage_id], [stage_id])
                self.assert_failed_with_reason(stage_id, "mount")
                # A failed stage whose lock is free is retried (and fails
                # again, loudly) by a plain recover too.
                out = self.slj("recover", code=1, timeout=20)
                self.assertIn(stage_id, [f["id"] for f in out["failed"]])

    def test_check_remove_orphans(self):
        for depth in self.DEPTHS:
            with self.subTest(depth=depth):
                orphan = self.make_orphan()
                bottom = chain(orphan, depth)
                os.mkdir(os.path.join(bottom, "m"))
                self.mount_tmpfs(os.path.join(bottom, "m"))
                t = time.monotonic()
                out = self.slj("check", "--root", self.root, "--remove-orphans", code=1, timeout=20)
                self.assertLess(time.monotonic() - t, 10)
                self.assertIn(orphan, out["orphans"])
                self.assertNotIn(orphan, out["removed"])

    def test_run(self):
        seen = set()
        for depth in (32, 300):
            with self.subTest(depth=depth):
                script = os.path.join(self.tmp, "runtime-%d.sh" % depth)
                with open(script, "w") as f:
                    f.write('#!/bin/sh\nd="$1/$(printf \'c/%%.0s\' $(seq %d))"\n'
                            'mkdir -p "$d/m" && mount -t tmpfs -o size=1m none "$d/m" && '
                            'echo "$d/m" > %s/mnt-%d\n' % (depth, self.tmp, depth))
                os.chmod(script, 0o755)
                t = time.monotonic()
                p = self.sl("run", "--root", self.root, "--bundle", self.bundle, "--",
                            script, "{bundle}", code=125, timeout=30)
                with open(os.path.join(self.tmp, "mnt-%d" % depth)) as f:
                    mnt = f.read().strip()
                self.addCleanup(lambda m=mnt: subprocess.run(["umount", "-l", m], capture_output=True))
                self.assertLess(time.monotonic() - t, 15)
                self.assertIn("mount", p.stderr)
                failed = [s for s in self.slj("list") if s["state"] == "failed" and s["id"] not in seen]
                seen.update(s["id"] for s in failed)
                self.assertEqual(len(failed), 1, failed)
                self.assertFalse(os.path.exists(os.path.join(failed[0]["path"], "config.json")))


class TestStoreUnavailable(Failures):
    """Item 2: a removal runs to its end on the file system when the store
    is held busy or is full; the record catches up later."""

    def hold_store(self, seconds):
        """Another process takes the store's write lock for a while."""
        ready = threading.Event()

        def holder():
            con = sqlite3.connect(self.db, timeout=30, isolation_level=None)
            con.execute("BEGIN IMMEDIATE")
            ready.set()
            time.sleep(seconds)
            con.execute("ROLLBACK")
            con.close()

        t = threading.Thread(target=holder)
        t.start()
        ready.wait()
        return t

    def test_release_with_busy_store(self):
        stage_id, path = self.stage("--env", "TOKEN=" + CANARY)
        t = self.hold_store(14)
        p = self.sl("release", stage_id, code=None, timeout=60)
        t.join()
        self.assertIn(p.returncode, (75, 0), p.stderr)
        self.assertFalse(os.path.exists(path), "the stage is still on disk")
        self.assertNotIn(CANARY, p.stderr)
        # The next process that can brings the record up to date.
        self.sl("recover")
        self.assertIn(self.state_of(stage_id), ("released", "recovered"))
        self.assertEqual(self.slj("list"), [])

    def test_stage_with_busy_store_mid_copy(self):
        # The store turns busy while thousands of logged paths are being
        # created: the stage cannot be marked ready, and its removal must
        # not stop after the first page of entries it cannot mark.
        bundle = big_bundle(os.path.join(self.tmp, "big"), files=4000)
        proc = subprocess.Popen([STAGELOG, "--db", self.db, "stage", "--root", self.root, "--bundle", bundle,
                                 "--env", "TOKEN=" + CANARY],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            tops = self.root_entries()
            if tops and os.path.isdir(os.path.join(self.root, tops[0], "rootfs")):
                break
            time.sleep(0.001)
        # Busy until stagelog has exited.
        con = sqlite3.connect(self.db, timeout=30, isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        out, err = proc.communicate(timeout=120)
        con.execute("ROLLBACK")
        con.close()
        self.assertIn(proc.returncode, (75, 0), err)
        if proc.returncode == 0:
            self.skipTest("the copy finished before the store turned busy")
        self.assertNotIn(CANARY.encode(), err)
        self.assert_root_empty()
        self.sl("recover")
        self.assertEqual(self.slj("list"), [])

    def test_run_with_busy_store_at_exit(self):
        # The runtime leaves a process behind that holds the store's write
        # lock while stagelog releases the stage.
        holder = os.path.join(self.tmp, "hold.py")
        with open(holder, "w") as f:
            f.write("import sqlite3, sys, time\n"
                    "c = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)\n"
                    "c.execute('BEGIN IMMEDIATE')\n"
                    "open(sys.argv[2], 'w').close()\n"
                    "time.sleep(12)\n")
        flag = os.path.join(self.tmp, "held")
        script = os.path.join(self.tmp, "rt.sh")
        with open(script, "w") as f:
            f.write("#!/bin/sh\n%s %s %s %s </dev/null >/dev/null 2>&1 &\n"
                    "while [ ! -e %s ]; do sleep 0.05; done\n"
                    "cp \"$1/config.json\" /dev/null\n" % (sys.executable, holder, self.db, flag, flag))
        os.chmod(script, 0o755)
        p = self.sl("run", "--root", self.root, "--bundle", self.bundle, "--env", "TOKEN=" + CANARY,
                    "--pass-env", "PATH", "--", script, "{bundle}", code=None, timeout=60)
        self.assertNotEqual(p.returncode, 0)
        self.assert_root_empty()
        self.assertNotIn(CANARY, p.stderr + p.stdout)
        time.sleep(0.2)
        for _ in range(100):
            if subprocess.run(["fuser", self.db], capture_output=True).returncode != 0:
                break
            time.sleep(0.2)
        self.sl("recover")
        self.assertEqual(self.slj("list"), [])

    def fill(self, folder, leave=0):
        """Fills folder's file system, then frees `leave` bytes of it."""
        filler = os.path.join(folder, "filler")
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b"\0" * 4096) > 0:
                pass
        except OSError:
            pass
        os.close(fd)
        if leave:
            os.truncate(filler, max(0, os.path.getsize(filler) - leave))
        return filler

    @unittest.skipUnless(IS_ROOT, "a small file system for the store needs a mount")
    def test_stage_with_full_store(self):
        small = os.path.join(self.tmp, "small")
        os.makedirs(small)
        self.mount_tmpfs(small)
        self.db = os.path.join(small, "stagelog.db")
        self.sl("gc")  # creates the store
        bundle = big_bundle(os.path.join(self.tmp, "big"), files=6000)
        # Room for the stage's record, not for its 6,000 entries.
        filler = self.fill(small, leave=96 * 1024)
        p = self.sl("stage", "--root", self.root, "--bundle", bundle, "--env", "TOKEN=" + CANARY,
                    code=74, timeout=120)
        self.assertNotIn(CANARY, p.stderr)
        self.assert_root_empty()
        os.unlink(filler)
        self.sl("recover")
        self.assertEqual(self.slj("list"), [])

    @unittest.skipUnless(IS_ROOT, "a small file system for the store needs a mount")
    def test_release_with_full_store(self):
        small = os.path.join(self.tmp, "small")
        os.makedirs(small)
        self.mount_tmpfs(small)
        self.db = os.path.join(small, "stagelog.db")
        stage_id, path = self.stage("--env", "TOKEN=" + CANARY)
        filler = self.fill(small)
        p = self.sl("release", stage_id, code=None)
        self.assertIn(p.returncode, (0, 74), p.stderr)
        self.assertFalse(os.path.exists(path), "the secrets stayed on disk")
        os.unlink(filler)
        self.sl("recover")
        self.assertEqual(self.slj("list"), [])


class TestSignals(Failures):
    """Item 3: SIGINT, SIGTERM, SIGHUP or SIGQUIT to `stage` mid-copy, or to
    `run` before its runtime starts, abort the stage and exit 128+N."""

    def interrupt_stage(self, sig, argv):
        proc = subprocess.Popen([STAGELOG, "--db", self.db] + argv, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=self.env)
        # Wait for the top directory to appear, then for the copy to start.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            tops = self.root_entries()
            if tops and os.path.isdir(os.path.join(self.root, tops[0], "rootfs")):
                break
            time.sleep(0.002)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        return proc.returncode, out.decode(), err.decode()

    def test_stage_interrupted_mid_copy(self):
        bundle = big_bundle(os.path.join(self.tmp, "big"))
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            with self.subTest(sig=sig.name):
                rc, out, err = self.interrupt_stage(
                    sig, ["stage", "--root", self.root, "--bundle", bundle, "--env", "TOKEN=" + CANARY])
                self.assertEqual(rc, 128 + sig, err)
                self.assertEqual(out, "")
                self.assertNotIn(CANARY, err)
                self.assert_root_empty()
                states = [s["state"] for s in self.slj("list", "--all")]
                self.assertTrue(states and all(s == "aborted" for s in states), states)

    def test_run_interrupted_before_the_runtime(self):
        bundle = big_bundle(os.path.join(self.tmp, "big"))
        marker = os.path.join(self.tmp, "ran")
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
            with self.subTest(sig=sig.name):
                rc, out, err = self.interrupt_stage(
                    sig, ["run", "--root", self.root, "--bundle", bundle, "--env", "TOKEN=" + CANARY,
                          "--", "/bin/touch", marker])
                self.assertEqual(rc, 128 + sig, err)
                self.assertFalse(os.path.exists(marker), "the runtime was started")
                self.assertNotIn(CANARY, err)
                self.assert_root_empty()
                states = [s["state"] for s in self.slj("list", "--all")]
                self.assertTrue(states and all(s == "aborted" for s in states), states)

    def test_release_finishes_its_step(self):
        # release, interrupted, finishes the removal it is in and then
        # exits 128+N; it never stops half-way.
        bundle = big_bundle(os.path.join(self.tmp, "big"))
        stage_id, path = self.stage("--env", "TOKEN=" + CANARY, bundle=bundle)
        proc = subprocess.Popen([STAGELOG, "--db", self.db, "release", stage_id], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=self.env)
        time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        if proc.returncode == -signal.SIGTERM:
            # Killed before its handlers were in place: it had not begun.
            self.assertEqual(self.state_of(stage_id), "ready")
            self.assertTrue(os.path.isfile(os.path.join(path, "config.json")))
            return
        self.assertIn(proc.returncode, (0, 128 + signal.SIGTERM))
        self.assertFalse(os.path.exists(path))
        self.assertEqual(self.state_of(stage_id), "released")

    def test_signal_while_reading_an_env_file(self):
        # A FIFO whose writer never comes: a signal must end the wait, and
        # nothing exists yet.
        fifo = os.path.join(self.tmp, "tokens.env")
        os.mkfifo(fifo)
        for argv in (["stage"], ["run"]):
            with self.subTest(cmd=argv[0]):
                extra = ["--", "/bin/true"] if argv[0] == "run" else []
                proc = subprocess.Popen([STAGELOG, "--db", self.db] + argv +
                                        ["--root", self.root, "--bundle", self.bundle, "--env-file", fifo] + extra,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env)
                time.sleep(0.3)
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=10)
                self.assertIn(proc.returncode, (-signal.SIGTERM, 128 + signal.SIGTERM))
                self.assert_root_empty()

    def test_sigpipe_never_kills(self):
        # `list` into a pipe whose reader is gone fails with 74, not 141.
        self.stage()
        r, w = os.pipe()
        os.close(r)
        p = subprocess.run([STAGELOG, "--db", self.db, "list"], stdout=w, stderr=subprocess.PIPE,
                           env=self.env, timeout=30)
        os.close(w)
        self.assertEqual(p.returncode, 74, p.stderr)


class TestLostOutput(Failures):
    """Item 4: an id that could not be delivered is aborted, exit 74."""

    def stage_into(self, stdout, json_out=False):
        argv = [STAGELOG, "--db", self.db] + (["--json"] if json_out else []) + [
            "stage", "--root", self.root, "--bundle", self.bundle, "--env", "TOKEN=" + CANARY]
        return subprocess.run(argv, stdout=stdout, stderr=subprocess.PIPE, env=self.env, timeout=60)

    def check_aborted(self, p):
        self.assertEqual(p.returncode, 74, p.stderr)
        self.assertNotIn(CANARY.encode(), p.stderr)
        self.assert_root_empty()
        states = [s["state"] for s in self.slj("list", "--all")]
        self.assertEqual(states, ["aborted"])

    def test_dev_full(self):
        for json_out in (False, True):
            with self.subTest(json=json_out):
                with open("/dev/full", "w") as full:
                    p = self.stage_into(full, json_out)
                self.check_aborted(p)
                self.sl("gc", "--older-than", "0s")

    def test_closed_stdout(self):
        argv = [STAGELOG, "--db", self.db, "stage", "--root", self.root, "--bundle", self.bundle]
        p = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh"] + argv, stderr=subprocess.PIPE,
                           env=self.env, timeout=60)
        self.check_aborted(p)

    def test_pipe_without_reader(self):
        r, w = os.pipe()
        os.close(r)
        p = self.stage_into(w)
        os.close(w)
        self.check_aborted(p)


class TestPublish(Failures):
    """Items 7 and 8: a refused destination leaves the stage ready; a
    published tree is never removed, check --remove-orphans included."""

    def test_refused_destinations_leave_the_stage_ready(self):
        stage_id, path = self.stage()
        os.makedirs(os.path.join(self.tmp, "x"))
        os.makedirs(os.path.join(self.tmp, "taken"))
        cases = [
            (os.path.join(self.tmp, "x", ".."), 64),
            (os.path.join(self.tmp, "taken"), 73),
            (os.path.join(self.tmp, "no", "such", "parent"), 73),
            ("/", 64),
        ]
        if os.stat(self.tmp).st_dev != os.stat(self.shm).st_dev:
            cases.append((os.path.join(self.tmp, "elsewhere"), 73))
        for dest, want in cases:
            with self.subTest(dest=dest):
                p = self.sl("publish", stage_id, dest, code=want)
                self.one_line_error(p)
                self.assertEqual(self.state_of(stage_id), "ready")
                self.assertTrue(os.path.isfile(os.path.join(path, "config.json")))
        p = self.sl("publish", stage_id, os.path.join(self.tmp, "elsewhere"), code=None)
        if p.returncode == 73:
            self.assertIn("same filesystem", p.stderr)
        # A good destination still works afterwards.
        dest = os.path.join(self.shm, "app")
        self.sl("publish", stage_id, dest)
        self.assertEqual(self.state_of(stage_id), "published")
        self.assertTrue(os.path.isfile(os.path.join(dest, "config.json")))

    def test_published_tree_is_no_orphan(self):
        stage_id, _ = self.stage()
        dest = os.path.join(self.root, "app-" + "ab" * 16)
        self.sl("publish", stage_id, dest)
        out = self.slj("check", "--root", self.root, "--remove-orphans")
        self.assertEqual(out["orphans"], [])
        self.assertTrue(os.path.isdir(dest))
        # gc keeps the record that says so.
        self.sl("gc", "--older-than", "0s")
        out = self.slj("check", "--root", self.root, "--remove-orphans")
        self.assertEqual(out["removed"], [])
        self.assertTrue(os.path.isfile(os.path.join(dest, "config.json")))


class TestNoInternalErrors(Failures):
    """Item 9: conditions a user or the file system causes map to the
    contract's codes; 70 is for bugs (Base.sl asserts it on every call)."""

    def test_deep_rootfs(self):
        bundle = make_bundle(os.path.join(self.tmp, "deep"))
        d = os.path.join(bundle, "rootfs")
        fd = os.open(d, os.O_RDONLY)
        for _ in range(300):
            os.mkdir("d", dir_fd=fd)
            nfd = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        os.close(fd)
        p = self.sl("stage", "--root", self.root, "--bundle", bundle, code=65)
        self.one_line_error(p)
        self.assert_root_empty()

    def test_path_longer_than_path_max(self):
        bundle = make_bundle(os.path.join(self.tmp, "long"))
        fd = os.open(os.path.join(bundle, "rootfs"), os.O_RDONLY)
        for _ in range(20):
            name = "n" * 250
            os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        os.close(fd)
        p = self.sl("stage", "--root", self.root, "--bundle", bundle, code=65)
        self.one_line_error(p)
        self.assert_root_empty()

    def test_release_after_root_replaced(self):
        for replacement in ("symlink", "file", "directory"):
            with self.subTest(replacement=replacement):
                stage_id, path = self.stage("--env", "TOKEN=" + CANARY)
                moved = self.root + ".old"
                os.rename(self.root, moved)
                if replacement == "symlink":
                    os.symlink(self.tmp, self.root)
                elif replacement == "file":
                    open(self.root, "w").close()
                else:
                    os.mkdir(self.root, 0o700)
                # check names it before anything else touched it.
                out = self.slj("check", code=1)
                self.assertEqual([m["id"] for m in out["root_moved"]], [stage_id])
                p = self.sl("release", stage_id, code=1)
                self.one_line_error(p)
                self.assertNotIn(CANARY, p.stderr)
                rec = self.assert_failed_with_reason(stage_id)
                self.assertIn("staging root", rec["reason"])
                # The stage's files were not forgotten: they are where they
                # were, and the record says so.
                self.assertTrue(os.path.isfile(os.path.join(moved, os.path.basename(path), "config.json")))
                out = self.slj("check", code=1)
                self.assertIn(stage_id, [f["id"] for f in out["failed"]])
                # Put the root back: the next release finishes it.
                if os.path.isdir(self.root) and not os.path.islink(self.root):
                    os.rmdir(self.root)
                else:
                    os.unlink(self.root)
                os.rename(moved, self.root)
                self.sl("release", stage_id)
                self.assert_root_empty()

    def test_check_root_not_a_directory(self):
        f = os.path.join(self.tmp, "file")
        open(f, "w").close()
        link = os.path.join(self.tmp, "link")
        os.symlink(self.shm, link)
        for root in (f, link):
            with self.subTest(root=root):
                p = self.sl("check", "--root", root, code=None)
                self.assertIn(p.returncode, (64, 66), p.stderr)
                self.one_line_error(p)


if __name__ == "__main__":
    unittest.main(verbosity=2)
