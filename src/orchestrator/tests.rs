//! Scenario tests on simulated time, and invariants under random inputs.

use proptest::prelude::*;

use super::*;

const H1: HostId = HostId(1);
const H2: HostId = HostId(2);
const H3: HostId = HostId(3);

fn hosts(capacity_mib: u64) -> Vec<HostSpec> {
    [H1, H2, H3]
        .into_iter()
        .map(|id| HostSpec { id, capacity_mib })
        .collect()
}

/// Health as a percentage of 4 ping nodes reached.
fn hp(percent: u8) -> Health {
    Health {
        reachable: (percent + 12) / 25,
        configured: 4,
    }
}

fn guest(name: &str, memory_mib: u64) -> ResourceSpec {
    ResourceSpec {
        name: name.into(),
        memory_mib,
        home: None,
        allowed_hosts: Vec::new(),
        sticky: false,
    }
}

/// One host's orchestrator, driven by hand on a simulated clock.
struct Sim {
    orch: Orchestrator,
    now_ms: u64,
}

impl Sim {
    fn new(local: HostId, capacity_mib: u64, resources: Vec<(ResourceSpec, HostId)>) -> Self {
        Self::with_config(
            OrchestratorConfig::new(local, hosts(capacity_mib)),
            resources,
        )
    }

    fn with_config(config: OrchestratorConfig, resources: Vec<(ResourceSpec, HostId)>) -> Self {
        let mut sim = Self {
            orch: Orchestrator::new(config, resources).unwrap(),
            now_ms: 0,
        };
        sim.input(Input::View {
            live: vec![H1, H2, H3],
            quorate: true,
        });
        for host in [H1, H2, H3] {
            sim.input(Input::Health {
                host,
                health: hp(100),
            });
        }
        sim
    }

    fn input(&mut self, input: Input) -> Vec<Output> {
        self.orch.handle(self.now_ms, input)
    }

    /// Report the end of the move in flight for `resource` (a migration to
    /// its destination, or a start), as the runtime would.
    fn finish(&mut self, resource: &str, ok: bool) -> Vec<Output> {
        let input = match self.orch.placement(resource) {
            Some(Placement::Migrating { to, .. }) => Input::MigrationDone {
                resource: resource.into(),
                to,
                ok,
            },
            Some(Placement::Starting(host)) => Input::StartDone {
                resource: resource.into(),
                host,
                ok,
            },
            other => panic!("{resource} is not moving: {other:?}"),
        };
        self.input(input)
    }

    fn advance(&mut self, ms: u64) -> Vec<Output> {
        self.now_ms += ms;
        self.orch.tick(self.now_ms)
    }
}

fn actions(out: &[Output]) -> Vec<Action> {
    out.iter()
        .filter_map(|o| match o {
            Output::Act(a) => Some(a.clone()),
            Output::Event(_) => None,
        })
        .collect()
}

fn events(out: &[Output]) -> Vec<Event> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            Output::Act(_) => None,
        })
        .collect()
}

fn migrate(resource: &str, from: HostId, to: HostId) -> Action {
    Action::Migrate {
        resource: resource.into(),
        from,
        to,
    }
}

#[test]
fn uplink_loss_moves_guests_to_the_healthiest_host_after_the_grace_period() {
    let mut sim = Sim::new(H1, 4096, vec![(guest("web", 512), H2)]);
    sim.input(Input::Health {
        host: H3,
        health: hp(80),
    });
    assert!(actions(&sim.input(Input::Health {
        host: H2,
        health: hp(0)
    }))
    .is_empty());
    // Not yet: the grace period filters a lost ping or two.
    assert!(actions(&sim.advance(500)).is_empty());
    let out = sim.advance(500);
    // H1 (health 100) beats H3 (80).
    assert_eq!(actions(&out), vec![migrate("web", H2, H1)]);
    assert!(events(&out).contains(&Event::Decided {
        action: migrate("web", H2, H1),
        reason: Reason::UplinkLost {
            host: H2,
            health: hp(0),
            best_peer_health: hp(100)
        },
    }));
    assert_eq!(
        sim.orch.placement("web"),
        Some(Placement::Migrating { from: H2, to: H1 })
    );
    sim.finish("web", true);
    assert_eq!(sim.orch.placement("web"), Some(Placement::Running(H1)));
}

#[test]
fn uplink_blip_shorter_than_the_grace_period_moves_nothing() {
    let mut sim = Sim::new(H1, 4096, vec![(guest("web", 512), H2)]);
    sim.input(Input::Health {
        host: H2,
        health: hp(50),
    });
    sim.advance(900);
    sim.input(Input::Health {
        host: H2,
        health: hp(100),
    });
    let out = sim.advance(5_000);
    assert!(actions(&out).is_empty(), "{out:?}");
    assert_eq!(sim.orch.placement("web"), Some(Placement::Running(H2)));
}

