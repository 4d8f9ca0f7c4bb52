//! Writing images without ever leaving a half-written file behind.

use std::path::{Path, PathBuf};

use crate::render::RenderedImage;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {message}")]
    Write { path: PathBuf, message: String },
}

/// Writes `path` by writing a temporary sibling first and renaming it over the target.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<(), String>) -> Result<(), ImageError> {
    let err = |message: String| ImageError::Write {
        path: path.to_path_buf(),
        message,
    };
    let file_name = path.file_name().ok_or_else(|| err("not a file path".into()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e.to_string())
    })
}

/// 8-bit sRGB-coded RGB of a render (values are clamped to [0, 1] and rounded).
pub fn to_rgb8(image: &RenderedImage) -> image::RgbImage {
    let mut out = image::RgbImage::new(image.width, image.height);
    for (dst, src) in out.pixels_mut().zip(&image.rgba) {
        *dst = image::Rgb([quantize(src[0]), quantize(src[1]), quantize(src[2])]);
    }
    out
}

pub fn quantize(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Saves an image as PNG atomically (the format is PNG whatever the extension of the temporary file).
pub fn save_png(image: &image::RgbImage, path: &Path) -> Result<(), ImageError> {
    write_atomic(path, |tmp| {
        image
            .save_with_format(tmp, image::ImageFormat::Png)
            .map_err(|e| e.to_string())
    })
}
