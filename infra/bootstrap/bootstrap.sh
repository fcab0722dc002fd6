#!/usr/bin/env bash
# vipfleet node bootstrap: turns a fresh instance into a fleet member.
#
# Installs haproxy, fetches the agent (a release tarball, a .deb or the bare
# binary) and checks its sha256, writes
# /etc/vipfleet/agent.toml and the haproxy config from its inputs, sets the
# sysctls the data plane needs, installs the systemd unit and starts it.
# Idempotent: a second run with the same inputs changes nothing and says so.
# The CloudFormation template inlines this file as user data (a test checks
# the copy); it also runs by hand: `sudo VIPFLEET_...=... bash bootstrap.sh`.
#
# Inputs: VIPFLEET_* variables, listed with their defaults in infra/README.md
# ("Bootstrap inputs"); the user data exports them from the stack parameters.
# Switches for tests and images: VIPFLEET_ROOT (install under this prefix,
# default /), VIPFLEET_SKIP_PACKAGES=1, VIPFLEET_SKIP_SYSTEMCTL=1,
# VIPFLEET_SKIP_KERNEL=1 (no live sysctl/modprobe; implied when VIPFLEET_ROOT
# is not /), VIPFLEET_FAKE_TOOLS=1 (tests whose PATH holds stand-ins for
# systemctl, sysctl, ip and modprobe: lifts the VIPFLEET_ROOT guards).
set -Eeuo pipefail
umask 022

log() { printf 'vipfleet-bootstrap: %s\n' "$*"; }
die() {
  printf 'vipfleet-bootstrap: ERROR: %s\n' "$*" >&2
  exit 1
}
trap 'printf "vipfleet-bootstrap: ERROR: exit %s at line %s: %s\n" "$?" "$LINENO" "$BASH_COMMAND" >&2' ERR

ROOT="${VIPFLEET_ROOT:-/}"
ROOT="${ROOT%/}"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
UNIT_SRC="${VIPFLEET_UNIT_SRC:-$SCRIPT_DIR/../systemd/vipfleet-agent.service}"
SKIP_PACKAGES="${VIPFLEET_SKIP_PACKAGES:-0}"
SKIP_SYSTEMCTL="${VIPFLEET_SKIP_SYSTEMCTL:-0}"
SKIP_KERNEL="${VIPFLEET_SKIP_KERNEL:-0}"
AGENT_BIN=/usr/local/bin/vipfleet-agent
# Which release artifact (sha256) installed which binary (sha256): a rerun
# with the same artifact needs neither to download nor to unpack it.
AGENT_STAMP=/var/lib/vipfleet/agent-artifact
AGENT_CFG=/etc/vipfleet/agent.toml
TOKEN_FILE=/etc/vipfleet/dashboard.token
PEER_KEY_FILE=/etc/vipfleet/peer.key
HAPROXY_CFG=/etc/haproxy/haproxy.cfg
SYSCTL_FILE=/etc/sysctl.d/90-vipfleet.conf
# A drain must end this long before the termination hook would time out on its
# own: the agent notices the termination by polling IMDS (5 s) and completes the
# action with retries (up to 5 x 2 s) after the drain. A node that cannot get
# ready abandons its launch this long before the launch hook would.
HOOK_MARGIN_S=30
MODULES_FILE=/etc/modules-load.d/vipfleet.conf
UNIT_DEST=/etc/systemd/system/vipfleet-agent.service
# Each entry: key=value. Why each one is there is written in the file itself.
SYSCTLS=(
  "net.ipv4.ip_nonlocal_bind=1"
  "net.ipv4.conf.all.arp_ignore=1"
  "net.ipv4.conf.all.arp_announce=2"
  "net.ipv4.ip_local_port_range=1024 65000"
  "net.core.somaxconn=4096"
)

CHANGES=0
AGENT_RESTART=0
HAPROXY_RELOAD=0
UNITS_CHANGED=0

