#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Which directory is stagelog's: the identity rules of docs/design.md
("Identity"), driven through the command line. A new boot that recreated a
memory-backed root is no attack; a root that is missing, moved or reachable
by another user proves nothing; an orphan is only what carries this store's
marker; and any spelling of a root is that root."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_cli import CANARY, Base  # noqa: E402

OTHER_BOOT = "00000000-0000-4000-8000-000000000000"


class Identity(Base):
    def dead_owner_stage(self, root=None, db=None):
        """A ready stage whose owner is gone and whose lock is free."""
        owner = subprocess.Popen(["sleep", "60"])
        try:
            args = ["stage", "--root", root or self.root, "--bundle", self.bundle,
                    "--owner", str(owner.pid), "--env", "API_TOKEN"]
            env = dict(self.env, API_TOKEN=CANARY)
            argv = (["--db", db] if db else []) + args
            p = self.sl(*argv, db=db is None, env=env)
        finally:
            owner.kill()
            owner.wait()
        stage_id, path = p.stdout.rstrip("\n").split("\t")
        return stage_id, path

    def set_record(self, stage_id, **cols):
        con = sqlite3.connect(self.db)
        with con:
            for k, v in cols.items():
                con.execute("UPDATE stages SET %s = ? WHERE id = ?" % k, (v, stage_id))
        con.close()

    def record(self, stage_id, col):
        con = sqlite3.connect(self.db)
        try:
            return con.execute("SELECT %s FROM stages WHERE id = ?" % col, (stage_id,)).fetchone()[0]
        finally:
            con.close()

    def reboot(self, stage_id, root, recreate=True):
        """What a reboot does to a stage: its boot is not this one, and a
        memory-backed root is emptied (tmpfiles.d or RuntimeDirectory=
        then makes it anew)."""
        self.set_record(stage_id, owner_boot=OTHER_BOOT)
        shutil.rmtree(root)
        if recreate:
            os.mkdir(root, 0o700)

    def canary_on_disk(self, *dirs):
        for d in dirs:
            for base, _, files in os.walk(d):
                for f in files:
                    try:
                        with open(os.path.join(base, f), "rb") as fh:
                            if CANARY.encode() in fh.read():
                                return os.path.join(base, f)
                    except OSError:
                        pass
        return None


class TestNewBoot(Identity):
    def test_recreated_memory_root_is_no_attack(self):
        """After a crash and a reboot, a stage of the old boot on a tmpfs
        root (recreated, or not) is recovered and nothing fails."""
        for recreate in (True, False):
            with self.subTest(recreate=recreate):
                stage_id, _ = self.dead_owner_stage()
                self.assertEqual(self.record(stage_id, "root_volatile"), 1)
                self.reboot(stage_id, self.root, recreate)
                rep = self.slj("recover")
                self.assertEqual(rep["recovered"], [stage_id], rep)
                self.assertEqual(rep["failed"], [])
                self.assertEqual(self.state_of(stage_id), "recovered")
                self.assertEqual(self.slj("check", "--root", self.shm, code=0)["failed"], [])
                if not recreate:
                    os.mkdir(self.root, 0o700)

    def test_check_before_recover_after_reboot(self):
        """check, run before recover on the new boot, sees no moved root."""
        stage_id, _ = self.dead_owner_stage()
        self.reboot(stage_id, self.root)
        rep = self.slj("check", code=0)
        self.assertEqual(rep.get("root_moved", []), [])

    def test_boot_rule_needs_a_memory_root(self):
        """A disk root that leads elsewhere after a reboot may still hold
        the stage (another mount over it): failed, and loud."""
        disk = tempfile.mkdtemp(prefix="stagelog-disk-", dir="/var/tmp")
        self.addCleanup(shutil.rmtree, disk, True)
        root = os.path.join(disk, "root")
        stage_id, path = self.dead_owner_stage(root=root)
        self.assertEqual(self.record(stage_id, "root_volatile"), 0)
        self.set_record(stage_id, owner_boot=OTHER_BOOT)
        os.rename(root, root + ".old")
        os.mkdir(root, 0o700)
        rep = self.slj("recover", code=1)
        self.assertEqual([f["id"] for f in rep["failed"]], [stage_id])
        self.assertIn("another directory", rep["failed"][0]["reason"])
        self.assertTrue(os.path.exists(os.path.join(root + ".old", os.path.basename(path))))

    def test_recreated_root_with_the_name_taken(self):
        """A directory with the stage's name in the recreated root is not
        the stage's (that one went with the boot): left alone, failed."""
        stage_id, path = self.dead_owner_stage()
        self.reboot(stage_id, self.root)
        os.mkdir(path, 0o700)
        rep = self.slj("recover", code=1)
        self.assertEqual([f["id"] for f in rep["failed"]], [stage_id])
        self.assertTrue(os.path.isdir(path))


