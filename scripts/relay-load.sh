#!/usr/bin/env bash
# Load test of one cvlan-relay (release build) on loopback: 2 and 100
# nodes in pairs, 1200-byte packets, SECS seconds each; prints packets/s,
# Mbit/s and the relay's RSS. The load generator shares this machine's
# cores with the relay, so the figures are a floor for the relay itself.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
secs=${SECS:-5}
cd "$here"
cargo build --release -q -p relay --bin cvlan-relay --example relay_load
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
key=$(target/release/cvlan-relay --key "$dir/relay.key" --print-key)
target/release/cvlan-relay --key "$dir/relay.key" --listen 127.0.0.1:18443 --stun 127.0.0.1:13478 2>"$dir/relay.log" &
pid=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/18443) 2>/dev/null && break; sleep 0.1; done
echo "idle relay RSS: $(awk '/VmRSS/ {print $2 " kB"}' /proc/$pid/status)"
for n in 2 100; do
  target/release/examples/relay_load 127.0.0.1:18443 "$key" "$n" "$secs" 1200
  echo "  relay RSS after: $(awk '/VmRSS/ {print $2 " kB"}' /proc/$pid/status), peak $(awk '/VmHWM/ {print $2 " kB"}' /proc/$pid/status)"
done
curl -s 127.0.0.1:18443/metrics | grep -E "^cvlan_relay_(packets|bytes|connections)" || true
