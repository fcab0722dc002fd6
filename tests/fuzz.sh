#!/usr/bin/env bash
# The fuzz targets of fuzz/ (cargo fuzz, libFuzzer): what tests/run (and so
# CI) runs, and the way to fuzz longer by hand.
#
#   tests/fuzz.sh                  every target for VIPFLEET_FUZZ_RUNS
#                                  executions (default 500,000), each
#                                  capped at VIPFLEET_FUZZ_MAX_SECONDS (120)
#   tests/fuzz.sh TARGET SECONDS   one target for SECONDS, by hand
#   tests/fuzz.sh --list           the targets
#
# Each run starts from the target's corpus in fuzz/corpus/TARGET (read, never
# written: new inputs go to a temporary folder) with its dictionary from
# fuzz/dicts/. A crash fails the run and leaves the input in the temporary
# folder, with the command that replays it; fix the bug with a unit test that
# holds the input, and add the input to the corpus.
#
# cargo-fuzz is installed if missing (`cargo install --locked`, about a
# minute). The build runs on stable Rust: without a sanitizer (`-s none`:
# the code under test is safe Rust) it needs no nightly flag. It compiles its
# dependencies again with coverage instrumentation, so it has a target
# directory of its own, outside the clone: $CARGO_TARGET_DIR/fuzz (cold, about
# 3.5 minutes on two cores; then seconds).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=SCRIPTDIR/setup/as-user.sh
source tests/setup/as-user.sh
as_user_init || exit 1

CARGO_FUZZ_VERSION="0.13.2"
targets=(dynamo_items agent_config vip)
runs="${VIPFLEET_FUZZ_RUNS:-500000}"
max_seconds="${VIPFLEET_FUZZ_MAX_SECONDS:-120}"

if [[ "${1:-}" == "--list" ]]; then
  printf '%s\n' "${targets[@]}"
  exit 0
fi
if (($# == 2)); then
  targets=("$1")
  runs=""
  max_seconds="$2"
elif (($# != 0)); then
  echo "usage: tests/fuzz.sh [TARGET SECONDS | --list]" >&2
  exit 2
fi

if ! user_cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION (cargo install --locked)"
  started=$SECONDS
  user_cargo install --locked --quiet "cargo-fuzz@$CARGO_FUZZ_VERSION"
  echo "installed cargo-fuzz in $((SECONDS - started)) s"
fi

# The fuzz build compiles every dependency again, instrumented: it must stay
# off the agent and its heavy SDK, HTTP and TLS crates (minutes each).
if heavy="$(user_cargo tree --manifest-path fuzz/Cargo.toml -e normal --prefix none |
  grep -E '^(vipfleet-agent|aws-sdk-ec2|aws-sdk-autoscaling|aws-config|aws-lc-sys|hyper|rustls) ' | sort -u)"; then
  echo "the fuzz crate pulls in: $heavy" >&2
  echo "fuzzing: 0 passed, 1 failed"
  exit 1
fi

target_dir="$(cargo_target_dir)/fuzz"
build=(fuzz build --sanitizer none --target-dir "$target_dir")
started=$SECONDS
user_cargo "${build[@]}"
echo "fuzz build: $((SECONDS - started)) s (target dir $target_dir)"

work="$(as_user mktemp -d -t vipfleet-fuzz.XXXXXX)"
passed=0
failed=0
for target in "${targets[@]}"; do
  mkdir -p "$work/$target/new" "$work/$target/artifacts"
  [[ -z "$AS_USER" ]] || chown -R "$AS_USER" "$work/$target"
  args=(-max_total_time="$max_seconds" -artifact_prefix="$work/$target/artifacts/" -print_final_stats=1)
  [[ -z "$runs" ]] || args+=(-runs="$runs")
  [[ ! -f "fuzz/dicts/$target.dict" ]] || args+=(-dict="fuzz/dicts/$target.dict")
  log="$work/$target.log"
  echo "fuzzing $target: ${runs:-unlimited} executions, at most $max_seconds s"
  if user_cargo fuzz run --sanitizer none --target-dir "$target_dir" "$target" \
    "$work/$target/new" "fuzz/corpus/$target" -- "${args[@]}" >"$log" 2>&1; then
    grep -E '^Done [0-9]+ runs' "$log" | sed "s/^/  $target: /" || true
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "  $target FAILED; the end of its log ($log):" >&2
    tail -n 40 "$log" >&2
    for input in "$work/$target/artifacts"/*; do
      [[ -e "$input" ]] || continue
      echo "  input: $input; replay: cargo fuzz run --sanitizer none $target $input" >&2
    done
  fi
done
if ((failed == 0)); then
  rm -rf "$work"
fi
echo "fuzzing: $passed passed, $failed failed"
((failed == 0))