#[test]
fn all_uplinks_down_moves_nothing() {
    // Every host lost the outside world: nowhere is better.
    let mut sim = Sim::new(H1, 4096, vec![(guest("web", 512), H2)]);
    for h in [H1, H2, H3] {
        sim.input(Input::Health {
            host: h,
            health: hp(0),
        });
    }
    assert!(actions(&sim.advance(10_000)).is_empty());
}

#[test]
fn migrations_leave_one_host_one_at_a_time() {
    let resources = vec![(guest("a", 256), H2), (guest("b", 256), H2)];
    let mut sim = Sim::new(H1, 4096, resources);
    sim.input(Input::Health {
        host: H2,
        health: hp(0),
    });
    let first = actions(&sim.advance(1_000));
    assert_eq!(first, vec![migrate("a", H2, H1)]);
    let out = sim.finish("a", true);
    // H1 now holds 256 MiB more than H3: H3 has the most room.
    assert_eq!(actions(&out), vec![migrate("b", H2, H3)]);
}

#[test]
fn dead_host_guests_restart_only_once_recovery_is_allowed() {
    let mut sim = Sim::new(H1, 4096, vec![(guest("db", 1024), H3)]);
    sim.input(Input::View {
        live: vec![H1, H2],
        quorate: true,
    });
    let out = sim.input(Input::HostDead(H3));
    assert!(actions(&out).is_empty(), "{out:?}");
    assert!(events(&out).contains(&Event::AwaitingRecovery(H3)));
    assert_eq!(sim.orch.placement("db"), Some(Placement::Lost(H3)));
    let out = sim.input(Input::RecoveryAllowed(H3));
    assert_eq!(
        actions(&out),
        vec![Action::Start {
            resource: "db".into(),
            on: H1
        }]
    );
    assert!(events(&out).iter().any(|e| matches!(
        e,
        Event::Decided {
            reason: Reason::HostFenced(H3),
            ..
        }
    )));
    sim.finish("db", true);
    assert_eq!(sim.orch.placement("db"), Some(Placement::Running(H1)));
}

#[test]
fn without_recovery_allowed_guests_stay_down() {
    let mut sim = Sim::new(H1, 4096, vec![(guest("db", 1024), H3)]);
    sim.input(Input::View {
        live: vec![H1, H2],
        quorate: true,
    });
    sim.input(Input::HostDead(H3));
    for _ in 0..30 {
        let out = sim.advance(1_000);
        assert!(
            actions(&out).is_empty(),
            "never restart an unfenced host's guests: {out:?}"
        );
    }
    assert_eq!(sim.orch.placement("db"), Some(Placement::Lost(H3)));
}

#[test]
fn recovery_is_ignored_for_a_live_host() {
    // A stale "recovery allowed" must not restart guests of a host that is up.
    let mut sim = Sim::new(H1, 4096, vec![(guest("db", 1024), H3)]);
    let out = sim.input(Input::RecoveryAllowed(H3));
    assert!(actions(&out).is_empty(), "{out:?}");
    assert_eq!(sim.orch.placement("db"), Some(Placement::Running(H3)));
}

#[test]
fn partition_without_quorum_decides_nothing() {
    let mut sim = Sim::new(
        H1,
        4096,
        vec![(guest("db", 1024), H3), (guest("web", 512), H1)],
    );
    let out = sim.input(Input::View {
        live: vec![H1],
        quorate: false,
    });
    assert!(events(&out).contains(&Event::QuorumLost));
    let mut all = sim.input(Input::HostDead(H3));
    all.extend(sim.input(Input::HostDead(H2)));
    all.extend(sim.input(Input::RecoveryAllowed(H3)));
    all.extend(sim.input(Input::Health {
        host: H1,
        health: hp(0),
    }));
    all.extend(sim.advance(120_000));
    assert!(actions(&all).is_empty(), "{all:?}");
}

#[test]
fn only_the_lowest_live_host_decides() {
    let resources = vec![(guest("web", 512), H3)];
    let mut h1 = Sim::new(H1, 4096, resources.clone());
    let mut h2 = Sim::new(H2, 4096, resources);
    for sim in [&mut h1, &mut h2] {
        sim.input(Input::Health {
            host: H3,
            health: hp(0),
        });
    }
    assert_eq!(actions(&h1.advance(1_000)), vec![migrate("web", H3, H1)]);
    assert!(actions(&h2.advance(1_000)).is_empty());
    assert!(h1.orch.is_decider() && !h2.orch.is_decider());
}

