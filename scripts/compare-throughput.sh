#!/usr/bin/env bash
# iperf3 through the tunnel: cvlan-wg on both sides vs wireguard-go on both
# sides, interleaved in one run, RUNS each (default 3); prints medians and
# the ratio. Run as root after `cargo build --release -p wg-device`.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
cv=(); go=()
for i in $(seq 1 "$RUNS"); do
  cv+=("$(SECS=${SECS:-8} bash "$here/scripts/wg-pair.sh" cvlan cvlan | sed -n 's/^tunnel-Mbps=\([0-9]*\).*/\1/p')")
  go+=("$(SECS=${SECS:-8} bash "$here/scripts/wg-pair.sh" wireguard-go wireguard-go | sed -n 's/^tunnel-Mbps=\([0-9]*\).*/\1/p')")
  echo "run $i: cvlan-wg=${cv[-1]} Mbit/s  wireguard-go=${go[-1]} Mbit/s"
done
mc=$(printf '%s\n' "${cv[@]}" | median); mg=$(printf '%s\n' "${go[@]}" | median)
echo "median: cvlan-wg=$mc Mbit/s wireguard-go=$mg Mbit/s ratio=$(awk -v a="$mc" -v b="$mg" 'BEGIN {printf "%.2f", a/b}')"
