#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The docs suite's drift check: the binary, the man page and the contract
say the same.

For the global options and for every command: the options (and which may be
repeated, `[--opt ARG]...`) in `stagelog COMMAND --help`, in the man page's
SYNOPSIS and in its section of COMMANDS (synopsis and option list), and in
docs/interface.md's command table. For the exit codes: the man page's EXIT
STATUS, docs/interface.md's exit status table, and the codes the binary can
return (cli/exit.c's table and fallback, and the runtime codes of `run`).

The contract may be ahead of the code: what docs/interface.md promises that
the binary does not do yet is named below, never skipped silently, and an
entry that the binary does do by now fails the check until it is removed.

Usage: STAGELOG=build/cli/stagelog test_docs.py [SOURCE_DIR]"""

import os
import re
import subprocess
import sys
import unittest

STAGELOG = os.environ.get("STAGELOG", "stagelog")
TOP = os.path.abspath(sys.argv.pop(1) if len(sys.argv) > 1 else
                      os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

# Contract options not yet implemented: in docs/interface.md (v3), not yet
# in the binary (nor, so, in the man page, which documents the binary).
# Each is implemented by a colleague later; remove its entry then.
CONTRACT_OPTIONS_NOT_YET_IMPLEMENTED = {}
# Contract exit codes not yet implemented, likewise.
CONTRACT_EXITS_NOT_YET_IMPLEMENTED = set()

OPT_RE = re.compile(r"(?<![\w-])(--?[a-z][a-z-]*)")
HELP_OPTS = {"-h", "--help"}


def read(rel):
    with open(os.path.join(TOP, rel), encoding="utf-8") as f:
        return f.read()


# ---- synopses ----

def synopsis_options(text):
    """{option: repeatable} of a synopsis in plain text: an option is
    repeatable when its [group] is followed by '...'."""
    opts = {}
    i = 0
    while i < len(text):
        if text[i] == "[":
            depth, j = 1, i + 1
            while j < len(text) and depth:
                depth += {"[": 1, "]": -1}.get(text[j], 0)
                j += 1
            group = text[i + 1:j - 1]
            rep = text.startswith("...", j)
            for o in OPT_RE.findall(group):
                opts[o] = opts.get(o, False) or rep
            i = j
            continue
        m = OPT_RE.match(text, i)
        if m and (i == 0 or text[i - 1] in " \t"):
            opts[m.group(1)] = opts.get(m.group(1), False) or text.startswith("...", m.end(1))
            i = m.end(1)
            continue
        i += 1
    return opts


# ---- roff ----

ALTERNATING = {"BR", "RB", "IR", "RI", "BI", "IB"}


def roff_args(line):
    args, cur, quoted, i = [], "", False, 0
    while i < len(line):
        c = line[i]
        if c == '"':
            quoted = not quoted
        elif c == " " and not quoted:
            if cur:
                args.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    if cur:
        args.append(cur)
    return args


def roff_text(s):
    s = s.replace("\\-", "-").replace("\\&", "").replace("\\|", "").replace("\\~", " ")
    s = re.sub(r"\\f[BIRP]", "", s)
    s = re.sub(r"\\\((em|dq)", "", s)
    return s


def roff_line(line):
    """The text a roff line shows (font macros joined as roff joins them)."""
    if not line.startswith("."):
        return roff_text(line)
    parts = line[1:].split(None, 1)
    macro, rest = parts[0], parts[1] if len(parts) > 1 else ""
    args = roff_args(rest)
    if macro in ALTERNATING:
        return roff_text("".join(args))
    if macro in ("B", "I", "SY"):
        return roff_text(" ".join(args))
    return ""


def man_command_sections(man):
    """{command: [lines]}: the .SS sections under COMMANDS."""
    out, in_commands, cur = {}, False, None
    for line in man.splitlines():
        if line.startswith(".SH"):
            in_commands = line.split(None, 1)[1].strip() == "COMMANDS"
            cur = None
            continue
        if in_commands and line.startswith(".SS"):
            cur = line.split(None, 1)[1].strip()
            out[cur] = []
            continue
        if cur:
            out[cur].append(line)
    return out


def man_section(man, name):
    lines, on = [], False
    for line in man.splitlines():
        if line.startswith(".SH"):
            on = line.split(None, 1)[1].strip().strip('"') == name
            continue
        if on:
            lines.append(line)
    return lines


def man_synopses(man):
    """{command: synopsis text after the command word} from SYNOPSIS: one
    .SY block per command, the command being its first .B word."""
    out, raw = {}, None
    for line in man_section(man, "SYNOPSIS"):
        if line.startswith(".SY"):
            raw = []
        elif line.startswith(".YS"):
            cmd = next((roff_args(l[3:])[0] for l in raw if l.startswith(".B ")), None)
            text = " ".join(t for t in map(roff_line, raw) if t)
            if cmd:
                out[cmd] = text.split(cmd, 1)[1]
            raw = None
        elif raw is not None:
            raw.append(line)
    return out


def man_command(lines, cmd):
    """(synopsis text after the command word, options of its .TP list)."""
    syn = []
    for line in lines:
        if line.startswith(".PP"):
            break
        syn.append(roff_line(line))
    syn = " ".join(t for t in syn if t)
    syn = syn.split("stagelog " + cmd, 1)[1] if ("stagelog " + cmd) in syn else syn
    return syn, man_tp_options(lines)


def man_tp_options(lines):
    opts = set()
    for a, b in zip(lines, lines[1:]):
        if a.startswith(".TP") and b.startswith(".B") and "\\-" in b:
            opts.update(OPT_RE.findall(roff_line(b)))
    return opts


# ---- --help ----

def help_of(cmd=None):
    argv = [STAGELOG] + ([cmd] if cmd else []) + ["--help"]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise AssertionError("%s exited %d: %s" % (" ".join(argv), p.returncode, p.stderr))
    return p.stdout


def help_command(text, cmd):
    """(synopsis after the command word, options of its option list)."""
    usage = text.split("\n\n", 1)[0]
    syn = " ".join(l.strip() for l in usage.splitlines())
    syn = syn.split("stagelog " + cmd, 1)[1]
    listed = set()
    for line in text.splitlines():
        if re.match(r"^  -", line):
            listed.update(OPT_RE.findall(line.split("  ", 2)[1] if line.count("  ") > 1 else line))
    return syn, listed


def help_commands(text):
    body = text.split("Commands:", 1)[1]
    return [l.split()[0] for l in body.splitlines() if l.startswith("  ") and l.strip()]


def help_globals(text):
    body = text.split("Global options:", 1)[1].split("Commands:", 1)[0]
    opts = set()
    for line in body.splitlines():
        if line.startswith("  -"):
            opts.update(OPT_RE.findall(line.strip().split("  ")[0]))
    return opts


# ---- docs/interface.md ----

def interface_tables(md):
    """(global option cells, {command: synopsis after the command word},
    exit codes) of the contract."""
    globals_, commands, codes = set(), {}, set()
    section = None
    for line in md.splitlines():
        if line.startswith("Global options"):
            section = "global"
        elif line.startswith("Commands:"):
            section = "commands"
        elif line.startswith("Exit status"):
            section = "exit"
        if not line.startswith("| ") or line.startswith("| ---") or line.startswith("| option") \
                or line.startswith("| command") or line.startswith("| code"):
            continue
        cell = line.split("|")[1].strip()
        if section == "global":
            globals_.update(OPT_RE.findall(" ".join(re.findall(r"`([^`]*)`", cell))))
        elif section == "commands":
            m = re.match(r"^`([a-z]+)(.*)`$", cell)
            if m:
                commands[m.group(1)] = m.group(2)
        elif section == "exit" and cell.isdigit():
            codes.add(int(cell))
    return globals_, commands, codes


def interface_command_options(commands, cmd):
    syn = commands[cmd]
    m = re.search(r"\[([a-z]+) options but (--[a-z-]+)\]", syn)
    opts = {}
    if m:
        # run: "[stage options but --owner]"
        opts = {o: r for o, r in interface_command_options(commands, m.group(1)).items() if o != m.group(2)}
        syn = syn.replace(m.group(0), "")
    opts.update(synopsis_options(syn))
    return opts


# ---- exit codes of the code ----

def sysexits():
    names = {}
    try:
        with open("/usr/include/sysexits.h") as f:
            for m in re.finditer(r"#define\s+(EX_\w+)\s+(\d+)", f.read()):
                names[m.group(1)] = int(m.group(2))
    except OSError:
        pass
    return names


def code_exit_codes():
    names = sysexits()
    exit_c = read("cli/exit.c")
    table = re.search(r"exit_table\[\]\s*=\s*\{(.*?)\n\};", exit_c, re.S).group(1)
    used = set(re.findall(r"\b(EX_[A-Z]+)\b", table))
    fn = re.search(r"int cli_exit_code\(.*?\n\}", exit_c, re.S).group(0)
    used |= set(re.findall(r"return (EX_[A-Z]+);", fn))
    codes = {names[n] for n in used if n in names}
    if len(codes) != len(used):
        raise AssertionError("unknown sysexits names in cli/exit.c: %s" % sorted(used - set(names)))
    # run's codes: its stage not released, the runtime not executable or
    # not found, by the names cli.h gives them.
    values = {n: int(v) for n, v in re.findall(r"\b(CLI_EXIT_\w+) = (\d+)", read("cli/cli.h"))}
    run_c = read("cli/cmd-run.c")
    for stmt in re.findall(r"(?:\breturn\b|\b_exit\()([^;]*);", run_c):
        codes |= {int(c) for c in re.findall(r"\b(12[5-7])\b", stmt)}
        codes |= {values[n] for n in re.findall(r"\b(CLI_EXIT_RUN\w+)\b", stmt)}
    return codes


def man_exit_codes(man):
    lines = man_section(man, "EXIT STATUS")
    return {int(b.split()[1]) for a, b in zip(lines, lines[1:])
            if a.startswith(".TP") and re.match(r"^\.B \d+$", b)}


class TestDocs(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.man = read("docs/stagelog.1")
        cls.md = read("docs/interface.md")
        cls.help = help_of()
        cls.commands = help_commands(cls.help)
        cls.md_globals, cls.md_commands, cls.md_codes = interface_tables(cls.md)
        cls.man_syn = man_synopses(cls.man)
        cls.man_cmds = man_command_sections(cls.man)

    def test_commands_everywhere(self):
        self.assertGreaterEqual(len(self.commands), 10, "cannot read the commands from --help")
        self.assertEqual(sorted(self.man_syn), sorted(self.commands), "SYNOPSIS of the man page vs --help")
        self.assertEqual(sorted(self.man_cmds), sorted(self.commands), "COMMANDS of the man page vs --help")
        # help is told of in the contract's global options, not its table.
        self.assertEqual(sorted(self.md_commands), sorted(c for c in self.commands if c != "help"),
                         "docs/interface.md's command table vs --help")

    def test_global_options(self):
        from_help = help_globals(self.help)
        from_man = man_tp_options(man_section(self.man, "GLOBAL OPTIONS"))
        self.assertGreaterEqual(len(from_help), 6)
        self.assertEqual(from_man, from_help, "GLOBAL OPTIONS of the man page vs stagelog --help")
        self.assertEqual(self.md_globals, from_help, "docs/interface.md's global options vs stagelog --help")

    def test_command_options(self):
        for cmd in self.commands:
            with self.subTest(command=cmd):
                text = help_of(cmd)
                syn, listed = help_command(text, cmd)
                from_help = synopsis_options(syn)
                # --help: its synopsis and its option list agree.
                self.assertEqual(set(from_help), listed - HELP_OPTS,
                                 "%s --help: synopsis vs option list" % cmd)
                man_syn = synopsis_options(self.man_syn[cmd])
                self.assertEqual(man_syn, from_help, "%s: man page SYNOPSIS vs --help" % cmd)
                sec_syn, sec_listed = man_command(self.man_cmds[cmd], cmd)
                self.assertEqual(synopsis_options(sec_syn), from_help,
                                 "%s: man page COMMANDS synopsis vs --help" % cmd)
                if cmd == "run":
                    # run's section describes its own options and refers
                    # to stage for the others (all but --owner).
                    _, stage_listed = man_command(self.man_cmds["stage"], "stage")
                    sec_listed |= stage_listed - {"--owner"}
                self.assertEqual(sec_listed, set(from_help), "%s: options described in the man page vs --help" % cmd)
                if cmd == "help":
                    continue
                contract = interface_command_options(self.md_commands, cmd)
                not_yet = {o: r for (c, o), r in CONTRACT_OPTIONS_NOT_YET_IMPLEMENTED.items() if c == cmd}
                for o in not_yet:
                    self.assertNotIn(o, from_help, "%s %s is implemented now: remove it from "
                                     "CONTRACT_OPTIONS_NOT_YET_IMPLEMENTED" % (cmd, o))
                    self.assertIn(o, contract, "%s %s is not in the contract any more" % (cmd, o))
                self.assertEqual(contract, dict(from_help, **not_yet),
                                 "%s: docs/interface.md vs --help (option: repeatable)" % cmd)

    def test_exit_codes(self):
        man = man_exit_codes(self.man)
        code = code_exit_codes()
        self.assertGreaterEqual(len(man), 10, "cannot read EXIT STATUS from the man page")
        for c in CONTRACT_EXITS_NOT_YET_IMPLEMENTED:
            self.assertNotIn(c, man, "exit %d is in the man page: remove it from "
                             "CONTRACT_EXITS_NOT_YET_IMPLEMENTED" % c)
            self.assertNotIn(c, code, "exit %d is implemented: remove it from "
                             "CONTRACT_EXITS_NOT_YET_IMPLEMENTED" % c)
        self.assertEqual(self.md_codes, man | CONTRACT_EXITS_NOT_YET_IMPLEMENTED,
                         "exit codes: docs/interface.md vs the man page's EXIT STATUS")
        self.assertEqual(code - man, set(), "exit codes the code returns that the man page does not list")
        # 0 and 1 are the commands' own; every other documented code is
        # one the code can return.
        self.assertEqual(man - code - {0, 1}, set(), "exit codes in the man page that the code never returns")


if __name__ == "__main__":
    unittest.main(verbosity=2)
