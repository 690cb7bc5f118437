#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The stagelog command-line suite: drives the program exactly as
INTERFACE.md describes it and checks its output, its exit codes and what it
leaves on disk. Each test has its own staging root under /dev/shm and its own
store under /tmp. The program is found in $STAGELOG."""

import fcntl
import json
import os
import re
import shutil
import signal
import sqlite3
import stat
import struct
import subprocess
import sys
import tempfile
import time
import unittest

STAGELOG = os.environ.get("STAGELOG", "stagelog")
COMMANDS = ["stage", "run", "release", "forget", "publish", "recover",
            "list", "show", "gc", "check", "metrics", "help"]
CANARY = "canary-5ecret-7f3a9c"
ID_RE = re.compile(r"^[0-9a-f]{32}$")
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def make_bundle(path, config=None, rootfs=True):
    """A small packaged OCI bundle: rootfs/ with a dir, a file and a
    symlink, and a config.json with an env and id mappings."""
    os.makedirs(path)
    if rootfs:
        os.makedirs(os.path.join(path, "rootfs", "etc"))
        with open(os.path.join(path, "rootfs", "etc", "hostname"), "w") as f:
            f.write("box\n")
        os.chmod(os.path.join(path, "rootfs", "etc", "hostname"), 0o640)
        os.symlink("etc/hostname", os.path.join(path, "rootfs", "name"))
    if config is None:
        config = {
            "ociVersion": "1.0.2",
            "process": {"args": ["/bin/true"], "env": ["PACKAGED=1"], "cwd": "/"},
            "root": {"path": "rootfs"},
            "linux": {
                "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
                "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
            },
        }
    if isinstance(config, (dict, list)):
        config = json.dumps(config)
    if config is not False:
        with open(os.path.join(path, "config.json"), "w") as f:
            f.write(config)
    return path


class Base(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="stagelog-cli-", dir="/tmp")
        self.shm = tempfile.mkdtemp(prefix="stagelog-cli-", dir="/dev/shm")
        self.root = os.path.join(self.shm, "root")
        self.db = os.path.join(self.tmp, "state", "stagelog.db")
        self.bundle = make_bundle(os.path.join(self.tmp, "pkg"))
        self.env = {k: v for k, v in os.environ.items() if k != "STAGELOG_DB"}
        self.env["XDG_RUNTIME_DIR"] = self.shm
        # Cleanups run last registered first: the trees go after anything
        # a test mounts inside them has been unmounted by its own cleanup.
        for d in (self.tmp, self.shm):
            self.addCleanup(shutil.rmtree, d, ignore_errors=True)

    def sl(self, *args, code=0, env=None, db=True, timeout=60):
        """Runs stagelog with --db and checks the exit code (None: any)."""
        argv = [STAGELOG] + (["--db", self.db] if db else []) + list(args)
        p = subprocess.run(argv, capture_output=True, text=True, env=env or self.env,
                           timeout=timeout, errors="surrogateescape")
        # 70 is for bugs in stagelog: no condition a test sets up may
        # produce it, whatever code the test expects.
        self.assertNotEqual(p.returncode, 70, "%r exited 70 (internal error)\nstderr: %s" % (args, p.stderr))
        if code is not None:
            self.assertEqual(p.returncode, code,
                             "%r exited %d\nstdout: %s\nstderr: %s"
                             % (args, p.returncode, p.stdout, p.stderr))
        return p

    def slj(self, *args, code=0, **kw):
        p = self.sl("--json", *args, code=code, **kw)
        return json.loads(p.stdout)

    def stage(self, *extra, label=None, bundle=None):
        args = ["stage", "--root", self.root, "--bundle", bundle or self.bundle]
        if label:
            args += ["--label", label]
        p = self.sl(*(args + list(extra)))
        stage_id, path = p.stdout.rstrip("\n").split("\t")
        return stage_id, path

    def make_orphan(self):
        """A stage directory whose record is lost (as when a store is
        lost): it carries this store's marker and no record names it."""
        stage_id, path = self.stage()
        self.lose_record(stage_id)
        return path

    def lose_record(self, stage_id):
        """Deletes a stage's record and entries, as a lost store would."""
        db = sqlite3.connect(self.db)
        with db:
            rowid = db.execute("SELECT rowid FROM stages WHERE id = ?", (stage_id,)).fetchone()[0]
            db.execute("DELETE FROM entries WHERE stage = ?", (rowid,))
            db.execute("DELETE FROM stages WHERE rowid = ?", (rowid,))
        db.close()

    def make_failed(self, label="gw", reason="cannot remove: rootfs: mount in the way"):
        """A stage left failed, as a pass that could not remove it leaves it."""
        stage_id, path = self.stage(label=label)
        db = sqlite3.connect(self.db)
        db.execute("UPDATE stages SET state = 7, reason = ? WHERE id = ?", (reason, stage_id))
        db.commit()
        db.close()
        return stage_id, path

    def one_line_error(self, p):
        self.assertEqual(p.stderr.count("\n"), 1, p.stderr)
        self.assertTrue(p.stderr.startswith("stagelog: "), p.stderr)

    def root_entries(self):
        return sorted(os.listdir(self.root)) if os.path.isdir(self.root) else []

    def assert_root_empty(self):
        self.assertEqual(self.root_entries(), [])

    def state_of(self, stage_id):
        return self.slj("show", stage_id)["state"]


class TestUsage(Base):
    def test_help_and_version(self):
        p = self.sl("--help", db=False)
        self.assertIn("usage: stagelog", p.stdout)
        for c in COMMANDS:
            self.assertIn(c, p.stdout)
        self.assertEqual(self.sl("-h", db=False).stdout, p.stdout)

    def test_version(self):
        # The first line is what it always was (scripts read it); the
        # second names the SQLite that was loaded: the system's, which
        # Python's sqlite3 module loads too.
        p = self.sl("--version", db=False)
        self.assertEqual(p.stdout, "stagelog 0.1.0\nsqlite %s\n" % sqlite3.sqlite_version)
        self.assertEqual(p.stderr, "")
        p = self.sl("--json", "--version", db=False)
        self.assertEqual(json.loads(p.stdout), {"version": "0.1.0", "sqlite": sqlite3.sqlite_version})
        self.assertEqual(p.stderr, "")
        self.assertFalse(os.path.exists(os.path.dirname(self.db)))

    def test_command_help(self):
        for c in COMMANDS:
            for flag in ("--help", "-h"):
                p = self.sl(c, flag)
                self.assertTrue(p.stdout.startswith("usage: stagelog " + c), p.stdout)
                self.assertEqual(p.stderr, "")
        # --help never touches the store.
        self.assertFalse(os.path.exists(os.path.dirname(self.db)))

    def test_unknown_command(self):
        p = self.sl("frobnicate", code=64)
        # Named by its position: a token may stand where a command goes.
        self.assertEqual(p.stderr, "stagelog: unknown command (argument #3); try 'stagelog --help'\n")
        self.assertEqual(p.stdout, "")

    def test_typo_suggestions(self):
        # A command or a long option a typo away is suggested by its name
        # in the program's table; what was typed is never repeated, and a
        # word farther than 2 edits gets no suggestion.
        for args, line in (
                (["lsit"], "unknown command (argument #3); did you mean 'list'?; try 'stagelog --help'"),
                (["relase", "x"], "unknown command (argument #3); did you mean 'release'?; "
                                  "try 'stagelog --help'"),
                (["stgae"], "unknown command (argument #3); did you mean 'stage'?; try 'stagelog --help'"),
                (["lxyz"], "unknown command (argument #3); try 'stagelog --help'"),
                (["help", "shwo"], "help: unknown command (argument #4); did you mean 'show'?; "
                                   "try 'stagelog --help'"),
                (["list", "--satte=x"], "list: unrecognized option '--satte'; did you mean '--state'?; "
                                       "try 'stagelog help list'"),
                (["list", "--lable", "x"], "list: unrecognized option '--lable'; did you mean '--label'?; "
                                           "try 'stagelog help list'"),
                (["list", "--zzzzz"], "list: unrecognized option '--zzzzz'; try 'stagelog help list'"),
                (["--jsno", "list"], "unrecognized option '--jsno'; did you mean '--json'?; "
                                     "try 'stagelog --help'")):
            p = self.sl(*args, code=64)
            self.assertEqual(p.stderr, "stagelog: %s\n" % line)
            self.assertEqual(p.stdout, "")

    def test_usage_errors_point_to_help(self):
        # Every usage error's one line ends with where to read more: the
        # command's help once there is a command, else stagelog's.
        for args, tail in (
                (["show"], "try 'stagelog help show'"),
                (["show", "zz"], "try 'stagelog help show'"),
                (["list", "--state", "nope"], "try 'stagelog help list'"),
                (["stage", "--bundle"], "try 'stagelog help stage'"),
                (["help", "a", "b"], "try 'stagelog help help'"),
                (["--db"], "try 'stagelog --help'"),
                (["-x", "list"], "try 'stagelog --help'")):
            p = self.sl(*args, code=64)
            self.one_line_error(p)
            self.assertTrue(p.stderr.endswith("; %s\n" % tail), p.stderr)

    def test_bare_stagelog_prints_usage_on_stderr(self):
        p = self.sl(code=64, db=False)
        self.assertEqual(p.stdout, "")
        self.assertTrue(p.stderr.startswith("usage: stagelog"), p.stderr)
        for c in COMMANDS:
            self.assertIn(c, p.stderr)
        p = self.sl(code=64)
        self.assertTrue(p.stderr.startswith("usage: stagelog"), p.stderr)
        self.assertFalse(os.path.exists(os.path.dirname(self.db)))

    def test_help_command(self):
        top = self.sl("--help", db=False).stdout
        p = self.sl("help", db=False)
        self.assertEqual(p.stdout, top)
        self.assertEqual(p.stderr, "")
        for c in COMMANDS:
            p = self.sl("help", c)
            self.assertEqual(p.stdout, self.sl(c, "--help").stdout)
            self.assertTrue(p.stdout.startswith("usage: stagelog " + c), p.stdout)
        p = self.sl("help", "frobnicate", code=64)
        self.assertEqual(p.stderr, "stagelog: help: unknown command (argument #4); try 'stagelog --help'\n")
        self.one_line_error(self.sl("help", "list", "show", code=64))
        self.assertFalse(os.path.exists(os.path.dirname(self.db)))

    def test_unknown_option(self):
        # An unknown option's name is shown without what follows '=', and
        # only when it looks like an option's name; an abbreviation is
        # named by the option it stands for; an operand by its position.
        for args, line in (
                (["stage", "--foo"], "stage: unrecognized option '--foo'"),
                (["--foo", "list"], "unrecognized option '--foo'"),
                (["list", "-x"], "list: unrecognized option '-x'"),
                (["stage", "--bundle"], "stage: option '--bundle' requires an argument"),
                (["stage", "--evn=API_TOKEN=x"], "stage: unrecognized option '--evn'; did you mean '--env'?"),
                (["stage", "--Evn_x"], "stage: unrecognized option (argument #4)"),
                (["stage", "--e=x"], "stage: ambiguous option '--e'"),
                (["list", "--al=x"], "list: option '--all' takes no argument (argument #4)"),
                (["list", "extra", "--all"], "list: unexpected argument #4")):
            p = self.sl(*args, code=64)
            hint = "stagelog --help" if args[0].startswith("-") else "stagelog help " + args[0]
            self.assertEqual(p.stderr, "stagelog: %s; try '%s'\n" % (line, hint))
        self.one_line_error(self.sl("stage", "--root", self.root, "--bundle", self.bundle, "--owner", "x1",
                                    code=64))
        self.one_line_error(self.sl("run", "--root", self.root, "--bundle", self.bundle, "--owner", "1",
                                    "--", "true", code=64))
        for args in (["show"], ["show", "a", "b"], ["publish", "abcd"], ["list", "extra"],
                     ["stage", "--root", self.root], ["run", "--root", self.root, "--bundle", self.bundle]):
            self.one_line_error(self.sl(*args, code=64))
        self.assertFalse(os.path.exists(self.root))


    def test_quiet_verbose_keep_json_and_codes(self):
        stage_id, path = self.stage()
        plain = self.sl("--json", "list").stdout
        self.assertEqual(self.sl("-q", "--json", "list").stdout, plain)
        p = self.sl("-v", "--json", "list")
        self.assertEqual(p.stdout, plain)
        self.assertNotEqual(p.stderr, "")
        self.assertEqual(self.sl("-q", "show", "zzzz", code=64).stdout, "")
        # -q means less on stderr (INTERFACE.md); stdout stays the same.
        p = self.sl("-q", "release", stage_id)
        self.assertEqual(p.stdout, "released %s stage %s\n" % (stage_id, path))
        self.assertEqual(p.stderr, "")


