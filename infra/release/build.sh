#!/usr/bin/env bash
# Builds vipfleet's release artifacts: the agent for Linux on x86_64 and
# aarch64 (static, musl), a tarball and a .deb of each, and SHA256SUMS.
#
#   infra/release/build.sh [--out DIR] [--host-only]
#   infra/release/build.sh --profile dev [--agent-bin PATH] [--no-deb] [--out DIR]
#
# --profile release (the default) compiles with `cargo zigbuild --profile
#   dist` (the release profile, stripped) for x86_64-unknown-linux-musl and
#   aarch64-unknown-linux-musl; zig is the C compiler and linker for both,
#   aws-lc-sys included. --host-only builds only this machine's architecture.
# --profile dev packages the dev binary already built for this machine
#   (<target dir>/debug/vipfleet-agent, or --agent-bin PATH) in the same
#   layout, in seconds and without compiling: for CI and the lab. Its
#   artifacts say so: `-dev` in the tarball's name, `~dev` in the .deb's
#   version. It is dynamically linked against this machine's glibc.
# --no-deb skips the .deb (and so cargo-deb).
#
# DIR (default: dist/ at the repository root) receives, for each target:
#   vipfleet-agent-<version>-<target>.tar.gz: vipfleet-agent-<version>-<target>/
#     with vipfleet-agent, vipfleet-agent.service, examples/haproxy.cfg,
#     LICENSE and CHANGELOG.md; what infra/bootstrap/bootstrap.sh installs from
#   vipfleet-agent_<version>-1_<arch>.deb: /usr/bin/vipfleet-agent, the unit
#     with a drop-in for that path, the docs (services/agent/Cargo.toml,
#     [package.metadata.deb])
#   SHA256SUMS: `sha256sum -c` format, covering the files of this run
# Files of the same names are replaced; other files in DIR are left alone.
#
# Tools, installed on first use and then reused: the rustup targets;
# cargo-zigbuild and zig (PyPI's ziglang) in a venv ($VIPFLEET_RELEASE_VENV,
# default /var/tmp/vipfleet-release-venv); cargo-deb in ~/.cargo/bin (cargo
# install). Release builds use a target dir of their own
# ($VIPFLEET_RELEASE_TARGET_DIR, default /var/tmp/vipfleet-release-target), so
# they never hold the lock of the one used for development, and run under
# `nice -n 19`. The binaries name the commit (`--version`); a tree with
# uncommitted changes gives `-dirty`, which the script warns about.
set -Eeuo pipefail
umask 022

ZIGBUILD_VERSION=0.24.1
ZIG_VERSION=0.17.1
CARGO_DEB_VERSION=3.8.0
TARGETS=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
PACKAGE=vipfleet-agent

log() { printf 'release: %s\n' "$*" >&2; }
die() {
  printf 'release: ERROR: %s\n' "$*" >&2
  exit 1
}
usage() {
  sed -n '2,/^set -E/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 64
}

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="$REPO/dist"
profile=release
host_only=0
agent_bin=""
make_deb=1
while (($#)); do
  case "$1" in
    --out) out="${2:?--out needs a directory}" && shift ;;
    --profile) profile="${2:?--profile needs release or dev}" && shift ;;
    --host-only) host_only=1 ;;
    --agent-bin) agent_bin="${2:?--agent-bin needs a path}" && shift ;;
    --no-deb) make_deb=0 ;;
    -h | --help) usage ;;
    *)
      printf 'release: unknown argument %s\n' "$1" >&2
      usage
      ;;
  esac
  shift
done
[[ "$profile" == release || "$profile" == dev ]] || die "--profile must be release or dev"
[[ -z "$agent_bin" || "$profile" == dev ]] || die "--agent-bin goes with --profile dev"

