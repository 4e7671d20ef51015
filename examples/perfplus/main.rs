//! `perfplus`: the command an admin and a resource agent use.
//!
//! ```text
//! perfplus node    --config FILE [--node NAME] [--ocf-env KEY=VALUE]...
//!                  [--service-interface IFACE] [--policy P]
//! perfplus node    --ha-cf FILE --authkeys FILE [--node NAME]   (membership only)
//! perfplus status  --config FILE [--node NAME] [--json] [--resource R [--here]]
//! perfplus standby --config FILE [--node NAME] HOST on|off
//! perfplus start   --config FILE [--node NAME] RESOURCE
//! perfplus stop    --config FILE [--node NAME] RESOURCE
//! perfplus migrate --config FILE [--node NAME] RESOURCE --to HOST
//! perfplus migrate --backend xen --domain NAME --to DEST [options]
//! perfplus migrate-receive [--receiver CMD]
//! perfplus receive --listen ADDR [--service-interface IFACE]
//! perfplus check   --config FILE [--node NAME] [RESOURCE]
//! ```
//!
//! `node` runs this host's cluster node: membership, the orchestrator
//! (when the file configures `[[resources]]`), the drivers and the control
//! channel. Arena guests (`driver = "arena"`) run as child processes of
//! this program (`perfplus guest ...`, internal) and arrive on the node's
//! `migration` address; with `--service-interface IFACE` a guest's
//! `listen` address moves with it (added to IFACE and announced by
//! gratuitous ARP on arrival, removed on departure). It logs one line per event on stdout (`t=<µs since the epoch>
//! KIND ...`) and stops on SIGTERM or SIGINT, stopping the resources that
//! run here first (put the host in standby before, to keep them running
//! elsewhere).
//!
//! The other commands talk to the node on this host (the `control`
//! address of `--node`, by default this host's name) over the
//! authenticated control channel; `start`, `stop` and `migrate` return when
//! the action is done. `status --resource R --here` asks the node to look
//! now (R's driver's monitor), not what the cluster last heard, so a
//! resource agent's `monitor` sees the outcome of the `start` or `stop`
//! it just ran. `check` only reads the configuration (no node needed):
//! it is valid, names this host, and configures RESOURCE.
//!
//! `migrate --backend xen` needs no cluster: it live-migrates a Xen guest
//! (PV or PVH) with Perf+ from this dom0 to DEST the way `xl migrate`
//! does, over ssh to `perfplus migrate-receive` there (pages zero- and
//! delta-encoded, rebuilt for the stock `xl migrate-receive`), or with
//! `--stock-receiver` to `xl migrate-receive` itself. See [`xen`] for its
//! options; `perfplus help migrate` prints them.
//!
//! Exit codes a script can rely on:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done (`status --resource`: it runs, here with `--here`) |
//! | 1 | the action failed (the message says why) |
//! | 2 | bad usage or configuration (an unknown resource too) |
//! | 3 | the local node is not running or not reachable; `migrate --backend xen`: failed in the hand-over, both copies may exist (check both hosts, as xl says) |
//! | 7 | `status --resource`: it does not run (here, with `--here`) |

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use perfplus::backend::arena::{
    check_support, guest_main, Arrival, GuestCommand, ReceiveConfig, ReceiveService,
};
use perfplus::config::heartbeat::{AuthKeys, HaCf};
use perfplus::config::{local_hostname, NodeConfig};
use perfplus::driver::arena::address_hooks;
use perfplus::membership::NodeId;
use perfplus::runtime::ha::control::{exchange, exchange_waiting, ANSWER_TIMEOUT};
use perfplus::runtime::ha::daemon::{self, DaemonOptions};
use perfplus::runtime::ha::ClusterStatus;
use perfplus::wire::control::Message;

mod xen;

const USAGE: &str = "usage:
  perfplus node    --config FILE [--node NAME] [--ocf-env KEY=VALUE]...
                   [--service-interface IFACE] [--policy P]
  perfplus node    --ha-cf FILE --authkeys FILE [--node NAME]
  perfplus status  --config FILE [--node NAME] [--json] [--resource R [--here]]
  perfplus standby --config FILE [--node NAME] HOST on|off
  perfplus start   --config FILE [--node NAME] RESOURCE
  perfplus stop    --config FILE [--node NAME] RESOURCE
  perfplus migrate --config FILE [--node NAME] RESOURCE --to HOST
  perfplus migrate --backend xen --domain NAME --to DEST [options]   (perfplus help migrate)
  perfplus migrate-receive [--receiver CMD]
  perfplus check   --config FILE [--node NAME] [RESOURCE]
  perfplus receive --listen ADDR [--service-interface IFACE]";

