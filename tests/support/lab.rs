//! What the namespace labs (`ppmem_netns`, `ppmig_netns`) share: running a
//! command with its error as a value, and saying why a lab cannot run here.
//! Free of other support modules, so `ppmig_netns` (also included by path
//! from `benches/arena.rs`) can include it by path too.

use std::process::Command;

/// Run a command, failing with its stderr.
pub fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why a lab needing root and `tools` cannot run here, if it cannot;
/// `packages` names what provides them.
pub fn unavailable(tools: &[&str], packages: &str) -> Option<String> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        return Some("needs root to create network namespaces".into());
    }
    for tool in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("`{tool}` is missing (apt-get install {packages})"));
        }
    }
    None
}
