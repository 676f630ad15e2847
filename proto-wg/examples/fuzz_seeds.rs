//! Writes seed corpora for the fuzz targets from a real handshake and data
//! exchange: `cargo run -p proto-wg --example fuzz_seeds -- fuzz/corpus`.

use std::path::Path;

use proto_wg::harness::Pair;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)
}

fn main() -> std::io::Result<()> {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".into());
    let root = Path::new(&root);
    let mut pair = Pair::new(3);
    pair.nodes[1].device.set_under_load(true);
    let _ = pair.send(0, b"seed");
    pair.pump();
    pair.advance(std::time::Duration::from_secs(6));
    let _ = pair.send(1, &[0x42; 200]);
    pair.pump();
    let messages: Vec<Vec<u8>> = pair
        .nodes
        .iter()
        .flat_map(|n| n.sent.iter().map(|t| t.contents.clone()))
        .collect();

    let parse_dir = root.join("wg_wire_parse");
    let datagram_dir = root.join("wg_device_datagrams");
    for (i, m) in messages.iter().enumerate() {
        write(&parse_dir, &format!("msg-{i}-type{}", m[0]), m)?;
        // The datagram target reads one length byte before each datagram.
        let mut framed = vec![u8::try_from(m.len()).unwrap_or(u8::MAX)];
        framed.extend_from_slice(m);
        write(&datagram_dir, &format!("msg-{i}-type{}", m[0]), &framed)?;
    }
    let tun_dir = root.join("wg_device_tun_packets");
    let ip = proto_wg::harness::ipv4_packet([10, 0, 0, 1].into(), [10, 0, 0, 2].into(), b"payload");
    let mut framed = u16::try_from(ip.len()).unwrap_or(0).to_le_bytes().to_vec();
    framed.extend_from_slice(&ip);
    write(&tun_dir, "ipv4", &framed)?;
    let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
    v6.extend_from_slice(&[0; 32]);
    v6.extend_from_slice(&[0; 8]);
    let mut framed = u16::try_from(v6.len()).unwrap_or(0).to_le_bytes().to_vec();
    framed.extend_from_slice(&v6);
    write(&tun_dir, "ipv6", &framed)?;

    let uapi_dir = root.join("uapi_set");
    let key = "e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a";
    write(
        &uapi_dir,
        "full",
        format!(
            "private_key={key}\nlisten_port=51820\nfwmark=0\nreplace_peers=true\npublic_key={key}\n\
             public_key=b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33\nupdate_only=true\n\
             preshared_key={key}\nendpoint=[::1]:51820\npersistent_keepalive_interval=25\n\
             replace_allowed_ips=true\nallowed_ip=10.0.0.0/8\nallowed_ip=fd00::/64\nprotocol_version=1\nremove=true\n"
        )
        .as_bytes(),
    )?;
    println!(
        "wrote {} messages and uapi/tun seeds under {}",
        messages.len(),
        root.display()
    );
    Ok(())
}
