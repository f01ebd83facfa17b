//! Symphony: an orchestrator for AI workflows.
//!
//! A workflow is a YAML file ([`wdl`]); every run and every task attempt is a
//! supervised actor ([`engine`]); attempts run on [`executor`]s; durable runs
//! keep their journal in [`store`].

#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]

pub mod api;
pub mod chaos;
pub mod cli;
pub mod cluster;
pub mod codec;
pub mod engine;
pub mod executor;
pub mod inference;
pub mod node;
pub mod raft;
pub mod registry;
pub mod serving;
pub mod store;
pub mod value;
pub mod wdl;
