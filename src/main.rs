//! The `difix3d` binary: the viewer window and the command-line tools, both thin shells over the library.

mod app;
mod cli;

/// jemalloc keeps freed memory for reuse, where glibc's malloc unmaps every large block: CPU
/// inference allocates tensors of tens of MiB per layer, and page-faulting them back in cost a
/// quarter of a Difix call (BENCHMARKS.md).
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options (its `malloc_conf`, read before `main`; `_RJEM_MALLOC_CONF` in the
/// environment still overrides them). `thp:always`: jemalloc zeroes a reused block with `memset`
/// instead of handing its pages back to the kernel (`MADV_DONTNEED`) to get fresh zeroed ones, and
/// asks for transparent huge pages. Without it every zeroed tensor (`vec![0.0; n]`, burn-flex's
/// outputs) faulted its pages in again, 4 KiB at a time: a fifth of a nerfacto training step went to
/// page faults. With it nerfacto trains 1.3x and renders 1.4x faster on the CPU (BENCHMARKS.md).
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[export_name = "_rjem_malloc_conf"]
static JEMALLOC_OPTIONS: &[u8; 11] = b"thp:always\0";

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
