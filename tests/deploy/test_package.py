#!/usr/bin/env python3
"""The operator's files (deploy/systemd, deploy/udev, deploy/package), checked the way a lab's IT
person meets them.

  test_package.py rules SRC          (ctest deploy.files) the udev rules, sysusers and unit agree:
      every rule line parses as udev(7) keys; GOTOs reach LABELs; serial ports go to dialout and
      USB instruments to labloop, MODE 0660, no uaccess; every usb://VVVV:PPPP a driver names has
      a rule; every group named exists in the sysusers file; `udevadm verify` where it exists.
  test_package.py install SRC BUILD  (ctest deploy.package) builds the .deb from BUILD with
      deploy/package, checks `dpkg-deb --info/--contents`, installs it with dpkg -i, runs
      `systemd-analyze verify` on the installed unit, starts the installed daemon as the unit's
      ExecStartPre/ExecStart say (its User, Group, SupplementaryGroups, UMask) with this script
      standing in for systemd on $NOTIFY_SOCKET (systemd is not PID 1 here), asserts READY=1,
      WATCHDOG=1 pings, RELOADING=1/READY=1 on SIGHUP, STOPPING=1 on SIGTERM and exit 0, then
      purges the package. Needs root (exit 77: skipped otherwise, or when a labloop package is
      installed already, which it never touches).
"""
import grp
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

SKIP = 77
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL: " + what, file=sys.stderr)
    return cond


# ---- udev rules, sysusers, unit ----

RULE_PAIR = re.compile(r'\s*([A-Z_]+)(\{[^}]*\})?\s*(==|!=|\+=|-=|:=|=)\s*"([^"]*)"\s*(,|$)')
MATCH_KEYS = {"ACTION", "SUBSYSTEM", "SUBSYSTEMS", "ATTR", "ATTRS", "ENV", "KERNEL", "KERNELS",
              "DEVTYPE", "DRIVER", "DRIVERS", "TAG"}
ASSIGN_KEYS = {"GROUP", "MODE", "OWNER", "SYMLINK", "TAG", "ENV", "IMPORT", "GOTO", "LABEL", "RUN",
               "ATTR"}


