#!/usr/bin/env bash
# Supply chain: cargo deny against deny.toml (the root's). Run by tests/run.
#
# - licenses, bans, sources: need nothing but Cargo.lock; must pass.
# - advisories (RustSec): need the advisory database, a git repository on
#   GitHub, fetched (updated) when it can be reached. The check runs against
#   whatever copy this machine then has, and prints the copy's date, loudly
#   when it is over a week old (advisories published since are not checked);
#   with no copy at all it is skipped, and says so loudly. It never counts
#   as passed unless it ran.
#
# cargo-deny is installed if missing (`cargo install --locked`, about 3.5
# minutes on two cores, once per machine).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=SCRIPTDIR/setup/as-user.sh
source tests/setup/as-user.sh
as_user_init || exit 1

CARGO_DENY_VERSION="0.20.2"
FETCH_TIMEOUT_SECONDS=120

if ! user_cargo deny --version >/dev/null 2>&1; then
  echo "installing cargo-deny $CARGO_DENY_VERSION (cargo install --locked)"
  started=$SECONDS
  user_cargo install --locked --quiet "cargo-deny@$CARGO_DENY_VERSION"
  echo "installed cargo-deny in $((SECONDS - started)) s"
fi

# The checks read `cargo metadata` for every platform, offline: the crates
# of other platforms (windows-sys, …) must be in the registry's cache, and
# a build on Linux never downloads them.
if ! user_cargo fetch --locked --quiet; then
  echo "*** cargo fetch failed: cargo deny may lack crates of other platforms ***" >&2
fi

passed=0
failed=0
skipped=0
for check in licenses bans sources; do
  if user_cargo deny --offline --color never check --hide-inclusion-graph "$check"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
done

# The database's folder, as cargo-deny names it for the default URL.
# shellcheck disable=SC2016 # expanded by the user's shell
db_root="$(as_user sh -c 'echo "${CARGO_HOME:-$HOME/.cargo}"')/advisory-dbs"
local_db() {
  local dir
  for dir in "$db_root"/advisory-db-*/; do
    if [[ -d "$dir/crates" ]]; then
      echo "${dir%/}"
      return 0
    fi
  done
  return 1
}

# A database older than this is reported as stale (RustSec adds several
# advisories a week).
STALE_DAYS=7
if timeout "$FETCH_TIMEOUT_SECONDS" bash -c 'source tests/setup/as-user.sh && as_user_init && user_cargo deny --color never fetch db' >/dev/null 2>&1; then
  fetched=yes
else
  fetched=no
fi
if db="$(local_db)"; then
  # What the check runs against is the database's last commit, however it
  # got here: say its age, whatever the fetch answered.
  day="$(git -C "$db" log -1 --format=%cs 2>/dev/null || echo unknown)"
  age=-1
  [[ "$day" == unknown ]] || age=$((($(date +%s) - $(date -d "$day" +%s)) / 86400))
  echo "advisories: RustSec database last changed $day ($age days old; fetch: $fetched) in $db"
  if ((age < 0 || age > STALE_DAYS)); then
    echo "*** advisories: the database is stale or undated: advisories published since $day are NOT checked ***"
  fi
  if user_cargo deny --offline --color never check --hide-inclusion-graph advisories; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
else
  echo "*** advisories: NOT CHECKED: the RustSec database (github.com/RustSec/advisory-db) cannot be" \
    "fetched from here and this machine has no copy in $db_root ***"
  skipped=1
fi
echo "cargo-deny: $passed passed, $failed failed, $skipped skipped"
((failed == 0))