class TestStage(Base):
    def test_text_output_and_files(self):
        if os.geteuid() == 0:
            os.chown(self.bundle, 1234, 5678)
        st_bundle = os.stat(self.bundle)
        stage_id, path = self.stage("--env", "A=1", "--env", "B=two words")
        self.assertRegex(stage_id, ID_RE)
        self.assertEqual(path, os.path.join(self.root, "stage-" + stage_id))
        self.assertEqual(stat.S_IMODE(os.stat(self.root).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.lstat(path).st_mode), 0o700)
        cfg_path = os.path.join(path, "config.json")
        self.assertEqual(stat.S_IMODE(os.stat(cfg_path).st_mode), 0o600)
        with open(cfg_path) as f:
            staged = json.load(f)
        with open(os.path.join(self.bundle, "config.json")) as f:
            packaged = json.load(f)
        self.assertEqual(staged["process"].pop("env"), ["A=1", "B=two words"])
        packaged["process"].pop("env")
        for key, owner in (("uidMappings", st_bundle.st_uid), ("gidMappings", st_bundle.st_gid)):
            for m in staged["linux"][key]:
                self.assertEqual(m.pop("hostID"), owner)
            for m in packaged["linux"][key]:
                m.pop("hostID")
        self.assertEqual(staged, packaged)
        # The rootfs is a copy: file contents and mode, symlink as a link.
        with open(os.path.join(path, "rootfs", "etc", "hostname")) as f:
            self.assertEqual(f.read(), "box\n")
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(path, "rootfs", "etc", "hostname")).st_mode), 0o640)
        self.assertEqual(os.readlink(os.path.join(path, "rootfs", "name")), "etc/hostname")
        self.assertEqual(self.state_of(stage_id), "ready")

    def test_json_output(self):
        out = self.slj("stage", "--root", self.root, "--bundle", self.bundle, "--label", "web.1")
        self.assertLessEqual({"id", "label", "path"}, set(out))
        self.assertRegex(out["id"], ID_RE)
        self.assertEqual(out["label"], "web.1")
        self.assertEqual(out["path"], os.path.join(self.root, "web.1-" + out["id"]))
        self.assertTrue(os.path.isdir(out["path"]))

    def staged_env(self, path):
        with open(os.path.join(path, "config.json")) as f:
            return json.load(f)["process"]["env"]

    def test_env_from_environment(self):
        env = dict(self.env, FROM_ENV="hello")
        p = self.sl("stage", "--root", self.root, "--bundle", self.bundle, "--env", "FROM_ENV", env=env)
        path = p.stdout.rstrip("\n").split("\t")[1]
        self.assertEqual(self.staged_env(path), ["FROM_ENV=hello"])

    def test_env_unset_is_usage_error(self):
        env = {k: v for k, v in self.env.items() if k != "NOT_SET_HERE"}
        p = self.sl("stage", "--root", self.root, "--bundle", self.bundle, "--env", "NOT_SET_HERE",
                    code=64, env=env)
        self.one_line_error(p)
        self.assert_root_empty()

    def test_diagnostics_name_what_is_not_secret(self):
        env = {k: v for k, v in self.env.items() if k != "NOT_SET_HERE"}
        p = self.sl("stage", "--root", self.root, "--bundle", self.bundle, "--env", "NOT_SET_HERE",
                    code=64, env=env)
        self.assertEqual(p.stderr, "stagelog: stage: --env: argument #9: the variable is not set in "
                                   "stagelog's environment; try 'stagelog help stage'\n")
        bad = os.path.join(self.tmp, "bad.env")
        with open(bad, "w") as f:
            f.write("oops-" + CANARY + "\n")
        p = self.sl("stage", "--root", self.root, "--bundle", self.bundle, "--env-file", bad, code=65)
        self.assertEqual(p.stderr, "stagelog: stage: --env-file: argument #9: bad env file: line 1: "
                                   "expected NAME=VALUE\n")
        missing = os.path.join(self.tmp, "nope")
        p = self.sl("stage", "--root", self.root, "--bundle", missing, code=66)
        self.assertEqual(p.stderr, "stagelog: cannot stage bundle: %s: No such file or directory\n" % missing)
        self.assert_root_empty()
        # A cross-device publish says what is wrong, and leaves the stage ready.
        stage_id, path = self.stage()
        dest = os.path.join(self.tmp, "published")
        if os.stat(self.tmp).st_dev == os.stat(self.shm).st_dev:
            self.skipTest("/tmp and /dev/shm are one file system here")
        p = self.sl("publish", stage_id, dest, code=73)
        self.one_line_error(p)
        self.assertIn("must be on the same filesystem", p.stderr)
        self.assertEqual(self.state_of(stage_id), "ready")

    def test_env_file_and_later_name_wins(self):
        envfile = os.path.join(self.tmp, "env")
        with open(envfile, "w") as f:
            f.write("# a comment\n\nA=from-file\nC=3\n")
        _, path = self.stage("--env", "A=first", "--env", "B=2", "--env-file", envfile)
        env = self.staged_env(path)
        self.assertIn("A=from-file", env)
        self.assertNotIn("A=first", env)
        self.assertIn("B=2", env)
        self.assertIn("C=3", env)
        _, path = self.stage("--env-file", envfile, "--env", "A=last")
        env = self.staged_env(path)
        self.assertIn("A=last", env)
        self.assertNotIn("A=from-file", env)
        self.assertEqual(len([e for e in env if e.startswith("A=")]), 1)

    def check_failure(self, bundle, code, *extra):
        p = self.sl("stage", "--root", self.root, "--bundle", bundle, "--env", "SECRET=" + CANARY,
                    *extra, code=code)
        self.one_line_error(p)
        self.assertNotIn(CANARY, p.stderr + p.stdout)
        self.assert_root_empty()
        return p

    def test_missing_inputs(self):
        self.check_failure(os.path.join(self.tmp, "nope"), 66)
        self.check_failure(make_bundle(os.path.join(self.tmp, "norootfs"), rootfs=False), 66)
        self.check_failure(make_bundle(os.path.join(self.tmp, "noconfig"), config=False), 66)
        self.check_failure(self.bundle, 66, "--env-file", os.path.join(self.tmp, "no-env-file"))

    def test_malformed_inputs(self):
        self.check_failure(make_bundle(os.path.join(self.tmp, "bad1"), config="{not json"), 65)
        self.check_failure(make_bundle(os.path.join(self.tmp, "bad2"), config=[1, 2]), 65)
        envfile = os.path.join(self.tmp, "badenv")
        with open(envfile, "w") as f:
            f.write("GOOD=1\nthis line is not an assignment " + CANARY + "\n")
        self.check_failure(self.bundle, 65, "--env-file", envfile)

    def test_unusable_root(self):
        target = os.path.join(self.shm, "elsewhere")
        os.mkdir(target, 0o700)
        os.symlink(target, self.root)
        self.one_line_error(self.sl("stage", "--root", self.root, "--bundle", self.bundle, code=73))
        self.assertEqual(os.listdir(target), [])
        os.unlink(self.root)
        os.mkdir(self.root, 0o700)
        os.chmod(self.root, 0o777)
        self.one_line_error(self.sl("stage", "--root", self.root, "--bundle", self.bundle, code=73))
        self.assert_root_empty()

    def test_bad_env_name(self):
        p = self.sl("stage", "--root", self.root, "--bundle", self.bundle, "--env", "bad name=" + CANARY,
                    code=64)
        self.one_line_error(p)
        self.assertNotIn(CANARY, p.stderr)
        self.assert_root_empty()

    def test_canary_never_leaks(self):
        envfile = os.path.join(self.tmp, "env")
        with open(envfile, "w") as f:
            f.write("FILE_SECRET=" + CANARY + "-file\n")
        env = dict(self.env, ENV_SECRET=CANARY + "-env")
        outs = []
        # Each case must end as it should (staged; refused as bad data with
        # one diagnostic): a crash that printed nothing would leak nothing
        # and prove nothing.
        for code, args in ((0, ["-v", "stage", "--root", self.root, "--bundle", self.bundle, "--env",
                                "S=" + CANARY, "--env", "ENV_SECRET", "--env-file", envfile]),
                           (65, ["stage", "--root", self.root, "--bundle",
                                 make_bundle(os.path.join(self.tmp, "bad"), config="{"), "--env",
                                 "S=" + CANARY])):
            p = self.sl(*args, code=code, env=env)
            if code == 0:
                stage_id, path = p.stdout.rstrip("\n").split("\t")
                with open(os.path.join(path, "config.json")) as f:
                    staged = f.read()
                # The secrets did reach the one place they belong.
                for var in ("S=" + CANARY, "ENV_SECRET=" + CANARY + "-env", "FILE_SECRET=" + CANARY + "-file"):
                    self.assertIn(json.dumps(var), staged)
            else:
                self.one_line_error(p)
            outs.append(p.stdout + p.stderr)
        for args in (["list", "--all"], ["--json", "list", "--all"]):
            outs.append(self.sl(*args).stdout)
        for o in outs:
            self.assertNotIn(CANARY, o)
        store_dir = os.path.dirname(self.db)
        for name in os.listdir(store_dir):
            with open(os.path.join(store_dir, name), "rb") as f:
                self.assertNotIn(CANARY.encode(), f.read(), name)


class TestEnvKeep(Base):
    """--env-keep NAME (v3): NAME keeps its value from the packaged
    process.env, never the caller's; a name the package lacks is a usage
    error that names the option and the position; a relative args[0]
    without a staged PATH is warned about once."""

    def packaged(self, args, env):
        self.n_pkg = getattr(self, "n_pkg", 0) + 1
        self.bundle = make_bundle(os.path.join(self.tmp, "pkg%d" % self.n_pkg), {
            "ociVersion": "1.0.2",
            "process": {"args": args, "env": env, "cwd": "/"},
            "root": {"path": "rootfs"},
        })

    def staged(self, p):
        path = p.stdout.rstrip("\n").split("\t")[1]
        with open(os.path.join(path, "config.json")) as f:
            return json.load(f)["process"]["env"]

    def stage_p(self, *args, code=0, env=None):
        return self.sl("stage", "--root", self.root, "--bundle", self.bundle, *args, code=code, env=env)

    def test_value_from_the_package_not_the_caller(self):
        self.packaged(["sh"], ["PATH=/pkg/bin", "TERM=xterm", "HOME=/root", "PATH=/pkg/last"])
        env = dict(self.env, PATH="/caller/bin:" + os.environ.get("PATH", ""), TERM="caller-term",
                   HOME="/caller-home")
        p = self.stage_p("--env-keep", "PATH", "--env", "TOKEN=" + CANARY, "--env-keep", "TERM", env=env)
        # The last PATH of the package (as runc sets them in order), at
        # its place on the command line; HOME, not named, is gone.
        self.assertEqual(self.staged(p), ["PATH=/pkg/last", "TOKEN=" + CANARY, "TERM=xterm"])
        self.assertEqual(p.stderr, "")

    def test_later_value_in_command_line_order(self):
        self.packaged(["/bin/true"], ["A=packaged"])
        envfile = os.path.join(self.tmp, "env")
        with open(envfile, "w") as f:
            f.write("A=from-file\n")
        for args, want in ((["--env", "A=given", "--env-keep", "A"], "A=packaged"),
                           (["--env-keep", "A", "--env", "A=given"], "A=given"),
                           (["--env-keep", "A", "--env-file", envfile], "A=from-file"),
                           (["--env-file", envfile, "--env-keep", "A"], "A=packaged")):
            with self.subTest(args=args):
                self.assertEqual(self.staged(self.stage_p(*args)), [want])

    def test_missing_name_is_usage_error_by_position(self):
        self.packaged(["/bin/true"], ["PATH=/bin"])
        secret = "NOT_PACKAGED_" + CANARY.replace("-", "_")
        env = dict(self.env, **{secret: "set-in-caller"})
        for cmd in ("stage", "run"):
            with self.subTest(cmd=cmd):
                tail = ["--", "true"] if cmd == "run" else []
                p = self.sl(cmd, "--root", self.root, "--bundle", self.bundle, "--env-keep", "PATH",
                            "--env-keep", secret, *tail, code=64, env=env)
                # Words after stagelog: --db PATH CMD --root ROOT --bundle
                # PKG --env-keep PATH --env-keep NAME: NAME is #11.
                self.assertEqual(p.stderr, "stagelog: %s: --env-keep: argument #11: not in the packaged "
                                           "config's process.env; try 'stagelog help %s'\n" % (cmd, cmd))
                self.assertEqual(p.stdout, "")
                self.assert_root_empty()
        p = self.stage_p("--env-keep=" + secret, code=64, env=env)
        self.assertEqual(p.stderr, "stagelog: stage: --env-keep: argument #8: not in the packaged "
                                   "config's process.env; try 'stagelog help stage'\n")
        p = self.stage_p("--env-keep", CANARY + "=x", code=64)
        self.assertEqual(p.stderr, "stagelog: stage: --env-keep: argument #9: not a variable name "
                                   "([A-Za-z_][A-Za-z0-9_]*); try 'stagelog help stage'\n")
        self.assert_root_empty()

    def test_warns_once_without_path(self):
        warning = ("stagelog: warning: %s: process.args[0] is not an absolute path and the staged "
                   "process.env has no PATH; to keep the packaged one, pass --env-keep PATH\n")
        self.packaged(["sh", "-c", "true"], ["PATH=/usr/bin:/bin", "TERM=xterm"])
        p = self.stage_p("--env", "TOKEN=" + CANARY)
        self.assertEqual(p.stderr, warning % "stage")
        p = self.sl("run", "--root", self.root, "--bundle", self.bundle, "--env-keep", "TERM", "--", "true")
        self.assertEqual(p.stderr, warning % "run")
        # No warning with PATH staged, kept or given, nor for an absolute
        # args[0].
        for args in (["--env-keep", "PATH"], ["--env", "PATH=/bin"]):
            with self.subTest(args=args):
                self.assertEqual(self.stage_p(*args).stderr, "")
                p = self.sl("run", "--root", self.root, "--bundle", self.bundle, *args, "--", "true")
                self.assertEqual(p.stderr, "")
        self.packaged(["/bin/sh"], ["PATH=/bin"])
        self.assertEqual(self.stage_p().stderr, "")


