"""Runs infra/bootstrap/bootstrap.sh into a temporary root, twice, and checks what it leaves.

No systemd and no package manager are touched (VIPFLEET_SKIP_SYSTEMCTL=1,
VIPFLEET_SKIP_PACKAGES=1); the agent is a small script served from a file://
or a loopback http:// URL, bare or in a release tarball (the .deb, made by
infra/release/build.sh, is tested in test_release.py).
"""

from __future__ import annotations

import functools
import subprocess
import http.server
import shutil
import stat
import threading
import tomllib
from pathlib import Path

import pytest
from conftest import (
    BOOTSTRAP,
    FAKE_PEER_KEY,
    FAKE_PEER_KEY_PARAMETER,
    HAPROXY_SAMPLE,
    INFRA,
    SAMPLE_PARAMETERS,
    UNIT,
    agent_default_secs,
    bootstrap_env,
    make_fake_agent,
    make_tarball,
    put_fake_parameter,
    render_user_data,
    run_bash,
    sha256_file,
)

EXPECTED_MODES = {
    "usr/local/bin/vipfleet-agent": 0o755,
    "etc/vipfleet/agent.toml": 0o644,
    "etc/vipfleet/dashboard.token": 0o600,
    "etc/vipfleet/peer.key": 0o600,
    "etc/haproxy/haproxy.cfg": 0o644,
    "etc/sysctl.d/90-vipfleet.conf": 0o644,
    "etc/modules-load.d/vipfleet.conf": 0o644,
    "etc/systemd/system/vipfleet-agent.service": 0o644,
}


def snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    """(sha256, mtime in ns, mode) of every file under root."""
    return {
        str(p.relative_to(root)): (sha256_file(p), p.stat().st_mtime_ns, stat.S_IMODE(p.stat().st_mode))
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def agent(tmp_path) -> Path:
    directory = tmp_path / "artifacts"
    directory.mkdir()
    return make_fake_agent(directory)


@pytest.fixture
def env(tmp_path, agent) -> dict[str, str]:
    return bootstrap_env(tmp_path / "root", f"file://{agent}", sha256_file(agent))


def test_first_run_installs_everything(tmp_path, agent, env):
    root = tmp_path / "root"
    result = run_bash(BOOTSTRAP, env)
    assert result.returncode == 0, result.stderr
    for step in range(1, 8):
        assert f"step {step}/7" in result.stdout
    assert "done: 8 change(s)" in result.stdout

    files = snapshot(root)
    assert {name: mode for name, (_, _, mode) in files.items()} == EXPECTED_MODES

    assert (root / "usr/local/bin/vipfleet-agent").read_bytes() == agent.read_bytes()
    assert (root / "etc/systemd/system/vipfleet-agent.service").read_bytes() == UNIT.read_bytes()
    assert (root / "etc/modules-load.d/vipfleet.conf").read_text() == "dummy\n"
    sysctl = (root / "etc/sysctl.d/90-vipfleet.conf").read_text()
    assert "net.ipv4.ip_nonlocal_bind = 1\n" in sysctl
    assert len((root / "etc/vipfleet/dashboard.token").read_text()) == 64
    assert (root / "etc/vipfleet/peer.key").read_text() == FAKE_PEER_KEY + "\n"

    config = tomllib.loads((root / "etc/vipfleet/agent.toml").read_text())
    assert config["aws"] == {"table": "vipfleet-leases", "region": "us-east-1"}
    assert config["fleet"] == {
        "vips": ["10.200.0.1/32", "10.200.0.2/32"],
        "route_tables": ["rtb-0123", "rtb-4567"],
        "vpc_id": "vpc-0abc",
    }
    assert config["lease"] == {"profile": "default"}
    assert config["lifecycle"] == {
        "asg_name": "vipfleet-nodes",
        "hook_name": "vipfleet-drain",
        "drain_timeout_ms": 270_000,
        "launch_hook_name": "vipfleet-launch",
        "launch_timeout_ms": 570_000,
    }
    assert config["health"]["url"] == "http://127.0.0.1:8404/healthz"
    assert config["dashboard"]["listen"] == ["0.0.0.0:9180"]
    assert config["vip_binding"] == {"enabled": True, "interface": "vipfleet0", "kind": "dummy"}
    assert config["peers"] == {"port": 7946, "key_file": "/etc/vipfleet/peer.key"}

    # The agent was asked to validate the config, and in a clean environment.
    calls = (agent.parent / "agent-calls.log").read_text().splitlines()
    assert len(calls) == 1 and calls[0].startswith("check-config --config ")
    assert calls[0].endswith(" vipfleet_env=0")


def test_second_run_changes_nothing(tmp_path, env):
    root = tmp_path / "root"
    assert run_bash(BOOTSTRAP, env).returncode == 0
    before = snapshot(root)
    second = run_bash(BOOTSTRAP, env)
    assert second.returncode == 0, second.stderr
    assert "done: no changes" in second.stdout
    assert "wrote:" not in second.stdout
    assert snapshot(root) == before


def test_changed_input_rewrites_only_what_depends_on_it(tmp_path, env):
    root = tmp_path / "root"
    assert run_bash(BOOTSTRAP, env).returncode == 0
    before = snapshot(root)
    result = run_bash(BOOTSTRAP, {**env, "VIPFLEET_FLEET_VIPS": "10.200.0.9/32"})
    assert result.returncode == 0, result.stderr
    assert "done: 1 change(s)" in result.stdout
    after = snapshot(root)
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"etc/vipfleet/agent.toml"}
    assert tomllib.loads((root / "etc/vipfleet/agent.toml").read_text())["fleet"]["vips"] == ["10.200.0.9/32"]


