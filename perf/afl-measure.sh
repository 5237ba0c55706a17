#!/usr/bin/env bash
# The README's coverage-guided fuzzing table: the random fuzzer and AFL++ side by side on the
# instrumented build, started together (the two share the machine's cores).
#   perf/afl-measure.sh coverage [SECONDS]      edges covered by random `fuzz system` and by `fuzz afl --target system`
#   perf/afl-measure.sh find TARGET [SECONDS]   time each needs to find the first difference (plant a fault first)
# Edges are SharpFuzz map entries hit (afl's edges_found). Both sides are counted on the same harness:
# the random programs run through the byte target as their recorded choices, and afl's queue is
# replayed through it in-process afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?coverage or find}
if [ "$mode" = find ]; then target=${2:?encodings or system}; secs=${3:-300}; else target=system; secs=${2:-300}; fi
out=artifacts/afl/measure-$mode-$target
rm -rf "$out"; mkdir -p "$out"
dotnet build -c Release tools/NativeMmu.Cli -v q -nologo >/dev/null
cli=tools/NativeMmu.Cli/bin/Release/net10.0/NativeMmu.Cli.dll
# Instrument (cached) and note where the instrumented copy is.
work=$(dotnet "$cli" fuzz afl --target "$target" --seconds 1 --output "$out/warmup" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["instrumented"])' || true)
[ -d "$work" ] || { echo "no instrumented build"; exit 1; }
echo "date: $(date -u +%FT%TZ)  machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)  afl-fuzz: $(dpkg-query -W -f='${Version}' afl++ 2>/dev/null || echo '?')"
extra=()
if [ "$mode" = find ]; then export AFL_BENCH_UNTIL_CRASH=1; extra=(--until-failure); fi
dotnet "$cli" fuzz afl --target "$target" --seconds "$secs" --output "$out/afl" --json > "$out/afl.json" 2> "$out/afl.log" &
afl_pid=$!
dotnet "$work/NativeMmu.Cli.dll" fuzz afl-random --target "$target" --seconds "$secs" "${extra[@]}" > "$out/random.json" || true
wait "$afl_pid" || true
echo "random: $(cat "$out/random.json")"
echo "afl:    $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r["cases"]=[c["file"] for c in r["cases"]]; print(json.dumps(r))' "$out/afl.json")"
if [ "$mode" = coverage ]; then
  echo "afl queue replayed: $(dotnet "$work/NativeMmu.Cli.dll" fuzz afl-random --target "$target" --replay "$out/afl/findings/default/queue")"
fi