class TestAbsenceIsProven(Identity):
    def test_root_renamed_away_within_the_boot(self):
        """Someone renames the root away: release does not say released,
        recover and check exit 1, metrics count a failed stage, and the
        secret's location is not forgotten."""
        p = self.sl("stage", "--root", self.root, "--bundle", self.bundle, "--env", "API_TOKEN",
                    env=dict(self.env, API_TOKEN=CANARY))
        stage_id, path = p.stdout.rstrip("\n").split("\t")
        os.rename(self.root, self.root + ".away")
        p = self.sl("release", stage_id, code=1)
        self.assertIn("missing", p.stderr)
        self.assertEqual(self.state_of(stage_id), "failed")
        self.assertEqual(self.sl("recover", code=1).returncode, 1)
        self.sl("check", code=1)
        metrics = self.sl("metrics").stdout
        self.assertIn("stagelog_stages_failed 1", metrics)
        self.assertIsNotNone(self.canary_on_disk(self.root + ".away"))

    def test_root_below_a_directory_others_can_write(self):
        """A root whose parent another user can write is refused, whether
        named by --root, STAGELOG_ROOT or XDG_RUNTIME_DIR; a sticky parent
        (/dev/shm, /tmp) is fine."""
        open_dir = os.path.join(self.shm, "open")
        os.mkdir(open_dir)
        os.chmod(open_dir, 0o777)
        root = os.path.join(open_dir, "root")
        p = self.sl("stage", "--root", root, "--bundle", self.bundle, code=73)
        self.assertIn(open_dir, p.stderr)
        self.assertEqual(os.listdir(open_dir), [] if not os.path.exists(root) else ["root"])
        if os.path.exists(root):
            self.assertEqual(os.listdir(root), [])
        envs = [dict(self.env, STAGELOG_ROOT=root)]
        # XDG_RUNTIME_DIR names the default root of a non-root caller only
        # (tests/rootless runs that case as a real user).
        if os.geteuid() != 0:
            envs.append(dict(self.env, XDG_RUNTIME_DIR=open_dir))
        for env in envs:
            self.sl("stage", "--bundle", self.bundle, env=env, code=73)
        self.assertFalse(self.sl("--json", "list").stdout.strip("[]\n"))
        os.chmod(open_dir, 0o1777)
        self.sl("stage", "--root", root, "--bundle", self.bundle, code=0)

    def test_parent_opened_to_others_after_staging(self):
        """A parent that became writable by others since the stage began:
        nothing is concluded, the stage fails loudly."""
        parent = os.path.join(self.shm, "p")
        os.mkdir(parent, 0o700)
        root = os.path.join(parent, "root")
        stage_id, path = self.stage_in(root)
        os.chmod(parent, 0o777)
        p = self.sl("release", stage_id, code=1)
        self.assertIn("another user", p.stderr)
        self.assertEqual(self.state_of(stage_id), "failed")
        self.assertTrue(os.path.isdir(path))
        os.chmod(parent, 0o700)
        self.sl("recover", code=0)
        self.assertFalse(os.path.exists(path))

    def stage_in(self, root):
        p = self.sl("stage", "--root", root, "--bundle", self.bundle)
        return p.stdout.rstrip("\n").split("\t")


