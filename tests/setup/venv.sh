#!/usr/bin/env bash
# Creates (once) the Python venv with moto, cfn-lint, pytest and schemathesis, pinned in
# tests/requirements.txt. Prints the venv's path.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${VIPFLEET_VENV:-/var/tmp/vipfleet-venv}"
requirements="$here/../requirements.txt"
stamp="$venv/.vipfleet-requirements"

if [[ ! -x "$venv/bin/python" ]]; then
  echo "setup: creating Python venv $venv" >&2
  python3 -m venv "$venv"
fi
if ! cmp -s "$requirements" "$stamp"; then
  echo "setup: installing $(grep -cv '^#' "$requirements") Python packages into $venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements" >&2
  cp "$requirements" "$stamp"
fi
echo "$venv"
