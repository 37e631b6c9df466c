//! The agent's task launcher as a program of its own, for tests that run
//! agents in their own process: started as the `strata` binary starts it,
//! `strata-test-launcher task-launcher --work-dir DIR`.

use std::process::ExitCode;

use strata_agent::launcher;

fn main() -> ExitCode {
    let mut arguments = std::env::args_os().skip(1);
    if arguments
        .next()
        .is_none_or(|first| first != launcher::SUBCOMMAND)
    {
        eprintln!(
            "usage: strata-test-launcher {} --work-dir DIR",
            launcher::SUBCOMMAND
        );
        return ExitCode::from(2);
    }
    match launcher::parse_arguments(arguments) {
        Ok(work_dir) => ExitCode::from(launcher::run(&work_dir).clamp(0, 255) as u8),
        Err(error) => {
            eprintln!("strata-test-launcher: {error}");
            ExitCode::from(2)
        }
    }
}
