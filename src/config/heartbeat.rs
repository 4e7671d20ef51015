//! Heartbeat 3's own configuration files, `ha.cf` and `authkeys`, read as
//! Heartbeat reads them, so an existing site can point perfplus at what it
//! has (and the Heartbeat 3 adapter can speak to Heartbeat with the same
//! names and keys).
//!
//! `ha.cf` is read line by line, and order matters as in Heartbeat: a media
//! line (`ucast`, `bcast`, `mcast`) uses the `udpport` in force when it is
//! read. Times are seconds, or milliseconds with an `ms` suffix. Directives
//! that perfplus does not use (`logfile`, `crm`, `respawn`, …) are kept in
//! [`HaCf::ignored`] and reported as warnings, not errors, since a working
//! Heartbeat site has them.
//!
//! A node configured from these files speaks Heartbeat 3's own protocol
//! ([`Protocol::Heartbeat3`]): it joins the existing cluster as one of its
//! nodes, so a site can replace its Heartbeat nodes one at a time. Its
//! failure detector is perfplus's own (phi accrual over each peer's
//! statuses), bounded by the deadtime each peer advertises.
//!
//! Defaults are Heartbeat 3.0.6's compiled ones: keepalive 1 s, deadtime
//! 30 s, warntime deadtime/2, initdead deadtime if above 10 s, 12 s if
//! deadtime is under 6 s, else twice deadtime; udpport 694; cluster
//! `linux-ha`; deadtime must exceed twice keepalive.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{read_text, ConfigError, Heartbeat3, LinkConfig, NodeConfig, PingMethod, Protocol};
use crate::detector::{DetectorConfig, PingConfig};
use crate::membership::{Fencing, NodeId, NodeSpec};
use crate::wire::hb3::{AuthKey, AuthMethod, Keyring, MAX_KEY_INDEX};
use crate::wire::ClusterKey;

/// Heartbeat's default UDP port.
pub const HEARTBEAT_PORT: u16 = 694;

/// Where a node configured from Heartbeat's files keeps what Heartbeat
/// nodes remember of it (its UUID and generation), unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/perfplus/heartbeat";

/// A Heartbeat communication medium from `ha.cf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Medium {
    /// `ucast <interface> <peer>`.
    Ucast {
        /// Interface.
        interface: String,
        /// Peer address.
        peer: IpAddr,
        /// `udpport` when the line was read.
        port: u16,
    },
    /// `mcast <interface> <group> <port> <ttl> <loop>`.
    Mcast {
        /// Interface.
        interface: String,
        /// Group.
        group: Ipv4Addr,
        /// Port.
        port: u16,
        /// TTL (1..=255).
        ttl: u8,
        /// Loopback (0 or 1).
        loopback: bool,
    },
    /// `bcast <interface>` (one per interface named on the line).
    Bcast {
        /// Interface.
        interface: String,
        /// `udpport` when the line was read.
        port: u16,
    },
}

/// `auto_failback` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoFailback {
    /// `on`.
    On,
    /// `off`.
    Off,
    /// `legacy` (Heartbeat's default, deprecated).
    Legacy,
}

/// What perfplus reads from an `ha.cf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaCf {
    /// The file.
    pub path: PathBuf,
    /// `node` names, lower-cased, in file order.
    pub nodes: Vec<String>,
    /// Media, in file order, each with its line number.
    pub media: Vec<(usize, Medium)>,
    /// The last `udpport` (default 694).
    pub udpport: u16,
    /// `keepalive`, ms.
    pub keepalive_ms: u64,
    /// `deadtime`, ms.
    pub deadtime_ms: u64,
    /// `warntime`, ms, if set.
    pub warntime_ms: Option<u64>,
    /// `initdead`, ms, if set.
    pub initdead_ms: Option<u64>,
    /// `deadping`, ms, if set.
    pub deadping_ms: Option<u64>,
    /// `ping` addresses, and the members of every `ping_group`.
    pub ping: Vec<IpAddr>,
    /// `auto_failback`.
    pub auto_failback: AutoFailback,
    /// `cluster` name.
    pub cluster: String,
    /// `realtime`: run at real-time priority (Heartbeat's default: on).
    pub realtime: bool,
    /// Directives read but not used by perfplus: (line, directive).
    pub ignored: Vec<(usize, String)>,
}

