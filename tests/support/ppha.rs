//! Real `perfplus node` processes for the HA tests (`tests/ha_*.rs`): the
//! `perfplus` command cargo builds as an example, run inside network
//! namespaces (all named `ppha-…`), their event lines collected, their
//! status read through `perfplus status --json`, as an admin would.
//! Every process is killed on drop, also when a test panics.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use perfplus::runtime::ha::ClusterStatus;

/// The `perfplus` command (examples/perfplus), current.
pub fn perfplus_binary() -> PathBuf {
    crate::support::example_binary("perfplus")
}

/// A running `perfplus node`, its stdout lines collected.
pub struct PerfplusNode {
    /// The namespace it runs in.
    pub ns: String,
    /// Its configuration file.
    pub config: PathBuf,
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl PerfplusNode {
    /// Start `perfplus node --config <config> [extra...]` in namespace `ns`
    /// (stderr goes to `<config>.stderr`).
    pub fn start(ns: &str, config: &Path, extra: &[&str]) -> Self {
        let stderr = std::fs::File::create(config.with_extension("stderr")).expect("stderr file");
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(perfplus_binary())
            .arg("node")
            .arg("--config")
            .arg(config)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start perfplus node");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        Self {
            ns: ns.into(),
            config: config.to_path_buf(),
            child: Some(child),
            lines,
        }
    }

    /// Its process id (the node itself: `ip netns exec` execs it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL it (a crash); its lines stay readable.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM it and wait for it to end (it stops what runs here first).
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every line it printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Its lines as one text (for failure messages), with its stderr.
    pub fn log(&self) -> String {
        let stderr =
            std::fs::read_to_string(self.config.with_extension("stderr")).unwrap_or_default();
        format!(
            "--- {} stdout ---\n{}\n--- stderr ---\n{stderr}",
            self.ns,
            self.lines().join("\n")
        )
    }

    /// How many of its lines (from line `skip` on) contain `needle`.
    pub fn count(&self, skip: usize, needle: &str) -> usize {
        self.lines()
            .iter()
            .skip(skip)
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Run `perfplus <args> --config <its config>` in its namespace.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.ns, &self.config, args)
    }

    /// The cluster as this node sees it (`perfplus status --json`), if it
    /// answers.
    pub fn status(&self) -> Option<ClusterStatus> {
        let out = self.cli(&["status", "--json"]);
        if !out.status.success() {
            return None;
        }
        ClusterStatus::from_json(String::from_utf8_lossy(&out.stdout).trim()).ok()
    }
}

impl Drop for PerfplusNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Run `perfplus <args> --config <config>` in namespace `ns`.
pub fn cli(ns: &str, config: &Path, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(perfplus_binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run perfplus")
}

/// Where each resource runs in `status` (running, confirmed), by name.
pub fn placements(status: &ClusterStatus) -> Vec<(String, Option<u16>)> {
    status
        .resources
        .iter()
        .map(|r| {
            let host = (r.state == "running" && r.confirmed)
                .then_some(r.host)
                .flatten();
            (r.name.clone(), host)
        })
        .collect()
}

/// Poll `check` every 200 ms until it returns `Some`, for at most
/// `timeout`; `None` if it never did.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `ocf:heartbeat:Dummy` resources whose state files are in `dir`
/// (its `HA_RSCTMP`), sorted.
pub fn dummy_states(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    Some(
                        name.strip_prefix("Dummy-")?
                            .strip_suffix(".state")?
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
