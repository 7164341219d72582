//! The `fusebert` command line: see `fusebert --help` and [`cli`].
mod cli;

fn main() {
    std::process::exit(cli::main());
}