impl HaCf {
    /// Read and parse an `ha.cf`.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&read_text(path)?, path)
    }

    /// Parse `ha.cf` text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut cf = Self {
            path: path.to_path_buf(),
            nodes: Vec::new(),
            media: Vec::new(),
            udpport: HEARTBEAT_PORT,
            keepalive_ms: 1_000,
            deadtime_ms: 30_000,
            warntime_ms: None,
            initdead_ms: None,
            deadping_ms: None,
            ping: Vec::new(),
            auto_failback: AutoFailback::Legacy,
            cluster: "linux-ha".into(),
            realtime: true,
            ignored: Vec::new(),
        };
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let mut words = content.split_whitespace();
            let directive = words.next().unwrap_or("").to_ascii_lowercase();
            let args: Vec<&str> = words.collect();
            let err = |message: String| ConfigError::Syntax {
                path: path.to_path_buf(),
                line,
                message,
            };
            let one = |what: &str| -> Result<&str, ConfigError> {
                match args.as_slice() {
                    [value] => Ok(value),
                    _ => Err(err(format!("`{directive}` expects one value: {what}"))),
                }
            };
            match directive.as_str() {
                "node" => {
                    if args.is_empty() {
                        return Err(err(
                            "`node` expects one or more node names (as `uname -n` prints them)"
                                .into(),
                        ));
                    }
                    for name in &args {
                        let name = name.to_ascii_lowercase();
                        if cf.nodes.contains(&name) {
                            return Err(err(format!("node `{name}` is listed twice")));
                        }
                        cf.nodes.push(name);
                    }
                }
                "udpport" => {
                    cf.udpport = parse_port(one("a UDP port")?).map_err(err)?;
                }
                "keepalive" => cf.keepalive_ms = parse_time(one("a time")?).map_err(err)?,
                "deadtime" => cf.deadtime_ms = parse_time(one("a time")?).map_err(err)?,
                "warntime" => cf.warntime_ms = Some(parse_time(one("a time")?).map_err(err)?),
                "initdead" => cf.initdead_ms = Some(parse_time(one("a time")?).map_err(err)?),
                "deadping" => cf.deadping_ms = Some(parse_time(one("a time")?).map_err(err)?),
                "ucast" => match args.as_slice() {
                    [interface, peer] => {
                        let peer = peer.parse().map_err(|_| {
                            err(format!("`ucast` expects `<interface> <peer IP address>`; `{peer}` is not an IP address"))
                        })?;
                        cf.media.push((
                            line,
                            Medium::Ucast {
                                interface: (*interface).to_string(),
                                peer,
                                port: cf.udpport,
                            },
                        ));
                    }
                    _ => return Err(err("`ucast` expects `<interface> <peer IP address>`".into())),
                },
                "bcast" => {
                    if args.is_empty() {
                        return Err(err("`bcast` expects one or more interface names".into()));
                    }
                    for interface in &args {
                        cf.media.push((
                            line,
                            Medium::Bcast {
                                interface: (*interface).to_string(),
                                port: cf.udpport,
                            },
                        ));
                    }
                }
                "mcast" => match args.as_slice() {
                    [interface, group, port, ttl, loopback] => {
                        let group: Ipv4Addr = group
                            .parse()
                            .ok()
                            .filter(Ipv4Addr::is_multicast)
                            .ok_or_else(|| err(format!("`mcast`: `{group}` is not an IPv4 multicast group (224.0.0.0 to 239.255.255.255)")))?;
                        let port = parse_port(port).map_err(err)?;
                        let ttl =
                            ttl.parse::<u8>().ok().filter(|t| *t >= 1).ok_or_else(|| {
                                err(format!("`mcast`: ttl `{ttl}` must be 1 to 255"))
                            })?;
                        let loopback = match *loopback {
                            "0" => false,
                            "1" => true,
                            other => {
                                return Err(err(format!("`mcast`: loop `{other}` must be 0 or 1")))
                            }
                        };
                        cf.media.push((
                            line,
                            Medium::Mcast {
                                interface: (*interface).to_string(),
                                group,
                                port,
                                ttl,
                                loopback,
                            },
                        ));
                    }
                    _ => {
                        return Err(err(
                            "`mcast` expects `<interface> <group> <port> <ttl> <loop>`".into(),
                        ))
                    }
                },
                "ping" => {
                    if args.is_empty() {
                        return Err(err("`ping` expects one or more IP addresses".into()));
                    }
                    for addr in &args {
                        cf.ping.push(
                            addr.parse().map_err(|_| {
                                err(format!("`ping`: `{addr}` is not an IP address"))
                            })?,
                        );
                    }
                }
                "ping_group" => {
                    if args.len() < 2 {
                        return Err(err(
                            "`ping_group` expects a group name and one or more IP addresses".into(),
                        ));
                    }
                    for addr in &args[1..] {
                        cf.ping.push(addr.parse().map_err(|_| {
                            err(format!("`ping_group`: `{addr}` is not an IP address"))
                        })?);
                    }
                }
                "auto_failback" => {
                    cf.auto_failback = match one("on, off or legacy")?.to_ascii_lowercase().as_str()
                    {
                        "on" | "yes" | "true" | "1" => AutoFailback::On,
                        "off" | "no" | "false" | "0" => AutoFailback::Off,
                        "legacy" => AutoFailback::Legacy,
                        other => {
                            return Err(err(format!(
                                "`auto_failback` expects on, off or legacy, not `{other}`"
                            )))
                        }
                    };
                }
                "cluster" => cf.cluster = one("a cluster name")?.to_string(),
                "realtime" => {
                    cf.realtime = match one("on or off")?.to_ascii_lowercase().as_str() {
                        "on" | "yes" | "true" | "1" | "y" => true,
                        "off" | "no" | "false" | "0" | "n" => false,
                        other => {
                            return Err(err(format!("`realtime` expects on or off, not `{other}`")))
                        }
                    };
                }
                _ => cf.ignored.push((line, directive)),
            }
        }
        cf.check()?;
        Ok(cf)
    }

    /// `warntime` in effect, ms.
    pub fn effective_warntime_ms(&self) -> u64 {
        self.warntime_ms.unwrap_or(self.deadtime_ms / 2)
    }

    /// `initdead` in effect, ms (Heartbeat's rule when unset).
    pub fn effective_initdead_ms(&self) -> u64 {
        self.initdead_ms.unwrap_or(if self.deadtime_ms > 10_000 {
            self.deadtime_ms
        } else if self.deadtime_ms < 6_000 {
            12_000
        } else {
            2 * self.deadtime_ms
        })
    }

    fn check(&self) -> Result<(), ConfigError> {
        let whole = |message: String| ConfigError::Syntax {
            path: self.path.clone(),
            line: 0,
            message,
        };
        if self.nodes.is_empty() {
            return Err(whole(
                "no `node` directive: list every cluster node (`node alpha beta`)".into(),
            ));
        }
        if self.media.is_empty() {
            return Err(whole(
                "no communication medium: add a `ucast`, `mcast` or `bcast` line".into(),
            ));
        }
        if self.keepalive_ms == 0 {
            return Err(whole("`keepalive` must be positive".into()));
        }
        if self.deadtime_ms <= 2 * self.keepalive_ms {
            return Err(whole(format!(
                "`deadtime` ({} ms) must be more than twice `keepalive` ({} ms), as Heartbeat requires",
                self.deadtime_ms, self.keepalive_ms
            )));
        }
        if self.effective_warntime_ms() > self.deadtime_ms {
            return Err(whole("`warntime` must not exceed `deadtime`".into()));
        }
        Ok(())
    }
}