def fs_type(path):
    """The type of the file system that holds path, as stat -f names it."""
    return subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True,
                          check=True).stdout.strip()


class TestPathsAndStores(Base):
    """Every error about a path names it; a store that is not one says so
    in words; a root on a disk is warned about, once."""

    def test_root_error_names_the_root(self):
        missing = os.path.join(self.shm, "file")
        with open(missing, "w"):
            pass
        for root, why in (("/proc/nope", "No such file or directory"),
                          (missing, "is a symlink or not a directory; refused")):
            for cmd in (["stage"], ["run"]):
                p = self.sl(*cmd, "--root", root, "--bundle", self.bundle, *(["--", "true"] if cmd == ["run"] else []),
                            code=None)
                self.assertIn(p.returncode, (66, 73, 65), p.stderr)
                self.assertEqual(p.stderr, "stagelog: cannot begin stage: staging root %s: %s\n" % (root, why))

    def test_bundle_errors_name_the_file(self):
        shutil.rmtree(os.path.join(self.bundle, "rootfs"))
        p = self.sl("stage", "--root", self.root, "--bundle", self.bundle, code=66)
        self.assertEqual(p.stderr, "stagelog: cannot stage bundle: %s/rootfs: No such file or directory\n"
                         % self.bundle)
        os.mkdir(os.path.join(self.bundle, "rootfs"))
        os.unlink(os.path.join(self.bundle, "config.json"))
        p = self.sl("stage", "--root", self.root, "--bundle", self.bundle, code=66)
        self.assertEqual(p.stderr, "stagelog: cannot stage bundle: packaged config: %s/config.json: "
                         "No such file or directory\n" % self.bundle)

    def test_corrupt_store_says_so(self):
        os.makedirs(os.path.dirname(self.db), mode=0o700, exist_ok=True)
        for content in (b"garbage", os.urandom(4096), b"SQLite format 3\0" + b"\xff" * 200):
            with open(self.db, "wb") as f:
                f.write(content)
            os.chmod(self.db, 0o600)
            words = "stagelog: cannot open store: %s: not a stagelog store (corrupt or another kind of file)" % self.db
            for args in (["list"], ["show", "abcd"], ["stage", "--root", self.root, "--bundle", self.bundle]):
                p = self.sl(*args, code=65)
                self.assertEqual(p.stderr, words + "; see 'stagelog check'\n")
                self.assertNotIn("Bad message", p.stderr)
            # check is where it points: it says what it found, no more.
            p = self.sl("check", code=65)
            self.assertEqual(p.stderr, words + "\n")
        self.assert_root_empty()

    def test_disk_root_warned_once(self):
        disk = next((d for d in (self.tmp, os.getcwd(), os.path.dirname(os.path.abspath(__file__)))
                     if fs_type(d) not in ("tmpfs", "ramfs")), None)
        if disk is None:
            self.skipTest("no folder on a disk here")
        root = tempfile.mkdtemp(prefix="stagelog-disk-root-", dir=disk)
        self.addCleanup(shutil.rmtree, root, True)
        warning = ("stagelog: warning: staging root %s is on a disk, not in memory: a power loss can leave "
                   "secrets on it\n" % root)
        p = self.sl("stage", "--root", root, "--bundle", self.bundle)
        self.assertEqual(p.stderr, warning)
        self.sl("release", p.stdout.split("\t")[0])
        p = self.sl("run", "--root", root, "--bundle", self.bundle, "--", "true")
        self.assertEqual(p.stderr, warning)
        # -q: not said; in memory: nothing to say.
        p = self.sl("-q", "stage", "--root", root, "--bundle", self.bundle)
        self.assertEqual(p.stderr, "")
        self.sl("release", p.stdout.split("\t")[0])
        self.assertEqual(fs_type(self.shm), "tmpfs")
        p = self.sl("stage", "--root", self.root, "--bundle", self.bundle)
        self.assertEqual(p.stderr, "")


class TestProgress(Base):
    """stage, run (until the runtime starts), release and recover draw a
    progress line on a terminal's stderr, at most 10 times a second, and
    erase it; nothing on a pipe, nothing with -q."""

    N_DIRS, N_FILES = 200, 100  # 20,200 paths

    def setUp(self):
        super().setUp()
        # The bundle on /dev/shm, so that the copy is the CPU's work.
        self.big = make_bundle(os.path.join(self.shm, "big"))
        rootfs = os.path.join(self.big, "rootfs")
        for d in range(self.N_DIRS):
            os.mkdir(os.path.join(rootfs, "d%d" % d))
            for f in range(self.N_FILES):
                with open(os.path.join(rootfs, "d%d" % d, "f%d" % f), "w") as fh:
                    fh.write("x" * 100)
        self.total = len([1 for _, dirs, files in os.walk(rootfs) for _ in dirs + files])

    def on_tty(self, *args):
        """Runs stagelog with stderr on a pseudo-terminal: (process, what
        the terminal got, seconds)."""
        import pty
        import select
        master, slave = pty.openpty()
        t0 = time.monotonic()
        p = subprocess.Popen([STAGELOG, "--db", self.db] + list(args), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=slave, env=self.env)
        os.close(slave)
        out = b""
        while True:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer is gone
                    break
                if not data:
                    break
                out += data
            elif p.poll() is not None:
                break
        stdout = p.stdout.read().decode()
        p.wait()
        elapsed = time.monotonic() - t0
        os.close(master)
        p.stdout.close()
        return p, stdout, out.decode("utf-8", "replace"), elapsed

    def drawings(self, tty):
        return re.findall(r"\r\x1b\[Kstagelog: staging (\d+)/(\d+) paths, ([0-9.]+ [KMG]?i?B), (\d+\.\d)s", tty)

    def test_stage_on_a_terminal(self):
        p, stdout, tty, elapsed = self.on_tty("stage", "--root", self.root, "--bundle", self.big)
        self.assertEqual(p.returncode, 0, tty)
        stage_id = stdout.split("\t")[0]
        seen = self.drawings(tty)
        self.assertTrue(seen, "no progress on a terminal: %r" % tty[:300])
        for done, total, _, _ in seen:
            self.assertEqual(int(total), self.total)
            self.assertLessEqual(int(done), int(total))
        # Ended cleanly: the last thing on the terminal erases the line.
        self.assertTrue(tty.endswith("\r\x1b[K"), repr(tty[-80:]))
        # At most 10 a second (the first 100 ms in).
        self.assertLessEqual(len(seen), int(elapsed * 10) + 1, "%d drawings in %.2f s" % (len(seen), elapsed))
        self.sl("release", stage_id)

    def test_run_until_the_runtime_starts(self):
        p, _, tty, _ = self.on_tty("run", "--root", self.root, "--bundle", self.big, "--",
                                   "sh", "-c", "echo RUNTIME-STARTED >&2")
        self.assertEqual(p.returncode, 0, tty)
        self.assertTrue(self.drawings(tty), repr(tty[:300]))
        before, after = tty.split("RUNTIME-STARTED", 1)
        self.assertTrue(before.endswith("\r\x1b[K"), repr(before[-80:]))
        self.assertNotIn("staging", after)

    def test_release_on_a_terminal(self):
        stage_id = self.sl("stage", "--root", self.root, "--bundle", self.big).stdout.split("\t")[0]
        p, stdout, tty, elapsed = self.on_tty("release", stage_id)
        self.assertEqual(p.returncode, 0, tty)
        self.assertTrue(stdout.startswith("released " + stage_id), stdout)
        seen = re.findall(r"\r\x1b\[Kstagelog: releasing (\d+)/(\d+) paths, (\d+\.\d)s", tty)
        self.assertTrue(seen, "no progress on a terminal: %r" % tty[:300])
        for done, total, _ in seen:
            # Every logged path: rootfs/ and what is in it, config.json.
            self.assertGreater(int(total), self.total)
            self.assertLessEqual(int(done), int(total))
        self.assertTrue(tty.endswith("\r\x1b[K"), repr(tty[-80:]))
        self.assertLessEqual(len(seen), int(elapsed * 10) + 1)
        self.assert_root_empty()

    def test_recover_on_a_terminal(self):
        sleeper = subprocess.Popen(["sleep", "600"])
        try:
            for _ in range(4):
                self.sl("stage", "--root", self.root, "--bundle", self.big, "--owner", str(sleeper.pid))
        finally:
            sleeper.kill()
            sleeper.wait()
        p, stdout, tty, elapsed = self.on_tty("recover")
        self.assertEqual(p.returncode, 0, tty)
        self.assertIn("4 examined, 4 recovered", stdout)
        seen = re.findall(r"\r\x1b\[Kstagelog: recovering (\d+)/(\d+) stages", tty)
        self.assertTrue(seen, "no progress on a terminal: %r" % tty[:300])
        for done, total in seen:
            self.assertEqual(int(total), 4)
            self.assertLessEqual(int(done), 4)
        self.assertTrue(tty.endswith("\r\x1b[K"), repr(tty[-80:]))
        self.assertLessEqual(len(seen), int(elapsed * 10) + 1)
        self.assert_root_empty()
        # Nothing on a pipe.
        self.assertEqual(self.sl("recover").stderr, "")

    def test_never_on_a_pipe_nor_with_quiet(self):
        p = self.sl("stage", "--root", self.root, "--bundle", self.big)
        self.assertEqual(p.stderr, "")
        self.sl("release", p.stdout.split("\t")[0])
        p, stdout, tty, _ = self.on_tty("-q", "stage", "--root", self.root, "--bundle", self.big)
        self.assertEqual(p.returncode, 0)
        self.assertEqual(tty, "")
        stage_id = stdout.split("\t")[0]
        p, _, tty, _ = self.on_tty("-q", "release", stage_id)
        self.assertEqual((p.returncode, tty), (0, ""))
        stage_id = self.sl("stage", "--root", self.root, "--bundle", self.big).stdout.split("\t")[0]
        p = self.sl("release", stage_id)
        self.assertEqual(p.stderr, "")


class TestReleasePublish(Base):
    def test_release_idempotent(self):
        stage_id, path = self.stage()
        p = self.sl("release", stage_id[:8])
        self.assertFalse(os.path.exists(path))
        self.assertEqual(self.state_of(stage_id), "released")
        self.sl("release", stage_id)
        self.assertEqual(self.state_of(stage_id), "released")
        self.assertEqual(self.slj("release", stage_id)["id"], stage_id)
        self.assertEqual(p.stderr, "")

    def test_release_lines_name_label_and_path(self):
        stage_id, path = self.stage(label="gw")
        p = self.sl("release", stage_id[:8])
        self.assertEqual(p.stdout, "released %s gw %s\n" % (stage_id, path))
        p = self.sl("release", stage_id)
        self.assertEqual(p.stdout, "nothing to release for %s gw %s\n" % (stage_id, path))
        doc = self.slj("release", stage_id)
        self.assertEqual((doc["label"], doc["path"], doc["removed"]), ("gw", path, False))

    def test_publish(self):
        stage_id, path = self.stage()
        dest = os.path.join(self.shm, "published")
        self.sl("publish", stage_id, dest)
        self.assertFalse(os.path.exists(path))
        self.assertTrue(os.path.isfile(os.path.join(dest, "config.json")))
        self.assertEqual(self.state_of(stage_id), "published")
        # A published stage belongs to its destination: release is refused.
        self.one_line_error(self.sl("release", stage_id, code=64))
        self.assertTrue(os.path.isdir(dest))

    def test_publish_onto_existing(self):
        stage_id, path = self.stage()
        dest = os.path.join(self.shm, "exists")
        os.mkdir(dest)
        self.one_line_error(self.sl("publish", stage_id, dest, code=73))
        self.assertTrue(os.path.isdir(path))
        self.assertEqual(os.listdir(dest), [])
        self.assertEqual(self.state_of(stage_id), "ready")


