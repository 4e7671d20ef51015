//! `perfplus`: the command-line tool.
//!
//! ```text
//! perfplus migrate --backend xen --domain NAME --to DEST [options]
//! perfplus migrate-receive [--receiver CMD]
//! perfplus help [COMMAND]
//! ```
//!
//! `migrate` live-migrates a Xen guest (PV or PVH) with Perf+ to a host
//! running the stock `xl migrate-receive`, speaking xl's protocol over the
//! same kind of transport as `xl migrate` (`ssh DEST RECEIVER`, or with
//! `--ssh-command ''` DEST itself as the command). With the default
//! receiver, `perfplus migrate-receive` at DEST, pages travel zero- and
//! delta-encoded and are rebuilt there for `xl migrate-receive`; with
//! `--stock-receiver` the destination needs no perfplus at all. See
//! [`xen`] for the options.
//!
//! Exit status: 0 done; 1 failed (for `migrate`: the guest runs at the
//! source); 2 usage; 3 `migrate` failed in the hand-over, both copies may
//! exist (check both hosts, as xl says).
//!
//! Each subcommand is one entry in [`COMMANDS`] with its own module and
//! parser, so more (`node`, `status`, `receive`, `standby`) sit next to
//! these without touching them.

use std::process::ExitCode;

mod xen;

/// A subcommand: its name, a one-line summary, its usage, and its entry
/// point (which parses the rest of the command line).
struct Subcommand {
    name: &'static str,
    summary: &'static str,
    usage: &'static str,
    run: fn(&[String]) -> ExitCode,
}

const COMMANDS: &[Subcommand] = &[
    Subcommand {
        name: "migrate",
        summary: "live-migrate a guest with Perf+",
        usage: xen::MIGRATE_USAGE,
        run: xen::migrate_main,
    },
    Subcommand {
        name: "migrate-receive",
        summary:
            "receive a transcoded Xen migration for xl migrate-receive (run by the sender over ssh)",
        usage: xen::RECEIVE_USAGE,
        run: xen::receive_main,
    },
];

/// Exit status for bad usage.
const EXIT_USAGE: u8 = 2;

fn print_help() {
    eprintln!("usage: perfplus COMMAND [ARGS]\n\ncommands:");
    for c in COMMANDS {
        eprintln!("  {:<16} {}", c.name, c.summary);
    }
    eprintln!("\n`perfplus help COMMAND` for a command's options.");
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(name) = args.first() else {
        print_help();
        return ExitCode::from(EXIT_USAGE);
    };
    if matches!(name.as_str(), "help" | "-h" | "--help") {
        match args
            .get(1)
            .and_then(|n| COMMANDS.iter().find(|c| c.name == n))
        {
            Some(c) => eprintln!("usage: {}", c.usage),
            None => print_help(),
        }
        return ExitCode::SUCCESS;
    }
    match COMMANDS.iter().find(|c| c.name == name) {
        Some(command) => (command.run)(&args[1..]),
        None => {
            eprintln!("perfplus: unknown command {name:?}");
            print_help();
            ExitCode::from(EXIT_USAGE)
        }
    }
}
