#!/usr/bin/env bash
# BENCHMARKS.md's simulation figures: every scale scenario for vipfleet and
# the per-lease (KCL-style) baseline, at each fleet size, one report each;
# then the tables and the restoration plot.
#
#   loadtest/bench/sim.sh [--out DIR] [--sizes "10:64 100:1000 1000:10000"]
#                         [--scenarios "crash az-loss"] [--systems "vipfleet kcl"]
#
# Defaults: the sizes and scenarios above, both systems, seed 7, one route
# table, vipfleet on its default (cheap) lease profile; reports in
# bench-out/. A report already in DIR is kept, so an interrupted run
# resumes where it stopped. Release build (the simulation is CPU-bound).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

out=bench-out
sizes="10:64 100:1000 1000:10000"
scenarios="crash az-loss"
systems="vipfleet kcl"
seed=7
while (($#)); do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --sizes) sizes="$2"; shift 2 ;;
    --scenarios) scenarios="$2"; shift 2 ;;
    --systems) systems="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "sim.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
  esac
done

echo "bench: building vipfleet-sim (release)" >&2
cargo build -q --release -p vipfleet-sim
sim="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/vipfleet-sim"
mkdir -p "$out"

for size in $sizes; do
  nodes="${size%%:*}"
  shards="${size##*:}"
  for scenario in $scenarios; do
    for system in $systems; do
      report="$out/$scenario-$nodes-$shards-$system.json"
      if [[ -s "$report" ]]; then
        echo "bench: $report is there, kept" >&2
        continue
      fi
      echo "bench: $system $scenario on $nodes nodes, $shards shards" >&2
      # A broken promise exits 1 with the report written: the tables show
      # it (the baseline does not keep vipfleet's promises, by design).
      "$sim" --system "$system" --scenario "$scenario" --nodes "$nodes" --shards "$shards" \
        --route-tables 1 --seed "$seed" --report "$report.partial" >&2 ||
        [[ -s "$report.partial" ]] || { echo "bench: $system $scenario failed without a report" >&2; exit 1; }
      mv "$report.partial" "$report"
    done
  done
done

python3 loadtest/bench/tables.py "$out" --svg "$out/restoration.svg"
