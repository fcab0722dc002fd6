#!/usr/bin/env bash
# Installs the Debian packages the tests and the lab need, if any is missing:
# haproxy (the real data plane), iproute2 (network namespaces), iptables
# (the lab's cuts between node namespaces), shellcheck,
# curl, chromium (the dashboard's browser test, headless), and prometheus for
# its promtool (the alert rules' checks and unit tests; the server it also
# brings is stopped and disabled where systemd started it).
#
#   packages.sh               the list above, whichever are missing
#   packages.sh PACKAGE...    exactly these (a caller found them missing,
#                             e.g. venv.sh asks for python3-venv)
set -euo pipefail

needed=()
if (($# > 0)); then
  needed=("$@")
else
  command -v haproxy >/dev/null 2>&1 || needed+=(haproxy)
  command -v ip >/dev/null 2>&1 || needed+=(iproute2)
  command -v iptables >/dev/null 2>&1 || needed+=(iptables)
  command -v shellcheck >/dev/null 2>&1 || needed+=(shellcheck)
  command -v curl >/dev/null 2>&1 || needed+=(curl)
  command -v chromium >/dev/null 2>&1 || needed+=(chromium)
  command -v promtool >/dev/null 2>&1 || needed+=(prometheus)
fi
if ((${#needed[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "setup: missing packages ${needed[*]}; run as root or install them yourself (apt-get install ${needed[*]})" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: missing packages ${needed[*]} (Debian names) and no apt-get here; install their equivalents yourself" >&2
  exit 1
fi
echo "setup: installing ${needed[*]} from the distribution's packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${needed[@]}" >/dev/null
if [[ " ${needed[*]} " == *" prometheus "* && -d /run/systemd/system ]]; then
  # Only promtool is wanted: no Prometheus server listening on :9090.
  systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi
