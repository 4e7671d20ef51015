//! The resource agents against the real cluster managers, each in its own
//! network namespaces (`ppha-…`, 10.204.2-4.0/24), every host running a real
//! `perfplus node` with `[orchestrator] enabled = false` (the cluster
//! manager decides, perfplus carries out), the guest a perfplus arena
//! guest running the key-value service:
//!
//! - `ocf-tester` passes `examples/ocf/perfplus-domain`; the guest serves
//!   when the agent says it runs, and mistakes and a missing node get the
//!   OCF exit codes;
//! - Heartbeat 3.0.6 (v1 `haresources`) starts the guest through
//!   `examples/heartbeat/perfplus-domain` on the preferred node and, when
//!   that node loses power under client load, on the other, which recovers
//!   every acknowledged write from the guest's log on shared storage;
//! - Corosync 3 + Pacemaker 2.1 move the guest live with `crm_resource
//!   --move` under client load (`migrate_to` on the source, which has
//!   perfplus migrate it with Perf+, then `migrate_from` on the target): its
//!   table, which lives only in its memory, comes along with every
//!   acknowledged write.
//!
//! The tests run in parallel (distinct namespaces and addresses), about
//! 20 s in all. Needs root and the packages `.ci/run` installs; skips
//! loudly otherwise (and fails under CI=true).

mod support;

#[path = "support/ppha.rs"]
#[allow(dead_code)]
mod ppha;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use std::net::{SocketAddr, TcpStream};

use perfplus::backend::arena::workload::kv_client::{check_writes_in, Load, LoadConfig};
use perfplus::backend::arena::{check_support, enter_netns};
use ppha::{perfplus_binary, wait_for, PerfplusNode};
use support::netns::{sh, veth, Netns};

/// Upper bound for anything that happens on its own (only keeps a broken
/// build from hanging CI; nothing asserts on time).
const WAIT: Duration = Duration::from_secs(60);

/// A fresh directory under /tmp that every user can traverse: Pacemaker's
/// daemons (user hacluster) and ocf-tester's meta-data check (user nobody)
/// must reach files in it, which a checkout under /root would not allow.
/// Removed on drop.
struct OpenDir(PathBuf);

impl OpenDir {
    fn new(name: &str) -> Self {
        let path = PathBuf::from("/tmp").join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create dir");
        sh("chmod", &["755", path.to_str().expect("utf-8")]);
        Self(path)
    }

    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for OpenDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Install `file` from the repository as `to`, executable.
fn install(file: &str, to: &Path) {
    std::fs::copy(support::repo_root().join(file), to).expect("copy script");
    sh("chmod", &["755", s(to)]);
}

/// The guest `vm1` as a perfplus arena guest running the key-value
/// service on `listen` (its table only in its memory: no log on shared
/// storage, so only a live migration can carry it).
fn arena_vm1(listen: &str) -> String {
    format!(
        "[[resources]]\nname = \"vm1\"\nmemory_mib = 16\ndriver = \"arena\"\n\
         params = {{ workload = \"kv\", keys = 1024, listen = \"{listen}\" }}\n"
    )
}

/// A perfplus node configuration for hosts `names` (ids from 1) on
/// `addrs`, orchestration off, with the `resource` table. `local` names
/// this host; `None` makes one file for every host (the host name picks
/// the node, and heartbeats go to every address, its own echo ignored).
fn agent_config(
    names: &[&str],
    addrs: &[&str],
    local: Option<&str>,
    tag: &str,
    resource: &str,
) -> String {
    let node = local
        .map(|l| format!("node = \"{l}\"\n"))
        .unwrap_or_default();
    let mut text = format!(
        "cluster = \"ppha-{tag}\"\n{node}key = \"7070686174657374706570706861ab03\"\n\
         initial_wait_ms = 3000\n\n[orchestrator]\nenabled = false\n\n"
    );
    let own = local.and_then(|l| names.iter().position(|n| *n == l));
    let peers: Vec<String> = addrs
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != own)
        .map(|(_, a)| format!("\"{a}\""))
        .collect();
    let bind = own
        .map(|i| format!("bind = \"{}\"\n", addrs[i]))
        .unwrap_or_default();
    text.push_str(&format!(
        "[[links]]\nkind = \"unicast\"\n{bind}peers = [{}]\n\n",
        peers.join(", ")
    ));
    for (i, (name, addr)) in names.iter().zip(addrs).enumerate() {
        text.push_str(&format!(
            "[[nodes]]\nid = {id}\nname = \"{name}\"\ncontrol = \"{addr}:7790\"\n\
             migration = \"{addr}:7791\"\n\n",
            id = i + 1
        ));
    }
    text.push_str(resource);
    text
}

/// Wait until the perfplus node reading `config` in `ns` answers.
fn wait_answering(ns: &str, config: &Path, extra: &[&str]) {
    let mut args = vec!["status"];
    args.extend_from_slice(extra);
    let up = wait_for(WAIT, || {
        ppha::cli(ns, config, &args).status.success().then_some(())
    });
    assert!(up.is_some(), "the perfplus node in {ns} never answered");
}

/// One request to the key-value service at `addr`, from inside network
/// namespace `ns`; its answer line, or `None` if the service does not
/// answer.
fn kv_call(ns: &str, addr: &str, request: &str) -> Option<String> {
    use std::io::{BufRead, BufReader, Write};
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter_netns(Path::new(&format!("/run/netns/{ns}"))).ok()?;
                let addr: SocketAddr = addr.parse().ok()?;
                let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
                stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
                stream.write_all(format!("{request}\n").as_bytes()).ok()?;
                let mut line = String::new();
                BufReader::new(stream).read_line(&mut line).ok()?;
                Some(line.trim().to_string())
            })
            .join()
            .ok()
            .flatten()
    })
}

/// Why arena guests cannot run here, if they cannot.
fn arena_unavailable() -> Option<String> {
    check_support()
        .err()
        .map(|e| format!("arena guests cannot run here: {e}"))
}

/// Run the OCF agent `agent` once with `action` and the environment
/// Pacemaker would give (`env` adds or overrides), inside `ns`.
fn run_agent(ns: &str, agent: &Path, action: &str, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns])
        .arg(agent)
        .arg(action)
        .env("OCF_ROOT", "/usr/lib/ocf")
        .env("OCF_RA_VERSION_MAJOR", "1")
        .env("OCF_RA_VERSION_MINOR", "1")
        .env("OCF_RESOURCE_INSTANCE", "vm1")
        .env("OCF_RESKEY_CRM_meta_timeout", "20000")
        .env("OCF_EXIT_REASON_PREFIX", "ocf-exit-reason:");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run the agent")
}

