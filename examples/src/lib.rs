//! Runnable examples of programs written on Strata; each is a binary of
//! this package, described in `examples/README.md`.