case "$(uname -m)" in
  x86_64 | amd64) host_target=x86_64-unknown-linux-musl ;;
  aarch64 | arm64) host_target=aarch64-unknown-linux-musl ;;
  *) die "unsupported build machine architecture $(uname -m)" ;;
esac

started=$SECONDS
mkdir -p "$out"
out="$(cd "$out" && pwd)"
stage="$(mktemp -d "$out/.staging.XXXXXX")"
trap 'rm -rf "$stage"' EXIT

ensure_cargo_deb() {
  if cargo deb --version >/dev/null 2>&1; then
    return 0
  fi
  log "installing cargo-deb $CARGO_DEB_VERSION into ~/.cargo/bin (cargo install, about a minute)"
  # In a temporary target dir of its own, not in a shared one the caller may have set.
  env -u CARGO_TARGET_DIR nice -n 19 cargo install --locked --version "$CARGO_DEB_VERSION" cargo-deb
}

ensure_cross_tools() {
  local venv="${VIPFLEET_RELEASE_VENV:-/var/tmp/vipfleet-release-venv}" target
  local -a missing=()
  for target in "${targets[@]}"; do
    rustup target list --installed | grep -qx "$target" || missing+=("$target")
  done
  if ((${#missing[@]})); then
    log "adding rust targets: ${missing[*]}"
    rustup target add "${missing[@]}"
  fi
  if ! "$venv/bin/cargo-zigbuild" --version 2>/dev/null | grep -qx "cargo-zigbuild $ZIGBUILD_VERSION" ||
    [[ "$("$venv/bin/python" -m ziglang version 2>/dev/null)" != "$ZIG_VERSION" ]]; then
    log "installing cargo-zigbuild $ZIGBUILD_VERSION and zig $ZIG_VERSION (PyPI ziglang) into $venv"
    [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "cargo-zigbuild==$ZIGBUILD_VERSION" "ziglang==$ZIG_VERSION"
  fi
  # cargo finds the `zigbuild` subcommand on PATH, cargo-zigbuild finds zig
  # through the venv's python (-m ziglang).
  export PATH="$venv/bin:$PATH"
}

# tarball BIN STEM: STEM.tar.gz in the staging dir, the same bytes for the
# same inputs (sorted names, no owners, the commit's time).
tarball() {
  local bin="$1" stem="$2" level
  local dir="$stage/tar/$stem"
  mkdir -p "$dir/examples"
  install -m 755 "$bin" "$dir/vipfleet-agent"
  install -m 644 "$REPO/infra/systemd/vipfleet-agent.service" "$dir/"
  install -m 644 "$REPO/infra/haproxy/haproxy.cfg" "$dir/examples/"
  install -m 644 "$REPO/LICENSE" "$REPO/CHANGELOG.md" "$dir/"
  # A dev binary is large and short-lived: fast compression.
  level=9
  [[ "$profile" == release ]] || level=1
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
    -C "$stage/tar" -cf - "$stem" | gzip -n "-$level" >"$stage/$stem.tar.gz"
  artifacts+=("$stem.tar.gz")
  log "made $stem.tar.gz"
}

# deb TARGET CARGO_PROFILE TARGET_DIR: the .deb from the binary cargo-deb
# finds at TARGET_DIR/TARGET/<profile dir>/vipfleet-agent.
deb() {
  local target="$1" cargo_profile="$2" target_dir="$3"
  local path
  local -a args=(-p "$PACKAGE" --no-build --no-strip --target "$target" --profile "$cargo_profile" --output "$stage/")
  [[ "$profile" == release ]] || args+=(--deb-version "${version}~dev-1" --fast)
  # cargo-deb prints the path of the package it made.
  path="$(cd "$REPO" && CARGO_TARGET_DIR="$target_dir" cargo deb "${args[@]}")"
  [[ -f "$path" ]] || die "cargo deb made no package for $target (it printed '$path')"
  artifacts+=("$(basename "$path")")
  log "made $(basename "$path")"
}

# --- build (release) or find (dev) the binaries
declare -A binaries=()
artifacts=()
if [[ "$profile" == release ]]; then
  targets=("${TARGETS[@]}")
  ((host_only == 0)) || targets=("$host_target")
  ensure_cross_tools
  release_target_dir="${VIPFLEET_RELEASE_TARGET_DIR:-/var/tmp/vipfleet-release-target}"
  log "building ${targets[*]} (cargo zigbuild --profile dist, target dir $release_target_dir, nice 19)"
  log "a first build compiles the AWS SDK for every target: about an hour on two cores (infra/README.md, Releases)"
  build_started=$SECONDS
  target_args=()
  for target in "${targets[@]}"; do target_args+=(--target "$target"); done
  (cd "$REPO" && CARGO_TARGET_DIR="$release_target_dir" nice -n 19 \
    cargo zigbuild --locked -p "$PACKAGE" --bin "$PACKAGE" --profile dist "${target_args[@]}")
  log "compiled in $((SECONDS - build_started)) s"
  for target in "${targets[@]}"; do
    binaries[$target]="$release_target_dir/$target/dist/$PACKAGE"
  done
  host_bin="${binaries[$host_target]}"
else
  # The target only names the artifacts; without rustc (sudo's PATH, the
  # lab) this machine's architecture with glibc is the dev build's.
  host_target="$(rustc -vV 2>/dev/null | sed -n 's/^host: //p' || true)"
  [[ -n "$host_target" ]] || host_target="$(uname -m)-unknown-linux-gnu"
  targets=("$host_target")
  host_bin="${agent_bin:-${CARGO_TARGET_DIR:-$REPO/target}/debug/$PACKAGE}"
  [[ -f "$host_bin" ]] ||
    die "no dev binary at $host_bin: run \`cargo build --workspace --bins\` first (or pass --agent-bin)"
  binaries[$host_target]="$host_bin"
  log "packaging the dev binary $host_bin ($host_target)"
fi

# --- what was built: the binary says (and proves that it runs here)
read -r name version commit < <("$host_bin" --version) || die "$host_bin --version failed"
commit="${commit#(}"
commit="${commit%)}"
[[ "$name" == "$PACKAGE" && "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+ && -n "$commit" ]] ||
  die "$host_bin --version printed '$name $version${commit:+ ($commit)}', not '$PACKAGE <version> (<commit>)'"
log "version $version, commit $commit"
[[ "$commit" != *-dirty ]] || log "WARNING: built from a tree with uncommitted changes (the binaries say $commit)"
epoch="$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || date +%s)"

# --- package
((make_deb == 0)) || ensure_cargo_deb
for target in "${targets[@]}"; do
  bin="${binaries[$target]}"
  stem="$PACKAGE-$version-$target"
  [[ "$profile" == release ]] || stem="$PACKAGE-$version-dev-$target"
  tarball "$bin" "$stem"
  ((make_deb == 0)) && continue
  if [[ "$profile" == release ]]; then
    deb "$target" dist "$release_target_dir"
  else
    # cargo-deb takes the binary from a target dir: lay out one with ours.
    # Under the dist profile's directory: cargo-deb refuses to package the
    # dev profile (it builds nothing here, so the name only picks the path).
    mkdir -p "$stage/cargo-target/$target/dist"
    cp -- "$bin" "$stage/cargo-target/$target/dist/$PACKAGE"
    deb "$target" dist "$stage/cargo-target"
    rm -rf "$stage/cargo-target"
  fi
done
rm -rf "$stage/tar"

(cd "$stage" && sha256sum -- "${artifacts[@]}" >SHA256SUMS)
for file in "${artifacts[@]}" SHA256SUMS; do
  mv -f -- "$stage/$file" "$out/$file"
done
log "done in $((SECONDS - started)) s; in $out:"
(cd "$out" && sed 's/^/  /' SHA256SUMS >&2)