/// Exit codes (see the module documentation).
const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_UNREACHABLE: u8 = 3;
const EXIT_NOT_RUNNING: u8 = 7;

/// A failure with its exit code.
struct Failure(u8, String);

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Failure(EXIT_USAGE, message.into())
    }
}

#[derive(Default)]
struct Args {
    command: String,
    config: Option<PathBuf>,
    ha_cf: Option<PathBuf>,
    authkeys: Option<PathBuf>,
    node: Option<String>,
    json: bool,
    resource: Option<String>,
    here: bool,
    to: Option<String>,
    ocf_env: Vec<(String, String)>,
    service_interface: Option<String>,
    policy: Option<String>,
    listen: Option<String>,
    positional: Vec<String>,
}

fn parse_args() -> Result<Args, Failure> {
    let mut it = std::env::args().skip(1);
    let mut args = Args {
        command: it.next().ok_or_else(|| Failure::usage(USAGE))?,
        ..Args::default()
    };
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| Failure::usage(format!("{arg} needs a value\n{USAGE}")))
        };
        match arg.as_str() {
            "--config" => args.config = Some(value()?.into()),
            "--ha-cf" => args.ha_cf = Some(value()?.into()),
            "--authkeys" => args.authkeys = Some(value()?.into()),
            "--node" => args.node = Some(value()?),
            "--json" => args.json = true,
            "--resource" => args.resource = Some(value()?),
            "--here" => args.here = true,
            "--to" => args.to = Some(value()?),
            "--ocf-env" => {
                let pair = value()?;
                let (key, val) = pair.split_once('=').ok_or_else(|| {
                    Failure::usage(format!("--ocf-env {pair}: expected KEY=VALUE"))
                })?;
                args.ocf_env.push((key.into(), val.into()));
            }
            "--service-interface" => args.service_interface = Some(value()?),
            "--policy" => args.policy = Some(value()?),
            "--listen" => args.listen = Some(value()?),
            "--help" | "-h" => return Err(Failure::usage(USAGE)),
            other if other.starts_with("--") => {
                return Err(Failure::usage(format!("unknown option {other}\n{USAGE}")))
            }
            _ => args.positional.push(arg),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    // This program is also the arena guest program of the nodes it runs.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("guest") {
        let code = guest_main(&argv[2..]);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    // A Xen migration outside any cluster, and its receiving end (what
    // the sender starts over ssh, as xl starts `xl migrate-receive`).
    match argv.get(1).map(String::as_str) {
        Some("migrate") if argv.iter().any(|a| a == "--backend") => {
            return xen::migrate_main(&argv[2..])
        }
        Some("migrate-receive") => return xen::receive_main(&argv[2..]),
        Some("help") if argv.get(2).map(String::as_str) == Some("migrate") => {
            println!("{USAGE}\n\n{}", xen::MIGRATE_USAGE);
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let result = parse_args().and_then(|args| match args.command.as_str() {
        "node" => run_node(&args),
        "status" => status(&args),
        "standby" => standby(&args),
        "start" | "stop" => start_stop(&args),
        "migrate" => migrate(&args),
        "check" => check(&args),
        "receive" => receive(&args),
        "--help" | "-h" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(Failure::usage(format!(
            "unknown command `{other}`\n{USAGE}"
        ))),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, message)) => {
            eprintln!("perfplus: {message}");
            ExitCode::from(code)
        }
    }
}

fn load_config(args: &Args) -> Result<NodeConfig, Failure> {
    let config = match (&args.config, &args.ha_cf) {
        (Some(path), None) => NodeConfig::from_toml_file_for(path, args.node.as_deref()),
        (None, Some(ha_cf)) => {
            let authkeys = args
                .authkeys
                .clone()
                .unwrap_or_else(|| ha_cf.with_file_name("authkeys"));
            let keys = AuthKeys::read(&authkeys).map_err(|e| Failure::usage(e.to_string()))?;
            let cf = HaCf::read(ha_cf).map_err(|e| Failure::usage(e.to_string()))?;
            let name = match &args.node {
                Some(name) => name.clone(),
                None => local_hostname().map_err(|e| Failure::usage(e.to_string()))?,
            };
            NodeConfig::from_heartbeat(&cf, &keys, &name)
        }
        _ => {
            return Err(Failure::usage(format!(
                "give --config FILE (or, for `node`, --ha-cf FILE)\n{USAGE}"
            )))
        }
    };
    let mut config = config.map_err(|e| Failure::usage(e.to_string()))?;
    if let Some(name) = &args.node {
        let id = config
            .nodes
            .iter()
            .find(|n| &n.name == name)
            .map(|n| n.id)
            .ok_or_else(|| Failure::usage(format!("--node {name}: not a configured node")))?;
        config.local = id;
    }
    Ok(config)
}

fn log_line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", daemon::stamp(text));
    let _ = out.flush();
}