def test_wrong_sha256_fails_loudly_and_installs_nothing(tmp_path, env):
    root = tmp_path / "root"
    result = run_bash(BOOTSTRAP, {**env, "VIPFLEET_AGENT_SHA256": "ab" * 32})
    assert result.returncode != 0
    assert "sha256 mismatch" in result.stderr and "refusing to install" in result.stderr
    assert not (root / "usr/local/bin/vipfleet-agent").exists()
    assert not (root / "etc/vipfleet/agent.toml").exists()


def test_wrong_sha256_keeps_the_installed_agent(tmp_path, env):
    root = tmp_path / "root"
    assert run_bash(BOOTSTRAP, env).returncode == 0
    before = snapshot(root)
    result = run_bash(BOOTSTRAP, {**env, "VIPFLEET_AGENT_SHA256": "ab" * 32})
    assert result.returncode != 0
    assert "sha256 mismatch" in result.stderr
    assert snapshot(root) == before


def test_agent_rejecting_the_config_stops_the_bootstrap(tmp_path):
    directory = tmp_path / "artifacts"
    directory.mkdir()
    picky = make_fake_agent(directory, check_config_exit=64)
    env = bootstrap_env(tmp_path / "root", f"file://{picky}", sha256_file(picky))
    result = run_bash(BOOTSTRAP, env)
    assert result.returncode != 0
    assert "rejected the configuration" in result.stderr
    assert not (tmp_path / "root/etc/vipfleet/agent.toml").exists()


