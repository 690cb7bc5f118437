#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Issue 16, points 4 to 6 (contract v3): root inspects another user's store
read-only and defensively; a failed stage is an error on stderr, with
sd-daemon(3) priorities when stderr is the journal; a read-only command
whose stdout reader went away exits 74 without a message. The program is
found in $STAGELOG."""

import fcntl
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_cli import STAGELOG, Base  # noqa: E402

NOBODY = 65534


def snapshot(*dirs):
    """Every name under dirs with its type, mode, owner, size, mtime and,
    for a file, its content's hash: what a command that only reads must
    leave exactly as it was."""
    snap = {}
    for top in dirs:
        for d, subdirs, files in os.walk(top):
            for name in subdirs + files:
                p = os.path.join(d, name)
                st = os.lstat(p)
                h = None
                if os.path.isfile(p) and not os.path.islink(p):
                    with open(p, "rb") as f:
                        h = hashlib.sha256(f.read()).hexdigest()
                snap[p] = (st.st_mode, st.st_uid, st.st_size, st.st_mtime_ns, h)
    return snap


def chown_tree(path, uid):
    os.chown(path, uid, uid)
    for d, subdirs, files in os.walk(path):
        for name in subdirs + files:
            os.chown(os.path.join(d, name), uid, uid, follow_symlinks=False)


READ_ONLY = [["list"], ["--json", "list"], ["list", "--all"], ["check"], ["--json", "check"],
             ["recover", "--dry-run"], ["--json", "recover", "--dry-run"], ["metrics"]]


@unittest.skipUnless(os.geteuid() == 0, "needs root (to chown a store to another user and inspect it)")
class TestRootInspects(Base):
    """Point 4: root reads another user's store through a connection that
    cannot write, and refuses to write it, naming the owner."""

    def setUp(self):
        super().setUp()
        self.id, self.path = self.stage(label="gw")
        self.dir = os.path.dirname(self.db)
        # Outside the store: what a crafted store might try to write.
        self.outside = tempfile.mkdtemp(prefix="stagelog-outside-", dir="/tmp")
        self.addCleanup(shutil.rmtree, self.outside, ignore_errors=True)

    def give_away(self):
        chown_tree(self.dir, NOBODY)

    def assert_read_only_commands_work(self):
        before = snapshot(self.dir, self.root, self.outside)
        for c in READ_ONLY + [["show", self.id], ["--json", "show", self.id[:8]]]:
            p = self.sl(*c)
            self.assertEqual(p.stderr, "", c)
            if c[-1] in ("list", "show") or c[0] == "show" or "show" in c:
                self.assertIn(self.id[:12], p.stdout, c)
        self.assertEqual(snapshot(self.dir, self.root, self.outside), before)
        self.assertEqual(sorted(os.listdir(self.dir)), sorted(n for n in before_names(before, self.dir)))

    def test_read_only_commands_read_and_write_nothing(self):
        self.assertTrue(os.path.exists(self.db + "-wal"))
        self.assertTrue(os.path.exists(self.db + "-shm"))
        self.give_away()
        self.assert_read_only_commands_work()
        doc = self.slj("show", self.id)
        self.assertEqual(doc["id"], self.id)
        self.assertGreaterEqual(len(doc["entries"]), 6)
        self.assertEqual(self.slj("recover", "--dry-run")["live"], [self.id])
        self.assertTrue(os.path.isdir(self.path))

    def test_no_wal_no_shm_created(self):
        # Checkpointed and closed by its last connection: the database
        # file holds everything, and no -wal or -shm is beside it.
        db = sqlite3.connect(self.db)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        for suffix in ("-wal", "-shm"):
            if os.path.exists(self.db + suffix):
                os.unlink(self.db + suffix)
        self.give_away()
        self.assert_read_only_commands_work()
        self.assertEqual(sorted(os.listdir(self.dir)), ["stagelog.db"])

    def test_wal_without_shm_is_refused_untouched(self):
        os.unlink(self.db + "-shm")
        self.give_away()
        before = snapshot(self.dir)
        p = self.sl("list", code=77)
        self.one_line_error(p)
        self.assertIn("-shm", p.stderr)
        self.assertIn("another user's", p.stderr)
        self.assertEqual(snapshot(self.dir), before)

    def test_writing_commands_refused_naming_the_owner(self):
        self.give_away()
        before = snapshot(self.dir, self.root)
        for c in (["gc"], ["recover"], ["release", self.id], ["forget", self.id],
                  ["check", "--remove-orphans"], ["publish", self.id, os.path.join(self.tmp, "dest")],
                  ["stage", "--root", self.root, "--bundle", self.bundle]):
            p = self.sl(*c, code=77)
            self.one_line_error(p)
            self.assertIn("owned by another user, nobody (uid 65534", p.stderr, c)
            self.assertIn("runuser -u nobody -- stagelog", p.stderr, c)
        self.assertEqual(snapshot(self.dir, self.root), before)

    def test_older_schema_is_refused_untouched(self):
        db = sqlite3.connect(self.db)
        db.execute("PRAGMA user_version = 2")
        db.commit()
        db.close()
        self.give_away()
        before = snapshot(self.dir)
        for c in (["list"], ["check"], ["metrics"]):
            p = self.sl(*c, code=77)
            self.one_line_error(p)
            self.assertIn("schema version 2 is older", p.stderr)
        self.assertEqual(snapshot(self.dir), before)

    def test_crafted_schema_cannot_write(self):
        """Triggers and views planted in the store, that would write inside
        it and out of it (writefile() where a program defines it), never
        run: root's connection is read-only, triggers and views are off, and
        the authorizer admits reads only."""
        out = os.path.join(self.outside, "pwned")
        db = sqlite3.connect(self.db)
        db.executescript(
            "CREATE TABLE log (x);"
            "CREATE TRIGGER t_upd AFTER UPDATE ON stages BEGIN INSERT INTO log VALUES ('upd');"
            "  SELECT writefile('%s', 'x'); END;"
            "CREATE TRIGGER t_ins AFTER INSERT ON entries BEGIN INSERT INTO log VALUES ('ins'); END;"
            "CREATE TRIGGER t_del BEFORE DELETE ON stages BEGIN INSERT INTO log VALUES ('del'); END;"
            "CREATE VIEW v AS SELECT writefile('%s', 'x') FROM stages;" % (out, out))
        db.commit()
        db.close()
        self.give_away()
        before = snapshot(self.dir, self.root, self.outside)
        for c in READ_ONLY + [["show", self.id]]:
            self.sl(*c)
        self.assertFalse(os.path.exists(out))
        self.assertEqual(snapshot(self.dir, self.root, self.outside), before)
        db = sqlite3.connect("file:%s?mode=ro" % self.db, uri=True)
        self.assertEqual(db.execute("SELECT count(*) FROM log").fetchone()[0], 0)
        db.close()

    def test_symlinked_companion_still_refused(self):
        victim = os.path.join(self.outside, "victim")
        with open(victim, "w") as f:
            f.write("keep\n")
        os.unlink(self.db + "-shm")
        os.symlink(victim, self.db + "-shm")
        self.give_away()
        p = self.sl("list", code=77)
        self.assertIn("is a symlink", p.stderr)
        with open(victim) as f:
            self.assertEqual(f.read(), "keep\n")


def before_names(snap, d):
    return [os.path.basename(p) for p in snap if os.path.dirname(p) == d]


class TestFailedOnStderr(Base):
    """Point 5: failed-stage lines are errors: on stderr, with <3> when
    stderr is the journal; --json is unchanged."""

    def make_failed(self):
        stage_id, path = self.stage(label="gw")
        db = sqlite3.connect(self.db)
        db.execute("UPDATE stages SET state = 7, reason = 'cannot remove: rootfs: mount in the way' "
                   "WHERE id = ?", (stage_id,))
        db.commit()
        db.close()
        # Its lock held, as by a runtime still using it: no pass may touch
        # it, so it stays failed.
        self.lock = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        self.addCleanup(os.close, self.lock)
        return stage_id, path

    def line(self, stage_id, path):
        return "failed %s gw %s: cannot remove: rootfs: mount in the way" % (stage_id, path)

    def test_failed_lines_on_stderr(self):
        stage_id, path = self.make_failed()
        for c in (["recover"], ["recover", "--dry-run"], ["check"]):
            p = self.sl(*c, code=1)
            self.assertNotIn("failed " + stage_id, p.stdout, c)
            self.assertIn("stagelog: " + self.line(stage_id, path) + "\n", p.stderr, c)
        doc = self.slj("check", code=1)
        self.assertEqual(doc["failed"][0]["id"], stage_id)
        p = self.sl("--json", "recover", "--dry-run", code=1)
        self.assertIn(stage_id, p.stdout)
        self.assertEqual(p.stderr, "")

    def run_to_file(self, args, journal):
        """Runs stagelog with stderr in a file; journal: True to name that
        file's device and inode in $JOURNAL_STREAM, False to name another
        file's. Returns (exit code, stdout, stderr)."""
        with tempfile.TemporaryFile(dir=self.tmp) as err, tempfile.TemporaryFile(dir=self.tmp) as other:
            st = os.fstat(err.fileno() if journal else other.fileno())
            env = dict(self.env, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
            p = subprocess.run([STAGELOG, "--db", self.db] + args, stdout=subprocess.PIPE, stderr=err,
                               env=env, text=True)
            err.seek(0)
            return p.returncode, p.stdout, err.read().decode()

    def test_journal_priorities(self):
        stage_id, path = self.make_failed()
        code, out, err = self.run_to_file(["recover", "--dry-run"], True)
        self.assertEqual(code, 1)
        self.assertIn("<3>stagelog: " + self.line(stage_id, path) + "\n", err)
        code, out, err = self.run_to_file(["check"], True)
        self.assertEqual(code, 1)
        self.assertIn("<3>stagelog: " + self.line(stage_id, path) + "\n", err)
        # An error: <3>.
        code, out, err = self.run_to_file(["show", "ffffffff"], True)
        self.assertEqual(code, 64)
        self.assertTrue(err.startswith("<3>stagelog: "), err)
        # A warning: <4> (the outcome file cannot replace a directory).
        os.mkdir(self.db + ".last-recover")
        code, out, err = self.run_to_file(["recover"], True)
        self.assertEqual(code, 1)
        self.assertIn("<4>stagelog: cannot record the outcome of recovery: ", err)
        # Information: <6> (no store, nothing in flight).
        os.rename(self.db, self.db + ".away")
        code, out, err = self.run_to_file(["list"], True)
        self.assertEqual(code, 0)
        self.assertTrue(err.startswith("<6>stagelog: no store at "), err)
        os.rename(self.db + ".away", self.db)
        # Every line carries its priority.
        code, out, err = self.run_to_file(["recover"], True)
        for line in err.splitlines():
            self.assertRegex(line, r"^<[346]>stagelog: ")
        # The usage of a bare `stagelog`, a usage error: <3> on each line.
        with tempfile.TemporaryFile(dir=self.tmp) as f:
            st = os.fstat(f.fileno())
            p = subprocess.run([STAGELOG], stderr=f, env=dict(self.env, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino)))
            f.seek(0)
            lines = f.read().decode().splitlines()
        self.assertEqual(p.returncode, 64)
        self.assertTrue(lines[0].startswith("<3>usage: stagelog "), lines)
        for line in lines:
            self.assertTrue(line.startswith("<3>"), lines)

    def test_no_prefix_unless_stderr_is_the_journal(self):
        stage_id, path = self.make_failed()
        for journal_env in ("other", "junk", None):
            with tempfile.TemporaryFile(dir=self.tmp) as err:
                env = dict(self.env)
                if journal_env == "other":
                    code, out, text = self.run_to_file(["check"], False)
                else:
                    if journal_env:
                        env["JOURNAL_STREAM"] = journal_env
                    p = subprocess.run([STAGELOG, "--db", self.db, "check"], stdout=subprocess.PIPE,
                                       stderr=err, env=env)
                    err.seek(0)
                    text = err.read().decode()
                self.assertIn("\nstagelog: " + self.line(stage_id, path), "\n" + text)
                self.assertNotIn("<3>", text)