class TestRun(Base):
    def run_sl(self, *args, code=None, env=None):
        return self.sl("run", "--root", self.root, "--bundle", self.bundle, *args, code=code, env=env)

    def test_env_and_placeholders(self):
        out = os.path.join(self.tmp, "out")
        env = dict(self.env, KEEP="kept", DROPME="dropped")
        script = 'env > "%s.env"; printf "%%s\\n" "$@" > "%s.args"; test -f "$1/config.json" && echo yes > "%s.ok"' % (out, out, out)
        p = self.run_sl("--pass-env", "KEEP", "--pass-env", "UNSET_NAME", "--",
                        "sh", "-c", script, "sh", "{bundle}", "id={id}", "{id}{id}", "plain",
                        code=0, env=env)
        with open(out + ".env") as f:
            names = {line.split("=", 1)[0] for line in f.read().splitlines() if "=" in line}
        self.assertIn("KEEP", names)
        # The shell itself may set PWD, SHLVL, _ and OLDPWD; nothing else.
        self.assertEqual(names - {"KEEP", "PWD", "SHLVL", "_", "OLDPWD"}, set())
        with open(out + ".args") as f:
            args = f.read().splitlines()
        stages = self.slj("list", "--all")
        self.assertEqual(len(stages), 1)
        st = stages[0]
        self.assertEqual(args, [st["path"], "id=" + st["id"], st["id"] * 2, "plain"])
        self.assertTrue(os.path.exists(out + ".ok"))
        # Released after the runtime exited.
        self.assertEqual(st["state"], "released")
        self.assert_root_empty()
        self.assertEqual(p.stdout, "")

    def test_exit_status(self):
        self.run_sl("--", "sh", "-c", "exit 7", code=7)
        self.run_sl("--", "sh", "-c", 'kill -TERM $$', code=128 + signal.SIGTERM)
        self.run_sl("--", "sh", "-c", 'kill -KILL $$', code=128 + signal.SIGKILL)
        for st in self.slj("list", "--all"):
            self.assertEqual(st["state"], "released")
        self.assert_root_empty()

    def test_sigterm_forwarded(self):
        ready = os.path.join(self.tmp, "ready")
        mark = os.path.join(self.tmp, "mark")
        script = 'trap \'echo got-term > "%s"; exit 3\' TERM; echo up > "%s"; while :; do sleep 0.05; done' % (mark, ready)
        proc = subprocess.Popen([STAGELOG, "--db", self.db, "run", "--root", self.root, "--bundle", self.bundle,
                                 "--", "sh", "-c", script], env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.time() + 20
            while not os.path.exists(ready) and time.time() < deadline:
                time.sleep(0.02)
            self.assertTrue(os.path.exists(ready))
            st = self.slj("list")
            self.assertEqual(len(st), 1)
            self.assertEqual(st[0]["state"], "ready")
            self.assertTrue(st[0]["owner_alive"])
            proc.send_signal(signal.SIGTERM)
            self.assertEqual(proc.wait(timeout=20), 3)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        with open(mark) as f:
            self.assertEqual(f.read(), "got-term\n")
        self.assertEqual(self.slj("list", "--all")[0]["state"], "released")
        self.assert_root_empty()

    def test_verbose_names_label_and_path(self):
        p = self.run_sl("--label", "gw", "--", "true", code=0)
        self.assertEqual(p.stderr, "")
        p = self.sl("-v", "run", "--root", self.root, "--bundle", self.bundle, "--label", "gw", "--", "true")
        stage_id = self.slj("list", "--all")[-1]["id"]
        path = os.path.join(self.root, "gw-" + stage_id)
        self.assertIn("stagelog: staged %s gw %s\n" % (stage_id, path), p.stderr)
        self.assertIn("stagelog: released %s gw %s\n" % (stage_id, path), p.stderr)
        self.assert_root_empty()

    def test_missing_runtime(self):
        p = self.run_sl("--", "no-such-runtime-here", "x", code=127)
        self.one_line_error(p)
        stages = self.slj("list", "--all")
        self.assertEqual([s["state"] for s in stages], ["released"])
        self.assert_root_empty()

    def test_staging_failure_never_starts_runtime(self):
        marker = os.path.join(self.tmp, "started")
        p = self.sl("run", "--root", self.root, "--bundle", os.path.join(self.tmp, "nope"), "--",
                    "sh", "-c", 'touch "%s"' % marker, code=66)
        self.one_line_error(p)
        self.assertFalse(os.path.exists(marker))
        bad = make_bundle(os.path.join(self.tmp, "bad"), config="[")
        self.sl("run", "--root", self.root, "--bundle", bad, "--", "sh", "-c", 'touch "%s"' % marker, code=65)
        self.assertFalse(os.path.exists(marker))
        self.assert_root_empty()


class TestListShow(Base):
    def test_empty(self):
        self.assertEqual(self.slj("list"), [])
        self.assertEqual(self.slj("list", "--all"), [])
        p = self.sl("list")
        self.assertEqual(p.stdout, "ID  LABEL  STATE  OWNER  LIVE  AGE  ENTRIES  PATH\n")

    def test_list_ids_only_and_no_legend(self):
        a, _ = self.stage(label="alpha")
        b, _ = self.stage(label="beta")
        c, _ = self.stage(label="gamma")
        self.sl("release", b)
        # -q: the full ids, one a line, oldest first; nothing else.
        for flag in ("-q", "--quiet"):
            p = self.sl("list", flag)
            self.assertEqual(p.stdout, "%s\n%s\n" % (a, c))
            self.assertEqual(p.stderr, "")
        self.assertEqual(self.sl("list", "-q", "--all").stdout, "%s\n%s\n%s\n" % (a, b, c))
        self.assertEqual(self.sl("list", "-q", "--state", "released").stdout, b + "\n")
        self.assertEqual(self.sl("list", "-q", "--label", "gamma").stdout, c + "\n")
        self.assertEqual(self.sl("list", "-q", "--state", "failed").stdout, "")
        # --json wins: the document, as without -q.
        self.assertEqual(self.sl("--json", "list", "-q").stdout, self.sl("--json", "list").stdout)
        # --no-legend: the table's rows, without the header.
        table = self.sl("list").stdout.splitlines()
        p = self.sl("list", "--no-legend")
        self.assertEqual(p.stdout.splitlines(), table[1:])
        self.assertEqual(len(table), 3)
        self.assertEqual(self.sl("list", "--no-legend", "--state", "failed").stdout, "")

    def test_list_columns_and_json(self):
        a, path_a = self.stage(label="alpha")
        b, path_b = self.stage(label="beta")
        self.sl("release", b)
        lines = self.sl("list").stdout.splitlines()
        self.assertEqual(lines[0].split(), ["ID", "LABEL", "STATE", "OWNER", "LIVE", "AGE", "ENTRIES", "PATH"])
        self.assertEqual(len(lines), 2)
        # One token per cell: awk sees as many fields as the header has.
        cols = lines[1].split()
        self.assertEqual(len(cols), 8)
        self.assertEqual(cols[0], a[:12])
        self.assertEqual(cols[1:3], ["alpha", "ready"])
        self.assertEqual(cols[3], str(os.getpid()))
        self.assertEqual(cols[4], "yes")
        self.assertRegex(cols[5], r"^\d+[smhd]$")
        self.assertGreater(int(cols[6]), 0)
        self.assertEqual(cols[7], path_a)
        # Columns are aligned: every field starts where its header does.
        all_lines = self.sl("list", "--all").stdout.splitlines()
        self.assertEqual(len(all_lines), 3)
        start = all_lines[0].index("STATE")
        for line in all_lines[1:]:
            self.assertIn(line[start:].split()[0], ("ready", "released"))
        self.assertEqual(len(self.sl("list", "--label", "beta").stdout.splitlines()), 1)

        items = self.slj("list", "--all")
        self.assertEqual([i["id"] for i in items], [a, b])
        for item in items:
            for key in ("id", "label", "state", "root", "path", "owner_pid", "owner_alive",
                        "created_at", "updated_at", "entries"):
                self.assertIn(key, item)
            self.assertEqual(item["root"], self.root)
            self.assertEqual(item["owner_pid"], os.getpid())
            self.assertIsInstance(item["owner_alive"], bool)
            self.assertRegex(item["created_at"], TIME_RE)
            self.assertRegex(item["updated_at"], TIME_RE)
            self.assertIsInstance(item["entries"], int)
        self.assertEqual(items[0]["label"], "alpha")
        self.assertEqual(items[0]["state"], "ready")
        self.assertEqual(items[0]["path"], path_a)
        self.assertTrue(items[0]["owner_alive"])
        self.assertEqual(items[1]["state"], "released")
        self.assertEqual([i["id"] for i in self.slj("list", "--label", "alpha")], [a])

    def test_list_state_filter(self):
        a, _ = self.stage(label="alpha")
        b, _ = self.stage(label="beta")
        c, _ = self.stage(label="gamma")
        self.sl("release", b)
        self.assertEqual([i["id"] for i in self.slj("list", "--state", "ready")], [a, c])
        self.assertEqual([i["id"] for i in self.slj("list", "--state", "released")], [b])
        self.assertEqual([i["id"] for i in self.slj("list", "--state", "released", "--state", "ready")], [a, b, c])
        self.assertEqual(self.slj("list", "--state", "failed"), [])
        self.assertEqual([i["id"] for i in self.slj("list", "--state", "ready", "--label", "gamma")], [c])
        lines = self.sl("list", "--state", "released").stdout.splitlines()
        self.assertEqual(len(lines), 2)
        self.assertEqual(lines[1].split()[2], "released")
        p = self.sl("list", "--state", "bogus", code=64)
        self.one_line_error(p)
        self.assertIn("--state: argument #5: unknown state", p.stderr)
        self.assertNotIn("bogus", p.stderr)

    def test_list_bad_label_is_usage_error(self):
        self.stage(label="alpha")
        for bad in ("BAD", "-x", "", "a" * 33, "a b", "a/b"):
            p = self.sl("list", "--label", bad, code=64)
            self.one_line_error(p)
            self.assertIn("bad label", p.stderr)
            self.assertEqual(p.stdout, "")
        self.assertEqual(self.slj("list", "--label", "a" * 32), [])

    def test_show(self):
        os.mkdir(os.path.join(self.bundle, "rootfs", "odd"))
        with open(os.path.join(self.bundle.encode(), b"rootfs", b"odd", b"bad\xffname\nx"), "w") as f:
            f.write("x")
        stage_id, path = self.stage()
        doc = self.slj("show", stage_id[:6])
        self.assertEqual(doc["id"], stage_id)
        self.assertEqual(doc["state"], "ready")
        self.assertEqual(doc["path"], path)
        self.assertIsInstance(doc["entries"], list)
        seqs = [e["seq"] for e in doc["entries"]]
        self.assertEqual(seqs, sorted(seqs))
        top = "stage-" + stage_id
        paths = [e["path"] for e in doc["entries"]]
        for e in doc["entries"]:
            self.assertEqual(set(e) >= {"seq", "path", "kind", "state"}, True)
            self.assertIn(e["kind"], ("dir", "file", "symlink"))
            self.assertTrue(e["path"] == top or e["path"].startswith(top + "/"), e["path"])
        self.assertIn(top + "/config.json", paths)
        self.assertIn(top + "/rootfs/name", paths)
        # A byte that is not UTF-8 becomes \udcXX (surrogateescape); the
        # rest is kept.
        self.assertIn(top + "/rootfs/odd/bad\udcffname\nx", paths)
        kinds = {e["path"]: e["kind"] for e in doc["entries"]}
        self.assertEqual(kinds[top + "/rootfs/name"], "symlink")
        self.assertEqual(kinds[top + "/config.json"], "file")
        self.assertEqual(kinds[top + "/rootfs"], "dir")

        text = self.sl("show", stage_id).stdout
        self.assertIn("id: " + stage_id, text)
        self.assertIn("state: ready", text)
        self.assertIn("rootfs/odd/bad\\xffname\\nx", text)
        self.assertNotIn("\udcff", text)

    def test_id_prefixes(self):
        a, _ = self.stage()
        b, _ = self.stage()
        self.assertEqual(self.slj("show", a[:4])["id"], a)
        self.assertEqual(self.slj("show", a.upper())["id"], a)
        self.one_line_error(self.sl("show", a[:3], code=64))
        self.one_line_error(self.sl("show", "zzzz", code=64))
        unknown = next(p for p in ("%04x" % i for i in range(65536))
                       if not a.startswith(p) and not b.startswith(p))
        self.one_line_error(self.sl("show", unknown, code=64))
        self.one_line_error(self.sl("release", unknown, code=64))
        # Make the two ids share a prefix (both stages are finished, so
        # only their records change), then ask for it.
        self.sl("release", a)
        self.sl("release", b)
        db = sqlite3.connect(self.db)
        db.execute("UPDATE stages SET id = 'abcd' || substr(id, 5)")
        db.commit()
        db.close()
        p = self.sl("show", "abcd", code=64)
        self.one_line_error(p)
        self.assertIn("abcd" + a[4:], p.stderr)
        self.assertIn("abcd" + b[4:], p.stderr)
        self.assertEqual(self.slj("show", "abcd" + a[4:8])["id"], "abcd" + a[4:])


class TestRecover(Base):
    def start_orphaned_run(self):
        """A `stagelog run -- sleep 100` whose whole process group is then
        killed with SIGKILL, leaving a stale ready stage."""
        proc = subprocess.Popen([STAGELOG, "--db", self.db, "run", "--root", self.root, "--bundle", self.bundle,
                                 "--", "sleep", "100"], env=self.env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 20
            stages = []
            while time.time() < deadline:
                stages = self.slj("list") if os.path.exists(self.db) else []
                if stages and stages[0]["state"] == "ready":
                    break
                time.sleep(0.05)
            self.assertEqual(len(stages), 1)
            time.sleep(0.2)  # let the runtime start and take the lock
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # proc.wait() waited for stagelog only: the runtime it forked may
        # still be exiting with the stage's lock. Stale means both gone.
        self.wait_lock_free(stages[0]["path"])
        return stages[0]

    def wait_lock_free(self, path, timeout=20):
        deadline = time.monotonic() + timeout
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return
                except BlockingIOError:
                    self.assertLess(time.monotonic(), deadline, "the killed runtime still holds the lock")
                    time.sleep(0.01)
        finally:
            os.close(fd)

    def test_runtime_keeps_stage_alive(self):
        """`run` hands the stage's lock to its runtime: with the launcher
        killed and the runtime still running, the stage is live; once the
        runtime is gone too, it is stale."""
        proc = subprocess.Popen([STAGELOG, "--db", self.db, "run", "--root", self.root, "--bundle", self.bundle,
                                 "--", "sleep", "100"], env=self.env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 20
            runtime = None
            while time.time() < deadline and runtime is None:
                out = subprocess.run(["pgrep", "-P", str(proc.pid), "-x", "sleep"], stdout=subprocess.PIPE,
                                     text=True).stdout.split()
                runtime = int(out[0]) if out else None
                time.sleep(0.02)
            self.assertIsNotNone(runtime, "the runtime did not start")
            # Only the launcher dies; its runtime goes on using the bundle.
            proc.kill()
            proc.wait()
            st = self.slj("list")[0]
            self.assertTrue(st["owner_alive"])
            rep = self.slj("recover")
            self.assertEqual(rep["live"], [st["id"]])
            self.assertEqual(rep["recovered"], [])
            self.assertTrue(os.path.isfile(os.path.join(st["path"], "config.json")))
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        deadline = time.time() + 10
        while time.time() < deadline and self.slj("list")[0]["owner_alive"]:
            time.sleep(0.05)
        self.assertEqual(self.slj("recover")["recovered"], [st["id"]])
        self.assert_root_empty()

    def test_recover_stale(self):
        st = self.start_orphaned_run()
        stage_id = st["id"]
        self.assertTrue(os.path.isdir(st["path"]))
        item = self.slj("list")[0]
        self.assertFalse(item["owner_alive"])
        self.assertEqual(self.sl("list").stdout.splitlines()[1].split()[4], "no")

        dry = self.slj("recover", "--dry-run")
        self.assertEqual(dry["dry_run"], True)
        self.assertEqual(dry["recovered"], [stage_id])
        self.assertEqual(dry["live"], [])
        self.assertEqual(dry["failed"], [])
        self.assertGreaterEqual(dry["examined"], 1)
        self.assertTrue(os.path.isdir(st["path"]))
        self.assertEqual(self.state_of(stage_id), "ready")

        p = self.sl("recover")
        self.assertIn("recovered %s stage %s\n" % (stage_id, st["path"]), p.stdout)
        self.assertFalse(os.path.exists(st["path"]))
        self.assertEqual(self.state_of(stage_id), "recovered")
        self.assert_root_empty()
        again = self.slj("recover")
        self.assertEqual(again["recovered"], [])
        self.assertEqual(again["dry_run"], False)

    def test_text_summary_and_forget(self):
        st = self.start_orphaned_run()
        p = self.sl("recover", "--dry-run")
        self.assertIn("would recover %s stage %s\n" % (st["id"], st["path"]), p.stdout)
        self.assertEqual(p.stdout.splitlines()[-1], "1 examined, 1 would be recovered, 0 live, 0 failed")
        self.assertEqual(self.sl("-q", "recover", "--dry-run").stdout, p.stdout)
        # An operator who cleaned up by hand drops the record.
        shutil.rmtree(st["path"])
        self.sl("forget", st["id"])
        self.assertEqual(self.slj("list", "--all"), [])
        self.one_line_error(self.sl("show", st["id"], code=64))

    def test_forget_live_refused(self):
        stage_id, path = self.stage()
        self.one_line_error(self.sl("forget", stage_id, code=64))
        self.assertEqual(self.state_of(stage_id), "ready")
        self.assertTrue(os.path.isdir(path))

    def test_release_stale(self):
        st = self.start_orphaned_run()
        self.sl("release", st["id"])
        self.assertEqual(self.state_of(st["id"]), "released")
        self.assert_root_empty()

    def test_removal_failure_exits_1(self):
        stage_id, path = self.stage()
        source = os.path.join(self.tmp, "mnt")
        os.mkdir(source)
        target = os.path.join(path, "rootfs")
        if subprocess.run(["mount", "--bind", source, target], capture_output=True).returncode != 0:
            self.skipTest("needs permission to bind-mount")
        try:
            # A mount in the way is never entered: the stage becomes failed.
            self.one_line_error(self.sl("release", stage_id, code=1))
            item = self.slj("list")[0]
            self.assertEqual(item["state"], "failed")
            self.assertNotEqual(item.get("reason", ""), "")
            doc = self.slj("recover", "--force", stage_id, code=1)
            self.assertEqual([f["id"] for f in doc["failed"]], [stage_id])
            self.assertNotEqual(doc["failed"][0]["reason"], "")
            self.assertEqual(doc["failed"][0]["label"], "stage")
            self.assertEqual(doc["failed"][0]["path"], path)
            self.assertIn("stagelog: failed %s stage %s: " % (stage_id, path),
                          self.sl("recover", "--force", stage_id, code=1).stderr)
        finally:
            subprocess.run(["umount", target])
        self.assertTrue(os.path.isdir(source))
        self.assertEqual(self.slj("recover", "--force", stage_id)["recovered"], [stage_id])
        self.assert_root_empty()

    def test_live_left_alone_and_force(self):
        stage_id, path = self.stage()
        doc = self.slj("recover")
        self.assertEqual(doc["live"], [stage_id])
        self.assertEqual(doc["recovered"], [])
        self.assertTrue(os.path.isdir(path))
        self.assertIn("live %s stage %s (left alone)\n" % (stage_id, path), self.sl("recover").stdout)
        doc = self.slj("recover", "--force", stage_id[:8])
        self.assertEqual(doc["recovered"], [stage_id])
        self.assertFalse(os.path.exists(path))
        self.one_line_error(self.sl("recover", "--force", "zz", code=64))


class TestDefaultRoot(Base):
    def test_stagelog_root_sets_the_default(self):
        env = dict(self.env, STAGELOG_ROOT=self.root)
        del env["XDG_RUNTIME_DIR"]
        p = self.sl("stage", "--bundle", self.bundle, env=env)
        stage_id, path = p.stdout.rstrip("\n").split("\t")
        self.assertEqual(os.path.dirname(path), self.root)
        self.assertEqual(stat.S_IMODE(os.stat(self.root).st_mode), 0o700)
        # --root still wins over the variable.
        other = os.path.join(self.shm, "other")
        p = self.sl("stage", "--root", other, "--bundle", self.bundle, env=env)
        self.assertEqual(os.path.dirname(p.stdout.rstrip("\n").split("\t")[1]), other)
        p = self.sl("stage", "--bundle", self.bundle, env=dict(env, STAGELOG_ROOT="relative/root"), code=64)
        self.one_line_error(p)
        self.assertIn("STAGELOG_ROOT", p.stderr)

    def as_user(self, uid, *args, env):
        argv = ["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups", STAGELOG] + list(args)
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)

    def test_fallback_to_run_user(self):
        if os.geteuid() != 0 or not shutil.which("setpriv"):
            self.skipTest("needs root and setpriv to act as another user")
        uid = 65534
        run_user = "/run/user/%d" % uid
        if os.path.lexists(run_user):
            self.skipTest(run_user + " exists already")
        home = tempfile.mkdtemp(prefix="stagelog-cli-user-", dir="/tmp")
        os.chown(home, uid, uid)
        bundle = make_bundle(os.path.join(home, "pkg"))
        for dirpath, dirnames, filenames in os.walk(home):
            for n in dirnames + filenames:
                os.lchown(os.path.join(dirpath, n), uid, uid)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home}
        db = os.path.join(home, "state", "stagelog.db")
        try:
            # No XDG_RUNTIME_DIR and no /run/user/UID: a usage error that
            # names both ways out.
            p = self.as_user(uid, "--db", db, "stage", "--bundle", bundle, env=env)
            self.assertEqual(p.returncode, 64, p.stderr)
            self.one_line_error(p)
            self.assertIn("--root", p.stderr)
            self.assertIn("STAGELOG_ROOT", p.stderr)
            os.makedirs(run_user, mode=0o700)
            # Not the caller's: refused.
            p = self.as_user(uid, "--db", db, "stage", "--bundle", bundle, env=env)
            self.assertEqual(p.returncode, 64, p.stderr)
            os.chown(run_user, uid, uid)
            os.chmod(run_user, 0o755)
            # The caller's but not private: refused.
            p = self.as_user(uid, "--db", db, "stage", "--bundle", bundle, env=env)
            self.assertEqual(p.returncode, 64, p.stderr)
            os.chmod(run_user, 0o700)
            p = self.as_user(uid, "--db", db, "stage", "--bundle", bundle, "--owner", "1", env=env)
            self.assertEqual(p.returncode, 0, p.stderr)
            stage_id, path = p.stdout.rstrip("\n").split("\t")
            self.assertEqual(path, "%s/stagelog/stage-%s" % (run_user, stage_id))
            p = self.as_user(uid, "--db", db, "release", stage_id, env=env)
            self.assertEqual(p.returncode, 0, p.stderr)
        finally:
            shutil.rmtree(run_user, ignore_errors=True)
            shutil.rmtree(home, ignore_errors=True)


class TestLinesWhole(Base):
    """Each line stagelog writes to stderr leaves in one write(2): a
    diagnostic reaches a pipe or the journal whole, and another process
    writing to the same one cannot tear it (stderr is unbuffered by
    default, and an escaped path goes out a character at a time)."""

    def setUp(self):
        super().setUp()
        if not shutil.which("strace"):
            self.skipTest("strace is not installed (./dev installs it)")
        # A container may forbid tracing: then say so, not fail on it.
        if subprocess.run(["strace", "-o", "/dev/null", "true"], capture_output=True).returncode != 0:
            self.skipTest("strace cannot trace here (ptrace is not allowed)")

    def stderr_writes(self, *args, code):
        out = os.path.join(self.tmp, "strace.out")
        argv = ["strace", "-f", "-qq", "-xx", "-s", "4096", "-o", out, "-e", "trace=write,writev",
                STAGELOG, "--db", self.db] + list(args)
        env = dict(self.env, ASAN_OPTIONS=(os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0").lstrip(":"))
        p = subprocess.run(argv, capture_output=True, env=env, timeout=120)
        self.assertEqual(p.returncode, code, p.stderr)
        writes = []
        with open(out) as f:
            for line in f:
                m = re.search(r'write\(2, "((?:\\x[0-9a-f]{2})*)"', line)
                if m:
                    writes.append(bytes.fromhex(m.group(1).replace("\\x", "")))
        # strace's own lines go to its -o file: stderr is stagelog's alone.
        self.assertEqual(b"".join(writes), p.stderr)
        return writes

    def test_failed_stage_line_whole(self):
        # A path that needs escaping, a label and a reason: the line of a
        # failed stage is several writes' worth of pieces.
        stage_id, path = self.make_failed(reason="cannot remove: a\tb: mount in the way")
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            writes = self.stderr_writes("recover", code=1)
        finally:
            os.close(fd)
        want = ("stagelog: failed %s gw %s: cannot remove: a\\tb: mount in the way\n" % (stage_id, path)).encode()
        self.assertIn(want, writes)
        for w in writes:
            self.assertTrue(w.endswith(b"\n") and w.count(b"\n") == 1, writes)

    def test_usage_error_whole(self):
        writes = self.stderr_writes("show", "bad\x01id", code=64)
        self.assertGreaterEqual(len(writes), 1)
        for w in writes:
            self.assertTrue(w.endswith(b"\n") and w.count(b"\n") == 1, writes)


class TestFailedIsLoud(Base):
    """A failed stage may still hold secrets: recover and check say so and
    exit 1 while one remains, whether or not a pass touched it."""

    def locked(self, path):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def test_recover_reports_untouched_failed_stage(self):
        stage_id, path = self.make_failed()
        # The lock is held, so no pass may touch the stage: it stays failed.
        fd = self.locked(path)
        try:
            doc = self.slj("recover", code=1)
            self.assertEqual(doc["failed"], [{"id": stage_id, "label": "gw", "path": path,
                                              "reason": "cannot remove: rootfs: mount in the way"}])
            self.assertEqual(doc["recovered"], [])
            p = self.sl("recover", code=1)
            # A failed stage is an error: on stderr (issue 16, point 5).
            self.assertIn("stagelog: failed %s gw %s: cannot remove: rootfs: mount in the way\n" % (stage_id, path),
                          p.stderr)
            self.assertNotIn("failed " + stage_id, p.stdout)
            self.assertEqual(p.stdout.splitlines()[-1][-8:], "1 failed")
            self.assertEqual(self.slj("recover", "--dry-run", code=1)["failed"][0]["id"], stage_id)
            self.sl("-q", "recover", code=1)
        finally:
            os.close(fd)
        self.assertTrue(os.path.isdir(path))

    def test_recover_elsewhere_reports_failed_stage(self):
        # A pass under another root examines nothing; the failed stage
        # under this one still makes it exit 1.
        stage_id, path = self.make_failed()
        other = os.path.join(self.shm, "other")
        doc = self.slj("recover", "--root", other, code=1)
        self.assertEqual(doc["examined"], 0)
        self.assertEqual([f["id"] for f in doc["failed"]], [stage_id])
        self.assertTrue(os.path.isdir(path))

    def test_dry_run_reports_stale_failed_stage(self):
        # Stale (its owner, the stagelog process itself, has exited) and
        # failed: a dry run would retry it, and it is still failed.
        p = subprocess.run(["sh", "-c", 'exec "$@" --owner $$', "sh", STAGELOG, "--db", self.db, "stage",
                            "--root", self.root, "--bundle", self.bundle, "--label", "gw"],
                           capture_output=True, text=True, env=self.env, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        stage_id, path = p.stdout.rstrip("\n").split("\t")
        db = sqlite3.connect(self.db)
        db.execute("UPDATE stages SET state = 7, reason = 'x' WHERE id = ?", (stage_id,))
        db.commit()
        db.close()
        doc = self.slj("recover", "--dry-run", code=1)
        self.assertEqual(doc["recovered"], [stage_id])
        self.assertEqual([f["id"] for f in doc["failed"]], [stage_id])
        self.assertTrue(os.path.isdir(path))

    def test_check_reports_failed_stages(self):
        stage_id, path = self.make_failed()
        other, other_path = self.stage(label="ok")
        doc = self.slj("check", "--root", self.root, code=1)
        self.assertEqual(doc["integrity"], "ok")
        self.assertEqual(doc["failed"], [{"id": stage_id, "label": "gw", "path": path,
                                          "reason": "cannot remove: rootfs: mount in the way"}])
        self.assertEqual(doc["orphans"], [])
        p = self.sl("check", code=1)
        self.assertIn("stagelog: failed %s gw %s: cannot remove: rootfs: mount in the way\n" % (stage_id, path),
                      p.stderr)
        self.assertNotIn(stage_id, p.stdout)
        self.assertNotIn(other, p.stdout + p.stderr)
        # --remove-orphans does not fix a failed stage: still exit 1.
        self.slj("check", "--root", self.root, "--remove-orphans", code=1)
        self.assertTrue(os.path.isdir(path))
        self.assertTrue(os.path.isdir(other_path))
        # Once dealt with by hand and forgotten, check is clean again.
        shutil.rmtree(path)
        self.sl("forget", stage_id)
        self.assertEqual(self.slj("check", "--root", self.root)["failed"], [])


METRIC_LINE_RE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*)?\})? '
    r'([-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|NaN|[-+]?Inf))( -?[0-9]+)?$')


