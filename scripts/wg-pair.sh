#!/usr/bin/env bash
# Two network namespaces on a veth pair, a userspace WireGuard device in
# each, configured only with `wg`; ping and (unless NOPERF=1) iperf3 across.
# Usage: scripts/wg-pair.sh IMPL_A IMPL_B   (each "cvlan" or "wireguard-go")
# Env: SECS (iperf3 seconds, default 5); BIDIR=1 sends both ways at once
# and reports the sum. Prints "tunnel-Mbps=N" last.
# CVLAN_WG: the cvlan-wg binary (default target/release/cvlan-wg).
# Needs root and the packages in .ci/install-deps. Cleans up on any exit.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
cvlan="${CVLAN_WG:-$here/target/release/cvlan-wg}"
impl_cmd() { case "$1" in cvlan) echo "$cvlan -f";; wireguard-go) echo "wireguard-go -f";; *) echo "unknown impl $1" >&2; exit 2;; esac; }
A_IMPL=${1:-cvlan}; B_IMPL=${2:-$A_IMPL}; SECS=${SECS:-5}
tag=$$; A=cvd${tag}a; B=cvd${tag}b; IA=cvd${tag}wa; IB=cvd${tag}wb
D=$(mktemp -d -t cvlan-pair.XXXX); pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.3
  ip netns del $A 2>/dev/null; ip netns del $B 2>/dev/null
  rm -f /var/run/wireguard/$IA.sock /var/run/wireguard/$IB.sock; rm -rf "$D"
}
trap cleanup EXIT
ip netns add $A; ip netns add $B
ip link add cvd${tag}va type veth peer name cvd${tag}vb
ip link set cvd${tag}va netns $A; ip link set cvd${tag}vb netns $B
ip -n $A addr add 10.199.0.1/24 dev cvd${tag}va; ip -n $B addr add 10.199.0.2/24 dev cvd${tag}vb
for n in $A $B; do ip -n $n link set lo up; done
ip -n $A link set cvd${tag}va up; ip -n $B link set cvd${tag}vb up
umask 077; wg genkey > $D/a.key; wg pubkey < $D/a.key > $D/a.pub; wg genkey > $D/b.key; wg pubkey < $D/b.key > $D/b.pub
start() { # ns ifname impl
  ip netns exec $1 env WG_PROCESS_FOREGROUND=1 $(impl_cmd $3) $2 >$D/$2.log 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do [ -S /var/run/wireguard/$2.sock ] && return 0; sleep 0.05; done
  echo "$3 did not come up: $(cat $D/$2.log)"; exit 1
}
start $A $IA $A_IMPL; start $B $IB $B_IMPL
ip netns exec $A wg set $IA private-key $D/a.key listen-port 51820 peer "$(cat $D/b.pub)" allowed-ips 10.198.0.2/32 endpoint 10.199.0.2:51820
ip netns exec $B wg set $IB private-key $D/b.key listen-port 51820 peer "$(cat $D/a.pub)" allowed-ips 10.198.0.1/32 endpoint 10.199.0.1:51820
ip -n $A addr add 10.198.0.1/24 dev $IA; ip -n $B addr add 10.198.0.2/24 dev $IB
ip -n $A link set $IA mtu 1420 up; ip -n $B link set $IB mtu 1420 up
if ! ip netns exec $A ping -c 3 -i 0.2 -W 2 10.198.0.2 >$D/ping 2>&1; then echo "PING FAILED"; cat $D/ping $D/*.log; exit 1; fi
echo "[$A_IMPL <-> $B_IMPL] ping ok: $(tail -1 $D/ping)"
ip netns exec $A wg show $IA | sed 's/^/  | /'
[ -n "${NOPERF:-}" ] && exit 0
ip netns exec $B iperf3 -s -1 -D -B 10.198.0.2 >/dev/null 2>&1; sleep 0.3
json=$(ip netns exec $A iperf3 -c 10.198.0.2 -t "$SECS" ${BIDIR:+--bidir} -J 2>/dev/null)
# The last "sum_received" (and, with --bidir, its reverse) hold the totals.
mbps=$(printf '%s' "$json" | python3 -c '
import json, sys
end = json.load(sys.stdin)["end"]
total = end["sum_received"]["bits_per_second"] + end.get("sum_received_bidir_reverse", {}).get("bits_per_second", 0)
print("%.0f" % (total / 1e6))')
echo "tunnel-Mbps=$mbps impl_a=$A_IMPL impl_b=$B_IMPL"
