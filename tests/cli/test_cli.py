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
import subprocess
import sys
import tempfile
import time
import unittest

STAGELOG = os.environ.get("STAGELOG", "stagelog")
COMMANDS = ["stage", "run", "release", "forget", "publish", "recover",
            "list", "show", "gc", "check"]
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

    def tearDown(self):
        for d in (self.tmp, self.shm):
            shutil.rmtree(d, ignore_errors=True)

    def sl(self, *args, code=0, env=None, db=True, timeout=60):
        """Runs stagelog with --db and checks the exit code (None: any)."""
        argv = [STAGELOG] + (["--db", self.db] if db else []) + list(args)
        p = subprocess.run(argv, capture_output=True, text=True, env=env or self.env,
                           timeout=timeout, errors="surrogateescape")
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
        self.assertEqual(self.sl("--version", db=False).stdout, "stagelog 0.1.0\n")

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
        self.assertEqual(p.stderr, "stagelog: unknown command 'frobnicate'\n")
        self.assertEqual(p.stdout, "")
        p = self.sl(code=64)
        self.one_line_error(p)

    def test_unknown_option(self):
        p = self.sl("stage", "--foo", code=64)
        self.assertEqual(p.stderr, "stagelog: stage: unrecognized option '--foo'\n")
        p = self.sl("--foo", "list", code=64)
        self.assertEqual(p.stderr, "stagelog: unrecognized option '--foo'\n")
        p = self.sl("list", "-x", code=64)
        self.assertEqual(p.stderr, "stagelog: list: unrecognized option '-x'\n")
        p = self.sl("stage", "--bundle", code=64)
        self.assertEqual(p.stderr, "stagelog: stage: option '--bundle' requires an argument\n")
        self.one_line_error(self.sl("stage", "--root", self.root, "--bundle", self.bundle, "--owner", "x1",
                                    code=64))
        self.one_line_error(self.sl("run", "--root", self.root, "--bundle", self.bundle, "--owner", "1",
                                    "--", "true", code=64))
        for args in (["show"], ["show", "a", "b"], ["publish", "abcd"], ["list", "extra"],
                     ["stage", "--root", self.root], ["run", "--root", self.root, "--bundle", self.bundle]):
            self.one_line_error(self.sl(*args, code=64))
        self.assertFalse(os.path.exists(self.root))


    def test_quiet_verbose_keep_json_and_codes(self):
        stage_id, _ = self.stage()
        plain = self.sl("--json", "list").stdout
        self.assertEqual(self.sl("-q", "--json", "list").stdout, plain)
        p = self.sl("-v", "--json", "list")
        self.assertEqual(p.stdout, plain)
        self.assertNotEqual(p.stderr, "")
        self.assertEqual(self.sl("-q", "show", "zzzz", code=64).stdout, "")
        # -q means less on stderr (INTERFACE.md); stdout stays the same.
        p = self.sl("-q", "release", stage_id)
        self.assertEqual(p.stdout, "released %s\n" % stage_id)
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
        self.assertEqual(p.stdout, "ID  LABEL  STATE  OWNER  AGE  ENTRIES  PATH\n")

    def test_list_columns_and_json(self):
        a, path_a = self.stage(label="alpha")
        b, path_b = self.stage(label="beta")
        self.sl("release", b)
        lines = self.sl("list").stdout.splitlines()
        self.assertEqual(lines[0].split(), ["ID", "LABEL", "STATE", "OWNER", "AGE", "ENTRIES", "PATH"])
        self.assertEqual(len(lines), 2)
        cols = lines[1].split()
        self.assertEqual(cols[0], a[:12])
        self.assertEqual(cols[1:3], ["alpha", "ready"])
        self.assertEqual(cols[3], str(os.getpid()))
        self.assertEqual(cols[4], "live")
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
        # Bytes that are not UTF-8 become the text \xNN; the rest is kept.
        self.assertIn(top + "/rootfs/odd/bad\\xffname\nx", paths)
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
        return stages[0]

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
        self.assertIn("stale", self.sl("list").stdout.splitlines()[1].split())

        dry = self.slj("recover", "--dry-run")
        self.assertEqual(dry["dry_run"], True)
        self.assertEqual(dry["recovered"], [stage_id])
        self.assertEqual(dry["live"], [])
        self.assertEqual(dry["failed"], [])
        self.assertGreaterEqual(dry["examined"], 1)
        self.assertTrue(os.path.isdir(st["path"]))
        self.assertEqual(self.state_of(stage_id), "ready")

        p = self.sl("recover")
        self.assertIn("recovered " + stage_id, p.stdout)
        self.assertFalse(os.path.exists(st["path"]))
        self.assertEqual(self.state_of(stage_id), "recovered")
        self.assert_root_empty()
        again = self.slj("recover")
        self.assertEqual(again["recovered"], [])
        self.assertEqual(again["dry_run"], False)

    def test_text_summary_and_forget(self):
        st = self.start_orphaned_run()
        p = self.sl("recover", "--dry-run")
        self.assertIn("would recover " + st["id"], p.stdout)
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
            self.assertIn("failed " + stage_id + ": ", self.sl("recover", "--force", stage_id, code=1).stdout)
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
        self.assertIn("live " + stage_id, self.sl("recover").stdout)
        doc = self.slj("recover", "--force", stage_id[:8])
        self.assertEqual(doc["recovered"], [stage_id])
        self.assertFalse(os.path.exists(path))
        self.one_line_error(self.sl("recover", "--force", "zz", code=64))


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
    def make_orphan(self):
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        os.chmod(self.root, 0o700)
        orphan = os.path.join(self.root, "stage-" + os.urandom(16).hex())
        os.mkdir(orphan, 0o700)
        os.mkdir(os.path.join(orphan, "rootfs"))
        with open(os.path.join(orphan, "rootfs", "f"), "w") as f:
            f.write("x")
        return orphan

    def test_orphans(self):
        stage_id, path = self.stage()
        orphan = self.make_orphan()
        p = self.sl("check", "--root", self.root, code=1)
        self.assertIn("orphan " + orphan, p.stdout.splitlines())
        self.assertNotIn(path, p.stdout)
        doc = self.slj("check", "--root", self.root, code=1)
        self.assertEqual(doc, {"integrity": "ok", "orphans": [orphan], "removed": []})
        doc = self.slj("check", "--root", self.root, "--remove-orphans", code=0)
        self.assertEqual(doc["removed"], [orphan])
        self.assertFalse(os.path.exists(orphan))
        self.assertTrue(os.path.isdir(path))
        doc = self.slj("check", "--root", self.root)
        self.assertEqual(doc, {"integrity": "ok", "orphans": [], "removed": []})

    def test_locked_orphan_is_kept(self):
        orphan = self.make_orphan()
        fd = os.open(orphan, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            doc = self.slj("check", "--root", self.root, "--remove-orphans", code=1)
            self.assertEqual(doc["orphans"], [orphan])
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
        self.sl("list")
        db = sqlite3.connect(self.db)
        db.execute("PRAGMA user_version=99")
        db.commit()
        db.close()
        self.one_line_error(self.sl("list", code=78))
        self.one_line_error(self.sl("stage", "--root", self.root, "--bundle", self.bundle, code=78))
        self.assert_root_empty()

    def test_store_env_and_modes(self):
        env = dict(self.env, STAGELOG_DB=self.db)
        self.sl("list", db=False, env=env)
        self.assertEqual(stat.S_IMODE(os.stat(self.db).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(self.db)).st_mode), 0o700)


if __name__ == "__main__":
    unittest.main(verbosity=2)