#[test]
fn ocf_agent_passes_ocf_tester_against_a_real_perfplus_node() {
    let test = "ocf_agent_passes_ocf_tester";
    if let Some(why) = support::netns::unavailable() {
        return support::skip(test, &why);
    }
    for p in ["ocf-tester", "xmllint"] {
        if !support::have_program(p) {
            return support::skip(
                test,
                &format!("`{p}` is not installed (apt-get install resource-agents libxml2-utils)"),
            );
        }
    }
    if let Some(why) = arena_unavailable() {
        return support::skip(test, &why);
    }
    let dir = OpenDir::new("ppha-ocf");
    let ns = Netns::new("ppha-ocf");
    let service = "127.0.0.1:7000";
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        agent_config(
            &["solo", "absent"],
            &["127.0.0.1", "127.0.0.2"],
            Some("solo"),
            "ocf",
            &arena_vm1(service),
        ),
    )
    .expect("config");
    let agent = dir.join("perfplus-domain");
    install("examples/ocf/perfplus-domain", &agent);
    let perfplus = perfplus_binary();
    let mut node = PerfplusNode::start(&ns.name, &config, &[]);
    wait_answering(&ns.name, &config, &[]);

    let tester = Command::new("ip")
        .args(["netns", "exec", &ns.name, "ocf-tester", "-n", "vm1"])
        .args(["-o", &format!("config={}", s(&config))])
        .args(["-o", &format!("perfplus={}", s(&perfplus))])
        .arg(&agent)
        .output()
        .expect("run ocf-tester");
    assert!(
        tester.status.success()
            && String::from_utf8_lossy(&tester.stdout).contains("passed all tests"),
        "ocf-tester: {}\n{}",
        text(&tester),
        node.log()
    );

    // What ocf-tester does not check: the guest really runs when the agent
    // says so, mistakes get their OCF codes, a missing node is handled.
    let params = [
        ("OCF_RESKEY_config", s(&config)),
        ("OCF_RESKEY_perfplus", s(&perfplus)),
    ];
    fn join<'a>(
        base: &[(&'a str, &'a str)],
        extra: &[(&'a str, &'a str)],
    ) -> Vec<(&'a str, &'a str)> {
        base.iter().chain(extra).copied().collect()
    }
    let with = |extra: &[(&'static str, &'static str)]| join(&params, extra);
    let rc = |out: &Output| out.status.code();
    let recurring = with(&[("OCF_RESKEY_CRM_meta_interval", "10000")]);
    let probe = with(&[("OCF_RESKEY_CRM_meta_interval", "0")]);

    let out = run_agent(&ns.name, &agent, "start", &with(&[]));
    assert_eq!(rc(&out), Some(0), "start: {}", text(&out));
    let answered = wait_for(WAIT, || kv_call(&ns.name, service, "SET 5 42"));
    assert_eq!(
        answered.as_deref(),
        Some("VALUE 42"),
        "the guest serves after start\n{}",
        node.log()
    );
    let out = run_agent(&ns.name, &agent, "monitor", &recurring);
    assert_eq!(rc(&out), Some(0), "monitor: {}", text(&out));
    let out = run_agent(&ns.name, &agent, "migrate_to", &with(&[]));
    assert_eq!(
        rc(&out),
        Some(6),
        "migrate_to without a target: {}",
        text(&out)
    );
    assert_eq!(
        kv_call(&ns.name, service, "GET 5").as_deref(),
        Some("VALUE 42"),
        "a refused migration leaves the guest running, its state intact"
    );
    let out = run_agent(&ns.name, &agent, "stop", &with(&[]));
    assert_eq!(rc(&out), Some(0), "stop: {}", text(&out));
    assert_eq!(
        kv_call(&ns.name, service, "GET 5"),
        None,
        "the guest is gone after stop"
    );
    let out = run_agent(&ns.name, &agent, "monitor", &probe);
    assert_eq!(rc(&out), Some(7), "probe after stop: {}", text(&out));

    let unknown = with(&[("OCF_RESKEY_resource", "nope")]);
    let out = run_agent(&ns.name, &agent, "validate-all", &unknown);
    assert_eq!(rc(&out), Some(6), "unknown resource: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`nope` is not a configured resource"),
        "the exit reason names the mistake: {}",
        text(&out)
    );
    let missing = [
        ("OCF_RESKEY_config", "/nonexistent/node.toml"),
        ("OCF_RESKEY_perfplus", s(&perfplus)),
    ];
    let out = run_agent(&ns.name, &agent, "validate-all", &missing);
    assert_eq!(rc(&out), Some(5), "missing config: {}", text(&out));

    // No perfplus node on this host: a probe finds nothing running, a
    // recurring monitor and a start fail.
    node.terminate();
    let out = run_agent(&ns.name, &agent, "monitor", &probe);
    assert_eq!(rc(&out), Some(7), "probe without a node: {}", text(&out));
    let out = run_agent(&ns.name, &agent, "monitor", &recurring);
    assert_eq!(rc(&out), Some(1), "monitor without a node: {}", text(&out));
    let out = run_agent(&ns.name, &agent, "start", &with(&[]));
    assert_eq!(rc(&out), Some(1), "start without a node: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no perfplus node answers on this host"),
        "{}",
        text(&out)
    );
}