def parse_prometheus(text):
    """A strict reader of the Prometheus text exposition format (0.0.4):
    every line a HELP, a TYPE or a sample; one TYPE per family, before its
    samples; a family's samples together. Returns {(name, labels): value}."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    samples, types, helps, seen_families, current = {}, {}, set(), [], None
    for line in text.splitlines():
        assert line.strip() == line and line, "stray whitespace or empty line: %r" % line
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in helps, "second HELP for " + name
            helps.add(name)
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            assert typ in ("counter", "gauge", "histogram", "summary", "untyped"), typ
            assert name not in types, "second TYPE for " + name
            assert name not in seen_families, "TYPE after samples of " + name
            types[name] = typ
            current = name
            continue
        assert not line.startswith("#"), "unknown comment: " + line
        m = METRIC_LINE_RE.match(line)
        assert m, "not a sample line: %r" % line
        name = m.group(1)
        assert name == current, "sample of %s outside its family %s" % (name, current)
        if name not in seen_families:
            seen_families.append(name)
        labels = tuple(sorted(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or "")))
        assert (name, labels) not in samples, "duplicate sample " + line
        samples[(name, labels)] = float(m.group(4))
    return samples


class TestMetrics(Base):
    def metrics(self, *args, code=0, **kw):
        p = self.sl("metrics", *args, code=code, **kw)
        promtool = shutil.which("promtool")
        if promtool and p.stdout:
            check = subprocess.run([promtool, "check", "metrics"], input=p.stdout, capture_output=True,
                                   text=True)
            self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        return p

    def test_missing_store_is_not_created(self):
        p = self.metrics()
        m = parse_prometheus(p.stdout)
        self.assertEqual(m[("stagelog_build_info", (("sqlite", sqlite3.sqlite_version), ("version", "0.1.0")))], 1)
        self.assertIn("# TYPE stagelog_build_info gauge\n", p.stdout)
        self.assertEqual(m[("stagelog_store_present", ())], 0)
        self.assertEqual(m[("stagelog_stages_failed", ())], 0)
        self.assertEqual(m[("stagelog_oldest_in_flight_age_seconds", ())], 0)
        self.assertNotIn(("stagelog_last_recover_timestamp_seconds", ()), m)
        self.assertIn("no store", p.stderr)
        self.assertEqual(self.sl("-q", "metrics").stderr, "")
        self.assertFalse(os.path.exists(os.path.dirname(self.db)))

    def test_stages_failed_and_last_recover(self):
        a, _ = self.stage(label="alpha")
        self.stage(label="alpha")
        b, path_b = self.stage(label="beta")
        c, _ = self.stage(label="gamma")
        self.sl("release", c)
        db = sqlite3.connect(self.db)
        db.execute("UPDATE stages SET state = 7, reason = 'x' WHERE id = ?", (b,))
        db.execute("UPDATE stages SET created_at = created_at - 3600000 WHERE id = ?", (a,))
        db.commit()
        db.close()
        m = parse_prometheus(self.metrics().stdout)
        self.assertEqual(m[("stagelog_store_present", ())], 1)
        self.assertEqual(m[("stagelog_stages_in_flight", (("label", "alpha"), ("state", "ready")))], 2)
        self.assertEqual(m[("stagelog_stages_in_flight", (("label", "beta"), ("state", "failed")))], 1)
        self.assertNotIn(("stagelog_stages_in_flight", (("label", "gamma"), ("state", "released"))), m)
        self.assertEqual(m[("stagelog_stages_failed", ())], 1)
        self.assertGreaterEqual(m[("stagelog_oldest_in_flight_age_seconds", ())], 3600)
        self.assertLess(m[("stagelog_oldest_in_flight_age_seconds", ())], 3700)
        self.assertNotIn(("stagelog_last_recover_timestamp_seconds", ()), m)

        # A pass that leaves a failed stage is recorded as failed.
        fd = os.open(path_b, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            before = time.time()
            self.sl("recover", code=1)
        finally:
            os.close(fd)
        m = parse_prometheus(self.metrics().stdout)
        self.assertGreaterEqual(m[("stagelog_last_recover_timestamp_seconds", ())], before - 1)
        self.assertLessEqual(m[("stagelog_last_recover_timestamp_seconds", ())], time.time() + 1)
        self.assertEqual(m[("stagelog_last_recover_success", ())], 0)
        self.assertEqual(m[("stagelog_last_recover_outcome", (("outcome", "failed"),))], 1)
        self.assertEqual(m[("stagelog_last_recover_outcome", (("outcome", "ok"),))], 0)
        # A dry run is not a pass.
        self.sl("recover", "--dry-run", code=None)
        m2 = parse_prometheus(self.metrics().stdout)
        self.assertEqual(m2[("stagelog_last_recover_timestamp_seconds", ())],
                         m[("stagelog_last_recover_timestamp_seconds", ())])
        # Dealt with by hand: the next pass is ok.
        shutil.rmtree(path_b)
        self.sl("forget", b)
        self.sl("recover")
        m = parse_prometheus(self.metrics().stdout)
        self.assertEqual(m[("stagelog_last_recover_success", ())], 1)
        self.assertEqual(m[("stagelog_last_recover_outcome", (("outcome", "ok"),))], 1)
        self.assertEqual(m[("stagelog_stages_failed", ())], 0)
        # A line that is not one recover writes (a number that does not
        # fit, a sign, a gap, another version) is no outcome at all: a
        # metric that is absent beats one that lies.
        for line in ("v1 99999999999999999999 ok 0 0", "v1 1796266469259 ok -1 0", "v1 1796266469259 ok 0  0",
                     "v1 +1796266469259 ok 0 0", "v2 1796266469259 ok 0 0", "v1 1796266469259 ok 0 18446744073709551616"):
            with self.subTest(line=line):
                with open(self.db + ".last-recover", "w") as f:
                    f.write(line.ljust(63) + "\n")
                m = parse_prometheus(self.metrics().stdout)
                self.assertNotIn(("stagelog_last_recover_timestamp_seconds", ()), m)
                self.assertNotIn(("stagelog_last_recover_success", ()), m)

    def test_output_is_atomic_and_readable(self):
        self.stage(label="alpha")
        out_dir = os.path.join(self.tmp, "textfile")
        os.mkdir(out_dir)
        out = os.path.join(out_dir, "stagelog.prom")
        with open(out, "w") as f:
            f.write("old\n")
        p = self.sl("metrics", "--output", out)
        self.assertEqual(p.stdout, "")
        self.assertEqual(os.listdir(out_dir), ["stagelog.prom"])
        self.assertEqual(stat.S_IMODE(os.stat(out).st_mode), 0o644)
        with open(out) as f:
            text = f.read()
        self.assertEqual(set(parse_prometheus(text)), set(parse_prometheus(self.sl("metrics").stdout)))
        p = self.sl("metrics", "--output", os.path.join(self.tmp, "nope", "x.prom"), code=66)
        self.one_line_error(p)
        self.assertIn("nope/x.prom", p.stderr)
        self.one_line_error(self.sl("metrics", "extra", code=64))

    def test_parser_rejects_bad_exposition(self):
        for bad in ("x 1", "# TYPE x gauge\nx{a=b} 1\n", "# TYPE x gauge\nx one\n",
                    "# TYPE x gauge\nx 1\n# TYPE x gauge\n", "# TYPE x gauge\nx 1\nx 2\n"):
            with self.assertRaises(AssertionError):
                parse_prometheus(bad)


class TestGc(Base):
    def test_durations(self):
        a, _ = self.stage()
        self.sl("release", a)
        self.assertEqual(self.sl("gc").stdout, "deleted 0 records\n")
        self.assertEqual(self.slj("gc", "--older-than", "7d"), {"deleted": 0})
        b, _ = self.stage()
        self.assertEqual(self.slj("gc", "--older-than", "0s"), {"deleted": 1})
        self.assertEqual([s["id"] for s in self.slj("list", "--all")], [b])
        for bad in ("5", "5w", "-1s", "1.5h", "h", "", "1 d", "99999999999999999999d", "9999999999999999d"):
            self.one_line_error(self.sl("gc", "--older-than", bad, code=64))


class TestCheck(Base):
    def test_orphans(self):
        stage_id, path = self.stage()
        orphan = self.make_orphan()
        p = self.sl("check", "--root", self.root, code=1)
        self.assertIn("orphan " + orphan, p.stdout.splitlines())
        self.assertNotIn(path, p.stdout)
        doc = self.slj("check", "--root", self.root, code=1)
        self.assertEqual(doc, {"integrity": "ok", "failed": [], "root_moved": [], "orphans": [orphan], "removed": []})
        doc = self.slj("check", "--root", self.root, "--remove-orphans", code=0)
        self.assertEqual(doc["removed"], [orphan])
        self.assertFalse(os.path.exists(orphan))
        self.assertTrue(os.path.isdir(path))
        doc = self.slj("check", "--root", self.root)
        self.assertEqual(doc, {"integrity": "ok", "failed": [], "root_moved": [], "orphans": [], "removed": []})

    def test_locked_orphan_is_kept(self):
        orphan = self.make_orphan()
        fd = os.open(orphan, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # A live lock: somebody is at work in it, never an orphan.
            doc = self.slj("check", "--root", self.root, "--remove-orphans", code=0)
            self.assertEqual(doc["orphans"], [])
            self.assertEqual(doc["removed"], [])
            self.assertTrue(os.path.isdir(os.path.join(orphan, "rootfs")))
        finally:
            os.close(fd)


class TestStore(Base):
    def test_corrupt_store(self):
        os.makedirs(os.path.dirname(self.db), mode=0o700)
        with open(self.db, "wb") as f:
            f.write(os.urandom(8192))
        with open(self.db, "rb") as f:
            before = f.read()
        self.one_line_error(self.sl("list", code=65))
        with open(self.db, "rb") as f:
            self.assertEqual(f.read(), before)

    def test_newer_schema(self):
        self.sl("gc")
        db = sqlite3.connect(self.db)
        db.execute("PRAGMA user_version=99")
        db.commit()
        db.close()
        self.one_line_error(self.sl("list", code=78))
        self.one_line_error(self.sl("stage", "--root", self.root, "--bundle", self.bundle, code=78))
        self.assert_root_empty()

    def test_store_env_and_modes(self):
        env = dict(self.env, STAGELOG_DB=self.db)
        self.sl("gc", db=False, env=env)
        self.assertEqual(stat.S_IMODE(os.stat(self.db).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(self.db)).st_mode), 0o700)



class TestStoreRace(Base):
    """Issue 9, point 6: processes that create and open a new store at once
    all succeed, and none calls it someone else's database."""

    ROUNDS = int(os.environ.get("STAGELOG_RACE_ROUNDS", "60"))

    def race(self, db, commands):
        procs = [subprocess.Popen([STAGELOG, "--db", db] + c, env=self.env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, errors="surrogateescape")
                 for c in commands]
        failed = []
        for c, p in zip(commands, procs):
            out, err = p.communicate(timeout=60)
            if p.returncode != 0:
                failed.append("%s exited %d: %s" % (c[0], p.returncode, err.strip()))
        return failed

    def test_concurrent_first_use(self):
        # Three creating commands and a listing on a missing store, then
        # three listings of a store whose creator has made the file but not
        # yet written it (an empty file): the moment the issue caught.
        failed = []
        for i in range(self.ROUNDS):
            db = os.path.join(self.tmp, "race%d" % i, "sub", "stagelog.db")
            failed += self.race(db, [["gc"], ["gc"], ["gc"], ["list"]])
            db = os.path.join(self.tmp, "empty%d" % i, "stagelog.db")
            os.makedirs(os.path.dirname(db), mode=0o700)
            os.close(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            failed += self.race(db, [["list"], ["list"], ["list"]])
        self.assertEqual(failed, [], "%d failures in %d rounds" % (len(failed), self.ROUNDS))



class TestStoreIsOurs(Base):
    """Issue 10, point 2: a store that another user could write is refused
    with exit 77 and a message naming the path and why, for every command
    that opens it."""

    def refused(self, what, where, commands=(["list"], ["gc"], ["recover"])):
        for c in commands:
            p = self.sl(*c, code=77)
            self.one_line_error(p)
            self.assertIn(what, p.stderr)
            self.assertIn(where, p.stderr)

    def setUp(self):
        super().setUp()
        self.sl("gc")
        self.dir = os.path.dirname(self.db)

    def test_symlink(self):
        real = os.path.join(self.tmp, "real.db")
        os.rename(self.db, real)
        os.symlink(real, self.db)
        self.refused("is a symlink", self.db, (["list"], ["gc"],
                     ["stage", "--root", self.root, "--bundle", self.bundle]))
        self.assert_root_empty()
        os.unlink(self.db)
        os.symlink(os.path.join(self.tmp, "nowhere.db"), self.db)
        self.refused("is a symlink", self.db)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "nowhere.db")))

    def test_writable_by_others(self):
        os.chmod(self.db, 0o666)
        self.refused("writable by group or others", self.db)
        os.chmod(self.db, 0o600)
        os.chmod(self.dir, 0o1777)
        self.refused("writable by group or others", self.dir)
        os.chmod(self.dir, 0o700)
        self.sl("list")

    @unittest.skipUnless(os.geteuid() == 0, "needs root to chown")
    def test_owned_by_another_user(self):
        with open(self.db, "rb") as f:
            before = f.read()
        os.chown(self.db, 65534, 65534)
        # Commands that write; root reads such a store read-only
        # (issue 16, point 4: tests/cli/test_inspect.py).
        writers = (["gc"], ["recover"], ["stage", "--root", self.root, "--bundle", self.bundle])
        self.refused("owned by another user", self.db, writers)
        with open(self.db, "rb") as f:
            self.assertEqual(f.read(), before)
        os.chown(self.db, 0, 0)
        os.chown(self.dir, 65534, 65534)
        self.refused("owned by another user", self.dir, writers)
        os.chown(self.dir, 0, 0)
        self.sl("list")



