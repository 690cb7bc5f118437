#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Redaction: every failure path of `stage` and `run`, with a canary secret
in the env file, in the environment and in config.json. The canary must
appear in no diagnostic, no output, no store file (.db, -wal, -shm) and no
file left under the staging root; and every failure leaves the root empty."""

import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_cli import STAGELOG, Base, make_bundle  # noqa: E402

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


# A token typed in the wrong place: mixed case and '_', like ghp_...; and
# one that passes as an id (hex), for where an id goes.
TOKEN = "ghp_EchoCanary7F3a9c"
HEX_TOKEN = "ec4011a7f3a9c0de"
TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPTION_RE = re.compile(r'\{\s*"([a-z0-9-]+)",\s*(no_argument|required_argument|optional_argument)')


def option_tables():
    """(global options, {command: options}) as the source's getopt tables
    declare them, each options a {name: has_arg} dict: a new option, or a
    new command, is tried without this file changing."""
    def read(name):
        with open(os.path.join(TOP, "cli", name)) as f:
            return f.read()

    def macro(text, name):
        m = re.search(r"#define %s\b(.*?)\n(?!\t)" % name, text, re.S)
        return dict(OPTION_RE.findall(m.group(1)))

    header, main = read("cli.h"), read("main.c")
    common = macro(header, "CLI_COMMON_OPTIONS")
    stage = macro(header, "STAGE_LONG_OPTIONS")
    body = main[main.index("static int parse_global_options"):]
    glob = dict(OPTION_RE.findall(body[:body.index("{ 0 }")]))
    commands = {}
    for name in re.findall(r'\{ "([a-z]+)", cmd_[a-z]+,', main):
        opts = dict(common)
        path = os.path.join(TOP, "cli", "cmd-%s.c" % name)
        if os.path.exists(path):
            text = read("cmd-%s.c" % name)
            opts.update(OPTION_RE.findall(text))
            if "STAGE_LONG_OPTIONS" in text:
                opts.update(stage)
        commands[name] = opts
    return glob, commands


class TestUsageNeverEchoes(Base):
    """Every usage error of every command, with a token where it does not
    belong: exit 64, one line naming the option or the position, and the
    token nowhere: not on stdout or stderr, not in the store, and nothing
    left under the staging root or beside the store."""

    def setUp(self):
        super().setUp()
        self.env.pop("STAGELOG_ROOT", None)
        # A store with one finished stage: an id that passes as hex then
        # reaches the lookup, which says it is unknown.
        self.stage_id, _ = self.stage()
        self.sl("release", self.stage_id)
        self.glob, self.commands = option_tables()
        self.n = 0

    def snapshot(self):
        out = []
        for top in (self.tmp, self.shm):
            for dirpath, dirs, files in os.walk(top):
                out += [os.path.join(dirpath, n) for n in dirs + files]
        # SQLite's -wal and -shm come and go with a connection.
        return sorted(p for p in out if not p.endswith(("-wal", "-shm")))

    def try_(self, *args, db=True):
        """Runs stagelog in the scratch folder; (process, the files before)."""
        argv = [STAGELOG] + (["--db", self.db] if db else []) + list(args)
        before = self.snapshot()
        return subprocess.run(argv, capture_output=True, text=True, env=self.env, cwd=self.tmp, timeout=60,
                              errors="surrogateescape"), before

    def bad(self, *args, db=True, what="", tried=None):
        # A subtest each, so that a run lists every line that echoes.
        with self.subTest(what=what, args=args):
            self.check_bad(args, db, what, tried)

    def check_bad(self, args, db, what, tried):
        p, before = tried or self.try_(*args, db=db)
        what = "%s: %r" % (what, args)
        self.assertEqual(p.returncode, 64, "%s\nstdout: %s\nstderr: %s" % (what, p.stdout, p.stderr))
        for token in (TOKEN, HEX_TOKEN, TOKEN.lower(), HEX_TOKEN[:8]):
            self.assertNotIn(token, p.stdout + p.stderr, what)
        self.assertEqual(p.stdout, "", what)
        self.one_line_error(p)
        self.assertEqual(self.snapshot(), before, what)
        self.assertEqual(self.root_entries(), [], what)
        store = os.path.dirname(self.db)
        for name in os.listdir(store):
            with open(os.path.join(store, name), "rb") as f:
                self.assertNotIn(TOKEN.encode(), f.read(), "%s: %s" % (what, name))
        self.n += 1

    def test_tables_match_the_help(self):
        """The tables parsed from the source are the options --help shows,
        so that the other test really covers every option."""
        for cmd, opts in self.commands.items():
            text = self.sl(cmd, "--help").stdout
            shown = set(re.findall(r"(?<![\w-])--([a-z][a-z0-9-]*)", text))
            self.assertLessEqual(shown, set(opts), cmd)
            self.assertLessEqual(set(opts) - {"json", "help"}, shown, cmd)
        text = self.sl("--help", db=False).stdout
        self.assertEqual(set(re.findall(r"(?<![\w-])--([a-z][a-z0-9-]*)", text)), set(self.glob))
        self.assertGreaterEqual(len(self.commands), 12)

    def context(self, cmd):
        """(arguments before the option under test, operands after it) for
        a command line that is valid but for what a case adds."""
        usage = self.sl(cmd, "--help").stdout.split("\n\n")[0]
        if cmd in ("stage", "run"):
            return ["--root", self.root, "--bundle", self.bundle], (["--", "true"] if cmd == "run" else [])
        operands = []
        for word in re.sub(r"\[[^]]*\]", "", usage).split()[2:]:
            if word == "ID":
                operands.append(self.stage_id[:8])
            elif word == "DEST":
                operands.append(os.path.join(self.tmp, "dest"))
            elif re.fullmatch(r"[A-Z]+", word):
                self.fail("%s: operand %s: say what a valid one is" % (cmd, word))
        return [], operands

    def test_every_usage_error(self):
        for cmd, opts in self.commands.items():
            pre, operands = self.context(cmd)
            dashdash = operands[:1] == ["--"]
            # Unknown options, with the token after '=' or as the name.
            for unknown in ("--no-such-option=" + TOKEN, "--" + TOKEN, "--" + TOKEN + "=x", "-" + TOKEN,
                            "--e=" + TOKEN if cmd == "stage" else "--" + TOKEN.upper()):
                self.bad(cmd, *pre, unknown, *operands, what="unknown option")
            for name, has_arg in opts.items():
                if name == "help":
                    continue
                if has_arg == "no_argument":
                    self.bad(cmd, *pre, "--%s=%s" % (name, TOKEN), *operands, what="value of a flag")
                    continue
                # The argument missing: the option is last.
                self.bad(cmd, *pre, "--" + name, what="missing argument")
                # A value, then the token as a stray operand (before "--"
                # for run, where it must not become the runtime).
                tail = [TOKEN] + operands if dashdash else operands + [TOKEN]
                for value in (TOKEN, "x"):
                    self.bad(cmd, *pre, "--" + name, value, *tail, what="stray after --" + name)
                # Bad values: whichever the option refuses must not be echoed.
                for value in (TOKEN, "bad name=" + TOKEN, "%s=%s" % (TOKEN, TOKEN), "99" + TOKEN,
                              HEX_TOKEN, "-" + TOKEN):
                    if name in ("root", "bundle", "output", "env-file"):
                        break  # paths: any value is a name to try, not a usage error
                    argv = [cmd] + pre + ["--" + name, value] + operands
                    tried = self.try_(*argv)
                    if tried[0].returncode == 64:
                        self.bad(*argv, what="bad value of --" + name, tried=tried)
                    elif tried[0].returncode == 0 and cmd == "stage":
                        self.sl("release", tried[0].stdout.split("\t")[0])
            # A stray operand: one more than the command takes.
            if dashdash:
                self.bad(cmd, *pre, TOKEN, *operands, what="operand before --")
                self.bad(cmd, *pre, HEX_TOKEN, "--", "true", what="operand before --")
            else:
                self.bad(cmd, *pre, *operands, TOKEN, what="stray operand")
                self.bad(cmd, *pre, TOKEN, *operands, what="stray operand first")
        # Global options.
        for name, has_arg in self.glob.items():
            if name in ("help", "version"):
                continue
            if has_arg == "no_argument":
                self.bad("--%s=%s" % (name, TOKEN), "list", db=False, what="global flag")
            else:
                self.bad("--" + name, db=False, what="global missing argument")
                self.bad("--" + name, TOKEN, TOKEN, db=False, what="global stray")
        for unknown in ("--no-such-option=" + TOKEN, "--" + TOKEN, "-" + TOKEN):
            self.bad(unknown, "list", what="global unknown option")
        # Operands that are wrong themselves: the command, the id, and
        # what help is asked about.
        self.bad(TOKEN, what="command")
        self.bad(HEX_TOKEN, what="command")
        self.bad("help", TOKEN, what="help's command")
        for cmd in ("show", "release", "forget", "publish"):
            for id_ in (TOKEN, HEX_TOKEN, HEX_TOKEN.upper(), HEX_TOKEN[:4]):
                if not self.stage_id.startswith(id_.lower()):
                    self.bad(cmd, id_, *(["dest"] if cmd == "publish" else []), what="id")
        for id_ in (TOKEN, HEX_TOKEN):
            self.bad("recover", "--force", id_, what="--force id")
            # Without a store, and the token where the store's path goes.
            self.bad("--db", os.path.join(self.tmp, TOKEN, "db"), "recover", "--force", id_, db=False,
                     what="--force id, no store")
        # --env NAME with NAME unset: a token fits the name's pattern.
        for cmd in ("stage", "run"):
            pre, operands = self.context(cmd)
            for value in (TOKEN, "1" + TOKEN, TOKEN + "-x", "bad name=" + TOKEN, "=" + TOKEN):
                self.bad(cmd, *pre, "--env", value, *operands, what="--env")
            self.bad(cmd, *pre, "--label", TOKEN.lower() * 2, *operands, what="--label (too long)")
            self.bad(cmd, *pre, "--env", "API_TOKEN=", TOKEN, *operands, what="value after an empty --env")
        print("usage errors: %d command lines, none echoed" % self.n, file=sys.stderr)

    def test_env_file_is_not_named(self):
        """A token given as --env-file names no file: the diagnostic names
        the option, whatever the exit."""
        for cmd in ("stage", "run"):
            pre, operands = self.context(cmd)
            p = self.sl(cmd, *pre, "--env-file", TOKEN, *operands, code=66)
            self.one_line_error(p)
            self.assertNotIn(TOKEN, p.stderr + p.stdout)
            self.assertIn("--env-file", p.stderr)
            self.assert_root_empty()


if __name__ == "__main__":
    unittest.main(verbosity=2)
