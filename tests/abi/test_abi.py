#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The abi suite: libstagelog.so's ABI is what the public headers promise.

  symbols LIB HEADER...
      Every SL_PUBLIC function of the public headers is exported by LIB
      under the version node STAGELOG_0 (libstagelog.sym), and LIB exports
      nothing else (objdump -T).

  baseline LIB BASELINE SANITIZE DEBUG BUILD_ROOT HEADER...
      The ABI of LIB (abidw, restricted to the public headers) equals the
      committed BASELINE (abidiff): a struct that gains a field, a function
      whose signature changes, one removed or added, each fails this test
      until the baseline is regenerated on purpose. Exit 77 (meson's skip),
      with the reason, when abidw or abidiff is missing (Debian:
      abigail-tools), when LIB was built with sanitizers (SANITIZE is
      b_sanitize, not "none") or without debug info (DEBUG is "false", or
      LIB has no .debug_info): abidw reads the types from DWARF.

  update LIB BASELINE SANITIZE DEBUG BUILD_ROOT HEADER...
      Writes BASELINE anew from LIB. On purpose only, after a change of the
      ABI that docs/interface.md ("Library") allows, with the soname or the
      version node changed as it says:

          ./dev abi-baseline      (builds, then: meson compile -C build abi-baseline)

      then commit tests/abi/libstagelog.abi with the change.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

NODE = "STAGELOG_0"
SKIP = 77


def run(argv, cwd=None):
    p = subprocess.run(argv, capture_output=True, text=True, cwd=cwd)
    if p.returncode != 0:
        sys.exit("%s exited %d:\n%s%s" % (" ".join(argv), p.returncode, p.stdout, p.stderr))
    return p.stdout


def declared(headers):
    """The names of the functions the public headers mark SL_PUBLIC."""
    names = set()
    for h in headers:
        with open(h) as f:
            text = f.read()
        # An old name kept for compatibility is SL_PUBLIC SL_DEPRECATED("new").
        names |= set(re.findall(r'^SL_PUBLIC\b(?:\s+SL_DEPRECATED\("\w+"\))?[^;(]*?\b(sl_\w+)\s*\(', text, re.M))
    return names


def exported(lib):
    """{name: version node} of the symbols LIB defines in its dynamic table."""
    syms = {}
    for line in run(["objdump", "-T", lib]).splitlines():
        # 0000000000005870 g    DF .text	0000000000000015  STAGELOG_0  sl_store_state_name
        m = re.match(r"^[0-9a-f]+ (.{7}) (\S+)\s+[0-9a-f]+\s+(?:(\S+)\s+)?(\S+)$", line)
        if not m or m.group(2) == "*UND*":
            continue
        syms[m.group(4)] = (m.group(3) or "").strip("()")
    return syms


def check_symbols(lib, headers):
    want = declared(headers)
    if len(want) < 30:
        sys.exit("only %d SL_PUBLIC functions found in %s: the pattern is broken" % (len(want), headers))
    syms = exported(lib)
    # The version script's node is itself an absolute symbol.
    syms.pop(NODE, None)
    problems = []
    for name in sorted(want - set(syms)):
        problems.append("declared SL_PUBLIC but not exported: " + name)
    for name in sorted(set(syms) - want):
        problems.append("exported but not an SL_PUBLIC function of a public header: " + name)
    for name in sorted(want & set(syms)):
        if syms[name] != NODE:
            problems.append("%s is exported under %r, not %s" % (name, syms[name], NODE))
    if problems:
        sys.exit("\n".join(problems))
    print("%d functions, each exported under %s, nothing else" % (len(want), NODE))


def skip_reason(lib, sanitize, debug):
    for tool in ("abidw", "abidiff"):
        if not shutil.which(tool):
            return "%s not found (Debian: apt-get install abigail-tools)" % tool
    if sanitize not in ("", "none"):
        return "built with -Db_sanitize=%s: the check runs on the plain build, whose library is the one released" % sanitize
    if debug != "true":
        return "built without debug info (-Ddebug=false): abidw reads the types from DWARF"
    if not re.search(r"\s\.debug_info\s", run(["objdump", "-h", lib])):
        return "%s has no .debug_info section (stripped?)" % lib
    return None


def dump(lib, build_root, headers, out):
    # No locations, paths or compilation folders: the baseline changes only
    # when the ABI does, not when a comment moves a declaration.
    # --exported-interfaces-only: without it, abidw 2.2 takes a function
    # that another file of the library calls from that caller's
    # declaration and never ties it to its symbol, so abidiff would not
    # compare sl_stage_begin's or sl_store_state_name's signature at all (7 of 37
    # functions were missed so).
    argv = ["abidw", "--no-show-locs", "--no-comp-dir-path", "--no-corpus-path", "--exported-interfaces-only",
            "--drop-private-types", "--out-file", out]
    # abidw keeps the types declared in these files and drops the others
    # to declarations, matching each file name as a string against the one
    # in DWARF, which is the name the compiler was given: relative to the
    # build folder ("../stage/sl-stage.h") in a meson build. Each header is
    # named that way and absolute, in case a compiler records the latter.
    for h in headers:
        argv += ["--header-file", os.path.relpath(h, build_root), "--header-file", os.path.abspath(h)]
    run(argv + [os.path.abspath(lib)], cwd=build_root)
    # What abidiff cannot see it cannot compare, and it says nothing about
    # it. A header name that matched nothing would drop every public
    # struct to a declaration, which abidiff counts as harmless: so the
    # dump must define struct sl_error (sl-basic.h) and struct
    # sl_stage_options. And every exported function must be tied to its
    # symbol, or its signature is never compared.
    with open(out) as f:
        text = f.read()
    for struct in ("sl_error", "sl_stage_options"):
        if not re.search(r"<class-decl name='%s' size-in-bits=" % struct, text):
            sys.exit("abidw's dump of %s does not define struct %s: the public headers were not matched "
                     "against its DWARF (%s)" % (lib, struct, " ".join(headers)))
    bound = set(re.findall(r"<function-decl name='(sl_\w+)'[^>]* elf-symbol-id='\1@@%s'" % NODE, text))
    unbound = sorted(set(n for n in exported(lib) if n.startswith("sl_")) - bound)
    if unbound:
        sys.exit("abidw's dump of %s has no signature for %s: abidiff would not compare them"
                 % (lib, ", ".join(unbound)))


def main(argv):
    if len(argv) >= 3 and argv[1] == "symbols":
        check_symbols(argv[2], argv[3:])
        return 0
    if len(argv) < 8 or argv[1] not in ("baseline", "update"):
        print(__doc__, file=sys.stderr)
        return 2
    mode, lib, baseline, sanitize, debug, build_root = argv[1:7]
    headers = argv[7:]
    reason = skip_reason(lib, sanitize, debug)
    if reason:
        if mode == "update":
            sys.exit("cannot write the baseline: " + reason)
        print("SKIP: " + reason)
        return SKIP
    if mode == "update":
        dump(lib, build_root, headers, baseline)
        print("wrote %s; commit it with the ABI change (docs/interface.md, \"Library\")" % baseline)
        return 0
    with tempfile.TemporaryDirectory(prefix="stagelog-abi-") as tmp:
        now = os.path.join(tmp, "libstagelog.abi")
        dump(lib, build_root, headers, now)
        p = subprocess.run(["abidiff", "--no-show-locs", baseline, now], capture_output=True, text=True)
    if p.returncode != 0:
        # abidiff's status is a bit mask: 1 error, 2 usage, 4 an ABI change,
        # 8 an incompatible one. Every change fails: an addition too is
        # reviewed, and gets a new version node.
        print(p.stdout + p.stderr)
        print("abidiff exited %d: the ABI of %s differs from %s.\n"
              "If the change is on purpose, follow docs/interface.md (\"Library\": the soname rule) and\n"
              "regenerate the baseline: ./dev abi-baseline" % (p.returncode, lib, baseline))
        return 1
    print("the ABI equals %s" % baseline)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
