//! COLMAP's binary model files (`cameras.bin`, `images.bin`, `points3D.bin`): the reader, which
//! checks every count against the bytes left, and the writer.

use std::collections::BTreeMap;
use std::path::Path;

use super::{camera_size, check_pose, create_dir, invalid, read_bytes, write_atomically};
use super::{CameraModel, ColmapCamera, ColmapImage, ColmapModel, DataError, Point3D};

/// A little-endian cursor over a whole file. `None` means the file ended; the caller adds the context.
struct ByteReader<'a> {
    data: &'a [u8],
    pos: usize,
}

/// The file ended at `at` while `needed` more bytes were wanted.
struct Short {
    at: usize,
    needed: usize,
}

impl<'a> ByteReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.data.len());
        match end {
            Some(end) => {
                let bytes = &self.data[self.pos..end];
                self.pos = end;
                Ok(bytes)
            }
            None => Err(Short {
                at: self.pos,
                needed: n,
            }),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Short> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, Short> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, Short> {
        self.array().map(u32::from_le_bytes)
    }

    fn i32(&mut self) -> Result<i32, Short> {
        self.array().map(i32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, Short> {
        self.array().map(u64::from_le_bytes)
    }

    fn f64(&mut self) -> Result<f64, Short> {
        self.array().map(f64::from_le_bytes)
    }

    fn f64s<const N: usize>(&mut self) -> Result<[f64; N], Short> {
        let mut out = [0.0; N];
        for x in &mut out {
            *x = self.f64()?;
        }
        Ok(out)
    }

    /// A NUL-terminated string (the terminator is consumed, not returned).
    fn c_string(&mut self) -> Result<&'a [u8], Short> {
        let rest = &self.data[self.pos..];
        match rest.iter().position(|&b| b == 0) {
            Some(len) => {
                let bytes = &rest[..len];
                self.pos += len + 1;
                Ok(bytes)
            }
            // One more byte (the terminator) than the file holds.
            None => Err(Short {
                at: self.data.len(),
                needed: 1,
            }),
        }
    }

    /// Skips `count` records of `size` bytes each.
    fn skip(&mut self, count: u64, size: usize) -> Result<(), Short> {
        let total = usize::try_from(count).ok().and_then(|c| c.checked_mul(size));
        match total {
            Some(total) => self.take(total).map(|_| ()),
            None => Err(Short {
                at: self.pos,
                needed: usize::MAX,
            }),
        }
    }
}

fn truncated<'a>(path: &'a Path, what: impl FnOnce() -> String + 'a) -> impl FnOnce(Short) -> DataError + 'a {
    move |short| DataError::Truncated {
        path: path.to_path_buf(),
        at: short.at,
        needed: short.needed,
        what: what(),
    }
}

/// Reads the leading record count and checks that the file can hold that many records of at least
/// `min_size` bytes, so the count can be trusted for an allocation.
fn read_count(path: &Path, reader: &mut ByteReader, min_size: usize, what: &str) -> Result<usize, DataError> {
    let count = reader
        .u64()
        .map_err(truncated(path, || format!("the number of {what}")))?;
    let fits = usize::try_from(count)
        .ok()
        .filter(|&c| c.checked_mul(min_size).is_some_and(|b| b <= reader.remaining()));
    fits.ok_or_else(|| {
        invalid(
            path,
            format!(
                "claims {count} {what} but only {} bytes follow (at least {min_size} per record); \
                 the file is truncated or not a COLMAP model",
                reader.remaining()
            ),
        )
    })
}

/// camera_id u32, model_id i32, width u64, height u64, then the model's f64 parameters.
const CAMERA_MIN_BYTES: usize = 4 + 4 + 8 + 8;
/// image_id u32, qvec 4 f64, tvec 3 f64, camera_id u32, name (at least its NUL), num_points2D u64.
const IMAGE_MIN_BYTES: usize = 4 + 32 + 24 + 4 + 1 + 8;
/// x f64, y f64, point3D_id i64.
const POINT2D_BYTES: usize = 8 + 8 + 8;
/// point3D_id u64, xyz 3 f64, rgb 3 u8, error f64, track_length u64.
const POINT3D_MIN_BYTES: usize = 8 + 24 + 3 + 8 + 8;
/// image_id u32, point2D_idx u32.
const TRACK_ELEMENT_BYTES: usize = 4 + 4;

pub(super) fn read_cameras_binary(path: &Path) -> Result<BTreeMap<u32, ColmapCamera>, DataError> {
    let data = read_bytes(path)?;
    let mut reader = ByteReader::new(&data);
    let count = read_count(path, &mut reader, CAMERA_MIN_BYTES, "cameras")?;
    let mut cameras = BTreeMap::new();
    for i in 0..count {
        let record = || format!("camera record {} of {count}", i + 1);
        let start = reader.pos;
        let mut header = || -> Result<_, Short> { Ok((reader.u32()?, reader.i32()?, reader.u64()?, reader.u64()?)) };
        let (id, model_id, width, height) = header().map_err(truncated(path, record))?;
        let model = CameraModel::from_id(model_id).ok_or_else(|| {
            invalid(
                path,
                format!("camera {id} (at byte {start}) has unknown camera model id {model_id}"),
            )
        })?;
        let mut params = Vec::with_capacity(model.param_count());
        for _ in 0..model.param_count() {
            params.push(
                reader
                    .f64()
                    .map_err(truncated(path, || format!("the parameters of camera {id}")))?,
            );
        }
        let (width, height) = camera_size(path, id, width, height)?;
        let camera = ColmapCamera {
            id,
            model,
            width,
            height,
            params,
        };
        if cameras.insert(id, camera).is_some() {
            return Err(invalid(path, format!("camera {id} appears twice")));
        }
    }
    Ok(cameras)
}

pub(super) fn read_images_binary(path: &Path) -> Result<Vec<ColmapImage>, DataError> {
    let data = read_bytes(path)?;
    let mut reader = ByteReader::new(&data);
    let count = read_count(path, &mut reader, IMAGE_MIN_BYTES, "images")?;
    let mut images = Vec::with_capacity(count);
    let mut ids = std::collections::HashSet::with_capacity(count);
    for i in 0..count {
        let record = || format!("image record {} of {count}", i + 1);
        let id = reader.u32().map_err(truncated(path, record))?;
        let mut pose = || -> Result<_, Short> { Ok((reader.f64s::<4>()?, reader.f64s::<3>()?, reader.u32()?)) };
        let (qvec, tvec, camera_id) = pose().map_err(truncated(path, || format!("image {id}")))?;
        let name = reader
            .c_string()
            .map_err(truncated(path, || format!("the name of image {id}")))?;
        let name = String::from_utf8(name.to_vec())
            .map_err(|_| invalid(path, format!("the name of image {id} is not valid UTF-8")))?;
        let points2d = reader
            .u64()
            .map_err(truncated(path, || format!("image {id} ({name})")))?;
        reader.skip(points2d, POINT2D_BYTES).map_err(truncated(path, || {
            format!("the {points2d} 2D points of image {id} ({name})")
        }))?;
        if !ids.insert(id) {
            return Err(invalid(path, format!("image {id} appears twice")));
        }
        let image = ColmapImage {
            id,
            qvec,
            tvec,
            camera_id,
            name,
        };
        check_pose(path, &image)?;
        images.push(image);
    }
    Ok(images)
}

pub(super) fn read_points_binary(path: &Path) -> Result<Vec<Point3D>, DataError> {
    let data = read_bytes(path)?;
    let mut reader = ByteReader::new(&data);
    let count = read_count(path, &mut reader, POINT3D_MIN_BYTES, "points")?;
    let mut points = Vec::with_capacity(count);
    for i in 0..count {
        let mut record = || -> Result<_, Short> {
            let _id = reader.u64()?;
            let xyz = reader.f64s::<3>()?;
            let color = [reader.u8()?, reader.u8()?, reader.u8()?];
            let _error = reader.f64()?;
            let track_length = reader.u64()?;
            reader.skip(track_length, TRACK_ELEMENT_BYTES)?;
            Ok(Point3D {
                position: xyz.map(|x| x as f32),
                color,
            })
        };
        points.push(record().map_err(truncated(path, || format!("point record {} of {count}", i + 1)))?);
    }
    Ok(points)
}

/// Writes `model` as `cameras.bin`, `images.bin` and `points3D.bin` in `dir` (created if needed).
///
/// Images get no 2D points and points get no tracks, since the model does not keep them; points are
/// numbered from 1 in order. Each file is written to a temporary name and renamed, so a crash never
/// leaves a half-written model that a later read would reject.
pub fn write_binary(model: &ColmapModel, dir: &Path) -> Result<(), DataError> {
    let mut cameras = Vec::new();
    cameras.extend_from_slice(&(model.cameras.len() as u64).to_le_bytes());
    for camera in model.cameras.values() {
        cameras.extend_from_slice(&camera.id.to_le_bytes());
        cameras.extend_from_slice(&camera.model.id().to_le_bytes());
        cameras.extend_from_slice(&u64::from(camera.width).to_le_bytes());
        cameras.extend_from_slice(&u64::from(camera.height).to_le_bytes());
        for p in &camera.params {
            cameras.extend_from_slice(&p.to_le_bytes());
        }
    }

    let mut images = Vec::new();
    images.extend_from_slice(&(model.images.len() as u64).to_le_bytes());
    for image in &model.images {
        images.extend_from_slice(&image.id.to_le_bytes());
        for x in image.qvec.iter().chain(&image.tvec) {
            images.extend_from_slice(&x.to_le_bytes());
        }
        images.extend_from_slice(&image.camera_id.to_le_bytes());
        images.extend_from_slice(image.name.as_bytes());
        images.push(0);
        images.extend_from_slice(&0u64.to_le_bytes());
    }

    let mut points = Vec::new();
    points.extend_from_slice(&(model.points.len() as u64).to_le_bytes());
    for (i, point) in model.points.iter().enumerate() {
        points.extend_from_slice(&(i as u64 + 1).to_le_bytes());
        for x in point.position {
            points.extend_from_slice(&f64::from(x).to_le_bytes());
        }
        points.extend_from_slice(&point.color);
        points.extend_from_slice(&0f64.to_le_bytes());
        points.extend_from_slice(&0u64.to_le_bytes());
    }

    create_dir(dir)?;
    write_atomically(&dir.join("cameras.bin"), &cameras)?;
    write_atomically(&dir.join("images.bin"), &images)?;
    write_atomically(&dir.join("points3D.bin"), &points)
}
