//! perpcore-cli: the `perpcore` binary and the library behind it.
//!
//! Owns the command-line front ends over the engine: the JSON Lines scenario runner
//! ([`scenario`]) and the golden-file comparison used by replay tests ([`golden`]). It
//! only drives the engine through `Engine::apply` and reads it through its public views;
//! it must never mutate engine state any other way, never read a clock into a command,
//! and never touch a float (decimals are parsed exactly by `perpcore-types`).

pub mod golden;
pub mod scenario;

pub use scenario::{
    load_commands, run_scenario, run_scenario_with, OutputKind, RunOptions, RunSummary,
    ScenarioError, ScenarioOutput,
};
