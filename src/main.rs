//! The `nvkv` command line.

use anyhow::Result;
use clap::{Parser, Subcommand};

use nvkv::bench::{self, BenchArgs};
use nvkv::server::{self, ServeArgs};
use nvkv::store::{self, LoadArgs};

/// nvkv: a key-value store for NVMe SSDs. One device read per GET.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the server (creates an empty store at --path when there is none).
    Serve(ServeArgs),
    /// Create a store and fill it with N generated records (the original mk_data).
    Load(LoadArgs),
    /// Measure a server with GETs (and writes, by workload) of loaded keys.
    Bench(BenchArgs),
    /// Overwrite random loaded keys with random data of the same size.
    Insert(BenchArgs),
    /// Verify a store offline: every record's checksum and every index entry.
    Check {
        /// Store directory.
        #[arg(long)]
        path: std::path::PathBuf,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Serve(args) => server::serve(args, |addr| {
            // Tests and scripts read this line to learn the port.
            println!("nvkv listening on {addr}");
        }),
        Cmd::Load(args) => {
            let summary = store::load(&args)?;
            println!("{summary}");
            Ok(())
        }
        Cmd::Bench(args) => {
            bench::run_bench(&args)?.print(args.json);
            Ok(())
        }
        Cmd::Check { path } => {
            let report = store::check(&path)?;
            println!("{report}");
            if !report.ok() {
                std::process::exit(2);
            }
            Ok(())
        }
        Cmd::Insert(args) => {
            bench::run_insert(&args)?.print(args.json);
            Ok(())
        }
    }
}
