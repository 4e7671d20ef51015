//! Guest processes: a workload running in its own process over its own
//! arena, started and controlled through its stdin and stdout.
//!
//! ```text
//!  controller                         guest process (guest_main)
//!  spawn(spec) ─────────────────────▶ map + register arena
//!              ◀── ready pid=… base=0x… pages=… page_size=… uffd=…
//!                                     init(spec), run
//!              ◀── running [listen=ADDR]
//!  spawn_incoming(pages) ───────────▶ map + register arena, wait
//!              ◀── ready …
//!  (memory written with process_vm_writev)
//!  start <state blob> ──────────────▶ adopt the arena, run
//!              ◀── running [listen=ADDR]
//!  verify ──────────────────────────▶ check the arena's invariants
//!              ◀── verified <summary>  |  verify-failed <reason>
//!  touch P1 P2 … ───────────────────▶ store into those pages (tests)
//!              ◀── touched  |  touch-failed <reason>
//!  quit ────────────────────────────▶ exit
//! ```
//!
//! Any failure in the guest prints `error <reason>` and exits non-zero.
//! The controller kills the guest when its [`GuestProcess`] is dropped,
//! unless [`detach`](GuestProcess::detach)ed.

use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use super::workload::{self, GuestSpec};
use super::{keeper, sys, ArenaError, TrackedRegion};
use crate::backend::BackendError;

/// How long a guest may take to map, fill and start its arena.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Where a guest process's arena is, as it reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestLayout {
    /// The workload process (the one stopped, read and tracked).
    pub pid: libc::pid_t,
    /// Arena address in the guest's address space.
    pub base: u64,
    /// Pages.
    pub pages: u64,
    /// Bytes per page.
    pub page_size: usize,
    /// The guest's userfaultfd descriptor number (for `pidfd_getfd`).
    pub uffd_fd: i32,
}

/// How to run the guest program: a program and the arguments that select
/// the guest entry point (`perfplus-arena-guest`, or a tool that calls
/// [`guest_main`] for `migrate guest ...`).
#[derive(Debug, Clone)]
pub struct GuestCommand {
    program: PathBuf,
    leading_args: Vec<String>,
}

impl GuestCommand {
    /// Run `program leading_args... <spec words>`.
    pub fn new(program: impl Into<PathBuf>, leading_args: &[&str]) -> Self {
        Self {
            program: program.into(),
            leading_args: leading_args.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.leading_args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        c
    }
}

/// Work to do just before an incoming guest starts, given the spec it will
/// run (e.g. take over `spec.listen`, the service address, on this host).
/// An error stops the start: the guest does not run here.
pub struct StartHook(pub Box<StartFn>);

/// The function a [`StartHook`] runs.
pub type StartFn = dyn FnMut(&GuestSpec) -> io::Result<()> + Send;

impl std::fmt::Debug for StartHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StartHook")
    }
}

/// A running (or incoming) guest process.
#[derive(Debug)]
pub struct GuestProcess {
    start_hook: Option<StartHook>,
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    layout: GuestLayout,
    spec: Option<GuestSpec>,
    listen: Option<SocketAddr>,
    listen_override: Option<SocketAddr>,
    started: bool,
    detached: bool,
}

fn guest_err(pid: u32, reason: impl Into<String>) -> ArenaError {
    ArenaError::Guest {
        pid: i32::try_from(pid).unwrap_or(-1),
        reason: reason.into(),
    }
}

impl GuestProcess {
    /// Start a fresh guest running `spec`; returns once it runs.
    pub fn spawn(command: &GuestCommand, spec: &GuestSpec) -> Result<Self, ArenaError> {
        let mut c = command.command();
        c.args(spec.to_words());
        let mut guest = Self::launch(c)?;
        let line = guest.expect("running", START_TIMEOUT)?;
        guest.listen = parse_running(&line);
        guest.spec = Some(spec.clone());
        guest.started = true;
        Ok(guest)
    }

    /// Start an empty guest of `pages` pages that waits for its memory and
    /// state (the receiving side of a migration).
    pub fn spawn_incoming(command: &GuestCommand, pages: u64) -> Result<Self, ArenaError> {
        let mut c = command.command();
        c.args(["incoming".to_owned(), format!("pages={pages}")]);
        Self::launch(c)
    }

