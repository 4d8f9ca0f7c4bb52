//! COLMAP's text model files (`cameras.txt`, `images.txt`, `points3D.txt`): the reader, with errors
//! naming the file, line and field, and the writer.

use std::collections::BTreeMap;
use std::path::Path;

use super::{camera_size, check_pose, create_dir, invalid, read_bytes, write_atomically};
use super::{CameraModel, ColmapCamera, ColmapImage, ColmapModel, DataError, Point3D};

/// The whitespace-separated fields of one text line, with errors that name the file, line and field.
struct Fields<'a> {
    path: &'a Path,
    line: usize,
    rest: &'a str,
}

impl<'a> Fields<'a> {
    fn new(path: &'a Path, line: usize, text: &'a str) -> Self {
        Self { path, line, rest: text }
    }

    fn error(&self, message: impl Into<String>) -> DataError {
        DataError::Parse {
            path: self.path.to_path_buf(),
            line: self.line,
            message: message.into(),
        }
    }

    fn token(&mut self) -> Option<&'a str> {
        let s = self.rest.trim_start();
        if s.is_empty() {
            self.rest = s;
            return None;
        }
        let end = s.find(char::is_whitespace).unwrap_or(s.len());
        self.rest = &s[end..];
        Some(&s[..end])
    }

    fn next<T: std::str::FromStr>(&mut self, what: &str) -> Result<T, DataError> {
        let token = self.token().ok_or_else(|| self.error(format!("missing {what}")))?;
        token
            .parse()
            .map_err(|_| self.error(format!("cannot read {what} from `{token}`")))
    }

    /// Everything after the fields read so far, trimmed (image names may contain spaces).
    fn remainder(&self) -> &'a str {
        self.rest.trim()
    }
}

/// The non-empty, non-comment lines of a text file, with 1-based line numbers.
fn read_text(path: &Path) -> Result<String, DataError> {
    let bytes = read_bytes(path)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        invalid(
            path,
            format!(
                "not UTF-8 text (invalid byte at {}); is it a binary file?",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    // A byte-order mark (from Windows editors) is not whitespace to `trim`.
    Ok(text.strip_prefix('\u{feff}').map(str::to_string).unwrap_or(text))
}

fn is_data(line: &str) -> bool {
    let line = line.trim();
    !line.is_empty() && !line.starts_with('#')
}

pub(super) fn read_cameras_text(path: &Path) -> Result<BTreeMap<u32, ColmapCamera>, DataError> {
    let text = read_text(path)?;
    let mut cameras = BTreeMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| is_data(l)) {
        let mut fields = Fields::new(path, i + 1, line);
        let id: u32 = fields.next("CAMERA_ID")?;
        let model_name: &str = fields.token().ok_or_else(|| fields.error("missing MODEL"))?;
        let model = CameraModel::from_name(model_name)
            .ok_or_else(|| fields.error(format!("camera model {model_name} is unknown")))?;
        let width: u64 = fields.next("WIDTH")?;
        let height: u64 = fields.next("HEIGHT")?;
        let mut params = Vec::with_capacity(model.param_count());
        while let Some(token) = fields.token() {
            let value = token
                .parse()
                .map_err(|_| fields.error(format!("cannot read a parameter from `{token}`")))?;
            params.push(value);
        }
        if params.len() != model.param_count() {
            return Err(fields.error(format!(
                "camera {id} ({model}) needs {} parameters, found {}",
                model.param_count(),
                params.len()
            )));
        }
        let (width, height) =
            camera_size(path, id, width, height).map_err(|_| fields.error(format!("invalid size {width}x{height}")))?;
        if cameras
            .insert(
                id,
                ColmapCamera {
                    id,
                    model,
                    width,
                    height,
                    params,
                },
            )
            .is_some()
        {
            return Err(fields.error(format!("camera {id} appears twice")));
        }
    }
    Ok(cameras)
}

/// `images.txt` has two lines per image: the pose line and the POINTS2D line, which may be empty. Like
/// COLMAP, the line right after a pose line is always taken as its POINTS2D line, even when empty; only
/// blank lines and comments *between* images are skipped.
pub(super) fn read_images_text(path: &Path) -> Result<Vec<ColmapImage>, DataError> {
    let text = read_text(path)?;
    let mut images = Vec::new();
    let mut ids = std::collections::HashSet::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        if !is_data(line) {
            continue;
        }
        let mut fields = Fields::new(path, i + 1, line);
        let id: u32 = fields.next("IMAGE_ID")?;
        let qvec = [
            fields.next("QW")?,
            fields.next("QX")?,
            fields.next("QY")?,
            fields.next("QZ")?,
        ];
        let tvec = [fields.next("TX")?, fields.next("TY")?, fields.next("TZ")?];
        let camera_id: u32 = fields.next("CAMERA_ID")?;
        let name = fields.remainder();
        if name.is_empty() {
            return Err(fields.error(format!("image {id} has no NAME")));
        }
        if let Some((j, points_line)) = lines.next() {
            check_points2d_line(path, j + 1, points_line, id)?;
        }
        if !ids.insert(id) {
            return Err(fields.error(format!("image {id} appears twice")));
        }
        let image = ColmapImage {
            id,
            qvec,
            tvec,
            camera_id,
            name: name.to_string(),
        };
        check_pose(path, &image)?;
        images.push(image);
    }
    Ok(images)
}

