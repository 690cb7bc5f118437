#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The completion scripts: each parses in its shell (bash -n, zsh -n,
fish -n; a shell that is not installed is skipped, and the word lists are
checked all the same), and each offers exactly the commands, the options of
every command, the global options, the --state values and the help topics
that the binary's --help and diagnostics name, so that they cannot drift.

Usage: STAGELOG=build/cli/stagelog test_completion.py [SOURCE_DIR]"""

import os
import re
import shutil
import subprocess
import sys
import unittest

STAGELOG = os.environ.get("STAGELOG", "stagelog")
TOP = os.path.abspath(sys.argv.pop(1) if len(sys.argv) > 1 else
                      os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DOCS = os.path.join(TOP, "docs")
BASH = os.path.join(DOCS, "stagelog.bash-completion")
ZSH = os.path.join(DOCS, "_stagelog")
FISH = os.path.join(DOCS, "stagelog.fish")
OPT_RE = re.compile(r"(?<![\w-])(--?[a-z][a-z-]*)")


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, **kw)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


class Binary:
    """What the binary says: its commands, global options, each command's
    options (from its --help's option list), and the states."""

    def __init__(self):
        top = run([STAGELOG, "--help"]).stdout
        body = top.split("Commands:", 1)[1]
        self.commands = [l.split()[0] for l in body.splitlines() if l.startswith("  ") and l.strip()]
        glob = top.split("Global options:", 1)[1].split("Commands:", 1)[0]
        self.globals = set()
        for line in glob.splitlines():
            if line.startswith("  -"):
                self.globals.update(OPT_RE.findall(line.strip().split("  ")[0]))
        self.options = {}
        for cmd in self.commands:
            opts = {"--json", "-h", "--help"}  # every command takes them (CLI_COMMON_OPTIONS)
            for line in run([STAGELOG, cmd, "--help"]).stdout.splitlines():
                if line.startswith("  -"):
                    opts.update(OPT_RE.findall(line.strip().split("  ")[0]))
            self.options[cmd] = opts
        err = run([STAGELOG, "--db", "/nonexistent/x.db", "list", "--state", "x"]).stderr
        m = re.search(r"want one of ([a-z, ]+)", err)
        self.states = m.group(1).split(", ") if m else []


BIN = None


def setUpModule():
    global BIN
    BIN = Binary()


class TestBinaryIsRead(unittest.TestCase):
    def test_sane(self):
        self.assertGreaterEqual(len(BIN.commands), 12)
        self.assertIn("--quiet", BIN.options["list"])
        self.assertEqual(len(BIN.states), 9)
        self.assertIn("--version", BIN.globals)


class TestParses(unittest.TestCase):
    def check(self, exe, path):
        if not exe:
            self.skipTest("the shell for %s is not installed" % os.path.basename(path))
        p = run([exe, "-n", path])
        self.assertEqual((p.returncode, p.stderr), (0, ""), "%s -n %s" % (exe, path))

    def test_bash(self):
        self.check(shutil.which("bash"), BASH)

    def test_zsh(self):
        self.check(shutil.which("zsh"), ZSH)

    def test_fish(self):
        self.check(shutil.which("fish"), FISH)


class TestBash(unittest.TestCase):
    """The bash script's own words, as bash sees them once sourced."""

    def bash(self, script):
        p = run(["bash", "-c", 'source "$1"; ' + script, "bash", BASH])
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout.split()

    def complete(self, *words):
        return self.bash('COMP_WORDS=(%s); COMP_CWORD=%d; _stagelog; printf "%%s\\n" "${COMPREPLY[@]}"'
                         % (" ".join("'%s'" % w for w in words), len(words) - 1))

    def test_commands_and_globals(self):
        self.assertEqual(self.bash('echo $_stagelog_commands'), BIN.commands)
        self.assertEqual(set(self.bash('echo $_stagelog_global_opts')), BIN.globals)

    def test_options(self):
        for cmd in BIN.commands:
            with self.subTest(command=cmd):
                words = set(self.bash('_stagelog_cmd_opts %s' % cmd)) - {"--"}
                self.assertEqual(words, BIN.options[cmd])

    def test_states_and_help_topics(self):
        self.assertEqual(sorted(self.complete("stagelog", "list", "--state", "")), sorted(BIN.states))
        self.assertEqual(self.complete("stagelog", "list", "--state", "rel"), ["releasing", "released"])
        self.assertEqual(sorted(self.complete("stagelog", "help", "")), sorted(BIN.commands))
        self.assertEqual(self.complete("stagelog", "help", "li"), ["list"])


class TestZsh(unittest.TestCase):
    """The zsh script, read as text: each command's case branch holds its
    option specs; the commands are _stagelog_commands' list."""

    def setUp(self):
        self.text = read(ZSH)

    def test_commands(self):
        block = self.text.split("commands=(", 1)[1].split(")", 1)[0]
        self.assertEqual(re.findall(r"'([a-z]+):", block), BIN.commands)

    def test_globals(self):
        block = self.text.split("_arguments -C", 1)[1].split("'1:", 1)[0]
        self.assertEqual(set(OPT_RE.findall(block)), BIN.globals)

    def test_options(self):
        common = self.text.split("opts=(", 1)[1].split(")\n", 1)[0]
        body = self.text.split("case $words[1] in", 1)[1].split("\n  esac", 1)[0]
        branches = dict(re.findall(r"\n    ([a-z|]+)\)\n(.*?)\n      ;;", body, re.S))
        seen = set()
        for names, specs in branches.items():
            for cmd in names.split("|"):
                seen.add(cmd)
                with self.subTest(command=cmd):
                    # Option specs only: ids, paths and states are quoted
                    # after a ':'.
                    opts = set()
                    for spec in re.findall(r"^\s*(\S.*)$", specs, re.M):
                        opts.update(OPT_RE.findall(spec.split(":", 1)[0].split("[", 1)[0] +
                                                   "".join(re.findall(r"\{([^}]*)\}", spec))))
                    self.assertEqual(opts | set(OPT_RE.findall(common)), BIN.options[cmd])
        # A command without options of its own needs no branch only if it
        # takes nothing but the common ones.
        for cmd in set(BIN.commands) - seen:
            self.assertEqual(BIN.options[cmd], {"--json", "-h", "--help"}, cmd)

    def test_states(self):
        m = re.search(r"states=\(([a-z ]+)\)", self.text)
        self.assertEqual(m.group(1).split(), BIN.states)
        self.assertIn("--state=[only stages in this state]:state:($states)", self.text)

    def test_help_topics(self):
        self.assertRegex(self.text, r"\n    help\)\n      opts\+=\('1: :_stagelog_commands'\)")


class TestFish(unittest.TestCase):
    """The fish script: its `complete` lines, read as text; where fish is
    installed, also what it completes."""

    def setUp(self):
        self.text = read(FISH)
        self.lines = [l for l in self.text.splitlines() if l.startswith("complete -c stagelog ")]

    def opts(self, line):
        return {"--" + l for l in re.findall(r" -l ([a-z-]+)", line)} | \
               {"-" + s for s in re.findall(r" -s ([a-z])", line)}

    def test_commands(self):
        m = re.search(r"^set -l commands (.*)$", self.text, re.M)
        self.assertEqual(m.group(1).split(), BIN.commands)
        listed = [re.search(r" -a ([a-z]+) ", l).group(1) for l in self.lines
                  if l.startswith('complete -c stagelog -n "not __fish_seen_subcommand_from $commands" -a ')]
        self.assertEqual(listed, BIN.commands)

    def test_options(self):
        glob, common, per = set(), set(), {c: set() for c in BIN.commands}
        for line in self.lines:
            cond = re.search(r'-n "([^"]*)"', line)
            cond = cond.group(1) if cond else ""
            if cond == "not __fish_seen_subcommand_from $commands":
                glob |= self.opts(line)
            elif cond == "__fish_seen_subcommand_from $commands":
                common |= self.opts(line)
            elif cond.startswith("__fish_seen_subcommand_from "):
                for cmd in cond.split()[1:]:
                    per[cmd] |= self.opts(line)
        self.assertEqual(glob, BIN.globals)
        for cmd in BIN.commands:
            with self.subTest(command=cmd):
                self.assertEqual(per[cmd] | common, BIN.options[cmd])

    def test_states(self):
        m = re.search(r"^set -l states (.*)$", self.text, re.M)
        self.assertEqual(m.group(1).split(), BIN.states)

    def fish(self, line):
        exe = shutil.which("fish")
        if not exe:
            self.skipTest("fish is not installed")
        p = run([exe, "--no-config", "-c", 'source "$argv[1]"; complete -C"$argv[2]"', FISH, line])
        self.assertEqual(p.returncode, 0, p.stderr)
        return [l.split("\t")[0] for l in p.stdout.splitlines()]

    def test_fish_completes(self):
        self.assertEqual(sorted(self.fish("stagelog list --state ")), sorted(BIN.states))
        self.assertEqual(self.fish("stagelog lis"), ["list"])
        self.assertIn("list", self.fish("stagelog help "))
        self.assertEqual(set(self.fish("stagelog list -")), BIN.options["list"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
