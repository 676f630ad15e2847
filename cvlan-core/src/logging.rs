//! One log setup for every daemon: to stderr, in colour only when a
//! person watches (a terminal), at the level asked for by `RUST_LOG` (a
//! tracing filter), else `LOG_LEVEL` (wireguard-go's `verbose`, `debug`,
//! `error`, `silent`, or a tracing filter), else `info`.

/// The tracing filter `LOG_LEVEL`'s wireguard-go values stand for.
fn wireguard_go_level(v: &str) -> &str {
    match v {
        "verbose" | "debug" => "debug",
        "error" => "error",
        "silent" => "off",
        other => other,
    }
}

/// Starts logging; a second call does nothing.
pub fn init() {
    let wanted = std::env::var("RUST_LOG").ok().or_else(|| {
        std::env::var("LOG_LEVEL")
            .ok()
            .map(|v| wireguard_go_level(&v).to_string())
    });
    let filter = wanted
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

#[cfg(test)]
mod tests {
    #[test]
    fn wireguard_go_levels_map_onto_tracing_filters() {
        assert_eq!(super::wireguard_go_level("verbose"), "debug");
        assert_eq!(super::wireguard_go_level("silent"), "off");
        assert_eq!(
            super::wireguard_go_level("warn,relay=debug"),
            "warn,relay=debug"
        );
    }
}
