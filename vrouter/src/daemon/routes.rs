//! Routes into the tenants' TUN devices, kept in step with the
//! configuration.

use netstack::route::{Route, Routes};
use tracing::{info, warn};

use super::Io;
use crate::config::Settings;

/// The routes the configuration asks for: each tunnel's remote subnets
/// through its tenant's TUN, in the tenant's table.
pub(super) fn routes_for(settings: &Settings) -> Result<Vec<Route>, String> {
    let mut routes = Vec::new();
    for t in &settings.tunnels {
        let tenant = &settings.tenants[t.tenant];
        let Some(table) = tenant.table else { continue };
        let ifindex = netstack::route::ifindex(&tenant.tun)
            .map_err(|e| format!("tenant {}: TUN {}: {e}", tenant.name, tenant.tun))?;
        for &(dst, prefix) in &t.remote_subnets {
            let r = Route {
                // The kernel takes 10.1.0.0/24, not 10.1.0.1/24.
                dst: proto_esp::spd::Selector::subnet(dst, prefix).start,
                prefix,
                ifindex,
                table,
            };
            if !routes.contains(&r) {
                routes.push(r);
            }
        }
    }
    Ok(routes)
}

impl Io {
    /// Makes the installed routes `wanted`: removes the others, adds the
    /// new ones.
    pub(super) fn set_routes(&self, wanted: Vec<Route>) -> Result<(), String> {
        let mut installed = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let mut nl = Routes::open().map_err(|e| format!("rtnetlink: {e}"))?;
        for r in installed.iter().filter(|r| !wanted.contains(r)) {
            match nl.delete(r) {
                Ok(()) => info!(dst = %r.dst, prefix = r.prefix, table = r.table, "route removed"),
                Err(e) => warn!(route = ?r, error = %e, "could not remove route"),
            }
        }
        let mut result = Ok(());
        for r in &wanted {
            match nl.add(r) {
                Ok(()) if !installed.contains(r) => {
                    info!(dst = %r.dst, prefix = r.prefix, table = r.table, ifindex = r.ifindex, "route added")
                }
                Ok(()) => {}
                Err(e) => {
                    result = Err(format!(
                        "route {}/{} table {}: {e}",
                        r.dst, r.prefix, r.table
                    ))
                }
            }
        }
        *installed = wanted;
        result
    }
}