/// What perfplus reads from an `authkeys`, read as Heartbeat 3.0.6 reads it
/// (`parse_authfile` in `heartbeat/auth.c`):
///
/// - leading blanks are skipped; a line whose first other character is `#`
///   is a comment, and so is a blank line. A `#` anywhere else is an
///   ordinary character;
/// - a line starting with `a` must be `auth <N>` (`sscanf("auth %d")`):
///   key lines read after it whose index is N sign;
/// - any other line is `sscanf("%d%s%s")`: an index (0 to 15), a method
///   (`sha1`, `md5`, `crc`, exact names) and the secret, which is **the
///   first word after the method only**: `1 sha1 two words` signs with
///   `two`, `1 sha1 # comment` with `#`. Words after it are ignored;
/// - a later line with the same index replaces the key;
/// - `crc` takes no secret, `sha1` and `md5` need one.
///
/// Every line Heartbeat rejects (and would then refuse to start) is an
/// error here too; lines it reads differently from how they look (ignored
/// words, a `#` taken as the secret) give [`AuthKeys::warnings`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthKeys {
    /// The file.
    pub path: PathBuf,
    /// The index of the key that signs.
    pub active: u8,
    /// Every key, by index (the last definition of each index).
    pub keys: Vec<AuthKey>,
    /// Lines Heartbeat reads differently from how they look.
    pub warnings: Vec<String>,
}