def parse_rules(path):
    """[(line number, [(key, attr, op, value)])] for every rule line; parse errors recorded."""
    rules = []
    for n, line in enumerate(open(path, encoding="utf-8"), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        pairs, pos = [], 0
        while pos < len(s):
            m = RULE_PAIR.match(s, pos)
            if not check(m, f"{path}:{n}: not a udev key=value list at column {pos + 1}: {s}"):
                break
            key, attr, op, value = m.group(1), (m.group(2) or "")[1:-1], m.group(3), m.group(4)
            known = MATCH_KEYS if op in ("==", "!=") else ASSIGN_KEYS
            check(key in known, f"{path}:{n}: {key} with {op} is not a udev key that way")
            pairs.append((key, attr, op, value))
            pos = m.end()
        rules.append((n, pairs))
    return rules


def check_rules(src):
    rules_path = os.path.join(src, "deploy/udev/60-labloop.rules")
    rules = parse_rules(rules_path)
    labels = {v for _, ps in rules for k, _, _, v in ps if k == "LABEL"}
    gotos = {v for _, ps in rules for k, _, _, v in ps if k == "GOTO"}
    check(gotos <= labels, f"{rules_path}: GOTO without LABEL: {sorted(gotos - labels)}")
    groups = set()
    for n, ps in rules:
        for k, attr, op, v in ps:
            where = f"{rules_path}:{n}"
            if k == "GROUP":
                groups.add(v)
                check(v in ("dialout", "labloop"), f"{where}: GROUP={v}: dialout or labloop")
            if k == "MODE":
                check(v == "0660", f"{where}: MODE={v}: instruments are 0660")
            if k == "TAG":
                check(v != "uaccess", f"{where}: uaccess would hand an instrument to the seat")
    check(groups == {"dialout", "labloop"}, f"{rules_path}: groups {sorted(groups)}")

    # every USB instrument a driver opens by default has its rule
    ids = set()
    for d, _, files in os.walk(os.path.join(src, "drivers")):
        for f in files:
            if f.endswith((".c", ".h")):
                text = open(os.path.join(d, f), encoding="utf-8").read()
                ids |= set(re.findall(r"usb://([0-9a-fA-F]{4}):([0-9a-fA-F]{4})", text))
    check(ids, "no usb://VVVV:PPPP in drivers/: the check would prove nothing")
    for vid, pid in ids:
        ok = any(("ATTR", "idVendor", "==", vid.lower()) in ps and
                 any(k == "ATTR" and a == "idProduct" and op == "==" and
                     pid.lower() in v.split("|") for k, a, op, v in ps) and
                 any(k == "GROUP" for k, _, _, _ in ps)
                 for _, ps in rules)
        check(ok, f"{rules_path}: no GROUP rule for the USB instrument usb://{vid}:{pid}")

    # the groups the rules and the unit name are the ones the sysusers file gives the user
    sysusers = os.path.join(src, "deploy/systemd/labloop.sysusers")
    member, users = set(), set()
    for line in open(sysusers, encoding="utf-8"):
        f = shlex.split(line, comments=True)
        if f and f[0] == "u":
            users.add(f[1])
        if f and f[0] == "m" and f[1] == "labloop":
            member.add(f[2])
    check("labloop" in users, f"{sysusers}: no user labloop")
    check(groups - {"labloop"} <= member, f"{sysusers}: labloop not in {groups - member}")
    unit = read_unit(os.path.join(src, "deploy/systemd/labloopd.service"))
    supp = set(unit.get("SupplementaryGroups", "").split())
    check(supp <= member, f"labloopd.service: SupplementaryGroups {supp - member} not given")
    for k in ("Type", "NotifyAccess", "WatchdogSec", "User", "ProtectSystem", "StateDirectory",
              "ConfigurationDirectory", "ExecReload"):
        check(k in unit, f"labloopd.service: no {k}=")
    check(unit.get("Type") == "notify" and unit.get("NotifyAccess") == "main",
          "labloopd.service: Type=notify, NotifyAccess=main")
    check("-HUP" in unit.get("ExecReload", ""), "labloopd.service: ExecReload sends HUP")

    udevadm = shutil.which("udevadm")
    if udevadm and subprocess.run([udevadm, "verify", "--help"], capture_output=True).returncode == 0:
        r = subprocess.run([udevadm, "verify", rules_path], capture_output=True, text=True)
        check(r.returncode == 0, f"udevadm verify: {r.stdout}{r.stderr}")
    else:
        print("note: no `udevadm verify` here (systemd < 253 or no udev); the rules are checked "
              "by this script's parser only")


def read_unit(path):
    """The [Service] and [Unit] keys of a unit file; repeated keys joined with a space."""
    keys = {}
    for line in open(path, encoding="utf-8"):
        s = line.strip()
        if not s or s[0] in "#;[":
            continue
        k, _, v = s.partition("=")
        keys[k] = (keys[k] + " " + v) if k in keys and k in ("DeviceAllow",
                                                              "SupplementaryGroups") else v
    return keys


# ---- the package ----

def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def dpkg(*args):
    """dpkg, waiting for the lock while another dpkg or apt holds it."""
    deadline = time.monotonic() + 300
    while True:
        r = run(["dpkg", *args])
        if r.returncode == 0 or "lock" not in (r.stderr or "") or time.monotonic() > deadline:
            return r
        time.sleep(2)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seconds(v):
    """A systemd time span of the forms this unit uses (30s, 2min, 500ms, 30)."""
    m = re.fullmatch(r"(\d+)\s*(ms|s|min)?", v.strip())
    assert m, v
    return int(m.group(1)) * {"ms": 0.001, None: 1, "s": 1, "min": 60}[m.group(2)]


class Manager:
    """This test's stand-in for systemd's notify socket (abstract namespace)."""

    def __init__(self):
        self.name = f"@labloop-package-test-{os.getpid()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.msgs = []

    def wait(self, line, count=1, after=0, timeout=60):
        """Index of the count-th message at or after `after` holding `line`; fails on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            hits = [i for i, m in enumerate(self.msgs) if i >= after and line in m.split("\n")]
            if len(hits) >= count:
                return hits[count - 1]
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {count} x {line!r} after {after}: {self.msgs}")
            self.sock.settimeout(min(left, 1))
            try:
                self.msgs.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass

    def drain(self, secs):
        end = time.monotonic() + secs
        while time.monotonic() < end:
            self.sock.settimeout(max(end - time.monotonic(), 0.01))
            try:
                self.msgs.append(self.sock.recv(4096).decode())
            except socket.timeout:
                break


def check_deb(deb):
    info = run(["dpkg-deb", "--info", deb]).stdout
    fields = dict(re.findall(r"^ ([A-Z][A-Za-z-]+): (.*)$", info, re.M))
    check(fields.get("Package") == "labloop", "dpkg-deb --info: Package: labloop")
    check(fields.get("Architecture") == run(["dpkg", "--print-architecture"]).stdout.strip(),
          "dpkg-deb --info: Architecture is this machine's")
    deps = fields.get("Depends", "")
    for lib in ("libc6", "libuv1", "libsqlite3-0", "libpq5", "libmicrohttpd12", "libjansson4",
                "libpaho-mqtt1.3", "libmodbus5", "libserialport0", "libusb-1.0-0"):
        check(re.search(r"(^|, )" + re.escape(lib) + r"( |,|$)", deps),
              f"Depends names {lib} (linked): {deps}")
    for script in ("postinst", "prerm", "postrm", "conffiles"):
        check(re.search(r"^\s+\d+ bytes,\s+\d+ lines\s+\*?\s+" + script, info, re.M),
              f"dpkg-deb --info: control has {script}")
    conffiles = run(["dpkg-deb", "--info", deb, "conffiles"]).stdout.split()
    check(conffiles == ["/etc/labloop/labloop.ini"], f"conffiles: {conffiles}")
    contents = run(["dpkg-deb", "--contents", deb]).stdout
    want = {
        "./usr/bin/labloopd": "-rwxr-xr-x", "./usr/bin/labloop": "-rwxr-xr-x",
        "./usr/bin/labloop-sim": "-rwxr-xr-x",
        "./lib/systemd/system/labloopd.service": "-rw-r--r--",
        "./usr/lib/sysusers.d/labloop.conf": "-rw-r--r--",
        "./usr/lib/tmpfiles.d/labloop.conf": "-rw-r--r--",
        "./usr/lib/udev/rules.d/60-labloop.rules": "-rw-r--r--",
        "./etc/labloop/labloop.ini": "-rw-r--r--",
        "./usr/share/labloop/grafana/labloop.json": "-rw-r--r--",
    }
    seen = {}
    for line in contents.splitlines():
        f = line.split()
        seen[f[-1]] = (f[0], f[1])
    for path, mode in want.items():
        check(seen.get(path, ("", ""))[0] == mode, f"dpkg-deb --contents: {path} {mode}: "
              f"{seen.get(path)}")
    check(all(owner == "root/root" for _, owner in seen.values()), "every file root/root")


def start_installed(src, mgr, port):
    """Runs the installed unit's ExecStartPre and ExecStart the way systemd would (user, groups,
    umask, NOTIFY_SOCKET, WATCHDOG_USEC); the daemon's Popen."""
    unit = read_unit("/lib/systemd/system/labloopd.service")
    user, group = unit["User"], unit["Group"]
    supp = unit.get("SupplementaryGroups", "").split()
    umask = int(unit.get("UMask", "0022"), 8)
    check(seconds(unit["WatchdogSec"]) > 0, "WatchdogSec is a positive time span")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    as_unit = dict(user=user, group=group, extra_groups=supp, umask=umask, cwd="/", env=env)
    pre = run(shlex.split(unit["ExecStartPre"]), **as_unit)
    check(pre.returncode == 0, f"ExecStartPre as {user}: {pre.stdout}{pre.stderr}")
    # the pings at a drop-in's WatchdogSec=1s, so the test sees several in a few seconds
    env = dict(env, NOTIFY_SOCKET=mgr.name, WATCHDOG_USEC="1000000")
    log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"labloopd-package-{port}.log"),
               "w")
    return subprocess.Popen(shlex.split(unit["ExecStart"]), stdout=log, stderr=subprocess.STDOUT,
                            **dict(as_unit, env=env)), log.name, unit


