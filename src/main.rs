//! The `nvkv` command line.

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use nvkv::bench::{self, BenchArgs};
use nvkv::server::{self, ServeArgs, SpdkArgs};
use nvkv::store::{self, LoadArgs};

/// Replies are allocated by pollers and freed by connection threads: with
/// glibc's malloc that cross-thread traffic contends on arena locks (futex
/// calls in the poller loop); mimalloc frees across threads without locks.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// nvkv: a key-value store for NVMe SSDs. One device read per GET.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Log level (or a RUST_LOG-style filter such as `nvkv=debug`).
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

// Parsed once per process: the size of the serve variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the server (creates an empty store at --path when there is none).
    #[command(args_override_self = true)]
    Serve {
        /// TOML file of serve flags (keys are the flag names); flags given
        /// on the command line override it. See nvkv.example.toml.
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        #[command(flatten)]
        args: ServeArgs,
    },
    /// Create a store and fill it with N generated records (the original mk_data).
    Load {
        #[command(flatten)]
        args: LoadArgs,
        #[command(flatten)]
        spdk: SpdkArgs,
    },
    /// Measure a server with GETs (and writes, by workload) of loaded keys.
    Bench(BenchArgs),
    /// Overwrite random loaded keys with random data of the same size.
    Insert(BenchArgs),
    /// Verify a store offline: every record's checksum and every index entry.
    Check {
        /// Store directory.
        #[arg(long)]
        path: std::path::PathBuf,
        #[command(flatten)]
        spdk: SpdkArgs,
    },
}

fn main() {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    init_logging(&cli);
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Parses the command line, expanding `serve --config FILE` first.
fn parse() -> Result<Cli, String> {
    let mut command = Cli::command();
    command.build(); // propagates the global flags into `serve`
    let serve = command
        .find_subcommand("serve")
        .expect("serve subcommand")
        .clone();
    let argv = nvkv::config::expand(std::env::args_os().collect(), &serve)?;
    let matches = command
        .try_get_matches_from(argv)
        .unwrap_or_else(|e| e.exit());
    Cli::from_arg_matches(&matches).map_err(|e| e.to_string())
}

/// RUST_LOG wins over --log-level when set.
fn init_logging(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log_level));
    // Colours only for a terminal: a log file or journal gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Serve { args, config } => server::serve(
            ServeArgs {
                config_file: config,
                ..args
            },
            |addr| {
                // Tests and scripts read this line to learn the port.
                println!("nvkv listening on {addr}");
            },
        ),
        Cmd::Load { args, spdk } => {
            let summary = store::load(&args, &spdk.env(vec![0]))?;
            println!("{summary}");
            Ok(())
        }
        Cmd::Bench(args) => finish(bench::run_bench(&args)?, args.json),
        Cmd::Check { path, spdk } => {
            let report = store::check(&path, &spdk.env(vec![0]))?;
            println!("{report}");
            if !report.ok() {
                std::process::exit(2);
            }
            Ok(())
        }
        Cmd::Insert(args) => finish(bench::run_insert(&args)?, args.json),
    }
}

/// Prints the report of `bench` or `insert`; a run that failed (see
/// [`bench::Report::failure`]) then exits non-zero.
fn finish(report: bench::Report, json: bool) -> Result<()> {
    report.print(json);
    match report.failure() {
        Some(why) => anyhow::bail!("{why}"),
        None => Ok(()),
    }
}
