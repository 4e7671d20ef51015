//! The main job: a small HA cluster on this machine that keeps its guests'
//! services running through an uplink failure and a host death, with
//! nobody at the console.
//!
//! ```sh
//! cargo run --release --example demo
//! cargo run --release --example demo -- [--hosts N] [--guests-per-host N]
//!     [--guest-mib N] [--json FILE] [--loopback] [--keep]
//! ```
//!
//! 1. Starts `--hosts` hosts (3), each a perfplus node (membership, the
//!    orchestrator, the arena driver, the control channel) in its own
//!    network namespace as root (loopback otherwise, see `lab.rs`), each
//!    running `--guests-per-host` (2) arena guests of `--guest-mib` (64) MiB
//!    serving a key-value store, each under client load. Guests keep their
//!    durable state on shared storage (a directory standing in for the SAN
//!    or DRBD volume): the service logs each write there before it
//!    acknowledges it.
//! 2. Cuts host 1's uplink: its ping node goes silent while the cluster link
//!    still works; perfplus live-migrates its guests with Perf+ to the
//!    healthiest hosts with room.
//! 3. Kills host 2 (SIGKILL to everything on it): perfplus declares it
//!    dead, fences it (the demo's fence agent powers it off) and restarts
//!    its guests elsewhere, where they recover every acknowledged write
//!    from shared storage.
//! 4. Reports detection times, each migration's downtime and bytes, the
//!    longest service gap each client saw, and acknowledged writes lost
//!    (must be 0); `--json FILE` writes the same (`detection_ms`, and per
//!    guest `service_gap_ms`, `writes_lost`, `final_host`).
//!
//! Internal subcommands (the demo re-runs itself): `host` (one host's node,
//! in its namespace), `guest` (an arena guest), `fence` (the fence agent).

mod lab;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use perfplus::backend::arena::workload::kv_client::{
    check_writes_in, Load, LoadConfig, LoadReport,
};
use perfplus::backend::arena::{check_support, enter_netns, guest_main, GuestCommand};
use perfplus::config::NodeConfig;
use perfplus::membership::NodeId;
use perfplus::runtime::ha::control::exchange;
use perfplus::runtime::ha::daemon::{self, DaemonOptions};
use perfplus::runtime::ha::ClusterStatus;
use perfplus::wire::control::Message;

use lab::Lab;

/// Keys each guest's store holds (and its clients use).
const KEYS: u64 = 4096;
/// How long to wait for the cluster to react to a fault.
const REACT_TIMEOUT: Duration = Duration::from_secs(90);

struct Options {
    hosts: usize,
    guests_per_host: usize,
    guest_mib: u64,
    json: Option<PathBuf>,
    loopback: bool,
    keep: bool,
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        hosts: 3,
        guests_per_host: 2,
        guest_mib: 64,
        json: None,
        loopback: false,
        keep: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match arg.as_str() {
            "--hosts" => o.hosts = usize::try_from(number("--hosts")?).map_err(|e| e.to_string())?,
            "--guests-per-host" => {
                o.guests_per_host =
                    usize::try_from(number("--guests-per-host")?).map_err(|e| e.to_string())?;
            }
            "--guest-mib" => o.guest_mib = number("--guest-mib")?,
            "--json" => o.json = Some(it.next().ok_or("--json needs a file")?.into()),
            "--loopback" => o.loopback = true,
            "--keep" => o.keep = true,
            "--help" | "-h" => {
                return Err("usage: demo [--hosts N] [--guests-per-host N] [--guest-mib N] [--json FILE] [--loopback] [--keep]".into())
            }
            other => return Err(format!("unknown option {other} (try --help)")),
        }
    }
    if !(3..=9).contains(&o.hosts) {
        return Err(
            "--hosts must be 3 to 9 (host 1 loses its uplink, host 2 dies, the rest take over)"
                .into(),
        );
    }
    if !(1..=8).contains(&o.guests_per_host) || !(4..=4096).contains(&o.guest_mib) {
        return Err("--guests-per-host must be 1 to 8 and --guest-mib 4 to 4096".into());
    }
    Ok(o)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let code = match argv.get(1).map(String::as_str) {
        Some("guest") => return ExitCode::from(u8::try_from(guest_main(&argv[2..])).unwrap_or(1)),
        Some("host") => run_host(&argv[2..]),
        Some("fence") => fence(&argv[2..]),
        _ => match parse_options(&argv[1..]).and_then(|o| run_demo(&o)) {
            Ok(ok) => {
                if ok {
                    0
                } else {
                    1
                }
            }
            Err(e) => {
                eprintln!("demo: {e}");
                2
            }
        },
    };
    ExitCode::from(code)
}

