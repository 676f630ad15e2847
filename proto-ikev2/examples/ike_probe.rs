//! A small real-network driver for the sans-IO IKE SA: brings up a tunnel
//! with a peer over UDP 500/4500 (as initiator, or as responder with
//! `--respond`), then pings through ESP from one protected address to
//! another and checks the echo replies. For trying the machine against
//! other implementations (strongSwan in `../shared/lab/ike-lab.sh`); the
//! vrouter daemon is the product, this is a probe.
//!
//! ```text
//! ike_probe --local 10.77.0.2 --remote 10.77.0.1 --id gw-b.ike.lab \
//!   --remote-id gw-a.ike.lab --psk ike-lab-psk-0123456789abcdef \
//!   --ike aes256gcm16-prfsha256-ecp256 --esp aes256gcm16 \
//!   --local-ts 10.77.2.0/24 --remote-ts 10.77.1.0/24 \
//!   --ping 10.77.2.1:10.77.1.1 [--encap] [--respond] [--count 5] \
//!   [--child-rekey SECS] [--ike-rekey SECS] [--timeout SECS]
//! ```
#![allow(clippy::disallowed_methods)] // a command-line driver: a clock for its seed

#[path = "../tests/interop/driver.rs"]
mod driver;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use proto_ikev2::wire::TrafficSelector;
use proto_ikev2::{Config, Credentials, EspProposal, Identity, IkeProposal, Timers};

struct Args(HashMap<String, String>);

impl Args {
    fn parse() -> Self {
        let mut m = HashMap::new();
        let mut it = std::env::args().skip(1).peekable();
        while let Some(k) = it.next() {
            let k = k.trim_start_matches("--").to_string();
            let v = match it.peek() {
                Some(v) if !v.starts_with("--") => it.next().unwrap_or_default(),
                _ => "yes".to_string(),
            };
            m.insert(k, v);
        }
        Self(m)
    }

    fn get(&self, k: &str) -> Result<&str, String> {
        self.0
            .get(k)
            .map(String::as_str)
            .ok_or_else(|| format!("--{k} is required"))
    }

    fn secs(&self, k: &str) -> Option<Duration> {
        self.0
            .get(k)
            .and_then(|v| v.parse().ok())
            .map(Duration::from_secs)
    }
}

fn subnet(s: &str) -> Result<TrafficSelector, String> {
    let (a, p) = s.split_once('/').ok_or(format!("{s}: not a prefix"))?;
    let a: IpAddr = a.parse().map_err(|e| format!("{s}: {e}"))?;
    let p: u8 = p.parse().map_err(|e| format!("{s}: {e}"))?;
    Ok(TrafficSelector::subnet(a, p))
}

fn ip(s: &str) -> Result<Ipv4Addr, String> {
    s.parse().map_err(|e| format!("{s}: {e}"))
}

fn run() -> Result<(), String> {
    let a = Args::parse();
    let config = Arc::new(Config {
        local_id: Identity::parse(a.get("id")?),
        remote_id: a.0.get("remote-id").map(|s| Identity::parse(s)),
        credentials: Credentials::Psk(a.get("psk")?.as_bytes().to_vec().into()),
        ike_proposals: vec![IkeProposal::parse(a.get("ike")?).map_err(|e| e.to_string())?],
        esp_proposals: vec![EspProposal::parse(a.get("esp")?).map_err(|e| e.to_string())?],
        local_ts: vec![subnet(a.get("local-ts")?)?],
        remote_ts: vec![subnet(a.get("remote-ts")?)?],
        force_encap: a.0.contains_key("encap"),
        fragment_size: Some(proto_ikev2::DEFAULT_FRAGMENT_SIZE),
        timers: Timers {
            child_rekey: a.secs("child-rekey").or(Timers::default().child_rekey),
            ike_rekey: a.secs("ike-rekey").or(Timers::default().ike_rekey),
            ..Timers::default()
        },
        child_limits: Default::default(),
    });
    let (src, dst) = a.get("ping")?.split_once(':').ok_or("--ping SRC:DST")?;
    let seed = cvlan_core::os_seed().map_err(|e| e.to_string())?;
    let count: u16 = a.0.get("count").and_then(|c| c.parse().ok()).unwrap_or(5);
    let plan = driver::Plan {
        local: ip(a.get("local")?)?,
        remote: ip(a.get("remote")?)?,
        config,
        respond: a.0.contains_key("respond"),
        ping: (ip(src)?, ip(dst)?),
        count,
        interval: Duration::from_millis(200),
        timeout: a.secs("timeout").unwrap_or(Duration::from_secs(60)),
        delete_at_end: true,
        seed,
    };
    let out = driver::run(&plan)?;
    for line in &out.log {
        println!("{line}");
    }
    println!(
        "{}/{} echo replies through ESP; {} Child SA rekeys, {} IKE SA rekeys; deleted: {}",
        out.replies, out.sent, out.child_rekeys, out.ike_rekeys, out.deleted
    );
    if out.replies == count {
        Ok(())
    } else {
        Err("not every echo was answered".into())
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ike_probe: {e}");
            ExitCode::FAILURE
        }
    }
}
