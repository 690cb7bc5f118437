#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""lint.py: static analysis of the library and CLI sources (./dev lint).

Runs, over the .c files of basic/ store/ stage/ oci/ recover/ cli/ as
BUILD/compile_commands.json compiles them (the same flags, defines and
include paths; tests/ is not analysed):

  cppcheck    --enable=warning,portability,performance (errors always),
              with tests/lint/cppcheck.supp; a leak or unread-variable
              report on a variable declared with a _cleanup_ macro is
              dropped (cppcheck does not know __attribute__((cleanup)):
              the variable is freed or closed, and read, when it goes out of
              scope);
  clang-tidy  with the top-level .clang-tidy (which says which checks and
              why the others are off); the analyzer's leak and dead-store
              reports on a _cleanup_ variable (or a member of one) are
              dropped: clang 14's analyzer does not model the attribute;
  structure   tests/lint/structure.py: file and function sizes, private
              names with the public sl_ prefix.

Every report is printed; the exit status is 1 when any tool reported
something (or failed to run), 0 when none did.

Usage: lint.py [--build DIR] [--only cppcheck|clang-tidy|structure]... [-j N] [-v]
  -v: also name each report dropped as one on a _cleanup_ variable"""

import json
import os
import re
import subprocess
import sys
import time

VERBOSE = False
TOP = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FOLDERS = ("basic", "store", "stage", "oci", "recover", "cli")
# cppcheck's ids that a cleanup variable sets off: it sees a descriptor or
# buffer that is never closed or freed, or a last assignment (TAKE_PTR's and
# TAKE_FD's "(p) = NULL") that nothing reads.
CLEANUP_IDS = {"resourceLeak", "memleak", "leakReturnValNotUsed", "unreadVariable", "redundantAssignment",
               "deallocuse", "doubleFree", "leakNoVarFunctionCall"}
CLEANUP_DECL = r"\b_cleanup_[A-Za-z0-9_]*(?:\([A-Za-z0-9_]*\))?\s+[^;]*?[\s*,]%s\s*(?:[=;,\[])"


def say(msg):
    print("lint: " + msg, file=sys.stderr, flush=True)


def compile_db(build):
    """A compile_commands.json with only the library's and CLI's files, in
    BUILD/lint/ (both tools read one whole)."""
    path = os.path.join(build, "compile_commands.json")
    if not os.path.exists(path):
        say("%s not found: run ./dev build (or ./dev lint) first" % path)
        sys.exit(2)
    with open(path, encoding="utf-8") as f:
        entries = json.load(f)
    keep = []
    for e in entries:
        src = os.path.normpath(os.path.join(e["directory"], e["file"]))
        rel = os.path.relpath(src, TOP)
        if rel.split(os.sep)[0] in FOLDERS and rel.endswith(".c"):
            keep.append(dict(e, file=src))
    out = os.path.join(build, "lint")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "compile_commands.json"), "w", encoding="utf-8") as f:
        json.dump(keep, f, indent=1)
    return out, sorted({e["file"] for e in keep})


def function_text_before(lines, line):
    """The lines of the function that holds line (1-based), up to it: from
    the last line starting with '{' at column 0."""
    i = line - 1
    while i > 0 and not lines[i].startswith("{"):
        i -= 1
    return "\n".join(lines[max(i - 3, 0):line])


def cleanup_variable(path, line, message, cache):
    m = re.search(r"(?:[Ll]eak: |Variable '|[Ll]eak of |variable )([A-Za-z_][A-Za-z0-9_]*)", message)
    if not m:
        return False
    if path not in cache:
        with open(path, encoding="utf-8", errors="replace") as f:
            cache[path] = f.read().split("\n")
    text = function_text_before(cache[path], line)
    return re.search(CLEANUP_DECL % re.escape(m.group(1)), text) is not None


def run_cppcheck(build, db, jobs):
    cache_dir = os.path.join(build, "lint", "cppcheck")
    os.makedirs(cache_dir, exist_ok=True)
    argv = ["cppcheck", "--project=" + os.path.join(db, "compile_commands.json"),
            "--enable=warning,portability,performance", "--library=posix", "--inline-suppr",
            "--suppressions-list=" + os.path.join(TOP, "tests", "lint", "cppcheck.supp"),
            "--cppcheck-build-dir=" + cache_dir, "-j", str(jobs), "--quiet", "--error-exitcode=0",
            "--template={file}\t{line}\t{severity}\t{id}\t{message}"]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=TOP)
    if p.returncode != 0:
        print(p.stdout + p.stderr)
        say("cppcheck failed (exit %d)" % p.returncode)
        return 1
    found, dropped, cache = [], 0, {}
    for line in p.stderr.splitlines():
        f = line.split("\t")
        if len(f) != 5:
            if line.strip():
                found.append(line)
            continue
        path, ln, sev, cid, msg = f
        if cid in CLEANUP_IDS and ln.isdigit() and cleanup_variable(path, int(ln), msg, cache):
            dropped += 1
            if VERBOSE:
                say("dropped (a _cleanup_ variable): %s:%s: %s [%s]" % (os.path.relpath(path, TOP), ln, msg, cid))
            continue
        found.append("%s:%s: %s: %s [%s]" % (os.path.relpath(path, TOP), ln, sev, msg, cid))
    for x in sorted(set(found)):
        print(x)
    say("cppcheck: %d reports (%d on _cleanup_ variables dropped)" % (len(set(found)), dropped))
    return 1 if found else 0


def run_clang_tidy(build, db, files, jobs):
    procs, out = [], []
    pending = list(files)
    while pending or procs:
        while pending and len(procs) < jobs:
            f = pending.pop(0)
            procs.append((f, subprocess.Popen(["clang-tidy", "-p", db, "--quiet", f], stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE, text=True, cwd=TOP)))
        f, p = procs.pop(0)
        o, e = p.communicate()
        if p.returncode != 0 and not o.strip():
            out.append("%s: clang-tidy failed (exit %d): %s" % (f, p.returncode, e.strip()[-500:]))
        out.append(o)
    reports, dropped, cache = [], 0, {}
    for o in out:
        for line in o.splitlines():
            # A path is absolute, or relative to the build folder (where
            # the compiler ran).
            m = re.match(r"^([^:\s]+):(\d+):(\d+): (warning|error): (.*)$", line)
            if m:
                path = os.path.normpath(os.path.join(build, m.group(1)))
                v = re.search(r"\[(clang-analyzer-unix\.Malloc|clang-analyzer-deadcode\.DeadStores)\]$", m.group(5)) \
                    and re.search(r"(?:pointed to by|Value stored to) '([A-Za-z_][A-Za-z0-9_]*)", m.group(5))
                if v and cleanup_variable(path, int(m.group(2)), "variable " + v.group(1), cache):
                    dropped += 1
                    if VERBOSE:
                        say("dropped (a _cleanup_ variable): %s:%s: %s" % (os.path.relpath(path, TOP), m.group(2),
                                                                           m.group(5)))
                    continue
                reports.append("%s:%s:%s: %s: %s" % (os.path.relpath(path, TOP), m.group(2), m.group(3),
                                                     m.group(4), m.group(5)))
            elif "clang-tidy failed" in line:
                reports.append(line)
    # A header's report comes once per file that includes it.
    reports = sorted(set(reports))
    for r in reports:
        print(r)
    say("clang-tidy: %d reports (%d on _cleanup_ variables dropped)" % (len(reports), dropped))
    return 1 if reports else 0


def run_structure():
    p = subprocess.run([sys.executable, os.path.join(TOP, "tests", "lint", "structure.py"), TOP])
    if p.returncode != 0:
        say("structure: failed (tests/lint/structure.py --report lists every violation)")
    return 1 if p.returncode else 0


def main(argv):
    global VERBOSE
    build = os.path.join(TOP, "build")
    only, jobs = [], 2
    i = 1
    while i < len(argv):
        a = argv[i]
        if a == "-v":
            VERBOSE = True
            i += 1
            continue
        if a in ("--build", "--only", "-j") and i + 1 < len(argv):
            if a == "--build":
                build = os.path.abspath(argv[i + 1])
            elif a == "--only":
                only.append(argv[i + 1])
            else:
                jobs = int(argv[i + 1])
            i += 2
            continue
        print(__doc__.split("\n\n")[-1], file=sys.stderr)
        return 64
    tools = only or ["cppcheck", "clang-tidy", "structure"]
    db, files = compile_db(build)
    failed = []
    for t in tools:
        start = time.monotonic()
        say("%s over %d files" % (t, len(files)) if t != "structure" else "structure")
        if t == "cppcheck":
            rc = run_cppcheck(build, db, jobs)
        elif t == "clang-tidy":
            rc = run_clang_tidy(build, db, files, jobs)
        elif t == "structure":
            rc = run_structure()
        else:
            print("unknown tool: " + t, file=sys.stderr)
            return 64
        say("%s: %.0f s" % (t, time.monotonic() - start))
        if rc:
            failed.append(t)
    if failed:
        say("FAILED: " + ", ".join(failed))
        return 1
    say("nothing to report")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
