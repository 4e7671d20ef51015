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

/// Every name the header gives C starts with `perfplus_` / `PERFPLUS_`: a
/// `pub const` of a Rust module outside `src/ffi` that cbindgen can reach
/// (e.g. `DEFAULT_PORT`) would otherwise become a global C macro. Such
/// modules are marked `/// cbindgen:ignore` in `src/lib.rs`.
#[test]
fn every_name_in_the_header_is_prefixed() {
    let header = include_str!("../include/perfplus.h");
    let mut names = Vec::new();
    for line in header.lines() {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("#define ") {
            names.push(rest.split_whitespace().next().unwrap_or(""));
        } else if let Some(rest) = line.strip_prefix("} ") {
            // The name of a typedef'd struct or enum.
            if !rest.trim_start().starts_with("//") {
                names.push(rest.trim_end_matches(';'));
            }
        } else if line.starts_with("typedef ") && line.ends_with(';') && !line.contains('(') {
            names.push(line.trim_end_matches(';').rsplit(' ').next().unwrap_or(""));
        } else if !line.starts_with([' ', '/', '#', '}', '{']) && line.contains('(') {
            // A function declaration: the identifier before the '('.
            let before = &line[..line.find('(').unwrap_or(0)];
            names.push(before.rsplit([' ', '*']).next().unwrap_or(""));
        } else if line.starts_with("    ") && !line.trim_start().starts_with("//") {
            // An enum value (`NAME = 1,`) or a struct field: values only.
            let item = line.trim();
            if let Some((name, _)) = item.split_once(" = ") {
                names.push(name);
            }
        }
    }
    let bad: Vec<&str> = names
        .into_iter()
        .filter(|n| {
            !n.is_empty()
                && !n.starts_with("perfplus_")
                && !n.starts_with("PERFPLUS_")
                && !["extern", "defined"].contains(n)
        })
        .collect();
    assert!(
        bad.is_empty(),
        "names in include/perfplus.h without the perfplus prefix: {bad:?}"
    );
}