// ---- internal subcommands -------------------------------------------------

/// `demo host --config FILE [--service-interface IFACE]`: one host's node.
fn run_host(args: &[String]) -> u8 {
    let config = match args.get(1).map(PathBuf::from) {
        Some(path) if args.first().map(String::as_str) == Some("--config") => path,
        _ => {
            eprintln!("demo host: --config FILE");
            return 2;
        }
    };
    let service_interface = args
        .iter()
        .position(|a| a == "--service-interface")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let config = match NodeConfig::from_toml_file(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("demo host: {e}");
            return 2;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let _ = signal_hook::flag::register(signal, stop.clone());
    }
    let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("demo"));
    let options = DaemonOptions {
        guest_program: GuestCommand::new(program, &["guest"]),
        service_interface,
        policy: None,
        ocf_env: Vec::new(),
    };
    let log = Arc::new(|line: &str| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", daemon::stamp(line));
        let _ = out.flush();
    });
    match daemon::run(config, &options, &stop, log) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("demo host: {e}");
            1
        }
    }
}

/// `demo fence --workdir DIR`: the fence agent (a power switch): powers off
/// the host named by `PERFPLUS_FENCE_NODE_ID`, then confirms (exit 0).
fn fence(args: &[String]) -> u8 {
    let workdir = match args {
        [flag, dir] if flag == "--workdir" => PathBuf::from(dir),
        _ => return 2,
    };
    let Some(host) = std::env::var("PERFPLUS_FENCE_NODE_ID")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return 2;
    };
    // Record the fence, so the demo can show when it happened.
    let _ = std::fs::write(workdir.join(format!("fenced-{host}")), now_us().to_string());
    if std::fs::read_to_string(workdir.join("mode")).is_ok_and(|m| m.trim() == "netns") {
        lab::power_off(host);
    } else if let Ok(pgid) = std::fs::read_to_string(workdir.join(format!("host-{host}.pgid"))) {
        signal(&["-KILL", "--", &format!("-{}", pgid.trim())]);
    }
    0
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

// ---- the demo ---------------------------------------------------------------

/// A guest of the demo.
struct Guest {
    name: String,
    home: usize,
    service: SocketAddr,
}

/// What the hosts said, parsed from their log lines.
#[derive(Default)]
struct Seen {
    /// (time µs, host, line) of every event.
    lines: Vec<(u64, usize, String)>,
    /// Migrations done: guest → (from, to, downtime ms, bytes).
    migrations: Vec<(String, usize, usize, f64, u64)>,
    /// Starts done: guest → host.
    starts: Vec<(u64, String, usize)>,
    /// Every "dead" declaration of each host (µs).
    dead_at: BTreeMap<usize, Vec<u64>>,
    /// Every uplink-loss decision about each host (µs).
    uplink_decided_at: BTreeMap<usize, Vec<u64>>,
    /// Where each guest runs, as the hosts' actions say.
    placement: BTreeMap<String, usize>,
    /// The latest progress of each migration in flight.
    progress: BTreeMap<String, String>,
}

