//! Writing the scene on screen to a file off the UI thread (the Scene panel's "Save as…").

use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::Receiver;

use crate::scene::{self, SceneError, Splats};

/// Starts writing `splats` to `path` in the format its extension names ([`scene::SceneFormat::WRITABLE`])
/// on a new thread; the receiver yields exactly one result: the path written, or why not (an
/// extension that is not writable is [`scene::save`]'s error).
pub fn spawn(splats: Arc<Splats>, path: PathBuf) -> Receiver<Result<PathBuf, SceneError>> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let failed = tx.clone();
    let target = path.clone();
    let started = std::thread::Builder::new().name("save".into()).spawn(move || {
        let _ = tx.send(scene::save(&splats, &path).map(|()| path));
    });
    if let Err(e) = started {
        let _ = failed.send(Err(SceneError::io(&target, e)));
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_in_the_background_and_refuses_unwritable_names() {
        let dir = tempfile::tempdir().unwrap();
        let splats = Arc::new(Splats {
            means: vec![[0.0, 0.0, 1.0], [0.5, 0.1, 2.0]],
            log_scales: vec![[-2.0; 3], [-1.0; 3]],
            rotations: vec![[1.0, 0.0, 0.0, 0.0]; 2],
            opacity_logits: vec![0.5, -0.5],
            sh_degree: 0,
            sh: vec![[0.1, 0.2, 0.3], [-0.1, 0.0, 0.4]],
        });
        for name in ["a.ply", "a.compressed.ply", "a.spz", "a.sog", "a.splat", "a.pt"] {
            let path = dir.path().join(name);
            let written = spawn(splats.clone(), path.clone()).recv().unwrap().unwrap();
            assert_eq!(written, path);
            assert_eq!(scene::load(&path).unwrap().len(), 2, "{name}");
        }
        for name in ["a.obj", "checkpoint.safetensors"] {
            let message = spawn(splats.clone(), dir.path().join(name))
                .recv()
                .unwrap()
                .unwrap_err()
                .to_string();
            assert!(message.contains(name) && message.contains("cannot write"), "{message}");
            assert!(!dir.path().join(name).exists());
        }
    }
}
