use std::net::SocketAddr;
use std::time::Duration;

use proto_control::messages::{ClientHello, Endpoint, NatKind, PROTOCOL_VERSION};

use crate::registry::{NewAuthKey, Registry, RegistryError};

const NOW: u64 = 1_800_000_000;

fn hello(node_key: u8, host: &str, auth: &str) -> ClientHello {
    ClientHello {
        protocol_version: PROTOCOL_VERSION,
        node_key: vec![node_key; 32],
        hostname: host.into(),
        auth_key: auth.into(),
        endpoints: vec![Endpoint::from(SocketAddr::from((
            [10, 0, 0, node_key],
            41641,
        )))],
        map_version: 0,
        relay_feed: false,
        nat: 0,
    }
}

fn open(dir: &tempfile::TempDir) -> Registry {
    Registry::open(&dir.path().join("c.redb"), None).unwrap()
}

fn key(reg: &mut Registry, reusable: bool, expires: Option<Duration>) -> String {
    let spec = NewAuthKey {
        reusable,
        expires_in: expires,
        tags: vec!["tag:lab".into()],
    };
    reg.create_auth_key(&spec, NOW).unwrap().1.to_string()
}

#[test]
fn nodes_register_with_a_key_and_get_distinct_stable_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = open(&dir);
    let k = key(&mut reg, true, None);
    let a = reg.connect([1; 32], &hello(1, "Alpha", &k), NOW).unwrap();
    let b = reg.connect([2; 32], &hello(2, "alpha", &k), NOW).unwrap();
    assert_eq!((a.name.as_str(), b.name.as_str()), ("alpha", "alpha-2"));
    assert_ne!(a.address, b.address);
    assert_eq!(a.tags, ["tag:lab"]);
    assert_eq!(reg.version(), 2);
    // Reconnecting needs no key and keeps everything.
    let again = reg
        .connect([1; 32], &hello(1, "whatever", ""), NOW)
        .unwrap();
    assert_eq!(again, a);
    assert_eq!(reg.version(), 2, "nothing changed, no new version");
    drop(reg);
    let mut reg = open(&dir);
    let after = reg.connect([1; 32], &hello(1, "x", ""), NOW).unwrap();
    assert_eq!(after.address, a.address, "address survives a restart");
    assert_eq!(reg.version(), 2, "version survives a restart");
    let c = reg.connect([3; 32], &hello(3, "c", &k), NOW).unwrap();
    assert!(c.address != a.address && c.address != b.address);
}

#[test]
fn bad_keys_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = open(&dir);
    let single = key(&mut reg, false, None);
    let expiring = key(&mut reg, true, Some(Duration::from_secs(60)));
    let revoked = key(&mut reg, true, None);
    let revoked_id = revoked.split('-').nth(2).unwrap().to_string();
    reg.revoke_auth_key(&revoked_id).unwrap();

    assert!(matches!(
        reg.connect([1; 32], &hello(1, "a", ""), NOW),
        Err(RegistryError::AuthKeyRequired)
    ));
    assert!(matches!(
        reg.connect([1; 32], &hello(1, "a", "nonsense"), NOW),
        Err(RegistryError::AuthKeyInvalid)
    ));
    let mut forged = single.clone();
    forged.replace_range(forged.len() - 4.., "0000");
    assert!(matches!(
        reg.connect([1; 32], &hello(1, "a", &forged), NOW),
        Err(RegistryError::AuthKeyInvalid)
    ));
    reg.connect([1; 32], &hello(1, "a", &single), NOW).unwrap();
    assert!(matches!(
        reg.connect([2; 32], &hello(2, "b", &single), NOW),
        Err(RegistryError::AuthKeyUsed(_))
    ));
    assert!(matches!(
        reg.connect([2; 32], &hello(2, "b", &expiring), NOW + 61),
        Err(RegistryError::AuthKeyExpired(_))
    ));
    reg.connect([2; 32], &hello(2, "b", &expiring), NOW + 59)
        .unwrap();
    assert!(matches!(
        reg.connect([3; 32], &hello(3, "c", &revoked), NOW),
        Err(RegistryError::AuthKeyRevoked(_))
    ));
    assert!(matches!(
        reg.revoke_auth_key("zz"),
        Err(RegistryError::UnknownAuthKey(_))
    ));
    let before = reg.version();
    assert!(matches!(
        reg.connect([4; 32], &hello(1, "d", &expiring), NOW),
        Err(RegistryError::NodeKeyInUse)
    ));
    assert_eq!(reg.version(), before, "a refused join changes nothing");
    // The use of the single-use key survives a restart.
    drop(reg);
    let mut reg = open(&dir);
    assert!(matches!(
        reg.connect([5; 32], &hello(5, "e", &single), NOW),
        Err(RegistryError::AuthKeyUsed(_))
    ));
}

