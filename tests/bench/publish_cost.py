#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# usage: publish_cost.py OLD_STAGELOG NEW_STAGELOG [RUNS]
"""Publish cost, old vs new stagelog: stage a 10,100-path bundle, then time
`stagelog publish` alone (N runs each, interleaved), with the staging root on
disk (ext4, /var/tmp) and on tmpfs (/dev/shm). The store is on disk."""
import os, shutil, subprocess, sys, time, tempfile, statistics
old, new = sys.argv[1], sys.argv[2]
N = int(sys.argv[3]) if len(sys.argv) > 3 else 7
base = tempfile.mkdtemp(dir="/var/tmp")
bundle = os.path.join(base, "pkg"); os.makedirs(os.path.join(bundle, "rootfs"))
for d in range(101):
    dd = os.path.join(bundle, "rootfs", "d%03d" % d); os.mkdir(dd)
    for f in range(99):
        with open(os.path.join(dd, "f%02d" % f), "w") as fh: fh.write("x" * 512)
open(os.path.join(bundle, "config.json"), "w").write('{"process":{"env":[]}}')
def run(binary, rootbase, tag, i):
    db = os.path.join(base, "db-%s" % tag, "s.db")
    root = os.path.join(rootbase, "root-%s" % tag)
    out = subprocess.run([binary, "--db", db, "stage", "--root", root, "--bundle", bundle, "--owner", str(os.getpid())],
                         capture_output=True, text=True, check=True).stdout
    sid = out.split("\t")[0]
    dest = os.path.join(root, "pub-%d" % i)
    subprocess.run(["sync"])
    t = time.monotonic()
    subprocess.run([binary, "--db", db, "publish", sid, dest], check=True, capture_output=True)
    dt = time.monotonic() - t
    shutil.rmtree(dest)
    return dt
for rootbase, where in ((base, "disk"), ("/dev/shm", "tmpfs")):
    res = {"old": [], "new": []}
    for i in range(N):
        for tag, b in (("old", old), ("new", new)):
            res[tag].append(run(b, rootbase, tag + where, i))
    o, n = statistics.median(res["old"]), statistics.median(res["new"])
    print("publish of a 10,100-path stage, root on %-5s: old %.1f ms, new %.1f ms (median of %d), ratio %.2fx"
          % (where, o * 1000, n * 1000, N, n / o))
    for tag in ("old", "new"):
        shutil.rmtree(os.path.join(rootbase, "root-" + tag + where), ignore_errors=True)
shutil.rmtree(base)
