//! Real Heartbeat 3.0.6 nodes, each in its own network namespace with its
//! own `/etc/ha.d`, `/var/lib/heartbeat` and `/run` (bind mounts and a tmpfs
//! inside a private mount namespace made by `unshare`, so nothing of the
//! host's changes and everything vanishes with the processes). `cl_status`
//! runs through `nsenter` into the node's namespaces.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::netns::Netns;

/// Heartbeat's daemon, from the Debian package `heartbeat`.
pub const DAEMON: &str = "/usr/libexec/heartbeat/heartbeat";
/// The system's HBcomm plugin directory.
pub const HBCOMM_DIR: &str = "/usr/lib/heartbeat/plugins/HBcomm";

/// Whether Heartbeat can run here; the reason when not.
pub fn unavailable() -> Option<String> {
    if let Some(why) = super::netns::unavailable() {
        return Some(why);
    }
    if !Path::new(DAEMON).exists() || !super::have_program("cl_status") {
        return Some("Heartbeat 3 is not installed (apt-get install heartbeat)".into());
    }
    None
}

/// One node's configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// `uname -n` of the node, as in the `node` line (e.g. `nodeA`).
    pub name: String,
    /// Every `node` of the cluster.
    pub nodes: Vec<String>,
    /// Media lines (`ucast pphbva 10.203.0.2`, `perfplus ...`).
    pub media: Vec<String>,
    /// `keepalive` / `warntime` / `deadtime` / `initdead` in ms.
    pub keepalive_ms: u64,
    /// `warntime`.
    pub warntime_ms: u64,
    /// `deadtime`.
    pub deadtime_ms: u64,
    /// `initdead`.
    pub initdead_ms: u64,
    /// `authkeys` content.
    pub authkeys: String,
    /// `haresources` content.
    pub haresources: String,
    /// Scripts for `resource.d`: (name, content).
    pub resource_scripts: Vec<(String, String)>,
    /// Extra HBcomm plugins to offer: (file name, path of the built .so).
    pub plugins: Vec<(String, PathBuf)>,
}

impl NodeConfig {
    /// Two-node defaults for tests: keepalive 500 ms, deadtime 3 s (the
    /// minimum Heartbeat takes without complaint is > 2 keepalives), sha1.
    pub fn test_node(name: &str, nodes: &[&str], media: &[String]) -> Self {
        Self {
            name: name.into(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            media: media.to_vec(),
            keepalive_ms: 500,
            warntime_ms: 1500,
            deadtime_ms: 3000,
            initdead_ms: 6000,
            authkeys: "auth 1\n1 sha1 testsecret\n".into(),
            haresources: String::new(),
            resource_scripts: Vec::new(),
            plugins: Vec::new(),
        }
    }
}

/// A running Heartbeat node. Dropping it kills it (the namespace's drop
/// then finds nothing left).
#[derive(Debug)]
pub struct Node {
    /// Its name, lower case as Heartbeat uses it.
    pub name: String,
    /// Its files: `etc-ha.d/`, `varlib/`, `log/ha-log`.
    pub dir: PathBuf,
    ns_name: String,
    child: Option<Child>,
}

impl Node {
    /// Write the node's files under `dir` and start Heartbeat in `ns`.
    pub fn start(ns: &Netns, dir: &Path, config: &NodeConfig) -> Self {
        Self::start_with(ns, dir, config, |_| {})
    }

