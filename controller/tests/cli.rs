//! The admin CLI as users meet it: clear one-line errors for mistakes,
//! and commands that work both on a stopped controller's database and
//! through a running controller's admin socket.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cvlan-controller")
}

fn state_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cvlan-ctl-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn ctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("--state-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run cvlan-controller")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn err(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "should fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let e = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        e.starts_with("cvlan-controller: "),
        "one clear line, got {e:?}"
    );
    assert!(!e.contains("panicked"), "{e}");
    e
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn admin_commands_give_clear_errors_and_work_with_and_without_a_server() {
    let dir = state_dir("admin");
    assert!(err(&ctl(&dir, &["keys", "list"])).contains("no database"));

    // Without a server: straight to the database (created by `key` + serve
    // normally; `serve` once is the documented way, so start one).
    let mut server = Server(
        Command::new(bin())
            .arg("--state-dir")
            .arg(&dir)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve"),
    );
    let sock = dir.join("admin.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // While serving, the database is locked: commands go through the socket.
    let key = ok(&ctl(
        &dir,
        &["keys", "create", "--expires", "1h", "--tag", "tag:web"],
    ));
    assert!(key.starts_with("cvlan-auth-0000000000000001-"), "{key}");
    let list = ok(&ctl(&dir, &["keys", "list"]));
    assert!(
        list.contains("0000000000000001") && list.contains("tag:web"),
        "{list}"
    );
    assert!(!list.contains(key.trim()), "secrets are never listed");
    assert!(err(&ctl(&dir, &["keys", "revoke", "99"])).contains("unknown auth key"));
    assert!(err(&ctl(&dir, &["nodes", "remove", "nobody"])).contains("no node named"));
    assert!(err(&ctl(&dir, &["keys", "create", "--tag", "web"])).contains("invalid tag"));
    assert!(
        err(&ctl(&dir, &["nodes", "rename", "x", "Bad Name"])).contains("not a valid node name")
    );
    let pubkey = ok(&ctl(&dir, &["key"]));
    assert_eq!(pubkey.trim().len(), 64);

    let _ = server.0.kill();
    let _ = server.0.wait();
    let _ = std::fs::remove_file(&sock);
    // Stopped: the same commands open the database directly.
    ok(&ctl(&dir, &["keys", "revoke", "0000000000000001"]));
    assert!(
        ok(&ctl(&dir, &["keys", "list"])).contains("true"),
        "revoked"
    );
    assert!(ok(&ctl(&dir, &["nodes", "list"])).starts_with("ID"));
    assert_eq!(
        ok(&ctl(&dir, &["key"])),
        pubkey,
        "the controller key is kept"
    );

    // A damaged database is an error, not a panic.
    std::fs::write(dir.join("controller.redb"), b"not a database at all").unwrap();
    err(&ctl(&dir, &["keys", "list"]));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_arguments_are_explained() {
    let dir = state_dir("args");
    let out = ctl(&dir, &["keys", "create", "--expires", "5w"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unit must be s, m, h or d"));
    let out = ctl(&dir, &["serve", "--prefix", "100.64.0.1/10"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("host bits"));
}
