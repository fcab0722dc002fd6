"""infra/release/build.sh in its fast mode (--profile dev) on a stand-in agent, and
the bootstrap installing what it made: the tarball, and the .deb through dpkg.

The release mode (cross builds of the AWS SDK for two targets, tens of minutes)
is not run here; infra/README.md (Releases) records its last real run. This
needs cargo (for cargo-deb, which the script installs on first use) and dpkg.
"""

from __future__ import annotations

import re
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import (
    BOOTSTRAP,
    FAKE_AGENT_VERSION,
    HAPROXY_SAMPLE,
    INFRA,
    UNIT,
    bootstrap_env,
    make_fake_agent,
    need_tool,
    run_bash,
    sha256_file,
)

RELEASE_SCRIPT = INFRA / "release" / "build.sh"
DROP_IN = INFRA / "release" / "deb" / "10-usr-bin.conf"
REPO = INFRA.parent
# A first run installs cargo-deb (about a minute on two cores).
RELEASE_TIMEOUT_S = 900


@dataclass
class Release:
    out: Path
    agent: Path
    log: str
    host: str

    def sums(self) -> dict[str, str]:
        """SHA256SUMS as name -> hex."""
        pairs = (line.split(maxsplit=1) for line in (self.out / "SHA256SUMS").read_text().splitlines())
        return {name.strip(): digest for digest, name in pairs}

    def one(self, pattern: str) -> Path:
        found = sorted(self.out.glob(pattern))
        assert len(found) == 1, f"{pattern}: {found}"
        return found[0]


def run_release(out: Path, agent: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(RELEASE_SCRIPT), "--profile", "dev", "--agent-bin", str(agent), "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=RELEASE_TIMEOUT_S,
        check=False,
    )


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Release:
    need_tool("cargo")
    need_tool("dpkg-deb")
    work = tmp_path_factory.mktemp("release")
    (work / "agent").mkdir()
    agent = make_fake_agent(work / "agent")
    result = run_release(work / "out", agent)
    assert result.returncode == 0, result.stderr
    host = subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout
    host = re.search(r"^host: (\S+)$", host, re.M).group(1)
    return Release(work / "out", agent, result.stderr, host)


def test_fast_mode_makes_a_tarball_a_deb_and_their_sums(release):
    tarball = f"vipfleet-agent-{FAKE_AGENT_VERSION}-dev-{release.host}.tar.gz"
    deb = release.one("*.deb").name
    assert re.fullmatch(rf"vipfleet-agent_{re.escape(FAKE_AGENT_VERSION)}~dev-1_[a-z0-9]+\.deb", deb), deb
    assert {p.name for p in release.out.iterdir()} == {tarball, deb, "SHA256SUMS"}
    assert set(release.sums()) == {tarball, deb}
    check = subprocess.run(["sha256sum", "--check", "--strict", "SHA256SUMS"], cwd=release.out, capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    # The script names what it packaged, from the binary's own --version.
    assert "version 0.1.0, commit 0123abc" in release.log


def test_the_tarball_holds_the_agent_unit_example_and_license(release):
    path = release.one("*.tar.gz")
    top = path.name.removesuffix(".tar.gz")
    with tarfile.open(path) as tar:
        members = {m.name: m for m in tar.getmembers()}
        files = {name: (tar.extractfile(m).read(), m.mode) for name, m in members.items() if m.isfile()}
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())
    assert set(files) == {
        f"{top}/vipfleet-agent",
        f"{top}/vipfleet-agent.service",
        f"{top}/examples/haproxy.cfg",
        f"{top}/LICENSE",
        f"{top}/CHANGELOG.md",
    }
    assert files[f"{top}/vipfleet-agent"] == (release.agent.read_bytes(), 0o755)
    assert files[f"{top}/vipfleet-agent.service"] == (UNIT.read_bytes(), 0o644)
    assert files[f"{top}/examples/haproxy.cfg"] == (HAPROXY_SAMPLE.read_bytes(), 0o644)
    assert files[f"{top}/LICENSE"][0] == (REPO / "LICENSE").read_bytes()


