//! The framework SDK: schedulers and executors written as Strata
//! processes.
//!
//! [`scheduler`] runs a type with callbacks as a framework's scheduler and
//! handles the master for it; [`executor`] turns a type with a few
//! callbacks into a custom executor an agent can run.

pub mod executor;
pub mod scheduler;
