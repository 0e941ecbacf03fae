//! `tapir` binary: argv -> cli -> config -> app. No logic of its own beyond exit codes.

use std::ffi::OsString;
use std::process::ExitCode;

use tapir::cli::{self, Command};
use tapir::config::Config;

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
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
                if cli::is_ctl(&argv) {
                    print!("{}", cli::ctl_usage(&argv0));
                } else if cli::is_run(&argv) {
                    print!("{}", cli::run_usage(&argv0));
                } else {
                    print!("{}", cli::usage(&argv0));
                }
            }
            return exit(1);
        }
    };
    for w in warnings {
        println!("{w}");
    }
    let (options, run_argv) = match command {
        Command::Help => {
            print!("{}", cli::usage(&argv0));
            return exit(0);
        }
        Command::RunHelp => {
            print!("{}", cli::run_usage(&argv0));
            return exit(0);
        }
        Command::CtlHelp => {
            print!("{}", cli::ctl_usage(&argv0));
            return exit(0);
        }
        Command::Ctl { socket, action } => {
            return exit(tapir::ctl::run(&socket, &action));
        }
        Command::Version => {
            print!("{}", cli::version());
            return exit(0);
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
