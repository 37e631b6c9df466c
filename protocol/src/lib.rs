//! Strata's shared wire and API types: ids, resources, offers, tasks and
//! their states, the analogue of Apache Mesos's `mesos.proto`.
//!
//! Everything here is data and pure functions on it: no IO, no clock, no
//! runtime. Masters, agents and frameworks exchange these types as
//! messages through `strata-runtime`.
