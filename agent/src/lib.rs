//! The Strata agent: detects its node's resources, registers with the
//! master, runs tasks as real processes in per-task sandboxes, and reports
//! every status update at least once.

pub mod cgroups;
pub mod checkpoint;
pub mod command_executor;
pub mod containerizer;
pub mod core;
pub mod credentials;
pub mod detection;
pub mod executor_api;
mod executors;
pub mod http;
pub mod image_containers;
pub mod images;
pub mod init;
pub mod isolation;
pub mod journal;
pub mod launcher;
pub mod oci;
pub mod process;
pub mod recovery;
pub mod resources;
pub mod status_updates;
pub mod usage;
pub mod users;

pub use credentials::ExecutorCredentials;
pub use process::{AGENT_ID, Agent, AgentConfig, MASTER_SILENCE_CHECK, ResourceAccount, Runner};
