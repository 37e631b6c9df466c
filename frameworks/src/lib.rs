//! The framework SDK: schedulers and executors written as Strata
//! processes.
//!
//! [`executor`] turns a type with a few callbacks into a custom executor
//! an agent can run.

pub mod executor;