#[test]
fn heartbeat_v1_runs_the_guest_through_perfplus_and_takes_it_over_when_its_node_dies() {
    let test = "heartbeat_v1_haresources";
    if let Some(why) = support::heartbeat::unavailable().or_else(arena_unavailable) {
        return support::skip(test, &why);
    }
    let dir = support::scratch_dir("ppha-heartbeat");
    let a = Netns::new("ppha-hba");
    let b = Netns::new("ppha-hbb");
    veth(&a, "phhba", "10.204.3.1/24", &b, "phhbb", "10.204.3.2/24");
    let names = ["hba", "hbb"];
    let addrs = ["10.204.3.1", "10.204.3.2"];
    let ifaces = ["phhba", "phhbb"];
    let service = "10.204.3.100:7000";
    // The guest logs each write to "shared storage" (a directory both
    // hosts see) before acknowledging it, so a restart elsewhere after a
    // crash recovers every acknowledged write.
    let shared = dir.join("shared-storage");
    std::fs::create_dir_all(&shared).expect("shared storage");
    let resource = format!(
        "[[resources]]\nname = \"vm1\"\nmemory_mib = 16\ndriver = \"arena\"\n\
         params = {{ workload = \"kv\", keys = 1024, listen = \"{service}\", wal = \"{}\" }}\n",
        s(&shared)
    );
    let perfplus = perfplus_binary();
    let script =
        std::fs::read_to_string(support::repo_root().join("examples/heartbeat/perfplus-domain"))
            .expect("read the haresources script");
    // The same haresources line on both nodes, as Heartbeat wants; each
    // node's /etc/ha.d (a private bind mount) holds its own perfplus.toml.
    let haresources = format!(
        "hba perfplus-domain::/etc/ha.d/perfplus.toml::vm1::{}\n",
        s(&perfplus)
    );
    let mut hb = Vec::new();
    let mut nodes = Vec::new();
    for (i, (ns, peer)) in [(&a, addrs[1]), (&b, addrs[0])].into_iter().enumerate() {
        let name = names[i];
        let mut cfg = support::heartbeat::NodeConfig::test_node(
            name,
            &names,
            &[format!("ucast {} {peer}", ifaces[i])],
        );
        cfg.haresources = haresources.clone();
        cfg.resource_scripts = vec![("perfplus-domain".into(), script.clone())];
        let toml = agent_config(&names, &addrs, Some(name), "hb", &resource);
        let node = support::heartbeat::Node::start_with(ns, &dir.join(name), &cfg, |n| {
            let config_path = n.dir.join("etc-ha.d/perfplus.toml");
            std::fs::write(&config_path, &toml).expect("perfplus.toml");
            // perfplus first, so that Heartbeat finds it when it acquires
            // its resources (after initdead).
            nodes.push(PerfplusNode::start(
                &ns.name,
                &config_path,
                &["--service-interface", ifaces[i]],
            ));
        });
        hb.push(node);
    }
    let logs = |hb: &[support::heartbeat::Node], nodes: &[PerfplusNode]| {
        let mut all: Vec<String> = hb.iter().map(|n| n.log_tail(40)).collect();
        all.extend(nodes.iter().map(PerfplusNode::log));
        all.join("\n")
    };
    let runs_on = |i: usize| -> Option<i32> {
        let config = dir.join(names[i]).join("etc-ha.d/perfplus.toml");
        ppha::cli(
            &[&a, &b][i].name,
            &config,
            &["status", "--resource", "vm1", "--here"],
        )
        .status
        .code()
    };

    // hba is preferred: it acquires the guest through the script.
    let started = wait_for(WAIT, || (runs_on(0) == Some(0)).then_some(()));
    assert!(
        started.is_some(),
        "hba never started vm1\n{}",
        logs(&hb, &nodes)
    );
    let started_by_heartbeat = format!(
        "Running /etc/ha.d//resource.d/perfplus-domain /etc/ha.d/perfplus.toml vm1 {} start",
        s(&perfplus)
    );
    hb[0].wait_for_log(&started_by_heartbeat, 1, WAIT);
    assert_eq!(runs_on(1), Some(7), "vm1 runs on hba only");
    // Let hbb settle into its role before the failure.
    hb[1].wait_for_status("hba", "active", WAIT);

    // Clients (on hbb's side) write to the guest.
    let mut load_config = LoadConfig::new(service.parse().expect("address"), 1024);
    load_config.connections = 2;
    load_config.rate_per_conn = 200;
    load_config.netns = Some(PathBuf::from("/run/netns/ppha-hbb"));
    let load = Load::start(&load_config).expect("start the client load");
    let writing = wait_for(WAIT, || (load.writes_acknowledged() >= 200).then_some(()));
    assert!(
        writing.is_some(),
        "the guest never served its clients\n{}",
        logs(&hb, &nodes)
    );

    // hba loses power: Heartbeat, perfplus and the guest die at once, and
    // its network card goes dark.
    hb[0].kill();
    nodes[0].kill();
    a.ip(&["link", "set", ifaces[0], "down"]);
    let taken = wait_for(WAIT, || (runs_on(1) == Some(0)).then_some(()));
    assert!(
        taken.is_some(),
        "hbb never took vm1 over\n{}",
        logs(&hb, &nodes)
    );
    hb[1].wait_for_log(&started_by_heartbeat, 1, WAIT);
    let status = hb[1].exec(&[
        "/etc/ha.d/resource.d/perfplus-domain",
        "/etc/ha.d/perfplus.toml",
        "vm1",
        s(&perfplus),
        "status",
    ]);
    assert_eq!(
        status.as_deref(),
        Some("running"),
        "the script's status on hbb"
    );
    // The restarted guest serves, and has every acknowledged write.
    let before = load.writes_acknowledged();
    let serving = wait_for(WAIT, || {
        (load.writes_acknowledged() >= before + 200).then_some(())
    });
    assert!(
        serving.is_some(),
        "the guest does not serve after the takeover\n{}",
        logs(&hb, &nodes)
    );
    let report = load.stop();
    let check = check_writes_in(
        load_config.netns.as_deref(),
        load_config.addr,
        &report,
        Duration::from_secs(10),
    )
    .expect("read the table back");
    assert!(
        check.writes_lost == 0
            && check.bad_keys == 0
            && check.writes_found >= report.writes_acknowledged,
        "acknowledged writes were lost in the takeover: {check:?} after {} acknowledged\n{}",
        report.writes_acknowledged,
        logs(&hb, &nodes)
    );
    eprintln!(
        "heartbeat test: {} writes acknowledged, {} lost, longest service gap {:.1} ms",
        report.writes_acknowledged, check.writes_lost, report.service_gap_ms
    );
}

