//! The Xen backend on a host without a hypervisor (the normal test run):
//! its errors must say what is missing and what to install. The real
//! hypervisor is exercised by the Xen test bed (`tests/xen/run.sh`).

mod support;

use std::path::Path;

use perfplus::backend::xen::{Libraries, LoadError, XenError, XenHost};

fn is_xen_host() -> bool {
    Path::new("/dev/xen/privcmd").exists() || Path::new("/proc/xen/privcmd").exists()
}

#[test]
fn opening_without_a_hypervisor_says_there_is_none() {
    if is_xen_host() {
        support::skip(
            "opening_without_a_hypervisor_says_there_is_none",
            "this host runs Xen",
        );
        return;
    }
    let err = XenHost::open().unwrap_err();
    assert!(matches!(err, XenError::NoHypervisor { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "no Xen hypervisor on this host (cannot open /dev/xen/privcmd)"
    );
}

#[test]
fn a_missing_library_names_the_debian_package_to_install() {
    let empty = support::scratch_dir("xen-no-libraries");
    let err = XenError::from(Libraries::load_from_dir(&empty).unwrap_err());
    let text = err.to_string();
    assert!(
        text.starts_with("Xen libraries: libxentoollog.so.1 is not installed"),
        "{text}"
    );
    assert!(
        text.contains("install the Debian package libxentoollog1"),
        "{text}"
    );
}

#[test]
fn libraries_of_another_xen_release_are_named() {
    let dir = support::scratch_dir("xen-other-release");
    // A libxentoollog that loads, then only a 4.18 libxenctrl.
    let system = Path::new("/usr/lib/x86_64-linux-gnu/libxentoollog.so.1");
    if !system.exists() {
        support::skip(
            "libraries_of_another_xen_release_are_named",
            "libxentoollog1 is not installed (apt-get install libxen-dev)",
        );
        return;
    }
    std::fs::copy(system, dir.join("libxentoollog.so.1")).unwrap();
    std::fs::write(dir.join("libxenctrl.so.4.18"), b"").unwrap();
    let err = Libraries::load_from_dir(&dir).unwrap_err();
    let LoadError::WrongVersion { library, found } = &err else {
        panic!("expected WrongVersion, got {err:?}");
    };
    assert_eq!(library.soname, "libxenctrl.so.4.17");
    assert_eq!(found, &vec![dir.join("libxenctrl.so.4.18")]);
    assert!(err.to_string().contains("perfplus supports Xen 4.17 only"));
}

#[test]
fn the_installed_libraries_have_every_function_perfplus_calls() {
    // Loading resolves every symbol of every library up front
    // (dynamic_link_require_all), so this checks the bindings against the
    // real 4.17 libraries.
    match Libraries::load() {
        Ok(_) => {}
        Err(e @ LoadError::Missing { .. }) => support::skip(
            "the_installed_libraries_have_every_function_perfplus_calls",
            &format!("{e} (apt-get install libxen-dev)"),
        ),
        Err(e) => panic!("{e}"),
    }
}
