//! Guest processes over the arena: tracked from another process, paused
//! and throttled with signals, moved page by page into a new process that
//! adopts the memory and resumes the workload from exactly that state.
//!
//! The moves here drive the `Domain` by hand (enable, copy, harvest rounds,
//! pause, final copy, state): they test the backend, not a migration
//! algorithm.

#![allow(clippy::cast_possible_truncation)] // page indices of small test arenas
#![allow(clippy::unwrap_used)] // test helpers panic on failure, like the tests

mod support;

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use perfplus::backend::arena::workload::kv_client::{check_writes, Load, LoadConfig};
use perfplus::backend::arena::workload::{GuestSpec, WorkloadKind};
use perfplus::backend::arena::{
    check_support, ArenaDomain, ArenaError, GuestCommand, GuestProcess,
};
use perfplus::backend::{BackendError, CpuShare, DirtyBitmap, Domain, Pfn};

fn tracking_available(test: &str) -> bool {
    match check_support() {
        Ok(()) => true,
        Err(e @ ArenaError::Unsupported { .. }) => {
            support::skip(test, &e.to_string());
            false
        }
        Err(e) => panic!("{test}: arena probe failed: {e}"),
    }
}

fn guest_command() -> GuestCommand {
    GuestCommand::new(env!("CARGO_BIN_EXE_perfplus-arena-guest"), &[])
}

fn spawn(spec: &GuestSpec) -> ArenaDomain {
    ArenaDomain::process(GuestProcess::spawn(&guest_command(), spec).unwrap()).unwrap()
}

fn spawn_incoming(pages: u64) -> ArenaDomain {
    ArenaDomain::process(GuestProcess::spawn_incoming(&guest_command(), pages).unwrap()).unwrap()
}

fn copy(src: &mut ArenaDomain, dst: &mut ArenaDomain, pfns: &[Pfn]) {
    let page = src.page_size();
    let mut buf = vec![0_u8; 256 * page];
    for chunk in pfns.chunks(256) {
        let buf = &mut buf[..chunk.len() * page];
        src.read_pages(chunk, buf).unwrap();
        dst.write_pages(chunk, buf).unwrap();
    }
}

/// Pre-copy by hand: everything, `rounds` of dirty pages, then pause and the
/// rest plus the state. Leaves the source paused and the destination loaded.
fn move_memory(src: &mut ArenaDomain, dst: &mut ArenaDomain, rounds: usize) -> u64 {
    let pages = src.page_count();
    src.enable_dirty_log().unwrap();
    let all: Vec<Pfn> = (0..pages).collect();
    copy(src, dst, &all);
    let mut dirty = DirtyBitmap::new(pages);
    let mut sent = pages;
    for _ in 0..rounds {
        dirty.clear();
        src.harvest_dirty(&mut dirty).unwrap();
        let pfns: Vec<Pfn> = dirty.iter().collect();
        sent += pfns.len() as u64;
        copy(src, dst, &pfns);
    }
    src.pause().unwrap();
    dirty.clear();
    src.harvest_dirty(&mut dirty).unwrap();
    let pfns: Vec<Pfn> = dirty.iter().collect();
    sent += pfns.len() as u64;
    copy(src, dst, &pfns);
    let state = src.save_state().unwrap();
    dst.restore_state(&state).unwrap();
    src.disable_dirty_log().unwrap();
    sent
}

fn assert_same_memory(a: &mut ArenaDomain, b: &mut ArenaDomain) {
    let page = a.page_size();
    let mut x = vec![0_u8; 256 * page];
    let mut y = vec![0_u8; 256 * page];
    let all: Vec<Pfn> = (0..a.page_count()).collect();
    for chunk in all.chunks(256) {
        let n = chunk.len() * page;
        a.read_pages(chunk, &mut x[..n]).unwrap();
        b.read_pages(chunk, &mut y[..n]).unwrap();
        for (i, p) in chunk.iter().enumerate() {
            assert!(
                x[i * page..(i + 1) * page] == y[i * page..(i + 1) * page],
                "page {p} differs"
            );
        }
    }
}

