"""Shared helpers for the infra tests: paths, the parsed template, a fake agent."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

INFRA = Path(__file__).resolve().parents[1]
TEMPLATE_PATH = INFRA / "cloudformation" / "vipfleet.yaml"
BOOTSTRAP = INFRA / "bootstrap" / "bootstrap.sh"
UNIT = INFRA / "systemd" / "vipfleet-agent.service"
HAPROXY_SAMPLE = INFRA / "haproxy" / "haproxy.cfg"

sys.path.insert(0, str(INFRA / "cloudformation"))


def load_template() -> dict:
    """The template as cfn-lint reads it (short-form !Ref/!Sub become Ref/Fn::Sub)."""
    from cfnlint.decode import decode_str

    template, matches = decode_str(TEMPLATE_PATH.read_text())
    assert not matches, f"template does not parse: {matches}"
    return template


@pytest.fixture(scope="session")
def template() -> dict:
    return load_template()


# Parameter values used wherever a test needs the template's user data rendered.
SAMPLE_PARAMETERS = {
    "LeaseTable": "vipfleet-LeaseTable-ABCDEF123456",
    "AWS::Region": "us-east-1",
    "AWS::StackName": "vipfleet",
    "Vips": "10.200.0.1/32,10.200.0.2/32",
    "RouteTableIds": "rtb-0123456789abcdef0,rtb-0fedcba9876543210",
    "VpcId": "vpc-0abc",
    "LeaseProfile": "default",
    "AgentArtifactUrl": "https://example.invalid/vipfleet-agent",
    "AgentArtifactSha256": "0" * 64,
    "BackendServers": "10.0.2.10:8080,10.0.2.11:8080",
    "ServicePort": "80",
    "PeerPort": "7946",
    "PeerKeyParameter": "/vipfleet/peer-key",
    "LifecycleHeartbeatTimeout": "300",
    "LaunchHookTimeout": "600",
}


def resolve_sub(text: str, values: dict[str, str]) -> str:
    """Fn::Sub semantics for a plain string: ${Name} from values, ${!X} -> ${X}."""

    def one(match: re.Match) -> str:
        name = match.group(1)
        if name.startswith("!"):
            return "${" + name[1:] + "}"
        if name not in values:
            raise KeyError(f"no value for ${{{name}}} in the test's parameters")
        return values[name]

    return re.sub(r"\$\{([^}]*)\}", one, text)


def render_user_data(template: dict, values: dict[str, str]) -> str:
    """The user data an instance would receive (before base64)."""
    user_data = template["Resources"]["NodeLaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"]
    parts = user_data["Fn::Base64"]["Fn::Join"][1]
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif set(part) == {"Fn::Sub"} and isinstance(part["Fn::Sub"], str):
            out.append(resolve_sub(part["Fn::Sub"], values))
        else:
            raise AssertionError(f"unexpected user data part: {part!r}")
    return "".join(out)


AGENT_CONFIG_RS = INFRA.parent / "services" / "agent-config" / "src" / "lib.rs"


def agent_default_secs(name: str) -> int:
    """A `pub const NAME: Duration = Duration::from_secs(N);` default of the agent's config."""
    match = re.search(rf"pub const {name}: Duration = Duration::from_secs\((\d+)\);", AGENT_CONFIG_RS.read_text())
    assert match, f"{name} not found in {AGENT_CONFIG_RS}"
    return int(match.group(1))


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# What the stand-in agent's `--version` prints (the release script reads it).
FAKE_AGENT_VERSION = "0.1.0"
FAKE_AGENT_COMMIT = "0123abc"


def make_fake_agent(directory: Path, *, check_config_exit: int = 0, build: str = "") -> Path:
    """A stand-in for vipfleet-agent: logs its arguments, answers check-config and --version.

    `build` goes into the script as a comment, so stand-ins can differ in bytes."""
    log = directory / "agent-calls.log"
    agent = directory / "vipfleet-agent"
    agent.write_text(
        "#!/bin/sh\n"
        f"# build {build}\n"
        # Records its arguments and how many VIPFLEET_* variables it inherited.
        f"echo \"$* vipfleet_env=$(env | grep -c '^VIPFLEET_')\" >> '{log}'\n"
        "if [ \"$1\" = --version ]; then\n"
        f"  echo 'vipfleet-agent {FAKE_AGENT_VERSION} ({FAKE_AGENT_COMMIT})'\n"
        "  exit 0\n"
        "fi\n"
        "if [ \"$1\" = check-config ]; then\n"
        "  [ -f \"$3\" ] || exit 66\n"
        f"  exit {check_config_exit}\n"
        "fi\n"
        "exit 0\n"
    )
    agent.chmod(0o755)
    return agent