def install(src, build):
    if os.geteuid() != 0:
        print("SKIP: dpkg -i needs root (this test runs as root in CI's container)")
        return SKIP
    for tool in ("dpkg-deb", "dpkg"):
        if not shutil.which(tool):
            print(f"SKIP: no {tool}")
            return SKIP
    if run(["dpkg-query", "-W", "-f=${Status}", "labloop"]).stdout.startswith("install ok"):
        print("SKIP: a labloop package is installed on this machine; this test does not touch it")
        return SKIP
    tmp = os.environ.get("TMPDIR", "/tmp")
    had_user = True
    try:
        pwd.getpwnam("labloop")
    except KeyError:
        had_user = False
    had_state = os.path.exists("/var/lib/labloop")

    out = os.path.join(tmp, f"package-{os.getpid()}")
    r = run([os.path.join(src, "deploy/package"), "--build-dir", build, "--out", out])
    if not check(r.returncode == 0, f"deploy/package: {r.stderr}"):
        return 1
    deb = r.stdout.strip().splitlines()[-1]
    check_deb(deb)

    daemon = None
    try:
        r = dpkg("-i", deb)
        if not check(r.returncode == 0, f"dpkg -i: {r.stdout}{r.stderr}"):
            return 1
        # what the maintainer scripts made
        pw = pwd.getpwnam("labloop")
        check(pw.pw_dir == "/var/lib/labloop", "labloop's home is its state directory")
        check(pw.pw_shell.endswith("nologin"), "labloop has no login shell")
        for g in ("dialout", "plugdev"):
            check("labloop" in grp.getgrnam(g).gr_mem, f"labloop is in {g}")
        st = os.stat("/var/lib/labloop")
        check(st.st_uid == pw.pw_uid and st.st_mode & 0o777 == 0o750,
              "/var/lib/labloop is labloop's, 0750")
        st = os.stat("/etc/labloop/labloop.ini")
        check(st.st_uid == 0 and st.st_gid == pw.pw_gid and st.st_mode & 0o777 == 0o640,
              "/etc/labloop/labloop.ini is root:labloop 0640")

        # systemd-analyze verify on the installed units
        sa = shutil.which("systemd-analyze")
        if not sa:
            print("note: no systemd-analyze (install-deps installs systemd): verify not run")
        else:
            v = run([sa, "verify", "/lib/systemd/system/labloopd.service"])
            ours = [l for l in (v.stdout + v.stderr).splitlines() if "labloop" in l]
            check(v.returncode == 0 and not ours, f"systemd-analyze verify: {v.stdout}{v.stderr}")

        # the operator's one edit: a port nothing else on this machine uses
        port = free_port()
        ini = open("/etc/labloop/labloop.ini", encoding="utf-8").read()
        ini, n = re.subn(r"^http = .*$", f"http = 127.0.0.1:{port}", ini, flags=re.M)
        check(n == 1, "the example config has one http line")
        open("/etc/labloop/labloop.ini", "w", encoding="utf-8").write(ini)

        mgr = Manager()
        daemon, logpath, unit = start_installed(src, mgr, port)
        ready = mgr.wait("READY=1", timeout=seconds(unit.get("TimeoutStartSec", "90s")))
        check(os.stat(f"/proc/{daemon.pid}").st_uid == pw.pw_uid, "the daemon runs as labloop")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
            check(resp.status == 200, "/healthz answers once READY=1 came")
        mgr.wait("WATCHDOG=1", count=3, after=ready, timeout=30)
        hup = len(mgr.msgs)
        daemon.send_signal(signal.SIGHUP)
        reloading = mgr.wait("RELOADING=1", after=hup)
        mgr.wait("READY=1", after=reloading + 1)
        stop = len(mgr.msgs)
        daemon.send_signal(signal.SIGTERM)
        rc = daemon.wait(timeout=seconds(unit.get("TimeoutStopSec", "90s")))
        mgr.drain(0.5)
        check(rc == 0, f"labloopd exits 0 on SIGTERM (got {rc}; log {logpath})")
        stopping = mgr.wait("STOPPING=1", after=stop, timeout=1)
        check(all("READY=1" not in m.split("\n") for m in mgr.msgs[stopping:]),
              "nothing READY after STOPPING")
        owned = [os.stat(os.path.join("/var/lib/labloop", f)).st_uid == pw.pw_uid
                 for f in os.listdir("/var/lib/labloop")]
        check(owned and all(owned), "the local store's files are labloop's")
        daemon = None
        print(f"installed daemon: {len(mgr.msgs)} notify messages, "
              f"{sum(m == 'WATCHDOG=1' for m in mgr.msgs)} pings")
    except AssertionError as e:
        check(False, str(e))
    finally:
        if daemon is not None:
            daemon.kill()
            daemon.wait()
        r = dpkg("--purge", "labloop")
        check(r.returncode == 0, f"dpkg --purge: {r.stdout}{r.stderr}")
        for path in ("/usr/bin/labloopd", "/lib/systemd/system/labloopd.service",
                     "/etc/labloop/labloop.ini", "/usr/lib/udev/rules.d/60-labloop.rules"):
            check(not os.path.exists(path), f"{path} gone after purge")
        # the machine as it was: the store this test made and the user it created
        if not had_state:
            shutil.rmtree("/var/lib/labloop", ignore_errors=True)
        if not had_user:
            run(["userdel", "labloop"])
            run(["groupdel", "labloop"])
        shutil.rmtree(out, ignore_errors=True)
    return 1 if failures else 0


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "rules":
        check_rules(sys.argv[2])
        rc = 1 if failures else 0
    elif len(sys.argv) >= 4 and sys.argv[1] == "install":
        rc = install(sys.argv[2], sys.argv[3])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print("ok" if rc == 0 else ("skipped" if rc == SKIP else f"{len(failures)} failures"))
    return rc


if __name__ == "__main__":
    sys.exit(main())
