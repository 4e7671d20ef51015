//! End-to-end migrations of simulated guests: every policy on every built-in
//! workload leaves the receiver's memory equal to the source's, page for
//! page; faults at every step leave the guest running at the source with its
//! memory intact; the same engine and receiver work over real TCP.

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)] // test helpers

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use perfplus::backend::conformance::{check_domain, ConformanceHarness};
use perfplus::backend::sim::{SimDomain, VirtualClock, Workload};
use perfplus::backend::{BackendError, DirtyBitmap, Domain, Pfn};
use perfplus::migration::engine::{migrate, EngineConfig, Progress, ProgressFlow};
use perfplus::migration::policy::{
    by_name, PerfPlus, PrecopyPolicy, QemuDefault, XenDefault, POLICY_NAMES,
};
use perfplus::migration::receiver::{receive_tcp, Receiver, ReceiverState};
use perfplus::migration::simulation::{first_difference, SimOutcome, SimRun};
use perfplus::migration::sink::PerfplusSink;
use perfplus::migration::transport::{RealClock, SimFaults, TcpTransport};
use perfplus::migration::{MigrationError, Stage};

fn workloads() -> Vec<Workload> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/workloads");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 9, "the built-in suite has nine workloads");
    files.iter().map(|f| Workload::load(f).unwrap()).collect()
}

/// A built-in workload at 1/256 scale (16 MiB, same durations).
fn small(name: &str) -> Workload {
    workloads()
        .into_iter()
        .find(|w| w.name == name)
        .unwrap()
        .scaled_down(256)
}

fn quiet_observer() -> impl FnMut(&Progress) -> ProgressFlow {
    |_| ProgressFlow::Continue
}

#[test]
fn every_policy_on_every_workload_leaves_identical_memory() {
    for w in workloads() {
        let w = w.scaled_down(256);
        for name in POLICY_NAMES {
            // QEMU's rule, giving up after 2 simulated minutes instead of 30
            // to keep the test short (the benchmark runs the full 30).
            let policy: Box<dyn PrecopyPolicy> = if name == "qemu-default" {
                Box::new(QemuDefault {
                    give_up_after_ms: 120_000.0,
                    ..QemuDefault::default()
                })
            } else {
                by_name(name).unwrap()
            };
            let run = SimRun::new(&w);
            let latency_ms = run.link.latency_ms;
            let mut out = run.run(policy.as_ref(), &mut quiet_observer());
            match &out.result {
                Ok(report) => {
                    assert!(report.verified, "{} / {name}: not verified", w.name);
                    // The stages cover the downtime: from the pause to the
                    // receiver's report, which the downtime counts less the
                    // report's one-way trip.
                    let stages = report.switchover.expect("the engine's breakdown");
                    let sum: f64 = stages.stages().iter().map(|(_, ms)| ms).sum();
                    assert!(
                        stages.stages().iter().all(|(_, ms)| *ms >= 0.0)
                            && (sum - report.downtime_ms - latency_ms).abs() < 1e-3,
                        "{} / {name}: {stages} vs downtime {} ms",
                        w.name,
                        report.downtime_ms
                    );
                    assert_eq!(out.receiver.state(), ReceiverState::Resumed);
                    assert!(!out.receiver.domain().is_paused(), "runs at the receiver");
                    assert!(out.source.is_paused(), "stays paused at the source");
                    let mut received = std::mem::replace(
                        out.receiver.domain_mut(),
                        SimDomain::blank(1, VirtualClock::new()),
                    );
                    assert_eq!(
                        first_difference(&mut out.source, &mut received),
                        None,
                        "{} / {name}: receiver memory differs from the source",
                        w.name
                    );
                }
                Err(e) => {
                    // Only QEMU's rule may fail to converge (it gives up at 30 minutes).
                    assert_eq!(name, "qemu-default", "{} / {name}: {e}", w.name);
                    assert!(
                        matches!(e.root(), MigrationError::NotConverged { .. }),
                        "{e}"
                    );
                    assert!(!out.source.is_paused(), "the guest runs at the source");
                    assert_ne!(out.receiver.state(), ReceiverState::Resumed);
                }
            }
        }
    }
}

#[test]
fn perfplus_defers_hot_pages_and_sends_deltas() {
    let w = small("kv-zipf");
    let out = SimRun::new(&w).run(&PerfPlus::default(), &mut quiet_observer());
    let report = out.result.unwrap();
    assert!(report.sent.delta_pages > 0, "{report:?}");
    assert!(report.sent.zero_pages > 0, "{report:?}");
    let xen = SimRun::new(&w).run(
        by_name("xen-default").unwrap().as_ref(),
        &mut quiet_observer(),
    );
    let xen = xen.result.unwrap();
    assert_eq!(
        xen.sent.delta_pages + xen.sent.zero_pages,
        0,
        "Xen sends raw"
    );
    assert!(report.bytes_on_wire < xen.bytes_on_wire);
}