@pytest.mark.parametrize(
    "override,message",
    [
        ({"VIPFLEET_AWS_TABLE": ""}, "VIPFLEET_AWS_TABLE is required"),
        ({"VIPFLEET_FLEET_VIPS": '10.200.0.1/32"]'}, "bad item"),
        ({"VIPFLEET_FLEET_ROUTE_TABLES": "rtb-0123,subnet-1"}, "bad item"),
        ({"VIPFLEET_AGENT_SHA256": "xyz"}, "64 hex digits"),
        ({"VIPFLEET_AGENT_URL": "ftp://example.invalid/agent"}, "unsupported agent URL scheme"),
        ({"VIPFLEET_AGENT_URL": "file:///nonexistent/agent"}, "cannot read"),
        ({"VIPFLEET_AGENT_URL": "file:///nonexistent/agent.tar.gz"}, "cannot read"),
        ({"VIPFLEET_LEASE_PROFILE": "turbo"}, "lease profile"),
        ({"VIPFLEET_VIP_BINDING_KIND": "bridge"}, "must be dummy or ifb"),
        ({"VIPFLEET_HAPROXY_MAXCONN": "0"}, "bad haproxy maxconn"),
        ({"VIPFLEET_PEERS_PORT": "0"}, "bad peers port"),
        ({"VIPFLEET_PEERS_PORT": "65536"}, "bad peers port"),
        ({"VIPFLEET_PEERS_PORT": "7946/udp"}, "bad peers port"),
        ({"VIPFLEET_PEERS_KEY_PARAMETER": ""}, "VIPFLEET_PEERS_KEY_PARAMETER is required"),
        ({"VIPFLEET_SKIP_SYSTEMCTL": "0"}, "needs VIPFLEET_SKIP_PACKAGES=1 and VIPFLEET_SKIP_SYSTEMCTL=1"),
        ({"VIPFLEET_TERMINATION_HOOK_TIMEOUT": "59"}, "must be 60..7200 seconds"),
        ({"VIPFLEET_TERMINATION_HOOK_TIMEOUT": "7201"}, "must be 60..7200 seconds"),
        ({"VIPFLEET_TERMINATION_HOOK_TIMEOUT": "5m"}, "must be 60..7200 seconds"),
        ({"VIPFLEET_LAUNCH_HOOK_TIMEOUT": "30"}, "must be 60..7200 seconds"),
        ({"VIPFLEET_LIFECYCLE_LAUNCH_HOOK_NAME": 'x"y'}, "bad launch hook name"),
    ],
)
def test_bad_inputs_fail_with_a_message(tmp_path, env, override, message):
    result = run_bash(BOOTSTRAP, {**env, **override})
    assert result.returncode != 0
    assert message in result.stderr


def lifecycle_config(root: Path) -> dict:
    return tomllib.loads((root / "etc/vipfleet/agent.toml").read_text())["lifecycle"]


def test_the_peer_port_reaches_the_agent_config(tmp_path, env):
    root = tmp_path / "root"
    assert run_bash(BOOTSTRAP, {**env, "VIPFLEET_PEERS_PORT": "8946"}).returncode == 0
    peers = tomllib.loads((root / "etc/vipfleet/agent.toml").read_text())["peers"]
    assert peers == {"port": 8946, "key_file": "/etc/vipfleet/peer.key"}


def fake_aws_dir(tmp_path: Path) -> Path:
    """Where bootstrap_env put the stand-in AWS CLI and its parameters."""
    return tmp_path / "fake-aws"


def test_the_peer_key_comes_from_ssm_and_is_never_printed(tmp_path, env):
    root = tmp_path / "root"
    result = run_bash(BOOTSTRAP, env)
    assert result.returncode == 0, result.stderr
    key = root / "etc/vipfleet/peer.key"
    assert key.read_text().strip() == FAKE_PEER_KEY
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert FAKE_PEER_KEY not in result.stdout + result.stderr
    calls = (fake_aws_dir(tmp_path) / "aws-calls.log").read_text().splitlines()
    assert calls == [
        f"ssm get-parameter --with-decryption --name {FAKE_PEER_KEY_PARAMETER}"
        " --region us-east-1 --query Parameter.Value --output text"
    ]


def test_a_rotated_key_reaches_the_node_with_a_rerun(tmp_path, env):
    root = tmp_path / "root"
    assert run_bash(BOOTSTRAP, env).returncode == 0
    before = snapshot(root)
    rotated = "rotated-peer-key-0123456789abcdef0123456789abcdef"
    put_fake_parameter(fake_aws_dir(tmp_path), FAKE_PEER_KEY_PARAMETER, rotated)
    result = run_bash(BOOTSTRAP, env)
    assert result.returncode == 0, result.stderr
    assert "done: 1 change(s)" in result.stdout
    after = snapshot(root)
    assert {name for name in before if before[name] != after[name]} == {"etc/vipfleet/peer.key"}
    assert (root / "etc/vipfleet/peer.key").read_text().strip() == rotated


