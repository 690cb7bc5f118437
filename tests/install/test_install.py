#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The install suite: what an integrator gets from a default `meson install`.

  - a default build (prefix /usr/local) installs nothing outside the prefix;
  - `pkg-config --cflags stagelog` gives only stagelog's include folder and
    `--libs` only -lstagelog (with its -L), even when no other .pc file can
    be found; stagelog is shared only: no static library is installed and
    the .pc has no Libs.private or Requires (docs/design.md, "Shared only");
  - the README's C example compiles and links with only stagelog's .pc, in
    a file that defines its own strlcpy;
  - the versions agree: `pkg-config --modversion stagelog`, SL_VERSION_*
    and SL_VERSION_STRING of the installed sl-version.h (in a program built
    against the install), sl_version() of the installed libstagelog.so it
    loads, and the first line of the installed `stagelog --version`.
  - `man 3 FUNCTION` finds and renders a page for every function the
    installed library exports, and each section 3 page's EXAMPLE compiles
    and links against the installed headers and library.

Usage: test_install.py SOURCE_DIR"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

SOURCE = os.path.abspath(sys.argv.pop(1) if len(sys.argv) > 1 else
                         os.path.join(os.path.dirname(__file__), "..", ".."))


def run(argv, **kw):
    p = subprocess.run(argv, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise AssertionError("%s exited %d:\n%s%s" % (" ".join(argv), p.returncode, p.stdout, p.stderr))
    return p.stdout


class TestInstall(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="stagelog-install-")
        cls.dest = os.path.join(cls.tmp, "dest")
        build = os.path.join(cls.tmp, "build")
        run(["meson", "setup", "-Dprefix=/usr/local", "-Dtests=false", "-Dfuzz=disabled", build, SOURCE])
        run(["meson", "compile", "-C", build])
        run(["meson", "install", "-C", build, "--quiet"], env=dict(os.environ, DESTDIR=cls.dest))
        cls.files = []
        for dirpath, dirnames, filenames in os.walk(cls.dest):
            for n in filenames:
                cls.files.append(os.path.relpath(os.path.join(dirpath, n), cls.dest))
        pcs = [f for f in cls.files if f.endswith("/pkgconfig/stagelog.pc")]
        cls.pc_dir = os.path.join(cls.dest, os.path.dirname(pcs[0])) if pcs else None

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def pkg_config(self, *args):
        # Only our .pc on the path: a Requires.private on sqlite3, libcjson
        # or libbsd-overlay would make pkg-config fail here.
        env = dict(os.environ, PKG_CONFIG_LIBDIR=self.pc_dir)
        env.pop("PKG_CONFIG_PATH", None)
        prefix = os.path.join(self.dest, "usr", "local")
        return run(["pkg-config", "--define-variable=prefix=" + prefix] + list(args) + ["stagelog"],
                   env=env).split()

    def compile_c(self, name, src, *flags):
        """Compiles src as tmp/NAME.c with only stagelog's .pc; returns the program."""
        c_file, exe = os.path.join(self.tmp, name + ".c"), os.path.join(self.tmp, name)
        with open(c_file, "w") as f:
            f.write(src)
        run([os.environ.get("CC", "cc")] + list(flags) + ["-Wall", "-Werror", "-o", exe, c_file]
            + self.pkg_config("--cflags") + self.pkg_config("--libs"))
        return exe

    def test_everything_under_the_prefix(self):
        self.assertTrue(self.files)
        outside = [f for f in self.files if not f.startswith("usr/local/")]
        self.assertEqual(outside, [])
        for unit in ("usr/local/lib/systemd/system/stagelog-recover.service",
                     "usr/local/lib/systemd/system/stagelog-recover@.service",
                     "usr/local/lib/systemd/user/stagelog-recover.service",
                     "usr/local/lib/tmpfiles.d/stagelog.conf",
                     "usr/local/share/zsh/site-functions/_stagelog",
                     "usr/local/share/fish/vendor_completions.d/stagelog.fish"):
            self.assertIn(unit, self.files)
        with open(os.path.join(self.dest, "usr/local/lib/systemd/system/stagelog-recover@.service")) as f:
            self.assertIn("\nUser=%i\n", f.read())
        with open(os.path.join(self.dest, "usr/local/lib/systemd/user/stagelog-recover.service")) as f:
            self.assertIn("\nExecStart=/usr/local/bin/stagelog recover\n", f.read())

    def test_public_headers(self):
        # One public header per folder, sl-basic.h (struct sl_error,
        # SL_PUBLIC) included by the others, and no private header.
        headers = sorted(os.path.basename(f) for f in self.files
                         if f.startswith("usr/local/include/stagelog/"))
        self.assertEqual(headers, ["sl-basic.h", "sl-oci.h", "sl-recover.h", "sl-stage.h", "sl-store.h",
                                   "sl-version.h"])

    def test_shared_only(self):
        libs = sorted(os.path.basename(f) for f in self.files if re.match(r"usr/local/lib[^/]*/(.*/)?libstagelog", f))
        self.assertTrue(libs, self.files)
        self.assertEqual([l for l in libs if not l.startswith("libstagelog.so")], [])
        self.assertIn("libstagelog.so.0", libs)

    def test_pkg_config_names_only_stagelog(self):
        self.assertIsNotNone(self.pc_dir)
        prefix = os.path.join(self.dest, "usr", "local")
        self.assertEqual(self.pkg_config("--cflags"), ["-I" + prefix + "/include/stagelog"])
        libs = self.pkg_config("--libs")
        self.assertEqual(libs[-1], "-lstagelog")
        self.assertEqual(len(libs), 2)
        self.assertTrue(libs[0].startswith("-L" + prefix + "/lib"), libs)
        with open(os.path.join(self.pc_dir, "stagelog.pc")) as f:
            pc = f.read()
        self.assertNotIn("Requires", pc)
        self.assertNotIn("Libs.private", pc)
        self.assertEqual(self.pkg_config("--static", "--libs"), libs)

    def test_versions_agree(self):
        prefix = os.path.join(self.dest, "usr", "local")
        modversion = run(["pkg-config", "--define-variable=prefix=" + prefix, "--modversion", "stagelog"],
                         env=dict(os.environ, PKG_CONFIG_LIBDIR=self.pc_dir)).strip()
        self.assertRegex(modversion, r"^\d+\.\d+\.\d+$")
        major, minor, patch = (int(x) for x in modversion.split("."))
        # Built against the installed headers (sl-store.h brings sl-basic.h,
        # which brings sl-version.h) and run with the installed library.
        exe = self.compile_c("version", "#include <stdio.h>\n#include <sl-store.h>\n"
                             "int main(void)\n{\n"
                             "\tprintf(\"%d %d %d %ld %s %s\\n\", SL_VERSION_MAJOR, SL_VERSION_MINOR,\n"
                             "\t       SL_VERSION_PATCH, (long)SL_VERSION, SL_VERSION_STRING, sl_version());\n"
                             "\treturn 0;\n}\n", "-std=c99", "-pedantic-errors")
        libdir = self.pkg_config("--variable=libdir")[0]
        env = dict(os.environ, LD_LIBRARY_PATH=libdir)
        out = run([exe], env=env).split()
        self.assertEqual(out, [str(major), str(minor), str(patch), str(major * 10000 + minor * 100 + patch),
                               modversion, modversion])
        # The program loads the installed library, not the build's.
        maps = run(["ldd", exe], env=env)
        self.assertIn(os.path.join(libdir, "libstagelog.so.0"), maps)
        stagelog = os.path.join(prefix, "bin", "stagelog")
        first = run([stagelog, "--version"]).splitlines()[0]
        self.assertEqual(first, "stagelog " + modversion)

    def man(self, *args):
        mandir = os.path.join(self.dest, "usr", "local", "share", "man")
        env = dict(os.environ, MANPAGER="cat", PAGER="cat", MANWIDTH="80", LC_ALL="C.UTF-8")
        env.pop("MANPATH", None)
        return run(["man", "-M", mandir] + list(args), env=env, cwd=self.tmp)

    def exported_functions(self):
        libs = [f for f in self.files if re.search(r"/libstagelog\.so\.\d+\.\d+\.\d+$", f)]
        self.assertEqual(len(libs), 1, self.files)
        out = run(["nm", "-D", "--defined-only", os.path.join(self.dest, libs[0])])
        # nm prints a versioned symbol as NAME@@STAGELOG_0.
        names = sorted(l.split()[2].split("@")[0] for l in out.splitlines()
                       if len(l.split()) == 3 and l.split()[1] == "T")
        self.assertIn("sl_oci_stage", names)
        return names

    def test_man_page_for_every_function(self):
        # A link page (.so) must lead to a page that names the function in
        # its NAME or SYNOPSIS and has the sections every page has.
        for name in self.exported_functions():
            with self.subTest(function=name):
                text = self.man("3", name)
                self.assertIn(name, text)
                for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "RETURN VALUE", "ERRORS",
                                "THREAD SAFETY", "EXAMPLE"):
                    self.assertRegex(text, r"(?m)^" + section + r"$")

    @staticmethod
    def man_example(page):
        """The first .EX block of the EXAMPLE section, as C source."""
        lines, in_example, in_code, code = page.splitlines(), False, False, []
        for line in lines:
            if line.startswith(".SH"):
                if in_example:
                    break
                in_example = line.split(None, 1)[1].strip('"') == "EXAMPLE"
            elif in_example and line.startswith(".EX"):
                in_code = True
            elif in_code and line.startswith(".EE"):
                break
            elif in_code:
                code.append(re.sub(r"\\(e|-|&|\(aq|\(dq)",
                                   lambda m: {"e": "\\", "-": "-", "&": "", "(aq": "'", "(dq": '"'}[m.group(1)],
                                   line))
        return "\n".join(code) + "\n" if code else None

    def test_man_examples_compile(self):
        pages = [f for f in self.files if re.search(r"/man3/[^/]+\.3$", f)]
        compiled = 0
        for rel in sorted(pages):
            with open(os.path.join(self.dest, rel)) as f:
                page = f.read()
            if page.startswith(".so "):
                continue
            with self.subTest(page=os.path.basename(rel)):
                src = self.man_example(page)
                self.assertIsNotNone(src, "no EXAMPLE program")
                self.assertIn("main(", src)
                base = os.path.join(self.tmp, "man-" + os.path.basename(rel)[:-2])
                with open(base + ".c", "w") as f:
                    f.write(src)
                cc = os.environ.get("CC", "cc")
                run([cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-o", base, base + ".c"]
                    + self.pkg_config("--cflags") + self.pkg_config("--libs"))
                compiled += 1
        self.assertGreaterEqual(compiled, 10)

    def test_readme_example_compiles(self):
        with open(os.path.join(SOURCE, "README.md")) as f:
            readme = f.read()
        m = re.search(r"```c\n(.*?)```", readme, re.S)
        self.assertIsNotNone(m, "README has no C example")
        lines = m.group(1).splitlines()
        includes = [l for l in lines if l.startswith("#include")]
        body = [l for l in lines if not l.startswith("#include")]
        self.assertEqual(includes[0].split()[1], "<sl-recover.h>")
        src = "\n".join([
            "#include <stdio.h>", "#include <stdlib.h>", "#include <string.h>",
        ] + includes + [
            "/* The gateway's own strlcpy: nothing pkg-config adds may clash with it. */",
            "size_t strlcpy(char *dst, const char *src, size_t size);",
            "size_t strlcpy(char *dst, const char *src, size_t size)",
            "{ size_t n = strlen(src); if (size) { size_t k = n < size - 1 ? n : size - 1;"
            " memcpy(dst, src, k); dst[k] = 0; } return n; }",
            "static void die(const char *msg) { fprintf(stderr, \"%s\\n\", msg); exit(1); }",
            "static void run_runtime(const char *path) { (void)path; }",
            "int main(void)", "{", "const char *token = \"t\";",
        ] + body + ["return 0;", "}", ""])
        self.compile_c("gateway", src, "-std=c11", "-Wextra")


if __name__ == "__main__":
    unittest.main(verbosity=2)
