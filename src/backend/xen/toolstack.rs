//! What perfplus leaves to the toolstack (`xl`, the one that created the
//! domain and owns its devices): the domain's configuration for the
//! receiver, and destroying the source domain once the guest runs at the
//! destination. Both are outside the downtime window, so running `xl` for
//! them costs the guest nothing; the rename inside the window is done
//! in-process ([`super::XenStore::rename_domain`]).

use std::process::Command;

use super::XenError;

/// The `xl` command perfplus runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toolstack {
    xl: String,
}

impl Default for Toolstack {
    fn default() -> Self {
        Self { xl: "xl".into() }
    }
}

impl Toolstack {
    /// Use `xl` (a program name or path).
    pub fn new(xl: impl Into<String>) -> Self {
        Self { xl: xl.into() }
    }

    fn run(&self, args: &[&str]) -> Result<Vec<u8>, XenError> {
        let command = format!("{} {}", self.xl, args.join(" "));
        let out = Command::new(&self.xl)
            .args(args)
            .output()
            .map_err(|e| XenError::Toolstack {
                command: command.clone(),
                reason: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(XenError::Toolstack {
                command,
                reason: format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(out.stdout)
    }

    /// The configuration `xl migrate` would send for `domid` (libxl's
    /// retrieved configuration, from `xl list -l`), as JSON.
    pub fn migration_config(&self, domid: u32) -> Result<Vec<u8>, XenError> {
        let listing = self.run(&["list", "-l", &domid.to_string()])?;
        migration_config(&listing, domid).map_err(|reason| XenError::Toolstack {
            command: format!("{} list -l {domid}", self.xl),
            reason,
        })
    }

    /// Destroy `domid` (devices, xenstore, memory), as `xl migrate` does
    /// once the guest runs at the destination.
    pub fn destroy(&self, domid: u32) -> Result<(), XenError> {
        self.run(&["destroy", &domid.to_string()]).map(|_| ())
    }
}

/// From `xl list -l` output (`[{"domid": N, "config": {...}}]`), the config
/// of `domid` as xl sends it: `c_info.domid` 0, so the receiver picks a
/// free domain id (xl's default without `-D`).
pub fn migration_config(listing: &[u8], domid: u32) -> Result<Vec<u8>, String> {
    let doc: serde_json::Value =
        serde_json::from_slice(listing).map_err(|e| format!("not JSON: {e}"))?;
    let entry = doc
        .as_array()
        .and_then(|a| {
            a.iter().find(|d| {
                d.get("domid").and_then(serde_json::Value::as_u64) == Some(u64::from(domid))
            })
        })
        .ok_or_else(|| format!("no domain {domid} in the listing"))?;
    let mut config = entry
        .get("config")
        .cloned()
        .ok_or_else(|| format!("no configuration stored for domain {domid}"))?;
    if let Some(c_info) = config
        .get_mut("c_info")
        .and_then(serde_json::Value::as_object_mut)
    {
        if c_info.contains_key("domid") {
            c_info.insert("domid".into(), serde_json::Value::from(0));
        }
    } else {
        return Err(format!("the configuration of domain {domid} has no c_info"));
    }
    serde_json::to_vec_pretty(&config).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_sent_lets_the_receiver_choose_the_domain_id() {
        let listing = br#"[
            {"domid": 3, "config": {"c_info": {"type": "pv", "name": "web", "domid": 3},
                                    "b_info": {"max_memkb": 131072}}}
        ]"#;
        let config = migration_config(listing, 3).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(v["c_info"]["domid"], 0);
        assert_eq!(v["c_info"]["name"], "web");
        assert_eq!(v["b_info"]["max_memkb"], 131072);
    }

    #[test]
    fn a_listing_without_the_domain_is_an_error() {
        assert!(migration_config(b"[]", 3)
            .unwrap_err()
            .contains("no domain 3"));
        assert!(migration_config(b"nonsense", 3)
            .unwrap_err()
            .contains("not JSON"));
    }
}