class TestReadOnlyCreatesNothing(Base):
    """Issue 10, point 3: commands that only read never create a store or a
    folder; on a missing store list and recover report nothing in flight,
    show exits 66 and check reports that there is no store (66)."""

    def setUp(self):
        super().setUp()
        self.top = os.path.join(self.tmp, "typo")
        self.db = os.path.join(self.top, "dir", "x.db")

    def assert_nothing_created(self):
        self.assertFalse(os.path.exists(self.top), os.listdir(self.tmp))

    def test_missing_store(self):
        p = self.sl("list")
        self.assertEqual(p.stdout.splitlines()[0].split()[0], "ID")
        self.assertEqual(len(p.stdout.splitlines()), 1)
        self.assertIn("no store", p.stderr)
        self.assertIn(self.db, p.stderr)
        self.assertEqual(self.slj("list"), [])
        self.assertEqual(self.slj("list", "--all"), [])
        self.assertEqual(self.sl("-q", "list").stderr, "")
        for args in (["recover", "--dry-run"], ["recover"]):
            doc = self.slj(*args)
            self.assertEqual(doc["examined"], 0)
            self.assertEqual(doc["recovered"], [])
            self.assertEqual(doc["failed"], [])
            self.assertEqual(doc["dry_run"], args[-1] == "--dry-run")
            self.assertEqual(self.sl("-q", *args).stderr, "")
        p = self.sl("show", "abcd1234", code=66)
        self.one_line_error(p)
        self.assertIn("no store", p.stderr)
        p = self.sl("check", "--root", self.root, code=66)
        self.one_line_error(p)
        self.assertIn("no store", p.stderr)
        self.sl("--json", "check", code=66)
        self.sl("recover", "--force", "abcd1234", code=64)
        self.assert_nothing_created()
        # A command that writes creates it; check --remove-orphans writes.
        self.sl("check", "--root", self.root, "--remove-orphans")
        self.assertTrue(os.path.isfile(self.db))

    def test_missing_default_store(self):
        # The default path (root: /var/lib/stagelog/stagelog.db) is
        # exercised through STAGELOG_DB pointing into a missing folder.
        env = dict(self.env, STAGELOG_DB=self.db)
        self.sl("list", db=False, env=env)
        self.sl("recover", "--dry-run", db=False, env=env)
        self.sl("show", "abcd", db=False, env=env, code=66)
        self.sl("check", db=False, env=env, code=66)
        self.assert_nothing_created()
        # And the real default: XDG_STATE_HOME for a user; for root
        # /var/lib/stagelog, tried only where it does not exist yet.
        if os.geteuid() != 0:
            env = dict(self.env, XDG_STATE_HOME=self.top)
            self.sl("list", db=False, env=env)
            self.assert_nothing_created()
        elif not os.path.lexists("/var/lib/stagelog"):
            try:
                self.sl("list", db=False)
                self.sl("recover", "--dry-run", db=False)
                self.assertFalse(os.path.lexists("/var/lib/stagelog"))
            finally:
                shutil.rmtree("/var/lib/stagelog", ignore_errors=True)

    def test_existing_store_is_read(self):
        stage_id, _ = self.stage()
        self.assertEqual([s["id"] for s in self.slj("list")], [stage_id])
        self.assertEqual(self.slj("show", stage_id)["id"], stage_id)
        self.assertEqual(self.slj("recover", "--dry-run")["live"], [stage_id])
        self.assertEqual(self.slj("check", "--root", self.root)["orphans"], [])
        self.sl("release", stage_id)

    def test_completion_creates_nothing(self):
        comp = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            "..", "..", "docs", "stagelog.bash-completion")
        if not shutil.which("bash") or not os.path.exists(comp):
            self.skipTest("bash or the completion script is missing")
        script = ('source "$1"; COMP_WORDS=(stagelog --db "$2" show ""); '
                  'COMP_CWORD=3; _stagelog; printf "%s\\n" "${COMPREPLY[@]}"')
        env = dict(self.env, PATH=os.path.dirname(os.path.abspath(STAGELOG)) + ":"
                   + self.env.get("PATH", "/usr/bin:/bin"))
        subprocess.run(["bash", "-c", script, "bash", comp, self.db], env=env,
                       capture_output=True, text=True, timeout=60, check=True)
        self.assert_nothing_created()
        env = dict(env, STAGELOG_DB=self.db)
        subprocess.run(["bash", "-c", 'source "$1"; COMP_WORDS=(stagelog release ""); '
                        'COMP_CWORD=2; _stagelog', "bash", comp], env=env,
                       capture_output=True, text=True, timeout=60, check=True)
        self.assert_nothing_created()



