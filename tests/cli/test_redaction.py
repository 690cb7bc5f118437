#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Redaction: every failure path of `stage` and `run`, with a canary secret
in the env file, in the environment and in config.json. The canary must
appear in no diagnostic, no output, no store file (.db, -wal, -shm) and no
file left under the staging root; and every failure leaves the root empty."""

import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_cli import Base, make_bundle  # noqa: E402

CANARY = "Canary-Redact-93e1d0"


class TestRedaction(Base):
    def setUp(self):
        super().setUp()
        self.envfile = os.path.join(self.tmp, "tokens.env")
        with open(self.envfile, "w") as f:
            f.write("# tokens\nFILE_TOKEN=%s-file\n\nOTHER=x\n" % CANARY)
        self.env["ENV_TOKEN"] = CANARY + "-env"
        # The packaged config holds the canary too (in a field stagelog
        # copies), so that a leak of config bytes is caught.
        self.secret_bundle = make_bundle(os.path.join(self.tmp, "secret-pkg"), config={
            "process": {"args": ["/bin/true"], "env": ["PACKAGED=%s-config" % CANARY]},
            "annotations": {"note": CANARY + "-annotation"},
        })

    def secrets(self):
        return ["--env-file", self.envfile, "--env", "ENV_TOKEN", "--env", "ARG_TOKEN=%s-arg" % CANARY]

    def assert_nothing_leaked(self, p, what):
        self.assertNotIn(CANARY, p.stdout, what)
        self.assertNotIn(CANARY, p.stderr, what)
        store = os.path.dirname(self.db)
        if os.path.isdir(store):
            for name in os.listdir(store):
                with open(os.path.join(store, name), "rb") as f:
                    self.assertNotIn(CANARY.encode(), f.read(), "%s: %s" % (what, name))
        for dirpath, _, files in os.walk(self.root):
            for name in files:
                path = os.path.join(dirpath, name)
                if os.path.isfile(path) and not os.path.islink(path):
                    with open(path, "rb") as f:
                        self.assertNotIn(CANARY.encode(), f.read(), "%s: %s" % (what, path))
        self.assertEqual(self.root_entries(), [], what)

    def bad_bundles(self):
        """(name, bundle path, expected exit code) for each bad input."""
        t = self.tmp
        cases = [
            ("missing bundle", os.path.join(t, "nope"), 66),
            ("missing rootfs", make_bundle(os.path.join(t, "b1"), rootfs=False), 66),
            ("missing config", make_bundle(os.path.join(t, "b2"), config=False), 66),
            ("truncated config", make_bundle(os.path.join(t, "b3"),
                                             config='{"process": {"env": ["T=%s"]' % CANARY), 65),
            ("process not an object", make_bundle(os.path.join(t, "b4"),
                                                  config='{"process": "%s"}' % CANARY), 65),
            ("env of the wrong type", make_bundle(os.path.join(t, "b5"),
                                                  config='{"process": {"env": "%s"}}' % CANARY), 65),
        ]
        bad = make_bundle(os.path.join(t, "b6"), config=False)
        with open(os.path.join(bad, "config.json"), "wb") as f:
            f.write(b'{"process": {}, "x": "' + CANARY.encode() + b'\xff\xfe"}')
        cases.append(("invalid UTF-8", bad, 65))
        big = make_bundle(os.path.join(t, "b7"), config=False)
        with open(os.path.join(big, "config.json"), "w") as f:
            f.write('{"process": {}, "pad": "%s' % CANARY + "x" * (5 << 20) + '"}')
        cases.append(("5 MiB config", big, 65))
        return cases

    def each_command(self, bundle, extra=()):
        yield "stage", ["stage", "--root", self.root, "--bundle", bundle] + list(extra) + self.secrets()
        yield "run", (["run", "--root", self.root, "--bundle", bundle] + list(extra) + self.secrets()
                      + ["--pass-env", "ENV_TOKEN", "--", "sh", "-c", "touch %s/started" % self.tmp])

    def test_bad_bundles(self):
        n = 0
        for name, bundle, code in self.bad_bundles():
            for cmd, args in self.each_command(bundle):
                p = self.sl(*args, code=code)
                self.one_line_error(p)
                self.assert_nothing_leaked(p, "%s: %s" % (cmd, name))
                self.assertFalse(os.path.exists(os.path.join(self.tmp, "started")), name)
                n += 1
        print("redaction: %d bad-bundle failure paths" % n, file=sys.stderr)

    def test_bad_environment(self):
        bad_file = os.path.join(self.tmp, "bad.env")
        with open(bad_file, "w") as f:
            f.write("GOOD=1\n%s-no-equals-sign\n" % CANARY)
        cases = [
            ("bad env-file line", ["--env-file", bad_file], 65),
            ("missing env file", ["--env-file", os.path.join(self.tmp, "none.env")], 66),
            ("unset --env name", ["--env", "UNSET_TOKEN_NAME"], 64),
            ("bad --env name", ["--env", "bad-name=%s" % CANARY], 64),
            ("bad --env name 2", ["--env", "%s=1" % CANARY], 64),
        ]
        for name, extra, code in cases:
            for cmd, args in self.each_command(self.secret_bundle, extra):
                p = self.sl(*args, code=code)
                self.one_line_error(p)
                self.assert_nothing_leaked(p, "%s: %s" % (cmd, name))
                self.assertFalse(os.path.exists(os.path.join(self.tmp, "started")), name)

    def test_unusable_root(self):
        link = os.path.join(self.shm, "link")
        os.symlink(self.tmp, link)
        for cmd, args in self.each_command(self.secret_bundle):
            args[args.index(self.root)] = link
            p = self.sl(*args, code=73)
            self.one_line_error(p)
            self.assert_nothing_leaked(p, cmd)

    def test_disk_full(self):
        """A staging root on a 256 KiB tmpfs, a 1 MiB file to copy: ENOSPC
        mid-copy is an I/O error (74) and leaves nothing."""
        if os.geteuid() != 0:
            self.skipTest("mounting a small tmpfs needs root")
        full = os.path.join(self.shm, "full")
        os.makedirs(full)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", full]).returncode:
            self.skipTest("mount -t tmpfs is not permitted here")
        try:
            with open(os.path.join(self.secret_bundle, "rootfs", "big"), "wb") as f:
                f.write(os.urandom(1 << 20))
            self.root = os.path.join(full, "root")
            for cmd, args in self.each_command(self.secret_bundle):
                p = self.sl(*args, code=74)
                self.one_line_error(p)
                self.assertIn("No space left", p.stderr)
                self.assert_nothing_leaked(p, cmd)
        finally:
            subprocess.run(["umount", full])

    def test_run_outcomes(self):
        """The runtime missing (127), failing (3) or killed by a signal:
        the stage is released each time and nothing leaks."""
        for runtime, code in ((["no-such-runtime-x"], 127), (["sh", "-c", "exit 3"], 3),
                              (["sh", "-c", "kill -TERM $$"], 128 + 15)):
            p = self.sl(*(["run", "--root", self.root, "--bundle", self.secret_bundle] + self.secrets()
                          + ["--"] + runtime), code=code)
            self.assert_nothing_leaked(p, " ".join(runtime))


if __name__ == "__main__":
    unittest.main(verbosity=2)
