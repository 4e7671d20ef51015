//! Heartbeat's configuration files as perfplus reads them (`ha.cf`,
//! `authkeys`): any bytes are parsed or refused, never a panic.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use perfplus::config::heartbeat::{AuthKeys, HaCf};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(keys) = AuthKeys::parse(&text, Path::new("authkeys")) {
        assert!(keys.keys.iter().any(|k| k.index == keys.active));
        let _ = keys.keyring();
    }
    let _ = HaCf::parse(&text, Path::new("ha.cf"));
});