/// A twin of the source that ran the same workload without any migration,
/// paused over the same interval as the source (if it was).
fn twin_memory_matches(run: &SimRun, out: &mut SimOutcome, paused: Option<(f64, f64)>) {
    let clock = VirtualClock::new();
    let mut twin = SimDomain::new(&run.workload, run.seed, clock.clone());
    let ms = |t: f64| (t * 1e6) as u64;
    if let Some((from, to)) = paused {
        clock.advance_to(ms(from));
        twin.pause().unwrap();
        clock.advance_to(ms(to));
        twin.resume().unwrap();
    }
    clock.advance_to(out.source.clock().now_ns());
    assert_eq!(
        first_difference(&mut out.source, &mut twin),
        None,
        "the source's memory is not what its workload alone made it"
    );
}

struct Marks {
    round_bytes: Vec<u64>,
    stop_bytes: u64,
    total: u64,
}

fn marks(run: &SimRun) -> Marks {
    marks_with(run, &PerfPlus::default())
}

fn marks_with(run: &SimRun, policy: &dyn PrecopyPolicy) -> Marks {
    let mut round_bytes = Vec::new();
    let mut stop_bytes = 0;
    let mut observer = |p: &Progress| {
        if let Progress::Decided { stats, decision } = p {
            round_bytes.push(stats.bytes_sent_total);
            if decision.action != perfplus::migration::Action::Continue {
                stop_bytes = stats.bytes_sent_total;
            }
        }
        ProgressFlow::Continue
    };
    let out = run.run(policy, &mut observer);
    assert!(out.result.is_ok());
    Marks {
        round_bytes,
        stop_bytes,
        total: out.bytes_on_wire,
    }
}

fn run_with_fault(faults: SimFaults) -> (SimRun, SimOutcome, Option<(f64, f64)>) {
    run_with_fault_using(faults, &PerfPlus::default())
}

fn run_with_fault_using(
    faults: SimFaults,
    policy: &dyn PrecopyPolicy,
) -> (SimRun, SimOutcome, Option<(f64, f64)>) {
    let mut run = SimRun::new(&small("web"));
    run.faults = faults;
    let mut paused_at = None;
    let mut observer = |p: &Progress| {
        if let Progress::Paused { elapsed_ms, .. } = p {
            paused_at = Some(*elapsed_ms);
        }
        ProgressFlow::Continue
    };
    let out = run.run(policy, &mut observer);
    let paused = paused_at.map(|p| (p, out.elapsed_ms));
    (run, out, paused)
}

fn assert_guest_safe_at_source(out: &mut SimOutcome, stage: fn(&Stage) -> bool) -> String {
    let err = out.result.as_ref().expect_err("the migration must fail");
    let text = err.to_string();
    match err {
        MigrationError::Aborted { stage: s, .. } => assert!(stage(s), "stage {s}: {text}"),
        other => panic!("expected Aborted, got {other}"),
    }
    assert!(text.contains("running at the source"), "{text}");
    assert!(!out.source.is_paused(), "the guest runs at the source");
    let mut b = DirtyBitmap::new(out.source.page_count());
    assert!(
        matches!(
            out.source.harvest_dirty(&mut b),
            Err(BackendError::DirtyLogDisabled)
        ),
        "dirty logging was switched off"
    );
    assert_ne!(
        out.receiver.state(),
        ReceiverState::Resumed,
        "never resumed at the receiver"
    );
    assert!(out.receiver.domain().is_paused());
    text
}

#[test]
fn link_cut_in_a_round_leaves_the_guest_at_the_source() {
    let m = marks(&SimRun::new(&small("web")));
    assert!(
        m.round_bytes[2] - m.round_bytes[1] > 10_000,
        "round 1 is long enough to cut"
    );
    let (run, mut out, paused) = run_with_fault(SimFaults {
        cut_after_bytes: Some((m.round_bytes[1] + m.round_bytes[2]) / 2),
        ..SimFaults::default()
    });
    let text = assert_guest_safe_at_source(&mut out, |s| matches!(s, Stage::Round(1)));
    assert!(text.contains("connection lost"), "{text}");
    assert_eq!(paused, None);
    assert_eq!(
        out.receiver.state(),
        ReceiverState::Failed,
        "the receiver saw the stream end early"
    );
    twin_memory_matches(&run, &mut out, paused);
}

