//! `perfplus-arena-guest`: a guest workload in its own process, its whole
//! state in a tracked arena, controlled over stdin/stdout (see
//! `perfplus::backend::arena::GuestProcess`).
//!
//! ```text
//! perfplus-arena-guest workload=kv pages=262144 listen=127.0.0.1:7000 [keys=N] [wal=DIR] ...
//! perfplus-arena-guest incoming pages=262144
//! ```

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    #[cfg(target_os = "linux")]
    std::process::exit(perfplus::backend::arena::guest_main(&args));
    #[cfg(not(target_os = "linux"))]
    {
        let _ = args;
        eprintln!("perfplus-arena-guest needs Linux 6.7 or newer");
        std::process::exit(1);
    }
}
