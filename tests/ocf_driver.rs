//! The OCF driver against real agents: `ocf:heartbeat:Dummy` from Debian's
//! resource-agents, and small agents written here to fail, misconfigure and
//! hang on purpose.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use perfplus::driver::ocf::{OcfDriver, DEFAULT_OCF_ROOT};
use perfplus::driver::{DriverError, DriverResource, PeerHost, ResourceDriver, ResourceStatus};

fn resource(name: &str, params: &[(&str, &str)]) -> DriverResource {
    DriverResource {
        name: name.into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        memory_mib: None,
    }
}

fn peer(name: &str) -> PeerHost {
    PeerHost {
        name: name.into(),
        migration_address: None,
    }
}

fn dummy_available(test: &str) -> bool {
    let ok = Path::new(DEFAULT_OCF_ROOT)
        .join("resource.d/heartbeat/Dummy")
        .is_file();
    if !ok {
        support::skip(
            test,
            "resource-agents is not installed (no ocf:heartbeat:Dummy)",
        );
    }
    ok
}

/// An OCF root holding one agent `ocf:test:<name>` with this shell body.
fn agent_root(test: &str, name: &str, body: &str) -> PathBuf {
    let root = support::scratch_dir(test);
    let dir = root.join("resource.d/test");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    root
}

#[test]
fn dummy_agent_starts_is_monitored_and_stops() {
    if !dummy_available("dummy_agent_starts_is_monitored_and_stops") {
        return;
    }
    let dir = support::scratch_dir("ocf-dummy-lifecycle");
    let state = dir.join("d1.state");
    let r = resource("d1", &[("state", state.to_str().unwrap())]);
    let mut driver = OcfDriver::new(
        DEFAULT_OCF_ROOT,
        "heartbeat",
        "Dummy",
        "p1",
        Duration::from_secs(20),
    );
    assert!(driver
        .meta_data()
        .unwrap()
        .contains("<resource-agent name=\"Dummy\""));
    assert_eq!(driver.monitor(&r).unwrap(), ResourceStatus::Stopped);
    driver.start(&r).unwrap();
    assert!(state.exists(), "Dummy keeps its state file while running");
    assert_eq!(driver.monitor(&r).unwrap(), ResourceStatus::Running);
    driver.start(&r).unwrap();
    driver.stop(&r).unwrap();
    assert_eq!(driver.monitor(&r).unwrap(), ResourceStatus::Stopped);
    driver.stop(&r).unwrap();
}

#[test]
fn dummy_agent_migrates_between_two_nodes() {
    if !dummy_available("dummy_agent_migrates_between_two_nodes") {
        return;
    }
    let dir = support::scratch_dir("ocf-dummy-migrate");
    // Two "hosts" on one machine: the same resource, each node its own state.
    let on_a = resource("vm1", &[("state", dir.join("a.state").to_str().unwrap())]);
    let on_b = resource("vm1", &[("state", dir.join("b.state").to_str().unwrap())]);
    let timeout = Duration::from_secs(20);
    let mut a = OcfDriver::new(DEFAULT_OCF_ROOT, "heartbeat", "Dummy", "pa", timeout);
    let mut b = OcfDriver::new(DEFAULT_OCF_ROOT, "heartbeat", "Dummy", "pb", timeout);
    a.start(&on_a).unwrap();
    b.prepare_migration_in(&on_b, &peer("pa")).unwrap();
    a.migrate_to(&on_a, &peer("pb")).unwrap();
    b.migrate_from(&on_b, &peer("pa")).unwrap();
    assert_eq!(a.monitor(&on_a).unwrap(), ResourceStatus::Stopped);
    assert_eq!(b.monitor(&on_b).unwrap(), ResourceStatus::Running);
    b.stop(&on_b).unwrap();
}

#[test]
fn agent_sees_its_parameters_and_the_migration_target() {
    let root = agent_root(
        "ocf-env",
        "Env",
        r#"env | grep -E '^OCF_(RESKEY|RESOURCE)' | sort > "$OCF_RESKEY_out"; exit 0"#,
    );
    let out = root.join("env.txt");
    let r = resource(
        "vm7",
        &[
            ("out", out.to_str().unwrap()),
            ("xmfile", "/etc/xen/vm7.cfg"),
        ],
    );
    let mut driver = OcfDriver::new(&root, "test", "Env", "node-a", Duration::from_secs(5));
    driver.migrate_to(&r, &peer("node-b")).unwrap();
    let env = std::fs::read_to_string(&out).unwrap();
    for line in [
        "OCF_RESKEY_xmfile=/etc/xen/vm7.cfg",
        "OCF_RESKEY_CRM_meta_migrate_source=node-a",
        "OCF_RESKEY_CRM_meta_migrate_target=node-b",
        "OCF_RESKEY_CRM_meta_on_node=node-a",
        "OCF_RESKEY_CRM_meta_timeout=5000",
        "OCF_RESOURCE_INSTANCE=vm7",
        "OCF_RESOURCE_TYPE=Env",
        "OCF_RESOURCE_PROVIDER=test",
    ] {
        assert!(env.lines().any(|l| l == line), "missing {line} in\n{env}");
    }
}

#[test]
fn failing_agent_reports_its_exit_reason() {
    let root = agent_root(
        "ocf-fail",
        "Fail",
        r#"echo "some noise" >&2; echo "${OCF_EXIT_REASON_PREFIX}disk /dev/drbd0 is not primary" >&2; exit 1"#,
    );
    let mut driver = OcfDriver::new(&root, "test", "Fail", "n1", Duration::from_secs(5));
    let err = driver.start(&resource("vm1", &[])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "start of vm1 failed (exit 1): disk /dev/drbd0 is not primary"
    );
}

#[test]
fn misconfigured_and_missing_agents_are_told_apart() {
    let root = agent_root(
        "ocf-conf",
        "Conf",
        r#"echo "xmfile is required" >&2; exit 6"#,
    );
    let mut driver = OcfDriver::new(&root, "test", "Conf", "n1", Duration::from_secs(5));
    let err = driver.monitor(&resource("vm1", &[])).unwrap_err();
    assert!(matches!(err, DriverError::Misconfigured { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "resource vm1 is misconfigured: xmfile is required"
    );

    let mut missing = OcfDriver::new(&root, "test", "Nope", "n1", Duration::from_secs(5));
    let err = missing.start(&resource("vm1", &[])).unwrap_err();
    assert!(matches!(err, DriverError::NotInstalled { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("resource.d/test/Nope does not exist"),
        "{err}"
    );
}

#[test]
fn hanging_agent_is_killed_with_its_children_at_the_timeout() {
    let root = agent_root(
        "ocf-hang",
        "Hang",
        r#"sleep 300 & echo $! > "$OCF_RESKEY_pidfile"; wait"#,
    );
    let pidfile = root.join("child.pid");
    let r = resource("vm1", &[("pidfile", pidfile.to_str().unwrap())]);
    let mut driver = OcfDriver::new(&root, "test", "Hang", "n1", Duration::from_millis(500));
    let err = driver.stop(&r).unwrap_err();
    assert!(matches!(err, DriverError::Timeout { .. }), "{err}");
    let child: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The agent's own child (sleep) was killed with the process group.
    let mut gone = false;
    for _ in 0..100 {
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        // Gone, or a zombie awaiting its (killed) parent's reaper.
        if stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z") {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(gone, "child {child} of the hung agent still runs");
}