@pytest.mark.parametrize(
    "parameter,value,message",
    [
        ("/vipfleet/other", None, "cannot read the peer key from SSM /vipfleet/other"),
        (FAKE_PEER_KEY_PARAMETER, "short-key-0123", "the peer key in SSM is under 32 characters"),
    ],
)
def test_a_missing_or_short_peer_key_stops_the_bootstrap(tmp_path, env, parameter, value, message):
    if value is not None:
        put_fake_parameter(fake_aws_dir(tmp_path), parameter, value)
    result = run_bash(BOOTSTRAP, {**env, "VIPFLEET_PEERS_KEY_PARAMETER": parameter})
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "root/etc/vipfleet/peer.key").exists()
    if value is not None:
        assert value not in result.stdout + result.stderr


def test_drain_timeout_is_the_termination_hook_timeout_less_the_margin(tmp_path, env):
    root = tmp_path / "root"
    assert run_bash(BOOTSTRAP, {**env, "VIPFLEET_TERMINATION_HOOK_TIMEOUT": "600"}).returncode == 0
    assert lifecycle_config(root)["drain_timeout_ms"] == 570_000
    assert run_bash(BOOTSTRAP, {**env, "VIPFLEET_TERMINATION_HOOK_TIMEOUT": "0060"}).returncode == 0
    assert lifecycle_config(root)["drain_timeout_ms"] == 30_000


def test_launch_timeout_is_the_launch_hook_timeout_less_the_margin(tmp_path, env):
    root = tmp_path / "root"
    overrides = {"VIPFLEET_LAUNCH_HOOK_TIMEOUT": "900", "VIPFLEET_LIFECYCLE_LAUNCH_HOOK_NAME": "fleet-launch"}
    assert run_bash(BOOTSTRAP, {**env, **overrides}).returncode == 0
    assert lifecycle_config(root)["launch_timeout_ms"] == 870_000
    assert lifecycle_config(root)["launch_hook_name"] == "fleet-launch"


@pytest.mark.parametrize(
    "parameter,variable,key,agent_default",
    [
        ("LaunchHookTimeout", "VIPFLEET_LAUNCH_HOOK_TIMEOUT", "launch_timeout_ms", "DEFAULT_LAUNCH_TIMEOUT"),
        ("LifecycleHeartbeatTimeout", "VIPFLEET_TERMINATION_HOOK_TIMEOUT", "drain_timeout_ms", "DEFAULT_DRAIN_TIMEOUT"),
    ],
)
def test_timeout_defaults_agree(tmp_path, env, template, parameter, variable, key, agent_default):
    """Template default -> bootstrap -> agent.toml equals the agent's own default,
    and so does the bootstrap's default when the variable is missing."""
    hook_default = template["Parameters"][parameter]["Default"]
    agent_default_ms = agent_default_secs(agent_default) * 1000
    assert run_bash(BOOTSTRAP, {**env, variable: str(hook_default)}).returncode == 0
    assert lifecycle_config(tmp_path / "root")[key] == agent_default_ms
    without = {k: v for k, v in env.items() if k != variable}
    assert run_bash(BOOTSTRAP, {**without, "VIPFLEET_ROOT": str(tmp_path / "other")}).returncode == 0
    assert lifecycle_config(tmp_path / "other")[key] == agent_default_ms


def test_the_unit_lets_a_default_drain_finish():
    """`systemctl stop` drains too; systemd must not kill a drain of the default length."""
    stop = [line for line in UNIT.read_text().splitlines() if line.startswith("TimeoutStopSec=")]
    timeout_ms = int(stop[0].removeprefix("TimeoutStopSec=").removesuffix("s")) * 1000
    assert timeout_ms > agent_default_secs("DEFAULT_DRAIN_TIMEOUT") * 1000


def test_ifb_kind_reaches_the_config_and_the_module_list(tmp_path, env):
    root = tmp_path / "root"
    assert run_bash(BOOTSTRAP, {**env, "VIPFLEET_VIP_BINDING_KIND": "ifb"}).returncode == 0
    assert tomllib.loads((root / "etc/vipfleet/agent.toml").read_text())["vip_binding"]["kind"] == "ifb"
    assert (root / "etc/modules-load.d/vipfleet.conf").read_text() == "ifb\n"


def test_http_artifact(tmp_path, agent, env):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(agent.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{agent.name}"
        result = run_bash(BOOTSTRAP, {**env, "VIPFLEET_AGENT_URL": url})
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "root/usr/local/bin/vipfleet-agent").read_bytes() == agent.read_bytes()


