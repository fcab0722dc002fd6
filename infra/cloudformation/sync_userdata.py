#!/usr/bin/env python3
"""Inline infra/ files into the CloudFormation template's user data.

The bootstrap script and the systemd unit have one source of truth, their
files under infra/. The template carries copies of them, gzipped and base64
encoded (EC2 caps user data at 16 KiB), between marker comments, so that a
stack needs nothing but the template to boot a node:

    # BEGIN GENERATED: infra/bootstrap/bootstrap.sh
    - |
      H4sIAAAAAAAC/...
    # END GENERATED: infra/bootstrap/bootstrap.sh

Run without arguments to refresh the copies; with --check to fail (exit 1)
when a copy differs from its file (the test suite does this). Copies are
compared by content, so a different zlib does not make the check fail.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import re
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "infra" / "cloudformation" / "vipfleet.yaml"
BEGIN = re.compile(r"^(?P<indent> *)# BEGIN GENERATED: (?P<path>\S+)\s*$")
# base64 -d on the node accepts wrapped input; 76 columns keeps the template readable.
WRAP_COLUMNS = 76


def encode(data: bytes) -> str:
    """gzip (no timestamp, so reruns are stable) then base64, wrapped."""
    packed = base64.b64encode(gzip.compress(data, compresslevel=9, mtime=0)).decode()
    return "\n".join(textwrap.wrap(packed, WRAP_COLUMNS)) + "\n"


def decode(text: str) -> bytes:
    return gzip.decompress(base64.b64decode("".join(text.split())))


def sections(template: str) -> list[tuple[str, str, int, int]]:
    """(path, indent, first line, end-marker line) of every generated section."""
    lines = template.splitlines()
    found = []
    for i, line in enumerate(lines):
        match = BEGIN.match(line)
        if not match:
            continue
        indent, rel = match.group("indent"), match.group("path")
        end = f"{indent}# END GENERATED: {rel}"
        try:
            j = lines.index(end, i + 1)
        except ValueError:
            raise ValueError(f"no '# END GENERATED: {rel}' after its BEGIN marker") from None
        found.append((rel, indent, i + 1, j))
    return found


def inlined(template: str) -> dict[str, bytes]:
    """The files as the template carries them, decoded."""
    lines = template.splitlines()
    out = {}
    for rel, indent, start, end in sections(template):
        body = lines[start:end]
        if not body:
            out[rel] = b""  # a fresh section, filled by render()
            continue
        if body[0] != f"{indent}- |":
            raise ValueError(f"generated section {rel} is not a '- |' block")
        out[rel] = decode("\n".join(body[1:]))
    return out


def render(template: str, repo: Path = REPO) -> str:
    """The template with every stale generated section re-encoded from its file."""
    lines = template.splitlines(keepends=True)
    current = inlined(template)
    for rel, indent, start, end in reversed(sections(template)):
        data = (repo / rel).read_bytes()
        if current.get(rel) == data:
            continue
        body = [f"{indent}- |\n"] + [f"{indent}  {line}\n" for line in encode(data).splitlines()]
        lines[start:end] = body
    return "".join(lines)


def stale(template: str, repo: Path = REPO) -> list[str]:
    """Paths whose inlined copy differs from the file."""
    current = inlined(template)
    return [rel for rel, _, _, _ in sections(template) if current[rel] != (repo / rel).read_bytes()]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the template is out of date")
    args = parser.parse_args(argv)
    current = TEMPLATE.read_text()
    if args.check:
        bad = stale(current)
        for rel in bad:
            print(f"{TEMPLATE}: inlined copy of {rel} differs from the file; run {Path(__file__).name}")
        if not bad:
            print(f"{TEMPLATE}: inlined files match {', '.join(r for r, *_ in sections(current))}")
        return 1 if bad else 0
    fresh = render(current)
    if fresh != current:
        TEMPLATE.write_text(fresh)
        print(f"updated {TEMPLATE}")
    else:
        print(f"{TEMPLATE} already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
