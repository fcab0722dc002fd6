//! `vipfleet-loadtest`: drives vipfleet under faults and reports what users
//! would see.
//!
//! - `sim`: the protocol in the deterministic simulation (no root, no AWS):
//!   scenarios × seeds, invariant checks, moves, failover times, store cost.
//!   The report is the `vipfleet-sim` crate's, which builds without the SDK.
//! - `lab up|down|status`: the whole fleet on one Linux machine (network
//!   namespaces, moto, the IMDS emulator, haproxy, agents). See [`lab`].
//! - `load`: the load generator, run inside a client namespace ([`load`]).
//! - `run --scenario NAME` and `demo`: load through a lab while faults
//!   strike ([`scenario`]); records become per-VIP outages ([`timeline`])
//!   and a report with an SVG timeline ([`report`]).

#![forbid(unsafe_code)]

mod footprint;
mod lab;
mod load;
mod report;
mod scenario;
mod timeline;

use clap::{Parser, Subcommand};

// One workspace version; the agent's build script records the commit for both.
#[derive(Parser)]
#[command(
    version = vipfleet_agent::build::VERSION_WITH_COMMIT,
    about = "Load tests, fault scenarios and reports for vipfleet")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the fault scenarios in the deterministic simulation and print a summary
    /// (`cargo run -p vipfleet-sim` does the same without building the AWS SDK).
    Sim(vipfleet_sim::SimArgs),
    /// Send HTTP requests to VIPs at a fixed rate and record every one (run it in a client namespace).
    Load(load::LoadArgs),
    /// Build, inspect or remove the lab (needs root and `ip netns`).
    Lab(lab::LabArgs),
    /// Run a fault scenario (or `all`) under load in a lab and write a report.
    Run(scenario::RunArgs),
    /// The README's demo: 4 nodes, 32 VIPs, 2 route tables, every scenario, a summary.
    Demo {
        /// Where the reports go.
        #[arg(long, default_value = "lab-out")]
        out: std::path::PathBuf,
        /// Lease TTL in milliseconds.
        #[arg(long, default_value_t = 3000)]
        lease_ttl: u64,
        /// Heartbeat interval in milliseconds.
        #[arg(long, default_value_t = 1000)]
        heartbeat: u64,
    },
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Non-zero when any report lists a violation.
fn exit_code(reports: Vec<report::Report>) -> std::process::ExitCode {
    if reports.iter().all(|r| r.violations.is_empty()) {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(3)
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sim(args) => vipfleet_sim::run(&args).map_err(anyhow::Error::from),
        Command::Lab(args) => lab::run(args),
        Command::Load(args) => runtime()
            .and_then(|rt| rt.block_on(load::run(args)))
            .map(|()| std::process::ExitCode::SUCCESS),
        Command::Run(args) => runtime()
            .and_then(|rt| rt.block_on(scenario::run(&args)))
            .map(exit_code),
        Command::Demo {
            out,
            lease_ttl,
            heartbeat,
        } => scenario::demo(&out, lease_ttl, heartbeat)
            .and_then(|args| runtime()?.block_on(scenario::run(&args)))
            .map(exit_code),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vipfleet-loadtest: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
