//! [`XenError`]: what can go wrong talking to Xen, with what to do about it.

use libxenctrl_sys::LoadError;

/// A failure of the Xen backend. Unless a variant says otherwise, nothing
/// changed on the host or in the guest.
#[derive(Debug, thiserror::Error)]
pub enum XenError {
    /// This host runs no Xen hypervisor (or this is not dom0): the
    /// privileged command interface is missing.
    #[error("no Xen hypervisor on this host (cannot open {path})")]
    NoHypervisor {
        /// The device tried first (`/dev/xen/privcmd`).
        path: &'static str,
    },
    /// The privileged command interface exists but cannot be opened
    /// (not root, or another process holds it exclusively).
    #[error("cannot open {path}: {source} (perfplus must run as root in dom0)")]
    PrivcmdUnavailable {
        /// The device.
        path: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A Xen tool-stack library is missing, incomplete or of another Xen
    /// release; the message names the Debian package to install.
    #[error("Xen libraries: {0}")]
    Library(#[from] LoadError),
    /// The hypervisor is not Xen 4.17, which these bindings (and
    /// libxenctrl 4.17's domctl interface) need.
    #[error(
        "Xen {major}.{minor} is running, but perfplus is built for Xen 4.17 \
         (libxenctrl.so.4.17); use a perfplus built for Xen {major}.{minor}"
    )]
    HypervisorVersion {
        /// Running hypervisor's major version.
        major: u32,
        /// Running hypervisor's minor version.
        minor: u32,
    },
    /// No domain with this name or id.
    #[error("no Xen domain {0}")]
    NoSuchDomain(String),
    /// A libxenctrl / libxenguest / libxenstore call failed.
    #[error("{call} failed{}: {source}", domain_suffix(*.domid))]
    Call {
        /// The library call.
        call: &'static str,
        /// The domain it was about, if any.
        domid: Option<u32>,
        /// errno.
        #[source]
        source: std::io::Error,
    },
    /// The guest did not suspend when asked (xenstore `control/shutdown`).
    /// If it never acknowledged the request, the request was withdrawn
    /// and the guest runs on; if it acknowledged but did not finish, it
    /// may still suspend late (perfplus resumes it when it sees that).
    #[error(
        "domain {domid} did not suspend within {after_ms} ms ({})",
        if *.acknowledged {
            "it acknowledged the request but did not finish"
        } else {
            "it never acknowledged the request, which was withdrawn: are its PV drivers running?"
        }
    )]
    SuspendTimeout {
        /// The domain.
        domid: u32,
        /// Whether the guest took the request (cleared `control/shutdown`).
        acknowledged: bool,
        /// How long perfplus waited.
        after_ms: u64,
    },
    /// Asked to suspend, the guest shut down for another reason (or was
    /// destroyed): there is nothing left to migrate.
    #[error("domain {domid} shut down with reason {reason} instead of suspending")]
    UnexpectedShutdown {
        /// The domain.
        domid: u32,
        /// Its `SHUTDOWN_*` reason.
        reason: u32,
    },
    /// A toolstack command (`xl`) perfplus runs for the bookkeeping it
    /// leaves to the toolstack failed.
    #[error("`{command}` failed: {reason}")]
    Toolstack {
        /// The command line.
        command: String,
        /// Its exit status and error output, or why it did not run.
        reason: String,
    },
    /// The hypervisor answered something these bindings cannot use.
    #[error("{call} returned {what}{}", domain_suffix(*.domid))]
    Unexpected {
        /// The library call.
        call: &'static str,
        /// The domain it was about, if any.
        domid: Option<u32>,
        /// What was wrong with the answer.
        what: String,
    },
}

fn domain_suffix(domid: Option<u32>) -> String {
    domid
        .map(|d| format!(" for domain {d}"))
        .unwrap_or_default()
}

impl XenError {
    /// A failed call, with errno taken now (call right after the failure).
    pub(crate) fn last_os_error(call: &'static str, domid: Option<u32>) -> Self {
        XenError::Call {
            call,
            domid,
            source: std::io::Error::last_os_error(),
        }
    }
}
