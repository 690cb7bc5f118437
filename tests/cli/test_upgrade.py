#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Schema 4 (entries a batch to a row) on a store made by the stagelog of
schema 3: the program of commit V3_COMMIT, built here from this
repository's history. The old program leaves stages in flight (stale, live
and with more entries than a page holds) and finished ones; this program
migrates the store on its first open, lists and shows them as the old one
did, stages next to them, and recovers them all. The old program then
refuses the store as newer than itself.

Needs git and the repository's history (a shallow clone or an export has
none: the suite then reports a skip, 77). The program under test is
$STAGELOG; the old one is built once into $STAGELOG_V3_BUILD."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import unittest

STAGELOG = os.environ.get("STAGELOG", "stagelog")
V3_BUILD = os.environ.get("STAGELOG_V3_BUILD", "")
SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The last commit whose stagelog writes schema 3 (one entry a row).
V3_COMMIT = "f36ae378acec1cf258f6f0eb54cd6c3c4f6dc343"


def have_v3():
    """True when the schema-3 stagelog is built or can be: git and the
    commit are here."""
    if os.access(os.path.join(V3_BUILD, "build", "cli", "stagelog"), os.X_OK):
        return True
    return bool(shutil.which("git")) and subprocess.run(
        ["git", "-C", SRC, "cat-file", "-e", V3_COMMIT + "^{commit}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def build_v3():
    """Builds the schema-3 stagelog (once) and returns its path."""
    exe = os.path.join(V3_BUILD, "build", "cli", "stagelog")
    if os.access(exe, os.X_OK):
        return exe
    src = os.path.join(V3_BUILD, "src")
    shutil.rmtree(V3_BUILD, ignore_errors=True)
    os.makedirs(src)
    archive = subprocess.run(["git", "-C", SRC, "archive", V3_COMMIT], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", src], input=archive, check=True)
    build = os.path.join(V3_BUILD, "build")
    for argv in (["meson", "setup", build, src, "-Dtests=false", "-Dsystemd=false", "-Dfuzz=disabled",
                  "-Dpowerloss=disabled"],
                 ["ninja", "-C", build, "cli/stagelog"]):
        p = subprocess.run(argv, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError("%s failed:\n%s%s" % (" ".join(argv), p.stdout, p.stderr))
    return exe


def make_bundle(path, nfiles):
    os.makedirs(os.path.join(path, "rootfs", "d"))
    for i in range(nfiles):
        with open(os.path.join(path, "rootfs", "d", "f%d" % i), "w") as f:
            f.write("x\n")
    os.symlink("d/f0", os.path.join(path, "rootfs", "link"))
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"ociVersion": "1.0.2", "process": {"args": ["/bin/true"], "env": ["A=1"], "cwd": "/"},
                   "root": {"path": "rootfs"}}, f)
    return path


class TestUpgrade(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.mkdtemp(prefix="stagelog-upgrade-", dir="/tmp")
        shm = tempfile.mkdtemp(prefix="stagelog-upgrade-", dir="/dev/shm")
        for d in (tmp, shm):
            self.addCleanup(shutil.rmtree, d, ignore_errors=True)
        self.root = os.path.join(shm, "root")
        self.db = os.path.join(tmp, "stagelog.db")
        self.small = make_bundle(os.path.join(tmp, "small"), 3)
        self.big = make_bundle(os.path.join(tmp, "big"), 300)
        self.env = {k: v for k, v in os.environ.items() if k != "STAGELOG_DB"}

    def sl(self, exe, *args, code=0):
        p = subprocess.run([exe, "--db", self.db] + list(args), capture_output=True, text=True, env=self.env,
                           timeout=60)
        self.assertEqual(p.returncode, code, "%s %r exited %d\nstdout: %s\nstderr: %s"
                         % (exe, args, p.returncode, p.stdout, p.stderr))
        return p

    def slj(self, exe, *args, code=0):
        return json.loads(self.sl(exe, "--json", *args, code=code).stdout)

    def stage(self, exe, bundle, owner=None):
        """Stages bundle; its owner is owner, or else the stagelog process
        itself, so that the stage is stale once it exits."""
        argv = [exe, "--db", self.db, "stage", "--root", self.root, "--bundle", bundle]
        if owner is None:
            argv = ["sh", "-c", 'exec "$@" --owner $$', "sh"] + argv
        else:
            argv += ["--owner", str(owner)]
        p = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=60)
        self.assertEqual(p.returncode, 0, "%r: %s" % (argv, p.stderr))
        return p.stdout.rstrip("\n").split("\t")

    def user_version(self):
        db = sqlite3.connect(self.db)
        try:
            return db.execute("PRAGMA user_version").fetchone()[0]
        finally:
            db.close()

    def test_schema3_store(self):
        v3 = build_v3()
        live = subprocess.Popen(["sleep", "600"])
        self.addCleanup(live.wait)
        self.addCleanup(live.kill)
        stale_id, stale_path = self.stage(v3, self.small)
        big_id, big_path = self.stage(v3, self.big)
        live_id, live_path = self.stage(v3, self.small, live.pid)
        done_id, _ = self.stage(v3, self.small, os.getpid())
        self.sl(v3, "release", done_id)
        self.assertEqual(self.user_version(), 3)
        old_list = self.slj(v3, "list")
        old_shows = {i: self.slj(v3, "show", i) for i in (stale_id, big_id, live_id, done_id)}
        self.assertGreater(len(old_shows[big_id]["entries"]), 300)

        # The first open migrates; what the old program recorded reads
        # the same.
        self.assertEqual(self.slj(STAGELOG, "list"), old_list)
        self.assertEqual(self.user_version(), 4)
        for i, old in old_shows.items():
            new = self.slj(STAGELOG, "show", i)
            for k in ("age", "live"):
                new.pop(k, None)
                old.pop(k, None)
            self.assertEqual(new, old, i)

        # A stage of this program beside them, in batch rows.
        new_id, new_path = self.stage(STAGELOG, self.big)
        db = sqlite3.connect(self.db)
        batches = db.execute("SELECT count(*) FROM entries e JOIN stages s ON e.stage = s.rowid "
                             "WHERE s.id = ? AND e.kind = 16", (new_id,)).fetchone()[0]
        db.close()
        self.assertGreaterEqual(batches, 3)
        self.assertEqual(len(self.slj(STAGELOG, "show", new_id)["entries"]),
                         len(old_shows[big_id]["entries"]))

        # Recovery: the three stale ones go, the live one stays.
        rep = self.slj(STAGELOG, "recover")
        self.assertEqual(sorted(rep["recovered"]), sorted([stale_id, big_id, new_id]))
        for p in (stale_path, big_path, new_path):
            self.assertFalse(os.path.lexists(p), p)
        self.assertTrue(os.path.isdir(live_path))
        live.kill()
        live.wait()
        rep = self.slj(STAGELOG, "recover")
        self.assertEqual(rep["recovered"], [live_id])
        self.assertEqual(os.listdir(self.root), [])

        # The old program refuses the store as newer than itself (78).
        p = self.sl(v3, "list", code=78)
        self.assertIn("newer", p.stderr)


if __name__ == "__main__":
    if not V3_BUILD:
        sys.exit("test_upgrade.py: STAGELOG_V3_BUILD is not set")
    if not have_v3():
        print("skip: no git, or no commit %s in this tree's history (an export or a shallow clone)" % V3_COMMIT)
        sys.exit(77)
    unittest.main(verbosity=2)
