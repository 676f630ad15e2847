#!/usr/bin/env bash
# The main job: a local CloudVLAN mesh in network namespaces. One
# controller (its embedded redb database), one relay (with STUN) and two
# agents on a bridge; the agents join with a pre-auth key, learn each
# other from the network map, and ping each other over WireGuard by
# overlay address: first through the relay, then directly once their
# probes prove the direct path.
#
#   bash scripts/demo.sh        # build, bring the mesh up, show it (it stays up)
#   bash scripts/demo.sh down   # tear it all down
#
# Root on Debian. BUILD=debug uses a debug build (faster to compile).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
state=/tmp/cvlan-demo
br_ns=cvdemo-br
nodes=(alpha beta)

down() {
  for n in "${nodes[@]}"; do
    if [ -S "$state/$n/agent.sock" ]; then
      pkill -f -- "--state-dir $state/$n " 2>/dev/null || true
    fi
  done
  pkill -f -- "--state-dir $state/controller serve" 2>/dev/null || true
  pkill -f -- "--key $state/relay.key --listen" 2>/dev/null || true
  sleep 0.3
  for ns in cvdemo-ctl cvdemo-relay cvdemo-alpha cvdemo-beta "$br_ns"; do
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$state"
  echo "demo mesh torn down"
}

if [ "${1:-up}" = down ]; then
  down
  exit 0
fi

bash "$here/.ci/install-deps"
profile=${BUILD:-release}
if [ "$profile" = release ]; then
  (cd "$here" && cargo build --release -p controller -p relay -p agent --bins)
else
  (cd "$here" && cargo build -p controller -p relay -p agent --bins)
fi
bin="$here/target/$profile"
down >/dev/null
mkdir -p "$state"

# A bridge in its own namespace; every host gets a veth into it.
ip netns add "$br_ns"
ip -n "$br_ns" link add br0 type bridge
ip -n "$br_ns" link set br0 up
attach() { # namespace, address
  ip netns add "$1"
  ip -n "$1" link set lo up
  ip link add "v-$1" type veth peer name eth0 netns "$1"
  ip link set "v-$1" netns "$br_ns"
  ip -n "$br_ns" link set "v-$1" master br0 up
  ip -n "$1" addr add "$2/24" dev eth0
  ip -n "$1" link set eth0 up
}
attach cvdemo-ctl 10.99.0.1
attach cvdemo-relay 10.99.0.2
attach cvdemo-alpha 10.99.0.11
attach cvdemo-beta 10.99.0.12

echo "== relay (forwards sealed packets by node key; answers STUN)"
relay_key=$("$bin/cvlan-relay" --key "$state/relay.key" --print-key)
ip netns exec cvdemo-relay "$bin/cvlan-relay" --key "$state/relay.key" --listen 10.99.0.2:8443 \
  --stun 10.99.0.2:3478 >"$state/relay.log" 2>&1 &
echo "relay key: $relay_key"

echo "== controller (state in $state/controller)"
ip netns exec cvdemo-ctl "$bin/cvlan-controller" --state-dir "$state/controller" \
  serve --listen 10.99.0.1:7443 --relay "10.99.0.2:8443#$relay_key#10.99.0.2:3478" \
  >"$state/controller.log" 2>&1 &
for _ in $(seq 100); do [ -S "$state/controller/admin.sock" ] && break; sleep 0.1; done
ctl() { "$bin/cvlan-controller" --state-dir "$state/controller" "$@"; }
controller_key=$(ctl key)
auth_key=$(ctl keys create --reusable --expires 1h --tag tag:demo)
echo "controller key: $controller_key"
ctl keys list

for n in "${nodes[@]}"; do
  echo "== agent $n joins"
  ip netns exec "cvdemo-$n" "$bin/cvlan-agent" --state-dir "$state/$n" --socket "$state/$n/agent.sock" \
    --interface "cvl-$n" up --controller http://10.99.0.1:7443 \
    --controller-key "$controller_key" --auth-key "$auth_key" --hostname "$n"
done
agent() { local n=$1; shift; "$bin/cvlan-agent" --socket "$state/$n/agent.sock" "$@"; }

echo "== controller: nodes"
ctl nodes list
sleep 0.5
echo "== alpha: status, peers, routes"
agent alpha status
agent alpha peers
agent alpha routes
beta_ip=$(agent beta status | sed -n 's/^node: .*, \([0-9.]*\)\/.*/\1/p')
alpha_ip=$(agent alpha status | sed -n 's/^node: .*, \([0-9.]*\)\/.*/\1/p')
echo "== alpha pings beta ($beta_ip) and beta pings alpha ($alpha_ip) over the mesh"
ip netns exec cvdemo-alpha ping -c 3 -i 0.2 -W 2 "$beta_ip"
ip netns exec cvdemo-beta ping -c 3 -i 0.2 -W 2 "$alpha_ip"
sleep 1
echo "== alpha's peers again: the probes have proven the direct path (PATH column)"
agent alpha peers
echo "== wg show (the agents speak the WireGuard UAPI)"
ip netns exec cvdemo-alpha wg show cvl-alpha || true
cat <<EOT

The mesh is up. Try:
  $bin/cvlan-agent --socket $state/alpha/agent.sock peers
  $bin/cvlan-controller --state-dir $state/controller nodes list
  ip netns exec cvdemo-alpha ping $beta_ip
Tear it down with:
  bash scripts/demo.sh down
EOT