def unescape_token(token):
    r"""The bytes a text token stands for: the man page's escapes \\, \n,
    \t and \xNN read back; every other character is its UTF-8."""
    raw = token.encode("utf-8", "surrogateescape")
    out, i = bytearray(), 0
    while i < len(raw):
        if raw[i:i + 1] != b"\\":
            out.append(raw[i])
            i += 1
            continue
        c = raw[i + 1:i + 2]
        if c in (b"\\", b"n", b"t"):
            out += {b"\\": b"\\", b"n": b"\n", b"t": b"\t"}[c]
            i += 2
        elif c == b"x" and re.fullmatch(rb"[0-9a-f]{2}", raw[i + 2:i + 4]):
            out.append(int(raw[i + 2:i + 4], 16))
            i += 4
        else:
            raise ValueError("bad escape in %r" % token)
    return bytes(out)


def json_bytes(s):
    """The bytes a JSON string stands for (PEP 383 surrogateescape)."""
    return s.encode("utf-8", "surrogateescape")


class TestEncoding(Base):
    r"""Output that names no other bytes than its own: JSON with \udcXX for
    each byte that is not UTF-8, text with one token per path."""

    # Every kind of byte: controls, DEL, quote, backslash, a literal "\xff",
    # valid UTF-8 (é, NBSP, U+2028, a C1 control), and invalid UTF-8 (a
    # lone byte, a bad continuation, an overlong form, a surrogate, a code
    # point above U+10FFFF).
    ODD = (b" \x01\x7f\"\\x41\\xff\t\xc3\xa9\xc2\xa0\xe2\x80\xa8\xc2\x85"
           b"\xff\xc3(\xc0\xaf\xed\xa0\x80\xf4\x90\x80\x80")

    def stage_json(self, root, **kw):
        p = self.sl("--json", "stage", "--root", os.fsdecode(root), "--bundle", self.bundle, **kw)
        # Valid UTF-8 whatever the path holds.
        p.stdout.encode("utf-8", "surrogateescape").decode("utf-8")
        return json.loads(p.stdout)

    def test_json_bytes_never_collide(self):
        base = self.shm.encode()
        literal, byte = base + b"/r\\xff", base + b"/r\xff"
        a, b = self.stage_json(literal), self.stage_json(byte)
        self.assertNotEqual(a["path"], b["path"])
        for doc, root in ((a, literal), (b, byte)):
            want = root + b"/stage-" + doc["id"].encode()
            self.assertEqual(json_bytes(doc["path"]), want)
            shown = self.slj("show", doc["id"])
            self.assertEqual(json_bytes(shown["root"]), root)
            self.assertEqual(json_bytes(shown["path"]), want)
            self.assertEqual(json_bytes(shown["entries"][0]["path"]), b"stage-" + doc["id"].encode())
        listed = {d["id"]: d for d in self.slj("list")}
        self.assertEqual(json_bytes(listed[a["id"]]["root"]), literal)
        self.assertEqual(json_bytes(listed[b["id"]]["root"]), byte)
        # As the document says it: \\ for the backslash, \udcff for the byte.
        text = self.sl("--json", "list").stdout
        self.assertIn('r\\\\xff', text)
        self.assertIn('r\\udcff', text)
        p = self.sl("--json", "release", b["id"])
        self.assertEqual(json_bytes(json.loads(p.stdout)["path"]), byte + b"/stage-" + b["id"].encode())

    def test_json_every_kind_of_byte(self):
        root = self.shm.encode() + b"/j" + self.ODD
        doc = self.stage_json(root)
        self.assertEqual(json_bytes(doc["path"]), root + b"/stage-" + doc["id"].encode())
        self.assertEqual(json_bytes(self.slj("show", doc["id"])["root"]), root)
        # An entry's path too (relative to the root, from the bundle).
        os.mkdir(os.path.join(self.bundle.encode(), b"rootfs", b"e" + self.ODD))
        doc = self.stage_json(self.root.encode())
        paths = [json_bytes(e["path"]) for e in self.slj("show", doc["id"])["entries"]]
        self.assertIn(b"stage-%s/rootfs/e%s" % (doc["id"].encode(), self.ODD), paths)

    def test_text_one_token_per_cell(self):
        root = self.shm.encode() + b"/t x\ny" + self.ODD
        doc = self.stage_json(root)
        path = root + b"/stage-" + doc["id"].encode()
        lines = self.sl("list").stdout.split("\n")
        self.assertEqual(lines[-1], "")
        self.assertEqual(len(lines), 3, lines)
        cells = lines[1].split()
        self.assertEqual(len(cells), 8, lines[1])
        self.assertEqual(len(lines[0].split()), 8)
        self.assertEqual(cells[0], doc["id"][:12])
        self.assertEqual(unescape_token(cells[7]), path)
        # The same token in show's lines and in release's.
        text = self.sl("show", doc["id"]).stdout.split("\n")
        self.assertEqual(unescape_token(next(t for t in text if t.startswith("root: "))[6:]), root)
        self.assertEqual(unescape_token(next(t for t in text if t.startswith("path: "))[6:]), path)
        released = self.sl("release", doc["id"]).stdout
        self.assertEqual(released.count("\n"), 1)
        words = released.split()
        self.assertEqual(words[:3], ["released", doc["id"], "stage"])
        self.assertEqual(len(words), 4, released)
        self.assertEqual(unescape_token(words[3]), path)

    def test_text_escape_round_trip(self):
        # Each byte value alone in a file name, and the odd mix: what the
        # table shows reads back to the name, and has no whitespace.
        names = [bytes([b]) for b in range(1, 256) if b != ord("/")] + [self.ODD]
        os.mkdir(os.path.join(self.bundle.encode(), b"rootfs", b"all"))
        for i, name in enumerate(names):
            with open(os.path.join(self.bundle.encode(), b"rootfs", b"all", b"%d-" % i + name), "w"):
                pass
        stage_id, _ = self.stage()
        rows = self.sl("show", stage_id).stdout.split("\n")
        shown = set()
        for row in rows[rows.index("") + 2:-1]:
            cells = row.split()
            self.assertEqual(len(cells), 4, row)
            shown.add(unescape_token(cells[3]))
        for i, name in enumerate(names):
            self.assertIn(b"stage-%s/rootfs/all/%d-%s" % (stage_id.encode(), i, name), shown)
        self.assertEqual(unescape_token(r"a\\b\x20\n\t\xff"), b"a\\b \n\t\xff")