def test_empty_backends_leave_haproxy_config_alone(tmp_path, env):
    root = tmp_path / "root"
    (root / "etc/haproxy").mkdir(parents=True)
    (root / "etc/haproxy/haproxy.cfg").write_text("# the AMI's own\n")
    result = run_bash(BOOTSTRAP, {**env, "VIPFLEET_HAPROXY_BACKENDS": ""})
    assert result.returncode == 0, result.stderr
    assert (root / "etc/haproxy/haproxy.cfg").read_text() == "# the AMI's own\n"
    assert "WARNING" in result.stdout and "monitor-uri /healthz" in result.stdout


def test_sample_haproxy_config_is_what_the_bootstrap_writes(tmp_path, env):
    # infra/haproxy/haproxy.cfg is the bootstrap's output for two sample backends;
    # refresh it by copying etc/haproxy/haproxy.cfg from such a run.
    assert run_bash(BOOTSTRAP, env).returncode == 0
    assert (tmp_path / "root/etc/haproxy/haproxy.cfg").read_text() == HAPROXY_SAMPLE.read_text()


def test_user_data_from_the_template_boots_a_node(tmp_path, template, agent):
    """The template's user data, rendered, unpacks the bootstrap and runs it."""
    root = tmp_path / "root"
    values = {
        **SAMPLE_PARAMETERS,
        "AgentArtifactUrl": f"file://{agent}",
        "AgentArtifactSha256": sha256_file(agent),
    }
    user_data = render_user_data(template, values)
    env = {
        "PATH": bootstrap_env(root, "", "")["PATH"],
        "VIPFLEET_ROOT": str(root),
        "VIPFLEET_SKIP_PACKAGES": "1",
        "VIPFLEET_SKIP_SYSTEMCTL": "1",
    }
    result = run_bash(None, env, stdin=user_data)
    assert result.returncode == 0, result.stderr
    assert (root / "opt/vipfleet/bootstrap/bootstrap.sh").read_bytes() == BOOTSTRAP.read_bytes()
    assert (root / "etc/systemd/system/vipfleet-agent.service").read_bytes() == UNIT.read_bytes()
    config = tomllib.loads((root / "etc/vipfleet/agent.toml").read_text())
    assert config["aws"]["table"] == SAMPLE_PARAMETERS["LeaseTable"]
    assert config["fleet"]["route_tables"] == SAMPLE_PARAMETERS["RouteTableIds"].split(",")
    assert config["lifecycle"]["asg_name"] == "vipfleet-nodes"
    drain_s = int(SAMPLE_PARAMETERS["LifecycleHeartbeatTimeout"]) - 30
    assert config["lifecycle"]["drain_timeout_ms"] == drain_s * 1000
    launch_s = int(SAMPLE_PARAMETERS["LaunchHookTimeout"]) - 30
    assert config["lifecycle"]["launch_timeout_ms"] == launch_s * 1000
    assert config["lifecycle"]["launch_hook_name"] == "vipfleet-launch"
    assert config["peers"]["key_file"] == "/etc/vipfleet/peer.key"
    assert (root / "etc/vipfleet/peer.key").read_text().strip() == FAKE_PEER_KEY