/// One Corosync + Pacemaker node with its perfplus node, all inside one
/// network, mount and UTS namespace (private /etc/corosync, /var/lib/…,
/// /run, /dev/shm, and an OCF root that also holds ocf:perfplus:*).
struct PacemakerNode {
    name: String,
    dir: PathBuf,
    child: Child,
}

impl PacemakerNode {
    /// Start node `name` in `ns`; its guests' service addresses move on
    /// interface `iface`.
    fn start(
        ns: &Netns,
        name: &str,
        iface: &str,
        dir: &Path,
        shared: &Path,
        config: &Path,
    ) -> Self {
        let d = dir.display();
        let script = format!(
            "set -e\nhostname {name}\n\
             mount --bind {d}/etc-corosync /etc/corosync\n\
             mount --bind {d}/var-lib-corosync /var/lib/corosync\n\
             mount --bind {d}/var-lib-pacemaker /var/lib/pacemaker\n\
             mount -t tmpfs tmpfs /run\nmount -t tmpfs tmpfs /dev/shm\n\
             mkdir -p /run/crm /run/resource-agents\nchown hacluster:haclient /run/crm\n\
             mount --bind /usr/lib/ocf/resource.d/heartbeat {shared}/resource.d/heartbeat\n\
             mount --rbind {shared}/resource.d /usr/lib/ocf/resource.d\n\
             {perfplus} node --config {config} --service-interface {iface} \
                 >{d}/log/perfplus.log 2>&1 &\n\
             export PCMK_logfile={d}/log/pacemaker.log\n\
             corosync -f &\n\
             until corosync-cfgtool -s >/dev/null 2>&1; do sleep 0.2; done\n\
             pacemakerd -f &\nwait\n",
            shared = shared.display(),
            perfplus = s(&perfplus_binary()),
            config = s(config),
        );
        let log = std::fs::File::create(dir.join("log/stdout")).expect("log");
        let child = ns
            .command("unshare")
            .args(["--uts", "--mount", "--propagation", "private", "bash", "-c"])
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start corosync and pacemaker");
        Self {
            name: name.into(),
            dir: dir.to_path_buf(),
            child,
        }
    }

    /// Run a command inside the node's namespaces.
    fn exec(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .args([
                "20",
                "nsenter",
                "-t",
                &self.child.id().to_string(),
                "-n",
                "-m",
                "-u",
            ])
            .args(args)
            .output()
            .expect("nsenter")
    }

