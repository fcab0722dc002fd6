#!/usr/bin/env bash
# Creates (once) the Python venv with moto, cfn-lint, pytest and schemathesis, pinned in
# tests/requirements.txt. Prints the venv's path.
#
# `python3 -m venv` needs ensurepip, which Debian and Ubuntu split off into
# the python3-venv package: without it the venv is left half made (a python,
# no pip). That is checked first, and the package installed (as root) or
# asked for.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${VIPFLEET_VENV:-/var/tmp/vipfleet-venv}"
requirements="$here/../requirements.txt"
stamp="$venv/.vipfleet-requirements"

# Whether `python3 -m venv` can make a venv with pip in it.
venv_works() {
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1
}

# pip, not python: a venv made without ensurepip has a python and no pip.
if [[ ! -x "$venv/bin/pip" ]]; then
  if ! venv_works; then
    missing=(python3-venv)
    command -v python3 >/dev/null 2>&1 || missing=(python3 python3-venv)
    echo "setup: \`python3 -m venv\` cannot work here: $(command -v python3 >/dev/null 2>&1 \
      && echo "Python's ensurepip is missing" || echo "there is no python3"); Debian and Ubuntu ship it in python3-venv" >&2
    bash "$here/packages.sh" "${missing[@]}"
    if ! venv_works; then
      echo "setup: \`python3 -m venv\` still cannot work after installing ${missing[*]}" \
        "($(command -v python3 || echo 'no python3') is not the distribution's Python?)" >&2
      exit 1
    fi
  fi
  echo "setup: creating Python venv $venv" >&2
  python3 -m venv --clear "$venv"
fi
if ! cmp -s "$requirements" "$stamp"; then
  echo "setup: installing $(grep -cv '^#' "$requirements") Python packages into $venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements" >&2
  cp "$requirements" "$stamp"
fi
echo "$venv"