def test_systemd_unit_verifies(tmp_path):
    """systemd-analyze accepts every directive (the agent path swapped for a real binary)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("SKIPPED: systemd-analyze not installed; the unit file was not verified")
    import subprocess

    def verify(text: str) -> list[str]:
        unit = tmp_path / "vipfleet-agent.service"
        unit.write_text(text)
        result = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True)
        lines = (result.stdout + result.stderr).splitlines()
        # systemd < 254 does not know the backoff keys; that is expected and documented.
        known = ("Unknown key 'RestartSteps'", "Unknown key 'RestartMaxDelaySec'")
        return [line for line in lines if line.strip() and not any(k in line for k in known)] + (
            [f"exit {result.returncode}"] if result.returncode else []
        )

    true = shutil.which("true")
    text = UNIT.read_text().replace("ExecStart=/usr/local/bin/vipfleet-agent", f"ExecStart={true}")
    assert verify(text) == []
    assert verify(text.replace("ProtectSystem=strict", "ProtectSystem=bogus")) != []


def test_systemd_unit_directives():
    lines = [line for line in UNIT.read_text().splitlines() if line and not line.startswith("#")]
    settings = {}
    for line in lines:
        if "=" in line:
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    assert settings["ExecStart"] == ["/usr/local/bin/vipfleet-agent run --config /etc/vipfleet/agent.toml"]
    required = {
        "Type": "notify",
        "Restart": "on-failure",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "CAP_NET_ADMIN",
        "AmbientCapabilities": "CAP_NET_ADMIN",
    }
    for key, value in required.items():
        assert settings.get(key) == [value], key
    assert "WatchdogSec" in settings and "RestartSec" in settings
    # Long enough for a drain; see the comment in the unit.
    assert int(settings["TimeoutStopSec"][0].removesuffix("s")) >= 120


def test_unit_sets_the_log_variable_the_agent_reads():
    """The unit's log level reaches the agent: the variable it sets is the one main.rs reads."""
    import re

    main = (INFRA.parent / "services" / "agent" / "src" / "main.rs").read_text()
    read = re.findall(r'EnvFilter::try_from_env\("([A-Z_]+)"\)', main)
    assert len(read) == 1, f"expected one EnvFilter variable in main.rs, found {read}"
    environment = [
        line.removeprefix("Environment=").partition("=")[0]
        for line in UNIT.read_text().splitlines()
        if line.startswith("Environment=")
    ]
    assert read[0] in environment, f"the unit sets {environment}, the agent reads {read[0]}"
    assert "RUST_LOG" not in environment, "the agent ignores RUST_LOG"