#[test]
fn a_new_decider_finishes_what_the_dead_one_started() {
    // H3 died; H1, the decider, died too before recovery was allowed.
    let mut h2 = Sim::new(H2, 4096, vec![(guest("db", 1024), H3)]);
    h2.input(Input::View {
        live: vec![H1, H2],
        quorate: true,
    });
    assert!(actions(&h2.input(Input::HostDead(H3))).is_empty());
    // With a quorum device or the two-node tie-break H2 stays quorate.
    let out = h2.input(Input::View {
        live: vec![H2],
        quorate: true,
    });
    assert!(events(&out).contains(&Event::BecameDecider));
    h2.input(Input::HostDead(H1));
    let out = h2.input(Input::RecoveryAllowed(H3));
    assert_eq!(
        actions(&out),
        vec![Action::Start {
            resource: "db".into(),
            on: H2
        }]
    );
}

#[test]
fn flapping_uplink_moves_a_guest_at_most_once_per_interval() {
    let mut config = OrchestratorConfig::new(
        H1,
        vec![
            HostSpec {
                id: H1,
                capacity_mib: 4096,
            },
            HostSpec {
                id: H2,
                capacity_mib: 4096,
            },
        ],
    );
    config.min_move_interval_ms = 60_000;
    let mut sim = Sim::with_config(config, vec![(guest("web", 512), H1)]);
    sim.input(Input::View {
        live: vec![H1, H2],
        quorate: true,
    });
    let mut moves = Vec::new();
    // Each host's uplink fails in turn every 2 s, for 3 minutes.
    for step in 0..90_u64 {
        let (bad, good) = if step % 2 == 0 { (H1, H2) } else { (H2, H1) };
        sim.input(Input::Health {
            host: good,
            health: hp(100),
        });
        let out = sim.input(Input::Health {
            host: bad,
            health: hp(0),
        });
        let mut out = out;
        out.extend(sim.advance(2_000));
        for a in actions(&out) {
            moves.push(sim.now_ms);
            if let Action::Migrate { resource, .. } = a {
                sim.finish(&resource, true);
            }
        }
    }
    assert!(!moves.is_empty());
    for pair in moves.windows(2) {
        assert!(pair[1] - pair[0] >= 60_000, "moves at {moves:?}");
    }
}

#[test]
fn a_guest_started_at_its_home_moves_at_once_when_that_uplink_fails() {
    let mut config = OrchestratorConfig::new(H1, hosts(4096));
    config.min_move_interval_ms = 60_000;
    let mut sim = Sim::with_config(config, vec![(guest("web", 512), H2)]);
    // The cold start: H2 starts its home guest (not a move).
    sim.input(Input::StartDone {
        resource: "web".into(),
        host: H2,
        ok: true,
    });
    sim.advance(1_000);
    sim.input(Input::Health {
        host: H2,
        health: hp(0),
    });
    let out = sim.advance(1_000);
    assert_eq!(actions(&out), vec![migrate("web", H2, H1)], "{out:?}");
}

#[test]
fn capacity_limits_where_guests_go() {
    let mut sim = Sim::new(
        H1,
        1024,
        vec![
            (guest("a", 768), H1),
            (guest("b", 768), H2),
            (guest("c", 768), H3),
        ],
    );
    sim.input(Input::View {
        live: vec![H1, H2],
        quorate: true,
    });
    sim.input(Input::HostDead(H3));
    let out = sim.input(Input::RecoveryAllowed(H3));
    assert!(
        actions(&out).is_empty(),
        "no host has 768 MiB free: {out:?}"
    );
    assert!(events(&out).iter().any(|e| matches!(
        e,
        Event::NoRoom { resource, .. } if resource == "c"
    )));
}

#[test]
fn pinned_guest_goes_only_to_its_allowed_hosts() {
    let mut pinned = guest("licensed", 256);
    pinned.allowed_hosts = vec![H2, H3];
    let mut sim = Sim::new(H1, 4096, vec![(pinned, H2)]);
    sim.input(Input::Health {
        host: H3,
        health: hp(40),
    });
    sim.input(Input::Health {
        host: H2,
        health: hp(0),
    });
    // H1 is healthier but not allowed.
    assert_eq!(
        actions(&sim.advance(1_000)),
        vec![migrate("licensed", H2, H3)]
    );
}

