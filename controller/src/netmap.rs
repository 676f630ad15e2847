//! The network map as nodes receive it: a full map (every other node) or
//! a delta since a version the node already holds, computed from a bounded
//! log of recent changes. Pure functions over the registry's tables, so
//! they are unit-tested and benchmarked without a database or a socket.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proto_control::messages::{MapUpdate, Peer};

use crate::records::NodeRecord;

/// Changes remembered for deltas; a node further behind gets a full map.
pub const CHANGE_LOG_LEN: usize = 16_384;

/// Which node changed at which map version.
#[derive(Debug)]
pub struct ChangeLog {
    entries: VecDeque<(u64, u64)>,
    /// Deltas can be computed from any version >= floor.
    floor: u64,
    capacity: usize,
}

impl ChangeLog {
    /// A log that can describe changes after `version` (the current one).
    pub fn new(version: u64) -> Self {
        Self::with_capacity(version, CHANGE_LOG_LEN)
    }

    pub fn with_capacity(version: u64, capacity: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            floor: version,
            capacity: capacity.max(1),
        }
    }

    /// Records that `node` changed (joined, left, or was modified) in `version`.
    pub fn record(&mut self, version: u64, node: u64) {
        if self.entries.len() == self.capacity {
            if let Some((v, _)) = self.entries.pop_front() {
                self.floor = v;
            }
        }
        self.entries.push_back((version, node));
    }

    /// Nodes changed after `since`, or `None` if the log no longer
    /// reaches back that far.
    pub fn changed_since(&self, since: u64) -> Option<BTreeSet<u64>> {
        if since < self.floor {
            return None;
        }
        let start = self.entries.partition_point(|&(v, _)| v <= since);
        Some(self.entries.range(start..).map(|&(_, id)| id).collect())
    }
}

pub fn peer(n: &NodeRecord) -> Peer {
    Peer {
        node_id: n.id,
        name: n.name.clone(),
        node_key: n.node_key.clone(),
        address: n.address.to_be_bytes().to_vec(),
        endpoints: n.endpoints.clone(),
        tags: n.tags.clone(),
        nat: n.nat,
    }
}

/// Every node but `viewer`.
pub fn full_map(nodes: &BTreeMap<u64, NodeRecord>, viewer: u64, version: u64) -> MapUpdate {
    MapUpdate {
        version,
        full: true,
        base_version: 0,
        upserts: nodes
            .values()
            .filter(|n| n.id != viewer)
            .map(peer)
            .collect(),
        removed: Vec::new(),
        more: false,
    }
}

/// What changed for `viewer` between `since` and `version`, or `None` if
/// only a full map can say (the node is too far behind, or ahead of us:
/// a database restored from a backup).
pub fn delta(
    nodes: &BTreeMap<u64, NodeRecord>,
    log: &ChangeLog,
    viewer: u64,
    since: u64,
    version: u64,
) -> Option<MapUpdate> {
    if since > version {
        return None;
    }
    let changed = log.changed_since(since)?;
    let mut update = MapUpdate {
        version,
        full: false,
        base_version: since,
        ..Default::default()
    };
    for id in changed.into_iter().filter(|&id| id != viewer) {
        match nodes.get(&id) {
            Some(n) => update.upserts.push(peer(n)),
            None => update.removed.push(id),
        }
    }
    Some(update)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64) -> NodeRecord {
        NodeRecord {
            id,
            name: format!("n{id}"),
            node_key: vec![id as u8; 32],
            address: 0x6440_0000 + id as u32,
            ..Default::default()
        }
    }

    fn nodes(ids: impl IntoIterator<Item = u64>) -> BTreeMap<u64, NodeRecord> {
        ids.into_iter().map(|i| (i, node(i))).collect()
    }

    #[test]
    fn the_full_map_holds_every_node_but_the_viewer() {
        let m = full_map(&nodes(1..=4), 2, 7);
        let ids: Vec<_> = m.upserts.iter().map(|p| p.node_id).collect();
        assert_eq!(ids, [1, 3, 4]);
        assert!(m.full);
        assert_eq!(m.version, 7);
        assert_eq!(m.upserts[0].address, [100, 64, 0, 1]);
    }

    #[test]
    fn a_delta_holds_exactly_what_changed_since_the_viewers_version() {
        let mut log = ChangeLog::new(10);
        let mut table = nodes(1..=3);
        // v11: node 4 joins; v12: node 2 leaves; v13: node 1 changes; v14: 4 changes again.
        table.insert(4, node(4));
        log.record(11, 4);
        table.remove(&2);
        log.record(12, 2);
        log.record(13, 1);
        log.record(14, 4);
        let d = delta(&table, &log, 3, 10, 14).unwrap();
        let up: Vec<_> = d.upserts.iter().map(|p| p.node_id).collect();
        assert_eq!(up, [1, 4], "node 4 once, though it changed twice");
        assert_eq!(d.removed, [2]);
        assert_eq!((d.base_version, d.version, d.full), (10, 14, false));

        let d = delta(&table, &log, 3, 12, 14).unwrap();
        assert!(d.removed.is_empty());
        assert_eq!(d.upserts.len(), 2);
        let d = delta(&table, &log, 1, 12, 14).unwrap();
        assert_eq!(d.upserts.len(), 1, "the viewer's own change is not a peer");
        assert_eq!(
            delta(&table, &log, 3, 14, 14).unwrap(),
            MapUpdate {
                version: 14,
                base_version: 14,
                ..Default::default()
            }
        );
    }

    #[test]
    fn too_old_or_future_versions_need_a_full_map() {
        let mut log = ChangeLog::with_capacity(0, 2);
        let table = nodes(1..=3);
        log.record(1, 1);
        log.record(2, 2);
        assert!(delta(&table, &log, 9, 0, 2).is_some());
        log.record(3, 3);
        assert!(
            delta(&table, &log, 9, 0, 3).is_none(),
            "change 1 fell out of the log"
        );
        assert!(delta(&table, &log, 9, 1, 3).is_some());
        assert!(
            delta(&table, &log, 9, 4, 3).is_none(),
            "a node ahead of the controller"
        );
        let fresh = ChangeLog::new(50);
        assert!(
            fresh.changed_since(49).is_none(),
            "before a restart: unknown"
        );
        assert_eq!(fresh.changed_since(50).unwrap().len(), 0);
    }
}