def test_sample_haproxy_config_is_valid():
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("SKIPPED: haproxy not installed; infra/haproxy/haproxy.cfg was not validated")
    import subprocess

    result = subprocess.run([haproxy, "-c", "-f", str(HAPROXY_SAMPLE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = HAPROXY_SAMPLE.read_text()
    for needle in ("bind 0.0.0.0:80", "bind 127.0.0.1:8404", "monitor-uri /healthz", "stats socket", "check"):
        assert needle in text


def make_fake_tools(directory: Path) -> Path:
    """Stand-ins for systemctl, sysctl, ip and modprobe that keep state in files and log every call.

    The stand-in kernel makes links of a type only once modprobe has loaded its module."""
    state = directory / "state"
    state.mkdir(parents=True)
    log = directory / "tools.log"
    scripts = {
        "systemctl": f"""#!/bin/sh
echo "systemctl $*" >> '{log}'
case "$1" in
  is-enabled) [ -f '{state}'/enabled-"$3" ] ;;
  is-active) [ -f '{state}'/active-"$3" ] ;;
  enable) touch '{state}'/enabled-"$2" ;;
  start|restart|reload-or-restart) touch '{state}'/active-"$2" ;;
  daemon-reload) ;;
  *) exit 2 ;;
esac
""",
        "sysctl": f"""#!/bin/sh
echo "sysctl $*" >> '{log}'
if [ "$1" = -n ]; then cat '{state}'/sysctl-"$2" 2>/dev/null || echo 0; exit 0; fi
if [ "$1" = -q ] && [ "$2" = -w ]; then
  key="${{3%%=*}}"; printf '%s\\n' "${{3#*=}}" > '{state}'/sysctl-"$key"; exit 0
fi
exit 2
""",
        "modprobe": f"""#!/bin/sh
echo "modprobe $*" >> '{log}'
touch '{state}'/module-"$1"
""",
        "ip": f"""#!/bin/sh
echo "ip $*" >> '{log}'
case "$1 $2" in
  "link add") [ -f '{state}'/module-"$5" ] ;;
  "link del") ;;
  *) exit 2 ;;
esac
""",
    }
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def test_services_and_kernel_settings_are_applied_once(tmp_path, env):
    """With stand-in systemctl/sysctl: the first run starts and sets everything, the second nothing."""
    bin_dir = make_fake_tools(tmp_path / "tools")
    log = tmp_path / "tools/tools.log"
    env = {
        **env,
        "PATH": f"{bin_dir}:{env['PATH']}",
        "VIPFLEET_FAKE_TOOLS": "1",
        "VIPFLEET_SKIP_SYSTEMCTL": "0",
    }

    def calls_of(run_env) -> tuple[subprocess.CompletedProcess, list[str]]:
        log.write_text("")
        result = run_bash(BOOTSTRAP, run_env)
        assert result.returncode == 0, result.stderr
        return result, log.read_text().splitlines()

    def mutations(calls: list[str]) -> list[str]:
        return [c for c in calls if not c.startswith(("systemctl is-", "sysctl -n", "ip link"))]

    first, calls = calls_of(env)
    expected = [
        "sysctl -q -w net.ipv4.ip_nonlocal_bind=1",
        "sysctl -q -w net.ipv4.conf.all.arp_ignore=1",
        "sysctl -q -w net.ipv4.conf.all.arp_announce=2",
        "sysctl -q -w net.ipv4.ip_local_port_range=1024 65000",
        "sysctl -q -w net.core.somaxconn=4096",
        "modprobe dummy",
        "systemctl daemon-reload",
        "systemctl enable haproxy",
        "systemctl start haproxy",
        "systemctl enable vipfleet-agent",
        "systemctl start vipfleet-agent",
    ]
    assert mutations(calls) == expected

    second, calls = calls_of(env)
    assert mutations(calls) == []
    assert "done: no changes" in second.stdout

    # New VIPs: only the agent restarts (a drain); haproxy is left alone.
    _, calls = calls_of({**env, "VIPFLEET_FLEET_VIPS": "10.200.0.9/32"})
    assert mutations(calls) == ["systemctl restart vipfleet-agent"]

    # New backends: only haproxy reloads.
    _, calls = calls_of({**env, "VIPFLEET_FLEET_VIPS": "10.200.0.9/32", "VIPFLEET_HAPROXY_BACKENDS": "10.0.2.12:8080"})
    assert mutations(calls) == ["systemctl reload-or-restart haproxy"]


# ---------------------------------------------------------------- release tarballs

STAMP = "var/lib/vipfleet/agent-artifact"
RELEASE_TOP = "vipfleet-agent-0.1.0-x86_64-unknown-linux-musl"


def release_tarball(path: Path, agent: Path, top: str = RELEASE_TOP) -> Path:
    """A tarball laid out as infra/release/build.sh makes one."""
    return make_tarball(
        path,
        {
            f"{top}/vipfleet-agent": (agent.read_bytes(), 0o755),
            f"{top}/vipfleet-agent.service": (UNIT.read_bytes(), 0o644),
            f"{top}/LICENSE": (b"license\n", 0o644),
        },
    )


def test_release_tarball_installs_its_binary_and_a_rerun_needs_no_download(tmp_path, agent):
    root = tmp_path / "root"
    tarball = release_tarball(tmp_path / "artifacts/agent.tar.gz", agent)
    env = bootstrap_env(root, f"file://{tarball}", sha256_file(tarball))
    first = run_bash(BOOTSTRAP, env)
    assert first.returncode == 0, first.stderr
    assert "step 3/7: agent (tarball)" in first.stdout
    assert "done: 9 change(s)" in first.stdout
    files = snapshot(root)
    assert {name: mode for name, (_, _, mode) in files.items()} == {**EXPECTED_MODES, STAMP: 0o644}
    assert (root / "usr/local/bin/vipfleet-agent").read_bytes() == agent.read_bytes()
    assert (root / STAMP).read_text() == f"{sha256_file(tarball)} {sha256_file(agent)}\n"
    # The agent checked the configuration from its installed path.
    calls = (agent.parent / "agent-calls.log").read_text().splitlines()
    assert len(calls) == 1 and calls[0].startswith("check-config --config ")

    # Same inputs, and the tarball gone: the stamp says the binary is its.
    tarball.unlink()
    second = run_bash(BOOTSTRAP, env)
    assert second.returncode == 0, second.stderr
    assert "fetching" not in second.stdout
    assert "done: no changes" in second.stdout
    assert snapshot(root) == files


def test_a_binary_changed_by_hand_is_reinstalled_from_the_tarball(tmp_path, agent):
    root = tmp_path / "root"
    tarball = release_tarball(tmp_path / "artifacts/agent.tar.gz", agent)
    env = bootstrap_env(root, f"file://{tarball}", sha256_file(tarball))
    assert run_bash(BOOTSTRAP, env).returncode == 0
    (root / "usr/local/bin/vipfleet-agent").write_text("#!/bin/sh\nexit 0\n")
    result = run_bash(BOOTSTRAP, env)
    assert result.returncode == 0, result.stderr
    assert "fetching" in result.stdout
    assert (root / "usr/local/bin/vipfleet-agent").read_bytes() == agent.read_bytes()


@pytest.mark.parametrize(
    "members",
    [
        {"vipfleet-agent-0.1.0/README": (b"no binary\n", 0o644)},
        {"a/b/vipfleet-agent": (b"#!/bin/sh\n", 0o755)},
        {"a/vipfleet-agent": (b"#!/bin/sh\n", 0o755), "b/vipfleet-agent": (b"#!/bin/sh\n", 0o755)},
    ],
    ids=["no-agent", "too-deep", "two-agents"],
)
def test_a_tarball_without_one_agent_is_refused(tmp_path, members):
    root = tmp_path / "root"
    tarball = make_tarball(tmp_path / "bad.tar.gz", members)
    result = run_bash(BOOTSTRAP, bootstrap_env(root, f"file://{tarball}", sha256_file(tarball)))
    assert result.returncode != 0
    assert "holds no single vipfleet-agent" in result.stderr
    assert not (root / "usr/local/bin/vipfleet-agent").exists()


def test_a_tarball_with_the_wrong_sha256_is_refused(tmp_path, agent):
    root = tmp_path / "root"
    tarball = release_tarball(tmp_path / "artifacts/agent.tar.gz", agent)
    result = run_bash(BOOTSTRAP, bootstrap_env(root, f"file://{tarball}", "ab" * 32))
    assert result.returncode != 0
    assert "sha256 mismatch" in result.stderr and "refusing to install" in result.stderr
    assert not (root / "usr/local/bin/vipfleet-agent").exists()
    assert not (root / STAMP).exists()


def test_a_new_release_restarts_the_agent_only_when_its_binary_changed(tmp_path, env):
    """With stand-in systemctl: a new binary restarts the agent; a repacked tarball
    holding the same binary only updates the stamp."""
    bin_dir = make_fake_tools(tmp_path / "tools")
    log = tmp_path / "tools/tools.log"
    artifacts = tmp_path / "artifacts"

    def release(build: str, top: str = RELEASE_TOP) -> dict[str, str]:
        # One stand-in per build (its bytes name its directory), one tarball per layout.
        directory = artifacts / build
        directory.mkdir(parents=True, exist_ok=True)
        agent = directory / "vipfleet-agent"
        if not agent.exists():
            make_fake_agent(directory, build=build)
        tarball = release_tarball(directory / f"{top}.tar.gz", agent, top)
        return {
            **env,
            "PATH": f"{bin_dir}:{env['PATH']}",
            "VIPFLEET_FAKE_TOOLS": "1",
            "VIPFLEET_SKIP_SYSTEMCTL": "0",
            "VIPFLEET_AGENT_URL": f"file://{tarball}",
            "VIPFLEET_AGENT_SHA256": sha256_file(tarball),
        }

    def mutations(run_env: dict[str, str]) -> tuple[subprocess.CompletedProcess, list[str]]:
        log.write_text("")
        result = run_bash(BOOTSTRAP, run_env)
        assert result.returncode == 0, result.stderr
        calls = log.read_text().splitlines()
        return result, [c for c in calls if c.startswith("systemctl") and not c.startswith("systemctl is-")]

    _, calls = mutations(release("1"))
    assert "systemctl start vipfleet-agent" in calls
    _, calls = mutations(release("2"))
    assert calls == ["systemctl restart vipfleet-agent"]
    result, calls = mutations(release("2", top="vipfleet-agent-0.1.0-repacked"))
    assert calls == []
    assert "done: 1 change(s)" in result.stdout and f"wrote: /{STAMP}" in result.stdout