#[test]
fn rotation_endpoints_rename_and_removal_are_versioned_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = open(&dir);
    let k = key(&mut reg, true, None);
    let a = reg.connect([1; 32], &hello(1, "a", &k), NOW).unwrap();
    let b = reg.connect([2; 32], &hello(2, "b", &k), NOW).unwrap();
    let v = reg.version();
    let watch = reg.subscribe();

    let rotated = reg.connect([1; 32], &hello(9, "a", ""), NOW).unwrap();
    assert_eq!(rotated.node_key, vec![9; 32]);
    assert_eq!(rotated.address, a.address, "rotation keeps the address");
    assert!(watch.has_changed().unwrap());
    let d = reg.delta_since(b.id, v).unwrap();
    assert_eq!(d.upserts.len(), 1);
    assert_eq!(d.upserts[0].node_key, vec![9; 32]);

    let v = reg.version();
    reg.update_endpoints(
        b.id,
        &[Endpoint::from(SocketAddr::from(([192, 0, 2, 7], 1)))],
        NatKind::NatCone as i32,
    )
    .unwrap();
    // The NAT kind the node reports reaches its peers in the map.
    let d = reg.delta_since(a.id, v).unwrap();
    assert_eq!(d.upserts.len(), 1);
    assert_eq!(d.upserts[0].nat, NatKind::NatCone as i32);
    let v = reg.version();
    reg.update_endpoints(
        b.id,
        &[Endpoint::from(SocketAddr::from(([192, 0, 2, 7], 1)))],
        NatKind::NatSymmetric as i32,
    )
    .unwrap();
    assert_eq!(
        reg.delta_since(a.id, v).unwrap().upserts[0].nat,
        NatKind::NatSymmetric as i32,
        "a new NAT kind alone is a change"
    );
    assert!(reg
        .update_endpoints(
            b.id,
            &[Endpoint {
                ip: vec![1],
                port: 1
            }],
            0,
        )
        .is_err());
    reg.rename_node("b", "bee").unwrap();
    assert!(matches!(
        reg.rename_node("bee", "a"),
        Err(RegistryError::NameTaken(_))
    ));
    assert!(matches!(
        reg.rename_node("bee", "Not Valid"),
        Err(RegistryError::InvalidName(_))
    ));
    assert!(matches!(
        reg.rename_node("nobody", "x"),
        Err(RegistryError::UnknownNode(_))
    ));

    let removed = reg.remove_node("bee").unwrap();
    assert_eq!(removed.id, b.id);
    let d = reg.delta_since(a.id, v).unwrap();
    assert_eq!(d.removed, [b.id]);
    assert_eq!(
        d.upserts.len(),
        0,
        "b's earlier changes fold into its removal"
    );
    assert!(reg.full_map(a.id).upserts.is_empty());
    // The removed machine cannot come back without a key; with one it is a new node.
    assert!(matches!(
        reg.connect([2; 32], &hello(2, "b", ""), NOW),
        Err(RegistryError::AuthKeyRequired)
    ));
    let b2 = reg.connect([2; 32], &hello(2, "b", &k), NOW).unwrap();
    assert_ne!(b2.id, b.id);
    assert_ne!(
        b2.address, b.address,
        "a removed node's address is not handed out at once"
    );
}

#[test]
fn a_database_keeps_its_prefix_and_tags_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    let mut reg = Registry::open(&path, Some("10.77.0.0/16".parse().unwrap())).unwrap();
    let k = key(&mut reg, false, None);
    let a = reg.connect([1; 32], &hello(1, "a", &k), NOW).unwrap();
    assert_eq!(std::net::Ipv4Addr::from(a.address).octets()[..2], [10, 77]);
    let bad = NewAuthKey {
        tags: vec!["server".into()],
        ..Default::default()
    };
    assert!(matches!(
        reg.create_auth_key(&bad, NOW),
        Err(RegistryError::InvalidTag(_))
    ));
    drop(reg);
    assert!(matches!(
        Registry::open(&path, Some("100.64.0.0/10".parse().unwrap())),
        Err(RegistryError::PrefixMismatch { .. })
    ));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_database_in_use_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let _held = open(&dir);
    let err = Registry::open(&dir.path().join("c.redb"), None).unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
}
