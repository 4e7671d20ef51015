//! Network conditions on a namespace's outgoing UDP, the same for every
//! system under test, without `sch_netem` (this kernel is built without
//! `CONFIG_NET_SCH_NETEM`, so `tc qdisc ... netem` does not exist):
//!
//! - **loss**: an nftables rule drops each packet independently with the
//!   given probability (`numgen random`), in the kernel's own output path;
//! - **delay and jitter**: an iptables rule (`-t mangle -A OUTPUT -p udp -j
//!   NFQUEUE`, the `xt_NFQUEUE` target; nftables' own `queue` statement is
//!   not built here) hands each packet to a [`Delayer`] thread of the test
//!   process, which holds it for a random delay (normal, truncated at 0) and
//!   then lets the kernel send it on. Packets are released when their own
//!   delay ends, so jitter reorders them, as netem does without `rate`.
//!   A packet waits up to one poll step ([`POLL`], 1 ms) longer to be picked
//!   up; that is part of the jitter.
//!
//! Used by `benches/heartbeat.rs` (Heartbeat 3 and perfplus under the same
//! conditions) and the membership namespace lab (`ppmem_netns.rs`).
//! Needs root, nftables and iptables; [`unavailable`] says what is missing.
//! Rules live in the namespace and vanish with it; a [`Delayer`] removes its
//! rule when dropped, and the rule is added with `--queue-bypass`, so
//! packets flow undelayed rather than being lost if the delayer is gone.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use perfplus::membership::sim::Rng;

/// How often an idle delayer looks for new packets.
pub const POLL: Duration = Duration::from_millis(1);

/// Why conditions cannot be applied here, if they cannot.
pub fn unavailable() -> Option<String> {
    for tool in ["nft", "iptables"] {
        if !super::have_program(tool) {
            return Some(format!(
                "`{tool}` is missing (apt-get install nftables iptables)"
            ));
        }
    }
    None
}

/// Drop `per_mille`/1000 of the UDP packets sent from namespace `ns`, each
/// independently (for i.i.d. loss the same as netem's `loss`). 0 removes
/// the rule.
pub fn set_loss(ns: &str, per_mille: u32) -> Result<(), String> {
    let nft = |cmd: &str| super::lab::sh(&["ip", "netns", "exec", ns, "nft", cmd]);
    let _ = nft("delete table inet ppnetem");
    if per_mille == 0 {
        return Ok(());
    }
    nft("add table inet ppnetem")?;
    nft("add chain inet ppnetem out { type filter hook output priority 0 ; }")?;
    if per_mille >= 1000 {
        return nft("add rule inet ppnetem out meta l4proto udp drop");
    }
    nft(&format!(
        "add rule inet ppnetem out meta l4proto udp numgen random mod 1000 < {per_mille} drop"
    ))
}

/// A delay distribution: normal with this mean and standard deviation,
/// truncated at 0 (netem's `delay <mean> <jitter> distribution normal`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delay {
    /// Mean delay, ms.
    pub mean_ms: f64,
    /// Standard deviation, ms.
    pub jitter_ms: f64,
}

impl Delay {
    fn sample(&self, rng: &mut Rng) -> Duration {
        let ms = (self.mean_ms + self.jitter_ms * rng.normal()).max(0.0);
        Duration::from_secs_f64(ms / 1_000.0)
    }
}

