//! The keeper: the guest program's parent process, which decides the fate
//! of a guest whose migration controller died while the guest was stopped.
//!
//! A migration stops the source guest (`SIGSTOP`) for its final pass. If
//! the process running the migration dies then, nobody would ever continue
//! or kill the guest, and whether the destination took over is known only
//! to the receiver. So the guest program forks at start: the child runs the
//! workload, the parent (the keeper) relays the controller's commands to it
//! and holds the *lease* a migration takes before it starts:
//!
//! ```text
//!  controller ── lease <id> <receiver status address> ──▶ keeper   ◀── leased <id>
//!  controller ── release ───────────────────────────────▶ keeper   ◀── released
//!  controller dies (stdin EOF) with the lease held and the workload stopped:
//!      keeper ── STATUS <id> ──▶ receiver   ◀── COMMITTED | ABORTED
//!      COMMITTED: the guest runs at the destination → kill the workload
//!      ABORTED:   it never will (the receiver has given it up) → SIGCONT
//!      no answer: keep the workload stopped and ask again (never two copies)
//! ```
//!
//! The receiver answers only once the migration's outcome is final (its
//! stream ended one way or the other), so the answer cannot change later.
//! The workload gets `SIGKILL` when the keeper dies, so killing the keeper
//! kills the guest.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::time::Duration;

use super::sys;

/// Longest status line.
pub const MAX_STATUS_LINE: usize = 80;

/// A migration's outcome as the receiver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The guest was handed over and runs at the destination.
    Committed,
    /// The destination gave the migration up and never will resume it.
    Aborted,
}

impl Outcome {
    /// The status line (without newline).
    pub fn as_line(self) -> &'static str {
        match self {
            Self::Committed => "COMMITTED",
            Self::Aborted => "ABORTED",
        }
    }

    /// Parse a status line (without newline).
    pub fn parse(line: &[u8]) -> Option<Self> {
        match line {
            b"COMMITTED" => Some(Self::Committed),
            b"ABORTED" => Some(Self::Aborted),
            _ => None,
        }
    }
}

/// A migration id: 1 to 64 characters of `[A-Za-z0-9._-]`.
pub fn valid_migration_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Parse a status request line `STATUS <id>` (without newline).
pub fn parse_status_request(line: &[u8]) -> Option<&str> {
    if line.len() > MAX_STATUS_LINE {
        return None;
    }
    let id = std::str::from_utf8(line.strip_prefix(b"STATUS ")?).ok()?;
    valid_migration_id(id).then_some(id)
}

/// Ask the receiver at `addr` how migration `id` ended.
pub fn query_outcome(addr: SocketAddr, id: &str, timeout: Duration) -> io::Result<Outcome> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(format!("STATUS {id}\n").as_bytes())?;
    let mut reader = BufReader::new(stream).take(MAX_STATUS_LINE as u64 + 1);
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    let line = line.strip_suffix(b"\n").unwrap_or(&line);
    Outcome::parse(line).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad status answer {:?}", String::from_utf8_lossy(line)),
        )
    })
}

use std::io::Read as _;

struct Lease {
    id: String,
    status_addr: SocketAddr,
}

fn stopped(pid: libc::pid_t) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next())
            .is_some_and(|c| c == 'T' || c == 't')
    })
}

fn say(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Run the keeper of workload process `child`: relay the controller's lines
/// (stdin) to the child, hold migration leases, settle an orphaned stopped
/// guest, and exit with the child's exit code when it exits.
pub(super) fn keeper_main(child: libc::pid_t, child_stdin: OwnedFd) -> i32 {
    let waiter = std::thread::Builder::new()
        .name("keeper-wait".into())
        .spawn(move || {
            let code = sys::wait_child(child).unwrap_or(1);
            std::process::exit(code);
        });
    if waiter.is_err() {
        let _ = sys::kill(child, libc::SIGKILL);
        return 1;
    }
    let mut to_child = File::from(child_stdin);
    let mut lease: Option<Lease> = None;
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if let Some(rest) = line.strip_prefix("lease ") {
            let mut words = rest.split(' ');
            match (
                words.next(),
                words.next().and_then(|a| a.parse().ok()),
                words.next(),
            ) {
                (Some(id), Some(status_addr), None) if valid_migration_id(id) => {
                    say(&format!("leased {id}"));
                    lease = Some(Lease {
                        id: id.to_owned(),
                        status_addr,
                    });
                }
                _ => say("lease-failed expected: lease <id> <host:port>"),
            }
        } else if line == "release" {
            lease = None;
            say("released");
        } else if writeln!(to_child, "{line}").is_err() {
            break;
        }
    }
    // The controller is gone.
    if let Some(lease) = lease {
        if stopped(child) {
            settle(child, &lease);
        }
    }
    drop(to_child);
    loop {
        std::thread::park(); // the waiter exits the process with the child
    }
}

/// Ask until the receiver knows, then kill or continue the workload.
fn settle(child: libc::pid_t, lease: &Lease) {
    let mut wait = Duration::from_millis(100);
    loop {
        match query_outcome(lease.status_addr, &lease.id, Duration::from_secs(5)) {
            Ok(Outcome::Committed) => {
                eprintln!(
                    "keeper: migration {} committed at {}; ending the source guest",
                    lease.id, lease.status_addr
                );
                let _ = super::guest::shut_down_inet_sockets(child);
                let _ = sys::kill(child, libc::SIGKILL);
                return;
            }
            Ok(Outcome::Aborted) => {
                eprintln!(
                    "keeper: migration {} aborted at {}; the guest runs on here",
                    lease.id, lease.status_addr
                );
                let _ = sys::kill(child, libc::SIGCONT);
                return;
            }
            Err(e) => {
                eprintln!(
                    "keeper: cannot learn the outcome of migration {} from {}: {e}; the guest stays stopped",
                    lease.id, lease.status_addr
                );
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn status_lines_are_strict() {
        assert_eq!(parse_status_request(b"STATUS m-1.a_b"), Some("m-1.a_b"));
        assert_eq!(parse_status_request(b"STATUS "), None);
        assert_eq!(parse_status_request(b"STATUS a b"), None);
        assert_eq!(parse_status_request(b"status x"), None);
        assert_eq!(Outcome::parse(b"COMMITTED"), Some(Outcome::Committed));
        assert_eq!(Outcome::parse(b"COMMITTED "), None);
    }

    proptest! {
        #[test]
        fn garbage_status_lines_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = parse_status_request(&bytes);
            let _ = Outcome::parse(&bytes);
        }
    }
}
