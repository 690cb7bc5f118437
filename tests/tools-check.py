#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""tools-check.py: every program the suites call comes from a package.

./dev test must pass on a fresh, minimal Debian 12 (debootstrap minbase) once
./dev has installed its packages. A suite that starts calling a new program
(fuser, promtool, ...) would pass here, where someone installed it by hand,
and fail there. So this check reads the programs from the sources, not from
a hand-kept list:

  - Python (tests/**/*.py): the first word of every argv list handed to
    subprocess (run, Popen, ...) or kept in a variable named like argv or cmd,
    the runtime after "--" in a stagelog command line, every
    shutil.which("NAME"), and the commands of every shell script in a
    string ("sh", "-c", SCRIPT and "#!/bin/sh" files the tests write);
    its imported modules must import too;
  - shell (./dev, .ci/run, tests/**/*.sh, the bash completion): the command
    word of every simple command, with wrappers (env, exec, setsid,
    timeout, ...) looked through;
  - C (tests/**/*.c): system() and snprintf(cmd, ...) command lines, the
    literal first word of an argv array or exec*() call, access(P, X_OK);
  - meson (every meson.build): find_program('NAME').

Each program must be on PATH (or at its absolute path) and belong to an
installed package that ./dev installs (PKGS, PL_PKGS) or that every minbase
has (Essential or Priority required). Programs only the power-loss harness
calls (tests/powerloss/) are needed only by root, who alone runs it.
Programs in OPTIONAL are used only where installed (a test skips without
them) and need not be in PKGS.
Exit 0 when all are provided, 1 otherwise.

