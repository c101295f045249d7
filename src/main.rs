//! The `midge` command: parse arguments, load the config, set up logging, run the broker.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use midge::config::{Config, ConfigError};

/// midge: a sharded, per-core MQTT 3.1/3.1.1/5.0 broker that reads mosquitto.conf.
#[derive(Debug, Parser)]
#[command(name = "midge", version, about)]
struct Cli {
    /// Configuration file (mosquitto.conf syntax). Without it: localhost:1883 only.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen on PORT: replaces the port of every configured listener (without listeners:
    /// 127.0.0.1:PORT and [::1]:PORT).
    #[arg(short, long, value_name = "PORT")]
    port: Option<u16>,
    /// Number of shards (event-loop threads); default one per core.
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    shards: Option<u16>,
    /// Log everything (every log_type), whatever the config says.
    #[arg(short, long)]
    verbose: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a configuration file: print `FILE: ok`, or the first error (exit status 1).
    Check {
        /// The configuration file to check.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Manage a mosquitto-compatible password file (mosquitto_passwd's options).
    Passwd(midge::auth::passwd::PasswdArgs),
    /// Print a manual page in roff: midge(8) or midge.conf(5) (for packaging).
    #[command(hide = true)]
    Man {
        /// 8 for midge(8), 5 for midge.conf(5).
        #[arg(value_parser = ["8", "5"])]
        section: String,
    },
}

#[path = "cli/man.rs"]
mod man;

/// Prints midge(8) or midge.conf(5), generated from `--help` and README's tables.
fn print_man(section: &str) -> ExitCode {
    let page = if section == "8" {
        let mut cmd = Cli::command();
        let help = cmd.render_long_help().to_string();
        let subcommands = cmd
            .get_subcommands_mut()
            .filter(|c| !c.is_hide_set())
            .map(|c| (c.get_name().to_owned(), c.render_long_help().to_string()))
            .collect::<Vec<_>>();
        man::midge_8(&help, &subcommands)
    } else {
        man::midge_conf_5()
    };
    print!("{page}");
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed; usage errors exit 1.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Some(Command::Check { config }) => check(&config),
        Some(Command::Man { section }) => print_man(&section),
        Some(Command::Passwd(args)) => match midge::auth::passwd::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        None => serve(cli),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::from_file(path) {
        Ok(config) => {
            for warning in &config.warnings {
                eprintln!("midge: warning: {warning}");
            }
            // The plugins are loaded and configured as at start: a bad name, library or
            // option fails the check with its FILE:LINE.
            if let Err(e) = midge::plugin::registry::Loaded::load(Vec::new(), &config.plugins) {
                return fail(&e);
            }
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn serve(cli: Cli) -> ExitCode {
    let config = match &cli.config {
        Some(path) => Config::from_file(path),
        None => Ok(Config::default()),
    };
    let mut config = match config {
        Ok(config) => config,
        Err(e) => return fail::<ConfigError>(&e),
    };
    if let Some(port) = cli.port {
        config.override_port(port);
    }
    if let Some(shards) = cli.shards {
        config.shards = Some(shards.into());
    }
    if let Err(e) = midge::logging::init(&config, cli.verbose) {
        return fail(&e);
    }
    for warning in std::mem::take(&mut config.warnings) {
        log::warn!("{warning}");
    }
    raise_open_file_limit();
    // The pid file is written and root left once the ports are bound and every file is
    // open, as mosquitto does; the pid file is removed at exit.
    match midge::run_then(config, midge::process::settle) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Raises the soft limit on open files to the hard limit: the usual soft default (1024) caps a
/// broker at about a thousand clients, far below what one shard serves. Logged, never fatal.
fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= lim.rlim_max {
            return;
        }
        let old = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
            log::debug!("Open file limit raised from {old} to {}.", lim.rlim_cur);
        } else {
            log::warn!("Open file limit is {old}: at most about that many clients.");
        }
    }
}

fn fail<E: std::fmt::Display>(error: &E) -> ExitCode {
    eprintln!("midge: {error}");
    ExitCode::FAILURE
}