/// Delays every UDP packet a namespace sends (see the module docs). Stops
/// and removes its rule when dropped.
pub struct Delayer {
    ns: String,
    queue: u16,
    stop: Arc<AtomicBool>,
    delayed: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Delayer {
    /// Delay the UDP packets namespace `ns` sends by `delay`, through
    /// NFQUEUE queue number `queue` (any number, unique per namespace),
    /// drawing delays from `seed`.
    pub fn start(ns: &str, queue: u16, delay: Delay, seed: u64) -> Result<Self, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let delayed = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let netns_path = format!("/run/netns/{ns}");
        let thread = {
            let (stop, delayed) = (stop.clone(), delayed.clone());
            std::thread::Builder::new()
                .name(format!("delayer-{ns}"))
                .spawn(move || {
                    let queue_socket = open_queue_in(&netns_path, queue);
                    match queue_socket {
                        Ok(q) => {
                            let _ = ready_tx.send(Ok(()));
                            serve(q, delay, seed, &stop, &delayed);
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                })
                .map_err(|e| format!("spawn the delayer thread: {e}"))?
        };
        let mut delayer = Self {
            ns: ns.to_string(),
            queue,
            stop,
            delayed,
            thread: Some(thread),
        };
        ready_rx
            .recv()
            .map_err(|_| "the delayer thread died".to_string())??;
        // Only now that a listener is bound: packets queued before it would
        // wait for nobody.
        delayer.rule("-A")?;
        Ok(delayer)
    }

    /// Packets delayed so far.
    pub fn delayed(&self) -> u64 {
        self.delayed.load(Ordering::Relaxed)
    }

    fn rule(&mut self, action: &str) -> Result<(), String> {
        let queue = self.queue.to_string();
        super::lab::sh(&[
            "ip",
            "netns",
            "exec",
            &self.ns,
            "iptables",
            "-t",
            "mangle",
            action,
            "OUTPUT",
            "-p",
            "udp",
            "-j",
            "NFQUEUE",
            "--queue-num",
            &queue,
            "--queue-bypass",
        ])
    }
}

impl Drop for Delayer {
    fn drop(&mut self) {
        let _ = self.rule("-D");
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Enter the network namespace at `netns_path` (this thread only) and bind
/// NFQUEUE `queue` there.
fn open_queue_in(netns_path: &str, queue: u16) -> Result<nfq::Queue, String> {
    use std::os::fd::AsRawFd as _;
    let ns = std::fs::File::open(netns_path).map_err(|e| format!("open {netns_path}: {e}"))?;
    // SAFETY: setns(2) on a valid, open namespace file descriptor; it moves
    // only the calling thread (this delayer thread, which owns nothing else)
    // into the namespace, and the fd outlives the call.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(format!(
            "setns {netns_path}: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut q = nfq::Queue::open().map_err(|e| format!("open an NFQUEUE socket: {e}"))?;
    q.bind(queue)
        .map_err(|e| format!("bind NFQUEUE {queue}: {e}"))?;
    // The verdict needs only the packet id: copy a header's worth.
    q.set_copy_range(queue, 64)
        .map_err(|e| format!("set the NFQUEUE copy range: {e}"))?;
    q.set_queue_max_len(queue, 4096)
        .map_err(|e| format!("set the NFQUEUE length: {e}"))?;
    q.set_nonblocking(true);
    Ok(q)
}

/// Hold each packet for its delay, then accept it, until `stop`.
fn serve(mut q: nfq::Queue, delay: Delay, seed: u64, stop: &AtomicBool, delayed: &AtomicU64) {
    let mut rng = Rng::new(seed);
    let mut held: Vec<(Instant, nfq::Message)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        loop {
            match q.recv() {
                Ok(msg) => held.push((Instant::now() + delay.sample(&mut rng), msg)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let now = Instant::now();
        let mut i = 0;
        while i < held.len() {
            if held[i].0 <= now {
                let (_, mut msg) = held.swap_remove(i);
                msg.set_verdict(nfq::Verdict::Accept);
                let _ = q.verdict(msg);
                delayed.fetch_add(1, Ordering::Relaxed);
            } else {
                i += 1;
            }
        }
        let next = held.iter().map(|(t, _)| *t).min();
        let nap = next.map_or(POLL, |t| {
            t.saturating_duration_since(Instant::now()).min(POLL)
        });
        std::thread::sleep(nap);
    }
    // Let what is still held go: the namespace may live on.
    for (_, mut msg) in held {
        msg.set_verdict(nfq::Verdict::Accept);
        let _ = q.verdict(msg);
    }
}
