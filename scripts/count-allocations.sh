#!/usr/bin/env bash
# Proves the running daemon allocates nothing per packet: a cvlan-wg pair
# in namespaces, side A under valgrind (DHAT); counts A's heap blocks after
# a short and a long ping run and prints the difference per packet.
# Run as root after `cargo build --release -p wg-device`; needs valgrind.
set -u
bin=$(cd "$(dirname "$0")/.." && pwd)/target/release/cvlan-wg
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)"; exit 2; }
blocks() { # pings -> heap blocks allocated by side A over its whole life
  local n=$1 t=$$$1 D; D=$(mktemp -d)
  local A=cva$t B=cvb$t
  ip netns add $A; ip netns add $B
  ip link add cv${t}a type veth peer name cv${t}b
  ip link set cv${t}a netns $A; ip link set cv${t}b netns $B
  ip -n $A addr add 10.77.0.1/24 dev cv${t}a; ip -n $B addr add 10.77.0.2/24 dev cv${t}b
  for ns in $A $B; do ip -n $ns link set lo up; done
  ip -n $A link set cv${t}a up; ip -n $B link set cv${t}b up
  (umask 077; wg genkey > $D/a; wg genkey > $D/b); wg pubkey < $D/a > $D/ap; wg pubkey < $D/b > $D/bp
  ip netns exec $A valgrind --tool=dhat --dhat-out-file=$D/dhat --log-file=$D/vg.log "$bin" -f cw${t}a >/dev/null 2>&1 &
  ip netns exec $B "$bin" -f cw${t}b >/dev/null 2>&1 &
  for _ in $(seq 1 300); do [ -S /var/run/wireguard/cw${t}a.sock ] && [ -S /var/run/wireguard/cw${t}b.sock ] && break; sleep 0.1; done
  ip netns exec $A wg set cw${t}a private-key $D/a listen-port 51820 peer "$(cat $D/bp)" allowed-ips 10.76.0.2/32 endpoint 10.77.0.2:51820
  ip netns exec $B wg set cw${t}b private-key $D/b listen-port 51820 peer "$(cat $D/ap)" allowed-ips 10.76.0.1/32 endpoint 10.77.0.1:51820
  ip -n $A addr add 10.76.0.1/24 dev cw${t}a; ip -n $B addr add 10.76.0.2/24 dev cw${t}b
  ip -n $A link set cw${t}a up; ip -n $B link set cw${t}b up
  ip netns exec $A ping -q -c 3 -W 5 10.76.0.2 >/dev/null
  ip netns exec $A ping -q -c "$n" -i 0.01 -W 2 10.76.0.2 >/dev/null
  pkill -INT -f "cvlan-wg -f cw${t}a"; pkill -INT -f "cvlan-wg -f cw${t}b"; sleep 3
  sed -n 's/.*Total:.* in \([0-9,]*\) blocks.*/\1/p' $D/vg.log | tr -d ,
  ip netns del $A; ip netns del $B; rm -f /var/run/wireguard/cw${t}*.sock; rm -rf "$D"
}
short=$(blocks 30); long=$(blocks 3000)
echo "heap blocks: 30 pings=$short, 3000 pings=$long"
awk -v s="$short" -v l="$long" 'BEGIN {printf "allocations per packet: %.4f (2 packets per ping)\n", (l - s) / (2 * 2970)}'
