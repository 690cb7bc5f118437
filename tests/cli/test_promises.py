#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""What users rely on that the other CLI suites did not pin down (issue 15):
no core dumps while secrets are in memory, the runtime's environment under
`run`, every signal `run` forwards, and the documented exit codes. Each
test here was written against a mutant in tests/mutants/ that survived the
suites before it. The program is found in $STAGELOG."""

import json
import os
import resource
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_cli import CANARY, STAGELOG, Base  # noqa: E402


def cores_allowed():
    """In the child, before exec: core dumps as large as the hard limit
    allows, so that a limit of 0 seen later was set by stagelog itself."""
    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))


def core_limits(pid):
    """The soft and hard core-size limits of process pid, as /proc shows
    them ("0", "unlimited", ...)."""
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max core file size"):
                return tuple(line[len("Max core file size"):].split()[:2])
    raise AssertionError("no core limit in /proc/%d/limits" % pid)


def wait_for(path, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class Promises(Base):
    def popen(self, *args, **kw):
        # A session of its own, so that a hung run can be killed with its
        # runtime (which holds the pipes open).
        return subprocess.Popen([STAGELOG, "--db", self.db] + list(args), env=kw.pop("env", self.env),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, **kw)

    def finish(self, proc, timeout=10):
        """Waits for proc (killing it if it hangs) and returns (rc, out, err);
        rc is None when it had to be killed."""
        try:
            out, err = proc.communicate(timeout=timeout)
            return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            return None, out.decode(errors="replace"), err.decode(errors="replace")

    @staticmethod
    def holds_open(pid, path):
        fds = "/proc/%d/fd" % pid
        try:
            names = os.listdir(fds)
        except FileNotFoundError:  # it exited
            return False
        for fd in names:
            try:
                if os.readlink(os.path.join(fds, fd)) == path:
                    return True
            except OSError:
                pass
        return False

    def wait_fifo_open(self, proc, fifo, timeout=20):
        """Waits until proc, a stage reading the env file fifo, holds it
        open: it is then past its start-up and blocked on the FIFO."""
        deadline = time.monotonic() + timeout
        while not self.holds_open(proc.pid, fifo):
            self.assertIsNone(proc.poll(), "stage did not wait for the FIFO")
            self.assertLess(time.monotonic(), deadline, "stage never opened the FIFO")
            time.sleep(0.01)


class TestNoCoreDumps(Promises):
    """A core file would hold whatever secret was in memory: `stage` and
    `run` run with a core limit of 0, whatever limit they were given."""

    def test_the_control_allows_cores(self):
        # Without this the tests below would pass on any machine whose
        # default core limit is already 0.
        p = subprocess.run(["sh", "-c", "ulimit -c"], capture_output=True, text=True, preexec_fn=cores_allowed)
        self.assertNotEqual(p.stdout.strip(), "0", "cannot raise the core limit here; the tests prove nothing")

    def test_run(self):
        # The runtime reads the limits of its parent, stagelog, while
        # stagelog waits for it (with the stage's secrets in memory).
        out = os.path.join(self.tmp, "limits")
        proc = self.popen("run", "--root", self.root, "--bundle", self.bundle, "--env", "TOKEN=" + CANARY,
                          "--", "sh", "-c", 'cat /proc/$PPID/limits > "%s"; echo $PPID > "%s.pid"' % (out, out),
                          preexec_fn=cores_allowed)
        rc, _, err = self.finish(proc)
        self.assertEqual(rc, 0, err)
        with open(out + ".pid") as f:
            self.assertEqual(int(f.read()), proc.pid, "the runtime's parent is not stagelog")
        with open(out) as f:
            text = f.read()
        line = [x for x in text.splitlines() if x.startswith("Max core file size")]
        self.assertEqual(len(line), 1, text)
        self.assertEqual(line[0].split()[4], "0", "stagelog ran with core dumps enabled: " + line[0])
        self.assert_root_empty()

    def test_stage_waiting_for_its_env_file(self):
        # `stage` blocks on a FIFO env file with no writer yet: its limits
        # can be read while it runs.
        fifo = os.path.join(self.tmp, "env.fifo")
        os.mkfifo(fifo, 0o600)
        proc = self.popen("stage", "--root", self.root, "--bundle", self.bundle, "--env-file", fifo,
                          preexec_fn=cores_allowed)
        try:
            # Waiting for the FIFO: it is open (which comes after the
            # limit was set at start-up) and nobody has written to it.
            self.wait_fifo_open(proc, fifo)
            soft, _ = core_limits(proc.pid)
            self.assertEqual(soft, "0", "stage runs with core dumps enabled")
            with open(fifo, "w") as f:
                f.write("TOKEN=%s\n" % CANARY)
        finally:
            rc, out, err = self.finish(proc)
        self.assertEqual(rc, 0, err)
        stage_id = out.split("\t")[0]
        self.sl("release", stage_id)
        self.assert_root_empty()


class TestArgvWiped(Promises):
    """An --env NAME=VALUE value is wiped from stagelog's argv once it is
    copied: /proc/PID/cmdline, readable by every user, stops showing it."""

    def test_stage(self):
        fifo = os.path.join(self.tmp, "env.fifo")
        os.mkfifo(fifo, 0o600)
        proc = self.popen("stage", "--root", self.root, "--bundle", self.bundle, "--env", "TOKEN=" + CANARY,
                          "--env-file", fifo)
        try:
            self.wait_fifo_open(proc, fifo)
            with open("/proc/%d/cmdline" % proc.pid, "rb") as f:
                cmdline = f.read()
            with open(fifo, "w") as f:
                f.write("OTHER=1\n")
        finally:
            rc, out, err = self.finish(proc)
        self.assertEqual(rc, 0, err)
        self.assertIn(b"TOKEN=", cmdline)
        self.assertNotIn(CANARY.encode(), cmdline)
        self.sl("release", out.split("\t")[0])

    def test_run(self):
        out = os.path.join(self.tmp, "cmdline")
        p = self.sl("run", "--root", self.root, "--bundle", self.bundle, "--env", "TOKEN=" + CANARY,
                    "--", "sh", "-c", 'cat /proc/$PPID/cmdline > "%s"' % out)
        with open(out, "rb") as f:
            cmdline = f.read()
        self.assertIn(b"TOKEN=", cmdline)
        self.assertNotIn(CANARY.encode(), cmdline)
        self.assertEqual(p.stdout, "")
        self.assert_root_empty()


class TestRunEnvironment(Promises):
    """The runtime gets an environment that holds only the --pass-env
    names: never stagelog's own, never an --env value."""

    def env_with_canaries(self):
        return dict(self.env, SL_CANARY=CANARY, TOKEN=CANARY, LD_PRELOAD_CANARY=CANARY)

    def test_no_pass_env_means_an_empty_environment(self):
        # env(1) prints its environment as it got it, with nothing a shell
        # would add; run itself prints nothing on stdout.
        p = self.sl("run", "--root", self.root, "--bundle", self.bundle, "--env", "TOKEN", "--env", "X=" + CANARY,
                    "--", "env", env=self.env_with_canaries())
        self.assertEqual(p.stdout, "", "the runtime inherited an environment")
        self.assertNotIn(CANARY, p.stderr)
        self.assertEqual(self.slj("list", "--all")[0]["state"], "released")
        self.assert_root_empty()

    def test_pass_env_passes_exactly_those(self):
        p = self.sl("run", "--root", self.root, "--bundle", self.bundle, "--pass-env", "KEEP",
                    "--pass-env", "UNSET_NAME", "--", "env", env=dict(self.env_with_canaries(), KEEP="kept"))
        self.assertEqual(p.stdout, "KEEP=kept\n")
        self.assert_root_empty()


