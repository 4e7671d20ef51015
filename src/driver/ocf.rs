//! The OCF driver: runs an OCF resource agent (resource-agents API 1.x)
//! with the `OCF_RESKEY_*` environment, as Pacemaker does, and maps its exit
//! codes. Every action runs with a timeout; an agent that overstays it is
//! killed with its whole process group.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{
    DriverError, DriverResource, MigrationSummary, PeerHost, ResourceDriver, ResourceStatus,
};

/// OCF exit codes (`ocf-returncodes`).
mod rc {
    pub const SUCCESS: i32 = 0;
    pub const ERR_ARGS: i32 = 2;
    pub const ERR_UNIMPLEMENTED: i32 = 3;
    pub const ERR_INSTALLED: i32 = 5;
    pub const ERR_CONFIGURED: i32 = 6;
    pub const NOT_RUNNING: i32 = 7;
}

/// Where OCF agents live unless told otherwise.
pub const DEFAULT_OCF_ROOT: &str = "/usr/lib/ocf";

/// How an agent's exit reason is marked on stderr.
const EXIT_REASON_PREFIX: &str = "ocf-exit-reason:";

/// Drives resources through one OCF agent, e.g. `ocf:heartbeat:Dummy`.
#[derive(Debug, Clone)]
pub struct OcfDriver {
    ocf_root: PathBuf,
    provider: String,
    agent: String,
    local_node: String,
    timeout: Duration,
    env: Vec<(String, String)>,
}

impl OcfDriver {
    /// A driver for `ocf:<provider>:<agent>` under `ocf_root`, on the node
    /// named `local_node`, giving each action `timeout`.
    pub fn new(
        ocf_root: impl Into<PathBuf>,
        provider: &str,
        agent: &str,
        local_node: &str,
        timeout: Duration,
    ) -> Self {
        Self {
            ocf_root: ocf_root.into(),
            provider: provider.into(),
            agent: agent.into(),
            local_node: local_node.into(),
            timeout,
            env: Vec::new(),
        }
    }

    /// Also set `key=value` in every agent's environment (e.g. `HA_RSCTMP`,
    /// the agents' state directory, which Pacemaker sets too).
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The agent's path.
    pub fn agent_path(&self) -> PathBuf {
        self.ocf_root
            .join("resource.d")
            .join(&self.provider)
            .join(&self.agent)
    }

    /// The agent's meta-data XML.
    pub fn meta_data(&self) -> Result<String, DriverError> {
        let resource = DriverResource {
            name: self.agent.clone(),
            params: Default::default(),
            memory_mib: None,
        };
        let run = self.run("meta-data", &resource, &[])?;
        match run.code {
            rc::SUCCESS => Ok(run.stdout),
            code => Err(self.failure("meta-data", &resource, code, &run)),
        }
    }

    /// Run `action`, with extra environment `meta` (as `OCF_RESKEY_CRM_meta_*`).
    fn run(
        &self,
        action: &str,
        resource: &DriverResource,
        meta: &[(&str, &str)],
    ) -> Result<AgentRun, DriverError> {
        let path = self.agent_path();
        if !path.is_file() {
            return Err(DriverError::NotInstalled {
                what: format!("OCF agent ocf:{}:{}", self.provider, self.agent),
                detail: format!("{} does not exist", path.display()),
            });
        }
        let mut command = Command::new(&path);
        command
            .arg(action)
            .env("OCF_ROOT", &self.ocf_root)
            .env("OCF_RA_VERSION_MAJOR", "1")
            .env("OCF_RA_VERSION_MINOR", "1")
            .env("OCF_RESOURCE_INSTANCE", &resource.name)
            .env("OCF_RESOURCE_PROVIDER", &self.provider)
            .env("OCF_RESOURCE_TYPE", &self.agent)
            .env("OCF_EXIT_REASON_PREFIX", EXIT_REASON_PREFIX)
            .env(
                "OCF_RESKEY_CRM_meta_timeout",
                self.timeout.as_millis().to_string(),
            )
            .env("OCF_RESKEY_CRM_meta_on_node", &self.local_node)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout kills its children too.
            .process_group(0);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        for (key, value) in &resource.params {
            command.env(format!("OCF_RESKEY_{key}"), value);
        }
        for (key, value) in meta {
            command.env(format!("OCF_RESKEY_CRM_meta_{key}"), value);
        }
        let child = command.spawn().map_err(|source| DriverError::Io {
            what: path.display().to_string(),
            source,
        })?;
        let (status, stdout, stderr) =
            wait_with_timeout(child, self.timeout).map_err(|e| match e {
                WaitError::Timeout => DriverError::Timeout {
                    action: action.into(),
                    resource: resource.name.clone(),
                    timeout: self.timeout,
                },
                WaitError::Io(source) => DriverError::Io {
                    what: path.display().to_string(),
                    source,
                },
            })?;
        Ok(AgentRun {
            // Killed by a signal: report it like a shell would (128 + n).
            code: status.code().unwrap_or(128),
            stdout,
            stderr,
        })
    }

