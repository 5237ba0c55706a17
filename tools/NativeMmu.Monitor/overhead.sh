#!/usr/bin/env bash
# What observing the emulator costs: multi-fault (1 thread, 10 s, no host) in three configurations,
# printing emulated page faults per minute:
#   A  built with -p:NativeMmuNoEvents=true (the EventSource hooks compiled out)
#   B  the normal build, nobody listening
#   C  the normal build with `nativemmu-monitor top` attached for the whole run
#
# Usage (from the repository root):
#   [NICE=-20] tools/NativeMmu.Monitor/overhead.sh sequential [ROUNDS]
#       A, B and C one after another, the order rotated each round; the median of each, in faults
#       per minute of wall-clock time (what the CLI prints) and in faults per CPU-second of the
#       worker thread (emu-cpu.py reads its run time from /proc; Linux only), which is what the
#       hooks cost the emulator itself, whatever else the machine runs.
#   [NICE=-20] tools/NativeMmu.Monitor/overhead.sh paired [ROUNDS]
#       A beside B, then A beside C, at the same time, one per CPU (taskset), the CPUs swapped every
#       other round; the median of the per-pair ratios. Whatever else the machine is doing then
#       falls on both runs of a pair alike.
# On a shared machine NICE=-20 (as root) keeps other work from taking the benchmark's CPU.
set -euo pipefail
mode=${1:-sequential}
rounds=${2:-3}
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A: a copy of the tree built with the switch, so the normal build's obj/ stays as it is.
tar --exclude=bin --exclude=obj --exclude=.git -cf - . | (mkdir -p "$work/noevents" && cd "$work/noevents" && tar xf -)
(cd "$work/noevents" && dotnet build -c Release tools/NativeMmu.Cli -p:NativeMmuNoEvents=true -v q -nologo >/dev/null)
dotnet build -c Release tools/NativeMmu.Cli -v q -nologo >/dev/null
dotnet build -c Release tools/NativeMmu.Monitor -v q -nologo >/dev/null

cli_a="$work/noevents/tools/NativeMmu.Cli/bin/Release/net10.0/NativeMmu.Cli.dll"
cli="$root/tools/NativeMmu.Cli/bin/Release/net10.0/NativeMmu.Cli.dll"
monitor="$root/tools/NativeMmu.Monitor/bin/Release/net10.0/NativeMmu.Monitor.dll"
prio=(nice -n "${NICE:-0}")
args=(multi-fault --threads 1 --seconds 10 --no-host --json)

pfmin() { sed -n 's/.*"emulated_pf_per_min":\([0-9.e+]*\).*/\1/p' "$1"; }
# faults per CPU-second of the measured worker (the last emu-0 thread): pf/min * 10 s / 60 / its CPU time
pfcpu() { awk -v pfmin="$(pfmin "$1")" 'END {printf "%.0f", pfmin * 10 / 60 / ($2 / 1e9)}' "$1.cpu"; }
div() { awk -v x="$1" -v y="$2" 'BEGIN {printf "%.4f", x / y}'; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# start CONFIG OUT [CPU]: starts one run in the background; its pid is in $started.
start() {
  local cfg=$1 out=$2 pin=()
  [ -n "${3:-}" ] && pin=(taskset -c "$3")
  local dll=$cli; [ "$cfg" = A ] && dll=$cli_a
  "${prio[@]}" "${pin[@]}" dotnet "$dll" "${args[@]}" >"$out" &
  started=$!
  python3 "$root/tools/NativeMmu.Monitor/emu-cpu.py" "$started" >"$out.cpu" &
  pollers+=($!)
  if [ "$cfg" = C ]; then
    # attach as soon as the runtime has opened its diagnostics endpoint
    for _ in $(seq 200); do compgen -G "${TMPDIR:-/tmp}/dotnet-diagnostic-$started-*-socket" >/dev/null && break; sleep 0.05; done
    "${prio[@]}" dotnet "$monitor" top --pid "$started" --json --seconds 60 >"$out.top" 2>/dev/null &
    monitor_pid=$!
  fi
}

finish_monitor() {
  kill "$monitor_pid" 2>/dev/null || true; wait "$monitor_pid" 2>/dev/null || true
  echo "    (top printed $(wc -l <"$1.top") intervals)" >&2
}

declare -A results percpu m c
pollers=()
case $mode in
sequential)
  orders=(ABC BCA CAB)
  for ((r = 0; r < rounds; r++)); do
    order=${orders[r % 3]}
    for ((i = 0; i < 3; i++)); do
      cfg=${order:i:1}
      load=$(cut -d' ' -f1 /proc/loadavg)
      start "$cfg" "$work/$cfg.json"
      wait "$started" "${pollers[@]}"; pollers=()
      if [ "$cfg" = C ]; then finish_monitor "$work/$cfg.json"; fi
      v=$(pfmin "$work/$cfg.json"); u=$(pfcpu "$work/$cfg.json")
      printf 'round %d  %s  %14.0f pf/min wall  %12.0f pf/CPU-s worker   (load before %s)\n' $((r + 1)) "$cfg" "$v" "$u" "$load"
      results[$cfg]+="$v "
      percpu[$cfg]+="$u "
    done
  done
  for k in A B C; do m[$k]=$(echo "${results[$k]}" | median); c[$k]=$(echo "${percpu[$k]}" | median); done
  printf '\n                          %14s     %14s\n' "pf/min (wall)" "pf/CPU-s"
  printf 'median  A (compiled out)  %14.0f     %14.0f\n' "${m[A]}" "${c[A]}"
  printf 'median  B (no listener)   %14.0f     %14.0f     B/A %s  %s\n' "${m[B]}" "${c[B]}" "$(div "${m[B]}" "${m[A]}")" "$(div "${c[B]}" "${c[A]}")"
  printf 'median  C (top attached)  %14.0f     %14.0f     C/A %s  %s\n' "${m[C]}" "${c[C]}" "$(div "${m[C]}" "${m[A]}")" "$(div "${c[C]}" "${c[A]}")"
  ;;
paired)
  for ((r = 0; r < rounds; r++)); do
    for other in B C; do
      cpu_a=$((r % 2)); cpu_o=$((1 - r % 2))
      load=$(cut -d' ' -f1 /proc/loadavg)
      start A "$work/A.json" "$cpu_a"; pa=$started
      start "$other" "$work/$other.json" "$cpu_o"; po=$started
      wait "$pa" "$po" "${pollers[@]}"; pollers=()
      if [ "$other" = C ]; then finish_monitor "$work/C.json"; fi
      va=$(pfmin "$work/A.json"); vo=$(pfmin "$work/$other.json")
      ratio=$(div "$vo" "$va")
      printf 'round %d  A@cpu%d %14.0f   %s@cpu%d %14.0f pf/min   %s/A %s   (load before %s)\n' \
        $((r + 1)) "$cpu_a" "$va" "$other" "$cpu_o" "$vo" "$other" "$ratio" "$load"
      results[$other]+="$ratio "
    done
  done
  printf '\nmedian B/A (no listener vs compiled out)   %s   [%s]\n' "$(echo "${results[B]}" | median)" "${results[B]% }"
  printf 'median C/A (top attached vs compiled out)  %s   [%s]\n' "$(echo "${results[C]}" | median)" "${results[C]% }"
  ;;
*) echo "usage: $0 sequential|paired [ROUNDS]" >&2; exit 2 ;;
esac
