//! Long jobs and the disk. They size themselves first: a recording, a training run or a
//! refinement estimates a lower bound of what it will write and refuses to start when the free
//! space where it writes is smaller, with the numbers, instead of failing hours later on a full
//! disk. And their run folder ([`RunDir`]) is put back as it was when a run fails before it has
//! written anything worth keeping.
//!
//! Every file the program writes goes through [`write_atomic`]: a temporary file beside it, flushed
//! to disk, then renamed over it, so a failed or interrupted write never leaves a half-written file.
//!
//! The free space comes from `statvfs` (what an unprivileged user may still write). The
//! environment variable `DIFIX3D_FREE_BYTES` overrides that figure, so the refusal can be tested
//! without filling a disk.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::{fs, io};

/// Writes `path` atomically: `write` fills a uniquely named temporary file in the same directory
/// (by its path, so any writer works), which is flushed to disk and renamed over `path`. On any
/// failure the temporary file is removed and `path` is as it was.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the output path does not name a file"))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    // Deleted when dropped, so every early return below cleans up.
    let tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .tempfile_in(dir)?;
    write(tmp.path())?;
    // The writer may have replaced the file rather than written into it: sync what is there now.
    fs::File::open(tmp.path())?.sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// [`write_atomic`] of a byte buffer.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic(path, |tmp| fs::write(tmp, bytes))
}

/// Raw RGB bytes are divided by this for the least a PNG frame takes: rendered scenes compress
/// 2–4x, so 1/16 is a bound no real frame gets below.
pub const PNG_BOUND_DIVISOR: u64 = 16;

/// The least bytes a PNG of `width` x `height` RGB pixels of a rendered scene takes.
pub fn png_lower_bound(width: u32, height: u32) -> u64 {
    u64::from(width) * u64::from(height) * 3 / PNG_BOUND_DIVISOR
}

/// Bytes a checkpoint (parameters and both Adam moments) and a `.ply` of `splats` splats of SH
/// degree `sh_degree` take at least.
pub fn run_files_lower_bound(splats: usize, sh_degree: u32) -> u64 {
    // (degree + 1)² SH coefficients per channel (`scene::sh_coeffs`; the scene writers use this
    // module, so it does not use theirs).
    let sh_coeffs = u64::from((sh_degree + 1) * (sh_degree + 1));
    let floats = 3 + 3 + 4 + 1 + 3 * sh_coeffs;
    // The checkpoint holds each value three times; the PLY once more, plus three normals.
    (splats as u64).saturating_mul((floats * 3 + floats + 3) * 4)
}

/// Free bytes on the file system of `path` (or of its nearest existing ancestor, for an output
/// folder not created yet); `None` when it cannot be told.
pub fn free_bytes(path: &Path) -> Option<u64> {
    if let Some(value) = std::env::var_os("DIFIX3D_FREE_BYTES") {
        return value.to_str().and_then(|v| v.trim().parse().ok());
    }
    let absolute = std::path::absolute(path).ok()?;
    let existing = absolute.ancestors().find(|p| p.exists())?;
    statvfs_free(existing)
}

#[cfg(unix)]
fn statvfs_free(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated string and `stats` a buffer of the right type; statvfs
    // fills it completely when it returns 0, and only then is it read.
    let stats = unsafe {
        if libc::statvfs(c_path.as_ptr(), stats.as_mut_ptr()) != 0 {
            return None;
        }
        stats.assume_init()
    };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Some((stats.f_bavail as u64).saturating_mul(stats.f_frsize as u64))
}

#[cfg(not(unix))]
fn statvfs_free(_path: &Path) -> Option<u64> {
    None
}

/// Refuses a job that needs at least `needed` bytes at `out` when less is free there; `what`
/// says how the figure was reached ("180 frames of 1280x720"). Unknown free space lets it run.
pub fn check_fits(out: &Path, needed: u64, what: &str) -> Result<(), String> {
    match free_bytes(out) {
        Some(free) if free < needed => Err(format!(
            "{}: not enough free disk space: {what} need at least {} but only {} is free",
            out.display(),
            human(needed),
            human(free)
        )),
        _ => Ok(()),
    }
}

