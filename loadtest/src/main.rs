//! `vipfleet-loadtest`: drives vipfleet under faults and reports what users
//! would see.
//!
//! - `sim`: the protocol in the deterministic simulation (no root, no AWS):
//!   scenarios × seeds, invariant checks, moves, failover times, store cost.
//!   See [`sim_report`].
//! - `lab up|down|status`: the whole fleet on one Linux machine (network
//!   namespaces, moto, the IMDS emulator, haproxy, agents). See [`lab`].

#![forbid(unsafe_code)]

mod lab;
mod sim_report;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Load tests, fault scenarios and reports for vipfleet")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the fault scenarios in the deterministic simulation and print a summary.
    Sim(sim_report::SimArgs),
    /// Build, inspect or remove the lab (needs root and `ip netns`).
    Lab(lab::LabArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sim(args) => sim_report::run(&args),
        Command::Lab(args) => lab::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vipfleet-loadtest: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
