#!/usr/bin/env python3
"""systemctl for the lab's node chroots, which have no systemd.

`vipfleet-loadtest lab add-node --bootstrap` runs infra/bootstrap/bootstrap.sh
for real, in a node's network namespace and a chroot (loadtest/lab/node-chroot.sh).
The bootstrap ends by enabling and starting units with systemctl, but CI
machines and containers do not run systemd. This stand-in, installed as the
chroot's /usr/local/sbin/systemctl, does what systemd does for the parts that
decide whether the node works:

- the unit from /etc/systemd/system or /usr/lib/systemd/system, then its
  drop-ins (UNIT.d/*.conf, which is how the lab points the agent at moto);
- Environment=, EnvironmentFile=[-]path, LoadCredential= (%d), RuntimeDirectory=;
- ExecStart= with $VAR and ${VAR}, detached, logging to /var/log/UNIT.log;
- Type=notify: `start` waits for READY=1 on NOTIFY_SOCKET, as systemctl does,
  and fails when the process exits first or TimeoutStartSec passes;
- ExecReload= with $MAINPID; stop: SIGTERM, SIGKILL after TimeoutStopSec.

It does not sandbox (DynamicUser=, Protect*=, capabilities) and has no
watchdog: infra/tests checks those directives with systemd-analyze verify.
State (enabled units, main PIDs) lives in /var/lib/systemctl-standin.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

UNIT_DIRS = (Path("/etc/systemd/system"), Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
STATE = Path("/var/lib/systemctl-standin")
NOTIFY_DIR = Path("/run/systemctl-standin")
CREDENTIALS = Path("/run/credentials")
# Caps on the unit's own timeouts: a lab run should fail in minutes, not hang.
MAX_START_TIMEOUT_S = 60.0
MAX_STOP_TIMEOUT_S = 60.0
POLL_S = 0.1


class UnitError(Exception):
    pass


def parse_seconds(text: str, default: float) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|min|m)?\s*", text or "")
    if not match:
        return default
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value / 1000 if unit == "ms" else value * 60 if unit in ("min", "m") else value


class Unit:
    """The [Service] settings of a unit and its drop-ins, each key a list of values."""

    def __init__(self, name: str):
        self.name = name if "." in name else f"{name}.service"
        path = next((d / self.name for d in UNIT_DIRS if (d / self.name).is_file()), None)
        if path is None:
            raise UnitError(f"Unit {self.name} not found.")
        self.settings: dict[str, list[str]] = {}
        self._read(path)
        for directory in UNIT_DIRS:
            for drop_in in sorted((directory / f"{self.name}.d").glob("*.conf")):
                self._read(drop_in)

    def _read(self, path: Path) -> None:
        section, pending = None, ""
        for raw in path.read_text().splitlines():
            line = pending + raw.strip()
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
            elif section == "Service" and "=" in line:
                key, _, value = line.partition("=")
                values = self.settings.setdefault(key.strip(), [])
                if value.strip():
                    values.append(value.strip())
                else:
                    values.clear()  # an empty assignment resets the list, as in systemd

    def get(self, key: str, default: str = "") -> str:
        values = self.settings.get(key)
        return values[-1] if values else default

    def all(self, key: str) -> list[str]:
        return self.settings.get(key, [])

    @property
    def credentials(self) -> Path:
        return CREDENTIALS / self.name

    def specifiers(self, text: str) -> str:
        table = {"%d": str(self.credentials), "%n": self.name, "%%": "%"}
        return re.sub(r"%[dn%]", lambda m: table[m.group(0)], text)

    def environment(self, main_pid: int | None = None) -> dict[str, str]:
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        for line in self.all("EnvironmentFile"):
            optional = line.startswith("-")
            path = Path(line.lstrip("-"))
            if not path.is_file():
                if optional:
                    continue
                raise UnitError(f"{self.name}: EnvironmentFile {path} not found")
            for entry in path.read_text().splitlines():
                entry = entry.strip()
                if entry and not entry.startswith(("#", ";")) and "=" in entry:
                    key, _, value = entry.partition("=")
                    env[key.strip()] = value.strip().strip("\"'")
        for line in self.all("Environment"):
            for assignment in shlex.split(self.specifiers(line)):
                key, _, value = assignment.partition("=")
                env[key] = value
        if self.all("LoadCredential"):
            env["CREDENTIALS_DIRECTORY"] = str(self.credentials)
        if main_pid is not None:
            env["MAINPID"] = str(main_pid)
        return env

    def command(self, line: str, env: dict[str, str]) -> list[str]:
        """An Exec*= line as argv: systemd's prefixes dropped, variables expanded."""
        words = shlex.split(self.specifiers(line.lstrip("-@+!:")))
        argv = []
        for word in words:
            whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
            if whole:  # $VAR alone splits into words; ${VAR} stays one word
                argv.extend(env.get(whole.group(1), "").split())
            else:
                argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
        return argv

    def prepare(self) -> None:
        for directory in self.all("RuntimeDirectory"):
            for name in directory.split():
                Path("/run", name).mkdir(parents=True, exist_ok=True)
        for line in self.all("LoadCredential"):
            credential, _, source = line.partition(":")
            self.credentials.mkdir(parents=True, exist_ok=True)
            target = self.credentials / credential
            shutil.copyfile(source, target)
            target.chmod(0o400)