#[test]
fn link_cut_in_the_final_pass_leaves_the_guest_at_the_source() {
    // Xen's rule stops after five rounds with pages still dirty (Perf+ runs
    // this small guest down to an empty final pass), and sends them raw:
    // 50 bytes in is inside the final pass's first record.
    let policy = XenDefault::default();
    let run = SimRun::new(&small("web"));
    let m = marks_with(&run, &policy);
    let clean = run.run(&policy, &mut quiet_observer());
    assert!(clean.result.is_ok_and(|r| r.final_pages > 0));
    let (run, mut out, paused) = run_with_fault_using(
        SimFaults {
            cut_after_bytes: Some(m.stop_bytes + 50),
            ..SimFaults::default()
        },
        &policy,
    );
    assert_guest_safe_at_source(&mut out, |s| *s == Stage::FinalPass);
    assert!(paused.is_some(), "it failed while paused");
    twin_memory_matches(&run, &mut out, paused);
}

#[test]
fn link_cut_before_the_acknowledgement_leaves_the_guest_at_the_source() {
    let m = marks(&SimRun::new(&small("web")));
    // The END record is the last 32 bytes: cut inside it.
    let (run, mut out, paused) = run_with_fault(SimFaults {
        cut_after_bytes: Some(m.total - 20),
        ..SimFaults::default()
    });
    assert_guest_safe_at_source(&mut out, |s| matches!(s, Stage::AwaitAck | Stage::CpuState));
    twin_memory_matches(&run, &mut out, paused);
    // And a lost acknowledgement: the sender times out and resumes.
    let (run, mut out, paused) = run_with_fault(SimFaults {
        drop_replies: true,
        ..SimFaults::default()
    });
    let text = assert_guest_safe_at_source(&mut out, |s| *s == Stage::AwaitAck);
    assert!(text.contains("timed out"), "{text}");
    twin_memory_matches(&run, &mut out, paused);
}

#[test]
fn a_corrupt_record_is_refused_and_the_guest_stays_at_the_source() {
    let m = marks(&SimRun::new(&small("web")));
    let (run, mut out, paused) = run_with_fault(SimFaults {
        corrupt_byte_at: Some(m.round_bytes[1] - 50_000),
        ..SimFaults::default()
    });
    let text = assert_guest_safe_at_source(&mut out, |s| matches!(s, Stage::Round(_)));
    assert!(
        text.contains("integrity check"),
        "the receiver's reason reaches the sender: {text}"
    );
    assert_eq!(out.receiver.state(), ReceiverState::Failed);
    twin_memory_matches(&run, &mut out, paused);
}

#[test]
fn a_receiver_that_dies_leaves_the_guest_at_the_source() {
    let m = marks(&SimRun::new(&small("web")));
    let (run, mut out, paused) = run_with_fault(SimFaults {
        peer_dies_after_bytes: Some(m.round_bytes[1] / 2),
        ..SimFaults::default()
    });
    let text = assert_guest_safe_at_source(&mut out, |s| matches!(s, Stage::Round(_)));
    assert!(text.contains("connection lost"), "{text}");
    twin_memory_matches(&run, &mut out, paused);
}

#[test]
fn a_truncated_stream_is_never_resumed_by_the_receiver() {
    let m = marks(&SimRun::new(&small("idle")));
    for cut in [1, 17, m.round_bytes[1] - 5, m.stop_bytes + 9, m.total - 20] {
        let mut run = SimRun::new(&small("idle"));
        run.faults.cut_after_bytes = Some(cut);
        let out = run.run(&PerfPlus::default(), &mut quiet_observer());
        assert!(
            out.result.is_err(),
            "cut at {cut} of {}: {:?}",
            m.total,
            out.result
        );
        assert_eq!(out.receiver.state(), ReceiverState::Failed, "cut at {cut}");
        assert!(
            out.receiver.failure().unwrap().contains("ended early"),
            "cut at {cut}"
        );
        assert!(!out.source.is_paused(), "cut at {cut}");
    }
}

