//! `tapir` binary: argv -> cli -> config -> app. No logic of its own beyond exit codes.
//!
//! In pasta mode (`cli::is_pasta`) errors are printed bare on stderr and exit 1, as pasta's
//! are; `app::pasta` turns the options into a configuration itself (it needs the host's
//! addresses), so nothing here builds a `Config` for it.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use tapir::cli::{self, Command};
use tapir::config::Config;

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Print `text` on stdout and flush it (a pipe must get it even if the process exits at once).
fn stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let argv0 = argv
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tapir".to_owned());
    let (command, warnings) = match cli::parse(&argv) {
        Ok(v) => v,
        Err(e) => {
            if !e.message.is_empty() {
                eprintln!("{}", e.message);
            }
            if e.show_usage {
                let usage = cli::error_usage(&argv);
                if usage.to_stderr {
                    eprint!("{}", usage.text);
                } else {
                    stdout(&usage.text);
                }
            }
            return exit(1);
        }
    };
    let warnings_to_stderr = cli::warnings_to_stderr(&argv);
    for w in warnings {
        if warnings_to_stderr {
            eprintln!("{w}");
        } else {
            println!("{w}");
        }
    }
    let (options, run_argv) = match command {
        Command::Help => {
            stdout(&cli::usage(&argv0));
            return exit(0);
        }
        Command::RunHelp => {
            stdout(&cli::run_usage(&argv0));
            return exit(0);
        }
        Command::CtlHelp => {
            stdout(&cli::ctl_usage(&argv0));
            return exit(0);
        }
        Command::PastaHelp => {
            stdout(&cli::pasta_usage(&argv));
            return exit(0);
        }
        Command::Ctl { socket, action } => {
            return exit(tapir::ctl::run(&socket, &action));
        }
        Command::Version => {
            stdout(&cli::version());
            return exit(0);
        }
        Command::PastaVersion => {
            stdout(&cli::pasta_version());
            return exit(0);
        }
        Command::Pasta(opts) => {
            return match tapir::app::pasta(&opts) {
                Ok(code) => exit(code),
                Err(e) => {
                    eprintln!("{e}");
                    exit(1)
                }
            };
        }
        Command::Attach(options) => (options, None),
        Command::Run { options, command } => (options, Some(command)),
    };
    let cfg = match Config::from_options(options, run_argv.is_some()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return exit(1);
        }
    };
    tapir::logger::init(cfg.debug);
    let result = match &run_argv {
        Some(argv) => tapir::app::run(&cfg, argv),
        None => tapir::app::attach(&cfg),
    };
    match result {
        Ok(code) => exit(code),
        Err(e) => {
            eprintln!("{e}");
            exit(e.exit_code())
        }
    }
}