/// A run's output folder. Created when the run starts writing; until [`RunDir::keep`] (after the
/// first checkpoint, or at the end), dropping it removes what the run added: the whole folder if it
/// did not exist before, else only the entries that were not there. So a run that fails early
/// leaves `--out` as it was.
pub struct RunDir {
    path: PathBuf,
    existed: bool,
    before: BTreeSet<OsString>,
    keep: bool,
}

impl RunDir {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let existed = path.is_dir();
        let before = if existed {
            std::fs::read_dir(path)?
                .map(|entry| entry.map(|e| e.file_name()))
                .collect::<std::io::Result<_>>()?
        } else {
            BTreeSet::new()
        };
        std::fs::create_dir_all(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            existed,
            before,
            keep: false,
        })
    }

    /// The run has written something worth keeping: leave the folder alone from now on.
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        // Best effort: the run has already failed, and its error is what the user needs to see.
        if !self.existed {
            let _ = std::fs::remove_dir_all(&self.path);
            return;
        }
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return;
        };
        for entry in entries.flatten() {
            if self.before.contains(&entry.file_name()) {
                continue;
            }
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
}

/// Bytes for people: `1.5 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write that fails leaves the old file and no temporary; one that succeeds replaces it.
    #[test]
    fn write_atomic_replaces_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        fs::write(&path, "old").unwrap();
        let err = write_atomic(&path, |tmp| {
            fs::write(tmp, "half")?;
            Err(io::Error::other("the writer failed"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "the writer failed");
        assert_eq!(fs::read_to_string(&path).unwrap(), "old");
        let names = || -> Vec<_> {
            fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect()
        };
        assert_eq!(names(), ["out.txt"], "the temporary file was removed");

        write_bytes_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(names(), ["out.txt"]);
        assert!(write_bytes_atomic(dir.path().join("missing/x.txt").as_path(), b"x").is_err());
    }

    #[test]
    fn the_free_space_of_a_folder_not_created_yet_is_its_parents() {
        let dir = tempfile::tempdir().unwrap();
        if std::env::var_os("DIFIX3D_FREE_BYTES").is_some() {
            return;
        }
        let here = free_bytes(dir.path());
        assert!(here.is_some_and(|b| b > 0), "a temporary folder has free space");
        assert!(free_bytes(&dir.path().join("run/deeper")).is_some());
    }

    #[test]
    fn a_run_dir_dropped_before_keep_is_put_back_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh");
        {
            let _run = RunDir::create(&fresh).unwrap();
            std::fs::write(fresh.join("eval.png"), b"x").unwrap();
        }
        assert!(!fresh.exists(), "a folder the run created goes again");

        let existing = dir.path().join("existing");
        std::fs::create_dir(&existing).unwrap();
        std::fs::write(existing.join("notes.txt"), b"mine").unwrap();
        {
            let _run = RunDir::create(&existing).unwrap();
            std::fs::create_dir(existing.join("eval")).unwrap();
            std::fs::write(existing.join("eval/0.png"), b"x").unwrap();
        }
        let left: Vec<_> = std::fs::read_dir(&existing)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["notes.txt"], "only what was there before stays");

        {
            let mut run = RunDir::create(&fresh).unwrap();
            std::fs::write(fresh.join("checkpoint.safetensors"), b"x").unwrap();
            run.keep();
        }
        assert!(fresh.join("checkpoint.safetensors").exists(), "a kept run stays");
    }

    #[test]
    fn bounds_and_messages_give_the_numbers() {
        assert_eq!(png_lower_bound(1280, 720), 1280 * 720 * 3 / 16);
        // 3 splats of SH degree 0: 14 floats, four copies, three normals.
        assert_eq!(run_files_lower_bound(3, 0), 3 * (14 * 4 + 3) * 4);
        assert_eq!(run_files_lower_bound(usize::MAX, 3), u64::MAX);
        assert_eq!(human(512), "512 bytes");
        assert_eq!(human(3 * 1024 * 1024 / 2), "1.5 MiB");
    }
}