    fn log(&self) -> String {
        let mut out = String::new();
        for f in ["stdout", "perfplus.log", "pacemaker.log", "corosync.log"] {
            let body = std::fs::read_to_string(self.dir.join("log").join(f)).unwrap_or_default();
            let lines: Vec<&str> = body.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            out.push_str(&format!("--- {} {f} ---\n{tail}\n", self.name));
        }
        out
    }
}

impl Drop for PacemakerNode {
    fn drop(&mut self) {
        // The power switch: the namespace's drop then SIGKILLs every
        // process left in it (by pid, never by name: other clusters may
        // run on this machine), and the private mounts go with them.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pacemaker_unavailable() -> Option<String> {
    if let Some(why) = support::netns::unavailable() {
        return Some(why);
    }
    for p in [
        "corosync",
        "pacemakerd",
        "crm_resource",
        "cibadmin",
        "crm_mon",
    ] {
        if !support::have_program(p) {
            return Some(format!(
                "`{p}` is not installed (apt-get install corosync pacemaker pacemaker-cli-utils)"
            ));
        }
    }
    if !Path::new("/usr/lib/ocf/resource.d/heartbeat/Dummy").exists() {
        return Some("resource-agents is not installed".into());
    }
    None
}

/// The CIB each node starts from: no fencing devices (the test has none;
/// perfplus's own fencing is not what is tested here) and a short
/// `dc-deadtime`, so the cluster elects its DC in seconds, not 20.
const CIB: &str = r#"<cib crm_feature_set="3.16.1" validate-with="pacemaker-3.9" epoch="1" num_updates="0" admin_epoch="0">
  <configuration>
    <crm_config>
      <cluster_property_set id="cib-bootstrap-options">
        <nvpair id="opt-stonith-enabled" name="stonith-enabled" value="false"/>
        <nvpair id="opt-dc-deadtime" name="dc-deadtime" value="5s"/>
      </cluster_property_set>
    </crm_config>
    <nodes/>
    <resources/>
    <constraints/>
  </configuration>
  <status/>
</cib>
"#;

#[test]
fn pacemaker_moves_a_perfplus_guest_live_with_crm_resource_move() {
    let test = "pacemaker_moves_a_perfplus_guest_live";
    if let Some(why) = pacemaker_unavailable().or_else(arena_unavailable) {
        return support::skip(test, &why);
    }
    let dir = OpenDir::new("ppha-pcmk");
    let n1 = Netns::new("ppha-pm1");
    let n2 = Netns::new("ppha-pm2");
    veth(&n1, "phpm1", "10.204.4.1/24", &n2, "phpm2", "10.204.4.2/24");
    let names = ["p1", "p2"];
    let addrs = ["10.204.4.1", "10.204.4.2"];
    let ifaces = ["phpm1", "phpm2"];
    // The guest's service address, which moves with it.
    let service = "10.204.4.100:7000";

    // One perfplus configuration for both hosts (the host name picks the
    // node, as corosync.conf does), the agent in a private OCF provider.
    let config = dir.join("perfplus.toml");
    std::fs::write(
        &config,
        agent_config(&names, &addrs, None, "pcmk", &arena_vm1(service)),
    )
    .expect("config");
    let shared = dir.join("ocf");
    std::fs::create_dir_all(shared.join("resource.d/heartbeat")).expect("ocf dir");
    std::fs::create_dir_all(shared.join("resource.d/perfplus")).expect("ocf dir");
    install(
        "examples/ocf/perfplus-domain",
        &shared.join("resource.d/perfplus/perfplus-domain"),
    );
    let corosync = format!(
        "totem {{\n  version: 2\n  cluster_name: ppha\n  transport: knet\n  crypto_cipher: none\n  crypto_hash: none\n}}\n\
         nodelist {{\n  node {{\n    ring0_addr: {}\n    name: p1\n    nodeid: 1\n  }}\n  node {{\n    ring0_addr: {}\n    name: p2\n    nodeid: 2\n  }}\n}}\n\
         quorum {{\n  provider: corosync_votequorum\n  two_node: 1\n}}\n",
        addrs[0], addrs[1]
    );
    let mut nodes = Vec::new();
    for (i, ns) in [&n1, &n2].into_iter().enumerate() {
        let d = dir.join(names[i]);
        for sub in ["etc-corosync", "var-lib-corosync", "log"] {
            std::fs::create_dir_all(d.join(sub)).expect("node dir");
        }
        for sub in ["cib", "pengine", "blackbox", "cores"] {
            std::fs::create_dir_all(d.join("var-lib-pacemaker").join(sub)).expect("node dir");
        }
        std::fs::write(d.join("var-lib-pacemaker/cib/cib.xml"), CIB).expect("cib");
        sh(
            "chown",
            &["-R", "hacluster:haclient", s(&d.join("var-lib-pacemaker"))],
        );
        sh("chown", &["hacluster:haclient", s(&d.join("log"))]);
        sh("chmod", &["775", s(&d.join("log"))]);
        sh("chmod", &["755", s(&d)]);
        std::fs::write(
            d.join("etc-corosync/corosync.conf"),
            format!(
                "{corosync}logging {{\n  to_logfile: yes\n  logfile: {}\n  to_stderr: no\n  to_syslog: no\n  timestamp: on\n}}\n",
                s(&d.join("log/corosync.log"))
            ),
        )
        .expect("corosync.conf");
        nodes.push(PacemakerNode::start(
            ns, names[i], ifaces[i], &d, &shared, &config,
        ));
    }
    let logs = |nodes: &[PacemakerNode]| nodes.iter().map(PacemakerNode::log).collect::<String>();
    let perfplus_cli = |i: usize, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--node", names[i]]);
        ppha::cli(&[&n1, &n2][i].name, &config, &all)
    };
    for (i, name) in names.iter().enumerate() {
        let up = wait_for(WAIT, || {
            perfplus_cli(i, &["status"]).status.success().then_some(())
        });
        assert!(
            up.is_some(),
            "perfplus on {name} never answered\n{}",
            logs(&nodes)
        );
    }
    let online = wait_for(Duration::from_secs(90), || {
        let out = nodes[0].exec(&["crm_mon", "-1"]);
        let view = String::from_utf8_lossy(&out.stdout).into_owned();
        (view.contains("partition with quorum") && view.contains("Online: [ p1 p2 ]")).then_some(())
    });
    assert!(
        online.is_some(),
        "the Pacemaker cluster never formed\n{}",
        logs(&nodes)
    );

