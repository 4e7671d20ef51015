//! `migrate`: live-migrate a running guest with Perf+, and watch it.
//!
//! ```text
//! migrate receive --listen ADDR [--on-start CMD] [--io-timeout-ms N]
//! migrate send --backend sim|arena --workload W --to ADDR --policy P
//!              [--downtime-target-ms N] [--json FILE] [options]
//! migrate demo [--workload W] [--policy P] [options]     both ends on this machine
//! ```
//!
//! - `receive` is a per-host service: one listener takes any number of
//!   incoming guests, each adopted into its own guest process that resumes
//!   serving from exactly the received state; it also answers the status
//!   queries of source keepers. `--on-start CMD` runs `sh -c CMD` before
//!   each adopted guest starts, with `PERFPLUS_SERVICE_ADDR`,
//!   `PERFPLUS_SERVICE_IP`, `PERFPLUS_SERVICE_PORT` and `PERFPLUS_WORKLOAD`
//!   set: the place to take over the service address.
//! - `send --backend arena` starts a guest (`kv`, `muncher`, `sparse`,
//!   `idle`) in its own process here, runs a client against the `kv`
//!   service (measuring the service gap and every acknowledged write),
//!   migrates the guest to `--to`, keeps the client going, then checks
//!   that every acknowledged write is in the service at its new home.
//!   `send --backend sim` migrates a simulated guest
//!   (`benches/workloads/W.toml`, at 1/`--scale`) over real TCP.
//! - `demo` runs a receiver in this process on loopback and sends to it:
//!   `cargo run --release --example migrate -- demo`.
//!
//! Progress goes to stderr (a progress bar on a terminal, plain lines
//! otherwise); the final report is a table on stdout and, with `--json`,
//! a JSON object.
//!
//! Options of `send` and `demo`: `--size-mib N` (256), `--service ADDR`
//! (the `kv` address, 127.0.0.1:7400 for `send`, a free port for `demo`),
//! `--rate N`, `--keys N`, `--fill-pct N`, `--wal DIR`, `--throttle`,
//! `--warmup-ms N` (2000), `--after-ms N` (1000), `--connections N` (4; 0:
//! no client), `--client-netns NAME` (run the client in `ip netns` NAME),
//! `--id ID`, `--io-timeout-ms N` (10000), `--scale N` (16, `sim` only).
//!
//! `--nice N` (all three; 0): the nice value the sending and receiving
//! threads take while a migration runs, so a guest that keeps every core
//! busy cannot starve the migration (-10 weighs like nine guest threads;
//! see `perfplus::backend::arena::RaisedPriority` for what it changes).
//! Raising it needs root or `CAP_SYS_NICE`; without, the tool says so and
//! migrates at the priority it has.

#![allow(clippy::cast_precision_loss)] // rates and sizes for display

use std::io::IsTerminal;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use perfplus::backend::arena::workload::kv_client::{
    check_writes_in, Load, LoadConfig, LoadReport,
};
use perfplus::backend::arena::workload::{GuestSpec, WorkloadKind};
use perfplus::backend::arena::{
    check_support, guest_main, may_raise_priority, send_domain, send_guest, Arrival, Fate,
    GuestCommand, GuestProcess, ReceiveConfig, ReceiveService, SendConfig, SendReport, TakeOver,
};
use perfplus::backend::sim::{SimDomain, VirtualClock, Workload};
use perfplus::backend::Domain;
use perfplus::migration::engine::{MigrationReport, Progress, ProgressFlow};
use perfplus::migration::policy::{by_name, PerfPlus, PrecopyPolicy, QemuDefault, POLICY_NAMES};
use perfplus::migration::Action;
use serde_json::json;

const USAGE: &str = "usage:
  migrate receive --listen ADDR [--on-start CMD] [--io-timeout-ms N]
  migrate send --backend sim|arena --workload W --to ADDR --policy P [--downtime-target-ms N] [--json FILE] [options]
  migrate demo [--workload W] [--policy P] [--downtime-target-ms N] [--json FILE] [options]
