//! Network namespaces joined by veth pairs, removed on drop with every
//! process still inside them (also when the test panics).
//!
//! Names carry the caller's area prefix (`pphb-`, ...) so engineers testing
//! in parallel on one machine never collide.

use std::process::{Command, Output};

/// Run a command, panicking with its output if it fails.
pub fn sh(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace with its loopback up. Dropping it kills every
/// process in it (SIGKILL) and deletes it.
#[derive(Debug)]
pub struct Netns {
    /// Its name (`ip netns` name).
    pub name: String,
}

impl Netns {
    /// Create `name`, removing a leftover of the same name first.
    pub fn new(name: &str) -> Self {
        assert!(name.len() <= 32, "namespace name too long");
        if std::path::Path::new("/run/netns").join(name).exists() {
            kill_all_in(name);
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
        sh("ip", &["netns", "add", name]);
        let ns = Self { name: name.into() };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> args...`
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// PIDs of the processes in the namespace.
    pub fn pids(&self) -> Vec<u32> {
        pids_in(&self.name)
    }

    /// Send one UDP datagram from inside the namespace (bash's /dev/udp).
    pub fn send_udp(&self, payload_file: &std::path::Path, to: &str, port: u16) {
        let script = format!("cat {} > /dev/udp/{to}/{port}", payload_file.display());
        let out = self
            .command("bash")
            .args(["-c", &script])
            .output()
            .expect("run bash");
        assert!(
            out.status.success(),
            "send_udp: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_all_in(&self.name);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// PIDs of the processes in the namespace `name`.
pub fn pids_in(name: &str) -> Vec<u32> {
    Command::new("ip")
        .args(["netns", "pids", name])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGKILL every process in the namespace, until none is left (a dying
/// Heartbeat may fork a last child).
pub fn kill_all_in(name: &str) {
    for _ in 0..50 {
        let pids = pids_in(name);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Join `a` and `b` with a veth pair (`<a_if>` in `a`, `<b_if>` in `b`),
/// addresses given with their prefix (`10.203.1.1/24`), both ends up. The
/// pair disappears with either namespace.
pub fn veth(a: &Netns, a_if: &str, a_addr: &str, b: &Netns, b_if: &str, b_addr: &str) {
    assert!(
        a_if.len() <= 15 && b_if.len() <= 15,
        "interface names are at most 15 bytes"
    );
    sh(
        "ip",
        &[
            "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
            &b.name,
        ],
    );
    a.ip(&["addr", "add", a_addr, "dev", a_if]);
    b.ip(&["addr", "add", b_addr, "dev", b_if]);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

/// Whether this machine can run namespace tests (root, `ip`, `unshare`,
/// `nsenter`); the reason when not.
pub fn unavailable() -> Option<String> {
    if !super::is_root() {
        return Some("needs root (network and mount namespaces)".into());
    }
    for p in ["ip", "unshare", "nsenter", "bash"] {
        if !super::have_program(p) {
            return Some(format!("`{p}` is not installed"));
        }
    }
    None
}

/// Run `f` on a new thread inside namespace `name` (setns moves only that
/// thread), e.g. to bind a socket there; its result comes back on join.
pub fn spawn_in<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd as _;
        let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns(2) on a valid, open namespace file descriptor moves
        // only this new thread, which runs nothing but `f`.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}
