#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""mutate.py: proof that the suites can fail.

Each file tests/mutants/NAME.mut describes one mutation of the protocol: a
change a careless edit could make, which some suite must notice. The format,
one mutant per file:

    # Any line starting with '#' before the first hunk is a comment.
    why: one line: what protection the mutation removes
    suite: test            (test: run by ./dev mutants; powerloss: run by the
                            power-loss harness and skipped here)
    file: stage/undo.c     (path from the top of the tree)
    --- original
    <exact text, one or more whole lines>
    --- replacement
    <text put in its place; may be empty>

A file may hold several hunks: more `--- original` / `--- replacement`
pairs, all in the same file, each applied at its place in the unmutated
text (so one hunk's replacement may contain another's original). Every
original must occur exactly once in the target file; otherwise the mutant
is STALE: an error, never counted as killed. Keep originals to a line or
two of distinctive text, so that unrelated edits do not make them stale.

Subcommands:
    list                 NAME, suite and why of every mutant
    check [DIR]          every mutant applies to DIR (default: the tree)
    apply NAME DIR       apply NAME in place to DIR, a scratch copy
    run [NAME...]        copy the tree to /dev/shm, build it once, and for
                         each `suite: test` mutant (or each NAME): apply,
                         rebuild, run the suites until the first failure,
                         restore; print KILLED / SURVIVED / STALE /
                         BROKEN (does not build) per mutant and
                         `mutants: K/N killed`; exit 1 unless all killed.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))

# The suites in the order a mutant is tried against them: quick and
# pointed first, the slow ones last. A suite not named here runs last.
# The abi checks (a second) come first: a mutant of a public header
# passes every other suite.
ORDER = ["abi-symbols", "abi-baseline", "basic", "inspect", "store", "stage", "oci-stage", "oci", "limits", "durability",
         "recover", "crash", "redaction", "identity", "fuse", "cli", "promises",
         "attack", "concurrency"]
# Per-test timeouts are scaled by this: a mutant that makes a suite hang
# fails it in half the time a slow machine may need.
TIMEOUT_MULTIPLIER = "0.5"


class Stale(Exception):
    pass


class Mutant:
    def __init__(self, name, why, suite, file, hunks):
        self.name, self.why, self.suite, self.file, self.hunks = name, why, suite, file, hunks


def parse(path):
    name = os.path.basename(path)[:-len(".mut")]
    head, hunks, cur, mode = {}, [], None, None
    with open(path) as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for line in lines:
        if line == "--- original":
            if mode == 0:
                raise ValueError(f"{path}: '--- original' without a '--- replacement' before it")
            cur = [[], []]
            hunks.append(cur)
            mode = 0
        elif line == "--- replacement":
            if cur is None or mode != 0:
                raise ValueError(f"{path}: '--- replacement' without '--- original'")
            mode = 1
        elif mode is not None:
            cur[mode].append(line)
        elif line.startswith("#") or not line.strip():
            continue
        else:
            key, sep, value = line.partition(":")
            if not sep:
                raise ValueError(f"{path}: expected 'key: value', got {line!r}")
            head[key.strip()] = value.strip()
    for key in ("why", "suite", "file"):
        if key not in head:
            raise ValueError(f"{path}: missing '{key}:'")
    if head["suite"] not in ("test", "powerloss"):
        raise ValueError(f"{path}: suite must be test or powerloss")
    if not hunks or mode != 1:
        raise ValueError(f"{path}: no hunk, or one without '--- replacement'")
    # Whole lines: each original and replacement ends with a newline.
    hunks = [("\n".join(o) + "\n", "\n".join(r) + "\n" if r else "") for o, r in hunks]
    if any(o == "\n" for o, _ in hunks):
        raise ValueError(f"{path}: empty original")
    return Mutant(name, head["why"], head["suite"], head["file"], hunks)


def load():
    return [parse(os.path.join(HERE, f)) for f in sorted(os.listdir(HERE)) if f.endswith(".mut")]


def mutated_text(m, tree):
    """The target file's text with every hunk applied; raises Stale."""
    path = os.path.join(tree, m.file)
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        raise Stale(f"{m.file}: no such file")
    spans = []
    for i, (orig, repl) in enumerate(m.hunks):
        n = text.count(orig)
        if n != 1:
            raise Stale(f"{m.file}: hunk {i + 1}: original occurs {n} times, want exactly once")
        at = text.index(orig)
        spans.append((at, at + len(orig), repl))
    spans.sort()
    for a, b in zip(spans, spans[1:]):
        if a[1] > b[0]:
            raise Stale(f"{m.file}: hunks overlap")
    out, pos = [], 0
    for start, end, repl in spans:
        out += [text[pos:start], repl]
        pos = end
    out.append(text[pos:])
    return text, "".join(out)


def apply(m, tree):
    path = os.path.join(tree, m.file)
    orig, new = mutated_text(m, tree)
    with open(path, "w") as f:
        f.write(new)
    return orig


def find(mutants, name):
    for m in mutants:
        if m.name == name:
            return m
    sys.exit(f"mutate: no mutant {name!r} (see: mutate.py list)")


def sh(args, cwd=None, log=None):
    return subprocess.run(args, cwd=cwd, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT).returncode


