//! `include/perfplus.h` is what cbindgen generates from `src/ffi`, byte for
//! byte; the version macros in it are the package version.

use std::path::Path;

#[test]
fn header_is_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(root)
        .with_config(config)
        .generate()
        .expect("cbindgen failed to parse the crate");
    let mut generated = Vec::new();
    bindings.write(&mut generated);

    let path = root.join("include/perfplus.h");
    if std::env::var_os("PERFPLUS_UPDATE_HEADER").is_some() {
        std::fs::write(&path, &generated).expect("write include/perfplus.h");
        return;
    }
    let checked_in = std::fs::read(&path).unwrap_or_default();
    if checked_in != generated {
        let old = String::from_utf8_lossy(&checked_in);
        let new = String::from_utf8_lossy(&generated);
        let first = old
            .lines()
            .zip(new.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(old.lines().count().min(new.lines().count()));
        panic!(
            "include/perfplus.h differs from what cbindgen generates (first difference at line {}):\n\
             checked in: {:?}\n generated: {:?}\n\
             update it with:\n    PERFPLUS_UPDATE_HEADER=1 cargo test --test header",
            first + 1,
            old.lines().nth(first).unwrap_or("<end of file>"),
            new.lines().nth(first).unwrap_or("<end of file>"),
        );
    }
}

#[test]
fn header_version_macros_match_cargo_toml() {
    let header = include_str!("../include/perfplus.h");
    for (part, value) in [
        ("MAJOR", env!("CARGO_PKG_VERSION_MAJOR")),
        ("MINOR", env!("CARGO_PKG_VERSION_MINOR")),
        ("PATCH", env!("CARGO_PKG_VERSION_PATCH")),
    ] {
        let line = format!("#define PERFPLUS_VERSION_{part} {value}");
        assert!(
            header.lines().any(|l| l.trim() == line),
            "include/perfplus.h lacks `{line}` (Cargo.toml says {})",
            env!("CARGO_PKG_VERSION")
        );
    }
}
