#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""structure.py: the size and naming rules of the library and CLI sources.

Over the non-test C files of basic/ store/ stage/ oci/ recover/ cli/
(every .c and .h there; tests/ is not read), it finds:

  file      a file over MAX_FILE_LINES lines;
  function  a function over MAX_FUNCTION_LINES lines, counted from the line
            with its name to the line of its closing brace (at column 0);
  prefix    a private name with the public prefix sl_: a function, variable,
            struct, union or enum tag, typedef, enumerator or macro defined
            or declared in those folders whose name starts with sl_ but is
            not declared in a public header (the folders' sl-*.h and
            sl-*.h.in: sl-basic.h, sl-store.h, ...). The error writers of
            basic/macro.h (ALLOWED_PRIVATE) are the one exception.

It reads the sources as text (comments, strings and preprocessor lines
blanked), not through a compiler, so that it runs without a build.

Usage: structure.py [--report] [SOURCE_DIR]
  without --report: prints each violation, then a count of each kind;
                    exit 1 when there is any, 0 when there is none
  --report:         the same list in full, grouped by kind with the
                    largest first, and the public headers it read; exit 0
./dev lint runs it without --report."""

import glob
import os
import re
import sys

FOLDERS = ("basic", "store", "stage", "oci", "recover", "cli")
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60
# Private helpers that keep the sl_ prefix on purpose (basic/macro.h): the
# one way an error is written, shared by every folder (docs/design.md).
ALLOWED_PRIVATE = {"sl_err", "sl_err_replace", "sl_err_wrap", "sl_err_flag", "sl_err_clear"}
# Words that look like a call at file scope but are attributes or macros
# around a declaration, never its name.
NOT_NAMES = {"__attribute__", "__typeof__", "typeof", "_Alignas", "alignas", "_Static_assert", "static_assert",
             "PRINTF_FMT", "_cleanup_", "sizeof", "__extension__", "_Generic", "__asm__", "asm"}
C_KEYWORDS = {"if", "for", "while", "switch", "return", "do", "else", "case", "goto", "struct", "union", "enum"}

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def blank(text):
    """text with comments, string and character literals and preprocessor
    lines replaced by spaces (newlines kept, so that offsets keep their
    line), and the #define'd names, with their lines."""
    out = list(text)
    defines = []
    i, n = 0, len(text)
    at_line_start = True
    while i < n:
        c = text[i]
        if c == "\n":
            at_line_start = True
            i += 1
            continue
        if at_line_start and c in " \t":
            i += 1
            continue
        if at_line_start and c == "#":
            # A preprocessor line, with its continuations.
            j = i
            while j < n and (text[j] != "\n" or text[j - 1] == "\\"):
                j += 1
            m = re.match(r"#\s*define\s+([A-Za-z_][A-Za-z0-9_]*)", text[i:j])
            if m:
                defines.append((m.group(1), text.count("\n", 0, i) + 1))
            for k in range(i, j):
                if out[k] != "\n":
                    out[k] = " "
            i = j
            continue
        at_line_start = False
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j += 1
            # Keep the quotes: a string is a token (an initializer's value).
            for k in range(i + 1, min(j - 1, n)):
                if out[k] != "\n":
                    out[k] = " "
            i = j
            continue
        else:
            i += 1
            continue
        for k in range(i, j):
            if out[k] != "\n":
                out[k] = " "
        i = j
    return "".join(out), defines