impl AuthKeys {
    /// Read an `authkeys`, refusing it if group or others may read or
    /// write it (Heartbeat refuses it when they may read it), or if it
    /// belongs to someone other than root or this user.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(ConfigError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        // /proc/self belongs to the process's effective user: no unsafe
        // geteuid needed.
        let me = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
        if meta.uid() != 0 && meta.uid() != me {
            return Err(ConfigError::Owner {
                path: path.to_path_buf(),
                owner: meta.uid(),
                me,
            });
        }
        Self::parse(&read_text(path)?, path)
    }

    /// Parse `authkeys` text (no permission check); `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        // The `auth N` in force, and the index that signs (set by a key
        // line read while its index was the one in force, as Heartbeat's
        // `config->authmethod`).
        let mut auth_line: Option<i64> = None;
        let mut active: Option<u8> = None;
        let mut keys: Vec<AuthKey> = Vec::new();
        let mut warnings = Vec::new();
        for (number, raw) in text.lines().enumerate() {
            let line = number + 1;
            let err = |message: String| ConfigError::Syntax {
                path: path.to_path_buf(),
                line,
                message,
            };
            let content = raw.trim_start_matches(is_c_space);
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            if content.starts_with('a') {
                let n = content
                    .strip_prefix("auth")
                    .and_then(|rest| scan_int(rest).map(|(n, _)| n))
                    .ok_or_else(|| {
                        err(format!(
                            "expected `auth <index>` (the key that signs), found `{}`",
                            content.trim_end()
                        ))
                    })?;
                auth_line = Some(n);
                continue;
            }
            let (index, rest) = scan_int(content).ok_or_else(|| {
                err(format!(
                    "expected `auth <index>` or `<index> <method> [key]`, found `{}`",
                    content.trim_end()
                ))
            })?;
            let (method_name, rest) = scan_word(rest).ok_or_else(|| {
                err(format!(
                    "key {index} has no method: expected sha1, md5 or crc"
                ))
            })?;
            let (secret, rest) = scan_word(rest).unwrap_or(("", rest));
            let index = u8::try_from(index)
                .ok()
                .filter(|i| *i <= MAX_KEY_INDEX)
                .ok_or_else(|| {
                    err(format!(
                        "key index {index} is out of range: Heartbeat takes 0 to {MAX_KEY_INDEX}"
                    ))
                })?;
            let method = AuthMethod::from_name(method_name).ok_or_else(|| {
                err(format!(
                    "unknown method `{method_name}`: expected sha1, md5 or crc (lower case)"
                ))
            })?;
            if method.needs_key() && secret.is_empty() {
                return Err(err(format!(
                    "key {index} ({}) has no secret",
                    method.name()
                )));
            }
            if !method.needs_key() && !secret.is_empty() {
                return Err(err(format!(
                    "key {index} (crc) takes no secret, found `{secret}`"
                )));
            }
            let ignored = rest.trim_matches(is_c_space);
            if !ignored.is_empty() {
                warnings.push(format!(
                    "{}:{line}: Heartbeat reads only the first word after the method as the secret; `{ignored}` is ignored",
                    path.display()
                ));
            }
            if secret.starts_with('#') {
                warnings.push(format!(
                    "{}:{line}: the secret of key {index} is `{secret}`: a `#` is a comment only at the start of a line",
                    path.display()
                ));
            }
            keys.retain(|k| k.index != index);
            keys.push(AuthKey::new(index, method, secret.as_bytes()));
            if auth_line == Some(i64::from(index)) {
                active = Some(index);
            }
        }
        let whole = |message: String| ConfigError::Syntax {
            path: path.to_path_buf(),
            line: 0,
            message,
        };
        let active = active.ok_or_else(|| {
            whole(match auth_line {
                None => "no `auth <index>` line naming the key that signs".into(),
                Some(n) => format!(
                    "`auth {n}` names no key defined after it (Heartbeat takes the signing key only from key lines below the `auth` line)"
                ),
            })
        })?;
        keys.sort_by_key(|k| k.index);
        Ok(Self {
            path: path.to_path_buf(),
            active,
            keys,
            warnings,
        })
    }

    /// The key that signs.
    pub fn active_key(&self) -> &AuthKey {
        // `parse` guarantees the active key exists.
        self.keys
            .iter()
            .find(|k| k.index == self.active)
            .unwrap_or(&self.keys[0])
    }

    /// The keys as the Heartbeat 3 codec uses them: every key verifies,
    /// the active one signs.
    pub fn keyring(&self) -> Keyring {
        Keyring::new(self.keys.clone(), self.active)
            .unwrap_or_else(|| Keyring::single(self.active_key().clone()))
    }

    /// The perfplus heartbeat key derived from the signing key: the method
    /// and the secret, domain-separated.
    pub fn cluster_key(&self) -> ClusterKey {
        let key = self.active_key();
        let mut material = format!("authkeys:{}:", key.method.name()).into_bytes();
        material.extend_from_slice(&key.secret);
        ClusterKey::derive(&material)
    }
}

