//! The per-host receiver as a long-running service, on loopback: one
//! listener adopts several incoming guests, each into its own process that
//! resumes from exactly the received state; a replayed migration id is
//! refused and the guest runs on at the source; status queries answer from
//! the outcome registry.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on failure

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use perfplus::backend::arena::workload::{GuestSpec, WorkloadKind};
use perfplus::backend::arena::{
    check_support, query_outcome, send_guest, Arrival, Fate, GuestCommand, GuestProcess, Outcome,
    ReceiveConfig, ReceiveService, SendConfig,
};
use perfplus::migration::engine::ProgressFlow;
use perfplus::migration::policy::PerfPlus;

fn program() -> GuestCommand {
    GuestCommand::new(env!("CARGO_BIN_EXE_perfplus-arena-guest"), &[])
}

#[test]
fn one_receiver_adopts_several_guests_and_refuses_a_replayed_id() {
    let test = "one_receiver_adopts_several_guests_and_refuses_a_replayed_id";
    if let Err(e) = check_support() {
        support::skip(test, &e.to_string());
        return;
    }
    let taken_over = Arc::new(Mutex::new(Vec::new()));
    let mut config = ReceiveConfig::new(program());
    config.take_over = Some({
        let seen = Arc::clone(&taken_over);
        Arc::new(move |spec: &GuestSpec| {
            seen.lock().unwrap().push(spec.workload);
            Ok(())
        })
    });
    let (receiver, arrivals) = ReceiveService::bind("127.0.0.1:0".parse().unwrap(), config)
        .unwrap()
        .spawn()
        .unwrap();

    let mut adopted = Vec::new();
    for (i, kind) in [WorkloadKind::Sparse, WorkloadKind::Muncher]
        .into_iter()
        .enumerate()
    {
        let mut spec = GuestSpec::new(kind, 4096);
        spec.rate_per_s = 2_000;
        spec.seed = 10 + i as u64;
        let guest = GuestProcess::spawn(&program(), &spec).unwrap();
        let config = SendConfig::new(format!("several-{i}"));
        let report = send_guest(
            guest,
            receiver.addr(),
            &PerfPlus::default(),
            &config,
            &mut |_| ProgressFlow::Continue,
        )
        .unwrap_or_else(|f| panic!("{kind}: {}", f.error));
        assert!(report.migration.verified);
        match arrivals.recv_timeout(Duration::from_secs(30)).unwrap() {
            Arrival::Adopted { id, mut guest, .. } => {
                assert_eq!(id, format!("several-{i}"));
                assert_eq!(guest.spec().map(|s| s.workload), Some(kind));
                // Its own process, running from the received state, intact.
                let summary = guest.verify().unwrap();
                assert!(summary.starts_with(kind.name()), "{summary}");
                adopted.push(guest);
            }
            other => panic!("{kind}: {other:?}"),
        }
        assert_eq!(
            query_outcome(receiver.addr(), &config.id, Duration::from_secs(5)).unwrap(),
            Outcome::Committed
        );
    }
    assert_ne!(adopted[0].pid(), adopted[1].pid());
    assert_eq!(
        *taken_over.lock().unwrap(),
        vec![WorkloadKind::Sparse, WorkloadKind::Muncher]
    );

    // The same id again is a replay: refused, and the guest runs on here.
    let guest = GuestProcess::spawn(&program(), &GuestSpec::new(WorkloadKind::Idle, 1024)).unwrap();
    let failure = send_guest(
        guest,
        receiver.addr(),
        &PerfPlus::default(),
        &SendConfig::new("several-0"),
        &mut |_| ProgressFlow::Continue,
    )
    .expect_err("a replayed id must be refused");
    assert!(
        failure.error.to_string().contains("seen before"),
        "{}",
        failure.error
    );
    let Fate::RunsHere(mut guest) = failure.fate else {
        panic!("the guest should run on at the source: {:?}", failure.fate);
    };
    assert!(guest.verify().is_ok());
    assert!(matches!(
        arrivals.recv_timeout(Duration::from_secs(10)).unwrap(),
        Arrival::Failed { .. }
    ));
    // An id the receiver never saw is answered as aborted (and stays so).
    assert_eq!(
        query_outcome(receiver.addr(), "never-sent", Duration::from_secs(5)).unwrap(),
        Outcome::Aborted
    );
}