def tracked_files():
    # In an export (a tree without .git) git fails: copy_tree() then walks
    # the tree, and git's "fatal: not a git repository" is no news to show.
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=TOP,
                         check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode()
    return [p for p in out.split("\0") if p and os.path.isfile(os.path.join(TOP, p))]


def copy_tree(dest):
    try:
        files = tracked_files()
    except (OSError, subprocess.CalledProcessError):
        files = []
        for d, dirs, names in os.walk(TOP):
            dirs[:] = [x for x in dirs if not x.startswith(("build", ".git"))]
            files += [os.path.relpath(os.path.join(d, n), TOP) for n in names]
    for p in files:
        os.makedirs(os.path.join(dest, os.path.dirname(p)), exist_ok=True)
        shutil.copy2(os.path.join(TOP, p), os.path.join(dest, p))


def suites(build):
    out = subprocess.run(["meson", "test", "-C", build, "--list", "--no-rebuild"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True).stdout
    names = [line.split(" / ")[-1].strip() for line in out.splitlines() if " / " in line]
    rank = {n: i for i, n in enumerate(ORDER)}
    return sorted(names, key=lambda n: rank.get(n, len(ORDER)))


def run_suites(build, names, log):
    """0 when every suite passed, else the name of the first that failed."""
    for n in names:
        rc = sh(["meson", "test", "-C", build, "--no-rebuild", "--print-errorlogs",
                 "--timeout-multiplier", TIMEOUT_MULTIPLIER, n], log=log)
        if rc != 0:
            return n
    return None


def cmd_run(names):
    mutants = load()
    todo = [find(mutants, n) for n in names] if names else [m for m in mutants if m.suite == "test"]
    start = time.monotonic()
    scratch = tempfile.mkdtemp(prefix="stagelog-mutants-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    logdir = os.path.join(scratch, "logs")
    os.makedirs(logdir)
    src, build = os.path.join(scratch, "src"), os.path.join(scratch, "src", "build")
    keep = os.environ.get("MUTANTS_KEEP") == "1"
    try:
        copy_tree(src)
        # Warnings are not errors here: a mutant that trips -Werror (an
        # unused variable) must be judged by the suites, not the compiler.
        with open(os.path.join(logdir, "setup.log"), "w") as log:
            if sh(["meson", "setup", build, "-Dwerror=false"], cwd=src, log=log) != 0 or \
               sh(["meson", "compile", "-C", build], log=log) != 0:
                print(f"mutants: the unmutated tree does not build; see {log.name}", file=sys.stderr)
                keep = True
                return 1
        order = suites(build)
        # Stale mutants are found before anything runs.
        with open(os.path.join(logdir, "baseline.log"), "w") as log:
            failed = run_suites(build, order, log)
        if failed:
            print(f"mutants: the unmutated tree fails suite {failed}; see {logdir}/baseline.log", file=sys.stderr)
            keep = True
            return 1
        killed = 0
        for m in todo:
            t0 = time.monotonic()
            path = os.path.join(src, m.file)
            try:
                orig = apply(m, src)
            except Stale as e:
                print(f"STALE     {m.name}: {e}", flush=True)
                continue
            try:
                with open(os.path.join(logdir, m.name + ".log"), "w") as log:
                    if sh(["meson", "compile", "-C", build], log=log) != 0:
                        verdict, detail = "BROKEN", "does not build"
                    else:
                        failed = run_suites(build, order, log)
                        verdict, detail = ("KILLED", f"by {failed}") if failed else ("SURVIVED", m.why)
            finally:
                with open(path, "w") as f:
                    f.write(orig)
            if verdict == "KILLED":
                killed += 1
            else:
                keep = True
            print(f"{verdict:<9} {m.name}: {detail} ({time.monotonic() - t0:.0f} s)", flush=True)
        print(f"mutants: {killed}/{len(todo)} killed in {time.monotonic() - start:.0f} s"
              + ("" if killed == len(todo) else f"; logs in {logdir}"))
        return 0 if killed == len(todo) else 1
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)


def main(argv):
    # A run stopped with SIGTERM (a timeout, a CI cancel) still removes
    # its scratch copy.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if len(argv) < 1 or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 64
    cmd, args = argv[0], argv[1:]
    if cmd == "list" and not args:
        for m in load():
            print(f"{m.name:<28} {m.suite:<9} {m.file:<20} {m.why}")
        return 0
    if cmd == "check" and len(args) <= 1:
        bad = 0
        for m in load():
            try:
                mutated_text(m, args[0] if args else TOP)
            except Stale as e:
                print(f"STALE     {m.name}: {e}")
                bad += 1
        return 1 if bad else 0
    if cmd == "apply" and len(args) == 2:
        m = find(load(), args[0])
        if os.path.realpath(args[1]) == os.path.realpath(TOP):
            sys.exit("mutate: refusing to mutate the working tree itself; give a scratch copy")
        try:
            apply(m, args[1])
        except Stale as e:
            print(f"STALE     {m.name}: {e}", file=sys.stderr)
            return 1
        return 0
    if cmd == "run":
        return cmd_run(args)
    print("usage: mutate.py list | check [DIR] | apply NAME DIR | run [NAME...]", file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
