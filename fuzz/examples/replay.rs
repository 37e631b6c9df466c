//! Runs one input through a target outside libFuzzer, to debug a finding:
//! `cargo run --example replay -- TARGET FILE`. With STRATA_FUZZ_TRACE
//! set, `master_books` prints each input it hands the books.

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(target), Some(file)) = (args.next(), args.next()) else {
        eprintln!("usage: replay TARGET FILE");
        std::process::exit(2);
    };
    let Some((_, run)) = strata_fuzz::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
    else {
        eprintln!("no target {target}");
        std::process::exit(2);
    };
    match std::fs::read(&file) {
        Ok(data) => run(&data),
        Err(error) => {
            eprintln!("{file}: {error}");
            std::process::exit(1);
        }
    }
}