fn parse_line(seen: &mut Seen, host: usize, line: &str) {
    let Some((stamp, text)) = line.strip_prefix("t=").and_then(|l| l.split_once(' ')) else {
        return;
    };
    let Ok(t) = stamp.parse::<u64>() else { return };
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.as_slice() {
        ["ACTION_DONE", "migrate", guest, "from", "node", from, "to", "node", to, rest @ ..] => {
            let to = to.trim_end_matches(':');
            let (from, to) = (from.parse().unwrap_or(0), to.parse().unwrap_or(0));
            let downtime = rest
                .iter()
                .position(|w| *w == "downtime")
                .and_then(|i| rest.get(i + 1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(f64::NAN);
            let bytes = rest
                .iter()
                .position(|w| *w == "bytes")
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| rest.get(i))
                .and_then(|v| v.trim_end_matches(',').parse::<u64>().ok())
                .unwrap_or(0);
            seen.migrations
                .push(((*guest).into(), from, to, downtime, bytes));
            seen.placement.insert((*guest).into(), to);
            seen.progress.remove(*guest);
        }
        ["ACTION_FAILED", "migrate", guest, ..] => {
            seen.progress.remove(*guest);
        }
        ["PROGRESS", guest, "paused", ..] => {
            seen.progress
                .insert((*guest).into(), "paused: final pass".into());
        }
        ["PROGRESS", guest, "verified"] => {
            seen.progress
                .insert((*guest).into(), "verified: switching over".into());
        }
        ["PROGRESS", guest, fields @ ..] => {
            let field = |name: &str| {
                fields
                    .iter()
                    .find_map(|f| f.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
                    .unwrap_or("?")
            };
            seen.progress.insert(
                (*guest).into(),
                format!(
                    "migrating: round {}, {} dirty pages, predicted downtime {} ms",
                    field("round"),
                    field("dirty_pages"),
                    field("predicted_downtime_ms")
                ),
            );
        }
        ["ACTION_DONE", "start", guest, "on", "node", on] => {
            let on = on.parse().unwrap_or(0);
            seen.starts.push((t, (*guest).into(), on));
            seen.placement.insert((*guest).into(), on);
        }
        ["MEMBER_DEAD", node, ..] => {
            if let Some(n) = node.strip_prefix("node=").and_then(|n| n.parse().ok()) {
                seen.dead_at.entry(n).or_default().push(t);
            }
        }
        ["DECIDED", "migrate", _, "from", "node", from, ..] if text.contains("lost its uplink") => {
            if let Ok(n) = from.parse() {
                seen.uplink_decided_at.entry(n).or_default().push(t);
            }
        }
        _ => {}
    }
    if !text.starts_with("HEALTH") && !text.starts_with("PROGRESS") {
        seen.lines.push((t, host, text.to_string()));
    }
}

/// A running host process and the thread reading its log.
struct Host {
    child: Child,
}

fn run_demo(o: &Options) -> Result<bool, String> {
    check_support().map_err(|e| e.to_string())?;
    let mut lab = Lab::new(o.hosts, o.loopback)?;
    let workdir = std::env::temp_dir().join(format!("perfplus-demo-{}", std::process::id()));
    std::fs::create_dir_all(workdir.join("shared")).map_err(|e| e.to_string())?;
    std::fs::write(
        workdir.join("mode"),
        if lab.is_netns() { "netns" } else { "loopback" },
    )
    .map_err(|e| e.to_string())?;
    let result = run_in_lab(o, &mut lab, &workdir);
    lab.teardown();
    if !o.keep {
        let _ = std::fs::remove_dir_all(&workdir);
    } else {
        println!("work directory kept: {}", workdir.display());
    }
    result
}

fn write_configs(
    o: &Options,
    lab: &Lab,
    workdir: &Path,
    guests: &[Guest],
) -> Result<Vec<PathBuf>, String> {
    let mut secret = [0_u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut secret))
        .map_err(|e| format!("no randomness for the cluster key: {e}"))?;
    let key: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let capacity = o.guest_mib * u64::try_from(o.guests_per_host * 3).unwrap_or(6);
    let mut common = format!(
        "cluster = \"demo\"\nkey = \"{key}\"\ninitial_wait_ms = 3000\n\n[fencing]\nrequired = true\ncommand = [\"{}\", \"fence\", \"--workdir\", \"{}\"]\n\n[orchestrator]\nuplink_grace_ms = 1000\n",
        exe.display(),
        workdir.display()
    );
    for i in 1..=o.hosts {
        let (_, control, migration) = lab.ports(i);
        common.push_str(&format!(
            "\n[[nodes]]\nid = {i}\nname = \"h{i}\"\ncapacity_mib = {capacity}\ncontrol = \"{ip}:{control}\"\nmigration = \"{ip}:{migration}\"\n",
            ip = lab.cluster_ip(i)
        ));
    }
    for g in guests {
        common.push_str(&format!(
            "\n[[resources]]\nname = \"{}\"\nmemory_mib = {}\nhome = \"h{}\"\ndriver = \"arena\"\nparams = {{ workload = \"kv\", keys = {KEYS}, listen = \"{}\", wal = \"{}\" }}\n",
            g.name,
            o.guest_mib,
            g.home,
            g.service,
            workdir.join("shared").join(&g.name).display()
        ));
    }
    let mut paths = Vec::new();
    for i in 1..=o.hosts {
        let (port, _, _) = lab.ports(i);
        let peers: Vec<String> = (1..=o.hosts)
            .filter(|j| *j != i)
            .map(|j| format!("\"{}:{}\"", lab.cluster_ip(j), lab.ports(j).0))
            .collect();
        let (ping, method) = lab.ping(i);
        let text = format!(
            "node = \"h{i}\"\n{common}\n[[links]]\nkind = \"unicast\"\nbind = \"{}\"\nport = {port}\npeers = [{}]\n\n[ping]\nnodes = [\"{ping}\"]\nmethod = \"{method}\"\ninterval_ms = 100\ndead_ms = 500\n",
            lab.cluster_ip(i),
            peers.join(", ")
        );
        let path = workdir.join(format!("h{i}.toml"));
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        paths.push(path);
    }
    Ok(paths)
}

fn start_host(
    lab: &Lab,
    i: usize,
    config: &Path,
    workdir: &Path,
    seen: &Arc<Mutex<Seen>>,
) -> Result<Host, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut command = lab.host_command(i, &exe);
    command.arg("host").arg("--config").arg(config);
    if let Some(iface) = lab.service_interface() {
        command.args(["--service-interface", iface]);
    }
    use std::os::unix::process::CommandExt;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start host {i}: {e}"))?;
    let _ = std::fs::write(
        workdir.join(format!("host-{i}.pgid")),
        child.id().to_string(),
    );
    let log =
        std::fs::File::create(workdir.join(format!("h{i}.log"))).map_err(|e| e.to_string())?;
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let seen = seen.clone();
        let mut log = log.try_clone().map_err(|e| e.to_string())?;
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                parse_line(&mut seen.lock(), i, &line);
            }
        });
    }
    Ok(Host { child })
}

