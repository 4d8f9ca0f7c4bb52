//! The fuzz harness (issues 15 and 21): seeded mutations of every reader's input, in process
//! (`readers`), and nonsense numeric arguments for every subcommand, out of process (`cli`). The
//! default slice runs in `cargo test`; `DIFIX3D_FUZZ_CASES=100000` runs the long one. See TESTING.md.

mod cli;
mod gen;
mod readers;
