//! `hanode`: a cluster node daemon that logs membership and health events.
//!
//! ```sh
//! hanode --config /etc/perfplus/node.toml
//! hanode --ha-cf /etc/ha.d/ha.cf --authkeys /etc/ha.d/authkeys [--node NAME]
//!        [--state-dir DIR] [--protocol heartbeat|perfplus] [--stats-every-ms 1000]
//! ```
//!
//! With `--ha-cf`, the node joins the Heartbeat 3 cluster those files
//! describe, speaking Heartbeat's protocol on its media (Heartbeat nodes list
//! it as `active`), and keeps the UUID and generation they know it by in
//! `--state-dir` (default `/var/lib/perfplus/heartbeat`). `--protocol
//! perfplus` speaks perfplus heartbeats instead, for a cluster of perfplus
//! nodes only that keeps the Heartbeat files.
//!
//! One line per event on stdout, each with the wall-clock time in µs since
//! the UNIX epoch (so events of processes on one host can be compared):
//!
//! ```text
//! t=1764000000123456 MEMBER_UP node=2 incarnation=1764000000000 rejoined=false
//! t=1764000000523456 QUORUM quorate=true votes=2 expected=3 reason=Majority
//! ```
//!
//! The node leaves the cluster cleanly when stdin reaches end of file or
//! reads a line `stop` (a supervisor or a test closes the pipe); a final
//! `STATS` line then reports the bytes it sent.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use perfplus::config::heartbeat::{AuthKeys, HaCf};
use perfplus::config::{local_hostname, NodeConfig, Protocol};
use perfplus::runtime::{Node, NodeEvent};

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "t={} {text}", now_us());
    let _ = out.flush();
}

fn describe(event: &NodeEvent) -> String {
    match event {
        NodeEvent::Warning(w) => format!("WARNING {w}"),
        NodeEvent::Membership(e) => e.to_string(),
    }
}

struct Args {
    config: Option<PathBuf>,
    ha_cf: Option<PathBuf>,
    authkeys: Option<PathBuf>,
    node: Option<String>,
    state_dir: Option<PathBuf>,
    perfplus_protocol: bool,
    stats_every: Option<Duration>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        config: None,
        ha_cf: None,
        authkeys: None,
        node: None,
        state_dir: None,
        perfplus_protocol: false,
        stats_every: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--config" => args.config = Some(value()?.into()),
            "--ha-cf" => args.ha_cf = Some(value()?.into()),
            "--authkeys" => args.authkeys = Some(value()?.into()),
            "--node" => args.node = Some(value()?),
            "--state-dir" => args.state_dir = Some(value()?.into()),
            "--protocol" => {
                args.perfplus_protocol = match value()?.as_str() {
                    "heartbeat" => false,
                    "perfplus" => true,
                    other => return Err(format!("--protocol is heartbeat or perfplus, not `{other}`")),
                }
            }
            "--stats-every-ms" => {
                let ms: u64 = value()?.parse().map_err(|_| "--stats-every-ms needs a number")?;
                args.stats_every = Some(Duration::from_millis(ms));
            }
            "--help" | "-h" => {
                return Err("usage: hanode --config FILE | --ha-cf FILE --authkeys FILE [--node NAME] [--state-dir DIR] [--protocol heartbeat|perfplus] [--stats-every-ms N]".into())
            }
            other => return Err(format!("unknown argument `{other}` (see --help)")),
        }
    }
    Ok(args)
}

fn load(args: &Args) -> Result<NodeConfig, String> {
    match (&args.config, &args.ha_cf, &args.authkeys) {
        (Some(path), None, None) => NodeConfig::from_toml_file(path).map_err(|e| e.to_string()),
        (None, Some(cf), Some(keys)) => {
            let cf = HaCf::read(cf).map_err(|e| e.to_string())?;
            let keys = AuthKeys::read(keys).map_err(|e| e.to_string())?;
            let name = match &args.node {
                Some(n) => n.clone(),
                None => local_hostname().map_err(|e| e.to_string())?,
            };
            let mut config =
                NodeConfig::from_heartbeat(&cf, &keys, &name).map_err(|e| e.to_string())?;
            if args.perfplus_protocol {
                config.protocol = Protocol::Perfplus;
            } else if let (Protocol::Heartbeat3(hb), Some(dir)) =
                (&mut config.protocol, &args.state_dir)
            {
                hb.state_dir = dir.clone();
            }
            Ok(config)
        }
        _ => Err("give --config FILE, or --ha-cf FILE and --authkeys FILE".into()),
    }
}

fn stats(node: &Node) {
    let (bytes, packets) = node.sent();
    let wire = node.wire_stats();
    line(&format!(
        "STATS uptime_ms={} bytes_sent={bytes} packets_sent={packets} accepted={} dropped={} bad_auth={} replayed={}",
        node.uptime().as_millis(),
        wire.accepted,
        wire.dropped(),
        wire.bad_authentication,
        wire.replayed
    ));
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hanode: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let config = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hanode: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let name = config.local_name().unwrap_or("?").to_string();
    let mut node = match Node::start(config, |e: &NodeEvent| line(&describe(e))) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("hanode: cannot start: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    line(&format!(
        "STARTED node={} name={name} incarnation={}",
        node.local().0,
        node.incarnation().0
    ));
    // Stdin closes (or says "stop") → leave cleanly. Periodic stats on the
    // side, from a reader thread so the main thread can wait on stdin.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for l in stdin.lock().lines() {
            match l {
                Ok(l) if l.trim() == "stop" => break,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(());
    });
    let every = args.stats_every.unwrap_or(Duration::from_secs(3600));
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
        if args.stats_every.is_some() {
            stats(&node);
        }
    }
    stats(&node);
    node.stop();
    line("STOPPED");
    std::process::ExitCode::SUCCESS
}