/// A POINTS2D line is `X Y POINT3D_ID` triples. Checking it catches files written with one line per image,
/// where the next image's pose line would otherwise be silently swallowed as "points".
fn check_points2d_line(path: &Path, line_no: usize, line: &str, image_id: u32) -> Result<(), DataError> {
    let mut count = 0usize;
    let mut numeric = true;
    for token in line.split_whitespace() {
        count += 1;
        numeric &= token.parse::<f64>().is_ok();
    }
    if numeric && count.is_multiple_of(3) {
        return Ok(());
    }
    let shown: String = line.trim().chars().take(60).collect();
    Err(DataError::Parse {
        path: path.to_path_buf(),
        line: line_no,
        message: format!(
            "expected the POINTS2D line of image {image_id} (X Y POINT3D_ID triples, possibly empty), found `{shown}`; \
             images.txt needs two lines per image"
        ),
    })
}

pub(super) fn read_points_text(path: &Path) -> Result<Vec<Point3D>, DataError> {
    let text = read_text(path)?;
    let mut points = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| is_data(l)) {
        let mut fields = Fields::new(path, i + 1, line);
        let _id: u64 = fields.next("POINT3D_ID")?;
        // Parsed straight to f32 (one rounding) so a text round trip of f32 positions is exact.
        let position = [fields.next("X")?, fields.next("Y")?, fields.next("Z")?];
        let color = [fields.next("R")?, fields.next("G")?, fields.next("B")?];
        // ERROR and TRACK[] are not needed.
        points.push(Point3D { position, color });
    }
    Ok(points)
}

/// Writes `model` as `cameras.txt`, `images.txt` and `points3D.txt` in `dir` (created if needed), in
/// COLMAP's text format, with empty POINTS2D lines and empty tracks. Numbers are written in Rust's
/// shortest round-trip form, so reading the files back gives the same values.
pub fn write_text(model: &ColmapModel, dir: &Path) -> Result<(), DataError> {
    use std::fmt::Write as _;

    let mut cameras = String::from("# Camera list with one line of data per camera:\n");
    cameras.push_str("#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n");
    let _ = writeln!(cameras, "# Number of cameras: {}", model.cameras.len());
    for c in model.cameras.values() {
        let _ = write!(cameras, "{} {} {} {}", c.id, c.model, c.width, c.height);
        for p in &c.params {
            let _ = write!(cameras, " {p}");
        }
        cameras.push('\n');
    }

    let mut images = String::from("# Image list with two lines of data per image:\n");
    images.push_str("#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n");
    images.push_str("#   POINTS2D[] as (X, Y, POINT3D_ID)\n");
    let _ = writeln!(images, "# Number of images: {}", model.images.len());
    for im in &model.images {
        let [qw, qx, qy, qz] = im.qvec;
        let [tx, ty, tz] = im.tvec;
        let _ = writeln!(
            images,
            "{} {qw} {qx} {qy} {qz} {tx} {ty} {tz} {} {}\n",
            im.id, im.camera_id, im.name
        );
    }

    let mut points = String::from("# 3D point list with one line of data per point:\n");
    points.push_str("#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n");
    let _ = writeln!(points, "# Number of points: {}", model.points.len());
    for (i, p) in model.points.iter().enumerate() {
        let [x, y, z] = p.position;
        let [r, g, b] = p.color;
        let _ = writeln!(points, "{} {x} {y} {z} {r} {g} {b} 0", i + 1);
    }

    create_dir(dir)?;
    write_atomically(&dir.join("cameras.txt"), cameras.as_bytes())?;
    write_atomically(&dir.join("images.txt"), images.as_bytes())?;
    write_atomically(&dir.join("points3D.txt"), points.as_bytes())
}