options: --size-mib N --service ADDR --rate N --keys N --fill-pct N --wal DIR --throttle
         --warmup-ms N --after-ms N --connections N --client-netns NAME --id ID
         --io-timeout-ms N --nice N --scale N (sim)
workloads: arena: kv muncher sparse idle; sim: a file name in benches/workloads (kv-zipf, web, ...)
policies: perfplus xen-default qemu-default stop-and-copy";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The guest program: this binary, run as `migrate guest ...` by
    // GuestProcess. It forks its keeper, so it must run before any thread.
    if args.first().is_some_and(|a| a == "guest") {
        let code = guest_main(&args[1..]);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let result = match args.first().map(String::as_str) {
        Some("receive") => Options::parse(&args[1..]).and_then(|o| receive(&o)),
        Some("send") => Options::parse(&args[1..]).and_then(|o| send(&o, None)),
        Some("demo") => Options::parse(&args[1..]).and_then(demo),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(true)
        }
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("migrate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Command-line options (every subcommand's; each uses its own).
#[derive(Debug, Clone)]
struct Options {
    listen: Option<SocketAddr>,
    on_start: Option<String>,
    backend: String,
    workload: String,
    to: Option<SocketAddr>,
    policy: String,
    downtime_target_ms: Option<f64>,
    throttle: bool,
    json: Option<PathBuf>,
    size_mib: u64,
    service: Option<SocketAddr>,
    rate: Option<u64>,
    keys: Option<u64>,
    fill_pct: Option<u8>,
    wal: Option<PathBuf>,
    warmup: Duration,
    after: Duration,
    connections: usize,
    client_netns: Option<PathBuf>,
    id: Option<String>,
    io_timeout: Duration,
    nice: i32,
    scale: u64,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut o = Self {
            listen: None,
            on_start: None,
            backend: "arena".into(),
            workload: "kv".into(),
            to: None,
            policy: "perfplus".into(),
            downtime_target_ms: None,
            throttle: false,
            json: None,
            size_mib: 256,
            service: None,
            rate: None,
            keys: None,
            fill_pct: None,
            wal: None,
            warmup: Duration::from_millis(2000),
            after: Duration::from_millis(1000),
            connections: 4,
            client_netns: None,
            id: None,
            io_timeout: Duration::from_secs(10),
            nice: 0,
            scale: 16,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
                v.parse()
                    .map_err(|_| format!("{flag} {v}: not a valid number"))
            }
            fn addr(flag: &str, v: &str) -> Result<SocketAddr, String> {
                v.parse()
                    .map_err(|_| format!("{flag} {v}: expected an address like 127.0.0.1:7100"))
            }
            let ms = |v: String| num::<u64>(flag, &v).map(Duration::from_millis);
            match flag.as_str() {
                "--listen" => o.listen = Some(addr(flag, &value()?)?),
                "--on-start" => o.on_start = Some(value()?),
                "--backend" => {
                    o.backend = value()?;
                    if !matches!(o.backend.as_str(), "sim" | "arena") {
                        return Err(format!("--backend {}: sim or arena", o.backend));
                    }
                }
                "--workload" => o.workload = value()?,
                "--to" => o.to = Some(addr(flag, &value()?)?),
                "--policy" => {
                    o.policy = value()?;
                    if !POLICY_NAMES.contains(&o.policy.as_str()) {
                        return Err(format!("--policy {}: one of {POLICY_NAMES:?}", o.policy));
                    }
                }
                "--downtime-target-ms" => {
                    let v: f64 = num(flag, &value()?)?;
                    if !(v.is_finite() && v > 0.0) {
                        return Err(format!("--downtime-target-ms {v}: must be > 0"));
                    }
                    o.downtime_target_ms = Some(v);
                }
                "--throttle" => o.throttle = true,
                "--json" => o.json = Some(value()?.into()),
                "--size-mib" => {
                    o.size_mib = num(flag, &value()?)?;
                    if !(1..=65536).contains(&o.size_mib) {
                        return Err("--size-mib: 1..=65536".into());
                    }
                }
                "--service" => o.service = Some(addr(flag, &value()?)?),
                "--rate" => o.rate = Some(num(flag, &value()?)?),
                "--keys" => o.keys = Some(num(flag, &value()?)?),
                "--fill-pct" => o.fill_pct = Some(num(flag, &value()?)?),
                "--wal" => o.wal = Some(value()?.into()),
                "--warmup-ms" => o.warmup = ms(value()?)?,
                "--after-ms" => o.after = ms(value()?)?,
                "--connections" => o.connections = num(flag, &value()?)?,
                "--client-netns" => {
                    let name = value()?;
                    o.client_netns = Some(if name.contains('/') {
                        name.into()
                    } else {
                        PathBuf::from("/run/netns").join(name)
                    });
                }
                "--id" => o.id = Some(value()?),
                "--io-timeout-ms" => o.io_timeout = ms(value()?)?.max(Duration::from_millis(100)),
                "--nice" => {
                    o.nice = num(flag, &value()?)?;
                    if !(-20..=0).contains(&o.nice) {
                        return Err(format!("--nice {}: -20..=0 (0: leave it)", o.nice));
                    }
                }
                "--scale" => o.scale = num::<u64>(flag, &value()?)?.max(1),
                other => return Err(format!("unknown option {other}\n{USAGE}")),
            }
        }
        Ok(o)
    }

    /// The migration threads' nice value (`None`: leave them).
    fn nice(&self) -> Option<i32> {
        (self.nice < 0).then_some(self.nice)
    }

    /// [`nice`](Self::nice), after saying whether it can be had.
    fn priority(&self) -> Option<i32> {
        self.nice()?;
        if may_raise_priority(self.nice) {
            eprintln!("migration threads run at nice {}", self.nice);
        } else {
            eprintln!(
                "cannot raise the migration threads to nice {} (needs root or CAP_SYS_NICE): \
                 they run at the guest's priority, and a busy guest slows the migration",
                self.nice
            );
        }
        Some(self.nice)
    }

    fn policy(&self) -> Box<dyn PrecopyPolicy + Send> {
        match self.policy.as_str() {
            "perfplus" => {
                let mut p = PerfPlus {
                    throttle: self.throttle,
                    ..PerfPlus::default()
                };
                if let Some(t) = self.downtime_target_ms {
                    p.downtime_target_ms = t;
                }
                Box::new(p)
            }
            "qemu-default" => {
                let mut p = QemuDefault::default();
                if let Some(t) = self.downtime_target_ms {
                    p.downtime_limit_ms = t;
                }
                Box::new(p)
            }
            other => by_name(other).unwrap_or_else(|| Box::new(PerfPlus::default())),
        }
    }

    fn guest_command() -> Result<GuestCommand, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        Ok(GuestCommand::new(exe, &["guest"]))
    }
}