fn run_node(args: &Args) -> Result<(), Failure> {
    let config = load_config(args)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone())
            .map_err(|e| Failure(EXIT_FAILED, format!("cannot handle signals: {e}")))?;
    }
    let program = std::env::current_exe()
        .map_err(|e| Failure(EXIT_FAILED, format!("cannot find this program: {e}")))?;
    let options = DaemonOptions {
        guest_program: GuestCommand::new(program, &["guest"]),
        service_interface: args.service_interface.clone(),
        policy: args.policy.clone(),
        ocf_env: args.ocf_env.clone(),
    };
    daemon::run(config, &options, &stop, Arc::new(log_line)).map_err(|e| Failure(EXIT_FAILED, e))
}

/// `receive --listen ADDR [--service-interface IFACE]`: a standalone
/// receiver of arena guests (outside a cluster: `migrate send` or the C
/// ABI send to it). Each adopted guest runs in its own process and serves
/// on after this command stops.
fn receive(args: &Args) -> Result<(), Failure> {
    let listen: SocketAddr = args
        .listen
        .as_deref()
        .ok_or_else(|| Failure::usage(format!("receive needs --listen ADDR\n{USAGE}")))?
        .parse()
        .map_err(|_| Failure::usage("--listen: expected an address like 10.0.0.2:7791"))?;
    check_support().map_err(|e| Failure(EXIT_FAILED, e.to_string()))?;
    let program = std::env::current_exe()
        .map_err(|e| Failure(EXIT_FAILED, format!("cannot find this program: {e}")))?;
    let mut config = ReceiveConfig::new(GuestCommand::new(program, &["guest"]));
    if let Some(interface) = &args.service_interface {
        config.take_over = Some(address_hooks(interface).0);
    }
    let service = ReceiveService::bind(listen, config)
        .map_err(|e| Failure(EXIT_FAILED, format!("cannot listen on {listen}: {e}")))?;
    let (_handle, arrivals) = service
        .spawn()
        .map_err(|e| Failure(EXIT_FAILED, e.to_string()))?;
    log_line(&format!("LISTENING {listen}"));
    for arrival in arrivals {
        log_line(&format!("ARRIVAL {arrival}"));
        if let Arrival::Adopted { guest, .. } = arrival {
            // It serves on by itself (its keeper), also after we stop.
            guest.detach();
        }
    }
    Ok(())
}

/// Send `message` to the node on this host and return its reply.
fn ask_local(args: &Args, message: &Message, wait: Duration) -> Result<Message, Failure> {
    let config = load_config(args)?;
    let address = config
        .cluster
        .host(config.local)
        .and_then(|h| h.control)
        .ok_or_else(|| {
            Failure::usage(format!(
                "{}: node {} has no `control` address",
                config.source, config.local.0
            ))
        })?;
    let key = config.key.subkey("control");
    let reply = if wait > perfplus::runtime::ha::control::IO_TIMEOUT {
        exchange_waiting(&key, address, NodeId(0), message, wait)
    } else {
        exchange(&key, address, NodeId(0), message)
    };
    reply.map_err(|e| Failure(EXIT_UNREACHABLE, e.to_string()))
}

fn host_id(args: &Args, name: &str) -> Result<NodeId, Failure> {
    let config = load_config(args)?;
    config
        .nodes
        .iter()
        .find(|n| n.name == name || n.id.0.to_string() == name)
        .map(|n| n.id)
        .ok_or_else(|| Failure::usage(format!("`{name}` is not a configured node")))
}

fn expect_ack(reply: Message) -> Result<(), Failure> {
    match reply {
        Message::Ack { ok: true, message } => {
            if !message.is_empty() {
                println!("{message}");
            }
            Ok(())
        }
        Message::Ack { ok: false, message } => Err(Failure(EXIT_FAILED, message)),
        other => Err(Failure(EXIT_FAILED, format!("unexpected reply {other:?}"))),
    }
}

