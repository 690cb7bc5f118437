#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Resource limits (issue 15): a packaged config.json or env file over its
size limit, or nested too deep, is refused with 65 before anything exists,
and a deep but legal one is staged compactly; `ulimit -f` (RLIMIT_FSIZE)
and `ulimit -n` (RLIMIT_NOFILE) end `stage` and `run` with a documented code
and nothing on disk, never with a stage left behind.

Each test checks the exit code, what is left under the staging root (on
tmpfs), the records, and that no output holds the canary."""

import json
import os
import resource
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_cli import STAGELOG, CANARY, Base, make_bundle  # noqa: E402

MIB = 1 << 20
# The limits of docs/stagelog.1, LIMITS.
CONFIG_MAX = 1 * MIB
ENV_FILE_MAX = 1 * MIB
CONFIG_MAX_DEPTH = 64


def deep_config(depth, size):
    """A legal config.json nested depth levels deep (the top-level object
    is level 1), padded to about size bytes with members at the bottom."""
    head = '{"process":{"args":["sh"],"env":["T=%s"]}' % CANARY + ',"n":{"x":0' * (depth - 1)
    members = max(0, (size - len(head) - depth) // 6)
    return head + ',"k":1' * members + "}" * depth


class Limits(Base):
    def assert_no_canary(self, p):
        self.assertNotIn(CANARY, p.stdout + p.stderr)

    def assert_nothing_left(self):
        """Nothing under the root, and no record in flight (failed
        included): a failed command's stage, if it began, is aborted."""
        self.assert_root_empty()
        if os.path.exists(self.db):
            self.assertEqual(self.slj("list"), [])
            for s in self.slj("list", "--all"):
                self.assertIn(s["state"], ("aborted", "released"), s)

    def commands(self, bundle, extra=()):
        yield "stage", ["stage", "--root", self.root, "--bundle", bundle] + list(extra)
        yield "run", (["run", "--root", self.root, "--bundle", bundle] + list(extra)
                      + ["--", "sh", "-c", "touch %s/started" % self.tmp])