def test_the_deb_holds_the_agent_and_the_unit_and_runs_no_scripts(release, tmp_path):
    deb = release.one("*.deb")
    listing = subprocess.run(["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True, check=True).stdout
    paths = {line.split()[-1] for line in listing.splitlines()}
    for path in (
        "./usr/bin/vipfleet-agent",
        "./usr/lib/systemd/system/vipfleet-agent.service",
        "./usr/lib/systemd/system/vipfleet-agent.service.d/10-usr-bin.conf",
        "./usr/share/doc/vipfleet-agent/copyright",
        "./usr/share/doc/vipfleet-agent/examples/haproxy.cfg",
    ):
        assert path in paths, listing
    field = lambda name: subprocess.run(  # noqa: E731
        ["dpkg-deb", "--field", str(deb), name], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert field("Package") == "vipfleet-agent"
    assert field("Version") == f"{FAKE_AGENT_VERSION}~dev-1"
    control = tmp_path / "control"
    subprocess.run(["dpkg-deb", "--control", str(deb), str(control)], check=True)
    # Installing or upgrading must never start, restart (drain) or stop the agent.
    assert not {"preinst", "postinst", "prerm", "postrm"} & {p.name for p in control.iterdir()}


def test_the_tarball_is_the_same_bytes_when_made_again(release, tmp_path):
    again = run_release(tmp_path / "out", release.agent, "--no-deb")
    assert again.returncode == 0, again.stderr
    tarball = release.one("*.tar.gz").name
    assert {p.name for p in (tmp_path / "out").iterdir()} == {tarball, "SHA256SUMS"}
    assert sha256_file(tmp_path / "out" / tarball) == release.sums()[tarball]


def test_the_drop_in_runs_what_the_unit_runs_from_usr_bin():
    def exec_starts(text: str) -> list[str]:
        return [line.partition("=")[2] for line in text.splitlines() if line.startswith("ExecStart=")]

    (unit_exec,) = exec_starts(UNIT.read_text())
    reset, drop_in_exec = exec_starts(DROP_IN.read_text())
    assert reset == "", "the drop-in must clear the unit's ExecStart first"
    assert unit_exec.startswith("/usr/local/bin/vipfleet-agent ")
    assert drop_in_exec == unit_exec.replace("/usr/local/bin/", "/usr/bin/", 1)


def test_the_bootstrap_installs_from_the_release_tarball(release, tmp_path):
    root = tmp_path / "root"
    tarball = release.one("*.tar.gz")
    env = bootstrap_env(root, f"file://{tarball}", release.sums()[tarball.name])
    first = run_bash(BOOTSTRAP, env)
    assert first.returncode == 0, first.stderr
    assert (root / "usr/local/bin/vipfleet-agent").read_bytes() == release.agent.read_bytes()
    second = run_bash(BOOTSTRAP, env)
    assert second.returncode == 0, second.stderr
    assert "done: no changes" in second.stdout


def test_the_bootstrap_installs_from_the_deb(release, tmp_path):
    need_tool("dpkg")
    root = tmp_path / "root"
    # An empty dpkg database, as a fresh Debian image has a full one.
    (root / "var/lib/dpkg/info").mkdir(parents=True)
    (root / "var/lib/dpkg/updates").mkdir()
    (root / "var/lib/dpkg/status").touch()
    deb = release.one("*.deb")
    env = bootstrap_env(root, f"file://{deb}", release.sums()[deb.name])
    first = run_bash(BOOTSTRAP, env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "step 3/7: agent (deb)" in first.stdout
    assert (root / "usr/bin/vipfleet-agent").read_bytes() == release.agent.read_bytes()
    assert not (root / "usr/local/bin/vipfleet-agent").exists()
    assert (root / "usr/lib/systemd/system/vipfleet-agent.service.d/10-usr-bin.conf").read_bytes() == (
        DROP_IN.read_bytes()
    )
    # The bootstrap's own unit in /etc; the package's drop-in still applies to it.
    assert (root / "etc/systemd/system/vipfleet-agent.service").read_bytes() == UNIT.read_bytes()
    status = subprocess.run(
        ["dpkg", f"--root={root}", "--status", "vipfleet-agent"], capture_output=True, text=True, check=True
    ).stdout
    assert "Status: install ok installed" in status
    # (check-config ran the packaged binary: nothing else is at /usr/bin.)

    second = run_bash(BOOTSTRAP, env)
    assert second.returncode == 0, second.stderr
    assert "fetching" not in second.stdout
    assert "done: no changes" in second.stdout
