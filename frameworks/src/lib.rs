//! The framework SDK: schedulers and executors written as Strata
//! processes, with a driver that finds the master, re-registers after
//! losing it and acknowledges status updates.