Usage: tools-check.py [SOURCE_DIR] [-v]"""

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys

TOP = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("-")
                      else os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
VERBOSE = "-v" in sys.argv

# Shell builtins and keywords (dash and bash): never a program to install.
BUILTINS = set("""
    . : [ [[ ]] alias bg break builtin cd command compgen complete compopt continue declare echo eval
    exec exit export false fc fg getopts hash jobs kill let local mapfile printf pwd read readarray
    readonly return set shift shopt source test times trap true type typeset ulimit umask unalias
    unset wait
""".split())
KEYWORDS = set("if then else elif fi do done while until for in case esac function select time ! { }".split())
# Commands that run the next word as a program: (name, options that take an argument).
WRAPPERS = {"env": (), "exec": ("-a",), "nohup": (), "setsid": (), "timeout": ("-s", "-k", "--signal", "--kill-after"),
            "nice": ("-n",), "command": ()}

# Programs the build tools run that no source names: meson runs ninja and
# the C compiler (cc, gcc by default).
IMPLIED = {"ninja": "meson's backend", "cc": "meson's default C compiler"}

# Programs a suite uses only where they are installed, and skips (with a
# reason) where not: not in PKGS, being large, and never needed for a pass.
# zsh and fish exist on Debian 12, so ./dev installs them (the completion
# suite runs both for real); nothing is optional today.
OPTIONAL = {}

# Words in a program's place that are deliberately not programs.
NOT_PROGRAMS = {
    # Runtimes the CLI suites name to see "runtime not found" (exit 127).
    "no-such-runtime-here": "a runtime that must not exist (test_cli.py)",
    "no-such-runtime-x": "a runtime that must not exist (test_redaction.py)",
    # bash-completion's own functions: the completion calls each only
    # after `declare -F` found it.
    "_filedir": "a bash-completion function",
    "_init_completion": "a bash-completion function",
    "_pids": "a bash-completion function",
}

NAME_RE = re.compile(r"^(/[A-Za-z0-9_.+/-]+|[A-Za-z_][A-Za-z0-9_.+-]*)$")
ASSIGN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


# ---- shell ----

def _skip_balanced(s, i, open_ch, close_ch):
    """s[i] is just past an opening open_ch: the index just past its match."""
    depth = 1
    while i < len(s) and depth:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "'":
            j = s.find("'", i + 1)
            i = len(s) if j < 0 else j + 1
            continue
        if c == open_ch:
            depth += 1
        elif c == close_ch:
            depth -= 1
        i += 1
    return i


def _shell_commands(s):
    """The simple commands of script s as lists of words (quotes removed; a
    word holding an expansion starts with '$'); command substitutions are
    commands of their own."""
    cmds, words, word, expanded = [], [], [], False
    quote = None   # None, "'" or '"'
    depth = 0      # subshell parentheses
    cases = 0      # case ... esac open
    pattern = False  # reading a case pattern, up to its ")"
    i = 0

    def end_word():
        nonlocal word, expanded
        if word or expanded:
            w = "".join(word)
            words.append("$" + w if expanded else w)
        word, expanded = [], False

    def end_cmd():
        nonlocal words, cases, pattern
        end_word()
        if words and words[0] == "case":
            cases += 1
            pattern = True
        elif words and words[0] == "esac":
            cases -= 1
        elif words and not pattern:
            cmds.append(words)
        words = []

    while i < len(s):
        c = s[i]
        if quote == "'" and c != "'":
            word.append(c)
            i += 1
            continue
        if c == "\\":
            if i + 1 < len(s) and s[i + 1] != "\n":
                word.append(s[i + 1])
            i += 2
            continue
        if c == "$" and s.startswith("$((", i):
            i = _skip_balanced(s, i + 3, "(", ")") + 1
            expanded = True
            continue
        if c == "$" and s.startswith("$(", i):
            j = _skip_balanced(s, i + 2, "(", ")")
            cmds.extend(_shell_commands(s[i + 2:j - 1]))
            expanded = True
            i = j
            continue
        if c == "`":
            j = s.find("`", i + 1)
            j = len(s) if j < 0 else j
            cmds.extend(_shell_commands(s[i + 1:j]))
            expanded = True
            i = j + 1
            continue
        if c == "$" and s.startswith("${", i):
            i = _skip_balanced(s, i + 2, "{", "}")
            expanded = True
            continue
        if c == "$":
            expanded = True
            i += 1
            continue
        if quote == '"' and c != '"':
            word.append(c)
            i += 1
            continue
        if c in "'\"":
            quote = None if quote == c else c
            i += 1
            continue
        if c == "#" and not word and not expanded:
            j = s.find("\n", i)
            i = len(s) if j < 0 else j
            continue
        if c in " \t":
            end_word()
            if pattern and words == ["esac"]:
                words, pattern = [], False
                cases -= 1
        elif c == ";" and s.startswith(";;", i):
            end_cmd()
            pattern = cases > 0
            i += 1
        elif c == "|" and pattern:
            end_word()
        elif c in "\n;&|":
            if not pattern:
                end_cmd()
            else:
                end_word()
        elif c == "(" and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=", "".join(word)):
            # NAME=(...): an array assignment.
            i = _skip_balanced(s, i + 1, "(", ")")
            word.append("()")
            continue
        elif c == "(" and s.startswith("((", i) and not word:
            # (( ... )): arithmetic.
            i = _skip_balanced(s, i + 2, "(", ")") + 1
            continue
        elif c == "(" and not pattern:
            end_cmd()
            depth += 1
        elif c == ")":
            if pattern:
                # The end of a case pattern ("test)", "77)", "a|b)").
                end_word()
                words, pattern = [], False
            elif depth:
                depth -= 1
                end_cmd()
            else:
                end_word()
                words = []
        else:
            word.append(c)
        i += 1
    end_cmd()
    return cmds


def _strip_heredocs(text):
    out, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        m = re.search(r"<<(-?)\s*['\"]?([A-Za-z_][A-Za-z0-9_]*)['\"]?", line)
        i += 1
        if m and "<<<" not in line:
            while i < len(lines) and (lines[i].strip() if m.group(1) else lines[i]) != m.group(2):
                i += 1
            i += 1
    return "\n".join(out)


def shell_programs(text):
    """The programs a shell script calls (not its own functions)."""
    text = _strip_heredocs(text)
    functions = set(re.findall(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(\)", text, re.M))
    progs = []
    for words in _shell_commands(text):
        k = 0
        forced = False   # after env, exec, ...: a program even if a builtin's name
        while k < len(words):
            w = words[k]
            if forced and not w.startswith("$"):
                progs.append(w)
                break
            if w in KEYWORDS:
                if w in ("for", "case", "select"):
                    break
                k += 1
                continue
            if re.match(r"^(CC|CXX)=[^$]", w):
                progs.append(w.split("=", 1)[1])   # CC=clang meson setup ...
            if ASSIGN_RE.match(w) or re.match(r"^\d*[<>]", w):
                k += 2 if re.fullmatch(r"\d*[<>]+&?", w) else 1
                continue
            if w.startswith("$") or w in functions or w in BUILTINS - set(WRAPPERS):
                break
            if w not in BUILTINS:
                progs.append(w)
            if w not in WRAPPERS:
                break
            # Look through the wrapper to the program it runs.
            k += 1
            if w == "command" and k < len(words) and words[k] in ("-v", "-V"):
                # command -v PROG: the script uses PROG when it is there.
                progs += words[k + 1:k + 2]
                break
            forced = w != "command"
            while k < len(words) and (words[k].startswith("-") or ASSIGN_RE.match(words[k])):
                k += 2 if words[k] in WRAPPERS[w] else 1
            if w == "timeout" and k < len(words):
                k += 1  # the duration
    return progs


# ---- Python ----

SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output"}


def _const_str(node):
    """The string a node stands for, when known: a constant, or the
    constant left of a % format."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        return _const_str(node.left)
    return None


def _leftmost_list(node):
    while isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        node = node.left
    return node if isinstance(node, ast.List) else None


def _call_name(node):
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None


def python_programs(text):
    tree = ast.parse(text)
    names = {}   # variable -> the strings assigned to it anywhere
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            v = _const_str(node.value)
            for t in node.targets:
                if isinstance(t, ast.Name) and v is not None:
                    names.setdefault(t.id, []).append(v)
    progs, scripts, modules = [], [], []

    def scripts_of(node):
        if isinstance(node, ast.Name):
            return names.get(node.id, [])
        v = _const_str(node)
        return [v] if v is not None else []

    def argv(elts):
        first = _const_str(elts[0]) if elts else None
        if first is not None:
            progs.append(first)
            if first in ("sh", "bash", "/bin/sh") and len(elts) > 2 and _const_str(elts[1]) == "-c":
                scripts.extend(scripts_of(elts[2]))

    def after_dashdash(elts):
        for a, b in zip(elts, elts[1:]):
            if _const_str(a) == "--" and _const_str(b) is not None:
                argv(elts[elts.index(b):])
                break

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _call_name(node)
            if name in SUBPROCESS_CALLS and node.args:
                lst = _leftmost_list(node.args[0])
                if lst is not None:
                    argv(lst.elts)
            if name == "get" and len(node.args) == 2 and _const_str(node.args[0]) in ("CC", "CXX"):
                progs.append(_const_str(node.args[1]))   # os.environ.get("CC", "cc")
            if name == "which" and node.args:
                v = _const_str(node.args[0])
                if v is not None:
                    progs.append(v)
                elif isinstance(node.args[0], ast.Name):
                    var = node.args[0].id
                    # for tool in ("runc", ...): ... which(tool)
                    for loop in ast.walk(tree):
                        if isinstance(loop, ast.For) and isinstance(loop.target, ast.Name) \
                                and loop.target.id == var and isinstance(loop.iter, (ast.Tuple, ast.List)):
                            progs += [x for x in map(_const_str, loop.iter.elts) if x is not None]
            after_dashdash(node.args)
        elif isinstance(node, ast.List):
            after_dashdash(node.elts)
        elif isinstance(node, ast.For) and isinstance(node.iter, ast.Tuple):
            # for p in ("/bin/busybox", "/usr/bin/busybox"): the program's
            # places, looked at in turn.
            paths = [_const_str(e) for e in node.iter.elts]
            if paths and all(x and re.match(r"^/(usr/)?s?bin/", x) for x in paths):
                progs.append(paths[0])
        elif isinstance(node, (ast.Assign, ast.Return)):
            value = node.value
            targets = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
            lst = _leftmost_list(value) if value is not None else None
            if lst is not None and (isinstance(node, ast.Return) or any(re.search(r"argv|cmd", t) for t in targets)):
                argv(lst.elts)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("#!/bin/sh"):
            scripts.append(node.value)
        elif isinstance(node, ast.Import):
            modules += [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            modules.append(node.module.split(".")[0])
    for s in scripts:
        progs += shell_programs(s)
    return progs, modules


# ---- C and meson ----

def _c_unescape(s):
    return s.encode().decode("unicode_escape")


def c_programs(text):
    progs = []
    for m in re.finditer(r'\bsystem\(\s*"((?:[^"\\]|\\.)*)"', text):
        progs += shell_programs(_c_unescape(m.group(1)))
    for m in re.finditer(r'\bsnprintf\(\s*cmd\s*,[^,]*,\s*"((?:[^"\\]|\\.)*)"', text):
        progs += shell_programs(_c_unescape(m.group(1)))
    found = []
    for pat in (r'\bexec[lv]p?e?\(\s*"([^"]+)"',
                r'\baccess\(\s*"([^"]+)"\s*,\s*X_OK\s*\)'):
        found += re.findall(pat, text)
    # char *argv[] = { "PROG", ..., "--", "RUNTIME", ... };
    for m in re.finditer(r'\bchar\s*\*\s*\w*argv\[\]\s*=\s*\{(.*?)\};', text, re.S):
        items = [x.strip() for x in m.group(1).split(",")]
        lits = [x[1:-1] if len(x) > 1 and x[0] == x[-1] == '"' else None for x in items]
        if lits and lits[0]:
            found.append(lits[0])
        found += [b for a, b in zip(lits, lits[1:]) if a == "--" and b]
    return progs + [p for p in found if not p.startswith("/proc/")]


def meson_programs(text):
    return re.findall(r"find_program\(\s*'([^']+)'", text)


# ---- the sources ----

def sources():
    """(path relative to TOP, kind) of every file to read."""
    out = []
    for d, dirs, files in os.walk(TOP):
        dirs[:] = sorted(x for x in dirs if not x.startswith((".", "build")) and x != "__pycache__")
        for n in sorted(files):
            rel = os.path.relpath(os.path.join(d, n), TOP)
            top = rel.split(os.sep)[0]
            if n == "meson.build":
                out.append((rel, "meson"))
            elif top != "tests":
                continue
            elif n.endswith(".py"):
                out.append((rel, "python"))
            elif n.endswith(".sh"):
                out.append((rel, "shell"))
            elif n.endswith(".c"):
                out.append((rel, "c"))
    for rel in ("dev", ".ci/run", "docs/stagelog.bash-completion"):
        if os.path.exists(os.path.join(TOP, rel)):
            out.append((rel, "shell"))
    return out


FUNCTION_RE = re.compile(r"^\s*(?:function\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*\(\)", re.M)


def collect():
    """{program: [files]}, {module: [files]}, and the kinds that gave none."""
    progs, modules, found_kinds, kinds = {}, {}, set(), set()
    # A shell function defined in any of the scripts (the completion's
    # _stagelog, which test_cli.py calls after sourcing it) is no program.
    functions = set()
    for rel, kind in sources():
        if kind == "shell":
            with open(os.path.join(TOP, rel), encoding="utf-8") as f:
                functions.update(FUNCTION_RE.findall(f.read()))
    for p, why in IMPLIED.items():
        progs[p] = ["(" + why + ")"]
    for rel, kind in sources():
        kinds.add(kind)
        with open(os.path.join(TOP, rel), encoding="utf-8") as f:
            text = f.read()
        mods = []
        if kind == "python":
            ps, mods = python_programs(text)
        elif kind == "shell":
            ps = shell_programs(text)
        elif kind == "c":
            ps = c_programs(text)
        else:
            ps = meson_programs(text)
        for p in ps:
            if p in NOT_PROGRAMS or not NAME_RE.match(p):
                continue
            if p in KEYWORDS or p in functions:
                continue
            found_kinds.add(kind)
            progs.setdefault(p, [])
            if rel not in progs[p]:
                progs[p].append(rel)
        for m in mods:
            modules.setdefault(m, [])
            if rel not in modules[m]:
                modules[m].append(rel)
    return progs, modules, kinds - found_kinds


def dev_packages():
    with open(os.path.join(TOP, "dev"), encoding="utf-8") as f:
        text = f.read()
    pkgs = set()
    for var in ("PKGS", "PL_PKGS"):
        m = re.search(r'^%s="([^"]*)"' % var, text, re.M)
        if m:
            pkgs.update(m.group(1).split())
    return pkgs


def provided_packages(have_dpkg):
    """The installed packages a fresh machine has after ./dev: those every
    minbase has (Essential or Priority required), ./dev's PKGS and PL_PKGS,
    and everything these depend on (python3 brings python3-minimal, which
    holds /usr/bin/python3)."""
    todo = dev_packages()
    if not have_dpkg:
        return todo
    out = subprocess.run(["dpkg-query", "-W", "-f",
                          "${Package}\t${Essential}\t${Priority}\t${Depends}, ${Pre-Depends}\t${db:Status-Abbrev}\n"],
                         stdout=subprocess.PIPE, text=True).stdout
    deps = {}
    for line in out.splitlines():
        f = line.split("\t")
        if len(f) != 5 or not f[4].startswith("ii"):
            continue
        deps[f[0]] = [re.sub(r"[\s(:].*", "", alt.strip()) for d in f[3].split(",") for alt in d.split("|")]
        if f[1] == "yes" or f[2] == "required":
            todo.add(f[0])
    todo = list(todo)
    seen = set()
    while todo:
        p = todo.pop()
        if p in seen or p not in deps:
            continue
        seen.add(p)
        todo += deps[p]
    return seen


def _variants(path):
    """path, and its twin across the merged /usr (dpkg knows one of them)."""
    out = [path]
    for a, b in (("/usr/bin/", "/bin/"), ("/usr/sbin/", "/sbin/"), ("/usr/lib/", "/lib/")):
        if path.startswith(a):
            out.append(b + path[len(a):])
        elif path.startswith(b):
            out.append(a + path[len(b):])
    return out


def _chain(path):
    """path and each link it leads through, one readlink at a time."""
    out = []
    for _ in range(16):
        out.append(path)
        if not os.path.islink(path):
            break
        path = os.path.normpath(os.path.join(os.path.dirname(path), os.readlink(path)))
    return out


def owners(paths):
    """{path: package} for the paths dpkg knows."""
    if not paths:
        return {}
    out = subprocess.run(["dpkg-query", "-S"] + sorted(paths), stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True).stdout
    found = {}
    for line in out.splitlines():
        if line.startswith("diversion ") or ": " not in line:
            continue
        pkgs, path = line.split(": ", 1)
        found[path] = pkgs.split(",")[0].strip().split(":")[0]
    return found


def locate(prog):
    if prog.startswith("/"):
        return prog if os.access(prog, os.X_OK) else None
    # The system's folders only: what a fresh machine has is in the
    # question, not a python under ~/.pyenv or a tool in /usr/local.
    return shutil.which(prog, path="/usr/sbin:/usr/bin:/sbin:/bin")


def main():
    progs, modules, silent = collect()
    failures = []
    if silent:
        failures.append("no program found in the %s sources: the extraction is broken" % ", ".join(sorted(silent)))
    have_dpkg = shutil.which("dpkg-query") is not None
    allowed = provided_packages(have_dpkg)
    is_root = os.geteuid() == 0

    where = {p: locate(p) for p in progs}
    chains = {p: [v for c in _chain(w) for v in _variants(c)] if w else [] for p, w in where.items()}
    owned = owners({v for c in chains.values() for v in c}) if have_dpkg else {}

    rows = []
    for p in sorted(progs):
        files = ", ".join(progs[p])
        root_only = all(f.startswith(os.path.join("tests", "powerloss") + os.sep) for f in progs[p])
        w = where[p]
        if p in OPTIONAL and (not w or not have_dpkg):
            rows.append((p, w or "-", "optional: " + OPTIONAL[p], files))
            continue
        if not w:
            if root_only and not is_root:
                rows.append((p, "-", "skipped: only root runs the power-loss harness", files))
                continue
            failures.append("%s (called in %s) is not installed: add its package to PKGS in ./dev" % (p, files))
            rows.append((p, "-", "MISSING", files))
            continue
        if not have_dpkg:
            rows.append((p, w, "? (no dpkg)", files))
            continue
        pkg = next((owned[v] for v in chains[p] if v in owned), None)
        if pkg is None:
            failures.append("%s (%s, called in %s) belongs to no package" % (p, w, files))
            rows.append((p, w, "NO PACKAGE", files))
        elif pkg not in allowed and p in OPTIONAL:
            rows.append((p, w, pkg + " (optional)", files))
        elif pkg not in allowed:
            failures.append("%s (%s, called in %s) comes from %s, which ./dev does not install "
                            "and a minbase does not have: add %s to PKGS in ./dev" % (p, w, files, pkg, pkg))
            rows.append((p, w, pkg + " (NOT IN ./dev)", files))
        else:
            rows.append((p, w, pkg, files))

    for m in sorted(modules):
        beside = any(os.path.exists(os.path.join(TOP, os.path.dirname(f), m + ".py")) for f in modules[m])
        if not beside and importlib.util.find_spec(m) is None:
            failures.append("python module %s (imported in %s) cannot be imported" % (m, ", ".join(modules[m])))

    width = max(len(r[0]) for r in rows) if rows else 0
    pwidth = max(len(r[2]) for r in rows) if rows else 0
    for p, w, pkg, files in rows:
        print("%-*s  %-*s  %s%s" % (width, p, pwidth, pkg, w, ("  (" + files + ")") if VERBOSE else ""))
    print("tools-check: %d programs, %d python modules" % (len(rows), len(modules)))
    for f in failures:
        print("FAIL: " + f)
    print("%d passed, %d failed" % (len(rows) + len(modules) - len(failures), len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