class TestLostReader(Base):
    """Point 6: a read-only command whose stdout reader went away exits 74
    and says nothing; stage still says it."""

    def add_stages(self, n):
        stage_id, _ = self.stage(label="a-rather-long-label-for-wide")
        db = sqlite3.connect(self.db)
        cur = db.execute("SELECT * FROM stages WHERE id = ?", (stage_id,))
        cols = [d[0] for d in cur.description]
        row = dict(zip(cols, cur.fetchone()))
        with db:
            for i in range(n - 1):
                r = dict(row)
                r.pop("rowid", None)
                r["id"] = "%032x" % (i + 1)
                r["topdir"] = "%s-%s" % (r["label"], r["id"])
                db.execute("INSERT INTO stages (%s) VALUES (%s)" % (", ".join(r), ", ".join("?" * len(r))),
                           list(r.values()))
        db.close()

    def closed_pipe(self, args):
        """Runs stagelog with stdout a pipe that has no reader left."""
        r, w = os.pipe()
        os.close(r)
        try:
            p = subprocess.run([STAGELOG, "--db", self.db] + args, stdout=w, stderr=subprocess.PIPE,
                               env=self.env, text=True, timeout=60)
        finally:
            os.close(w)
        return p

    def test_list_head(self):
        self.add_stages(600)
        self.assertEqual(len(self.slj("list")), 600)
        env = dict(self.env, SL=STAGELOG, DB=self.db)
        for pipeline, first in (('"$SL" --db "$DB" list 2>"$ERR" | head -1', "ID "),
                                ('"$SL" --db "$DB" --json list 2>"$ERR" | head -c 100', "[")):
            errfile = os.path.join(self.tmp, "err")
            env["ERR"] = errfile
            p = subprocess.run(["bash", "-c", pipeline + '; exit "${PIPESTATUS[0]}"'], capture_output=True,
                               text=True, env=env, timeout=60)
            self.assertEqual(p.returncode, 74, pipeline)
            self.assertTrue(p.stdout.startswith(first), p.stdout)
            with open(errfile) as f:
                self.assertEqual(f.read(), "", pipeline)

    def test_read_only_commands_silent(self):
        stage_id, _ = self.stage()
        for c in (["list"], ["--json", "list"], ["show", stage_id], ["check"], ["metrics"],
                  ["recover", "--dry-run"], ["--help"], ["--version"], ["help"], ["list", "--help"],
                  ["help", "stage"]):
            p = self.closed_pipe(c)
            self.assertEqual((p.returncode, p.stderr), (74, ""), c)

    def test_stage_still_says_it(self):
        p = self.closed_pipe(["stage", "--root", self.root, "--bundle", self.bundle])
        self.assertEqual(p.returncode, 74)
        self.assertIn("stagelog: ", p.stderr)
        self.assert_root_empty()


if __name__ == "__main__":
    unittest.main(verbosity=2)