#[test]
fn standby_evacuates_by_live_migration_without_waiting() {
    let mut sim = Sim::new(H1, 4096, vec![(guest("web", 512), H3)]);
    sim.input(Input::Running {
        resource: "web".into(),
        host: H3,
    });
    let out = sim.input(Input::Standby { host: H3, on: true });
    assert_eq!(actions(&out), vec![migrate("web", H3, H1)]);
    sim.finish("web", true);
    // Standby hosts receive nothing.
    sim.input(Input::Health {
        host: H1,
        health: hp(0),
    });
    assert_eq!(actions(&sim.advance(61_000)), vec![migrate("web", H1, H2)]);
}

#[test]
fn failback_happens_only_when_configured_and_not_for_sticky_guests() {
    for (auto_failback, sticky, expect_move) in [
        (false, false, false),
        (true, true, false),
        (true, false, true),
    ] {
        let mut config = OrchestratorConfig::new(H1, hosts(4096));
        config.auto_failback = auto_failback;
        let mut spec = guest("web", 512);
        spec.home = Some(H2);
        spec.sticky = sticky;
        let mut sim = Sim::with_config(config, vec![(spec, H2)]);
        sim.input(Input::Health {
            host: H2,
            health: hp(0),
        });
        let out = sim.advance(1_000);
        assert_eq!(actions(&out), vec![migrate("web", H2, H1)]);
        sim.finish("web", true);
        sim.input(Input::Health {
            host: H2,
            health: hp(100),
        });
        let out = sim.advance(60_000);
        let back = actions(&out) == vec![migrate("web", H1, H2)];
        assert_eq!(
            back, expect_move,
            "auto_failback {auto_failback} sticky {sticky}: {out:?}"
        );
    }
}

#[test]
fn destination_death_mid_migration_leaves_the_guest_at_the_source() {
    // H1 decides; "busy" makes H3 the roomiest target for "web".
    let mut sim = Sim::new(
        H1,
        4096,
        vec![(guest("web", 512), H2), (guest("busy", 1024), H1)],
    );
    let out = sim.input(Input::Standby { host: H2, on: true });
    assert_eq!(actions(&out), vec![migrate("web", H2, H3)]);
    sim.input(Input::View {
        live: vec![H1, H2],
        quorate: true,
    });
    let out = sim.input(Input::HostDead(H3));
    // The guest never left H2: evacuate it to the other host.
    assert_eq!(actions(&out), vec![migrate("web", H2, H1)]);
}

#[test]
fn a_source_host_taking_over_as_decider_finishes_its_own_evacuation() {
    // H2 runs "web" and was told (by decider H1) to migrate it to H1 because
    // H2 is in standby; H1 dies mid-stream, so the guest stays on H2.
    let mut h2 = Sim::new(H2, 4096, vec![(guest("web", 512), H2)]);
    h2.input(Input::Standby { host: H2, on: true });
    assert!(actions(&h2.input(Input::Standby { host: H2, on: true })).is_empty());
    // H1 leaves the view: H2 is the decider now and evacuates at once...
    let out = h2.input(Input::View {
        live: vec![H2, H3],
        quorate: true,
    });
    assert!(events(&out).contains(&Event::BecameDecider));
    assert_eq!(actions(&out), vec![migrate("web", H2, H3)]);
    // H1's death changes nothing more: it ran no guest.
    let out = h2.input(Input::HostDead(H1));
    assert!(actions(&out).is_empty(), "{out:?}");
}

#[test]
fn failed_migration_keeps_the_guest_at_the_source_and_is_retried_after_a_pause() {
    let mut sim = Sim::new(H1, 4096, vec![(guest("web", 512), H2)]);
    sim.input(Input::Health {
        host: H2,
        health: hp(0),
    });
    assert_eq!(actions(&sim.advance(1_000)), vec![migrate("web", H2, H1)]);
    let out = sim.finish("web", false);
    assert!(events(&out).contains(&Event::MigrationFailed {
        resource: "web".into(),
        host: H2
    }));
    assert_eq!(sim.orch.placement("web"), Some(Placement::Running(H2)));
    assert!(actions(&sim.advance(4_000)).is_empty());
    assert_eq!(sim.orch.next_wakeup_ms(), Some(6_000));
    assert_eq!(actions(&sim.advance(1_000)), vec![migrate("web", H2, H1)]);
}

