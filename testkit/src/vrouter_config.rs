//! cvlan-vrouter configurations for tests, built as values and written
//! as the TOML the daemon reads, so a test names what differs (a tenant's
//! table, a tunnel's proposals) and not the file's syntax.
//!
//! ```
//! use testkit::vrouter_config::{tenant, tunnel, VrouterConfig};
//! let toml = VrouterConfig::new("10.88.0.2")
//!     .set("local_id", "gw-o.interop")
//!     .tenant(tenant("acme", "vr-acme").raw("table", 100))
//!     .tunnel(tunnel("t1", "acme", "10.88.0.1").psk("secret").subnets(&["10.88.2.0/24"], &["10.88.1.0/24"]))
//!     .to_toml();
//! assert!(toml.contains("[[tunnel]]\nid = \"t1\"\n"));
//! ```

use std::fmt::Display;
use std::path::Path;

/// One TOML table: keys in the order given, values as TOML text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    entries: Vec<(String, String)>,
    /// Lines written as they are, after the entries (a test's extras).
    extra: String,
}

/// A TOML basic string.
fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Table {
    /// `key = "value"`.
    pub fn set(self, key: &str, value: impl Display) -> Self {
        self.raw(key, quoted(&value.to_string()))
    }

    /// `key = value`, the value already TOML (a number, a bool, an array,
    /// an inline table). A key set twice keeps its first place.
    pub fn raw(mut self, key: &str, toml: impl Display) -> Self {
        let toml = toml.to_string();
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = toml,
            None => self.entries.push((key.to_string(), toml)),
        }
        self
    }

    /// `key = ["a", "b"]`.
    pub fn list(self, key: &str, items: &[&str]) -> Self {
        let items: Vec<String> = items.iter().map(|i| quoted(i)).collect();
        self.raw(key, format!("[{}]", items.join(", ")))
    }

    /// A pre-shared key.
    pub fn psk(self, psk: &str) -> Self {
        self.raw(
            "auth",
            format!("{{ method = \"psk\", psk = {} }}", quoted(psk)),
        )
    }

    /// Our subnets and the peer's.
    pub fn subnets(self, local: &[&str], remote: &[&str]) -> Self {
        self.list("local_subnets", local)
            .list("remote_subnets", remote)
    }

    /// Lines of TOML written as they are at the end of the table.
    pub fn lines(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        if !self.extra.ends_with('\n') {
            self.extra.push('\n');
        }
        self
    }

    fn write(&self, header: &str, out: &mut String) {
        out.push_str(header);
        out.push('\n');
        for (k, v) in &self.entries {
            out.push_str(&format!("{k} = {v}\n"));
        }
        out.push_str(&self.extra);
        out.push('\n');
    }
}

/// A tenant's table: its name and TUN device.
pub fn tenant(name: &str, tun: &str) -> Table {
    Table::default().set("name", name).set("tun", tun)
}

/// A tunnel's table: its id, tenant and the peer's address.
pub fn tunnel(id: &str, tenant: &str, remote: impl Display) -> Table {
    Table::default()
        .set("id", id)
        .set("tenant", tenant)
        .set("remote", remote)
}

/// The whole file: `[vrouter]`, then `[[tenant]]`s, then `[[tunnel]]`s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VrouterConfig {
    vrouter: Table,
    tenants: Vec<Table>,
    tunnels: Vec<Table>,
}

impl VrouterConfig {
    /// A gateway listening on `listen`.
    pub fn new(listen: impl Display) -> Self {
        Self::default().set("listen", listen)
    }

    /// `key = "value"` in `[vrouter]`.
    pub fn set(mut self, key: &str, value: impl Display) -> Self {
        self.vrouter = self.vrouter.set(key, value);
        self
    }

    /// `key = value` (TOML) in `[vrouter]`.
    pub fn raw(mut self, key: &str, toml: impl Display) -> Self {
        self.vrouter = self.vrouter.raw(key, toml);
        self
    }

    pub fn tenant(mut self, t: Table) -> Self {
        self.tenants.push(t);
        self
    }

    /// A tunnel after the others.
    pub fn tunnel(mut self, t: Table) -> Self {
        self.tunnels.push(t);
        self
    }

    /// A tunnel before the others (the first one that fits a peer answers it).
    pub fn tunnel_first(mut self, t: Table) -> Self {
        self.tunnels.insert(0, t);
        self
    }

    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        if self.vrouter != Table::default() {
            self.vrouter.write("[vrouter]", &mut out);
        }
        for t in &self.tenants {
            t.write("[[tenant]]", &mut out);
        }
        for t in &self.tunnels {
            t.write("[[tunnel]]", &mut out);
        }
        out
    }

    /// Writes the file.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.to_toml()).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_come_out_in_order_with_quoting() {
        let toml = VrouterConfig::new("192.0.2.1")
            .raw("max_half_open_per_source", 64)
            .tenant(tenant("acme", "vr-acme").raw("table", 100))
            .tunnel(
                tunnel("b", "acme", "192.0.2.2")
                    .psk("p\"q")
                    .lines("encap = false"),
            )
            .tunnel_first(tunnel("a", "acme", "192.0.2.3").raw("initiate", true))
            .to_toml();
        assert_eq!(
            toml,
            "[vrouter]\nlisten = \"192.0.2.1\"\nmax_half_open_per_source = 64\n\n\
             [[tenant]]\nname = \"acme\"\ntun = \"vr-acme\"\ntable = 100\n\n\
             [[tunnel]]\nid = \"a\"\ntenant = \"acme\"\nremote = \"192.0.2.3\"\ninitiate = true\n\n\
             [[tunnel]]\nid = \"b\"\ntenant = \"acme\"\nremote = \"192.0.2.2\"\nauth = { method = \"psk\", psk = \"p\\\"q\" }\nencap = false\n\n"
        );
    }
}