    fn failure(
        &self,
        action: &str,
        resource: &DriverResource,
        code: i32,
        run: &AgentRun,
    ) -> DriverError {
        let reason = run.reason();
        match code {
            rc::ERR_INSTALLED => DriverError::NotInstalled {
                what: format!("what ocf:{}:{} needs", self.provider, self.agent),
                detail: reason,
            },
            rc::ERR_CONFIGURED | rc::ERR_ARGS => DriverError::Misconfigured {
                resource: resource.name.clone(),
                reason,
            },
            rc::ERR_UNIMPLEMENTED => DriverError::Unsupported(format!(
                "ocf:{}:{} does not implement {action}",
                self.provider, self.agent
            )),
            _ => DriverError::Failed {
                action: action.into(),
                resource: resource.name.clone(),
                exit_code: code,
                reason,
            },
        }
    }

    fn expect_success(
        &self,
        action: &str,
        resource: &DriverResource,
        meta: &[(&str, &str)],
    ) -> Result<(), DriverError> {
        let run = self.run(action, resource, meta)?;
        match run.code {
            rc::SUCCESS => Ok(()),
            code => Err(self.failure(action, resource, code, &run)),
        }
    }
}

impl ResourceDriver for OcfDriver {
    fn start(&mut self, resource: &DriverResource) -> Result<(), DriverError> {
        self.expect_success("start", resource, &[])
    }

    fn stop(&mut self, resource: &DriverResource) -> Result<(), DriverError> {
        self.expect_success("stop", resource, &[])
    }

    fn monitor(&mut self, resource: &DriverResource) -> Result<ResourceStatus, DriverError> {
        // A one-off check, as Pacemaker's probe (interval 0).
        let run = self.run("monitor", resource, &[("interval", "0")])?;
        match run.code {
            rc::SUCCESS => Ok(ResourceStatus::Running),
            rc::NOT_RUNNING => Ok(ResourceStatus::Stopped),
            code => Err(self.failure("monitor", resource, code, &run)),
        }
    }

    fn migrate_to(
        &mut self,
        resource: &DriverResource,
        target: &PeerHost,
    ) -> Result<MigrationSummary, DriverError> {
        let meta = [
            ("migrate_source", self.local_node.as_str()),
            ("migrate_target", target.name.as_str()),
        ];
        self.expect_success("migrate_to", resource, &meta)?;
        Ok(MigrationSummary::default())
    }

    fn migrate_from(
        &mut self,
        resource: &DriverResource,
        source: &PeerHost,
    ) -> Result<(), DriverError> {
        let meta = [
            ("migrate_source", source.name.as_str()),
            ("migrate_target", self.local_node.as_str()),
        ];
        self.expect_success("migrate_from", resource, &meta)
    }
}

/// What one agent invocation returned.
#[derive(Debug)]
struct AgentRun {
    code: i32,
    stdout: String,
    stderr: String,
}

impl AgentRun {
    /// The agent's `ocf-exit-reason:` line, else the last line of stderr.
    fn reason(&self) -> String {
        let reason = self
            .stderr
            .lines()
            .rev()
            .find_map(|l| l.split_once(EXIT_REASON_PREFIX).map(|(_, r)| r.trim()))
            .or_else(|| self.stderr.lines().rev().find(|l| !l.trim().is_empty()));
        reason.unwrap_or("(no reason given)").to_string()
    }
}

enum WaitError {
    Timeout,
    Io(std::io::Error),
}

/// Wait for `child` up to `timeout`, collecting its output; on timeout kill
/// its process group.
fn wait_with_timeout(
    mut child: Child,
    timeout: Duration,
) -> Result<(ExitStatus, String, String), WaitError> {
    let readers = [
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn Read + Send>),
    ]
    .map(|pipe| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                // A bounded read: agents print little; ignore the rest.
                let _ = pipe.by_ref().take(1 << 20).read_to_string(&mut text);
                let _ = std::io::copy(&mut pipe, &mut std::io::sink());
            }
            text
        })
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                kill_process_group(&child);
                let _ = child.wait();
                return Err(WaitError::Timeout);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(WaitError::Io(e)),
        }
    };
    let [stdout, stderr] = readers.map(|r| r.join().unwrap_or_default());
    Ok((status, stdout, stderr))
}

fn kill_process_group(child: &Child) {
    if let Ok(pgid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: killpg only sends a signal; the group was created for this
        // child (process_group(0)), so it holds only the agent and its children.
        unsafe { libc::killpg(pgid, libc::SIGKILL) };
    }
}

/// Whether `path` looks like an OCF root (has `resource.d`).
pub fn is_ocf_root(path: &Path) -> bool {
    path.join("resource.d").is_dir()
}