def pid_file(unit: Unit) -> Path:
    return STATE / f"{unit.name}.pid"


def main_pid(unit: Unit) -> int | None:
    """The unit's main PID while that process lives (a zombie counts as gone)."""
    try:
        pid = int(pid_file(unit).read_text())
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    return None if state in ("Z", "X") else pid


def start(unit: Unit) -> None:
    if main_pid(unit) is not None:
        return
    unit.prepare()
    env = unit.environment()
    argv = unit.command(unit.get("ExecStart"), env)
    if not argv:
        raise UnitError(f"{unit.name} has no ExecStart=")
    notify = unit.get("Type", "simple") == "notify"
    server = None
    if notify:
        NOTIFY_DIR.mkdir(parents=True, exist_ok=True)
        path = NOTIFY_DIR / f"{unit.name}.notify"
        path.unlink(missing_ok=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        server.bind(str(path))
        server.settimeout(POLL_S)
        env["NOTIFY_SOCKET"] = str(path)
    STATE.mkdir(parents=True, exist_ok=True)
    log = open(f"/var/log/{unit.name.removesuffix('.service')}.log", "ab")
    process = subprocess.Popen(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    pid_file(unit).write_text(f"{process.pid}\n")
    if server is None:
        return
    timeout = min(parse_seconds(unit.get("TimeoutStartSec"), 90.0), MAX_START_TIMEOUT_S)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise UnitError(f"{unit.name}: exited with {process.returncode} before READY=1")
            try:
                message = server.recv(4096).decode(errors="replace")
            except socket.timeout:
                continue
            if "READY=1" in message.split("\n"):
                return
        process.kill()
        raise UnitError(f"{unit.name}: no READY=1 within {timeout:.0f} s")
    finally:
        server.close()
        Path(env["NOTIFY_SOCKET"]).unlink(missing_ok=True)


def stop(unit: Unit) -> None:
    pid = main_pid(unit)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + min(parse_seconds(unit.get("TimeoutStopSec"), 90.0), MAX_STOP_TIMEOUT_S)
    while main_pid(unit) is not None and time.monotonic() < deadline:
        time.sleep(POLL_S)
    if main_pid(unit) is not None:
        os.killpg(pid, signal.SIGKILL)
    pid_file(unit).unlink(missing_ok=True)


def reload_or_restart(unit: Unit) -> None:
    pid = main_pid(unit)
    if pid is None or not unit.all("ExecReload"):
        stop(unit)
        start(unit)
        return
    env = unit.environment(main_pid=pid)
    for line in unit.all("ExecReload"):
        subprocess.run(unit.command(line, env), env=env, check=True)


def enabled_marker(unit: Unit) -> Path:
    return STATE / "enabled" / unit.name


def run(verb: str, names: list[str]) -> int:
    if verb == "daemon-reload":
        return 0
    for name in names:
        unit = Unit(name)
        if verb == "is-enabled":
            if not enabled_marker(unit).exists():
                return 1
        elif verb == "is-active":
            if main_pid(unit) is None:
                return 3
        elif verb == "enable":
            enabled_marker(unit).parent.mkdir(parents=True, exist_ok=True)
            enabled_marker(unit).touch()
        elif verb == "start":
            start(unit)
        elif verb == "stop":
            stop(unit)
        elif verb == "restart":
            stop(unit)
            start(unit)
        elif verb in ("reload-or-restart", "try-reload-or-restart"):
            reload_or_restart(unit)
        else:
            print(f"systemctl (lab stand-in): unsupported verb {verb}", file=sys.stderr)
            return 2
    return 0


def main(args: list[str]) -> int:
    words = [a for a in args if not a.startswith("-")]
    if not words:
        print("usage: systemctl [--quiet] VERB [UNIT...]", file=sys.stderr)
        return 2
    try:
        return run(words[0], words[1:])
    except (UnitError, OSError, subprocess.CalledProcessError) as error:
        print(f"systemctl (lab stand-in): {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
