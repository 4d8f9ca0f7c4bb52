//! The `difix3d` binary: the viewer window and the command-line tools, both thin shells over the library.

mod app;
mod cli;

/// jemalloc keeps freed memory for reuse, where glibc's malloc unmaps every large block: CPU
/// inference allocates tensors of tens of MiB per layer, and page-faulting them back in cost a
/// quarter of a Difix call (BENCHMARKS.md).
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match cli::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