fn status(args: &Args) -> Result<(), Failure> {
    if let (Some(resource), true) = (&args.resource, args.here) {
        return probe(args, resource);
    }
    let reply = ask_local(args, &Message::StatusRequest, Duration::ZERO)?;
    let Message::Status { json } = reply else {
        return Err(Failure(EXIT_FAILED, format!("unexpected reply {reply:?}")));
    };
    let status = ClusterStatus::from_json(&json).map_err(|e| {
        Failure(
            EXIT_FAILED,
            format!("the node's status is not readable: {e}"),
        )
    })?;
    if let Some(resource) = &args.resource {
        let r = status
            .resources
            .iter()
            .find(|r| &r.name == resource)
            .ok_or_else(|| Failure::usage(format!("`{resource}` is not a configured resource")))?;
        let running = r.state == "running";
        if args.json {
            println!("{}", serde_json::to_string(r).unwrap_or_default());
        } else {
            println!(
                "{resource}: {}{}",
                r.state,
                r.host.map(|h| format!(" on node {h}")).unwrap_or_default()
            );
        }
        return if running {
            Ok(())
        } else {
            Err(Failure(
                EXIT_NOT_RUNNING,
                format!("{resource} is not running"),
            ))
        };
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{}", status.to_table());
    }
    Ok(())
}

fn standby(args: &Args) -> Result<(), Failure> {
    let [host, state] = &args.positional[..] else {
        return Err(Failure::usage(format!(
            "standby needs HOST on|off\n{USAGE}"
        )));
    };
    let on = match state.as_str() {
        "on" => true,
        "off" => false,
        other => {
            return Err(Failure::usage(format!(
                "standby {host} {other}: expected on or off"
            )))
        }
    };
    let host = host_id(args, host)?;
    expect_ack(ask_local(
        args,
        &Message::Standby { host, on },
        Duration::ZERO,
    )?)
}

fn start_stop(args: &Args) -> Result<(), Failure> {
    let [resource] = &args.positional[..] else {
        return Err(Failure::usage(format!(
            "{} needs RESOURCE\n{USAGE}",
            args.command
        )));
    };
    let message = if args.command == "start" {
        Message::Start {
            resource: resource.clone(),
        }
    } else {
        Message::Stop {
            resource: resource.clone(),
        }
    };
    expect_ack(ask_local(args, &message, ANSWER_TIMEOUT)?)
}

fn migrate(args: &Args) -> Result<(), Failure> {
    let [resource] = &args.positional[..] else {
        return Err(Failure::usage(format!(
            "migrate needs RESOURCE --to HOST\n{USAGE}"
        )));
    };
    let to = args
        .to
        .as_deref()
        .ok_or_else(|| Failure::usage(format!("migrate needs --to HOST\n{USAGE}")))?;
    let to = host_id(args, to)?;
    let message = Message::Migrate {
        resource: resource.clone(),
        to,
    };
    expect_ack(ask_local(args, &message, ANSWER_TIMEOUT)?)
}

/// `status --resource R --here`: the node asks R's driver now.
fn probe(args: &Args, resource: &str) -> Result<(), Failure> {
    configured(args, resource)?;
    let reply = ask_local(
        args,
        &Message::Probe {
            resource: resource.into(),
        },
        ANSWER_TIMEOUT,
    )?;
    let running = match reply {
        Message::Probed { running, .. } => running,
        Message::Ack { message, .. } => {
            return Err(Failure(
                EXIT_FAILED,
                format!("{resource}: the check failed: {message}"),
            ))
        }
        other => return Err(Failure(EXIT_FAILED, format!("unexpected reply {other:?}"))),
    };
    let state = if running { "running" } else { "stopped" };
    if args.json {
        println!(
            "{{\"name\":{},\"here\":\"{state}\"}}",
            serde_json::Value::from(resource)
        );
    } else {
        println!("{resource}: {state} here");
    }
    if running {
        Ok(())
    } else {
        Err(Failure(
            EXIT_NOT_RUNNING,
            format!("{resource} is not running here"),
        ))
    }
}

/// Fail with a usage error unless `resource` is configured.
fn configured(args: &Args, resource: &str) -> Result<NodeConfig, Failure> {
    let config = load_config(args)?;
    if config.cluster.resource(resource).is_none() {
        return Err(Failure::usage(format!(
            "{}: `{resource}` is not a configured resource",
            config.source
        )));
    }
    Ok(config)
}

/// `check`: the configuration is valid, names this host and RESOURCE.
fn check(args: &Args) -> Result<(), Failure> {
    let config = match &args.positional[..] {
        [] => load_config(args)?,
        [resource] => configured(args, resource)?,
        _ => {
            return Err(Failure::usage(format!(
                "check takes at most one RESOURCE\n{USAGE}"
            )))
        }
    };
    let name = config.local_name().unwrap_or_default().to_string();
    let control = config
        .cluster
        .host(config.local)
        .and_then(|h| h.control)
        .map(|a| a.to_string())
        .unwrap_or_else(|| "none".into());
    println!(
        "{}: node {} ({name}), control {control}, {} resources",
        config.source,
        config.local.0,
        config.cluster.resources.len()
    );
    Ok(())
}