    let primitive = format!(
        r#"<primitive id="vm1" class="ocf" provider="perfplus" type="perfplus-domain">
  <instance_attributes id="vm1-params">
    <nvpair id="vm1-config" name="config" value="{config}"/>
    <nvpair id="vm1-perfplus" name="perfplus" value="{perfplus}"/>
  </instance_attributes>
  <meta_attributes id="vm1-meta">
    <nvpair id="vm1-allow-migrate" name="allow-migrate" value="true"/>
  </meta_attributes>
  <operations>
    <op id="vm1-monitor" name="monitor" interval="5s" timeout="30s"/>
  </operations>
</primitive>"#,
        config = s(&config),
        perfplus = s(&perfplus_binary()),
    );
    let out = nodes[0].exec(&["cibadmin", "-C", "-o", "resources", "-X", &primitive]);
    assert!(out.status.success(), "cibadmin: {}", text(&out));

    let locate = |nodes: &[PacemakerNode]| -> Option<String> {
        let out = nodes[0].exec(&["crm_resource", "--locate", "-r", "vm1"]);
        let line = String::from_utf8_lossy(&out.stdout).into_owned();
        line.trim()
            .strip_prefix("resource vm1 is running on: ")
            .map(str::to_string)
    };
    let first = wait_for(WAIT, || locate(&nodes)).unwrap_or_else(|| {
        panic!("vm1 never started\n{}", logs(&nodes));
    });
    let from = names
        .iter()
        .position(|n| *n == first)
        .expect("a known node");
    let to = 1 - from;
    let runs_on = |i: usize| -> Option<i32> {
        perfplus_cli(i, &["status", "--resource", "vm1", "--here"])
            .status
            .code()
    };
    // crm_resource --locate names a node while its start is still pending:
    // wait for the start to finish (as for the move below) before asserting.
    let _ = wait_for(WAIT, || (runs_on(from) == Some(0)).then_some(()));
    assert_eq!(
        (runs_on(from), runs_on(to)),
        (Some(0), Some(7)),
        "{}",
        logs(&nodes)
    );