# Path of an absolute target path under the install root.
p() { printf '%s%s' "$ROOT" "$1"; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# put_file DEST MODE: install stdin as DEST (mode, atomically) unless DEST
# already holds the same bytes and mode. Sets PUT_CHANGED to 0 or 1.
put_file() {
  local dest mode tmp
  dest="$(p "$1")"
  mode="$2"
  tmp="$WORK/put"
  cat >"$tmp"
  if [[ -f "$dest" ]] && cmp -s "$tmp" "$dest" && [[ "$(stat -c %a "$dest")" == "$mode" ]]; then
    log "unchanged: $1"
    PUT_CHANGED=0
    return 0
  fi
  mkdir -p "$(dirname "$dest")"
  local staged
  staged="$(mktemp "$(dirname "$dest")/.vipfleet.XXXXXX")"
  cat "$tmp" >"$staged"
  chmod "$mode" "$staged"
  mv -f "$staged" "$dest"
  log "wrote: $1 (mode $mode)"
  PUT_CHANGED=1
  CHANGES=$((CHANGES + 1))
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# toml_list "a, b": ["a", "b"]
toml_list() {
  local out="" item
  local -a items
  IFS=',' read -r -a items <<<"$1"
  for item in "${items[@]}"; do
    item="${item//[[:space:]]/}"
    [[ -n "$item" ]] || continue
    out+="${out:+, }\"$item\""
  done
  printf '[%s]' "$out"
}

# check_list NAME VALUE REGEX: every comma-separated item of VALUE matches REGEX.
check_list() {
  local item
  local -a items
  [[ -n "${2//[[:space:],]/}" ]] || die "$1 is empty"
  IFS=',' read -r -a items <<<"$2"
  for item in "${items[@]}"; do
    item="${item//[[:space:]]/}"
    [[ -z "$item" || "$item" =~ $3 ]] || die "$1: bad item '$item'"
  done
}

# check_seconds NAME VALUE: a lifecycle hook timeout Auto Scaling accepts, and
# long enough to leave time after HOOK_MARGIN_S.
check_seconds() {
  if [[ ! "$2" =~ ^[0-9]{1,4}$ ]] || ((10#$2 < 60 || 10#$2 > 7200)); then
    die "$1 must be 60..7200 seconds, not '$2'"
  fi
}

check_inputs() {
  log "step 1/7: checking inputs (root: ${ROOT:-/})"
  : "${VIPFLEET_AWS_TABLE:?VIPFLEET_AWS_TABLE is required}"
  : "${VIPFLEET_FLEET_VIPS:?VIPFLEET_FLEET_VIPS is required}"
  : "${VIPFLEET_FLEET_ROUTE_TABLES:?VIPFLEET_FLEET_ROUTE_TABLES is required}"
  : "${VIPFLEET_AGENT_URL:?VIPFLEET_AGENT_URL is required}"
  : "${VIPFLEET_AGENT_SHA256:?VIPFLEET_AGENT_SHA256 is required}"
  : "${VIPFLEET_PEERS_KEY_PARAMETER:?VIPFLEET_PEERS_KEY_PARAMETER is required}"
  # Values land inside TOML strings and haproxy.cfg: only allow what they can be.
  [[ "$VIPFLEET_AWS_TABLE" =~ ^[A-Za-z0-9_.-]{3,255}$ ]] || die "bad table name '$VIPFLEET_AWS_TABLE'"
  [[ "${VIPFLEET_AWS_REGION:-}" =~ ^([a-z0-9-]+)?$ ]] || die "bad region '$VIPFLEET_AWS_REGION'"
  check_list VIPFLEET_FLEET_VIPS "$VIPFLEET_FLEET_VIPS" '^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$'
  check_list VIPFLEET_FLEET_ROUTE_TABLES "$VIPFLEET_FLEET_ROUTE_TABLES" '^rtb-[0-9a-f]+$'
  [[ "${VIPFLEET_FLEET_VPC_ID:-}" =~ ^(vpc-[0-9a-f]+)?$ ]] || die "bad VPC id '$VIPFLEET_FLEET_VPC_ID'"
  [[ "${VIPFLEET_LEASE_PROFILE:=default}" =~ ^(default|cheap|hot|fast)$ ]] || die "lease profile must be default, cheap, hot or fast"
  [[ "${VIPFLEET_LIFECYCLE_ASG_NAME:-}" =~ ^[A-Za-z0-9_.:/-]*$ ]] || die "bad ASG name"
  [[ "${VIPFLEET_LIFECYCLE_HOOK_NAME:=vipfleet-drain}" =~ ^[A-Za-z0-9_./-]+$ ]] || die "bad hook name"
  [[ "${VIPFLEET_DASHBOARD_LISTEN:=0.0.0.0:9180}" =~ ^[0-9.]+:[0-9]+$ ]] || die "bad dashboard address"
  check_seconds VIPFLEET_TERMINATION_HOOK_TIMEOUT "${VIPFLEET_TERMINATION_HOOK_TIMEOUT:=300}"
  [[ "${VIPFLEET_LIFECYCLE_LAUNCH_HOOK_NAME:=vipfleet-launch}" =~ ^[A-Za-z0-9_./-]+$ ]] || die "bad launch hook name"
  check_seconds VIPFLEET_LAUNCH_HOOK_TIMEOUT "${VIPFLEET_LAUNCH_HOOK_TIMEOUT:=600}"
  VIPFLEET_AGENT_SHA256="${VIPFLEET_AGENT_SHA256,,}"
  [[ "$VIPFLEET_AGENT_SHA256" =~ ^[0-9a-f]{64}$ ]] || die "VIPFLEET_AGENT_SHA256 must be 64 hex digits"
  case "${VIPFLEET_AGENT_URL%%[?#]*}" in
    *.tar.gz | *.tgz) AGENT_KIND=tarball ;;
    *.deb) AGENT_KIND=deb ;;
    *) AGENT_KIND=binary ;;
  esac
  if [[ "$AGENT_KIND" == deb ]]; then
    command -v dpkg >/dev/null 2>&1 ||
      die "a .deb agent needs dpkg (Debian, Ubuntu); use the release tarball (.tar.gz) here"
    # The package's drop-in points the unit at this path.
    AGENT_BIN=/usr/bin/vipfleet-agent
  fi
  [[ "${VIPFLEET_HAPROXY_PORT:=80}" =~ ^[0-9]{1,5}$ ]] || die "bad haproxy port"
  if ! [[ "${VIPFLEET_PEERS_PORT:=7946}" =~ ^[1-9][0-9]{0,4}$ ]] || ((VIPFLEET_PEERS_PORT > 65535)); then
    die "bad peers port '$VIPFLEET_PEERS_PORT' (1..65535)"
  fi
  [[ "${VIPFLEET_HAPROXY_MAXCONN:=20000}" =~ ^[1-9][0-9]{0,6}$ ]] || die "bad haproxy maxconn"
  [[ "${VIPFLEET_VIP_BINDING_KIND:=dummy}" =~ ^(dummy|ifb)$ ]] || die "VIPFLEET_VIP_BINDING_KIND must be dummy or ifb"
  if [[ -n "${VIPFLEET_HAPROXY_BACKENDS:-}" ]]; then
    check_list VIPFLEET_HAPROXY_BACKENDS "$VIPFLEET_HAPROXY_BACKENDS" '^[A-Za-z0-9.-]+:[0-9]{1,5}$'
  fi
  if [[ -n "$ROOT" && "${VIPFLEET_FAKE_TOOLS:-0}" != 1 ]]; then
    # Installing packages or starting units would touch the live system, not the prefix.
    [[ "$SKIP_PACKAGES" == 1 && "$SKIP_SYSTEMCTL" == 1 ]] ||
      die "VIPFLEET_ROOT=$ROOT needs VIPFLEET_SKIP_PACKAGES=1 and VIPFLEET_SKIP_SYSTEMCTL=1"
    SKIP_KERNEL=1
  fi
  [[ -f "$UNIT_SRC" ]] || die "systemd unit not found at $UNIT_SRC"
}

install_packages() {
  log "step 2/7: packages"
  if [[ "$SKIP_PACKAGES" == 1 ]]; then
    log "skipped (VIPFLEET_SKIP_PACKAGES=1)"
  elif command -v haproxy >/dev/null 2>&1; then
    log "haproxy already installed: $(haproxy -v 2>&1 | sed -n 1p)"
  elif command -v dnf >/dev/null 2>&1; then
    dnf install -y haproxy
    CHANGES=$((CHANGES + 1))
  elif command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y haproxy
    CHANGES=$((CHANGES + 1))
  else
    die "no dnf or apt-get: install haproxy yourself, then rerun"
  fi
}

fetch() {
  local url="$1" out="$2"
  case "$url" in
    file://*) cp -- "${url#file://}" "$out" || die "cannot read $url" ;;
    http://* | https://*)
      curl --fail --silent --show-error --location --retry 5 --retry-delay 2 \
        --connect-timeout 10 --output "$out" "$url" || die "download failed: $url"
      ;;
    *) die "unsupported agent URL scheme: $url (use https://, http:// or file://)" ;;
  esac
}