#[test]
fn configuration_errors_name_the_culprit() {
    let dup = Orchestrator::new(
        OrchestratorConfig::new(
            H1,
            vec![
                HostSpec {
                    id: H1,
                    capacity_mib: 1
                };
                2
            ],
        ),
        vec![],
    );
    assert_eq!(dup.err(), Some(OrchestratorError::DuplicateHost(H1)));
    let unknown = Orchestrator::new(
        OrchestratorConfig::new(H1, hosts(1)),
        vec![(guest("x", 1), HostId(9))],
    );
    assert_eq!(
        unknown.err().unwrap().to_string(),
        "resource \"x\" names node 9, which is not a configured host"
    );
}

// ---- Invariants under random inputs -----------------------------------

fn any_host() -> impl Strategy<Value = HostId> {
    (1_u16..=3).prop_map(HostId)
}

fn any_input() -> impl Strategy<Value = Input> {
    prop_oneof![
        (proptest::collection::vec(any_host(), 0..=3), any::<bool>())
            .prop_map(|(live, quorate)| Input::View { live, quorate }),
        (any_host(), prop_oneof![Just(0_u8), Just(50), Just(100)]).prop_map(|(host, health)| {
            Input::Health {
                host,
                health: hp(health),
            }
        }),
        any_host().prop_map(Input::HostDead),
        any_host().prop_map(Input::RecoveryAllowed),
        (any_host(), any::<bool>()).prop_map(|(host, on)| Input::Standby { host, on }),
    ]
}

/// A random step: an input, or the end of whatever move is in flight for a
/// resource (a runtime reports only moves that happened).
#[derive(Debug, Clone)]
enum Step {
    Input(Input),
    Finish(String, bool),
}

fn any_step() -> impl Strategy<Value = Step> {
    let name = prop_oneof![Just("a"), Just("b"), Just("c"), Just("d")].prop_map(String::from);
    prop_oneof![
        4 => any_input().prop_map(Step::Input),
        1 => (name, any::<bool>()).prop_map(|(r, ok)| Step::Finish(r, ok)),
    ]
}

proptest! {
    #[test]
    fn invariants_hold_under_any_input_sequence(
        steps in proptest::collection::vec((any_step(), 0_u64..20_000), 1..80)
    ) {
        let mut config = OrchestratorConfig::new(H1, hosts(1024));
        config.auto_failback = true;
        let resources = vec![
            (guest("a", 512), H1),
            (guest("b", 512), H2),
            (guest("c", 256), H3),
            (guest("d", 256), H3),
        ];
        let mut sim = Sim::with_config(config, resources);
        let mut last_completed_move: BTreeMap<String, u64> = BTreeMap::new();
        let mut fenced: Vec<HostId> = Vec::new();
        for (step, dt) in steps {
            let input = match step {
                Step::Input(input) => input,
                Step::Finish(resource, ok) => match sim.orch.placement(&resource) {
                    Some(Placement::Migrating { to, .. }) => Input::MigrationDone { resource, to, ok },
                    Some(Placement::Starting(host)) => Input::StartDone { resource, host, ok },
                    _ => continue,
                },
            };
            if let Input::RecoveryAllowed(h) = &input {
                fenced.push(*h);
            }
            if let Input::MigrationDone { resource, ok: true, .. } = &input {
                if matches!(sim.orch.placement(resource), Some(Placement::Migrating { .. })) {
                    last_completed_move.insert(resource.clone(), sim.now_ms);
                }
            }
            let decider_before = sim.orch.is_decider();
            let at_input = sim.now_ms;
            let out_input = sim.input(input.clone());
            let decider_after_input = sim.orch.is_decider();
            let out_tick = sim.advance(dt);
            if !decider_before && !decider_after_input {
                prop_assert!(actions(&out_input).is_empty(), "non-decider acted: {out_input:?}");
            }
            if !sim.orch.is_decider() {
                prop_assert!(actions(&out_tick).is_empty(), "non-decider acted: {out_tick:?}");
            }
            for (out, at) in [(out_input, at_input), (out_tick, sim.now_ms)] {
                for e in events(&out) {
                    let Event::Decided { action, reason } = e else { continue };
                    match (&action, &reason) {
                        (Action::Start { .. }, Reason::HostFenced(h)) => {
                            prop_assert!(fenced.contains(h), "restart before fencing {h}");
                        }
                        (Action::Migrate { resource, .. }, Reason::UplinkLost { .. } | Reason::Failback(_)) => {
                            if let Some(last) = last_completed_move.get(resource) {
                                prop_assert!(at - last >= 60_000,
                                    "{resource} moved again {} ms after its last move", at - last);
                            }
                        }
                        _ => {}
                    }
                }
            }
            for h in [H1, H2, H3] {
                prop_assert!(sim.orch.used_mib(h) <= 1024, "{h} over capacity: {}", sim.orch.used_mib(h));
            }
        }
    }
}