fn counter(summary: &str, key: &str) -> u64 {
    summary
        .split(' ')
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {summary:?}"))
}

fn move_and_resume(kind: WorkloadKind, rate: u64, progress_key: &str) {
    let mut spec = GuestSpec::new(kind, 8192); // 32 MiB
    spec.rate_per_s = rate;
    spec.area_pct = 25;
    let mut src = spawn(&spec);
    let mut dst = spawn_incoming(spec.pages);
    std::thread::sleep(Duration::from_millis(200));
    move_memory(&mut src, &mut dst, 3);
    assert_same_memory(&mut src, &mut dst);
    // The workload's progress register (header word 16), as the source left it.
    let mut header = vec![0_u8; src.page_size()];
    src.read_pages(&[0], &mut header).unwrap();
    let register = u64::from_le_bytes(header[128..136].try_into().unwrap());
    let at_pause = if kind == WorkloadKind::Muncher {
        register >> 32
    } else {
        register
    };
    src.into_process().unwrap().kill().unwrap();
    dst.resume().unwrap();
    let after = dst.guest_process().unwrap().verify().unwrap();
    assert!(
        counter(&after, progress_key) >= at_pause,
        "{at_pause} -> {after}"
    );
    // It keeps working from there.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut later = after;
    while counter(&later, progress_key) <= at_pause && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        later = dst.guest_process().unwrap().verify().unwrap();
    }
    assert!(
        counter(&later, progress_key) > at_pause,
        "the adopted {kind} guest made no progress: {at_pause} -> {later}"
    );
}

#[test]
fn sparse_guest_moves_to_a_new_process_and_resumes_from_the_same_state() {
    if tracking_available("sparse_guest_moves_to_a_new_process_and_resumes_from_the_same_state") {
        move_and_resume(WorkloadKind::Sparse, 100_000, "ops");
    }
}

#[test]
fn muncher_guest_moves_to_a_new_process_and_resumes_from_the_same_state() {
    if tracking_available("muncher_guest_moves_to_a_new_process_and_resumes_from_the_same_state") {
        move_and_resume(WorkloadKind::Muncher, 20_000, "generation");
    }
}

#[test]
fn idle_guest_moves_to_a_new_process_and_resumes_from_the_same_state() {
    if tracking_available("idle_guest_moves_to_a_new_process_and_resumes_from_the_same_state") {
        move_and_resume(WorkloadKind::Idle, 100, "ticks");
    }
}

#[test]
fn a_paused_guest_writes_nothing_and_a_capped_one_still_runs() {
    if !tracking_available("a_paused_guest_writes_nothing_and_a_capped_one_still_runs") {
        return;
    }
    let mut spec = GuestSpec::new(WorkloadKind::Sparse, 4096);
    spec.rate_per_s = 0;
    let mut guest = spawn(&spec);
    guest.enable_dirty_log().unwrap();
    let mut dirty = DirtyBitmap::new(spec.pages);
    let writes_within = |guest: &mut ArenaDomain, dirty: &mut DirtyBitmap, pages: u64| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while dirty.count() < pages && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            guest.harvest_dirty(dirty).unwrap();
        }
    };
    writes_within(&mut guest, &mut dirty, 11);
    assert!(
        dirty.count() > 10,
        "an unthrottled sparse guest writes: {}",
        dirty.count()
    );

    for _ in 0..3 {
        guest.pause().unwrap();
        guest.pause().unwrap(); // idempotent
        assert!(guest.is_paused());
        dirty.clear();
        guest.harvest_dirty(&mut dirty).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        dirty.clear();
        guest.harvest_dirty(&mut dirty).unwrap();
        assert!(
            dirty.is_empty(),
            "{} pages written while paused",
            dirty.count()
        );
        guest.resume().unwrap();
        guest.resume().unwrap();
        assert!(!guest.is_paused());
    }

    // Capped to 10 %: still progresses, and pause still wins over the cap.
    guest.set_cpu_cap(CpuShare::percent(10)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut written = 0;
    while written < 100 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        dirty.clear();
        guest.harvest_dirty(&mut dirty).unwrap();
        written += dirty.count();
    }
    assert!(written >= 100, "a capped guest made no progress");
    guest.pause().unwrap();
    dirty.clear();
    guest.harvest_dirty(&mut dirty).unwrap();
    std::thread::sleep(Duration::from_millis(60)); // three duty periods
    dirty.clear();
    guest.harvest_dirty(&mut dirty).unwrap();
    assert!(dirty.is_empty(), "the throttle resumed a paused guest");
    guest.resume().unwrap();
    dirty.clear();
    writes_within(&mut guest, &mut dirty, 1);
    assert!(!dirty.is_empty(), "resume left the guest stopped");
    guest.disable_dirty_log().unwrap();
}

