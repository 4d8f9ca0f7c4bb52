//! Writing images without ever leaving a half-written file behind.

use std::path::{Path, PathBuf};

/// A rendered frame copied to the CPU: linear RGB + alpha (`render::Rasterizer` makes them; it lives
/// here, beside [`to_rgb8`], so image I/O needs no renderer).
#[derive(Clone, Debug)]
pub struct RenderedImage {
    pub width: u32,
    pub height: u32,
    pub rgba: Vec<[f32; 4]>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {message}")]
    Write { path: PathBuf, message: String },
}

/// Reads and decodes an image file, refusing files that are cut off or corrupt.
///
/// The JPEG decoder fills a truncated file's missing rows with grey and reports success, so a photo
/// copied half-way would silently train or fix as if whole. A JPEG must therefore end with its
/// end-of-image marker (0xFFD9; trailing zero padding is allowed) and a PNG with its IEND chunk,
/// and any decoder error (a PNG CRC mismatch among them) is an error. The message does not repeat
/// the path; callers name the file.
pub fn open(path: &Path) -> Result<image::DynamicImage, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read the image: {e}"))?;
    check_complete(&bytes)?;
    image::load_from_memory(&bytes).map_err(|e| format!("cannot decode the image: {e}"))
}

/// [`open`] as 8-bit RGB.
pub fn open_rgb(path: &Path) -> Result<image::RgbImage, String> {
    open(path).map(|image| image.to_rgb8())
}

const JPEG_START: [u8; 2] = [0xFF, 0xD8];
const JPEG_END: [u8; 2] = [0xFF, 0xD9];
const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1A, b'\n'];
/// An IEND chunk: zero length, the type, and its CRC.
const PNG_END: [u8; 12] = [0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82];

/// Checks that a JPEG or PNG file is whole (other formats are left to their decoders).
fn check_complete(bytes: &[u8]) -> Result<(), String> {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let body = &bytes[..end];
    if bytes.starts_with(&JPEG_START) && !body.ends_with(&JPEG_END) {
        return Err(format!(
            "the JPEG is truncated or corrupt: it does not end with the end-of-image marker FFD9 ({} bytes)",
            bytes.len()
        ));
    }
    if bytes.starts_with(&PNG_SIGNATURE) && !body.ends_with(&PNG_END) {
        return Err(format!(
            "the PNG is truncated or corrupt: it does not end with an IEND chunk ({} bytes)",
            bytes.len()
        ));
    }
    Ok(())
}

/// [`crate::disk::write_atomic`] with the writer's errors as messages and the result as an
/// [`ImageError`] naming `path`.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<(), String>) -> Result<(), ImageError> {
    crate::disk::write_atomic(path, |tmp| write(tmp).map_err(std::io::Error::other)).map_err(|e| ImageError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(format: image::ImageFormat) -> Vec<u8> {
        let image = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 4, y as u8 * 5, 7]));
        let mut bytes = std::io::Cursor::new(Vec::new());
        image.write_to(&mut bytes, format).unwrap();
        bytes.into_inner()
    }

    fn open_bytes(name: &str, bytes: &[u8]) -> Result<image::DynamicImage, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        open(&path)
    }

    #[test]
    fn whole_images_open() {
        for (name, format) in [("a.jpg", image::ImageFormat::Jpeg), ("a.png", image::ImageFormat::Png)] {
            let image = open_bytes(name, &encoded(format)).unwrap();
            assert_eq!((image.width(), image.height()), (64, 48));
        }
        // Zero padding after the end marker is harmless.
        let mut padded = encoded(image::ImageFormat::Jpeg);
        padded.extend([0u8; 16]);
        assert!(open_bytes("padded.jpg", &padded).is_ok());
    }

    #[test]
    fn cut_off_images_are_errors() {
        let jpeg = encoded(image::ImageFormat::Jpeg);
        let error = open_bytes("cut.jpg", &jpeg[..jpeg.len() / 2]).unwrap_err();
        assert!(error.contains("truncated"), "{error}");
        let png = encoded(image::ImageFormat::Png);
        let error = open_bytes("cut.png", &png[..png.len() / 2]).unwrap_err();
        assert!(error.contains("truncated"), "{error}");
    }

    #[test]
    fn a_png_with_a_bad_checksum_is_an_error() {
        let mut png = encoded(image::ImageFormat::Png);
        // The IHDR chunk's CRC (after the signature, length, type and 13 data bytes).
        png[8 + 8 + 13] ^= 0xFF;
        assert!(open_bytes("crc.png", &png).is_err());
    }
}