// ---------------------------------------------------------------- receive

fn take_over_command(cmd: String) -> TakeOver {
    Arc::new(move |spec: &GuestSpec| {
        let mut c = std::process::Command::new("sh");
        c.args(["-c", &cmd])
            .env("PERFPLUS_WORKLOAD", spec.workload.name());
        if let Some(addr) = spec.listen {
            c.env("PERFPLUS_SERVICE_ADDR", addr.to_string())
                .env("PERFPLUS_SERVICE_IP", addr.ip().to_string())
                .env("PERFPLUS_SERVICE_PORT", addr.port().to_string());
        }
        let status = c.status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "--on-start command {status}"
            )))
        }
    })
}

fn receive(o: &Options) -> Result<bool, String> {
    check_support().map_err(|e| e.to_string())?;
    let listen = o.listen.ok_or("receive needs --listen ADDR")?;
    let mut config = ReceiveConfig::new(Options::guest_command()?);
    config.io_timeout = o.io_timeout;
    config.nice = o.priority();
    config.take_over = o.on_start.clone().map(take_over_command);
    let service = ReceiveService::bind(listen, config)
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = service.local_addr().map_err(|e| e.to_string())?;
    // A line tools and tests can wait for.
    println!("listening {addr}");
    let (_handle, arrivals) = service.spawn().map_err(|e| e.to_string())?;
    // Adopted guests stay ours while we run; when this process ends they
    // serve on (their keepers see our end of the pipe close).
    let mut guests: Vec<Box<GuestProcess>> = Vec::new();
    for arrival in arrivals {
        println!("{arrival}");
        if let Arrival::Adopted { guest, .. } = arrival {
            guests.retain_mut(|g| !g.has_exited());
            guests.push(guest);
        }
    }
    Ok(true)
}