#[test]
fn a_commit_lost_after_the_acknowledgement_resumes_neither_copy() {
    // After the receiver acknowledged a verified stream the source must not
    // resume on its own (the receiver may already run the guest); if the
    // hand-over is cut, both copies stay paused and the error says so.
    let m = marks(&SimRun::new(&small("idle")));
    let mut run = SimRun::new(&small("idle"));
    run.faults.cut_after_bytes = Some(m.total - 1);
    let out = run.run(&PerfPlus::default(), &mut quiet_observer());
    let err = out.result.unwrap_err();
    assert!(
        matches!(err, MigrationError::HandoverUnconfirmed { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("check the receiver"), "{err}");
    assert!(out.source.is_paused());
    assert_ne!(out.receiver.state(), ReceiverState::Resumed);
    assert!(out.receiver.domain().is_paused());
}

#[test]
fn garbage_never_resumes_a_receiver() {
    let mut x = 0x1234_5678_u64;
    for len in [0, 7, 16, 100, 5000] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut r = Receiver::new(SimDomain::blank(64, VirtualClock::new()));
        let _ = r.on_bytes(&bytes);
        let _ = r.on_eof();
        assert_ne!(r.state(), ReceiverState::Resumed);
        assert!(r.domain().is_paused());
    }
}

/// Quiet sim guests for the conformance suite.
struct QuietSim(Workload);

impl ConformanceHarness for QuietSim {
    type Domain = SimDomain;
    fn new_domain(&mut self) -> SimDomain {
        SimDomain::new(&self.0, 3, VirtualClock::new())
    }
    fn new_receiver(&mut self, like: &SimDomain) -> SimDomain {
        SimDomain::blank(like.page_count(), VirtualClock::new())
    }
    fn guest_write(&mut self, domain: &mut SimDomain, pfns: &[Pfn]) {
        for &pfn in pfns {
            domain.guest_write(pfn).unwrap();
        }
    }
}

#[test]
fn the_sim_backend_passes_the_conformance_suite() {
    let mut w = small("sparse-update");
    for writer in &mut w.writers {
        writer.rate_pages_per_s = 0.0;
    }
    check_domain(&mut QuietSim(w));
}

fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

fn prepared_source() -> SimDomain {
    // A quiet guest (its clock never moves) with some pages written.
    let w = small("database");
    let mut source = SimDomain::new(&w, 5, VirtualClock::new());
    for pfn in (0..source.page_count()).step_by(7) {
        source.guest_write(pfn).unwrap();
    }
    source
}

#[test]
fn a_migration_over_tcp_leaves_identical_memory() {
    let (client, server) = tcp_pair();
    let mut source = prepared_source();
    let pages = source.page_count();
    let receiver = std::thread::spawn(move || {
        let (r, result) = receive_tcp(
            server,
            SimDomain::blank(pages, VirtualClock::new()),
            Duration::from_secs(20),
        );
        result.unwrap();
        r.into_domain()
    });
    let policy = PerfPlus::default();
    let transport = TcpTransport::new(client, Duration::from_secs(20)).unwrap();
    let mut sink = PerfplusSink::new(
        transport,
        policy.encodings(),
        4 << 20,
        Duration::from_secs(20),
    );
    let report = migrate(
        &mut source,
        &policy,
        &mut sink,
        &RealClock::new(),
        &EngineConfig::default(),
        &mut quiet_observer(),
    )
    .unwrap();
    assert!(report.verified);
    let mut received = receiver.join().unwrap();
    assert!(!received.is_paused());
    assert_eq!(first_difference(&mut source, &mut received), None);
}

#[test]
fn a_tcp_receiver_that_never_answers_times_out_and_the_guest_stays() {
    let (client, server) = tcp_pair();
    // The "receiver" reads everything and never answers.
    let sink_thread = std::thread::spawn(move || {
        let mut server = server;
        let _ = std::io::copy(&mut server, &mut std::io::sink());
    });
    let mut source = prepared_source();
    let policy = by_name("xen-default").unwrap();
    let transport = TcpTransport::new(client, Duration::from_secs(5)).unwrap();
    let mut sink = PerfplusSink::new(transport, policy.encodings(), 0, Duration::from_millis(300));
    let err = migrate(
        &mut source,
        policy.as_ref(),
        &mut sink,
        &RealClock::new(),
        &EngineConfig::default(),
        &mut quiet_observer(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            MigrationError::Aborted {
                stage: Stage::AwaitAck,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(!source.is_paused());
    drop(sink);
    sink_thread.join().unwrap();
}

#[test]
fn a_tcp_receiver_that_hangs_up_mid_stream_leaves_the_guest_at_the_source() {
    let (client, server) = tcp_pair();
    let closer = std::thread::spawn(move || {
        let mut server = server;
        let mut buf = vec![0; 100_000];
        let _ = std::io::Read::read(&mut server, &mut buf);
        drop(server);
    });
    let mut source = prepared_source();
    let policy = by_name("stop-and-copy").unwrap();
    let transport = TcpTransport::new(client, Duration::from_secs(5)).unwrap();
    let mut sink = PerfplusSink::new(transport, policy.encodings(), 0, Duration::from_secs(5));
    let err = migrate(
        &mut source,
        policy.as_ref(),
        &mut sink,
        &RealClock::new(),
        &EngineConfig::default(),
        &mut quiet_observer(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("running at the source"), "{err}");
    assert!(!source.is_paused());
    closer.join().unwrap();
}
