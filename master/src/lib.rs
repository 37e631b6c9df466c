//! The Strata master: the books of agents, frameworks, offers and tasks,
//! the pluggable allocator that decides which framework is offered what,
//! authorization by Apache Mesos's ACLs, and the operators' HTTP API and
//! web UI.
//!
//! Built in three rings: pure state machines (books, allocator) that take
//! time as an argument and return commands as data; one actor per role
//! that carries those commands out; and `strata-runtime` underneath.

pub mod allocator;
pub mod api;
pub mod authorization;
pub mod books;
pub mod metrics;
pub mod operator;
pub mod process;
pub mod registry;
pub mod state;
pub mod zk_registry;

pub use books::Config;
pub use process::{MASTER_ID, Master};