    /// As [`Node::start`], running `prepare` on the node's files (e.g. to add
    /// a key file to its `/etc/ha.d`) just before Heartbeat starts.
    pub fn start_with(
        ns: &Netns,
        dir: &Path,
        config: &NodeConfig,
        prepare: impl FnOnce(&Node),
    ) -> Self {
        let _ = std::fs::remove_dir_all(dir);
        let etc = dir.join("etc-ha.d");
        let varlib = dir.join("varlib");
        let log = dir.join("log");
        for d in [&etc, &varlib, &log] {
            std::fs::create_dir_all(d).expect("create node dir");
        }
        super::netns::sh(
            "cp",
            &["-a", "/etc/ha.d/.", etc.to_str().expect("utf-8 path")],
        );
        super::netns::sh(
            "cp",
            &[
                "-a",
                "/var/lib/heartbeat/.",
                varlib.to_str().expect("utf-8 path"),
            ],
        );
        let mut ha_cf = format!(
            "logfile {log}/ha-log\ndebugfile {log}/ha-debug\nuse_logd no\n\
             keepalive {}ms\nwarntime {}ms\ndeadtime {}ms\ninitdead {}ms\nudpport 694\n\
             auto_failback off\ncrm off\n",
            config.keepalive_ms,
            config.warntime_ms,
            config.deadtime_ms,
            config.initdead_ms,
            log = log.display(),
        );
        for m in &config.media {
            ha_cf.push_str(m);
            ha_cf.push('\n');
        }
        ha_cf.push_str(&format!("node {}\n", config.nodes.join(" ")));
        std::fs::write(etc.join("ha.cf"), ha_cf).expect("write ha.cf");
        let authkeys = etc.join("authkeys");
        std::fs::write(&authkeys, &config.authkeys).expect("write authkeys");
        super::netns::sh("chmod", &["600", authkeys.to_str().expect("utf-8 path")]);
        std::fs::write(etc.join("haresources"), &config.haresources).expect("haresources");
        for (name, body) in &config.resource_scripts {
            let p = etc.join("resource.d").join(name);
            std::fs::write(&p, body).expect("write resource script");
            super::netns::sh("chmod", &["755", p.to_str().expect("utf-8 path")]);
        }
        // Offer extra plugins through a private copy of the plugin directory.
        let mut mounts = String::new();
        if !config.plugins.is_empty() {
            let hbcomm = dir.join("HBcomm");
            std::fs::create_dir_all(&hbcomm).expect("plugin dir");
            super::netns::sh(
                "cp",
                &[
                    "-a",
                    &format!("{HBCOMM_DIR}/."),
                    hbcomm.to_str().expect("utf-8"),
                ],
            );
            for (file, so) in &config.plugins {
                std::fs::copy(so, hbcomm.join(file)).expect("copy plugin");
            }
            mounts = format!("mount --bind {} {HBCOMM_DIR}\n", hbcomm.display());
        }
        let script = format!(
            "set -e\nhostname {name}\n\
             mount --bind {etc} /etc/ha.d\nmount --bind {varlib} /var/lib/heartbeat\n{mounts}\
             mount -t tmpfs tmpfs /run\n\
             mkdir -p /run/heartbeat/ccm /run/heartbeat/crm /run/heartbeat/dopd /run/crm\n\
             chown -R hacluster:haclient /run/heartbeat /run/crm\nchmod 750 /run/heartbeat\n\
             exec {DAEMON} -f\n",
            name = config.name,
            etc = etc.display(),
            varlib = varlib.display(),
        );
        let mut node = Self {
            name: config.name.to_lowercase(),
            dir: dir.to_path_buf(),
            ns_name: ns.name.clone(),
            child: None,
        };
        prepare(&node);
        let stdout = std::fs::File::create(log.join("stdout")).expect("stdout log");
        let stderr = stdout.try_clone().expect("clone log fd");
        let child = ns
            .command("unshare")
            .args([
                "--uts",
                "--mount",
                "--propagation",
                "private",
                "bash",
                "-c",
                &script,
            ])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start heartbeat");
        node.child = Some(child);
        node
    }

    /// The PID of a Heartbeat process of this node (the master if it is
    /// there), to enter its namespaces.
    fn any_pid(&self) -> Option<u32> {
        let pids = super::netns::pids_in(&self.ns_name);
        let title = |pid: u32| std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let heartbeat: Vec<u32> = pids
            .into_iter()
            .filter(|p| String::from_utf8_lossy(&title(*p)).starts_with("heartbeat"))
            .collect();
        heartbeat
            .iter()
            .copied()
            .find(|p| String::from_utf8_lossy(&title(*p)).contains("master"))
            .or_else(|| heartbeat.first().copied())
    }

