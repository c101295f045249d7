//! The `loadgen` binary: parses the command line and hands over to [`loadgen::cli`].

fn main() {
    std::process::exit(loadgen::cli::main());
}
