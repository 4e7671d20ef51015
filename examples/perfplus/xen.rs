//! `perfplus migrate --backend xen` and `perfplus migrate-receive`.
//!
//! `migrate` prints one progress line per decision on standard error, a
//! summary, and with `--json FILE` a report whose fields match the policy
//! benchmark's (`downtime_ms`, `total_ms`, `bytes_on_wire`, `pages_sent`,
//! `rounds`, `verified`). Exit status: 0 migrated; 1 failed with the guest
//! running at the source; 2 usage; 3 failed in the hand-over, both copies
//! may exist.
//!
//! Both entry points take the arguments after the subcommand's name and
//! return the exit status, so any `perfplus` dispatcher can call them.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use perfplus::backend::xen::{
    migrate_domain, receive, ReceiveOptions, XenHost, XenMigrationOptions, XenMigrationReport,
};
use perfplus::migration::policy::{by_name, PerfPlus, POLICY_NAMES};
use perfplus::migration::{Action, MigrationError, PrecopyPolicy, Progress, ProgressFlow};
use serde_json::{json, Value};

const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_UNDEFINED: u8 = 3;

fn usage_error(command: &str, usage: &str, message: &str) -> ExitCode {
    eprintln!("perfplus {command}: {message}");
    eprintln!("usage: {usage}");
    ExitCode::from(EXIT_USAGE)
}

/// Takes `--flag VALUE` pairs and bare `--switch`es off a command line.
struct Flags<'a> {
    args: std::slice::Iter<'a, String>,
}

impl<'a> Flags<'a> {
    fn new(args: &'a [String]) -> Self {
        Self { args: args.iter() }
    }

    fn next_flag(&mut self) -> Option<&'a str> {
        self.args.next().map(String::as_str)
    }

    fn value(&mut self, flag: &str) -> Result<&'a str, String> {
        self.args
            .next()
            .map(String::as_str)
            .ok_or_else(|| format!("{flag} needs a value"))
    }

    fn number<T: std::str::FromStr>(&mut self, flag: &str) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        let v = self.value(flag)?;
        v.parse().map_err(|e| format!("{flag} {v:?}: {e}"))
    }
}

// ---- migrate ----