    // Clients write to the guest's table, which lives only in its memory.
    let mut load_config = LoadConfig::new(service.parse().expect("address"), 1024);
    load_config.connections = 2;
    load_config.rate_per_conn = 200;
    load_config.netns = Some(PathBuf::from("/run/netns/ppha-pm1"));
    let load = Load::start(&load_config).expect("start the client load");
    let writing = wait_for(WAIT, || (load.writes_acknowledged() >= 200).then_some(()));
    assert!(
        writing.is_some(),
        "the guest never served its clients\n{}",
        logs(&nodes)
    );

    // The admin moves it: Pacemaker runs migrate_to on the source (perfplus
    // migrates it live with Perf+ and the target confirms), migrate_from on
    // the target, then stop on the source.
    let out = nodes[0].exec(&["crm_resource", "--move", "-r", "vm1", "-N", names[to]]);
    assert!(out.status.success(), "crm_resource --move: {}", text(&out));
    let moved = wait_for(WAIT, || {
        (locate(&nodes).as_deref() == Some(names[to])
            && runs_on(to) == Some(0)
            && runs_on(from) == Some(7))
        .then_some(())
    });
    assert!(
        moved.is_some(),
        "vm1 never moved to {}\n{}",
        names[to],
        logs(&nodes)
    );
    // It serves from its new host, and has every acknowledged write.
    let before = load.writes_acknowledged();
    let serving = wait_for(WAIT, || {
        (load.writes_acknowledged() >= before + 200).then_some(())
    });
    assert!(
        serving.is_some(),
        "the guest does not serve after the move\n{}",
        logs(&nodes)
    );
    let report = load.stop();
    let check = check_writes_in(
        load_config.netns.as_deref(),
        load_config.addr,
        &report,
        Duration::from_secs(10),
    )
    .expect("read the table back");
    assert!(
        check.writes_lost == 0
            && check.bad_keys == 0
            && check.writes_found >= report.writes_acknowledged,
        "the guest's state did not come along: {check:?} after {} acknowledged writes\n{}",
        report.writes_acknowledged,
        logs(&nodes)
    );
    let perfplus_log =
        std::fs::read_to_string(dir.join(names[from]).join("log/perfplus.log")).unwrap_or_default();
    let migrated = format!(
        "ACTION_DONE migrate vm1 from node {} to node {}: downtime ",
        from + 1,
        to + 1
    );
    assert!(
        perfplus_log.contains(&migrated),
        "the move was not a Perf+ live migration\n{}",
        logs(&nodes)
    );
    eprintln!(
        "pacemaker test: {}; clients: {} writes acknowledged, {} lost, longest service gap {:.1} ms",
        perfplus_log
            .lines()
            .find(|l| l.contains(&migrated))
            .unwrap_or_default(),
        report.writes_acknowledged,
        check.writes_lost,
        report.service_gap_ms
    );
    let pacemaker_log = std::fs::read_to_string(dir.join(names[from]).join("log/pacemaker.log"))
        .unwrap_or_default();
    let target_log =
        std::fs::read_to_string(dir.join(names[to]).join("log/pacemaker.log")).unwrap_or_default();
    for (log, action, on) in [
        (&pacemaker_log, "migrate_to", names[from]),
        (&target_log, "migrate_from", names[to]),
    ] {
        let done = format!("Result of {action} operation for vm1 on {on}: ok");
        assert!(
            log.contains(&done),
            "Pacemaker did not run {action} (stop + start instead?)\n{}",
            logs(&nodes)
        );
    }
    let out = nodes[0].exec(&["crm_resource", "--clear", "-r", "vm1"]);
    assert!(out.status.success(), "crm_resource --clear: {}", text(&out));
    // Stop it through Pacemaker before the cluster goes down.
    let out = nodes[0].exec(&[
        "crm_resource",
        "-r",
        "vm1",
        "--set-parameter",
        "target-role",
        "--meta",
        "--parameter-value",
        "Stopped",
    ]);
    assert!(out.status.success(), "stop vm1: {}", text(&out));
    let stopped = wait_for(WAIT, || (runs_on(to) == Some(7)).then_some(()));
    assert!(stopped.is_some(), "vm1 never stopped\n{}", logs(&nodes));
}