install_agent() {
  log "step 3/7: agent ($AGENT_KIND)"
  if [[ "$AGENT_KIND" == binary ]]; then
    install_agent_binary
  else
    install_agent_release
  fi
}

install_agent_binary() {
  local dest
  dest="$(p "$AGENT_BIN")"
  if [[ -f "$dest" && "$(sha256_of "$dest")" == "$VIPFLEET_AGENT_SHA256" && "$(stat -c %a "$dest")" == 755 ]]; then
    log "unchanged: $AGENT_BIN (sha256 $VIPFLEET_AGENT_SHA256)"
    return 0
  fi
  fetch_checked "$WORK/agent"
  put_file "$AGENT_BIN" 755 <"$WORK/agent"
  AGENT_RESTART=1
}

# fetch_checked OUT: the artifact, or no install at all.
fetch_checked() {
  local got
  log "fetching $VIPFLEET_AGENT_URL"
  fetch "$VIPFLEET_AGENT_URL" "$1"
  got="$(sha256_of "$1")"
  [[ "$got" == "$VIPFLEET_AGENT_SHA256" ]] ||
    die "sha256 mismatch for $VIPFLEET_AGENT_URL: expected $VIPFLEET_AGENT_SHA256, got $got; refusing to install it"
}

# A release tarball or .deb. The agent restarts only when its binary changed.
install_agent_release() {
  local dest stamp before="" member
  dest="$(p "$AGENT_BIN")"
  stamp="$(p "$AGENT_STAMP")"
  [[ ! -f "$dest" ]] || before="$(sha256_of "$dest")"
  if [[ -n "$before" && -f "$stamp" && "$(cat "$stamp")" == "$VIPFLEET_AGENT_SHA256 $before" ]]; then
    log "unchanged: $AGENT_BIN (from the $AGENT_KIND with sha256 $VIPFLEET_AGENT_SHA256)"
    return 0
  fi
  fetch_checked "$WORK/artifact"
  if [[ "$AGENT_KIND" == tarball ]]; then
    # The binary at the top of the tarball or one directory down, as
    # infra/release/build.sh lays it out.
    member="$(tar -tzf "$WORK/artifact" | grep -E '^(\./)?([^/]+/)?vipfleet-agent$' || true)"
    [[ -n "$member" && "$member" != *$'\n'* ]] ||
      die "the tarball $VIPFLEET_AGENT_URL holds no single vipfleet-agent (top level or one directory down)"
    mkdir "$WORK/unpacked"
    tar -xzf "$WORK/artifact" -C "$WORK/unpacked" -- "$member"
    [[ -f "$WORK/unpacked/$member" && ! -L "$WORK/unpacked/$member" ]] ||
      die "$member in the tarball is not a regular file"
    put_file "$AGENT_BIN" 755 <"$WORK/unpacked/$member"
  else
    install_deb "$WORK/artifact"
  fi
  [[ -f "$dest" ]] || die "the $AGENT_KIND did not install $AGENT_BIN"
  put_file "$AGENT_STAMP" 644 <<<"$VIPFLEET_AGENT_SHA256 $(sha256_of "$dest")"
  [[ "$(sha256_of "$dest")" == "$before" ]] || AGENT_RESTART=1
}