class TestStorePathExits(Base):
    """Every condition of the store's path maps to the contract's exit
    codes; none exits 70, which is for bugs."""

    def test_bad_store_paths(self):
        loop = os.path.join(self.tmp, "loop")
        os.symlink(loop + "2", loop)
        os.symlink(loop, loop + "2")
        afile = os.path.join(self.tmp, "afile")
        open(afile, "w").close()
        os.chmod(afile, 0o600)
        cases = [
            (os.path.join(loop, "x.db"), 64),
            (os.path.join(self.tmp, "a" * 300, "x.db"), 64),
            ("/" + "b/" * 3000 + "x.db", 64),
            (os.path.join(afile, "x.db"), 66),
            (self.bundle, 73),
        ]
        for db, want in cases:
            for cmd in (["gc"], ["list"], ["show", "abcd"]):
                p = self.sl("--db", db, *cmd, db=False, code=None)
                self.assertEqual(p.returncode, want, "%s on %.60s: %s" % (cmd[0], db, p.stderr))
                self.one_line_error(p)
        env = dict(self.env, STAGELOG_DB="/" + "c" * 5000)
        self.one_line_error(self.sl("list", db=False, env=env, code=64))


class TestSyncCounts(Base):
    """What the gateway's start and monitoring cost the disk, counted with
    strace (counts do not depend on machine noise; docs/performance.md,
    "Syncs and commits"): a stage syncs the store once (its intent) in at
    most 3 commits; a release syncs nothing in at most 2 commits, for 10 or
    10,000 paths; a recovery of k stale stages syncs at most 1 + ceil(k/256)
    times; one that finds nothing syncs nothing; and the read-only commands
    neither sync nor write the store (the database and its WAL; SQLite
    rebuilds the -shm index a process opens first, which holds no record).
    A disk sync is one of any file outside the tmpfs staging root. Every
    count is taken below the WAL's bound (64 frames), where no checkpoint
    runs; the checkpoint's own cost is counted on its own."""

    SYNCS = ("fsync", "fdatasync", "syncfs", "sync_file_range")

    def setUp(self):
        super().setUp()
        if not shutil.which("strace"):
            self.skipTest("strace is not installed (./dev installs it)")

    @staticmethod
    def _unhex(line):
        # -xx prints the paths of -y in hex too.
        return re.sub(r"<((?:\\x[0-9a-f]{2})+)>",
                      lambda m: "<%s>" % bytes.fromhex(m.group(1).replace("\\x", "")).decode(errors="replace"),
                      line)

    def traced(self, *args, code=0):
        out = os.path.join(self.tmp, "strace.out")
        argv = ["strace", "-f", "-qq", "-y", "-xx", "-s", "8", "-o", out,
                "-e", "trace=fsync,fdatasync,syncfs,sync_file_range,write,pwrite64,writev,pwritev,ftruncate",
                STAGELOG, "--db", self.db] + list(args)
        # LeakSanitizer cannot run under a tracer (it ptraces itself).
        env = dict(self.env, ASAN_OPTIONS=(os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0").lstrip(":"))
        p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
        self.assertEqual(p.returncode, code, p.stderr)
        with open(out) as f:
            calls = [self._unhex(l).split(None, 1)[-1] for l in f.read().splitlines() if "(" in l]
        syncs = [c for c in calls if c.startswith(tuple(s + "(" for s in self.SYNCS))]
        disk_syncs = [c for c in syncs if "<%s" % self.shm not in c]
        store_writes = [c for c in calls if c not in syncs
                        and ("<%s>" % self.db in c or "<%s-wal>" % self.db in c)]
        # A commit is a WAL frame whose header (the 24-byte write before
        # each page) gives the database's size: non-zero only on the last
        # frame of a transaction.
        commits = 0
        for c in calls:
            m = re.match(r'pwrite64\(\d+<%s-wal>, "((?:\\x[0-9a-f]{2}){8})"\.*, 24, ' % re.escape(self.db), c)
            if m and m.group(1)[16:] != "\\x00" * 4:
                commits += 1
        self.last_stdout = p.stdout
        self.last_calls = calls
        return disk_syncs, store_writes, commits

    def wal_frames(self):
        """The frames since the WAL last restarted: those whose salts match
        its header's (what a process opening the store reads)."""
        with open(self.db + "-wal", "rb") as f:
            data = f.read()
        if len(data) < 32:
            return 0
        page = struct.unpack(">I", data[8:12])[0]
        salts = data[16:24]
        n, off = 0, 32
        while off + 24 + page <= len(data) and data[off + 8:off + 16] == salts:
            n += 1
            off += 24 + page
        return n

    def below_bound(self):
        """Checkpoints the WAL from outside, so that what follows runs
        below the bound whatever came before."""
        if not os.path.exists(self.db):
            done, _ = self.stage()
            self.sl("release", done)
        db = sqlite3.connect(self.db)
        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        db.close()
        # One stage and release restart the WAL from its start.
        done, _ = self.stage()
        self.sl("release", done)

    def big_bundle(self, n):
        pkg = os.path.join(self.shm, "big")
        make_bundle(pkg)
        for d in range(n // 100):
            os.mkdir(os.path.join(pkg, "rootfs", "d%d" % d))
            for f in range(100):
                with open(os.path.join(pkg, "rootfs", "d%d" % d, "f%d" % f), "w") as fh:
                    fh.write("x")
        return pkg

    def stale_stages(self, k):
        sleeper = subprocess.Popen(["sleep", "600"])
        try:
            for _ in range(k):
                self.stage("--owner", str(sleeper.pid))
        finally:
            sleeper.kill()
            sleeper.wait()

    def test_stage_and_release(self):
        done, _ = self.stage()
        self.sl("release", done)
        self.below_bound()
        syncs, _, commits = self.traced("stage", "--root", self.root, "--bundle", self.bundle)
        self.assertEqual(len(syncs), 1, syncs)
        self.assertIn("-wal>", syncs[0])
        self.assertLessEqual(commits, 3)
        self.assertGreaterEqual(commits, 2)  # the intent, then the rest
        stage_id = self.last_stdout.split("\t")[0]
        syncs, _, commits = self.traced("release", stage_id)
        self.assertEqual(syncs, [])
        self.assertLessEqual(commits, 2)
        self.assertGreaterEqual(commits, 1)

    def test_release_of_10000_paths(self):
        stage_id, _ = self.stage(bundle=self.big_bundle(10000))
        self.assertLess(self.wal_frames(), 64)
        syncs, _, commits = self.traced("release", stage_id)
        self.assertEqual(syncs, [])
        self.assertLessEqual(commits, 2)

    def test_recover(self):
        for k in (1, 3):
            with self.subTest(k=k):
                self.below_bound()
                self.stale_stages(k)
                self.assertLess(self.wal_frames(), 64 - 2 * k)
                syncs, _, commits = self.traced("recover")
                self.assertLessEqual(len(syncs), 1 + (k + 255) // 256, syncs)
                self.assertIn("%d recovered" % k, self.last_stdout)
                # One claim for the batch, one end per stage.
                self.assertLessEqual(commits, 1 + k)

    def test_the_wal_stays_bounded(self):
        """A writer that leaves the WAL past its bound checkpoints on its
        way out, and the next process reads a short WAL again."""
        for _ in range(6):
            done, _ = self.stage()
            self.sl("release", done)
        self.assertLess(self.wal_frames(), 64 + 30)
        stage_id, _ = self.stage(bundle=self.big_bundle(2000))
        # Staging 2,000 paths wrote past the bound; it checkpointed and
        # restarted the WAL on its way out.
        self.assertLess(self.wal_frames(), 64)
        self.sl("release", stage_id)

    def test_read_only_commands(self):
        done, _ = self.stage()
        self.sl("release", done)
        self.sl("recover")
        # Frames in the WAL again, and a live stage recovery leaves alone.
        stage_id, _ = self.stage()
        for args in (["recover"], ["list"], ["list", "--all"], ["show", stage_id], ["check"], ["metrics"],
                     ["--json", "list"], ["recover", "--dry-run"]):
            with self.subTest(args=args):
                syncs, writes, commits = self.traced(*args)
                self.assertEqual(syncs, [], args)
                if args != ["recover"]:
                    self.assertEqual(writes, [], args)
                    self.assertEqual(commits, 0, args)

    def test_after_another_sqlite(self):
        """Another program's SQLite (an operator's sqlite3 shell) that closes
        the store last checkpoints it and deletes its WAL; the next process
        creates an empty one. Reading commands still sync nothing, and the
        first writer syncs the store's folder once, before its first frame
        (the WAL's name must be durable before anything in it counts)."""
        done, _ = self.stage()
        self.sl("release", done)
        for _ in range(2):
            db = sqlite3.connect(self.db)
            db.execute("SELECT count(*) FROM stages").fetchall()
            db.close()
            self.assertFalse(os.path.exists(self.db + "-wal"))
            for args in (["list"], ["recover"], ["check"], ["metrics"], ["list", "--all"]):
                with self.subTest(args=args):
                    syncs, writes, commits = self.traced(*args)
                    self.assertEqual(syncs, [], args)
                    self.assertEqual(commits, 0, args)
            self.assertEqual(os.path.getsize(self.db + "-wal"), 0)
            syncs, _, commits = self.traced("stage", "--root", self.root, "--bundle", self.bundle)
            folder = "<%s>" % os.path.dirname(self.db)
            self.assertEqual(len([c for c in syncs if folder in c]), 1, syncs)
            first_sync = next(i for i, c in enumerate(self.last_calls) if folder in c)
            first_frame = next(i for i, c in enumerate(self.last_calls) if "<%s-wal>" % self.db in c)
            self.assertLess(first_sync, first_frame, self.last_calls[:8])
            # The folder, the new WAL's header (SQLite syncs a new
            # header), the intent.
            self.assertLessEqual(len(syncs), 3, syncs)
            self.sl("release", self.last_stdout.split("\t")[0])


if __name__ == "__main__":
    unittest.main(verbosity=2)
