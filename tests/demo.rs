//! The main job as a test: the demo's cluster with small guests survives an
//! uplink cut and a host death with no acknowledged write lost, and every
//! guest ends on a healthy host. Real namespaces as root, loopback
//! otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] functions

mod support;

use std::process::Command;

#[test]
fn demo_cluster_loses_no_acknowledged_write_and_ends_on_healthy_hosts() {
    if let Err(e) = perfplus::backend::arena::check_support() {
        support::skip(
            "demo_cluster_loses_no_acknowledged_write_and_ends_on_healthy_hosts",
            &e.to_string(),
        );
        return;
    }
    let demo = support::example_binary("demo");
    let json = support::scratch_dir("demo").join("demo.json");
    let out = Command::new(&demo)
        .args(["--guest-mib", "16", "--guests-per-host", "2", "--json"])
        .arg(&json)
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the demo failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["writes_lost"], 0, "{report:#}");
    assert!(
        report["detection_ms"].is_number(),
        "host 2's death was detected: {report:#}"
    );
    let guests = report["guests"].as_array().unwrap();
    assert_eq!(guests.len(), 6);
    for g in guests {
        assert_eq!(g["writes_lost"], 0, "{g}");
        assert!(g["writes_acknowledged"].as_u64().unwrap() > 0, "{g}");
        let host = g["final_host"].as_str().unwrap();
        assert!(
            host != "h1" && host != "h2",
            "{} ends on {host}, which lost its uplink or died",
            g["name"]
        );
    }
    let moved: Vec<_> = report["migrations"].as_array().unwrap().iter().collect();
    assert!(
        moved.iter().filter(|m| m["from"] == "h1").count() >= 2,
        "host 1's guests were live-migrated: {moved:?}"
    );
}
