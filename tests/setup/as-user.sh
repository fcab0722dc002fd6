# shellcheck shell=bash
# Sourced by loadtest/demo and tests/run, which need root for the lab but
# must leave the checkout to the person who ran them with sudo. Under sudo,
# cargo is found and run as that user (sudo's secure_path hides
# ~/.cargo/bin, and a root cargo would leave a root-owned target/), and what
# root writes into the user's folders is handed back to them. Without sudo,
# or as root logged in as root, cargo simply runs from PATH.
#
#   as_user_init           finds the invoking user and their cargo; 1 if there is no cargo
#   user_cargo ARGS...     cargo ARGS as the invoking user
#   root_cargo ARGS...     cargo ARGS as root, with the invoking user's toolchain
#                          (for tests that need root, once user_cargo built everything)
#   as_user COMMAND...     COMMAND as the invoking user (as is without sudo)
#   cargo_target_dir       the workspace's target directory, as cargo resolves it
#   hand_back STAMP DIR    files root made under DIR since the file STAMP was
#                          made go to the invoking user, if DIR is theirs
#                          (never fails: it runs in EXIT traps)

AS_USER=""       # the user who ran sudo; empty without sudo
AS_USER_HOME=""
AS_USER_CARGO="" # the cargo to run

as_user() {
  if [[ -z "$AS_USER" ]]; then
    "$@"
  else
    sudo -u "$AS_USER" -H -- "$@"
  fi
}

_as_user_can_run() {
  [[ "$1" == /* ]] && as_user test -x "$1"
}

# The user's cargo: $CARGO_HOME (kept by `sudo -E`), ~/.cargo/bin (rustup's
# default), their login shell's PATH (their profile), then root's PATH (a
# system-wide cargo, e.g. Debian's package).
_as_user_find_cargo() {
  local candidate
  for candidate in "${CARGO_HOME:+$CARGO_HOME/bin/cargo}" "$AS_USER_HOME/.cargo/bin/cargo"; do
    if [[ -n "$candidate" ]] && _as_user_can_run "$candidate"; then
      echo "$candidate"
      return 0
    fi
  done
  candidate="$(as_user bash -lc 'command -v cargo' </dev/null 2>/dev/null | tail -n 1 || true)"
  if _as_user_can_run "$candidate"; then
    echo "$candidate"
    return 0
  fi
  candidate="$(command -v cargo || true)"
  if _as_user_can_run "$candidate"; then
    echo "$candidate"
    return 0
  fi
  return 1
}

as_user_init() {
  if [[ $(id -u) -eq 0 && -n "${SUDO_USER:-}" && "$SUDO_USER" != root ]]; then
    AS_USER="$SUDO_USER"
    AS_USER_HOME="$(getent passwd "$AS_USER" | cut -d: -f6)"
    if ! AS_USER_CARGO="$(_as_user_find_cargo)"; then
      echo "no cargo for $AS_USER: looked in ~$AS_USER/.cargo/bin, on their login shell's PATH and on" \
        "root's PATH. Install Rust as $AS_USER (https://rustup.rs), then run this again with sudo." >&2
      return 1
    fi
  else
    if ! command -v cargo >/dev/null 2>&1; then
      echo "no cargo on PATH: install Rust (https://rustup.rs)" >&2
      return 1
    fi
    AS_USER_CARGO=cargo
  fi
}

# Rust's own variables pass through (they reach root only with `sudo -E` or
# `sudo VAR=…`); PATH gets cargo's folder first, for rustc and the proxies.
_as_user_cargo_env() {
  local name
  echo "PATH=$(dirname "$AS_USER_CARGO"):$PATH"
  while IFS= read -r name; do
    echo "$name=${!name}"
  done < <(compgen -e | grep -E '^(CARGO_[A-Z_]+|RUSTUP_[A-Z_]+|RUSTFLAGS|RUSTDOCFLAGS|RUSTC_WRAPPER)$' || true)
}

# cargo ARGS as the invoking user, or as root with that user's rustup and
# cargo homes (HOME stays root's, so what tests write to HOME does not land
# in the user's) and --frozen, so that root writes neither Cargo.lock nor
# the user's registry.
_as_user_cargo() {
  local who="$1" env
  shift
  if [[ -z "$AS_USER" ]]; then
    cargo "$@"
    return
  fi
  mapfile -t env < <(_as_user_cargo_env)
  if [[ "$who" == user ]]; then
    sudo -u "$AS_USER" -H -- env "${env[@]}" "$AS_USER_CARGO" "$@"
  else
    env "${env[@]}" RUSTUP_HOME="${RUSTUP_HOME:-$AS_USER_HOME/.rustup}" \
      CARGO_HOME="${CARGO_HOME:-$AS_USER_HOME/.cargo}" "$AS_USER_CARGO" "$1" --frozen "${@:2}"
  fi
}

user_cargo() { _as_user_cargo user "$@"; }
root_cargo() { _as_user_cargo root "$@"; }

cargo_target_dir() {
  local dir
  dir="$(user_cargo metadata --format-version 1 --no-deps 2>/dev/null |
    grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4 || true)"
  echo "${dir:-${CARGO_TARGET_DIR:-target}}"
}

hand_back() {
  local stamp="$1" dir="$2" count
  [[ -n "$AS_USER" && -d "$dir" ]] || return 0
  # Only the user's own folders: never chown root's files in /tmp or /.
  [[ "$(stat -c %u "$dir")" == "$SUDO_UID" ]] || return 0
  count="$(find "$dir" -xdev -user 0 -newer "$stamp" -print -exec chown -h "$SUDO_UID:$SUDO_GID" {} + | wc -l || true)"
  if ((count > 0)); then
    echo "gave $count files that root made under $dir to $AS_USER" >&2
  fi
}