    fn launch(mut c: Command) -> Result<Self, ArenaError> {
        let mut child = c.spawn().map_err(|source| ArenaError::Os {
            context: format!("starting the guest program {:?}", c.get_program()),
            source,
        })?;
        let pid = child.id();
        let (stdin, stdout) = match (child.stdin.take(), child.stdout.take()) {
            (Some(i), Some(o)) => (i, o),
            _ => return Err(guest_err(pid, "no stdin/stdout pipes")),
        };
        let (tx, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("guest-{pid}-out"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    match line {
                        Ok(l) => {
                            if tx.send(l).is_err() {
                                break;
                            }
                        }
                        Err(_) => break,
                    }
                }
            })
            .map_err(|source| ArenaError::Os {
                context: "starting the guest output reader".into(),
                source,
            })?;
        let mut guest = Self {
            start_hook: None,
            child,
            stdin,
            lines,
            layout: GuestLayout {
                pid: -1,
                base: 0,
                pages: 0,
                page_size: 0,
                uffd_fd: -1,
            },
            spec: None,
            listen: None,
            listen_override: None,
            started: false,
            detached: false,
        };
        let ready = guest.expect("ready", START_TIMEOUT)?;
        guest.layout = parse_ready(&ready)
            .ok_or_else(|| guest_err(pid, format!("bad ready line {ready:?}")))?;
        Ok(guest)
    }

    /// Wait for a line starting with `word`; `error` lines and exits fail.
    fn expect(&mut self, word: &str, timeout: Duration) -> Result<String, ArenaError> {
        let pid = self.child.id();
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                if line == word || line.starts_with(&format!("{word} ")) {
                    Ok(line)
                } else if let Some(reason) = line.strip_prefix("error ") {
                    Err(guest_err(pid, reason.to_owned()))
                } else {
                    Err(guest_err(pid, format!("expected {word:?}, got {line:?}")))
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err(guest_err(pid, format!("no {word:?} within {timeout:?}")))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                Err(guest_err(pid, format!("exited ({status}) before {word:?}")))
            }
        }
    }

    fn send(&mut self, line: &str) -> Result<(), ArenaError> {
        let pid = self.child.id();
        writeln!(self.stdin, "{line}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| guest_err(pid, format!("cannot send {line:?}: {e}")))
    }

    /// The workload process's pid (the process stopped, read and
    /// tracked; its parent is the keeper).
    pub fn pid(&self) -> libc::pid_t {
        self.layout.pid
    }

    /// The keeper process's pid (the guest program's own process).
    pub fn keeper_pid(&self) -> u32 {
        self.child.id()
    }

    /// Take the migration lease (see `keeper`): if this controller dies
    /// while the guest is stopped, the keeper asks the receiver at
    /// `status_addr` how migration `id` ended and kills or continues the
    /// guest accordingly.
    pub fn lease(&mut self, id: &str, status_addr: SocketAddr) -> Result<(), ArenaError> {
        if !keeper::valid_migration_id(id) {
            return Err(guest_err(
                self.child.id(),
                format!("bad migration id {id:?}"),
            ));
        }
        self.send(&format!("lease {id} {status_addr}"))?;
        self.expect("leased", Duration::from_secs(10)).map(drop)
    }

    /// Give the lease back (the migration ended and this controller settled it).
    pub fn release(&mut self) -> Result<(), ArenaError> {
        self.send("release")?;
        self.expect("released", Duration::from_secs(10)).map(drop)
    }

    /// Where its arena is.
    pub fn layout(&self) -> GuestLayout {
        self.layout
    }

    /// Whether its workload runs (false for an incoming guest not yet started).
    pub fn is_started(&self) -> bool {
        self.started
    }

    /// Its spec (once started).
    pub fn spec(&self) -> Option<&GuestSpec> {
        self.spec.as_ref()
    }

    /// Where its key-value service listens (once started).
    pub fn listen(&self) -> Option<SocketAddr> {
        self.listen
    }

    /// Serve on `addr` instead of the source's address when started.
    pub fn set_listen_override(&mut self, addr: Option<SocketAddr>) {
        self.listen_override = addr;
    }

    /// The state blob that migrates with the guest (its spec).
    pub fn state_blob(&self) -> Vec<u8> {
        self.spec
            .as_ref()
            .map(GuestSpec::to_blob)
            .unwrap_or_default()
    }

    /// Whether `blob` is a state this (incoming) guest can start from.
    pub fn check_state_blob(&self, blob: &[u8]) -> Result<(), BackendError> {
        let spec = GuestSpec::from_blob(blob).map_err(|e| BackendError::InvalidState {
            reason: e.to_string(),
        })?;
        if spec.pages != self.layout.pages {
            return Err(BackendError::InvalidState {
                reason: format!(
                    "the state is for an arena of {} pages, this one has {}",
                    spec.pages, self.layout.pages
                ),
            });
        }
        Ok(())
    }

    /// Run `hook` just before this (incoming) guest starts.
    pub fn set_start_hook(&mut self, hook: Option<StartHook>) {
        self.start_hook = hook;
    }

    /// Start an incoming guest from its received memory and `blob`.
    pub fn start(&mut self, blob: &[u8]) -> Result<(), ArenaError> {
        let pid = self.child.id();
        let mut spec = GuestSpec::from_blob(blob).map_err(|e| guest_err(pid, e.to_string()))?;
        if let Some(addr) = self.listen_override {
            spec.listen = Some(addr);
        }
        if let Some(hook) = &mut self.start_hook {
            (hook.0)(&spec).map_err(|e| guest_err(pid, format!("the start hook failed: {e}")))?;
        }
        let blob = String::from_utf8(spec.to_blob()).map_err(|e| guest_err(pid, e.to_string()))?;
        self.send(&format!("start {blob}"))?;
        let line = self.expect("running", START_TIMEOUT)?;
        self.listen = parse_running(&line);
        self.spec = Some(spec);
        self.started = true;
        Ok(())
    }

    /// Check the arena's invariants inside the guest (the workload pauses
    /// for it, except `kv`, which must be quiet).
    pub fn verify(&mut self) -> Result<String, ArenaError> {
        self.send("verify")?;
        match self.lines.recv_timeout(START_TIMEOUT) {
            Ok(line) => {
                if let Some(summary) = line.strip_prefix("verified ") {
                    Ok(summary.to_owned())
                } else {
                    Err(guest_err(self.child.id(), line))
                }
            }
            Err(e) => Err(guest_err(self.child.id(), format!("no verify answer: {e}"))),
        }
    }

    /// Make the guest's own code store into each page of `pages` (see
    /// [`workload::touch`]); returns once the stores are done. A paused
    /// guest cannot answer: this fails after a short wait.
    pub fn touch(&mut self, pages: &[u64]) -> Result<(), ArenaError> {
        for chunk in pages.chunks(256) {
            let words: Vec<String> = chunk.iter().map(u64::to_string).collect();
            self.send(&format!("touch {}", words.join(" ")))?;
            match self.lines.recv_timeout(Duration::from_secs(10)) {
                Ok(line) if line == "touched" => {}
                Ok(line) => return Err(guest_err(self.child.id(), line)),
                Err(e) => return Err(guest_err(self.child.id(), format!("no touch answer: {e}"))),
            }
        }
        Ok(())
    }

    /// Whether the process has exited.
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Shut down the workload's network sockets now, stopped or not: its
    /// clients see their connections end and its service address is free
    /// for another process, at once rather than once the kernel has torn
    /// its memory down (which comes first when a process exits). Returns
    /// how many were shut down.
    pub fn end_connections(&self) -> io::Result<usize> {
        if self.layout.pid <= 0 {
            return Ok(0);
        }
        shut_down_inet_sockets(self.layout.pid)
    }

    /// Kill the guest (`SIGKILL`, also when stopped) and reap it: the
    /// workload first, so it is gone when this returns, then the keeper.
    /// Its connections end before the kill ([`end_connections`](Self::end_connections)).
    pub fn kill(&mut self) -> io::Result<()> {
        if self.has_exited() {
            return Ok(());
        }
        if self.layout.pid > 0 {
            let _ = self.end_connections();
            let _ = sys::kill(self.layout.pid, libc::SIGKILL);
        }
        // The keeper exits once it reaps the workload.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.child.kill()?;
        self.child.wait().map(|_| ())
    }

    /// Let the guest outlive this handle.
    pub fn detach(mut self) {
        self.detached = true;
    }
}