class TestRunForwardsSignals(Promises):
    """SIGINT, SIGTERM, SIGHUP and SIGQUIT to `run` reach the runtime; run
    exits with the runtime's status (128+N when the signal killed it) and
    releases the stage."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)

    def start(self, script, ready):
        proc = self.popen("run", "--root", self.root, "--bundle", self.bundle, "--env", "TOKEN=" + CANARY,
                          "--", "sh", "-c", script)
        if not wait_for(ready, proc):
            self.finish(proc, timeout=1)
            self.fail("the runtime did not start")
        return proc

    def fresh(self, name):
        # Each signal gets its own store and root: a failure with one does
        # not spill into the next.
        self.db = os.path.join(self.tmp, name, "stagelog.db")
        self.root = os.path.join(self.shm, name)

    def check_released(self):
        states = [s["state"] for s in self.slj("list", "--all")]
        self.assertTrue(states and all(s == "released" for s in states), states)
        self.assert_root_empty()

    def forward(self, kind, script_for):
        """For each signal, on its own store and root: starts a runtime
        running script_for(sig, ready), sends the signal to run once the
        runtime wrote ready, and yields (sig, rc, stdout, stderr)."""
        for sig in self.SIGNALS:
            with self.subTest(sig=sig.name):
                self.fresh("%s-%s" % (kind, sig.name))
                ready = os.path.join(self.tmp, "ready-%s-%s" % (kind, sig.name))
                proc = self.start(script_for(sig, ready), ready)
                proc.send_signal(sig)
                rc, out, err = self.finish(proc)
                self.assertIsNotNone(rc, "%s was not forwarded: the runtime kept running" % sig.name)
                self.assertNotIn(CANARY, err)
                yield sig, rc, out, err
                self.check_released()

    def test_trapped(self):
        def script(sig, ready):
            return ('trap \'echo %s > "%s.mark"; exit 3\' %s; echo up > "%s"; while :; do sleep 0.05; done'
                    % (sig.name, ready, sig.name[3:], ready))

        for sig, rc, out, err in self.forward("trapped", script):
            self.assertEqual(rc, 3, err)
            with open(os.path.join(self.tmp, "ready-trapped-%s.mark" % sig.name)) as f:
                self.assertEqual(f.read(), sig.name + "\n")
            self.assertEqual(out, "")

    def test_default_action(self):
        for sig, rc, _, err in self.forward("default", lambda sig, ready: 'echo up > "%s"; exec sleep 30' % ready):
            self.assertEqual(rc, 128 + sig, err)


class TestRunExitCodes(Promises):
    """The exit codes `run` documents, each with what it leaves behind."""

    def run_sl(self, *args, code=None, **kw):
        return self.sl("run", "--root", self.root, "--bundle", self.bundle, *args, code=code, **kw)

    def states(self):
        return [s["state"] for s in self.slj("list", "--all")]

    def test_126_runtime_not_executable(self):
        runtime = os.path.join(self.tmp, "runtime")
        with open(runtime, "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
        os.chmod(runtime, 0o644)
        p = self.run_sl("--", runtime, code=126)
        self.one_line_error(p)
        self.assertEqual(self.states(), ["released"])
        self.assert_root_empty()

    def test_env_file_problems_never_start_the_runtime(self):
        marker = os.path.join(self.tmp, "started")
        bad = os.path.join(self.tmp, "bad.env")
        with open(bad, "w") as f:
            f.write("TOKEN=%s\n1BAD=%s\n" % (CANARY, CANARY))
        big = os.path.join(self.tmp, "big.env")
        with open(big, "w") as f:
            f.write("TOKEN=%s\nPAD=%s\n" % (CANARY, "x" * (1 << 20)))
        for what, env_file, code in (("malformed", bad, 65), ("missing", os.path.join(self.tmp, "none.env"), 66),
                                     ("larger than 1 MiB", big, 65)):
            with self.subTest(what=what):
                p = self.run_sl("--env-file", env_file, "--", "sh", "-c", 'touch "%s"' % marker, code=code)
                self.one_line_error(p)
                self.assertNotIn(CANARY, p.stderr)
                self.assertFalse(os.path.exists(marker), "the runtime was started")
                self.assert_root_empty()

    def replace_top(self, code, json_out=False):
        """A runtime that swaps the bundle directory for another and exits
        with code: the stage cannot be released (its top directory is not
        the one it created) and becomes failed."""
        script = 'mv "$1" "$1.moved" && mkdir "$1" && exit %d' % code
        args = ("--env", "TOKEN=" + CANARY, "--", "sh", "-c", script, "sh", "{bundle}")
        if json_out:
            p = self.sl("--json", "run", "--root", self.root, "--bundle", self.bundle, *args, code=None)
        else:
            p = self.run_sl(*args)
        self.assertEqual(self.states(), ["failed"])
        self.assertNotIn(CANARY, p.stderr)
        self.assertIn("stagelog: ", p.stderr)
        return p

    def each_unreleasable(self, json_out=False):
        """Runs replace_top() with a runtime status of 0 and of 3, each on
        its own store and root, and yields (status, the run's result)."""
        for code in (0, 3):
            with self.subTest(runtime_status=code, json=json_out):
                self.db = os.path.join(self.tmp, "s%d%s" % (code, "j" if json_out else ""), "stagelog.db")
                self.root = os.path.join(self.shm, "r%d%s" % (code, "j" if json_out else ""))
                yield code, self.replace_top(code, json_out)

    def test_release_failure_is_not_success(self):
        for _, p in self.each_unreleasable():
            self.assertNotEqual(p.returncode, 0, p.stderr)

    def test_125_runtime_exited_but_stage_not_released(self):
        # INTERFACE.md v3: 125 when the runtime exited but its stage could
        # not be released; the runtime's own status is on stderr (one
        # line) and, with --json, in the one document on stdout.
        for status, p in self.each_unreleasable():
            self.assertEqual(p.returncode, 125, p.stderr)
            self.assertEqual(p.stdout, "")
            lines = [l for l in p.stderr.splitlines() if "the runtime exited with status" in l]
            self.assertEqual(len(lines), 1, p.stderr)
            self.assertRegex(lines[0], r"^stagelog: run: the runtime exited with status %d\b" % status)
        for status, p in self.each_unreleasable(json_out=True):
            self.assertEqual(p.returncode, 125, p.stderr)
            doc = json.loads(p.stdout)
            self.assertEqual(doc["runtime_status"], status)
            self.assertEqual(doc["state"], "failed")
            self.assertEqual(doc["id"], self.slj("list", "--all")[0]["id"])

    def test_runtime_status_when_released(self):
        # The runtime's status is run's own when the stage is released,
        # with or without --json (which then prints nothing).
        for json_out in (False, True):
            with self.subTest(json=json_out):
                p = self.sl(*(["--json"] if json_out else []), "run", "--root", self.root, "--bundle",
                            self.bundle, "--", "sh", "-c", "exit 3", code=3)
                self.assertEqual(p.stdout, "")


class TestInUse(Promises):
    """release and publish of a stage that a live runtime still holds exit
    75 (try again later) and change nothing."""

    def test_75_release_and_publish_in_use(self):
        ready = os.path.join(self.tmp, "ready")
        proc = self.popen("run", "--root", self.root, "--bundle", self.bundle, "--env", "TOKEN=" + CANARY,
                          "--", "sh", "-c", 'echo up > "%s"; exec sleep 30' % ready)
        try:
            self.assertTrue(wait_for(ready, proc), "the runtime did not start")
            st = self.slj("list")[0]
            dest = os.path.join(self.shm, "dest")
            for args in (["release", st["id"]], ["publish", st["id"], dest]):
                with self.subTest(command=args[0]):
                    p = self.sl(*args, code=75)
                    self.one_line_error(p)
                    self.assertTrue(os.path.isfile(os.path.join(st["path"], "config.json")))
                    self.assertFalse(os.path.exists(dest))
                    self.assertEqual(self.state_of(st["id"]), "ready")
            proc.send_signal(signal.SIGTERM)
        finally:
            rc, _, err = self.finish(proc)
        self.assertEqual(rc, 128 + signal.SIGTERM, err)
        self.assertEqual(self.state_of(st["id"]), "released")
        self.assert_root_empty()


if __name__ == "__main__":
    unittest.main(verbosity=2)
