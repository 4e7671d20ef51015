//! The library version, for C: macros in the header and a runtime string.

use std::ffi::c_char;

/// Major version; a test checks it against `Cargo.toml`.
pub const PERFPLUS_VERSION_MAJOR: u32 = 0;
/// Minor version; a test checks it against `Cargo.toml`.
pub const PERFPLUS_VERSION_MINOR: u32 = 1;
/// Patch version; a test checks it against `Cargo.toml`.
pub const PERFPLUS_VERSION_PATCH: u32 = 0;

const VERSION_CSTR: &std::ffi::CStr = match std::ffi::CStr::from_bytes_with_nul(
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes(),
) {
    Ok(text) => text,
    Err(_) => panic!("the package version contains a NUL"),
};

/// The version of the loaded library as `"MAJOR.MINOR.PATCH"`: compare it
/// with the `PERFPLUS_VERSION_*` macros to detect a header/library mismatch.
/// Never NULL; static, must not be freed.
#[no_mangle]
pub extern "C" fn perfplus_version() -> *const c_char {
    super::boundary::guard_value(VERSION_CSTR.as_ptr(), || VERSION_CSTR.as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_constants_match_cargo_toml() {
        assert_eq!(
            PERFPLUS_VERSION_MAJOR.to_string(),
            env!("CARGO_PKG_VERSION_MAJOR")
        );
        assert_eq!(
            PERFPLUS_VERSION_MINOR.to_string(),
            env!("CARGO_PKG_VERSION_MINOR")
        );
        assert_eq!(
            PERFPLUS_VERSION_PATCH.to_string(),
            env!("CARGO_PKG_VERSION_PATCH")
        );
    }

    #[test]
    fn runtime_version_is_the_package_version() {
        // SAFETY: perfplus_version returns a static NUL-terminated string.
        let text = unsafe { std::ffi::CStr::from_ptr(perfplus_version()) };
        assert_eq!(text.to_str().unwrap(), crate::VERSION);
    }
}