class TestInputLimits(Limits):
    """Item 10: the size and depth limits of config.json and env files, and
    a staged config.json that stays within a constant factor of its source."""

    def refused(self, bundle, want, extra=()):
        for cmd, argv in self.commands(bundle, extra):
            with self.subTest(cmd=cmd):
                p = self.sl(*argv, code=65)
                self.one_line_error(p)
                for w in want:
                    self.assertIn(w, p.stderr)
                self.assert_no_canary(p)
                self.assert_nothing_left()
                self.assertFalse(os.path.exists(os.path.join(self.tmp, "started")))
                # Refused before the stage began: not even a record.
                if os.path.exists(self.db):
                    self.assertEqual(self.slj("list", "--all"), [])

    def test_config_over_the_size_limit(self):
        bundle = make_bundle(os.path.join(self.tmp, "big"), config=False)
        doc = '{"process":{},"pad":"%s' % CANARY
        with open(os.path.join(bundle, "config.json"), "w") as f:
            f.write(doc + "x" * (CONFIG_MAX + 1 - len(doc) - 2) + '"}')
        self.assertEqual(os.path.getsize(os.path.join(bundle, "config.json")), CONFIG_MAX + 1)
        self.refused(bundle, [bundle + "/config.json", "larger than the limit of 1 MiB"])

    def test_config_at_the_size_limit(self):
        bundle = make_bundle(os.path.join(self.tmp, "max"), config=False)
        doc = '{"process":{},"pad":"'
        with open(os.path.join(bundle, "config.json"), "w") as f:
            f.write(doc + "x" * (CONFIG_MAX - len(doc) - 2) + '"}')
        self.assertEqual(os.path.getsize(os.path.join(bundle, "config.json")), CONFIG_MAX)
        stage_id, _ = self.stage(bundle=bundle)
        self.sl("release", stage_id)

    def test_config_too_deep(self):
        bundle = make_bundle(os.path.join(self.tmp, "deep"),
                             config=deep_config(CONFIG_MAX_DEPTH + 1, 1000))
        self.refused(bundle, ["packaged config", "nested deeper than the limit of 64 levels"])

    def test_env_file_over_the_size_limit(self):
        env_file = os.path.join(self.tmp, "big.env")
        with open(env_file, "w") as f:
            f.write("T=%s\n" % CANARY + "A=1\n" * (ENV_FILE_MAX // 4))
        self.refused(self.bundle, ["--env-file: argument #", "larger than the limit of 1 MiB"], ["--env-file", env_file])

    def test_deep_legal_config_is_staged_compactly(self):
        """cJSON's formatted print indented every line by its depth: this
        512 KiB config came out at 6 MB (issue 15's, at 173 MB); printed
        compactly it is staged at about its own size."""
        config = deep_config(CONFIG_MAX_DEPTH, 512 * 1024)
        bundle = make_bundle(os.path.join(self.tmp, "legal"), config=config)
        stage_id, path = self.stage("--env", "TOKEN=x", bundle=bundle)
        staged = os.path.getsize(os.path.join(path, "config.json"))
        print("limits: a %d-byte config nested %d levels deep was staged as %d bytes"
              % (len(config), CONFIG_MAX_DEPTH, staged), file=sys.stderr)
        self.assertLessEqual(staged, len(config) + 256)
        with open(os.path.join(path, "config.json")) as f:
            self.assertEqual(json.load(f)["process"]["env"], ["TOKEN=x"])
        self.sl("release", stage_id)
        self.assert_root_empty()


class TestFileSizeLimit(Limits):
    """Item 7: under `ulimit -f` smaller than a rootfs file or than
    config.json, a write fails with EFBIG instead of SIGXFSZ killing
    stagelog mid-copy: exit 74, nothing under the root, no record left in
    flight, no secret in the output. The runtime gets SIGXFSZ's default
    action back."""

    def sl_fsize(self, argv, limit, code):
        def preexec():
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        p = subprocess.run([STAGELOG, "--db", self.db] + argv, capture_output=True, text=True, env=self.env,
                           timeout=60, preexec_fn=preexec, errors="surrogateescape")
        self.assertEqual(p.returncode, code, "%r under ulimit -f %d exited %d\nstdout: %s\nstderr: %s"
                         % (argv, limit, p.returncode, p.stdout, p.stderr))
        return p

    def check(self, bundle, limit, want):
        # The store exists before the limit applies, as on a real host.
        self.stage_and_release()
        for cmd, argv in self.commands(bundle, ["--env", "TOKEN=" + CANARY]):
            with self.subTest(cmd=cmd, limit=limit):
                p = self.sl_fsize(argv, limit, 74)
                self.one_line_error(p)
                self.assertIn(want, p.stderr)
                self.assertIn("File too large", p.stderr)
                self.assert_no_canary(p)
                self.assert_nothing_left()
                self.assertFalse(os.path.exists(os.path.join(self.tmp, "started")))

    def stage_and_release(self):
        stage_id, _ = self.stage()
        self.sl("release", stage_id)

    def test_limit_below_a_rootfs_file(self):
        bundle = make_bundle(os.path.join(self.tmp, "bigfile"))
        with open(os.path.join(bundle, "rootfs", "big.bin"), "wb") as f:
            f.write(b"\0" * (2 * MIB))
        self.check(bundle, MIB, "rootfs/big.bin")

    def test_limit_below_config_json(self):
        config = {"process": {"args": ["/bin/true"], "env": ["PACKAGED=%s" % CANARY]},
                  "annotations": {"pad": "p" * (900 * 1024)}}
        bundle = make_bundle(os.path.join(self.tmp, "bigconfig"), config=config)
        self.check(bundle, 512 * 1024, "config.json")

    def test_runtime_gets_sigxfsz_back(self):
        """An ignored signal stays ignored across exec: run must give the
        runtime SIGXFSZ's (and SIGPIPE's) default action back."""
        out = os.path.join(self.tmp, "status")
        self.sl("run", "--root", self.root, "--bundle", self.bundle, "--",
                "sh", "-c", "grep SigIgn /proc/$$/status > %s" % out)
        with open(out) as f:
            ignored = int(f.read().split()[1], 16)
        self.assertFalse(ignored & (1 << (25 - 1)), "SIGXFSZ ignored in the runtime: %x" % ignored)
        self.assertFalse(ignored & (1 << (13 - 1)), "SIGPIPE ignored in the runtime: %x" % ignored)
        # And so a runtime that writes past the limit dies of it, as
        # without stagelog: 128 + SIGXFSZ.
        big = os.path.join(self.tmp, "big")
        self.sl_fsize(["run", "--root", self.root, "--bundle", self.bundle, "--", "sh", "-c",
                       "exec dd if=/dev/zero of=%s bs=1M count=2" % big], MIB, 128 + 25)
        self.assert_nothing_left()


class TestDescriptorLimit(Limits):
    """Item 8: under `ulimit -n` too low for a stage to be undone, stage
    and run fail before anything exists (75, nothing on disk, no record),
    instead of creating a top directory their abort then cannot open (a
    `failed` record and ROOT/stage-ID left behind, as at 8 to 12). Above
    it, they succeed fully. A soft limit below what is needed is raised
    toward the hard one, and the runtime gets its own soft limit back."""

    def sl_nofile(self, argv, soft, hard):
        def preexec():
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        return subprocess.run([STAGELOG, "--db", self.db] + argv, capture_output=True, text=True,
                              env=self.env, timeout=60, preexec_fn=preexec, errors="surrogateescape")

    def sweep(self, bundle, limits, refused_before_record):
        """Runs stage and run under each soft = hard limit in limits.
        refused_before_record: a 75 must leave no new record at all (the
        preflight refused); else an aborted one may remain (a copy that ran
        out of descriptors and was undone)."""
        # The store exists, as on a real host (a first stage creates it).
        stage_id, _ = self.stage()
        self.sl("release", stage_id)
        outcome = {}
        for cmd, argv in self.commands(bundle, ["--env", "TOKEN=" + CANARY]):
            for n in limits:
                with self.subTest(cmd=cmd, n=n):
                    started = os.path.join(self.tmp, "started")
                    if os.path.exists(started):
                        os.unlink(started)
                    before = self.slj("list", "--all")
                    p = self.sl_nofile(argv, n, n)
                    self.assertIn(p.returncode, (0, 75), "%s under ulimit -n %d: %d\n%s" % (cmd, n, p.returncode,
                                                                                       p.stderr))
                    self.assert_no_canary(p)
                    outcome.setdefault(cmd, []).append(p.returncode)
                    if p.returncode == 75:
                        self.one_line_error(p)
                        self.assert_nothing_left()
                        self.assertFalse(os.path.exists(started))
                        if refused_before_record:
                            self.assertEqual(self.slj("list", "--all"), before, p.stderr)
                    elif cmd == "stage":
                        new_id = p.stdout.split("\t")[0]
                        self.assertEqual(self.state_of(new_id), "ready")
                        self.sl("release", new_id)
                        self.assert_nothing_left()
                    else:
                        self.assertTrue(os.path.exists(started))
                        self.assert_nothing_left()
        for cmd, codes in outcome.items():
            # Both outcomes occur, and the limit is a threshold.
            self.assertIn(75, codes, cmd)
            self.assertIn(0, codes, cmd)
            first_ok = codes.index(0)
            self.assertEqual(codes[first_ok:], [0] * (len(codes) - first_ok), "%s: %r" % (cmd, codes))
            print("limits: %s fails cleanly (75) below ulimit -n %d and succeeds from there"
                  % (cmd, limits[first_ok]), file=sys.stderr)

    def test_sweep(self):
        self.sweep(self.bundle, range(4, 65), True)

    def test_sweep_deep_rootfs(self):
        """A rootfs 60 directories deep: its copy holds descriptors per
        level and runs out of them above the preflight's threshold; the
        stage is then aborted whole (the undo had its reserve)."""
        bundle = make_bundle(os.path.join(self.tmp, "deep"))
        os.makedirs(os.path.join(bundle, "rootfs", *(["d"] * 60)))
        self.sweep(bundle, list(range(4, 65)) + list(range(70, 201, 10)), False)

    def test_removals_under_a_low_limit(self):
        """release, recover and check --remove-orphans under every low
        `ulimit -n`: each either removes the stage fully or exits 75 with
        nothing touched: the directory whole, the record as it was, never
        a stage left failed half removed."""
        for cmd in ("release", "recover", "check"):
            for n in range(4, 65):
                with self.subTest(cmd=cmd, n=n):
                    stage_id, path = self.stage()
                    if cmd == "release":
                        argv = [cmd, stage_id]
                    elif cmd == "recover":
                        argv = [cmd, "--force", stage_id]
                    else:
                        self.lose_record(stage_id)
                        argv = [cmd, "--root", self.root, "--remove-orphans"]
                    p = self.sl_nofile(argv, n, n)
                    self.assertIn(p.returncode, (0, 75), "%s under ulimit -n %d: %d\n%s"
                                  % (cmd, n, p.returncode, p.stderr))
                    if p.returncode == 75:
                        # recover may add that it could not record its
                        # outcome either.
                        self.assertTrue(p.stderr and all(l.startswith("stagelog: ")
                                                         for l in p.stderr.splitlines()), p.stderr)
                        self.assertTrue(os.path.isfile(os.path.join(path, "config.json")))
                        if cmd != "check":
                            self.assertEqual(self.state_of(stage_id), "ready")
                        self.sl(*argv)
                    self.assertFalse(os.path.exists(path))
                    if cmd != "check":
                        self.assertIn(self.state_of(stage_id), ("released", "recovered"))

    def test_soft_limit_raised_and_given_back(self):
        """A soft limit of 16 with a hard one of 4096: the stage raises its
        own soft limit and succeeds; the runtime sees 16."""
        soft, hard = 16, min(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        p = self.sl_nofile(["stage", "--root", self.root, "--bundle", self.bundle], soft, hard)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.sl("release", p.stdout.split("\t")[0])
        out = os.path.join(self.tmp, "limits")
        p = self.sl_nofile(["run", "--root", self.root, "--bundle", self.bundle, "--",
                            "sh", "-c", "echo $(ulimit -Sn) $(ulimit -Hn) > %s" % out], soft, hard)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(out) as f:
            self.assertEqual(f.read().split(), [str(soft), str(hard)])
        self.assert_nothing_left()


if __name__ == "__main__":
    unittest.main(verbosity=2)