/// Shut down (`shutdown(SHUT_RDWR)`) every IPv4 and IPv6 socket of
/// process `pid`, through duplicates taken with `pidfd_getfd`; the process
/// need not run (a migration source is stopped). Returns how many were shut
/// down; a descriptor that closes meanwhile is skipped.
///
/// A process's sockets close only when it exits, and the kernel tears its
/// address space down first (`exit_mm` before `exit_files`): for a guest
/// of 1 GiB that takes ~70 ms on this VM, during which its clients wait
/// on connections nobody serves and its listening address stays taken, so
/// the destination cannot bind it on the same host. Shut down first, an
/// established connection sends its FIN at once (a client reading gets
/// end of file, and reconnects), and a listener stops listening, which
/// frees its address for a socket with `SO_REUSEADDR`. Requests the stopped
/// process received and never answered stay unacknowledged.
pub(super) fn shut_down_inet_sockets(pid: libc::pid_t) -> io::Result<usize> {
    use std::os::fd::AsFd;
    use std::os::unix::ffi::OsStrExt;
    let pidfd = sys::pidfd_open(pid)?;
    let mut shut = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(entry) = entry else { continue };
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<std::os::fd::RawFd>().ok())
        else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.as_os_str().as_bytes().starts_with(b"socket:"));
        if !is_socket {
            continue;
        }
        let Ok(dup) = sys::pidfd_getfd(pidfd.as_fd(), fd) else {
            continue;
        };
        let sock = socket2::SockRef::from(&dup);
        let inet = sock
            .domain()
            .is_ok_and(|d| d == socket2::Domain::IPV4 || d == socket2::Domain::IPV6);
        // A socket that is not connected (ENOTCONN) has nothing to end.
        if inet && sock.shutdown(std::net::Shutdown::Both).is_ok() {
            shut += 1;
        }
    }
    Ok(shut)
}