pub const MIGRATE_USAGE: &str = "\
perfplus migrate --backend xen --domain NAME|ID --to DEST [options]
  --ssh-command CMD      transport (default ssh): runs `CMD DEST RECEIVER`;
                         with '' DEST itself is the transport command (xl's -s '')
  --receiver CMD         run at DEST (default `perfplus migrate-receive`, or
                         `xl migrate-receive` with --stock-receiver)
  --stock-receiver       DEST runs the stock xl migrate-receive: the plain stream
  --policy NAME          perfplus (default), xen-default, qemu-default, stop-and-copy
  --downtime-target-ms N Perf+'s downtime target (default 100): above it, a stalled
                         pre-copy watches for a quieter moment before stopping
  --delta-cache-mib N    page copies kept for deltas, both ends (default 64)
  --reply-timeout-s N    longest wait for each answer of the receiver (default 120)
  --suspend-timeout-s N  longest wait for the guest to suspend (default 60)
  --keep-source          leave the source suspended as NAME--migratedaway
  --json FILE            write the report as JSON
  --quiet                no progress lines";

struct MigrateArgs {
    backend: String,
    domain: String,
    to: String,
    ssh_command: String,
    receiver: Option<String>,
    stock_receiver: bool,
    policy: String,
    downtime_target_ms: Option<f64>,
    delta_cache_mib: usize,
    reply_timeout_s: u64,
    suspend_timeout_s: u64,
    keep_source: bool,
    json: Option<String>,
    quiet: bool,
}

fn parse_migrate(args: &[String]) -> Result<MigrateArgs, String> {
    let mut backend = None;
    let mut domain = None;
    let mut to = None;
    let mut a = MigrateArgs {
        backend: String::new(),
        domain: String::new(),
        to: String::new(),
        ssh_command: "ssh".into(),
        receiver: None,
        stock_receiver: false,
        policy: "perfplus".into(),
        downtime_target_ms: None,
        delta_cache_mib: 64,
        reply_timeout_s: 120,
        suspend_timeout_s: 60,
        keep_source: false,
        json: None,
        quiet: false,
    };
    let mut flags = Flags::new(args);
    while let Some(flag) = flags.next_flag() {
        match flag {
            "--backend" => backend = Some(flags.value(flag)?.to_string()),
            "--domain" => domain = Some(flags.value(flag)?.to_string()),
            "--to" => to = Some(flags.value(flag)?.to_string()),
            "--ssh-command" => a.ssh_command = flags.value(flag)?.to_string(),
            "--receiver" => a.receiver = Some(flags.value(flag)?.to_string()),
            "--stock-receiver" => a.stock_receiver = true,
            "--policy" => a.policy = flags.value(flag)?.to_string(),
            "--downtime-target-ms" => a.downtime_target_ms = Some(flags.number(flag)?),
            "--delta-cache-mib" => a.delta_cache_mib = flags.number(flag)?,
            "--reply-timeout-s" => a.reply_timeout_s = flags.number(flag)?,
            "--suspend-timeout-s" => a.suspend_timeout_s = flags.number(flag)?,
            "--keep-source" => a.keep_source = true,
            "--json" => a.json = Some(flags.value(flag)?.to_string()),
            "--quiet" => a.quiet = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    a.backend = backend.ok_or("--backend is required (xen)")?;
    a.domain = domain.ok_or("--domain NAME|ID is required")?;
    a.to = to.ok_or("--to DEST is required")?;
    if by_name(&a.policy).is_none() {
        return Err(format!(
            "unknown policy {:?} (one of {})",
            a.policy,
            POLICY_NAMES.join(", ")
        ));
    }
    if let Some(target) = a.downtime_target_ms {
        if a.policy != "perfplus" {
            return Err("--downtime-target-ms sets the perfplus policy's target".into());
        }
        if !(target.is_finite() && target > 0.0) {
            return Err(format!("--downtime-target-ms {target}: must be positive"));
        }
    }
    if a.reply_timeout_s == 0 || a.suspend_timeout_s == 0 {
        return Err("timeouts must be at least 1 s".into());
    }
    Ok(a)
}

/// `perfplus migrate ...` (the arguments after `migrate`).
pub fn migrate_main(args: &[String]) -> ExitCode {
    let a = match parse_migrate(args) {
        Ok(a) => a,
        Err(e) => return usage_error("migrate", MIGRATE_USAGE, &e),
    };
    if a.backend != "xen" {
        return usage_error(
            "migrate",
            MIGRATE_USAGE,
            &format!(
                "backend {:?} is not migrated by this tool yet (xen is)",
                a.backend
            ),
        );
    }
    let policy: Box<dyn PrecopyPolicy> = match a.downtime_target_ms {
        Some(downtime_target_ms) => Box::new(PerfPlus {
            downtime_target_ms,
            ..PerfPlus::default()
        }),
        None => match by_name(&a.policy) {
            Some(p) => p,
            None => return usage_error("migrate", MIGRATE_USAGE, "unknown policy"),
        },
    };
    let mut options = XenMigrationOptions::for_destination(
        &a.to,
        &a.ssh_command,
        a.receiver.as_deref(),
        a.stock_receiver,
    );
    options.delta_cache_bytes = a.delta_cache_mib << 20;
    options.reply_timeout = Duration::from_secs(a.reply_timeout_s);
    options.write_timeout = Duration::from_secs(a.reply_timeout_s);
    options.suspend_timeout = Duration::from_secs(a.suspend_timeout_s);
    options.destroy_source = !a.keep_source;

    let quiet = a.quiet;
    let mut observer = |p: &Progress| {
        if !quiet {
            print_progress(p);
        }
        ProgressFlow::Continue
    };
    let result = XenHost::open()
        .map_err(perfplus::Error::from)
        .and_then(|host| {
            migrate_domain(&host, &a.domain, policy.as_ref(), &options, &mut observer)
        });
    let (report, code) = match &result {
        Ok(r) => {
            print_summary(r);
            (report_json(&a, Some(r), None), ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("perfplus migrate: {}", error_chain(e));
            let undefined = matches!(
                e,
                perfplus::Error::Migration(
                    MigrationError::HandoverUnconfirmed { .. }
                        | MigrationError::ResumeFailed { .. }
                )
            );
            let code = if undefined {
                EXIT_UNDEFINED
            } else {
                EXIT_FAILED
            };
            (report_json(&a, None, Some(e)), ExitCode::from(code))
        }
    };
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("perfplus migrate: writing {path}: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    }
    code
}

fn error_chain(e: &perfplus::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let s = cause.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = cause.source();
    }
    text
}

fn print_progress(p: &Progress) {
    let line = match p {
        Progress::Decided { stats, decision } => {
            let verb = match decision.action {
                Action::Continue => "continue",
                Action::StopAndCopy => "stop and copy",
                Action::Abort => "abort",
            };
            format!(
                "[{:9.1} ms] round {}: {} dirty pages, {:.1} MB/s, predicted downtime {:.1} ms -> {verb}: {}",
                stats.elapsed_ms,
                stats.iteration,
                stats.dirty_pages,
                stats.bandwidth_bytes_per_s / 1e6,
                stats.predicted_downtime_ms,
                decision.reason
            )
        }
        Progress::Paused {
            final_pages,
            elapsed_ms,
        } => {
            if *final_pages > 0 {
                format!("[{elapsed_ms:9.1} ms] guest stopped; final pass of {final_pages} pages")
            } else {
                format!("[{elapsed_ms:9.1} ms] guest suspended; final pass")
            }
        }
        Progress::Verified { elapsed_ms } => {
            format!("[{elapsed_ms:9.1} ms] the destination has the whole guest")
        }
        Progress::Resumed {
            downtime_ms,
            elapsed_ms,
        } => format!(
            "[{elapsed_ms:9.1} ms] the guest runs at the destination (downtime {downtime_ms:.1} ms)"
        ),
        // One line per round, not per batch.
        Progress::Sent { .. } => return,
    };
    eprintln!("{line}");
    let _ = std::io::stderr().flush();
}

fn print_summary(r: &XenMigrationReport) {
    let m = &r.migration;
    eprintln!(
        "migrated {} (domain {}, {}) with {}: downtime {:.1} ms, total {:.1} ms, {:.1} MB on the wire, \
         {} pages ({} zero, {} delta, {} raw) in {} rounds + a final pass of {}; stopped because {} \
         (before the first round {:.0} ms{}, destroying the source {:.0} ms)",
        r.name,
        r.domid,
        r.guest_type.name(),
        m.policy,
        m.downtime_ms,
        m.total_ms,
        m.bytes_on_wire as f64 / 1e6,
        m.sent.pages(),
        m.sent.zero_pages,
        m.sent.delta_pages,
        m.sent.raw_pages,
        m.rounds,
        m.final_pages,
        m.stop_reason,
        r.setup_ms,
        if r.gfn_scan_ms > 0.0 {
            format!(" + {:.0} ms listing its gfns", r.gfn_scan_ms)
        } else {
            String::new()
        },
        r.destroy_ms
    );
    let s = &r.switchover;
    eprintln!(
        "switch-over: suspend {:.0} ms, final pass {:.0} ms, {} {:.0} ms, receiver (END to ready) \
         {:.0} ms, rename {:.0} ms, start (GO to report) {:.0} ms; {:.0} KiB queued at the stop \
         (before it, {:.0} ms waiting for {:.0} KiB queued by the last round to drain)",
        s.suspend_ms,
        s.final_pass_ms,
        match r.guest_type {
            perfplus::backend::xen::GuestType::Pv => "draining the pump",
            perfplus::backend::xen::GuestType::Pvh => "CPU state",
        },
        s.state_ms,
        s.receiver_ms,
        s.rename_ms,
        s.start_ms,
        s.queued_bytes_at_stop as f64 / 1024.0,
        s.drain_before_stop_ms,
        s.queued_bytes_after_rounds as f64 / 1024.0,
    );
}

fn report_json(
    a: &MigrateArgs,
    report: Option<&XenMigrationReport>,
    error: Option<&perfplus::Error>,
) -> Value {
    let mut v = json!({
        "backend": a.backend,
        "domain": a.domain,
        "policy": a.policy,
        "transcoded": !a.stock_receiver,
        "ok": report.is_some(),
    });
    if let Some(r) = report {
        let m = &r.migration;
        let extra = json!({
            "domid": r.domid,
            "guest_type": r.guest_type.name(),
            "downtime_ms": m.downtime_ms,
            "total_ms": m.total_ms,
            "bytes_on_wire": m.bytes_on_wire,
            "pages_sent": m.sent.pages(),
            "rounds": m.rounds,
            "verified": m.verified,
            "stop_reason": m.stop_reason,
            "final_pages": m.final_pages,
            "deferred_pages": m.deferred_pages,
            "zero_pages": m.sent.zero_pages,
            "delta_pages": m.sent.delta_pages,
            "raw_pages": m.sent.raw_pages,
            "stream_bytes": r.stream.stream_bytes,
            "source_destroyed": r.source_destroyed,
            "setup_ms": r.setup_ms,
            "gfn_scan_ms": r.gfn_scan_ms,
            "destroy_ms": r.destroy_ms,
            "switchover_suspend_ms": r.switchover.suspend_ms,
            "switchover_final_pass_ms": r.switchover.final_pass_ms,
            "switchover_state_ms": r.switchover.state_ms,
            "switchover_receiver_ms": r.switchover.receiver_ms,
            "switchover_rename_ms": r.switchover.rename_ms,
            "switchover_start_ms": r.switchover.start_ms,
            "switchover_queued_bytes": r.switchover.queued_bytes_at_stop,
            "drain_before_stop_ms": r.switchover.drain_before_stop_ms,
            "queued_bytes_after_rounds": r.switchover.queued_bytes_after_rounds,
        });
        if let (Value::Object(base), Value::Object(more)) = (&mut v, extra) {
            base.extend(more);
        }
    }
    if let (Some(e), Value::Object(base)) = (error, &mut v) {
        base.insert("error".into(), Value::from(error_chain(e)));
        let running_at_source = matches!(
            e,
            perfplus::Error::Migration(MigrationError::Aborted { .. }) | perfplus::Error::Xen(_)
        );
        base.insert(
            "guest_running_at_source".into(),
            Value::from(running_at_source),
        );
    }
    v
}

// ---- migrate-receive ----

pub const RECEIVE_USAGE: &str = "\
perfplus migrate-receive [--receiver CMD] [--max-guest-gib N] [--max-delta-cache-mib N]
  Reads a transcoded Xen migration stream on standard input, passes the
  rebuilt stream to the stock receiver and relays its answers to standard
  output; the sender starts it (`ssh DEST perfplus migrate-receive`).
  --receiver CMD            the stock receiver (default `xl migrate-receive`)
  --max-guest-gib N         largest guest accepted (default 1024)
  --max-delta-cache-mib N   largest delta cache accepted (default 1024)";

/// `perfplus migrate-receive ...` (the arguments after `migrate-receive`).
pub fn receive_main(args: &[String]) -> ExitCode {
    let mut options = ReceiveOptions::default();
    let mut flags = Flags::new(args);
    let parsed = (|| -> Result<(), String> {
        while let Some(flag) = flags.next_flag() {
            match flag {
                "--receiver" => options.receiver_command = flags.value(flag)?.to_string(),
                "--max-guest-gib" => {
                    let gib: u64 = flags.number(flag)?;
                    options.limits.max_page_count = gib.saturating_mul(1 << 18);
                }
                "--max-delta-cache-mib" => {
                    let mib: u64 = flags.number(flag)?;
                    options.limits.max_delta_cache_bytes = mib.saturating_mul(1 << 20);
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(())
    })();
    if let Err(e) = parsed {
        return usage_error("migrate-receive", RECEIVE_USAGE, &e);
    }
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout();
    match receive(stdin, stdout, &options) {
        Ok(report) => {
            let s = report.stream;
            eprintln!(
                "perfplus migrate-receive: {} bytes received, {} rebuilt ({} pages: {} zero, {} delta, {} raw){}",
                s.wire_bytes,
                s.stream_bytes,
                s.data_pages,
                s.zero_pages,
                s.delta_pages,
                s.raw_pages,
                report.ready_after_stream_ms.map_or(String::new(), |ms| format!(
                    "; the stock receiver was ready {ms:.0} ms after the stream's last bytes"
                ))
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("perfplus migrate-receive: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}
