//! The host a lab runs on: root, the tools it needs, commands that must
//! succeed. A test that cannot run here fails with what is missing; it is
//! never skipped silently.

use std::process::Command;

/// Whether this process runs as root (the `Uid:` line of /proc/self/status).
pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// Fails loudly when not root; `why` says what needs it.
pub fn require_root(why: &str) {
    assert!(
        is_root(),
        "this test needs root ({why}); run as root, or leave it ignored"
    );
}

/// Runs a command; panics with its output if it fails.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn tool_exists(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Fails loudly (never skips) when the environment cannot run the lab.
pub fn require(tools: &[&str]) {
    require_root("network namespaces");
    for t in tools {
        assert!(
            tool_exists(t),
            "this test needs `{t}`: `bash .ci/install-deps` installs every package the tests use"
        );
    }
}

/// Runs a command and asserts it succeeded (its stderr in the message).
pub fn sh(args: &[&str]) {
    run(args);
}

/// A tag unique to this process and call (for namespace and interface
/// names: the process id and `counter`'s next value) and a fresh, empty
/// directory `{prefix}-{tag}` under the temporary directory.
pub fn fresh_dir(
    prefix: &str,
    counter: &std::sync::atomic::AtomicU32,
) -> (String, std::path::PathBuf) {
    let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tag = format!("{}{n}", std::process::id() % 100_000);
    let dir = std::env::temp_dir().join(format!("{prefix}-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test directory");
    (tag, dir)
}
