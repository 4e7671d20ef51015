//! A perfplus node that joins a Heartbeat 3 cluster over UDP (ucast), using
//! the sans-io [`perfplus::heartbeat::Member`] core. Real Heartbeat nodes
//! list it as `active`.
//!
//! ```text
//! hb3_member --node nodeb --nodes nodea,nodeb --key 1:sha1:testsecret \
//!            --state-dir /var/lib/perfplus-hb --bind 0.0.0.0:694 \
//!            --peer 10.203.0.1:694 [--peer <second link>] \
//!            [--keepalive-ms 1000] [--deadtime-ms 6000]
//! ```
//!
//! One line per event on stdout (`arrival`, `status`, `left`, `restarted`,
//! `dropped <reason> total=<n>`), so scripts and tests can follow it. SIGTERM
//! or SIGINT are not caught: this is a demonstration tool, and a kill is how
//! the tests make it vanish.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use perfplus::heartbeat::{identity, DropReason, Event, Member, MemberConfig, Now, Output};
use perfplus::wire::hb3::{AuthKey, AuthMethod, Framing, Keyring};

struct Args {
    node: String,
    nodes: Vec<String>,
    key: AuthKey,
    state_dir: PathBuf,
    bind: SocketAddr,
    peers: Vec<SocketAddr>,
    keepalive_ms: u64,
    deadtime_ms: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut node, mut nodes, mut key, mut state_dir, mut bind) = (None, None, None, None, None);
    let (mut peers, mut keepalive_ms, mut deadtime_ms) = (Vec::new(), 1000, 6000);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--node" => node = Some(value()?.to_lowercase()),
            "--nodes" => {
                nodes = Some(
                    value()?
                        .split(',')
                        .map(str::to_lowercase)
                        .collect::<Vec<_>>(),
                )
            }
            "--key" => {
                let v = value()?;
                let mut parts = v.splitn(3, ':');
                let (Some(index), Some(method), secret) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err("--key is <index>:<sha1|md5|crc>:<secret>".into());
                };
                let index = index.parse().map_err(|_| "key index is a number")?;
                let method = AuthMethod::from_name(method).ok_or("method is sha1, md5 or crc")?;
                key = Some(AuthKey::new(index, method, secret.unwrap_or("")));
            }
            "--state-dir" => state_dir = Some(PathBuf::from(value()?)),
            "--bind" => bind = Some(value()?.parse().map_err(|e| format!("--bind: {e}"))?),
            "--peer" => peers.push(value()?.parse().map_err(|e| format!("--peer: {e}"))?),
            "--keepalive-ms" => keepalive_ms = value()?.parse().map_err(|_| "--keepalive-ms")?,
            "--deadtime-ms" => deadtime_ms = value()?.parse().map_err(|_| "--deadtime-ms")?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        node: node.ok_or("--node is required")?,
        nodes: nodes.ok_or("--nodes is required")?,
        key: key.ok_or("--key is required")?,
        state_dir: state_dir.ok_or("--state-dir is required")?,
        bind: bind.ok_or("--bind is required")?,
        peers: if peers.is_empty() {
            return Err("at least one --peer is required".into());
        } else {
            peers
        },
        keepalive_ms,
        deadtime_ms,
    })
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hb3_member: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args) {
        eprintln!("hb3_member: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let unix_s = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    };
    let id = identity::next_start(&args.state_dir, unix_s())?;
    let mut member = Member::new(MemberConfig {
        node: args.node,
        uuid: id.uuid,
        generation: id.generation,
        nodes: args.nodes,
        keepalive_ms: args.keepalive_ms,
        deadtime_ms: args.deadtime_ms,
        keys: Keyring::single(args.key),
        framing: Framing::Netstring,
    })?;
    let socket = UdpSocket::bind(args.bind)?;
    let origin = Instant::now();
    let now = || Now {
        monotonic_ms: u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX),
        unix_s: unix_s(),
    };
    let stdout = std::io::stdout();
    println!("started generation {:x}", id.generation);
    let mut out = Vec::new();
    member.start(now(), &mut out);
    let mut buf = vec![0u8; 65_536];
    loop {
        for o in out.drain(..) {
            match o {
                Output::Send(bytes) => {
                    for peer in &args.peers {
                        // A down link must not stop the others.
                        let _ = socket.send_to(&bytes, peer);
                    }
                }
                Output::Event(e) => report(&mut stdout.lock(), &e, member.stats())?,
            }
        }
        let wait_ms = member
            .next_tick_ms()
            .saturating_sub(now().monotonic_ms)
            .max(1);
        socket.set_read_timeout(Some(Duration::from_millis(wait_ms)))?;
        match socket.recv_from(&mut buf) {
            Ok((len, from)) => {
                // The link is the configured peer address the packet came from.
                match args.peers.iter().position(|p| p.ip() == from.ip()) {
                    Some(link) => member.receive(link, &buf[..len], now(), &mut out),
                    None => println!("dropped unconfigured-source from={from}"),
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.into()),
        }
        member.tick(now(), &mut out);
    }
}

fn report(
    w: &mut impl std::io::Write,
    event: &Event,
    stats: perfplus::heartbeat::MemberStats,
) -> std::io::Result<()> {
    match event {
        Event::Arrival { node, link, .. } => writeln!(w, "arrival {node} link={link}")?,
        Event::Status { node, status } => writeln!(w, "status {node} {status}")?,
        Event::Restarted { node, generation } => {
            writeln!(w, "restarted {node} generation={generation:x}")?
        }
        Event::Left { node, reason } => writeln!(w, "left {node} {reason:?}")?,
        Event::Dropped { link, reason } => {
            let (what, total) = match reason {
                DropReason::Authentication(_) => ("authentication", stats.dropped_auth),
                DropReason::Malformed(_) => ("malformed", stats.dropped_malformed),
                DropReason::MissingField(_) => ("missing-field", stats.dropped_missing_field),
                DropReason::UnknownNode(_) => ("unknown-node", stats.dropped_unknown_node),
                DropReason::StaleGeneration { .. } | DropReason::StaleSeq { .. } => {
                    ("replay", stats.dropped_replay)
                }
            };
            writeln!(w, "dropped {what} link={link} total={total} ({reason:?})")?
        }
    }
    w.flush()
}
