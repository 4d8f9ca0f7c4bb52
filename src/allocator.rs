//! The process's memory allocator: jemalloc, its options, and [`KeepFreedMemory`], which turns its
//! purging off while a training job runs.
//!
//! Only Rust's allocations go through it (burn's CPU backend among them); C libraries such as
//! Mesa's lavapipe keep glibc's malloc.

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

/// While one of these lives, jemalloc keeps the pages of freed blocks instead of handing them back
/// to the kernel ("purging"), so a training step's tensors reuse the last step's pages rather than
/// fault fresh ones in and zero them: nerfacto trains 1.35x faster on the CPU for about a third more
/// peak memory (BENCHMARKS.md). Purging resumes, and what was kept is handed back, when the last
/// one is dropped.
///
/// It is held per job rather than set for the whole process because the viewer would otherwise
/// keep the peak of every Difix call (gigabytes) for as long as it stays open. jemalloc's own decay
/// settings do not do this: its arena for blocks of 8 MiB and more purges at once under any
/// positive decay time.
#[must_use = "purging resumes when this is dropped"]
pub struct KeepFreedMemory(());

impl KeepFreedMemory {
    pub fn hold() -> Self {
        decay::hold();
        Self(())
    }
}

impl Drop for KeepFreedMemory {
    fn drop(&mut self) {
        decay::release();
    }
}

/// jemalloc's decay times (`dirty_decay_ms`, `muzzy_decay_ms`: how long freed pages wait before
/// they are purged, -1 for never), for each arena and for arenas made later.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
mod decay {
    use std::sync::Mutex;

    use tikv_jemalloc_ctl::{arenas, epoch, raw};

    /// Never purge.
    const NEVER: isize = -1;
    const KINDS: [&str; 2] = ["dirty", "muzzy"];

    /// The holders, and the decay times before the first of them (`None` where they could not
    /// be read, and so were not changed), restored after the last.
    struct Held {
        holders: usize,
        saved: Option<Saved>,
    }

    struct Saved {
        /// For arenas made while held.
        defaults: [isize; 2],
        arenas: Vec<(u32, [isize; 2])>,
    }

    static HELD: Mutex<Held> = Mutex::new(Held {
        holders: 0,
        saved: None,
    });

    pub fn hold() {
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        held.holders += 1;
        if held.holders > 1 {
            return;
        }
        match saved_times() {
            Ok(saved) => {
                set_defaults([NEVER; 2]);
                set_arenas(|_, _| NEVER);
                held.saved = Some(saved);
            }
            Err(e) => log::warn!("could not read jemalloc's decay times, so freed memory is purged as usual: {e}"),
        }
    }

    pub fn release() {
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        held.holders -= 1;
        if held.holders > 0 {
            return;
        }
        if let Some(saved) = held.saved.take() {
            set_defaults(saved.defaults);
            // Setting an arena's time to anything but -1 also purges what it kept.
            set_arenas(|arena, kind| {
                saved
                    .arenas
                    .iter()
                    .find(|(a, _)| *a == arena)
                    .map_or(saved.defaults[kind], |(_, times)| times[kind])
            });
        }
    }

    fn saved_times() -> tikv_jemalloc_ctl::Result<Saved> {
        let defaults = [read(&default_key(0))?, read(&default_key(1))?];
        let mut arenas = Vec::new();
        for arena in existing_arenas()? {
            arenas.push((arena, [read(&arena_key(arena, 0))?, read(&arena_key(arena, 1))?]));
        }
        Ok(Saved { defaults, arenas })
    }

    /// The times for arenas made from now on.
    fn set_defaults(times: [isize; 2]) {
        for (kind, time) in times.into_iter().enumerate() {
            if let Err(e) = write(&default_key(kind), time) {
                log::warn!("could not set jemalloc's {}: {e}", default_key(kind));
            }
        }
    }

    /// Each existing arena's times to `time(arena, kind)`.
    fn set_arenas(time: impl Fn(u32, usize) -> isize) {
        let arenas = match existing_arenas() {
            Ok(arenas) => arenas,
            Err(e) => return log::warn!("could not list jemalloc's arenas: {e}"),
        };
        for arena in arenas {
            for kind in 0..2 {
                if let Err(e) = write(&arena_key(arena, kind), time(arena, kind)) {
                    log::warn!("could not set jemalloc's {}: {e}", arena_key(arena, kind));
                }
            }
        }
    }

    /// The arenas made so far (`arenas.narenas` counts the ones not made yet too).
    fn existing_arenas() -> tikv_jemalloc_ctl::Result<Vec<u32>> {
        epoch::advance()?;
        let count = arenas::narenas::read()?;
        Ok((0..count).filter(|&a| read(&arena_key(a, 0)).is_ok()).collect())
    }

    fn default_key(kind: usize) -> String {
        format!("arenas.{}_decay_ms\0", KINDS[kind])
    }

    fn arena_key(arena: u32, kind: usize) -> String {
        format!("arena.{arena}.{}_decay_ms\0", KINDS[kind])
    }

    fn read(key: &str) -> tikv_jemalloc_ctl::Result<isize> {
        // SAFETY: every key read here names an `ssize_t` value.
        unsafe { raw::read::<isize>(key.as_bytes()) }
    }

    fn write(key: &str, value: isize) -> tikv_jemalloc_ctl::Result<()> {
        // SAFETY: every key written here names an `ssize_t` value.
        unsafe { raw::write(key.as_bytes(), value) }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::allocator::KeepFreedMemory;

        fn times() -> Vec<(u32, isize, isize)> {
            existing_arenas()
                .expect("arenas")
                .into_iter()
                .map(|a| {
                    (
                        a,
                        read(&arena_key(a, 0)).expect("dirty"),
                        read(&arena_key(a, 1)).expect("muzzy"),
                    )
                })
                .collect()
        }

        /// The process's resident bytes.
        fn resident() -> usize {
            let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
            let pages: usize = statm
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok())
                .expect("resident pages");
            pages * 4096
        }

        /// The process's resident bytes after freeing a touched 256 MiB block.
        fn resident_after_freeing_a_large_block() -> usize {
            let block = vec![1u8; 256 << 20];
            std::hint::black_box(&block);
            drop(block);
            resident()
        }

        #[test]
        fn holders_keep_freed_memory_until_the_last_one_is_dropped() {
            // The first large block makes jemalloc's arena for them, which purges at once.
            let baseline = resident_after_freeing_a_large_block();
            let before = times();
            assert!(
                before.iter().all(|&(_, d, _)| d != NEVER),
                "purging is on to begin with: {before:?}"
            );

            let first = KeepFreedMemory::hold();
            let second = KeepFreedMemory::hold();
            assert!(
                times().iter().all(|&(_, d, m)| d == NEVER && m == NEVER),
                "{:?}",
                times()
            );
            let kept = resident_after_freeing_a_large_block();
            assert!(kept >= baseline + (200 << 20), "kept {kept} bytes against {baseline}");
            drop(first);
            assert!(times().iter().all(|&(_, d, _)| d == NEVER), "one holder is left");

            drop(second);
            let restored: Vec<_> = times()
                .into_iter()
                .filter(|t| before.iter().any(|b| b.0 == t.0))
                .collect();
            assert_eq!(restored, before, "the decay times are restored");
            let after = resident();
            assert!(after + (200 << 20) <= kept, "purged: {after} bytes against {kept}");
        }
    }
}

/// Without jemalloc there is nothing to hold.
#[cfg(not(all(target_os = "linux", not(target_env = "musl"))))]
mod decay {
    pub fn hold() {}
    pub fn release() {}
}