class TestOrphans(Identity):
    def test_other_store_never_removes_a_stage(self):
        """check --remove-orphans with another (or a mistyped) --db leaves
        this store's stages alone, live or stale."""
        live_id, live = self.stage()
        stale_id, stale = self.dead_owner_stage()
        other = os.path.join(self.tmp, "other", "stagelog.db")
        for db in (other, self.db + "x"):
            rep = json.loads(self.sl("--db", db, "--json", "check", "--root", self.root,
                                     "--remove-orphans", db=False, code=0).stdout)
            self.assertEqual(rep["orphans"], [])
            self.assertEqual(rep["removed"], [])
        self.assertTrue(os.path.isdir(live))
        self.assertTrue(os.path.isdir(stale))

    def test_lost_store_orphans_are_found(self):
        """A store lost and made anew at the same path owns what the old
        one left: check finds it and removes it."""
        stage_id, path = self.dead_owner_stage()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.db + suffix):
                os.unlink(self.db + suffix)
        self.sl("gc")  # the new store
        rep = self.slj("check", "--root", self.root, code=1)
        self.assertEqual(rep["orphans"], [path])
        rep = self.slj("check", "--root", self.root, "--remove-orphans", code=0)
        self.assertEqual(rep["removed"], [path])
        self.assert_root_empty()

    def test_directory_without_marker_is_nobodys_orphan(self):
        path = os.path.join(self.root, "stage-" + "ab" * 16)
        os.makedirs(path)
        rep = self.slj("check", "--root", self.root, "--remove-orphans", code=0)
        self.assertEqual(rep["orphans"], [])
        self.assertTrue(os.path.isdir(path))


class TestSpellings(Identity):
    def setUp(self):
        super().setUp()
        rel = os.path.join(self.shm, "rel1")
        os.mkdir(rel, 0o700)
        self.root = os.path.join(rel, "root")
        self.current = os.path.join(self.shm, "current")
        os.symlink("rel1", self.current)

    def test_recover_by_another_spelling(self):
        stage_id, _ = self.dead_owner_stage()
        for spelling in (os.path.join(self.current, "root"), self.root + "/", self.root + "/."):
            rep = self.slj("recover", "--dry-run", "--root", spelling)
            self.assertEqual(rep["examined"], 1, spelling)
            self.assertEqual(rep["recovered"], [stage_id])
        rep = self.slj("recover", "--root", os.path.join(self.current, "root"))
        self.assertEqual(rep["recovered"], [stage_id])
        self.assert_root_empty()

    def test_published_tree_is_no_orphan_under_any_spelling(self):
        stage_id, _ = self.stage()
        dest = os.path.join(self.root, "stage-" + "cd" * 16)
        self.sl("publish", stage_id, dest)
        for spelling in (os.path.join(self.current, "root"), self.root):
            rep = self.slj("check", "--root", spelling, "--remove-orphans", code=0)
            self.assertEqual(rep["orphans"], [])
        self.assertTrue(os.path.isfile(os.path.join(dest, "config.json")))
        self.assertFalse(os.path.exists(os.path.join(dest, ".stagelog")))

    def test_stage_through_a_symlinked_parent_records_the_directory(self):
        stage_id, path = self.stage_in(os.path.join(self.current, "root"))
        self.assertTrue(path.startswith(self.root + "/"), path)
        self.assertEqual(self.slj("show", stage_id)["root"], self.root)

    def stage_in(self, root):
        p = self.sl("stage", "--root", root, "--bundle", self.bundle)
        return p.stdout.rstrip("\n").split("\t")


if __name__ == "__main__":
    unittest.main(verbosity=2)