    /// Run a command inside the node (its network, mount and UTS namespaces),
    /// bounded to 10 s (cl_status can hang when Heartbeat pauses clients).
    pub fn exec(&self, args: &[&str]) -> Option<String> {
        let pid = self.any_pid()?.to_string();
        let out = Command::new("timeout")
            .args(["10", "nsenter", "-t", &pid, "-n", "-m", "-u"])
            .args(args)
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// `cl_status nodestatus <node>` (`active`, `dead`, ...), if it answers.
    pub fn node_status(&self, node: &str) -> Option<String> {
        self.exec(&["cl_status", "nodestatus", node])
            .filter(|s| !s.is_empty())
    }

    /// Wait until `cl_status nodestatus <node>` says `want`; the time it took.
    pub fn wait_for_status(&self, node: &str, want: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        let mut last = None;
        while start.elapsed() < timeout {
            last = self.node_status(node);
            if last.as_deref() == Some(want) {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "{}: node {node} is {last:?}, not {want:?}, after {timeout:?}\n--- ha-log tail ---\n{}",
            self.name,
            self.log_tail(40)
        );
    }

    /// The node's log (`ha-log`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log/ha-log")).unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Wait until the log holds `needle` `count` times.
    pub fn wait_for_log(&self, needle: &str, count: usize, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.log().matches(needle).count() >= count {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{}: {needle:?} not logged {count} time(s) within {timeout:?}\n--- ha-log tail ---\n{}",
            self.name,
            self.log_tail(40)
        );
    }

    /// Crash the node: SIGKILL every process of it at once.
    pub fn kill(&mut self) {
        super::netns::kill_all_in(&self.ns_name);
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Compile the perfplus HBcomm plugin (`examples/heartbeat/plugin/perfplus.c`)
/// against Heartbeat's headers and the `libperfplus.so` cargo test built.
pub fn build_plugin() -> PathBuf {
    let out = super::scratch_dir("hbcomm-plugin").join("perfplus.so");
    let glib = Command::new("pkg-config")
        .args(["--cflags", "glib-2.0"])
        .output()
        .expect("pkg-config (apt-get install pkg-config libglib2.0-dev)");
    assert!(glib.status.success(), "pkg-config --cflags glib-2.0 failed");
    let glib = String::from_utf8_lossy(&glib.stdout).into_owned();
    let cc = Command::new("gcc")
        .args([
            "-std=gnu11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-g",
            "-O1",
            "-shared",
            "-fPIC",
        ])
        .args(glib.split_whitespace())
        .arg("-I/usr/include/heartbeat")
        .arg("-I")
        .arg(super::repo_root().join("include"))
        .arg(super::repo_root().join("examples/heartbeat/plugin/perfplus.c"))
        .arg("-o")
        .arg(&out)
        .args(super::c::shared_link_args())
        .output()
        .expect("run gcc");
    assert!(
        cc.status.success(),
        "building the HBcomm plugin failed:\n{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    out
}

/// Whether the plugin can be built here (Heartbeat's development headers).
pub fn plugin_unavailable() -> Option<String> {
    if let Some(why) = unavailable() {
        return Some(why);
    }
    for header in [
        "/usr/include/heartbeat/HBcomm.h",
        "/usr/include/pils/plugin.h",
        "/usr/include/heartbeat/ha_msg.h",
        "/usr/include/stonith/stonith.h",
    ] {
        if !Path::new(header).exists() {
            return Some(format!(
                "{header} is missing (apt-get install libheartbeat2-dev libpils2-dev cluster-glue-dev libglib2.0-dev)"
            ));
        }
    }
    if !super::have_program("pkg-config") || !super::have_program("gcc") {
        return Some("gcc and pkg-config are needed".into());
    }
    None
}
