//! Reading the splats of a `difix3d train` / `difix3d refine` checkpoint (`.safetensors`), so the
//! viewer, `render`, `record`, `eval` and `refine` open a run's checkpoint like any scene file. The
//! optimiser state in the same file is ignored here (the trainer reads it in `train::checkpoint`).

use std::path::Path;

use super::{sh_coeffs, SceneError, Splats};

/// The splats stored in checkpoint `path`.
pub fn read_checkpoint(path: &Path) -> Result<Splats, SceneError> {
    let bytes = std::fs::read(path).map_err(|e| SceneError::io(path, e))?;
    let bad = |message: String| SceneError::format(path, message);
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("not a checkpoint: {e}")))?;
    let tensors = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("not a checkpoint: {e}")))?;
    let sh_degree: u32 = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("sh_degree"))
        .and_then(|v| v.parse().ok())
        .filter(|d| *d <= 3)
        .ok_or_else(|| bad("no valid `sh_degree` in the checkpoint's metadata".into()))?;
    // Each parameter group as rows of `cols` values.
    let group = |name: &str, cols: usize| -> Result<Vec<f32>, SceneError> {
        let view = tensors
            .tensor(name)
            .map_err(|e| bad(format!("no `{name}` tensor ({e}); is this a difix3d checkpoint?")))?;
        let shape = view.shape();
        if view.dtype() != safetensors::Dtype::F32 || shape.len() != 2 || shape[1] != cols {
            return Err(bad(format!(
                "`{name}` is {:?} {shape:?}, expected F32 [N, {cols}]",
                view.dtype()
            )));
        }
        Ok(bytemuck::pod_collect_to_vec(view.data()))
    };
    let rows = |v: Vec<f32>, n: usize| -> Vec<[f32; 3]> { v.chunks_exact(n).map(|c| [c[0], c[1], c[2]]).collect() };
    let means = rows(group("means", 3)?, 3);
    let splats = Splats {
        log_scales: rows(group("log_scales", 3)?, 3),
        rotations: group("rotations", 4)?
            .chunks_exact(4)
            .map(|c| [c[0], c[1], c[2], c[3]])
            .collect(),
        opacity_logits: group("opacity_logits", 1)?,
        sh: rows(group("sh", sh_coeffs(sh_degree) * 3)?, 3),
        sh_degree,
        means,
    };
    let n = splats.means.len();
    if [
        splats.log_scales.len(),
        splats.rotations.len(),
        splats.opacity_logits.len(),
    ] != [n; 3]
        || splats.sh.len() != n * sh_coeffs(sh_degree)
    {
        return Err(bad("the parameter groups disagree on the number of splats".into()));
    }
    Ok(splats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_files_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weights.safetensors");
        std::fs::write(&path, b"not safetensors").unwrap();
        let message = read_checkpoint(&path).unwrap_err().to_string();
        assert!(
            message.contains("weights.safetensors") && message.contains("not a checkpoint"),
            "{message}"
        );

        // A valid safetensors file without the splat groups (e.g. model weights).
        let values = [0f32; 4];
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 2], bytemuck::cast_slice(&values))
                .unwrap();
        let meta = std::collections::HashMap::from([("sh_degree".to_string(), "0".to_string())]);
        safetensors::serialize_to_file([("conv.weight", view)], Some(meta), &path).unwrap();
        let message = read_checkpoint(&path).unwrap_err().to_string();
        assert!(message.contains("no `means` tensor"), "{message}");
    }
}