impl Drop for GuestProcess {
    fn drop(&mut self) {
        if !self.detached {
            let _ = self.kill();
        }
    }
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

fn parse_ready(line: &str) -> Option<GuestLayout> {
    Some(GuestLayout {
        pid: field(line, "pid")?.parse().ok()?,
        base: u64::from_str_radix(field(line, "base")?.strip_prefix("0x")?, 16).ok()?,
        pages: field(line, "pages")?.parse().ok()?,
        page_size: field(line, "page_size")?.parse().ok()?,
        uffd_fd: field(line, "uffd")?.parse().ok()?,
    })
}

fn parse_running(line: &str) -> Option<SocketAddr> {
    field(line, "listen")?.parse().ok()
}

/// The guest program: `guest_main(["workload=kv", "pages=…", …])` for a
/// fresh guest, `guest_main(["incoming", "pages=N"])` for one that waits
/// for its memory. Returns the exit code.
///
/// The program forks first: the parent becomes the guest's keeper (see
/// `keeper`), the child runs the workload. Call it at the very start of
/// `main`, before any thread exists.
pub fn guest_main(args: &[String]) -> i32 {
    match sys::fork_keeper() {
        Ok(sys::Forked::Keeper { child, child_stdin }) => keeper::keeper_main(child, child_stdin),
        Ok(sys::Forked::Child) => workload_main(args),
        Err(e) => {
            println!("error cannot fork the guest's keeper: {e}");
            1
        }
    }
}

fn workload_main(args: &[String]) -> i32 {
    match run_guest(args) {
        Ok(()) => 0,
        Err(e) => {
            println!("error {}", e.replace('\n', " "));
            1
        }
    }
}

/// Fault an incoming arena in, 2 MiB at a time from the top, until
/// `stop` is set. Each call holds the process's mmap lock (for reading)
/// while it faults its chunk in, and creating a thread (its stack is a new
/// mapping) waits for it: small chunks keep that wait under a millisecond.
fn populate_top_down(region: &TrackedRegion, stop: &AtomicBool) {
    const CHUNK_PAGES: u64 = 512;
    let mut end = region.pages();
    while end > 0 && !stop.load(Ordering::Relaxed) {
        let first = end.saturating_sub(CHUNK_PAGES);
        if let Err(e) = region.populate_pages(first, end - first) {
            eprintln!("incoming guest: {e}; pages will be faulted in as they arrive");
            return;
        }
        end = first;
    }
}

fn run_guest(args: &[String]) -> Result<(), String> {
    let incoming = args.first().is_some_and(|a| a == "incoming");
    let (pages, fresh_spec) = if incoming {
        let pages = match args.get(1..).unwrap_or_default() {
            [w] => w
                .strip_prefix("pages=")
                .and_then(|p| p.parse::<u64>().ok())
                .filter(|p| *p >= 2)
                .ok_or_else(|| format!("incoming needs pages=N (N >= 2), got {w:?}"))?,
            _ => return Err("usage: incoming pages=N".into()),
        };
        (pages, None)
    } else {
        let spec =
            GuestSpec::parse_words(args.iter().map(String::as_str)).map_err(|e| e.to_string())?;
        (spec.pages, Some(spec))
    };
    let region: &'static TrackedRegion = Box::leak(Box::new(
        TrackedRegion::new(pages).map_err(|e| e.to_string())?,
    ));
    let mut populating = None;
    if incoming {
        // The migration writes every page: fault them in ahead of the
        // stream, in big calls, rather than page by page inside the
        // receiver's writes. In the background, from the top down (the
        // first pass arrives bottom up), so the stream does not wait for
        // it: fresh memory can cost more to fault in (0.5 GB/s on a VM
        // whose host reclaimed it) than the link takes to fill it.
        //
        // It stops when the guest starts: by then every page has arrived,
        // and a populate still running (the migration outran it, or it got
        // little CPU beside a busy guest at the source) would hold up the
        // workload's first thread, inside the downtime: 8-17 ms seen.
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        match std::thread::Builder::new()
            .name("populate".into())
            .spawn(move || populate_top_down(region, &flag))
        {
            Ok(handle) => populating = Some((stop, handle)),
            Err(e) => eprintln!("incoming guest: {e}; pages will be faulted in as they arrive"),
        }
    }
    let mem = region.memory();
    let mut out = io::stdout();
    let say = |out: &mut io::Stdout, line: &str| -> Result<(), String> {
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| e.to_string())
    };
    say(
        &mut out,
        &format!(
            "ready pid={} base={:#x} pages={} page_size={} uffd={}",
            std::process::id(),
            region.base_address(),
            region.pages(),
            region.page_size(),
            std::os::fd::AsRawFd::as_raw_fd(&region.uffd()),
        ),
    )?;
    let stdin = io::stdin();
    let mut commands = stdin.lock().lines();
    let spec = match fresh_spec {
        Some(spec) => {
            workload::init(mem, &spec);
            spec
        }
        None => {
            let line = match commands.next() {
                Some(l) => l.map_err(|e| e.to_string())?,
                None => return Ok(()), // the controller went away before starting us
            };
            if line == "quit" {
                return Ok(());
            }
            if let Some((stop, handle)) = populating.take() {
                stop.store(true, Ordering::Relaxed);
                let _ = handle.join();
            }
            let blob = line
                .strip_prefix("start ")
                .ok_or_else(|| format!("expected start, got {line:?}"))?;
            let spec = GuestSpec::from_blob(blob.as_bytes()).map_err(|e| e.to_string())?;
            if spec.pages != pages {
                return Err(format!("state for {} pages, arena has {pages}", spec.pages));
            }
            workload::adopt(mem, &spec)?;
            spec
        }
    };
    let mut running =
        Some(workload::run(mem, &spec).map_err(|e| format!("starting the workload: {e}"))?);
    let listen = running.as_ref().and_then(|r| r.listen);
    say(
        &mut out,
        &match listen {
            Some(addr) => format!("running listen={addr}"),
            None => "running".into(),
        },
    )?;
    for line in commands {
        let line = line.map_err(|e| e.to_string())?;
        match line.as_str() {
            "verify" => {
                let quiesce = spec.workload != workload::WorkloadKind::Kv;
                if quiesce {
                    if let Some(r) = running.take() {
                        r.stop();
                    }
                }
                let answer = match workload::verify(mem, &spec) {
                    Ok(summary) => format!("verified {summary}"),
                    Err(reason) => format!("verify-failed {reason}"),
                };
                if quiesce {
                    running = Some(workload::run(mem, &spec).map_err(|e| e.to_string())?);
                }
                say(&mut out, &answer)?;
            }
            "quit" => return Ok(()),
            other if other.starts_with("touch ") => {
                let pages: Result<Vec<u64>, _> = other[6..].split(' ').map(str::parse).collect();
                let answer = match pages {
                    Ok(pages) => match workload::touch(mem, &pages) {
                        Ok(()) => "touched".to_owned(),
                        Err(e) => format!("touch-failed {e}"),
                    },
                    Err(_) => "touch-failed expected page numbers".to_owned(),
                };
                say(&mut out, &answer)?;
            }
            other => say(&mut out, &format!("unknown-command {other}"))?,
        }
    }
    // The controller closed our stdin: keep serving until killed.
    loop {
        std::thread::park();
    }
}
