//! Loading a scene file or a dataset folder off the UI thread.

use std::path::{Path, PathBuf};

use crossbeam_channel::Receiver;

use super::nerf_view::{self, NerfScene, NerfViewError};
use crate::data::{self, Dataset};
use crate::scene::{self, Splats};

/// What a load produced: a scene to draw and, for dataset folders, the cameras to snap to.
pub struct Loaded {
    pub path: PathBuf,
    pub scene: LoadedScene,
    pub dataset: Option<Dataset>,
    /// What loading had to change (broken values clamped or splats dropped), to show the user once.
    pub notice: Option<String>,
}

/// The two kinds of scene the viewer draws.
pub enum LoadedScene {
    Splats(Splats),
    /// A nerfacto field (a nerfstudio checkpoint or a `difix3d train --method nerfacto` run), boxed:
    /// it is far larger than the splats' handle.
    Nerf(Box<NerfScene>),
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Nerf(#[from] NerfViewError),
    #[error(transparent)]
    Scene(#[from] scene::SceneError),
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error("{0}: no such file or folder")]
    Missing(PathBuf),
}

/// Starts loading `path` (and the dataset folder `data`, when given, for a scene file) on a new
/// thread; the receiver yields exactly one result.
pub fn spawn(path: PathBuf, data: Option<PathBuf>) -> Receiver<Result<Loaded, LoadError>> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("load".into())
        .spawn(move || {
            let result = load(&path).and_then(|mut loaded| {
                if let Some(dir) = data {
                    if !dir.exists() {
                        return Err(LoadError::Missing(dir));
                    }
                    loaded.dataset = Some(data::open_dataset(&dir, 1)?);
                }
                Ok(loaded)
            });
            let _ = tx.send(result);
        })
        .map_err(|e| log::error!("cannot start the loader thread: {e}"))
        .ok();
    rx
}

/// Loads a scene file, or a dataset (a folder, or a nerfstudio transforms.json) whose sparse points become
/// the splats shown.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    if !path.exists() {
        return Err(LoadError::Missing(path.to_path_buf()));
    }
    // A folder is a dataset (COLMAP or nerfstudio); so is a nerfstudio transforms.json.
    // (A SOG meta.json is a scene.)
    let nerfstudio_file = path.is_file()
        && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"))
        && scene::SceneFormat::of(path) != Some(scene::SceneFormat::Sog);
    if path.is_dir() || nerfstudio_file {
        let dataset = data::open_dataset(path, 1)?;
        let points: Vec<([f32; 3], [u8; 3])> = dataset.points.iter().map(|p| (p.position, p.color)).collect();
        let splats = scene::init::from_points(&points)
            .ok_or_else(|| scene::SceneError::format(path, "the dataset's sparse model has no 3D points to show"))?;
        Ok(Loaded {
            path: path.to_path_buf(),
            scene: LoadedScene::Splats(splats),
            dataset: Some(dataset),
            notice: None,
        })
    } else if nerf_view::is_nerf_checkpoint(path) {
        Ok(Loaded {
            path: path.to_path_buf(),
            scene: LoadedScene::Nerf(Box::new(NerfScene::open(path)?)),
            dataset: None,
            notice: None,
        })
    } else {
        let (splats, repairs) = scene::load_reporting(path)?;
        let notice = (!repairs.is_empty()).then(|| format!("{}: {repairs}", path.display()));
        if let Some(notice) = &notice {
            log::warn!("{notice}");
        }
        Ok(Loaded {
            path: path.to_path_buf(),
            scene: LoadedScene::Splats(splats),
            dataset: None,
            notice,
        })
    }
}
