#!/usr/bin/env bash
# iperf3 through the tunnel: cvlan-wg on both sides vs wireguard-go on both
# sides, interleaved in one run, RUNS each (default 3); prints medians and
# the ratio. Run as root after `cargo build --release -p wg-device`.
# BASELINE=/path/to/an/older/cvlan-wg adds that build to every round, for
# before/after figures of a change (its median and after/before ratio).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
BASELINE=${BASELINE:-}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
pair() { SECS=${SECS:-8} bash "$here/scripts/wg-pair.sh" "$1" "$1" | sed -n 's/^tunnel-Mbps=\([0-9]*\).*/\1/p'; }
cv=(); go=(); base=()
for i in $(seq 1 "$RUNS"); do
  cv+=("$(pair cvlan)")
  go+=("$(pair wireguard-go)")
  line="run $i: cvlan-wg=${cv[-1]} Mbit/s  wireguard-go=${go[-1]} Mbit/s"
  if [ -n "$BASELINE" ]; then
    base+=("$(CVLAN_WG="$BASELINE" pair cvlan)")
    line="$line  baseline=${base[-1]} Mbit/s"
  fi
  echo "$line"
done
mc=$(printf '%s\n' "${cv[@]}" | median); mg=$(printf '%s\n' "${go[@]}" | median)
echo "median: cvlan-wg=$mc Mbit/s wireguard-go=$mg Mbit/s ratio=$(ratio "$mc" "$mg")"
if [ -n "$BASELINE" ]; then
  mb=$(printf '%s\n' "${base[@]}" | median)
  echo "median: baseline=$mb Mbit/s  this build / baseline=$(ratio "$mc" "$mb")"
fi
