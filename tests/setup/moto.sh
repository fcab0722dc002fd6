#!/usr/bin/env bash
# Starts moto (one request at a time: see moto_server.py) on a free loopback port, waits until it answers,
# and prints "PID URL". The caller stops it with `kill PID`.
#   usage: moto.sh VENV [LOGFILE]
set -euo pipefail

venv="$1"
log="${2:-/dev/null}"
port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$venv/bin/python" "$(dirname "${BASH_SOURCE[0]}")/moto_server.py" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  if curl -fsS -o /dev/null "http://127.0.0.1:$port/moto-api/" 2>/dev/null; then
    echo "$pid http://127.0.0.1:$port"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "setup: moto exited at start; see $log" >&2
    exit 1
  fi
  sleep 0.1
done
kill "$pid" 2>/dev/null || true
echo "setup: moto did not answer on port $port within 10 s" >&2
exit 1