/// Wait (up to 10 s, never asserting on time) until the load has more than
/// `n` acknowledged writes.
fn wait_for_writes_beyond(load: &Load, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while load.writes_acknowledged() <= n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A kv guest of `pages` with `keys` keys, serving on a free port.
fn kv_spec(pages: u64, keys: u64) -> (SocketAddr, GuestSpec) {
    let addr = free_port();
    let mut spec = GuestSpec::new(WorkloadKind::Kv, pages);
    spec.keys = keys;
    spec.listen = Some(addr);
    (addr, spec)
}

#[test]
fn kv_service_moves_between_processes_without_losing_an_acknowledged_write() {
    if !tracking_available(
        "kv_service_moves_between_processes_without_losing_an_acknowledged_write",
    ) {
        return;
    }
    let (addr, spec) = kv_spec(16_384, 50_000); // 64 MiB
    let mut src = spawn(&spec);
    let mut config = LoadConfig::new(addr, spec.keys);
    config.connections = 3;
    let load = Load::start(&config).unwrap();
    wait_for_writes_beyond(&load, 2000);
    let mut dst = spawn_incoming(spec.pages);
    move_memory(&mut src, &mut dst, 3);
    let acked_at_pause = load.writes_acknowledged();
    src.into_process().unwrap().kill().unwrap();
    dst.resume().unwrap();
    wait_for_writes_beyond(&load, acked_at_pause + 2000);
    let report = load.stop();
    assert!(
        report.writes_acknowledged > acked_at_pause,
        "no write acknowledged after the move ({} before, {} total)",
        acked_at_pause,
        report.writes_acknowledged
    );
    let check = check_writes(addr, &report, Duration::from_secs(10)).unwrap();
    eprintln!(
        "kv move: {} writes acknowledged ({} before the pause), {} unknown, gap {:.1} ms, {} reconnects; {check:?}",
        report.writes_acknowledged, acked_at_pause, report.writes_unknown, report.service_gap_ms, report.reconnects
    );
    assert_eq!(check.writes_lost, 0, "{check:?}");
    assert_eq!(check.writes_phantom, 0, "{check:?}");
    assert_eq!(check.writes_found, report.writes_acknowledged);
    let summary = dst.guest_process().unwrap().verify().unwrap();
    assert_eq!(counter(&summary, "keys"), spec.keys, "{summary}");
}

#[test]
fn kv_with_a_write_log_recovers_every_acknowledged_write_after_its_host_dies() {
    if !tracking_available(
        "kv_with_a_write_log_recovers_every_acknowledged_write_after_its_host_dies",
    ) {
        return;
    }
    let wal = support::scratch_dir("arena-kv-wal");
    let (addr, mut spec) = kv_spec(4096, 10_000);
    spec.wal_dir = Some(wal.clone());
    let mut first = GuestProcess::spawn(&guest_command(), &spec).unwrap();
    let mut config = LoadConfig::new(addr, spec.keys);
    config.connections = 2;
    let load = Load::start(&config).unwrap();
    wait_for_writes_beyond(&load, 1000);
    first.kill().unwrap(); // the host dies: its memory is gone
    let acked_at_death = load.writes_acknowledged();
    // Restarted elsewhere from nothing but the shared log.
    let second = GuestProcess::spawn(&guest_command(), &spec).unwrap();
    wait_for_writes_beyond(&load, acked_at_death + 500);
    let report = load.stop();
    let check = check_writes(addr, &report, Duration::from_secs(10)).unwrap();
    drop(second);
    assert!(acked_at_death > 0);
    assert_eq!(check.writes_lost, 0, "{check:?}");
    assert_eq!(check.writes_phantom, 0, "{check:?}");
    assert!(
        report.writes_acknowledged > acked_at_death,
        "no writes after the restart"
    );
}

#[test]
fn an_incoming_guest_refuses_state_for_another_arena() {
    if !tracking_available("an_incoming_guest_refuses_state_for_another_arena") {
        return;
    }
    let mut dst = spawn_incoming(64);
    let spec = GuestSpec::new(WorkloadKind::Idle, 128);
    assert!(matches!(
        dst.restore_state(&spec.to_blob()),
        Err(BackendError::InvalidState { .. })
    ));
    assert!(matches!(
        dst.restore_state(b"\xff\x00garbage"),
        Err(BackendError::InvalidState { .. })
    ));
    // Starting without a state is refused too, and the guest stays unstarted.
    assert!(matches!(
        dst.resume(),
        Err(BackendError::InvalidState { .. })
    ));
    assert!(dst.is_paused());
    // Memory that is not this workload's is refused at adoption.
    let spec = GuestSpec::new(WorkloadKind::Idle, 64);
    dst.restore_state(&spec.to_blob()).unwrap();
    let err = dst.resume().unwrap_err();
    assert!(err.to_string().contains("header"), "{err}");
}

#[test]
fn a_guest_that_died_is_reported_gone() {
    if !tracking_available("a_guest_that_died_is_reported_gone") {
        return;
    }
    let spec = GuestSpec::new(WorkloadKind::Idle, 64);
    let mut guest = spawn(&spec);
    let pid = guest.guest_process().unwrap().pid();
    // SAFETY-free way to kill it behind the domain's back.
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let _ = guest.guest_process().unwrap().has_exited(); // reap
    let mut buf = vec![0_u8; guest.page_size()];
    let err = guest.read_pages(&[0], &mut buf).unwrap_err();
    assert!(matches!(err, BackendError::Gone { .. }), "{err}");
    assert!(guest.pause().is_err());
}

#[test]
fn another_process_reports_exactly_the_pages_its_guest_wrote() {
    if !tracking_available("another_process_reports_exactly_the_pages_its_guest_wrote") {
        return;
    }
    let mut spec = GuestSpec::new(WorkloadKind::Idle, 4096);
    spec.rate_per_s = 0; // quiet: writes only when told
    let mut guest = spawn(&spec);
    guest.enable_dirty_log().unwrap();
    let mut dirty = DirtyBitmap::new(spec.pages);
    guest.harvest_dirty(&mut dirty).unwrap();
    assert!(
        dirty.is_empty(),
        "a quiet guest wrote {} pages",
        dirty.count()
    );
    let mut x = 0x5eed_u64;
    for round in 0..30 {
        let mut pages: Vec<Pfn> = (0..(round * 37 % 700 + 1))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % spec.pages
            })
            .collect();
        guest.guest_process().unwrap().touch(&pages).unwrap();
        dirty.clear();
        guest.harvest_dirty(&mut dirty).unwrap();
        pages.sort_unstable();
        pages.dedup();
        assert_eq!(dirty.iter().collect::<Vec<_>>(), pages, "round {round}");
    }
}

fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let i = stat.rfind(')')?;
    stat[i + 1..].trim_start().chars().next()
}

/// A fake receiver status service answering `answer` to every query.
fn status_service(answer: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        for stream in listener.incoming().take(4) {
            let mut stream = stream.unwrap();
            let mut line = String::new();
            std::io::BufReader::new(&stream)
                .read_line(&mut line)
                .unwrap();
            assert_eq!(line, "STATUS mig-1\n");
            stream.write_all(answer.as_bytes()).unwrap();
        }
    });
    addr
}

/// Pause the guest under a lease, then let its controller vanish.
fn orphan_while_stopped(answer: &'static str) -> (i32, u32) {
    let mut spec = GuestSpec::new(WorkloadKind::Idle, 64);
    spec.rate_per_s = 100;
    let mut domain = spawn(&spec);
    domain
        .guest_process()
        .unwrap()
        .lease("mig-1", status_service(answer))
        .unwrap();
    domain.pause().unwrap();
    let mut guest = domain.into_process().unwrap();
    let (pid, keeper) = (guest.pid(), guest.keeper_pid());
    assert_eq!(process_state(pid), Some('T'));
    guest.release().unwrap();
    guest.lease("mig-1", status_service(answer)).unwrap();
    guest.detach(); // the controller's end of the pipe closes: it "died"
    (pid, keeper)
}

