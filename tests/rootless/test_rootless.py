#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The rootless gateway suite: a real non-root user stages a bundle with
`stagelog run` and starts it with a real rootless runtime (Debian's runc),
through the whole life of a gateway:

  1. the container sees exactly the staged variables (and prints only their
     names and a hash of the secret, never the secret itself);
  2. the launcher is SIGKILLed while the container runs: the bundle stays
     and `recover` leaves it alone, because the runtime holds the lock;
  3. the container exits: `recover` removes the bundle;
  4. the canary secret is nowhere on disk, in the store or in any output;
  5. the README's user-unit `stagelog run ... --env-keep PATH ... -- runc
     ... run --bundle {bundle} ...` line, taken from README.md's text, starts
     a bundle exactly as `runc spec --rootless` makes it (args ["sh"], PATH
     in process.env, a terminal) on a pty: the shell finds its way and
     answers.

Run as root, the suite creates its user (useradd) and that user's
/run/user/UID. Run as anyone else, or without runc or a static busybox,
it is skipped (exit 77, which meson reports as a skip) with the reason.
The program is found in $STAGELOG."""

import grp
import hashlib
import json
import os
import pwd
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

STAGELOG = os.path.abspath(os.environ.get("STAGELOG", "stagelog"))
README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "README.md")
USER = "stagelog-rootless"
CANARY = "canary-r00tless-9d2e41"
SKIP = 77


def skip(reason):
    print("SKIP: rootless suite: " + reason)
    sys.exit(SKIP)


def find_busybox():
    for p in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(p):
            out = subprocess.run(["file", "-L", p], capture_output=True, text=True).stdout \
                if shutil.which("file") else ""
            if "dynamically linked" not in out:
                return p
    return None


class Suite:
    def __init__(self):
        self.outputs = []   # everything stagelog printed, to scan for the canary
        self.failures = 0

    def check(self, cond, what):
        print(("ok   " if cond else "FAIL ") + what)
        if not cond:
            self.failures += 1
        return cond

    def as_user(self, argv, **kw):
        """argv as the suite's user: its uid, gid, no extra groups, and an
        environment with only what a user session has."""
        return ["setpriv", "--reuid=%d" % self.uid, "--regid=%d" % self.gid, "--clear-groups", "--"] + argv

    def sl(self, *args, code=0):
        p = subprocess.run(self.as_user([STAGELOG, "--db", self.db] + list(args)), capture_output=True,
                           text=True, env=self.env, timeout=60, cwd=self.home)
        self.outputs += [p.stdout, p.stderr]
        if code is not None:
            self.check(p.returncode == code, "stagelog %s exits %d (got %d%s)" % (
                " ".join(args), code, p.returncode, ": " + p.stderr.strip() if p.returncode != code else ""))
        return p

    def slj(self, *args, code=0):
        return json.loads(self.sl("--json", *args, code=code).stdout)

    def setup_user(self):
        try:
            pw = pwd.getpwnam(USER)
        except KeyError:
            r = subprocess.run(["useradd", "--create-home", "--shell", "/usr/sbin/nologin", USER],
                               capture_output=True, text=True)
            if r.returncode != 0:
                skip("useradd %s failed: %s" % (USER, r.stderr.strip()))
            pw = pwd.getpwnam(USER)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.run_dir = "/run/user/%d" % self.uid
        self.made_run_dir = not os.path.isdir(self.run_dir)
        if self.made_run_dir:
            os.makedirs(self.run_dir, mode=0o700)
        os.chown(self.run_dir, self.uid, self.gid)
        os.chmod(self.run_dir, 0o700)
        # A fresh folder per run in the user's home: bundle, env file, store.
        self.home = tempfile.mkdtemp(prefix="stagelog-rootless-", dir="/tmp")
        os.chown(self.home, self.uid, self.gid)
        self.db = os.path.join(self.home, "state", "stagelog.db")
        self.env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "HOME": self.home, "XDG_RUNTIME_DIR": self.run_dir, "REGION": "eu-1", "LANG": "C"}

    def make_bundle(self, busybox):
        """A rootless OCI bundle: rootfs/ with a static busybox, and a
        config.json with a user namespace whose hostIDs are root's (stagelog
        rewrites them to the bundle directory's owner, the user)."""
        b = os.path.join(self.home, "bundle")
        os.makedirs(os.path.join(b, "rootfs", "bin"))
        shutil.copy(busybox, os.path.join(b, "rootfs", "bin", "busybox"))
        for applet in ("sh", "cut", "sort", "sha256sum", "tr", "cat"):
            os.symlink("busybox", os.path.join(b, "rootfs", "bin", applet))
        for d in ("proc", "dev", "sys", "tmp"):
            os.mkdir(os.path.join(b, "rootfs", d))
        subprocess.run(["runc", "spec", "--rootless", "--bundle", b], check=True)
        with open(os.path.join(b, "config.json")) as f:
            config = json.load(f)
        # Pid 1's environment is exactly what the runtime was given: print
        # its names, and a hash of the secret rather than the secret.
        script = ("tr '\\000' '\\n' < /proc/1/environ | cut -d= -f1 | sort | tr '\\n' ' '; echo; "
                  "printf %s \"$API_TOKEN\" | sha256sum | cut -d' ' -f1; echo READY; read x; echo BYE")
        config["process"].update({"terminal": False, "args": ["/bin/sh", "-c", script],
                                  "env": ["PACKAGED=1", "PATH=/bin"]})
        config["hostname"] = "gw"
        for key in ("uidMappings", "gidMappings"):
            config["linux"][key] = [{"containerID": 0, "hostID": 0, "size": 1}]
        with open(os.path.join(b, "config.json"), "w") as f:
            json.dump(config, f)
        for dirpath, dirnames, filenames in os.walk(self.home):
            for n in [dirpath] + [os.path.join(dirpath, x) for x in dirnames + filenames]:
                os.lchown(n, self.uid, self.gid)
        env_file = os.path.join(self.home, "tokens.env")
        with open(env_file, "w") as f:
            f.write("# the gateway's secret\nAPI_TOKEN=%s\n" % CANARY)
        os.chown(env_file, self.uid, self.gid)
        os.chmod(env_file, 0o600)
        return b, env_file

    def readme_run_line(self):
        """The README's rootless user-unit ExecStart= (the one whose runc
        keeps its state under ${XDG_RUNTIME_DIR}), continuation lines
        joined, as the words systemd would run."""
        with open(README, encoding="utf-8") as f:
            readme = f.read()
        found = []
        for block in re.findall(r"```ini\n(.*?)```", readme, re.S):
            text = block.replace("\\\n", " ")
            found += [l[len("ExecStart="):] for l in text.splitlines()
                      if l.startswith("ExecStart=") and " run " in l and "${XDG_RUNTIME_DIR}/runc" in l]
        self.check(len(found) == 1, "README.md has one rootless `stagelog run ... -- runc` unit line (%d)" % len(found))
        return found[0] if found else None

    def make_spec_bundle(self, busybox):
        """A bundle exactly as `runc spec --rootless` writes it, around a
        rootfs with a static busybox."""
        b = os.path.join(self.home, "spec-bundle")
        os.makedirs(os.path.join(b, "rootfs", "bin"))
        shutil.copy(busybox, os.path.join(b, "rootfs", "bin", "busybox"))
        os.symlink("busybox", os.path.join(b, "rootfs", "bin", "sh"))
        for d in ("proc", "dev", "sys", "tmp"):
            os.mkdir(os.path.join(b, "rootfs", d))
        subprocess.run(["runc", "spec", "--rootless", "--bundle", b], check=True)
        with open(os.path.join(b, "config.json")) as f:
            process = json.load(f)["process"]
        self.check(process["args"] == ["sh"] and any(e.startswith("PATH=") for e in process["env"]),
                   "runc spec makes args [\"sh\"] and a PATH (%s)" % process["args"])
        for dirpath, dirnames, filenames in os.walk(b):
            for n in [dirpath] + [os.path.join(dirpath, x) for x in dirnames + filenames]:
                os.lchown(n, self.uid, self.gid)
        return b

    def run_readme_line(self, busybox):
        line = self.readme_run_line()
        if line is None:
            return
        bundle = self.make_spec_bundle(busybox)
        env_dir = os.path.join(self.home, ".config", "gateway")
        os.makedirs(env_dir)
        with open(os.path.join(env_dir, "tokens.env"), "w") as f:
            f.write("API_TOKEN=%s\n" % CANARY)
        for d in (os.path.join(self.home, ".config"), env_dir, os.path.join(env_dir, "tokens.env")):
            os.chown(d, self.uid, self.gid)
        # What systemd would do: %h is the home, ${XDG_RUNTIME_DIR} the
        # unit's environment; the paths are this test's.
        for a, b in (("%h", self.home), ("${XDG_RUNTIME_DIR}", self.run_dir),
                     ("/usr/local/bin/stagelog", STAGELOG), ("/usr/share/gateway/bundle", bundle)):
            line = line.replace(a, b)
        argv = shlex.split(line)
        self.check(argv[:2] == [STAGELOG, "run"] and "--env-keep" in argv
                   and argv[argv.index("--env-keep") + 1] == "PATH"
                   and argv[argv.index("--") + 1] == "runc" and "{bundle}" in argv,
                   "the README line is `stagelog run ... --env-keep PATH ... -- runc ... {bundle}`: %s" % argv)
        argv = [argv[0], "--db", self.db] + argv[1:]
        # The spec's process wants a terminal: give it a pty, type into
        # its shell, and read what it answers.
        master, slave = os.openpty()
        proc = subprocess.Popen(self.as_user(argv), env=self.env, cwd=self.home, stdin=slave, stdout=slave,
                                stderr=slave, start_new_session=True)
        os.close(slave)
        os.write(master, b"echo STARTED-$((6*7)) in $PWD\n")
        out = b""
        deadline = time.time() + 30
        while b"STARTED-42" not in out and time.time() < deadline:
            r, _, _ = select.select([master], [], [], 0.5)
            if r:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
        started = b"STARTED-42" in out
        if started:
            os.write(master, b"exit\n")
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        try:
            while select.select([master], [], [], 0.2)[0]:
                chunk = os.read(master, 4096)
                if not chunk:
                    break
                out += chunk
        except OSError:
            pass
        os.close(master)
        text = out.decode("utf-8", "replace")
        self.outputs.append(text)
        if not self.check(started, "the README's line starts the runc spec bundle and its sh answers"):
            print("pty output: " + text)
        self.check(proc.returncode == 0, "the README's line exits 0 (got %s)" % proc.returncode)
        self.check("process.args[0] is not an absolute path" not in text, "no PATH warning with --env-keep PATH")
        states = [s["state"] for s in self.slj("list", "--all") if s["label"] == "gateway"]
        self.check(states == ["released"], "the README line's stage is released (%s)" % states)
        # The env file is the operator's, set aside like step 1's.
        os.unlink(os.path.join(env_dir, "tokens.env"))

    def wait_gone(self, path, timeout=20):
        deadline = time.time() + timeout
        while os.path.exists(path) and time.time() < deadline:
            time.sleep(0.1)
        return not os.path.exists(path)

    def run(self):
        busybox = find_busybox()
        if not busybox:
            skip("no static busybox (apt-get install busybox-static; ./dev installs it)")
        self.setup_user()
        bundle, env_file = self.make_bundle(busybox)
        runc_root = os.path.join(self.run_dir, "runc")

        # 1. run: stage, start the container rootless, hand it the lock.
        argv = self.as_user([STAGELOG, "--db", self.db, "run", "--bundle", bundle, "--label", "gw",
                             "--env-file", env_file, "--env", "REGION", "--pass-env", "XDG_RUNTIME_DIR",
                             "--", "runc", "--root", runc_root, "run", "--bundle", "{bundle}", "gw-{id}"])
        launcher = subprocess.Popen(argv, env=self.env, cwd=self.home, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        names = launcher.stdout.readline().split()
        digest = launcher.stdout.readline().strip()
        ready = launcher.stdout.readline().strip()
        self.outputs += [" ".join(names), digest, ready]
        if not self.check(ready == "READY", "the container started and printed its environment"):
            launcher.kill()
            out, err = launcher.communicate(timeout=30)
            print("launcher stderr: " + err)
            return
        # runc adds HOME (from the container's passwd, else /) when the
        # config has none; every other name must be a staged one.
        self.check([n for n in names if n != "HOME"] == ["API_TOKEN", "REGION"],
                   "only the staged variables are visible inside (%s)" % " ".join(names))
        self.check(digest == hashlib.sha256(CANARY.encode()).hexdigest(),
                   "the secret reached the container intact")
        stages = self.slj("list")
        self.check(len(stages) == 1 and stages[0]["state"] == "ready", "one ready stage")
        st = stages[0]
        self.check(st["path"] == os.path.join(self.run_dir, "stagelog", "gw-" + st["id"]),
                   "the stage is under $XDG_RUNTIME_DIR/stagelog")
        with open(os.path.join(st["path"], "config.json")) as f:
            staged = json.load(f)
        self.check(sorted(e.split("=")[0] for e in staged["process"]["env"]) == ["API_TOKEN", "REGION"],
                   "the staged config.json holds exactly the staged variables")
        self.check(staged["linux"]["uidMappings"][0]["hostID"] == self.uid and
                   staged["linux"]["gidMappings"][0]["hostID"] == self.gid,
                   "hostIDs rewritten to the bundle's owner")
        del staged

        # 2. SIGKILL the launcher only: runc and the container live on,
        # and runc holds the stage's lock.
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait()
        time.sleep(0.3)
        self.check(os.path.isdir(st["path"]), "the bundle stays after the launcher's SIGKILL")
        doc = self.slj("recover")
        self.check(doc["live"] == [st["id"]] and doc["recovered"] == [],
                   "recover leaves the bundle while the runtime holds the lock")
        self.check(os.path.isdir(st["path"]), "the bundle is still there")
        item = self.slj("list")[0]
        self.check(item["owner_alive"] is True, "list counts the stage live (lock held)")

        # 3. The container exits: then recover removes the bundle.
        launcher.stdin.write("bye\n")
        launcher.stdin.close()
        rest = launcher.stdout.read()  # EOF once runc and the container are gone
        launcher.stdout.close()
        self.outputs += [rest, launcher.stderr.read()]
        launcher.stderr.close()
        self.check(rest.strip() == "BYE", "the container exited")
        deadline = time.time() + 20
        doc = None
        while time.time() < deadline:
            doc = self.slj("recover")
            if doc["recovered"]:
                break
            time.sleep(0.2)
        self.check(doc is not None and doc["recovered"] == [st["id"]], "recover removes the bundle after the exit")
        self.check(not os.path.exists(st["path"]), "the bundle is gone")
        self.check(self.slj("show", st["id"])["state"] == "recovered", "the stage is recovered")
        self.sl("check")

        # 5. The README's line with a bundle from `runc spec`.
        self.run_readme_line(busybox)

        # 4. The canary: nowhere on disk (the env file the operator wrote
        # aside), in the store, or in any output.
        os.unlink(env_file)
        subprocess.run(["sqlite3", self.db, "PRAGMA wal_checkpoint(TRUNCATE);"], capture_output=True)
        found = []
        for top in (self.home, self.run_dir):
            for dirpath, dirnames, filenames in os.walk(top):
                for n in filenames:
                    p = os.path.join(dirpath, n)
                    try:
                        with open(p, "rb") as f:
                            if CANARY.encode() in f.read():
                                found.append(p)
                    except OSError:
                        pass
        self.check(found == [], "the canary is on no file under the user's folders (%s)" % found)
        self.check(not any(CANARY in o for o in self.outputs if o), "the canary is in no output")

        # 5. An XDG_RUNTIME_DIR that another user can write (root's, 0777,
        # not sticky): whoever can write it could rename the default root
        # away with the secrets in it, so it is refused (73), nothing made.
        shared = os.path.join(self.home, "shared-runtime")
        os.mkdir(shared)
        os.chmod(shared, 0o777)
        env, self.env = self.env, dict(self.env, XDG_RUNTIME_DIR=shared)
        p = self.sl("stage", "--bundle", bundle, code=73)
        self.env = env
        self.check(shared in p.stderr, "the refusal names the directory others can write")
        self.check(not os.path.exists(os.path.join(shared, "stagelog")) or
                   os.listdir(os.path.join(shared, "stagelog")) == [], "nothing was staged there")

    def cleanup(self):
        if getattr(self, "home", None):
            shutil.rmtree(self.home, ignore_errors=True)
        # The runtime directory stays: another run of this suite (a
        # mutant run, a second build folder) may be using it right now, and
        # removing it would pull its bundle from under it. Only what is
        # ours and empty goes.
        if getattr(self, "made_run_dir", False):
            for d in (os.path.join(self.run_dir, "stagelog"), os.path.join(self.run_dir, "runc")):
                try:
                    os.rmdir(d)
                except OSError:
                    pass


def main():
    if os.geteuid() != 0:
        skip("needs root to create its non-root user %s (run `./dev test` or `meson test` as root)" % USER)
    for tool in ("runc", "setpriv", "useradd"):
        if not shutil.which(tool):
            skip("%s not found (apt-get install runc; ./dev installs it)" % tool)
    suite = Suite()
    try:
        suite.run()
    finally:
        suite.cleanup()
    print("rootless suite: %s" % ("%d check(s) failed" % suite.failures if suite.failures else "all checks passed"))
    return 1 if suite.failures else 0


if __name__ == "__main__":
    sys.exit(main())
