#!/usr/bin/env bash
# The main job, for now: build cvlan-wg, then bring up userspace WireGuard
# devices in network namespaces: cvlan-wg <-> cvlan-wg and cvlan-wg <->
# wireguard-go, configured only with `wg`; ping and a short iperf3 each.
# Everything is torn down at the end. Run as root on Debian.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/.ci/install-deps"
(cd "$here" && cargo build --release -p agent --bin cvlan-wg)
SECS=${SECS:-3} bash "$here/scripts/wg-pair.sh" cvlan cvlan
SECS=${SECS:-3} bash "$here/scripts/wg-pair.sh" cvlan wireguard-go