/// C's `isspace` in the "C" locale, which `sscanf` and Heartbeat's
/// `WHITESPACE` use.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// `sscanf`'s `%d`: blanks, an optional sign, digits; the number and the rest.
fn scan_int(text: &str) -> Option<(i64, &str)> {
    let text = text.trim_start_matches(is_c_space);
    let (negative, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let digits = body.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    // Saturate where C's %d would overflow: any such index is rejected.
    let value: i64 = body[..digits].parse().unwrap_or(i64::MAX);
    Some((if negative { -value } else { value }, &body[digits..]))
}

/// `sscanf`'s `%s`: blanks, then a word up to the next blank.
fn scan_word(text: &str) -> Option<(&str, &str)> {
    let text = text.trim_start_matches(is_c_space);
    let end = text.find(is_c_space).unwrap_or(text.len());
    (end > 0).then(|| (&text[..end], &text[end..]))
}

/// Build the node configuration from Heartbeat's files.
pub(super) fn to_node_config(
    cf: &HaCf,
    keys: &AuthKeys,
    local_name: &str,
) -> Result<NodeConfig, ConfigError> {
    let local_name = local_name.to_ascii_lowercase();
    let mut names = cf.nodes.clone();
    names.sort();
    let nodes: Vec<NodeSpec> = names
        .iter()
        .enumerate()
        .map(|(i, name)| NodeSpec {
            id: NodeId(u16::try_from(i + 1).unwrap_or(u16::MAX)),
            name: name.clone(),
            votes: 1,
        })
        .collect();
    if nodes.len() > usize::from(u16::MAX) {
        return Err(ConfigError::Invalid {
            source_name: cf.path.display().to_string(),
            what: "too many nodes".into(),
        });
    }
    let local = nodes
        .iter()
        .find(|n| n.name == local_name)
        .map(|n| n.id)
        .ok_or_else(|| ConfigError::Invalid {
            source_name: cf.path.display().to_string(),
            what: format!(
                "this host's name `{local_name}` is not among the `node` names ({}); Heartbeat matches `uname -n`",
                cf.nodes.join(", ")
            ),
        })?;

    // One unicast link per interface, with every peer named on it.
    let mut links: Vec<LinkConfig> = Vec::new();
    for (_, medium) in &cf.media {
        match medium {
            Medium::Ucast {
                interface,
                peer,
                port,
            } => {
                let addr = SocketAddr::new(*peer, *port);
                let existing = links.iter_mut().find_map(|l| match l {
                    LinkConfig::Unicast {
                        interface: Some(i),
                        port: p,
                        peers,
                        ..
                    } if i == interface && p == port => Some(peers),
                    _ => None,
                });
                match existing {
                    Some(peers) => peers.push(addr),
                    None => links.push(LinkConfig::Unicast {
                        interface: Some(interface.clone()),
                        bind: None,
                        port: *port,
                        peers: vec![addr],
                    }),
                }
            }
            Medium::Mcast {
                interface,
                group,
                port,
                ttl,
                loopback,
            } => links.push(LinkConfig::Multicast {
                interface: Some(interface.clone()),
                interface_address: None,
                group: *group,
                port: *port,
                ttl: *ttl,
                loopback: *loopback,
            }),
            Medium::Bcast { interface, port } => links.push(LinkConfig::Broadcast {
                interface: interface.clone(),
                port: *port,
            }),
        }
    }

    let mut warnings: Vec<String> = cf
        .ignored
        .iter()
        .map(|(line, d)| {
            format!(
                "{}:{line}: `{d}` is not used by perfplus",
                cf.path.display()
            )
        })
        .collect();
    warnings.extend(keys.warnings.iter().cloned());
    if keys.active_key().method == AuthMethod::Crc {
        warnings.push(format!(
            "{}: the signing key uses crc, which detects corruption but authenticates nothing: anyone on the network can forge heartbeats; use sha1",
            keys.path.display()
        ));
    }
    if cf.auto_failback == AutoFailback::Legacy {
        warnings.push(format!(
            "{}: auto_failback legacy is deprecated; perfplus treats it as off",
            cf.path.display()
        ));
    }
    warnings.push(
        "no fencing is configured in ha.cf terms: convicted nodes' resources are recovered without fencing, as Heartbeat v1 does".into(),
    );

    let deadping = cf.deadping_ms.unwrap_or(cf.deadtime_ms);
    Ok(NodeConfig {
        source: cf.path.display().to_string(),
        cluster_name: cf.cluster.clone(),
        nodes,
        local,
        links,
        key: keys.cluster_key(),
        interval_ms: cf.keepalive_ms,
        // perfplus's own detector judges, and Heartbeat's deadtime bounds
        // it: a node is never declared dead later than Heartbeat would.
        detector: DetectorConfig {
            max_silence_us: Some(cf.deadtime_ms * 1_000),
            ..DetectorConfig::default()
        },
        initial_wait_ms: cf.effective_initdead_ms(),
        ping_nodes: cf.ping.clone(),
        ping: PingConfig {
            interval_us: (cf.keepalive_ms * 1_000).max(100_000),
            dead_us: deadping * 1_000,
        },
        ping_method: PingMethod::Auto,
        fencing: Fencing::Disabled,
        fence_command: None,
        tie_fence_delay_ms: 5_000,
        auto_failback: cf.auto_failback == AutoFailback::On,
        incarnation_file: None,
        protocol: Protocol::Heartbeat3(Heartbeat3 {
            keys: keys.keyring(),
            deadtime_ms: cf.deadtime_ms,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
        }),
        warnings,
        // ha.cf carries membership only; resources come from a native file.
        cluster: super::ClusterConfig::default(),
        realtime: cf.realtime,
    })
}

/// A Heartbeat time: seconds (`2`, `0.5`) or milliseconds (`500ms`).
fn parse_time(text: &str) -> Result<u64, String> {
    let bad = || {
        format!("`{text}` is not a time: expected seconds (`2`, `1.5`) or milliseconds (`500ms`)")
    };
    let lower = text.to_ascii_lowercase();
    let (number, scale) = if let Some(ms) = lower.strip_suffix("ms") {
        (ms, 1.0)
    } else if let Some(s) = lower.strip_suffix('s') {
        (s, 1_000.0)
    } else {
        (lower.as_str(), 1_000.0)
    };
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let ms = (value * scale).round();
    if !(0.0..=86_400_000.0).contains(&ms) {
        return Err(format!("`{text}` is out of range (at most a day)"));
    }
    Ok(crate::detector::us_from_f64(ms))
}

fn parse_port(text: &str) -> Result<u16, String> {
    text.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("`{text}` is not a UDP port (1 to 65535)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# Two-node cluster, as in the Heartbeat docs.
logfile /var/log/ha-log
keepalive 500ms
deadtime 10
warntime 5
initdead 30
udpport 694
ucast eth0 10.0.0.2
ucast eth0 10.0.0.1
bcast eth1
mcast eth2 239.0.0.43 694 1 0
ping 10.0.0.254
auto_failback off
node alpha
node Beta
crm off
";

    fn cf() -> HaCf {
        HaCf::parse(SAMPLE, Path::new("/etc/ha.d/ha.cf")).unwrap()
    }

    #[test]
    fn sample_ha_cf_is_read_with_its_media_and_times() {
        let cf = cf();
        assert_eq!(cf.nodes, vec!["alpha", "beta"]);
        assert_eq!(cf.keepalive_ms, 500);
        assert_eq!(cf.deadtime_ms, 10_000);
        assert_eq!(cf.effective_warntime_ms(), 5_000);
        assert_eq!(cf.effective_initdead_ms(), 30_000);
        assert_eq!(cf.media.len(), 4);
        assert_eq!(cf.ping, vec!["10.0.0.254".parse::<IpAddr>().unwrap()]);
        assert_eq!(cf.auto_failback, AutoFailback::Off);
        assert_eq!(
            cf.ignored,
            vec![(2, "logfile".to_string()), (16, "crm".to_string())]
        );
    }

    #[test]
    fn heartbeat_defaults_apply() {
        let cf = HaCf::parse("node a b\nbcast eth0\n", Path::new("ha.cf")).unwrap();
        assert_eq!((cf.keepalive_ms, cf.deadtime_ms), (1_000, 30_000));
        assert_eq!(cf.effective_warntime_ms(), 15_000);
        assert_eq!(cf.effective_initdead_ms(), 30_000);
        assert_eq!(cf.udpport, 694);
        assert_eq!(cf.cluster, "linux-ha");
        let short = HaCf::parse("node a b\nbcast eth0\ndeadtime 5\n", Path::new("ha.cf")).unwrap();
        assert_eq!(short.effective_initdead_ms(), 12_000);
        let mid = HaCf::parse("node a b\nbcast eth0\ndeadtime 8\n", Path::new("ha.cf")).unwrap();
        assert_eq!(mid.effective_initdead_ms(), 16_000);
    }

    #[test]
    fn udpport_applies_to_the_media_lines_after_it() {
        let cf = HaCf::parse(
            "node a b\nbcast eth0\nudpport 700\nbcast eth1\n",
            Path::new("ha.cf"),
        )
        .unwrap();
        let ports: Vec<u16> = cf
            .media
            .iter()
            .map(|(_, m)| match m {
                Medium::Bcast { port, .. } => *port,
                _ => 0,
            })
            .collect();
        assert_eq!(ports, vec![694, 700]);
    }

    #[test]
    fn errors_name_the_file_the_line_and_what_was_expected() {
        let err = HaCf::parse(
            "node a b\nucast eth0 not-an-ip\n",
            Path::new("/etc/ha.d/ha.cf"),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "/etc/ha.d/ha.cf:2: `ucast` expects `<interface> <peer IP address>`; `not-an-ip` is not an IP address"
        );
        let err = HaCf::parse("node a b\nbcast eth0\nkeepalive soon\n", Path::new("ha.cf"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("ha.cf:3: `soon` is not a time"), "{err}");
        let err = HaCf::parse(
            "node a b\nbcast eth0\nkeepalive 2\ndeadtime 3\n",
            Path::new("ha.cf"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("more than twice `keepalive`"), "{err}");
        let err = HaCf::parse("mcast eth0 10.0.0.1 694 1 0\n", Path::new("ha.cf"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ha.cf:1: `mcast`: `10.0.0.1` is not an IPv4 multicast group"),
            "{err}"
        );
    }

    #[test]
    fn authkeys_are_read_with_index_and_method() {
        let keys = AuthKeys::parse(
            "# keys\nauth 2\n1 md5 oldsecret\n2 sha1 new\n3 crc\n",
            Path::new("authkeys"),
        )
        .unwrap();
        assert_eq!(keys.active, 2);
        assert_eq!(keys.active_key().method, AuthMethod::Sha1);
        assert_eq!(keys.active_key().secret, b"new");
        assert_eq!(keys.keys.len(), 3);
        assert!(keys.warnings.is_empty());
        assert!(!format!("{keys:?}").contains("oldsecret"));
        let ring = keys.keyring();
        assert_eq!(ring.signing_key().index, 2);
        assert!(ring.key(1).is_some() && ring.key(3).is_some());
    }

    #[test]
    fn authkeys_secret_is_the_first_word_after_the_method_as_heartbeat_reads_it() {
        // Heartbeat: sscanf(line, "%d%s%s"); `#` is a comment only where a
        // line starts (after blanks).
        let keys = AuthKeys::parse(
            "   # indented comment\n\tauth 1\n1 sha1 testsecret and more words # note\n2 md5 #notacomment\n",
            Path::new("authkeys"),
        )
        .unwrap();
        assert_eq!(keys.active_key().secret, b"testsecret");
        let two = keys.keys.iter().find(|k| k.index == 2).unwrap();
        assert_eq!(two.secret, b"#notacomment");
        assert_eq!(keys.warnings.len(), 2, "{:?}", keys.warnings);
        assert!(keys.warnings[0].contains("`and more words # note` is ignored"));
        assert!(keys.warnings[1].contains("a `#` is a comment only at the start of a line"));
    }

    #[test]
    fn authkeys_follow_sscanf_for_odd_spacing_zero_index_and_redefinitions() {
        // "auth1" and "1sha1 k" scan as Heartbeat scans them; index 0 is
        // valid (MAXAUTH is 16); a later definition of an index replaces it,
        // and a signing key is taken only from key lines below `auth`.
        let keys = AuthKeys::parse(
            "auth0\n0sha1 first\n0 md5 second\n+7 crc\n",
            Path::new("authkeys"),
        )
        .unwrap();
        assert_eq!(keys.active, 0);
        assert_eq!(keys.active_key().method, AuthMethod::Md5);
        assert_eq!(keys.active_key().secret, b"second");
        assert_eq!(
            keys.keys.iter().map(|k| k.index).collect::<Vec<_>>(),
            vec![0, 7]
        );
        let err = AuthKeys::parse("1 sha1 k\nauth 1\n", Path::new("authkeys"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`auth 1` names no key defined after it"),
            "{err}"
        );
    }

    #[test]
    fn authkeys_errors_name_the_line() {
        let err = AuthKeys::parse("auth 1\n1 rot13 x\n", Path::new("/etc/ha.d/authkeys"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "/etc/ha.d/authkeys:2: unknown method `rot13`: expected sha1, md5 or crc (lower case)"
        );
        let err = AuthKeys::parse("auth 1\n1 SHA1 x\n", Path::new("authkeys"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown method `SHA1`"), "{err}");
        let err = AuthKeys::parse("auth 3\n1 sha1 x\n", Path::new("authkeys"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`auth 3` names no key"), "{err}");
        let err = AuthKeys::parse("auth 1\n1 sha1\n", Path::new("authkeys"))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "authkeys:2: key 1 (sha1) has no secret");
        let err = AuthKeys::parse("auth 1\n1 crc x\n", Path::new("authkeys"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("key 1 (crc) takes no secret"), "{err}");
        let err = AuthKeys::parse("auth 16\n16 sha1 x\n", Path::new("authkeys"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("authkeys:2: key index 16 is out of range"),
            "{err}"
        );
        let err = AuthKeys::parse("automatic\n", Path::new("authkeys"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("authkeys:1: expected `auth <index>`"), "{err}");
        let err = AuthKeys::parse("Auth 1\n", Path::new("authkeys"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("authkeys:1: expected `auth <index>` or `<index> <method> [key]`"),
            "{err}"
        );
    }

    proptest::proptest! {
        /// Any text, above all lines built from the words these files use,
        /// is parsed or refused with an error, never a panic; a parsed
        /// authkeys always has its signing key.
        #[test]
        fn garbage_files_never_panic(
            lines in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::prop_oneof![
                        proptest::strategy::Just("auth".to_string()),
                        proptest::strategy::Just("sha1".to_string()),
                        proptest::strategy::Just("crc".to_string()),
                        proptest::strategy::Just("#".to_string()),
                        proptest::strategy::Just("node".to_string()),
                        proptest::strategy::Just("ucast".to_string()),
                        proptest::strategy::Just("deadtime".to_string()),
                        "[0-9+-]{1,4}",
                        "\\PC{0,6}",
                    ],
                    0..5,
                ),
                0..8,
            )
        ) {
            let text: String = lines.iter().map(|l| l.join(" ") + "\n").collect();
            if let Ok(keys) = AuthKeys::parse(&text, Path::new("authkeys")) {
                proptest::prop_assert!(keys.keys.iter().any(|k| k.index == keys.active));
                let _ = keys.keyring();
            }
            let _ = HaCf::parse(&text, Path::new("ha.cf"));
        }
    }

    #[test]
    fn authkeys_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("perfplus-authkeys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("authkeys");
        std::fs::write(&path, "auth 1\n1 sha1 s3cret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = AuthKeys::read(&path).unwrap_err();
        assert!(
            matches!(err, ConfigError::Permissions { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(AuthKeys::read(&path).unwrap().active, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ha_cf_and_authkeys_become_a_node_config() {
        let keys = AuthKeys::parse("auth 1\n1 sha1 s3cret\n", Path::new("authkeys")).unwrap();
        let config = to_node_config(&cf(), &keys, "BETA").unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.local,
            NodeId(2),
            "ids follow sorted names: alpha 1, beta 2"
        );
        assert_eq!(config.interval_ms, 500);
        assert_eq!(config.initial_wait_ms, 30_000);
        assert_eq!(config.detector.method, DetectorConfig::default().method);
        assert_eq!(config.detector.max_silence_us, Some(10_000_000));
        let Protocol::Heartbeat3(hb) = &config.protocol else {
            panic!("ha.cf speaks Heartbeat 3: {:?}", config.protocol);
        };
        assert_eq!(hb.deadtime_ms, 10_000);
        assert_eq!(hb.keys.signing_key().secret, b"s3cret");
        assert_eq!(config.links.len(), 3, "ucast lines on eth0 share one link");
        assert!(matches!(&config.links[0], LinkConfig::Unicast { peers, .. } if peers.len() == 2));
        assert_eq!(config.key, keys.cluster_key());
        assert!(config.warnings.iter().any(|w| w.contains("`logfile`")));
        let err = to_node_config(&cf(), &keys, "gamma")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`gamma` is not among the `node` names (alpha, beta)"),
            "{err}"
        );
    }

    #[test]
    fn different_secrets_or_methods_give_different_keys() {
        let a = AuthKeys::parse("auth 1\n1 sha1 x\n", Path::new("k")).unwrap();
        let b = AuthKeys::parse("auth 1\n1 md5 x\n", Path::new("k")).unwrap();
        let c = AuthKeys::parse("auth 1\n1 sha1 y\n", Path::new("k")).unwrap();
        assert_ne!(a.cluster_key(), b.cluster_key());
        assert_ne!(a.cluster_key(), c.cluster_key());
    }
}