// ---------------------------------------------------------------- send

/// What one `send` measured, for the table and the JSON.
#[derive(Debug, Default)]
struct Outcome {
    migration: Option<MigrationReport>,
    sender_cpu_s: f64,
    tracking_bytes_per_page: Option<f64>,
    load: Option<LoadReport>,
    writes_found: Option<u64>,
    writes_lost: Option<u64>,
    writes_phantom: Option<u64>,
    error: Option<String>,
    fate: Option<&'static str>,
}

/// The terminal side of progress: a bar on a TTY, lines otherwise.
struct Display {
    bar: Option<ProgressBar>,
    pages: u64,
    page_size: usize,
}

impl Display {
    fn new(pages: u64, page_size: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(pages);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {percent:>3}% {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Self {
            bar,
            pages,
            page_size,
        }
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn observe(&mut self, p: &Progress) {
        match p {
            Progress::Decided { stats, decision } => {
                let what = match decision.action {
                    Action::Continue => "continue",
                    Action::StopAndCopy => "stop and copy",
                    Action::Abort => "abort",
                };
                let cap = decision
                    .cpu_cap
                    .map_or_else(String::new, |c| format!(", guest capped at {}%", c.get()));
                let predicted = if stats.predicted_downtime_ms.is_finite() {
                    format!("{:.1} ms", stats.predicted_downtime_ms)
                } else {
                    "-".into()
                };
                let text = format!(
                    "round {:>2} ({:>6.1} ms): {:>8} dirty pages, {:>8} deferred, dirty rate {:>9.0} pages/s, link {:>7.1} MB/s, predicted downtime {predicted} -> {what} ({}{cap})",
                    stats.iteration,
                    stats.last_round_ms,
                    if stats.iteration == 0 { self.pages } else { stats.dirty_pages },
                    stats.deferred_pages,
                    stats.dirty_rate_pages_per_s,
                    stats.bandwidth_bytes_per_s / 1e6,
                    decision.reason,
                );
                self.line(&text);
                if let Some(bar) = &self.bar {
                    bar.set_message(format!(
                        "round {} | {} dirty | {:.0} MB/s | predicted downtime {predicted}",
                        stats.iteration,
                        stats.dirty_pages,
                        stats.bandwidth_bytes_per_s / 1e6
                    ));
                }
            }
            Progress::Sent {
                round_pages_sent,
                round_pages,
                ..
            } => {
                if let Some(bar) = &self.bar {
                    bar.set_length((*round_pages).max(1));
                    bar.set_position(*round_pages_sent);
                }
            }
            Progress::Paused {
                final_pages,
                elapsed_ms,
            } => self.line(&format!(
                "paused at {elapsed_ms:.0} ms: final pass of {final_pages} pages ({:.1} MiB)",
                (*final_pages * self.page_size as u64) as f64 / f64::from(1 << 20)
            )),
            Progress::Verified { elapsed_ms } => {
                self.line(&format!("verified by the receiver at {elapsed_ms:.0} ms"));
            }
            Progress::Resumed {
                downtime_ms,
                elapsed_ms,
            } => {
                self.line(&format!(
                    "resumed at the receiver at {elapsed_ms:.0} ms: downtime {downtime_ms:.1} ms"
                ));
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn free_local_port() -> Result<SocketAddr, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))
}

fn arena_spec(o: &Options) -> Result<GuestSpec, String> {
    let kind = WorkloadKind::from_name(&o.workload).ok_or_else(|| {
        format!(
            "--workload {}: one of kv, muncher, sparse, idle",
            o.workload
        )
    })?;
    let pages = o.size_mib * (1 << 20) / 4096;
    let mut spec = GuestSpec::new(kind, pages);
    if let Some(r) = o.rate {
        spec.rate_per_s = r;
    }
    if let Some(k) = o.keys {
        spec.keys = k;
    }
    if let Some(f) = o.fill_pct {
        spec.fill_pct = f.min(100);
    }
    spec.wal_dir.clone_from(&o.wal);
    if kind == WorkloadKind::Kv {
        spec.listen = Some(match o.service {
            Some(a) => a,
            None => "127.0.0.1:7400"
                .parse()
                .map_err(|_| "bad default address")?,
        });
    }
    spec.validate().map_err(|e| e.to_string())?;
    Ok(spec)
}

/// `send`; `demo` passes the channel its in-process receiver reports to.
fn send(o: &Options, arrivals: Option<&mpsc::Receiver<Arrival>>) -> Result<bool, String> {
    let to = o.to.ok_or("send needs --to ADDR")?;
    let id =
        o.id.clone()
            .unwrap_or_else(|| SendConfig::unique_id("migrate"));
    let mut config = SendConfig::new(id.clone());
    config.io_timeout = o.io_timeout;
    config.nice = o.priority();
    let policy = o.policy();
    let (outcome, title) = if o.backend == "sim" {
        send_sim(o, to, policy.as_ref(), &config)?
    } else {
        send_arena(o, to, policy.as_ref(), &config, arrivals)?
    };
    report(o, &id, &title, &outcome)?;
    Ok(outcome.error.is_none() && outcome.writes_lost.unwrap_or(0) == 0)
}

fn send_arena(
    o: &Options,
    to: SocketAddr,
    policy: &dyn PrecopyPolicy,
    config: &SendConfig,
    arrivals: Option<&mpsc::Receiver<Arrival>>,
) -> Result<(Outcome, String), String> {
    check_support().map_err(|e| e.to_string())?;
    let spec = arena_spec(o)?;
    let title = format!(
        "{} guest of {} MiB, {} to {to}",
        spec.workload,
        o.size_mib,
        policy.name()
    );
    eprintln!(
        "starting a {} guest of {} MiB ...",
        spec.workload, o.size_mib
    );
    let guest = GuestProcess::spawn(&Options::guest_command()?, &spec)
        .map_err(|e| format!("cannot start the guest: {e}"))?;
    let service = guest.listen();
    let load = match (service, o.connections) {
        (Some(addr), n) if n > 0 => {
            let mut lc = LoadConfig::new(addr, spec.keys);
            lc.connections = n;
            lc.netns.clone_from(&o.client_netns);
            let load = Load::start(&lc).map_err(|e| format!("cannot start the client: {e}"))?;
            eprintln!("client: {n} connections to the kv service at {addr}");
            Some(load)
        }
        _ => None,
    };
    std::thread::sleep(o.warmup);
    let mut display = Display::new(spec.pages, 4096);
    let mut observer = |p: &Progress| {
        display.observe(p);
        ProgressFlow::Continue
    };
    let result = send_guest(guest, to, policy, config, &mut observer);
    display.finish();
    let mut outcome = Outcome::default();
    let mut guest_here = None;
    match result {
        Ok(SendReport {
            migration,
            sender_cpu_s,
            tracking_bytes_per_page,
        }) => {
            outcome.migration = Some(migration);
            outcome.sender_cpu_s = sender_cpu_s;
            outcome.tracking_bytes_per_page = Some(tracking_bytes_per_page);
            outcome.fate = Some("moved");
        }
        Err(failure) => {
            eprintln!("migration failed: {}", failure.error);
            outcome.error = Some(failure.error.to_string());
            outcome.fate = Some(match failure.fate {
                Fate::RunsHere(g) => {
                    guest_here = Some(g);
                    "runs at the source"
                }
                Fate::Moved => "moved (hand-over confirmed by a status query)",
                Fate::LeftToKeeper => "undecided: stopped at the source, left to its keeper",
                Fate::Lost => "lost",
            });
        }
    }
    // In the demo, the adopted guest arrives here.
    let adopted = arrivals.and_then(|rx| match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Arrival::Adopted { guest, .. }) => Some(guest),
        Ok(Arrival::Failed { reason, .. }) => {
            eprintln!("receiver: {reason}");
            None
        }
        _ => None,
    });
    if let Some(load) = load {
        std::thread::sleep(o.after);
        let report = load.stop();
        if let Some(addr) = service {
            match check_writes_in(
                o.client_netns.as_deref(),
                addr,
                &report,
                Duration::from_secs(10),
            ) {
                Ok(check) => {
                    outcome.writes_found = Some(check.writes_found);
                    outcome.writes_lost = Some(check.writes_lost);
                    outcome.writes_phantom = Some(check.writes_phantom);
                }
                Err(e) => eprintln!("cannot check the writes at {addr}: {e}"),
            }
        }
        outcome.load = Some(report);
    }
    if let Some(mut g) = adopted {
        match g.verify() {
            Ok(summary) => eprintln!("the adopted guest checks out: {summary}"),
            Err(e) => {
                eprintln!("the adopted guest is damaged: {e}");
                outcome
                    .error
                    .get_or_insert_with(|| format!("adopted guest: {e}"));
            }
        }
    }
    if let Some(mut g) = guest_here {
        let _ = g.kill();
        eprintln!("(the guest ran on at the source; this tool started it, so it ends it now)");
    }
    Ok((outcome, title))
}

fn send_sim(
    o: &Options,
    to: SocketAddr,
    policy: &dyn PrecopyPolicy,
    config: &SendConfig,
) -> Result<(Outcome, String), String> {
    let path = if o.workload.contains('/') || o.workload.ends_with(".toml") {
        PathBuf::from(&o.workload)
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("benches/workloads")
            .join(format!("{}.toml", o.workload))
    };
    let workload = Workload::load(&path)
        .map_err(|e| e.to_string())?
        .scaled_down(o.scale);
    let clock = VirtualClock::new();
    let mut source = SimDomain::new(&workload, 1, clock.clone());
    let title = format!(
        "sim {} ({} MiB at 1/{}), {} to {to}",
        workload.name,
        workload.memory_mib,
        o.scale,
        policy.name()
    );
    // The simulated guest runs on virtual time: let it follow the real clock.
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = {
        let stop = Arc::clone(&stop);
        let clock = clock.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                clock.advance_to(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    std::thread::sleep(o.warmup);
    let mut display = Display::new(source.page_count(), source.page_size());
    let mut observer = |p: &Progress| {
        display.observe(p);
        ProgressFlow::Continue
    };
    let result = send_domain(&mut source, "sim", to, policy, config, &mut observer);
    display.finish();
    stop.store(true, Ordering::Relaxed);
    let _ = ticker.join();
    let mut outcome = Outcome::default();
    match result {
        Ok((migration, cpu)) => {
            outcome.migration = Some(migration);
            outcome.sender_cpu_s = cpu;
            outcome.fate = Some("moved");
        }
        Err(e) => {
            outcome.error = Some(e.to_string());
            outcome.fate = Some(if source.is_paused() {
                "lost"
            } else {
                "runs at the source"
            });
        }
    }
    Ok((outcome, title))
}

fn report(o: &Options, id: &str, title: &str, out: &Outcome) -> Result<(), String> {
    let m = out.migration.as_ref();
    let fmt_opt =
        |v: Option<f64>, unit: &str| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} {unit}"));
    let count = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let throughput = m.map(|m| m.bytes_on_wire as f64 / (m.total_ms / 1e3).max(1e-9));
    println!("\nmigration {id}: {title}");
    let rows: Vec<(&str, String)> = vec![
        ("result", out.fate.unwrap_or("-").to_owned()),
        ("downtime", fmt_opt(m.map(|m| m.downtime_ms), "ms")),
        (
            "service gap seen by the client",
            fmt_opt(out.load.as_ref().map(|l| l.service_gap_ms), "ms"),
        ),
        ("total time", fmt_opt(m.map(|m| m.total_ms), "ms")),
        (
            "bytes on the wire",
            m.map_or_else(
                || "-".into(),
                |m| {
                    format!(
                        "{} ({:.1} MiB)",
                        m.bytes_on_wire,
                        m.bytes_on_wire as f64 / f64::from(1 << 20)
                    )
                },
            ),
        ),
        ("throughput", fmt_opt(throughput.map(|t| t / 1e6), "MB/s")),
        ("rounds", count(m.map(|m| u64::from(m.rounds)))),
        (
            "pages raw / zero / delta",
            m.map_or_else(
                || "-".into(),
                |m| {
                    format!(
                        "{} / {} / {}",
                        m.sent.raw_pages, m.sent.zero_pages, m.sent.delta_pages
                    )
                },
            ),
        ),
        ("pages in the final pass", count(m.map(|m| m.final_pages))),
        (
            "downtime by stage",
            m.and_then(|m| m.switchover)
                .map_or_else(|| "-".into(), |s| s.to_string()),
        ),
        ("stop reason", m.map_or("-", |m| m.stop_reason).to_owned()),
        ("sender CPU", format!("{:.2} s", out.sender_cpu_s)),
        (
            "writes acknowledged to the client",
            count(out.load.as_ref().map(|l| l.writes_acknowledged)),
        ),
        ("writes found after the move", count(out.writes_found)),
        ("acknowledged writes lost", count(out.writes_lost)),
    ];
    for (k, v) in &rows {
        println!("  {k:<36} {v}");
    }
    if let Some(e) = &out.error {
        println!("  {:<36} {e}", "error");
    }
    if let Some(path) = &o.json {
        let doc = json!({
            "id": id,
            "backend": o.backend,
            "workload": o.workload,
            "policy": m.map_or(o.policy.as_str(), |m| m.policy),
            "result": out.fate,
            "error": out.error,
            "downtime_ms": m.map(|m| m.downtime_ms),
            "service_gap_ms": out.load.as_ref().map(|l| l.service_gap_ms),
            "total_ms": m.map(|m| m.total_ms),
            "bytes_on_wire": m.map(|m| m.bytes_on_wire),
            "throughput_bytes_per_s": throughput,
            "rounds": m.map(|m| m.rounds),
            "raw_pages": m.map(|m| m.sent.raw_pages),
            "zero_pages": m.map(|m| m.sent.zero_pages),
            "delta_pages": m.map(|m| m.sent.delta_pages),
            "pages_sent": m.map(|m| m.sent.pages()),
            "final_pages": m.map(|m| m.final_pages),
            "switchover": m.and_then(|m| m.switchover).map(|s| {
                s.stages()
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), json!(v)))
                    .collect::<serde_json::Map<_, _>>()
            }),
            "deferred_pages": m.map(|m| m.deferred_pages),
            "stop_reason": m.map(|m| m.stop_reason),
            "verified": m.is_some_and(|m| m.verified),
            "sender_cpu_s": out.sender_cpu_s,
            "tracking_bytes_per_page": out.tracking_bytes_per_page,
            "writes_acknowledged": out.load.as_ref().map(|l| l.writes_acknowledged),
            "writes_unknown": out.load.as_ref().map(|l| l.writes_unknown),
            "writes_found": out.writes_found,
            "writes_lost": out.writes_lost,
            "writes_phantom": out.writes_phantom,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap_or_default())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("  JSON written to {}", path.display());
    }
    Ok(())
}

// ---------------------------------------------------------------- demo

fn demo(mut o: Options) -> Result<bool, String> {
    check_support().map_err(|e| e.to_string())?;
    let mut config = ReceiveConfig::new(Options::guest_command()?);
    config.io_timeout = o.io_timeout;
    config.nice = o.nice(); // send says whether it can be had
    let service = ReceiveService::bind("127.0.0.1:0".parse().map_err(|_| "bad address")?, config)
        .map_err(|e| format!("cannot start the receiver: {e}"))?;
    let (handle, arrivals) = service.spawn().map_err(|e| e.to_string())?;
    eprintln!("receiver listening on {}", handle.addr());
    o.to = Some(handle.addr());
    if o.backend == "arena" && o.workload == "kv" && o.service.is_none() {
        o.service = Some(free_local_port()?);
    }
    let ok = send(&o, Some(&arrivals))?;
    drop(handle);
    Ok(ok)
}