install_deb() {
  local -a dpkg=(dpkg)
  # Into a prefix (tests, images): dpkg's own root, which needs no privileges.
  [[ -z "$ROOT" ]] || dpkg+=("--root=$ROOT" --force-not-root)
  # The package has no maintainer scripts: it starts, stops and drains nothing.
  "${dpkg[@]}" --install "$1" || die "dpkg could not install $VIPFLEET_AGENT_URL"
  log "installed the package vipfleet-agent $(dpkg-deb --field "$1" Version)"
  CHANGES=$((CHANGES + 1))
}

render_agent_config() {
  echo "# Written by the vipfleet bootstrap from its inputs (the CloudFormation"
  echo "# parameters). Edits are lost when the bootstrap runs again."
  echo "[aws]"
  echo "table = \"$VIPFLEET_AWS_TABLE\""
  if [[ -n "${VIPFLEET_AWS_REGION:-}" ]]; then echo "region = \"$VIPFLEET_AWS_REGION\""; fi
  echo
  echo "[fleet]"
  echo "vips = $(toml_list "$VIPFLEET_FLEET_VIPS")"
  echo "route_tables = $(toml_list "$VIPFLEET_FLEET_ROUTE_TABLES")"
  if [[ -n "${VIPFLEET_FLEET_VPC_ID:-}" ]]; then echo "vpc_id = \"$VIPFLEET_FLEET_VPC_ID\""; fi
  cat <<EOF

[lease]
profile = "$VIPFLEET_LEASE_PROFILE"

[node]
weight = 1

[health]
url = "http://127.0.0.1:8404/healthz"
interval_ms = 1000
fall = 3
rise = 2

[vip_binding]
enabled = true
interface = "vipfleet0"
kind = "$VIPFLEET_VIP_BINDING_KIND"

[ec2]
mutating_calls_per_second = 2.0
burst = 10

[dashboard]
listen = ["$VIPFLEET_DASHBOARD_LISTEN"]

[peers]
port = $VIPFLEET_PEERS_PORT
key_file = "$PEER_KEY_FILE"

[lifecycle]
hook_name = "$VIPFLEET_LIFECYCLE_HOOK_NAME"
drain_timeout_ms = $(((10#$VIPFLEET_TERMINATION_HOOK_TIMEOUT - HOOK_MARGIN_S) * 1000))
launch_hook_name = "$VIPFLEET_LIFECYCLE_LAUNCH_HOOK_NAME"
launch_timeout_ms = $(((10#$VIPFLEET_LAUNCH_HOOK_TIMEOUT - HOOK_MARGIN_S) * 1000))
EOF
  if [[ -n "${VIPFLEET_LIFECYCLE_ASG_NAME:-}" ]]; then echo "asg_name = \"$VIPFLEET_LIFECYCLE_ASG_NAME\""; fi
}

write_agent_config() {
  log "step 4/7: agent configuration"
  render_agent_config >"$WORK/agent.toml"
  # Ask the agent itself; a clean environment keeps our VIPFLEET_* inputs out of it.
  env -i PATH="$PATH" "$(p "$AGENT_BIN")" check-config --config "$WORK/agent.toml" ||
    die "the agent rejected the configuration (vipfleet-agent check-config failed)"
  put_file "$AGENT_CFG" 644 <"$WORK/agent.toml"
  [[ "$PUT_CHANGED" == 0 ]] || AGENT_RESTART=1
  if [[ -f "$(p "$TOKEN_FILE")" ]]; then
    log "unchanged: $TOKEN_FILE (kept)"
  else
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/token"
    put_file "$TOKEN_FILE" 600 <"$WORK/token"
    AGENT_RESTART=1
  fi
  # On every run (a rotated key needs a rerun); never in an argument or a log.
  aws ssm get-parameter --with-decryption --name "$VIPFLEET_PEERS_KEY_PARAMETER" \
    ${VIPFLEET_AWS_REGION:+--region "$VIPFLEET_AWS_REGION"} --query Parameter.Value --output text >"$WORK/key" ||
    die "cannot read the peer key from SSM $VIPFLEET_PEERS_KEY_PARAMETER"
  (($(tr -d '[:space:]' <"$WORK/key" | wc -c) >= 32)) || die "the peer key in SSM is under 32 characters"
  put_file "$PEER_KEY_FILE" 600 <"$WORK/key"
  [[ "$PUT_CHANGED" == 0 ]] || AGENT_RESTART=1
}

render_haproxy_config() {
  local backend n=0
  local -a backends
  cat <<EOF
# Written by the vipfleet bootstrap (VIPFLEET_HAPROXY_BACKENDS); edits are lost
# when it runs again. Every VIP is bound on every node (dummy interface), so one
# wildcard bind serves them all; the route tables decide which node gets traffic.
global
    log /dev/log local0
    maxconn $VIPFLEET_HAPROXY_MAXCONN
    user haproxy
    group haproxy
    stats socket /var/lib/haproxy/admin.sock mode 660 level admin
    stats timeout 30s

defaults
    log global
    mode http
    option httplog
    option dontlognull
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s

# The agent's health check (health.url). It fails when no backend is up, so the
# node hands its VIPs to nodes that can serve them.
frontend health
    bind 127.0.0.1:8404
    monitor-uri /healthz
    monitor fail if { nbsrv(be_app) lt 1 }

frontend fe_vips
    bind 0.0.0.0:$VIPFLEET_HAPROXY_PORT
    default_backend be_app

backend be_app
    balance roundrobin
    option httpchk GET /
    http-check expect status 200-399
    default-server inter 2s fall 3 rise 2
EOF
  IFS=',' read -r -a backends <<<"$VIPFLEET_HAPROXY_BACKENDS"
  for backend in "${backends[@]}"; do
    backend="${backend//[[:space:]]/}"
    [[ -n "$backend" ]] || continue
    n=$((n + 1))
    printf '    server app%d %s check\n' "$n" "$backend"
  done
}

write_haproxy_config() {
  log "step 5/7: haproxy configuration"
  if [[ -z "${VIPFLEET_HAPROXY_BACKENDS:-}" ]]; then
    log "VIPFLEET_HAPROXY_BACKENDS is empty: leaving $HAPROXY_CFG as it is"
    grep -qs 'monitor-uri /healthz' "$(p "$HAPROXY_CFG")" ||
      log "WARNING: $HAPROXY_CFG has no 'monitor-uri /healthz' on 127.0.0.1:8404: the agent will judge this node unhealthy"
    return 0
  fi
  render_haproxy_config >"$WORK/haproxy.cfg"
  if command -v haproxy >/dev/null 2>&1; then
    haproxy -c -q -f "$WORK/haproxy.cfg" || die "haproxy rejected the generated configuration"
  else
    log "haproxy not installed here: generated configuration not validated"
  fi
  put_file "$HAPROXY_CFG" 644 <"$WORK/haproxy.cfg"
  HAPROXY_RELOAD="$PUT_CHANGED"
}

# can_create_link KIND: the kernel makes links of this type (a throwaway one).
can_create_link() {
  local probe="vipfleet-p$$"
  ip link add "$probe" type "$1" 2>/dev/null || return 1
  ip link del "$probe"
}

write_kernel_settings() {
  log "step 6/7: kernel settings"
  local kv key want have
  {
    echo "# vipfleet data plane (written by the vipfleet bootstrap)."
    echo "# ip_nonlocal_bind: haproxy may bind a VIP before the agent has put it on vipfleet0."
    echo "# arp_ignore/arp_announce: VIPs live on a dummy interface; never answer or source ARP for them on the ENI."
    echo "# ip_local_port_range, somaxconn: a proxy opens many backend connections and accepts bursts."
    for kv in "${SYSCTLS[@]}"; do
      echo "${kv%%=*} = ${kv#*=}"
    done
  } >"$WORK/sysctl.conf"
  put_file "$SYSCTL_FILE" 644 <"$WORK/sysctl.conf"
  # The agent creates vipfleet0 but may not load modules itself.
  put_file "$MODULES_FILE" 644 <<<"$VIPFLEET_VIP_BINDING_KIND"
  if [[ "$SKIP_KERNEL" == 1 ]]; then
    log "live sysctl/modprobe skipped (VIPFLEET_SKIP_KERNEL=1 or VIPFLEET_ROOT set)"
    return 0
  fi
  for kv in "${SYSCTLS[@]}"; do
    key="${kv%%=*}"
    want="${kv#*=}"
    have="$(sysctl -n "$key" | tr -s '[:space:]' ' ')"
    if [[ "${have% }" != "$want" ]]; then
      sysctl -q -w "$key=$want"
      log "set $key = $want (was ${have% })"
      CHANGES=$((CHANGES + 1))
    fi
  done
  # Asking the kernel is the only test that also holds for built-in drivers.
  if ! can_create_link "$VIPFLEET_VIP_BINDING_KIND"; then
    modprobe "$VIPFLEET_VIP_BINDING_KIND"
    can_create_link "$VIPFLEET_VIP_BINDING_KIND" ||
      die "the kernel cannot create $VIPFLEET_VIP_BINDING_KIND links, even after modprobe"
    log "loaded kernel module $VIPFLEET_VIP_BINDING_KIND"
    CHANGES=$((CHANGES + 1))
  fi
}

install_units() {
  log "step 7/7: systemd units"
  put_file "$UNIT_DEST" 644 <"$UNIT_SRC"
  UNITS_CHANGED="$PUT_CHANGED"
  [[ "$UNITS_CHANGED" == 0 ]] || AGENT_RESTART=1
  if [[ "$SKIP_SYSTEMCTL" == 1 ]]; then
    log "systemctl skipped (VIPFLEET_SKIP_SYSTEMCTL=1)"
    return 0
  fi
  if [[ "$UNITS_CHANGED" == 1 ]]; then
    systemctl daemon-reload
  fi
  ensure_running haproxy "$HAPROXY_RELOAD" reload-or-restart
  ensure_running vipfleet-agent "$AGENT_RESTART" restart
}

# ensure_running UNIT CHANGED VERB: enable UNIT, start it, or apply VERB when
# its inputs changed while it runs. A running, unchanged unit is left alone.
ensure_running() {
  local unit="$1" changed="$2" verb="$3"
  if ! systemctl is-enabled --quiet "$unit"; then
    systemctl enable "$unit"
    log "enabled $unit"
    CHANGES=$((CHANGES + 1))
  fi
  if ! systemctl is-active --quiet "$unit"; then
    systemctl start "$unit"
    log "started $unit"
    CHANGES=$((CHANGES + 1))
  elif [[ "$changed" == 1 ]]; then
    systemctl "$verb" "$unit"
    log "$verb $unit (its files changed)"
  else
    log "$unit already running"
  fi
}

main() {
  check_inputs
  install_packages
  install_agent
  write_agent_config
  write_haproxy_config
  write_kernel_settings
  install_units
  if [[ "$CHANGES" == 0 ]]; then
    log "done: no changes (already bootstrapped)"
  else
    log "done: $CHANGES change(s)"
  fi
}

main "$@"