#[test]
fn an_orphaned_stopped_guest_runs_on_when_the_receiver_aborted() {
    if !tracking_available("an_orphaned_stopped_guest_runs_on_when_the_receiver_aborted") {
        return;
    }
    let (pid, keeper) = orphan_while_stopped("ABORTED\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_state(pid) == Some('T') && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let state = process_state(pid);
    let _ = std::process::Command::new("kill")
        .args(["-9", &keeper.to_string()])
        .status();
    assert!(
        matches!(state, Some('S' | 'R')),
        "the guest was not continued: {state:?}"
    );
}

#[test]
fn an_orphaned_stopped_guest_ends_when_the_receiver_committed() {
    if !tracking_available("an_orphaned_stopped_guest_ends_when_the_receiver_committed") {
        return;
    }
    let (pid, keeper) = orphan_while_stopped("COMMITTED\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_state(pid).is_some_and(|s| s != 'Z') && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let state = process_state(pid);
    let _ = std::process::Command::new("kill")
        .args(["-9", &keeper.to_string()])
        .status();
    assert!(
        matches!(state, None | Some('Z')),
        "the source guest still exists: {state:?}"
    );
}

#[test]
fn a_stopped_guest_whose_connections_end_frees_its_clients_and_its_address() {
    use std::io::{BufRead, BufReader, Write};
    if !tracking_available(
        "a_stopped_guest_whose_connections_end_frees_its_clients_and_its_address",
    ) {
        return;
    }
    let (addr, spec) = kv_spec(4096, 1000); // 16 MiB
    let mut domain = spawn(&spec);
    let client = std::net::TcpStream::connect(addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut writer = client;
    let mut line = String::new();
    writer.write_all(b"INCR 7\n").unwrap();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "VALUE 1\n");
    // Stopped, as a migration's final pass stops it; a request sent now
    // is never answered.
    domain.pause().unwrap();
    let mut guest = domain.into_process().unwrap();
    let pid = guest.pid();
    assert_eq!(process_state(pid), Some('T'));
    writer.write_all(b"INCR 7\n").unwrap();

    let ended = guest.end_connections().unwrap();
    assert!(
        ended >= 2,
        "the listener and one connection: {ended} shut down"
    );
    // The client sees its connection end (no answer, end of file), while
    // the guest is still stopped: it never ran again.
    line.clear();
    let got = reader.read_line(&mut line);
    assert!(
        matches!(got, Ok(0))
            || got
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{got:?} {line:?}"
    );
    assert_eq!(process_state(pid), Some('T'));
    // Its address is free for the next guest on this host.
    let next = TcpListener::bind(addr);
    assert!(next.is_ok(), "{next:?}");
    drop(next);
    guest.kill().unwrap();
}