/// The cluster's state, asked of the first host that answers (from the
/// switch namespace when the hosts live in namespaces).
fn cluster_status(
    configs: &[PathBuf],
    skip: &[usize],
    netns: Option<&Path>,
) -> Option<ClusterStatus> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                if let Some(ns) = netns {
                    enter_netns(ns).ok()?;
                }
                cluster_status_here(configs, skip)
            })
            .join()
            .ok()
            .flatten()
    })
}

fn cluster_status_here(configs: &[PathBuf], skip: &[usize]) -> Option<ClusterStatus> {
    for (i, path) in configs.iter().enumerate() {
        if skip.contains(&(i + 1)) {
            continue;
        }
        let Ok(config) = NodeConfig::from_toml_file(path) else {
            continue;
        };
        let Some(address) = config.cluster.host(config.local).and_then(|h| h.control) else {
            continue;
        };
        let key = config.key.subkey("control");
        if let Ok(Message::Status { json }) =
            exchange(&key, address, NodeId(0), &Message::StatusRequest)
        {
            if let Ok(status) = ClusterStatus::from_json(&json) {
                if status.quorate {
                    return Some(status);
                }
            }
        }
    }
    None
}

/// Wait until `done(status)` holds, showing progress; `Err` on timeout.
fn wait_for(
    what: &str,
    configs: &[PathBuf],
    skip: &[usize],
    view: &View,
    done: impl Fn(&ClusterStatus) -> bool,
) -> Result<ClusterStatus, String> {
    let deadline = Instant::now() + REACT_TIMEOUT;
    loop {
        if let Some(status) = cluster_status(configs, skip, view.netns.as_deref()) {
            view.show(&status);
            if done(&status) {
                return Ok(status);
            }
        }
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The live terminal view (or plain lines when not on a terminal).
struct View {
    terminal: bool,
    /// Where status queries run from.
    netns: Option<PathBuf>,
    seen: Arc<Mutex<Seen>>,
    loads: Arc<Mutex<Vec<(String, Load)>>>,
    phase: Mutex<String>,
    start: Instant,
    shown: Mutex<usize>,
}

impl View {
    fn phase(&self, text: &str) {
        *self.phase.lock() = text.to_string();
        if !self.terminal {
            println!("[{:6.1}s] == {text}", self.start.elapsed().as_secs_f64());
        }
    }

    fn show(&self, status: &ClusterStatus) {
        let seen = self.seen.lock();
        if !self.terminal {
            // New events, as they come.
            let mut shown = self.shown.lock();
            for (_, host, line) in seen.lines.iter().skip(*shown) {
                if is_interesting(line) {
                    println!(
                        "[{:6.1}s] h{host}: {line}",
                        self.start.elapsed().as_secs_f64()
                    );
                }
            }
            *shown = seen.lines.len();
            return;
        }
        let mut out = String::from("\x1b[H\x1b[2J");
        out.push_str(&format!(
            "perfplus demo  {:5.1}s  {}\n\n",
            self.start.elapsed().as_secs_f64(),
            self.phase.lock()
        ));
        out.push_str("host  live  uplink  guests\n");
        for h in &status.hosts {
            let guests: Vec<&str> = status
                .resources
                .iter()
                .filter(|r| r.host == Some(h.id))
                .map(|r| r.name.as_str())
                .collect();
            out.push_str(&format!(
                "h{:<4} {:<5} {:<7} {}\n",
                h.id,
                if h.live { "up" } else { "DEAD" },
                if h.ping_reachable > 0 || h.ping_configured == 0 {
                    "ok"
                } else {
                    "CUT"
                },
                guests.join(" ")
            ));
        }
        out.push_str("\nguest  state       host   acked writes  ops\n");
        let loads = self.loads.lock();
        for r in &status.resources {
            let (acked, ops) = loads
                .iter()
                .find(|(n, _)| *n == r.name)
                .map_or((0, 0), |(_, l)| (l.writes_acknowledged(), l.completed()));
            let bar = progress_bar(&seen, &r.name);
            out.push_str(&format!(
                "{:<6} {:<11} {:<6} {:>12}  {:>8} {bar}\n",
                r.name,
                r.state,
                r.host
                    .map(|h| format!("h{h}"))
                    .unwrap_or_else(|| "-".into()),
                acked,
                ops
            ));
        }
        out.push_str("\nrecent events:\n");
        let recent: Vec<_> = seen
            .lines
            .iter()
            .filter(|(_, _, l)| is_interesting(l))
            .collect();
        for (_, host, line) in recent.iter().skip(recent.len().saturating_sub(8)) {
            out.push_str(&format!("  h{host}: {}\n", truncate(line, 110)));
        }
        print!("{out}");
        let _ = std::io::stdout().flush();
    }
}

fn truncate(text: &str, max: usize) -> &str {
    let mut cut = text.len().min(max);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

fn is_interesting(line: &str) -> bool {
    [
        "DECIDED",
        "ACTION_",
        "MEMBER_DEAD",
        "RECOVERY_ALLOWED",
        "FENCE",
        "COLD_START",
        "QUORUM_LOST",
        "AWAITING_RECOVERY",
        "MIGRATION_FAILED",
        "START_FAILED",
        "DEFERRED",
        "NO_ROOM",
        "LOCAL_PAUSE",
        "WARNING",
    ]
    .iter()
    .any(|k| line.starts_with(k))
}

/// What a migration in flight is doing, from the PROGRESS lines.
fn progress_bar(seen: &Seen, guest: &str) -> String {
    seen.progress
        .get(guest)
        .map(|p| format!("  [{p}]"))
        .unwrap_or_default()
}

fn run_in_lab(o: &Options, lab: &mut Lab, workdir: &Path) -> Result<bool, String> {
    let guests: Vec<Guest> = (1..=o.hosts)
        .flat_map(|h| (1..=o.guests_per_host).map(move |k| (h, k)))
        .enumerate()
        .map(|(n, (h, k))| Guest {
            name: format!("g{h}{k}"),
            home: h,
            service: lab.service(n + 1),
        })
        .collect();
    let configs = write_configs(o, lab, workdir, &guests)?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let view = View {
        terminal: std::io::stdout().is_terminal(),
        netns: lab.client_netns(),
        seen: seen.clone(),
        loads: Arc::new(Mutex::new(Vec::new())),
        phase: Mutex::new(String::new()),
        start: Instant::now(),
        shown: Mutex::new(0),
    };
    println!("perfplus demo: {}", lab.describe());
    println!(
        "{} guests of {} MiB (key-value stores, writes logged to shared storage {}), clients in {}",
        guests.len(),
        o.guest_mib,
        workdir.join("shared").display(),
        if lab.is_netns() {
            "the switch namespace (the outside)"
        } else {
            "this process"
        }
    );
    view.phase("starting the cluster");
    let mut hosts = Vec::new();
    for (i, path) in configs.iter().enumerate() {
        hosts.push(start_host(lab, i + 1, path, workdir, &seen)?);
    }
    let guard = HostsGuard(&mut hosts);
    let all_running = |s: &ClusterStatus| {
        s.resources.len() == guests.len()
            && s.resources
                .iter()
                .all(|r| r.state == "running" && r.confirmed)
    };
    wait_for("every guest to start", &configs, &[], &view, all_running)?;

    view.phase("clients running");
    for g in &guests {
        let mut config = LoadConfig::new(g.service, KEYS);
        config.connections = 2;
        config.rate_per_conn = 200;
        config.request_timeout = Duration::from_secs(1);
        config.netns = lab.client_netns();
        let load = Load::start(&config).map_err(|e| format!("client for {}: {e}", g.name))?;
        view.loads.lock().push((g.name.clone(), load));
    }
    let settle = |view: &View, seconds: u64| {
        let until = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < until {
            if let Some(status) = cluster_status(&configs, &[2], view.netns.as_deref()) {
                view.show(&status);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    settle(&view, 3);

    // Phase 1: host 1 loses its uplink.
    view.phase("host 1 lost its uplink: perfplus must live-migrate its guests away");
    let cut_at = now_us();
    lab.cut_uplink(1)?;
    let on_h1: Vec<&str> = guests
        .iter()
        .filter(|g| g.home == 1)
        .map(|g| g.name.as_str())
        .collect();
    let evacuated = |s: &ClusterStatus| {
        on_h1.iter().all(|name| {
            s.resources
                .iter()
                .any(|r| r.name == *name && r.state == "running" && r.host != Some(1))
        })
    };
    let status = wait_for("host 1's guests to move", &configs, &[], &view, evacuated)?;
    refresh_neighbours(lab, &guests, &status);
    settle(&view, 3);

    // Phase 2: host 2 dies.
    view.phase("host 2 died: perfplus must fence it and restart its guests elsewhere");
    let kill_at = now_us();
    kill_host(lab, 2, &mut guard.0[1]);
    let on_h2: Vec<&str> = guests
        .iter()
        .filter(|g| g.home == 2)
        .map(|g| g.name.as_str())
        .collect();
    let recovered = |s: &ClusterStatus| {
        on_h2.iter().all(|name| {
            s.resources.iter().any(|r| {
                r.name == *name && r.state == "running" && r.host != Some(2) && r.host.is_some()
            })
        })
    };
    let status = wait_for(
        "host 2's guests to restart",
        &configs,
        &[2],
        &view,
        recovered,
    )?;
    let recovered_at = now_us();
    refresh_neighbours(lab, &guests, &status);
    settle(&view, 4);

    // Stop the clients, check every acknowledged write.
    view.phase("checking every acknowledged write");
    let loads: Vec<(String, Load)> = std::mem::take(&mut *view.loads.lock());
    let reports: Vec<(String, LoadReport)> =
        loads.into_iter().map(|(n, l)| (n, l.stop())).collect();
    let mut results = Vec::new();
    for (name, report) in &reports {
        let g = guests
            .iter()
            .find(|g| &g.name == name)
            .ok_or("unknown guest")?;
        let check = check_writes_in(
            lab.client_netns().as_deref(),
            g.service,
            report,
            Duration::from_secs(20),
        )
        .map_err(|e| format!("checking {name}: {e}"))?;
        let final_host = status
            .resources
            .iter()
            .find(|r| &r.name == name)
            .and_then(|r| r.host)
            .map_or(0, usize::from);
        results.push((g, report, check, final_host));
    }
    drop(guard);

    // The report.
    let seen = seen.lock();
    // The first reaction after each fault (an earlier one would be a false
    // alarm, shown in the event log).
    let first_after = |times: Option<&Vec<u64>>, since: u64| {
        times
            .and_then(|ts| ts.iter().find(|t| **t >= since))
            .map(|t| (t - since) as f64 / 1000.0)
    };
    let uplink_ms = first_after(seen.uplink_decided_at.get(&1), cut_at);
    let death_ms = first_after(seen.dead_at.get(&2), kill_at);
    let restart_ms = recovered_at.saturating_sub(kill_at) as f64 / 1000.0;
    if view.terminal {
        print!("\x1b[H\x1b[2J");
    }
    println!("\n== perfplus demo: report ({})\n", lab.describe());
    println!(
        "uplink failure of h1: migration decided {} after the cut",
        uplink_ms.map_or("(not seen)".into(), |ms| format!("{ms:.0} ms"))
    );
    println!(
        "death of h2: declared dead {} after the kill; its guests ran again {restart_ms:.0} ms after it (fencing included)\n",
        death_ms.map_or("(not seen)".into(), |ms| format!("{ms:.0} ms"))
    );
    println!("migrations (live, Perf+):");
    println!("  guest  from  to    downtime ms      bytes");
    for (g, from, to, downtime, bytes) in &seen.migrations {
        println!("  {g:<6} h{from:<4} h{to:<4} {downtime:>11.1} {bytes:>10}");
    }
    println!("restarts after the death of h2:");
    for (_, g, on) in seen.starts.iter().filter(|(t, _, _)| *t >= kill_at) {
        println!("  {g} on h{on}");
    }
    println!("\nguest  home  final  service gap ms  writes acked  found      lost");
    let mut lost_total = 0;
    for (g, report, check, final_host) in &results {
        lost_total += check.writes_lost;
        println!(
            "{:<6} h{:<4} h{:<5} {:>14.0} {:>13} {:>6} {:>9}",
            g.name,
            g.home,
            final_host,
            report.service_gap_ms,
            report.writes_acknowledged,
            check.writes_found,
            check.writes_lost
        );
    }
    let healthy_final = results
        .iter()
        .all(|(_, _, _, h)| *h != 1 && *h != 2 && *h != 0);
    println!(
        "\nacknowledged writes lost: {lost_total}{}",
        if lost_total == 0 {
            " (none)"
        } else {
            "  <-- DATA LOST"
        }
    );
    println!(
        "every guest ends on a healthy host: {}",
        if healthy_final { "yes" } else { "NO" }
    );
    if let Some(path) = &o.json {
        let guests_json: Vec<serde_json::Value> = results
            .iter()
            .map(|(g, report, check, final_host)| {
                serde_json::json!({
                    "name": g.name,
                    "home_host": format!("h{}", g.home),
                    "final_host": format!("h{final_host}"),
                    "service_gap_ms": report.service_gap_ms,
                    "writes_acknowledged": report.writes_acknowledged,
                    "writes_found": check.writes_found,
                    "writes_lost": check.writes_lost,
                })
            })
            .collect();
        let migrations: Vec<serde_json::Value> = seen
            .migrations
            .iter()
            .map(|(g, from, to, downtime, bytes)| {
                serde_json::json!({"guest": g, "from": format!("h{from}"), "to": format!("h{to}"), "downtime_ms": downtime, "bytes": bytes})
            })
            .collect();
        let json = serde_json::json!({
            "mode": if lab.is_netns() { "netns" } else { "loopback" },
            "hosts": o.hosts,
            "detection_ms": death_ms,
            "uplink_detection_ms": uplink_ms,
            "recovery_ms": restart_ms,
            "writes_lost": lost_total,
            "guests": guests_json,
            "migrations": migrations,
        });
        std::fs::write(
            path,
            serde_json::to_string_pretty(&json).unwrap_or_default(),
        )
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("JSON written to {}", path.display());
    }
    Ok(lost_total == 0 && healthy_final)
}

/// Where arping is missing, point the switch at each guest's host.
fn refresh_neighbours(lab: &Lab, guests: &[Guest], status: &ClusterStatus) {
    for r in &status.resources {
        if let (Some(host), Some(g)) = (r.host, guests.iter().find(|g| g.name == r.name)) {
            lab.refresh_neighbour(g.service, usize::from(host));
        }
    }
}

/// Kill host `i` the hard way: everything that runs on it, at once.
fn kill_host(lab: &Lab, i: usize, host: &mut Host) {
    if lab.is_netns() {
        lab::kill_all_in(&lab::host_ns(i));
    } else {
        signal(&["-KILL", "--", &format!("-{}", host.child.id())]);
    }
    let _ = host.child.wait();
}

/// Stops the hosts (SIGTERM, then SIGKILL of their process groups) when
/// the demo ends, however it ends.
struct HostsGuard<'a>(&'a mut Vec<Host>);

impl Drop for HostsGuard<'_> {
    fn drop(&mut self) {
        for host in self.0.iter_mut() {
            signal(&["-TERM", &host.child.id().to_string()]);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for host in self.0.iter_mut() {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = host.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            signal(&["-KILL", "--", &format!("-{}", host.child.id())]);
            let _ = host.child.wait();
        }
    }
}

/// `kill ARGS`, quietly (the target may be gone already).
fn signal(args: &[&str]) {
    let _ = std::process::Command::new("kill")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
