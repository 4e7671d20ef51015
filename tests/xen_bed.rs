//! The Xen test bed (`tests/xen/run.sh`) as part of `cargo test`: a real
//! Xen 4.17 hypervisor booted under QEMU (TCG), a Debian dom0 running
//! perfplus's binaries, a PV and a PVH guest running a memory-writing
//! workload that measures its own downtime and checks its memory. Needs
//! root (QEMU, apt-get download, the hypervisor cache); elsewhere it is
//! skipped loudly, and under `CI=true` that is a failure.
//!
//! It asserts the bed's pass conditions, never its timings: log-dirty
//! counts match the guest's writes; pause, cap and state checks pass;
//! every migration (stock `xl migrate` and perfplus) ends with the guest
//! running at the destination with no corrupt page; three perfplus
//! migrations in a row per guest; destinations that fail leave the guest
//! running at the source. The side-by-side numbers (xl vs perfplus) are
//! printed by the bed itself.

mod support;

use std::process::Command;

use support::{is_root, repo_root, scratch_dir, skip};

#[test]
fn xen_bed_migrates_pv_and_pvh_guests_with_no_corruption() {
    const TEST: &str = "xen_bed_migrates_pv_and_pvh_guests_with_no_corruption";
    if !is_root() {
        skip(
            TEST,
            "the Xen test bed needs root (QEMU, apt-get download, /var/cache/perfplus-xen)",
        );
        return;
    }
    let json = scratch_dir("xen-bed").join("xen-bed.json");
    let status = Command::new(repo_root().join("tests/xen/run.sh"))
        .arg("--json")
        .arg(&json)
        .status()
        .expect("run tests/xen/run.sh");
    if status.code() == Some(2) {
        // run.sh's "missing tools" exit: it printed which ones.
        skip(
            TEST,
            "the bed's tools are missing (apt-get install qemu-system-x86 libxen-dev cpio)",
        );
        return;
    }
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "no report {} ({e}); run.sh exited with {status}",
            json.display()
        )
    });
    let report: serde_json::Value = serde_json::from_str(&text).expect("the report is JSON");
    let problems = report["problems"].as_array().cloned().unwrap_or_default();
    assert!(
        problems.is_empty(),
        "the bed reports problems: {problems:#?}"
    );
    for check in [
        "completed",
        "logdirty_ok",
        "control_ok",
        "abort_leaves_guest_running",
    ] {
        assert_eq!(report[check], true, "{check} is not true:\n{text}");
    }
    let migrations = report["migrations"].as_array().expect("migrations");
    for m in migrations {
        assert_eq!(m["ok"], true, "a migration failed: {m}");
        assert_eq!(
            m["corrupt_pages"], 0,
            "corrupt pages after a migration: {m}"
        );
    }
    for guest in ["pv", "pvh"] {
        let count = |tool: &str| {
            migrations
                .iter()
                .filter(|m| {
                    m["guest"] == guest
                        && m["tool"] == tool
                        && (tool == "xl" || m["mode"] == "transcoded")
                })
                .count()
        };
        assert!(
            count("perfplus") >= 3,
            "{guest}: fewer than three perfplus migrations:\n{text}"
        );
        assert!(
            count("xl") >= 1,
            "{guest}: no stock xl migration to compare with:\n{text}"
        );
    }
    assert!(status.success(), "run.sh exited with {status}");
}