def make_tarball(path: Path, members: dict[str, tuple[bytes, int]]) -> Path:
    """A .tar.gz holding name -> (bytes, mode); parent directories are implied."""
    with tarfile.open(path, "w:gz") as tar:
        for name, (data, mode) in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))
    return path


def need_tool(name: str) -> str:
    """The tool's path; a loud skip where it is missing, a failure under CI."""
    path = shutil.which(name)
    if path is None:
        message = f"SKIPPED: {name} not installed"
        if os.environ.get("CI"):
            pytest.fail(f"{message}, and CI is set: a missing tool is a failure there")
        pytest.skip(message)
    return path


# The fleet's peer key as the stand-in Parameter Store holds it, under the
# template's default parameter name.
FAKE_PEER_KEY_PARAMETER = "/vipfleet/peer-key"
FAKE_PEER_KEY = "vipfleet-test-peer-key-5d1c9e0a7b3f-never-logged-0123456789abcdef"


def make_fake_aws(directory: Path) -> Path:
    """A stand-in for the AWS CLI's `aws ssm get-parameter`: prints the value of
    directory/ssm/<name> (slashes as in the name), or fails as for a missing
    parameter. Logs its arguments, never a value, to directory/aws-calls.log.
    Holds FAKE_PEER_KEY under FAKE_PEER_KEY_PARAMETER until a test changes it."""
    store = directory / "ssm"
    if not (store / FAKE_PEER_KEY_PARAMETER.lstrip("/")).exists():
        put_fake_parameter(directory, FAKE_PEER_KEY_PARAMETER, FAKE_PEER_KEY)
    aws = directory / "aws"
    aws.write_text(
        "#!/bin/sh\n"
        f"echo \"$*\" >> '{directory}/aws-calls.log'\n"
        "name=''\n"
        "while [ $# -gt 0 ]; do\n"
        "  if [ \"$1\" = --name ]; then name=\"$2\"; fi\n"
        "  shift\n"
        "done\n"
        f"file='{store}'\"$name\"\n"
        "[ -f \"$file\" ] || { echo 'An error occurred (ParameterNotFound)' >&2; exit 254; }\n"
        "cat \"$file\"\n"
    )
    aws.chmod(0o755)
    return aws


def put_fake_parameter(directory: Path, name: str, value: str) -> None:
    """Stores a parameter in the stand-in Parameter Store (the CLI prints it with a newline)."""
    path = directory / "ssm" / name.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")


def bootstrap_env(root: Path, agent_url: str, sha256: str, **overrides: str) -> dict[str, str]:
    """The bootstrap's inputs for a run into root, with a stand-in AWS CLI (in
    root's parent, fake-aws/) first on PATH."""
    fake_aws = root.parent / "fake-aws"
    fake_aws.mkdir(parents=True, exist_ok=True)
    make_fake_aws(fake_aws)
    env = {
        "PATH": f"{fake_aws}:" + os.environ.get("PATH", "/usr/bin:/bin"),
        "VIPFLEET_PEERS_KEY_PARAMETER": FAKE_PEER_KEY_PARAMETER,
        "VIPFLEET_ROOT": str(root),
        "VIPFLEET_SKIP_PACKAGES": "1",
        "VIPFLEET_SKIP_SYSTEMCTL": "1",
        "VIPFLEET_AWS_TABLE": "vipfleet-leases",
        "VIPFLEET_AWS_REGION": "us-east-1",
        "VIPFLEET_FLEET_VIPS": "10.200.0.1/32, 10.200.0.2/32",
        "VIPFLEET_FLEET_ROUTE_TABLES": "rtb-0123,rtb-4567",
        "VIPFLEET_FLEET_VPC_ID": "vpc-0abc",
        "VIPFLEET_LIFECYCLE_ASG_NAME": "vipfleet-nodes",
        "VIPFLEET_AGENT_URL": agent_url,
        "VIPFLEET_AGENT_SHA256": sha256,
        "VIPFLEET_HAPROXY_BACKENDS": "10.0.2.10:8080,10.0.2.11:8080",
    }
    env.update(overrides)
    return env


def run_bash(script: Path | None, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess:
    """bash SCRIPT, or (script None) bash reading the script from stdin."""
    return subprocess.run(
        ["bash", str(script)] if script is not None else ["bash", "-s"],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