class Source:
    def __init__(self, top, rel):
        self.rel = rel
        with open(os.path.join(top, rel), encoding="utf-8", errors="replace") as f:
            self.text = f.read()
        self.lines = self.text.count("\n") + (0 if self.text.endswith("\n") or not self.text else 1)
        self.code, self.defines = blank(self.text)
        self._starts = [0] + [m.end() for m in re.finditer("\n", self.code)]

    def line_of(self, off):
        lo, hi = 0, len(self._starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._starts[mid] <= off:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1

    def column_of(self, off):
        return off - self._starts[self.line_of(off) - 1]


def top_level(src):
    """Yields the file-scope pieces of src: (kind, start, end) where kind is
    'decl' for text up to a ';' or a '{' at file scope and 'body' for the
    braces that follow one (a function body, a struct or an initializer),
    end being just past the closing brace."""
    code = src.code
    i, n, start = 0, len(code), 0
    paren = 0
    while i < n:
        c = code[i]
        if c == "(":
            paren += 1
        elif c == ")":
            paren -= 1
        elif c == ";" and paren == 0:
            yield "decl", start, i + 1
            start = i + 1
        elif c == "{" and paren == 0:
            yield "decl", start, i
            depth, j = 1, i + 1
            while j < n and depth:
                if code[j] == "{":
                    depth += 1
                elif code[j] == "}":
                    depth -= 1
                j += 1
            yield "body", i, j
            i = j
            # What follows a struct body (its declarators) up to ';' belongs
            # to the same declaration.
            start = j
            continue
        i += 1


def called_name(decl):
    """The function a file-scope declaration declares or defines: the first
    identifier followed by '(' at parenthesis depth 0 that is not an
    attribute; None for a declaration of something else. Returns (name,
    offset in decl)."""
    depth = 0
    for m in re.finditer(r"[A-Za-z_][A-Za-z0-9_]*|[()=\[]", decl):
        t = m.group(0)
        if t == "(":
            depth += 1
        elif t == ")":
            depth -= 1
        elif t in "=[":
            if depth == 0:
                return None
        elif depth == 0 and t not in NOT_NAMES and t not in C_KEYWORDS:
            rest = decl[m.end():].lstrip()
            if rest.startswith("("):
                # int (*name)(...) declares a pointer, not a function.
                return t, m.start()
    return None


def functions(src):
    """(name, first line, last line) of each function definition."""
    pieces = list(top_level(src))
    out = []
    for k, (kind, s, e) in enumerate(pieces):
        if kind != "body" or k == 0 or pieces[k - 1][0] != "decl":
            continue
        decl = src.code[pieces[k - 1][1]:pieces[k - 1][2]]
        if not decl.rstrip().endswith(")") or re.search(r"=\s*$|\b(struct|union|enum)\b[^()]*$", decl):
            continue
        found = called_name(decl)
        if not found:
            continue
        name, off = found
        first = src.line_of(pieces[k - 1][1] + off)
        last = src.line_of(e - 1)
        out.append((name, first, last, src.column_of(e - 1)))
    return out


def declared_names(src):
    """(name, line, what) of every name src defines or declares at file
    scope or in an enum: functions, variables, tags, typedefs,
    enumerators, macros."""
    out = [(name, line, "macro") for name, line in src.defines]
    code = src.code
    for m in re.finditer(r"\b(struct|union|enum)\s+([A-Za-z_][A-Za-z0-9_]*)\s*(\{|;)", code):
        # A tag defined (or declared alone: struct sl_x;) here.
        out.append((m.group(2), src.line_of(m.start(2)), m.group(1)))
    for m in re.finditer(r"\benum(?:\s+[A-Za-z_][A-Za-z0-9_]*)?\s*\{([^}]*)\}", code):
        for e in re.finditer(r"(?:^|,)\s*([A-Za-z_][A-Za-z0-9_]*)", m.group(1)):
            out.append((e.group(1), src.line_of(m.start(1) + e.start(1)), "enumerator"))
    for kind, s, e in top_level(src):
        if kind != "decl":
            continue
        decl = code[s:e]
        # The names of a declaration: each identifier not preceded by
        # struct/union/enum and not followed by '(' unless it is the
        # function's name; types named by a typedef come first and are
        # references, but a private one is reported where it is defined.
        fn = called_name(decl)
        if fn:
            out.append((fn[0], src.line_of(s + fn[1]), "function"))
            continue
        prev = None
        depth = 0
        for m in re.finditer(r"[A-Za-z_][A-Za-z0-9_]*|[()\[\]=,]", decl):
            t = m.group(0)
            if t in "([":
                depth += 1
            elif t in ")]":
                depth -= 1
            elif t == "=":
                break
            elif depth == 0 and t != "," and prev not in ("struct", "union", "enum") and t.startswith("sl_"):
                what = "typedef" if re.match(r"\s*typedef\b", decl) else "variable"
                out.append((t, src.line_of(s + m.start()), what))
            prev = t
    return out


def public_names(top, headers):
    names = set()
    for h in headers:
        code, defines = blank(open(os.path.join(top, h), encoding="utf-8").read())
        names.update(re.findall(r"\bsl_[A-Za-z0-9_]*", code))
        names.update(d for d, _ in defines if d.startswith("sl_"))
    return names


def sources(top):
    out = []
    for d in FOLDERS:
        for dirpath, dirs, files in os.walk(os.path.join(top, d)):
            dirs[:] = sorted(x for x in dirs if not x.startswith("."))
            for f in sorted(files):
                if f.endswith((".c", ".h")):
                    out.append(os.path.relpath(os.path.join(dirpath, f), top))
    return out


def check(top):
    headers = sorted(os.path.relpath(p, top) for d in FOLDERS
                     for pat in ("sl-*.h", "sl-*.h.in") for p in glob.glob(os.path.join(top, d, pat)))
    public = public_names(top, headers)
    big_files, long_functions, private = [], [], {}
    for rel in sources(top):
        src = Source(top, rel)
        if src.lines > MAX_FILE_LINES:
            big_files.append((src.lines, rel))
        for name, first, last, col in functions(src):
            n = last - first + 1
            if n > MAX_FUNCTION_LINES:
                long_functions.append((n, rel, first, name))
        for name, line, what in declared_names(src):
            if name.startswith("sl_") and name not in public and name not in ALLOWED_PRIVATE:
                private.setdefault(name, []).append((rel, line, what))
    return headers, big_files, long_functions, private


def main(argv):
    report = "--report" in argv
    args = [a for a in argv[1:] if a != "--report"]
    if any(a.startswith("-") for a in args):
        print(__doc__.split("\n\n")[-1], file=sys.stderr)
        return 64
    top = os.path.abspath(args[0] if args else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    headers, big_files, long_functions, private = check(top)
    if not headers:
        print("structure: no public header (sl-*.h) found under %s: wrong SOURCE_DIR?" % top, file=sys.stderr)
        return 2
    big_files.sort(key=lambda x: (-x[0], x[1]))
    long_functions.sort(key=lambda x: (-x[0], x[1], x[2]) if report else (x[1], x[2]))
    if report:
        print("public headers: " + " ".join(headers))
        print("allowed private sl_ names: " + " ".join(sorted(ALLOWED_PRIVATE)))
        print("\nfiles over %d lines (%d):" % (MAX_FILE_LINES, len(big_files)))
    for n, rel in big_files:
        print("%s: %d lines, over %d" % (rel, n, MAX_FILE_LINES) if not report else "  %5d  %s" % (n, rel))
    if report:
        print("\nfunctions over %d lines (%d):" % (MAX_FUNCTION_LINES, len(long_functions)))
    for n, rel, line, name in long_functions:
        print("%s:%d: %s(): %d lines, over %d" % (rel, line, name, n, MAX_FUNCTION_LINES) if not report
              else "  %5d  %s:%d: %s()" % (n, rel, line, name))
    if report:
        print("\nprivate names with the public prefix sl_ (%d):" % len(private))
    for name in sorted(private):
        sites = private[name]
        rel, line, _ = sites[0]
        what = "/".join(sorted({w for _, _, w in sites}))
        more = " (and %d more places)" % (len(sites) - 1) if len(sites) > 1 else ""
        print("%s:%d: %s %s: private, but named with the public prefix sl_%s" % (rel, line, what, name, more)
              if not report else "  %s:%d: %s %s%s" % (rel, line, what, name, more))
    total = len(big_files) + len(long_functions) + len(private)
    print("structure: %d files over %d lines, %d functions over %d lines, %d private names with the sl_ prefix"
          % (len(big_files), MAX_FILE_LINES, len(long_functions), MAX_FUNCTION_LINES, len(private)),
          file=sys.stderr if not report else sys.stdout)
    if report:
        return 0
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
