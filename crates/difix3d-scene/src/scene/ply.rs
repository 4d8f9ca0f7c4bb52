//! Reading and writing 3D Gaussian Splatting `.ply` files.
//!
//! The layout is the one the INRIA reference code introduced and gsplat, Brush and SuperSplat share: one
//! `vertex` element with float properties `x y z`, optional `nx ny nz`, `f_dc_0..2`, `f_rest_*`, `opacity`
//! (a logit), `scale_0..2` (natural logs) and `rot_0..3` (a quaternion w, x, y, z). These are exactly the
//! activation-free values [`Splats`] keeps, so a file that is read and written back is unchanged.
//!
//! The reader is hand-written instead of built on a generic PLY crate (`ply-rs` and its forks): those
//! decode every vertex into a map of dynamically typed values, which is far slower on million-splat files
//! and gives no control over the error messages. Here the header is parsed once into byte offsets, the
//! data size is checked against the header before anything is allocated, and every vertex is copied
//! straight into the arrays.

use std::fs;
use std::path::Path;

use super::{sh_coeffs, SceneError, Splats};

/// Reads a Gaussian-splat `.ply` (ascii, binary little- or big-endian).
///
/// Unknown properties (normals, colours, per-splat metadata …) and elements other than `vertex` are
/// skipped. Quaternions are normalised; a zero quaternion is an error because no rotation can be
/// recovered from it. The values are not validated here: [`super::load`] runs [`Splats::validate`].
pub fn read_ply(path: &Path) -> Result<Splats, SceneError> {
    let bytes = fs::read(path).map_err(|e| SceneError::io(path, e))?;
    parse_ply(&bytes).map_err(|message| SceneError::format(path, message))
}

/// Writes `splats` as a binary little-endian `.ply` in the INRIA layout, which every 3DGS tool reads.
///
/// The file is written next to `path` under a temporary name and renamed into place, so a crash or a
/// full disk never leaves a half-written scene behind (nor destroys the file being replaced).
pub fn write_ply(splats: &Splats, path: &Path) -> Result<(), SceneError> {
    let bytes = encode_ply(splats).map_err(|message| SceneError::format(path, message))?;
    write_atomic(path, &bytes)
}

/// [`crate::disk::write_bytes_atomic`] with errors as [`SceneError`]s naming `path`. Shared with the
/// other scene writers.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SceneError> {
    crate::disk::write_bytes_atomic(path, bytes).map_err(|e| SceneError::io(path, e))
}

/// Checks that the arrays of `splats` agree with each other so writers can index them without
/// panicking, and returns the number of SH coefficients per channel. Values are not checked: a writer
/// should be able to dump whatever a trainer produced, NaNs included, for inspection.
pub(super) fn check_layout(splats: &Splats) -> Result<usize, String> {
    if splats.sh_degree > 3 {
        return Err(format!("SH degree {} is not supported (0..=3)", splats.sh_degree));
    }
    let n = splats.len();
    let k = sh_coeffs(splats.sh_degree);
    if splats.log_scales.len() != n
        || splats.rotations.len() != n
        || splats.opacity_logits.len() != n
        || splats.sh.len() != n * k
    {
        return Err("inconsistent attribute counts".into());
    }
    Ok(k)
}

// ---------------------------------------------------------------------------------------------------
// Header
// ---------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Format {
    Ascii,
    BinaryLittleEndian,
    BinaryBigEndian,
}

/// The scalar types of the PLY specification, under either their classic or their sized names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scalar {
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    F32,
    F64,
}

impl Scalar {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "char" | "int8" => Self::I8,
            "uchar" | "uint8" => Self::U8,
            "short" | "int16" => Self::I16,
            "ushort" | "uint16" => Self::U16,
            "int" | "int32" => Self::I32,
            "uint" | "uint32" => Self::U32,
            "float" | "float32" => Self::F32,
            "double" | "float64" => Self::F64,
            _ => return None,
        })
    }

    pub(super) fn size(self) -> usize {
        match self {
            Self::I8 | Self::U8 => 1,
            Self::I16 | Self::U16 => 2,
            Self::I32 | Self::U32 | Self::F32 => 4,
            Self::F64 => 8,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) enum PropType {
    Scalar(Scalar),
    List { count: Scalar, item: Scalar },
}

#[derive(Debug)]
pub(super) struct Property {
    pub(super) name: String,
    pub(super) ty: PropType,
    /// The type as the file spells it, for error messages ("uchar", "list uchar int").
    type_name: String,
}

impl Property {
    /// Bytes this property occupies if it has a fixed size (every scalar; no list).
    fn fixed_size(&self) -> Option<usize> {
        match self.ty {
            PropType::Scalar(s) => Some(s.size()),
            PropType::List { .. } => None,
        }
    }

    /// Bytes this property occupies in binary data starting at `pos`, or `None` if it runs past the end
    /// of `data` (or has a negative or absurd list length).
    fn binary_len(&self, data: &[u8], pos: usize, big: bool) -> Option<usize> {
        let len = match self.ty {
            PropType::Scalar(s) => s.size(),
            PropType::List { count, item } => {
                let n = read_count(data.get(pos..)?, count, big)?;
                n.checked_mul(item.size())?.checked_add(count.size())?
            }
        };
        (pos.checked_add(len)? <= data.len()).then_some(len)
    }
}

#[derive(Debug)]
pub(super) struct Element {
    pub(super) name: String,
    pub(super) count: usize,
    pub(super) props: Vec<Property>,
}

impl Element {
    /// Bytes per row when no property is a list.
    pub(super) fn fixed_stride(&self) -> Option<usize> {
        self.props.iter().map(Property::fixed_size).sum()
    }
}

#[derive(Debug)]
pub(super) struct Header {
    pub(super) format: Format,
    pub(super) elements: Vec<Element>,
    /// Offset of the first data byte, just after the `end_header` line.
    pub(super) body_start: usize,
}

pub(super) fn parse_header(bytes: &[u8]) -> Result<Header, String> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    if !(bytes.starts_with(b"ply\n") || bytes.starts_with(b"ply\r\n")) {
        return Err("not a PLY file (it does not start with a 'ply' line)".into());
    }
    let mut format = None;
    let mut elements: Vec<Element> = Vec::new();
    let mut pos = 0;
    let mut line_no = 0;
    loop {
        let Some(len) = bytes[pos..].iter().position(|&b| b == b'\n') else {
            return Err("the header has no 'end_header' line".into());
        };
        let raw = &bytes[pos..pos + len];
        pos += len + 1;
        line_no += 1;
        if line_no == 1 {
            continue; // the "ply" magic, checked above
        }
        let line = std::str::from_utf8(raw)
            .map_err(|_| format!("header line {line_no}: not text (is the header cut short?)"))?
            .trim_end_matches('\r');
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        let shown: String = line.chars().take(80).collect(); // keep errors short if the header is garbage
        let err = |what: &str| format!("header line {line_no} ('{shown}'): {what}");
        match words.as_slice() {
            [] | ["comment", ..] | ["obj_info", ..] => {}
            ["format", name, _version] => {
                format = Some(match *name {
                    "ascii" => Format::Ascii,
                    "binary_little_endian" => Format::BinaryLittleEndian,
                    "binary_big_endian" => Format::BinaryBigEndian,
                    _ => {
                        return Err(err(
                            "unknown format (expected ascii, binary_little_endian or binary_big_endian)",
                        ))
                    }
                });
            }
            ["format", ..] => return Err(err("expected 'format <type> <version>'")),
            ["element", name, count] => {
                let count: u64 = count
                    .parse()
                    .map_err(|_| err("the element count is not a whole number"))?;
                let count = usize::try_from(count).map_err(|_| err("the element count is too large"))?;
                elements.push(Element {
                    name: name.to_string(),
                    count,
                    props: Vec::new(),
                });
            }
            ["element", ..] => return Err(err("expected 'element <name> <count>'")),
            ["property", rest @ ..] => {
                let element = elements
                    .last_mut()
                    .ok_or_else(|| err("a property before any element"))?;
                let scalar = |name: &str| Scalar::parse(name).ok_or_else(|| err(&format!("unknown type '{name}'")));
                let (ty, name) = match rest {
                    ["list", count, item, name] => (
                        PropType::List {
                            count: scalar(count)?,
                            item: scalar(item)?,
                        },
                        name,
                    ),
                    [ty, name] if *ty != "list" => (PropType::Scalar(scalar(ty)?), name),
                    _ => {
                        return Err(err(
                            "expected 'property <type> <name>' or 'property list <type> <type> <name>'",
                        ))
                    }
                };
                if let PropType::List {
                    count: Scalar::F32 | Scalar::F64,
                    ..
                } = ty
                {
                    return Err(err("a list length must have an integer type"));
                }
                let type_name = rest[..rest.len() - 1].join(" ");
                element.props.push(Property {
                    name: name.to_string(),
                    ty,
                    type_name,
                });
            }
            ["end_header"] => break,
            [keyword, ..] => return Err(err(&format!("unknown keyword '{keyword}'"))),
        }
    }
    let format = format.ok_or("the header has no 'format' line")?;
    Ok(Header {
        format,
        elements,
        body_start: pos,
    })
}

// ---------------------------------------------------------------------------------------------------
// Mapping vertex properties to splat attributes
// ---------------------------------------------------------------------------------------------------

// Each vertex is first gathered into a fixed array of "slots", one per Gaussian attribute, so the byte
// layout of the file (property order, extra properties) is resolved once in the header, not per vertex.
const POSITION: usize = 0; // 0..3
const DC: usize = 3; // 3..6
const OPACITY: usize = 6;
const SCALE: usize = 7; // 7..10
const ROTATION: usize = 10; // 10..14
const REST: usize = 14; // 14..14 + number of f_rest properties
const MAX_REST: usize = 45;
const MAX_SLOTS: usize = REST + MAX_REST;

/// The slot a property name fills, if it is one of the Gaussian attributes.
fn slot_of(name: &str) -> Option<usize> {
    let indexed = |prefix: &str, base: usize, count: usize| {
        let i: usize = name.strip_prefix(prefix)?.parse().ok()?;
        (i < count).then_some(base + i)
    };
    match name {
        "x" => Some(POSITION),
        "y" => Some(POSITION + 1),
        "z" => Some(POSITION + 2),
        "opacity" => Some(OPACITY),
        _ => indexed("f_dc_", DC, 3)
            .or_else(|| indexed("scale_", SCALE, 3))
            .or_else(|| indexed("rot_", ROTATION, 4))
            .or_else(|| indexed("f_rest_", REST, MAX_REST)),
    }
}

/// The property name that fills a slot (inverse of [`slot_of`]), for "missing property" errors.
fn slot_name(slot: usize) -> String {
    match slot {
        0..=2 => ["x", "y", "z"][slot].to_string(),
        DC..OPACITY => format!("f_dc_{}", slot - DC),
        OPACITY => "opacity".to_string(),
        SCALE..ROTATION => format!("scale_{}", slot - SCALE),
        ROTATION..REST => format!("rot_{}", slot - ROTATION),
        _ => format!("f_rest_{}", slot - REST),
    }
}

/// Where each Gaussian attribute lives among the vertex properties.
struct VertexLayout {
    /// `(property index, slot)` for every property that is read; all other properties are skipped.
    wanted: Vec<(usize, usize)>,
    sh_degree: u32,
    /// Number of `f_rest_*` properties: 3 * (sh_coeffs(sh_degree) - 1).
    n_rest: usize,
}

impl VertexLayout {
    fn new(vertex: &Element) -> Result<Self, String> {
        let mut wanted = Vec::new();
        let mut seen = [false; MAX_SLOTS];
        for (index, prop) in vertex.props.iter().enumerate() {
            let is_rest = prop.name.starts_with("f_rest_");
            let slot = match slot_of(&prop.name) {
                Some(slot) => slot,
                // f_rest_45 and beyond cannot belong to any supported degree.
                None if is_rest && prop.name["f_rest_".len()..].parse::<usize>().is_ok() => {
                    return Err(format!("property '{}' is beyond SH degree 3", prop.name))
                }
                None => continue,
            };
            if !matches!(prop.ty, PropType::Scalar(Scalar::F32 | Scalar::F64)) {
                return Err(format!(
                    "property '{}' has type {}, expected float",
                    prop.name, prop.type_name
                ));
            }
            if std::mem::replace(&mut seen[slot], true) {
                return Err(format!("property '{}' appears twice", prop.name));
            }
            wanted.push((index, slot));
        }
        let n_rest = wanted.iter().filter(|&&(_, slot)| slot >= REST).count();
        let sh_degree = match n_rest {
            0 => 0,
            9 => 1,
            24 => 2,
            45 => 3,
            _ => {
                return Err(format!(
                    "found {n_rest} f_rest_* properties; expected 0, 9, 24 or 45 (SH degree 0, 1, 2 or 3)"
                ))
            }
        };
        if let Some(missing) = (0..REST + n_rest).find(|&slot| !seen[slot]) {
            return Err(format!("missing property '{}'", slot_name(missing)));
        }
        Ok(Self {
            wanted,
            sh_degree,
            n_rest,
        })
    }
}

/// Collects vertices into [`Splats`], converting the INRIA SH layout and normalising rotations.
struct Builder {
    splats: Splats,
    /// SH coefficients per channel.
    k: usize,
}

impl Builder {
    /// `count` must already be checked against the file size: it sizes the allocations.
    fn new(layout: &VertexLayout, count: usize) -> Self {
        let k = sh_coeffs(layout.sh_degree);
        let splats = Splats {
            means: Vec::with_capacity(count),
            log_scales: Vec::with_capacity(count),
            rotations: Vec::with_capacity(count),
            opacity_logits: Vec::with_capacity(count),
            sh_degree: layout.sh_degree,
            sh: Vec::with_capacity(count * k),
        };
        debug_assert_eq!(layout.n_rest, 3 * (k - 1));
        Self { splats, k }
    }

    fn push(&mut self, v: &[f32; MAX_SLOTS]) -> Result<(), String> {
        let index = self.splats.means.len();
        let s = &mut self.splats;
        s.means.push([v[POSITION], v[POSITION + 1], v[POSITION + 2]]);
        s.log_scales.push([v[SCALE], v[SCALE + 1], v[SCALE + 2]]);
        s.opacity_logits.push(v[OPACITY]);
        s.rotations.push(normalise_quaternion(
            [v[ROTATION], v[ROTATION + 1], v[ROTATION + 2], v[ROTATION + 3]],
            index,
        )?);
        s.sh.push([v[DC], v[DC + 1], v[DC + 2]]);
        // f_rest is channel-major: all red coefficients, then all green, then all blue.
        let per_channel = self.k - 1;
        for k in 0..per_channel {
            let at = |channel: usize| v[REST + channel * per_channel + k];
            s.sh.push([at(0), at(1), at(2)]);
        }
        Ok(())
    }
}

/// Scales `q` to unit length. Quaternions that are already unit length to within rounding are kept
/// bit-for-bit, so writing and re-reading a scene is lossless. Non-finite values are passed through for
/// [`Splats::validate`] to report; a zero quaternion is an error since it encodes no rotation.
pub(super) fn normalise_quaternion(q: [f32; 4], index: usize) -> Result<[f32; 4], String> {
    let norm2 = q.iter().map(|c| c * c).sum::<f32>();
    if norm2 == 0.0 {
        return Err(format!("splat {index} has a zero rotation quaternion"));
    }
    if !norm2.is_finite() || (norm2 - 1.0).abs() <= 4.0 * f32::EPSILON {
        return Ok(q);
    }
    let inv = 1.0 / norm2.sqrt();
    Ok(q.map(|c| c * inv))
}

// ---------------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------------

fn parse_ply(bytes: &[u8]) -> Result<Splats, String> {
    let header = parse_header(bytes)?;
    let is_compressed = header.elements.iter().any(|e| e.name == "chunk")
        || header
            .elements
            .iter()
            .flat_map(|e| &e.props)
            .any(|p| p.name.starts_with("packed_"));
    if is_compressed {
        return super::compressed_ply::decode(&header, bytes);
    }
    let vertex_index = header
        .elements
        .iter()
        .position(|e| e.name == "vertex")
        .ok_or("the file has no 'vertex' element")?;
    let before = &header.elements[..vertex_index];
    let vertex = &header.elements[vertex_index];
    let layout = VertexLayout::new(vertex)?;
    let body = &bytes[header.body_start..];
    match header.format {
        Format::Ascii => read_ascii(body, before, vertex, &layout),
        Format::BinaryLittleEndian => read_binary(body, before, vertex, &layout, false),
        Format::BinaryBigEndian => read_binary(body, before, vertex, &layout, true),
    }
}

/// Reads one number of type `ty` from the start of `b` (which must be long enough).
#[inline]
fn read_value(b: &[u8], ty: Scalar, big: bool) -> f64 {
    macro_rules! get {
        ($t:ty, $n:literal) => {{
            let mut a = [0u8; $n];
            a.copy_from_slice(&b[..$n]);
            if big {
                <$t>::from_be_bytes(a)
            } else {
                <$t>::from_le_bytes(a)
            }
        }};
    }
    match ty {
        Scalar::I8 => f64::from(b[0] as i8),
        Scalar::U8 => f64::from(b[0]),
        Scalar::I16 => f64::from(get!(i16, 2)),
        Scalar::U16 => f64::from(get!(u16, 2)),
        Scalar::I32 => f64::from(get!(i32, 4)),
        Scalar::U32 => f64::from(get!(u32, 4)),
        Scalar::F32 => f64::from(get!(f32, 4)),
        Scalar::F64 => get!(f64, 8),
    }
}

/// Reads a list length, rejecting negative or non-integer values.
fn read_count(b: &[u8], ty: Scalar, big: bool) -> Option<usize> {
    if b.len() < ty.size() || matches!(ty, Scalar::F32 | Scalar::F64) {
        return None;
    }
    let n = read_value(b, ty, big);
    (n >= 0.0).then_some(n as usize)
}

fn truncated(count: usize, needed: usize, have: usize) -> String {
    format!("truncated: expected {count} vertices ({needed} bytes) but the file has {have} bytes of data")
}

/// Skips the rows of an element that is not the vertex element, returning the offset after it.
fn skip_binary_element(data: &[u8], mut pos: usize, element: &Element, big: bool) -> Result<usize, String> {
    let cut_short = || format!("truncated: the data ends inside element '{}'", element.name);
    if let Some(stride) = element.fixed_stride() {
        let len = element.count.checked_mul(stride).ok_or_else(cut_short)?;
        let end = pos
            .checked_add(len)
            .filter(|&end| end <= data.len())
            .ok_or_else(cut_short)?;
        return Ok(end);
    }
    // A list costs at least its length field, so this loop ends within data.len() iterations.
    for _ in 0..element.count {
        for prop in &element.props {
            pos += prop.binary_len(data, pos, big).ok_or_else(cut_short)?;
        }
    }
    Ok(pos)
}

fn read_binary(
    body: &[u8],
    before: &[Element],
    vertex: &Element,
    layout: &VertexLayout,
    big: bool,
) -> Result<Splats, String> {
    let mut pos = 0;
    for element in before {
        pos = skip_binary_element(body, pos, element, big)?;
    }
    let data = &body[pos..];
    let count = vertex.count;

    if let Some(stride) = vertex.fixed_stride() {
        // The common case: every row has the same size, so offsets are computed once and the total size
        // is checked before allocating anything from the (untrusted) vertex count.
        let needed = count.saturating_mul(stride);
        if needed > data.len() || stride == 0 {
            return Err(truncated(count, needed, data.len()));
        }
        let mut offsets = Vec::with_capacity(vertex.props.len());
        let mut offset = 0;
        for prop in &vertex.props {
            offsets.push(offset);
            offset += prop.fixed_size().unwrap_or(0);
        }
        let fields: Vec<(usize, Scalar, usize)> = layout
            .wanted
            .iter()
            .map(|&(index, slot)| (offsets[index], scalar_type(&vertex.props[index]), slot))
            .collect();
        let mut builder = Builder::new(layout, count);
        let rows = &data[..needed];
        // Nearly every file is all f32: give that case its own monomorphised loop without the per-value
        // type dispatch, which roughly halves the parse time of large files.
        let f32_bytes = |b: &[u8]| [b[0], b[1], b[2], b[3]];
        match (fields.iter().all(|f| f.1 == Scalar::F32), big) {
            (true, false) => read_rows(rows, stride, &fields, &mut builder, |b, _| {
                f32::from_le_bytes(f32_bytes(b))
            }),
            (true, true) => read_rows(rows, stride, &fields, &mut builder, |b, _| {
                f32::from_be_bytes(f32_bytes(b))
            }),
            (false, _) => read_rows(rows, stride, &fields, &mut builder, |b, ty| {
                read_value(b, ty, big) as f32
            }),
        }?;
        return Ok(builder.splats);
    }

    // Some vertex property is a list (never a Gaussian attribute, but it must be stepped over), so each
    // row is measured as it is read. Each row needs at least its scalars and list lengths.
    let min_stride: usize = vertex
        .props
        .iter()
        .map(|p| match p.ty {
            PropType::Scalar(s) => s.size(),
            PropType::List { count, .. } => count.size(),
        })
        .sum();
    let needed = count.saturating_mul(min_stride);
    if needed > data.len() {
        return Err(truncated(count, needed, data.len()));
    }
    let slots: Vec<Option<usize>> = (0..vertex.props.len())
        .map(|index| layout.wanted.iter().find(|w| w.0 == index).map(|w| w.1))
        .collect();
    let mut builder = Builder::new(layout, count);
    let mut values = [0.0f32; MAX_SLOTS];
    let mut pos = 0;
    for i in 0..count {
        for (prop, slot) in vertex.props.iter().zip(&slots) {
            let len = prop
                .binary_len(data, pos, big)
                .ok_or_else(|| format!("truncated: expected {count} vertices but the data ends inside vertex {i}"))?;
            if let Some(slot) = *slot {
                values[slot] = read_value(&data[pos..], scalar_type(prop), big) as f32;
            }
            pos += len;
        }
        builder.push(&values)?;
    }
    Ok(builder.splats)
}

/// Reads fixed-size vertex rows: `fields` holds `(offset in row, type, slot)` for every wanted property.
fn read_rows(
    rows: &[u8],
    stride: usize,
    fields: &[(usize, Scalar, usize)],
    builder: &mut Builder,
    read: impl Fn(&[u8], Scalar) -> f32,
) -> Result<(), String> {
    let mut values = [0.0f32; MAX_SLOTS];
    for row in rows.chunks_exact(stride) {
        for &(offset, ty, slot) in fields {
            values[slot] = read(&row[offset..], ty);
        }
        builder.push(&values)?;
    }
    Ok(())
}

/// The scalar type of a property already known to be a scalar (Gaussian attributes always are).
fn scalar_type(prop: &Property) -> Scalar {
    match prop.ty {
        PropType::Scalar(s) => s,
        PropType::List { item, .. } => item,
    }
}

fn read_ascii(body: &[u8], before: &[Element], vertex: &Element, layout: &VertexLayout) -> Result<Splats, String> {
    let mut tokens = body.split(|b| b.is_ascii_whitespace()).filter(|t| !t.is_empty());
    let text = |t: &[u8]| String::from_utf8_lossy(t).into_owned();
    let list_len = |t: &[u8]| std::str::from_utf8(t).ok().and_then(|s| s.parse::<usize>().ok());

    for element in before {
        let cut_short = || format!("truncated: the data ends inside element '{}'", element.name);
        if element.props.is_empty() {
            continue;
        }
        for _ in 0..element.count {
            for prop in &element.props {
                let token = tokens.next().ok_or_else(cut_short)?;
                if let PropType::List { .. } = prop.ty {
                    let n = list_len(token).ok_or_else(|| format!("bad list length '{}'", text(token)))?;
                    for _ in 0..n {
                        tokens.next().ok_or_else(cut_short)?;
                    }
                }
            }
        }
    }

    // Every value takes at least one character and one separator; check that before allocating.
    let count = vertex.count;
    let min_bytes = count
        .checked_mul(vertex.props.len())
        .and_then(|n| n.checked_mul(2))
        .unwrap_or(usize::MAX);
    if min_bytes > body.len() + 1 {
        return Err(format!(
            "truncated: expected {count} vertices ({} values) but the file has only {} bytes of data",
            count.saturating_mul(vertex.props.len()),
            body.len()
        ));
    }
    let mut slots: Vec<Option<usize>> = vec![None; vertex.props.len()];
    for &(index, slot) in &layout.wanted {
        slots[index] = Some(slot);
    }
    let mut builder = Builder::new(layout, count);
    let mut values = [0.0f32; MAX_SLOTS];
    for i in 0..count {
        let cut_short = || format!("truncated: expected {count} vertices but the data ends inside vertex {i}");
        for (prop, slot) in vertex.props.iter().zip(&slots) {
            let token = tokens.next().ok_or_else(cut_short)?;
            match (prop.ty, slot) {
                (PropType::Scalar(ty), Some(slot)) => {
                    let s = std::str::from_utf8(token).ok();
                    // Parse doubles as doubles so the one rounding to f32 is the only one.
                    let value = match ty {
                        Scalar::F64 => s.and_then(|s| s.parse::<f64>().ok()).map(|v| v as f32),
                        _ => s.and_then(|s| s.parse::<f32>().ok()),
                    };
                    values[*slot] = value.ok_or_else(|| {
                        format!(
                            "vertex {i}: property '{}': '{}' is not a number",
                            prop.name,
                            text(token)
                        )
                    })?;
                }
                (PropType::Scalar(_), None) => {}
                (PropType::List { .. }, _) => {
                    let n = list_len(token)
                        .ok_or_else(|| format!("vertex {i}: bad list length '{}' for '{}'", text(token), prop.name))?;
                    for _ in 0..n {
                        tokens.next().ok_or_else(cut_short)?;
                    }
                }
            }
        }
        builder.push(&values)?;
    }
    Ok(builder.splats)
}

// ---------------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------------

/// The vertex properties of the INRIA layout, in file order, for `n_rest` f_rest coefficients.
fn inria_property_names(n_rest: usize) -> Vec<String> {
    let head = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"];
    let tail = [
        "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
    ];
    let rest = (0..n_rest).map(|i| format!("f_rest_{i}"));
    head.iter()
        .map(|s| s.to_string())
        .chain(rest)
        .chain(tail.iter().map(|s| s.to_string()))
        .collect()
}

fn encode_ply(splats: &Splats) -> Result<Vec<u8>, String> {
    let k = check_layout(splats)?;
    let n = splats.len();
    let n_rest = 3 * (k - 1);

    let names = inria_property_names(n_rest);
    let mut header = format!("ply\nformat binary_little_endian 1.0\nelement vertex {n}\n");
    for name in &names {
        header.push_str(&format!("property float {name}\n"));
    }
    header.push_str("end_header\n");

    let stride = names.len() * 4;
    let mut out = Vec::with_capacity(header.len() + n * stride);
    out.extend_from_slice(header.as_bytes());
    let mut put = |values: &[f32]| {
        for v in values {
            out.extend_from_slice(&v.to_le_bytes());
        }
    };
    for i in 0..n {
        put(&splats.means[i]);
        put(&[0.0; 3]); // normals: unused by 3DGS, but part of the layout other tools expect
        let sh = &splats.sh[i * k..(i + 1) * k];
        put(&sh[0]);
        for channel in 0..3 {
            for coeff in &sh[1..] {
                put(&[coeff[channel]]);
            }
        }
        put(&[splats.opacity_logits[i]]);
        put(&splats.log_scales[i]);
        put(&splats.rotations[i]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// SplitMix64: a tiny deterministic generator, enough for test data.
    struct Rng(u64);

    impl Rng {
        /// Uniform in [-1, 1).
        fn next_f32(&mut self) -> f32 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }

        fn vec3(&mut self, scale: f32) -> [f32; 3] {
            [0; 3].map(|_| self.next_f32() * scale)
        }
    }

    fn random_splats(n: usize, sh_degree: u32, seed: u64) -> Splats {
        let mut rng = Rng(seed);
        let mut splats = Splats {
            sh_degree,
            ..Splats::default()
        };
        for _ in 0..n {
            splats.means.push(rng.vec3(10.0));
            splats.log_scales.push(rng.vec3(3.0));
            splats.opacity_logits.push(rng.next_f32() * 5.0);
            let q = [0; 4].map(|_| rng.next_f32() + 0.01);
            let norm = q.iter().map(|c| c * c).sum::<f32>().sqrt();
            splats.rotations.push(q.map(|c| c / norm));
            for _ in 0..sh_coeffs(sh_degree) {
                splats.sh.push(rng.vec3(2.0));
            }
        }
        splats
    }

    fn write_bytes(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        fs::write(&path, bytes).expect("write test file");
        path
    }

    /// The error message `read_ply` gives for a file holding `bytes`.
    fn error_of(bytes: &[u8]) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_bytes(&dir, "bad.ply", bytes);
        read_ply(&path).expect_err("the file should be rejected").to_string()
    }

    /// A header with one vertex element and the given property declarations ("type name").
    fn header(format: &str, count: usize, props: &[String]) -> String {
        let mut h = format!("ply\nformat {format} 1.0\nelement vertex {count}\n");
        for p in props {
            h.push_str(&format!("property {p}\n"));
        }
        h + "end_header\n"
    }

    /// "float name" declarations of the INRIA layout, minus `without`.
    fn float_props(n_rest: usize, without: &str) -> Vec<String> {
        inria_property_names(n_rest)
            .into_iter()
            .filter(|n| n != without)
            .map(|n| format!("float {n}"))
            .collect()
    }

    #[test]
    fn round_trip_all_degrees() {
        let dir = tempfile::tempdir().expect("tempdir");
        for degree in 0..=3 {
            let splats = random_splats(257, degree, 42 + u64::from(degree));
            let path = dir.path().join(format!("deg{degree}.ply"));
            write_ply(&splats, &path).expect("write");
            assert_eq!(read_ply(&path).expect("read"), splats, "degree {degree}");
            write_ply(&splats, &path).expect("overwrite an existing file");
        }
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 4, "temporary files left behind: {names:?}");
    }

    #[test]
    fn failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(write_ply(&random_splats(3, 0, 1), &dir.path().join("no/such/dir/out.ply")).is_err());
        let mut bad = random_splats(3, 1, 1);
        bad.sh.pop();
        let err = write_ply(&bad, &dir.path().join("bad.ply")).expect_err("inconsistent splats");
        assert!(err.to_string().contains("inconsistent"), "{err}");
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 0);
    }

    /// Two degree-1 splats as rows in the order of `inria_property_names(9)`, and the `Splats` they
    /// must decode to: this pins down the channel-major f_rest order and quaternion normalisation.
    fn hand_rows() -> (Vec<[f64; 26]>, Splats) {
        #[rustfmt::skip]
        let rows = vec![
            [1.0, 2.0, 3.0, /* normal */ 0.0, 0.0, 1.0, /* dc */ 0.1, 0.2, 0.3,
             /* red k=1..3 */ 11.0, 12.0, 13.0, /* green */ 21.0, 22.0, 23.0, /* blue */ 31.0, 32.0, 33.0,
             /* opacity */ -1.5, /* scale */ -2.0, -3.0, -4.0, /* rot */ 2.0, 0.0, 0.0, 0.0],
            [-1.25, 0.5, 1e-3, 0.0, 0.0, 0.0, -0.5, 0.0, 0.5,
             1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0,
             4.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0],
        ];
        let expected = Splats {
            means: vec![[1.0, 2.0, 3.0], [-1.25, 0.5, 1e-3]],
            log_scales: vec![[-2.0, -3.0, -4.0], [0.25, 0.5, 0.75]],
            rotations: vec![[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]],
            opacity_logits: vec![-1.5, 4.0],
            sh_degree: 1,
            #[rustfmt::skip]
            sh: vec![
                [0.1, 0.2, 0.3], [11.0, 21.0, 31.0], [12.0, 22.0, 32.0], [13.0, 23.0, 33.0],
                [-0.5, 0.0, 0.5], [1.0, 4.0, 7.0], [2.0, 5.0, 8.0], [3.0, 6.0, 9.0],
            ],
        };
        (rows, expected)
    }

    #[test]
    fn ascii_big_and_little_endian_agree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (rows, expected) = hand_rows();
        let props = float_props(9, "");

        // ascii, with comment and obj_info lines, CRLF line ends and uneven spacing
        let mut ascii = header("ascii", 2, &props)
            .replace(
                "format ascii 1.0\n",
                "format ascii 1.0\ncomment made by hand\nobj_info test\n",
            )
            .replace('\n', "\r\n");
        for row in &rows {
            let values: Vec<String> = row.iter().map(|v| v.to_string()).collect();
            ascii.push_str(&format!("{} \r\n", values.join("  ")));
        }
        let path = write_bytes(&dir, "ascii.ply", ascii.as_bytes());
        assert_eq!(read_ply(&path).expect("ascii"), expected);

        for (format, big) in [("binary_big_endian", true), ("binary_little_endian", false)] {
            let mut bytes = header(format, 2, &props).into_bytes();
            for &v in rows.iter().flatten() {
                let v = v as f32;
                bytes.extend_from_slice(&if big { v.to_be_bytes() } else { v.to_le_bytes() });
            }
            let path = write_bytes(&dir, "binary.ply", &bytes);
            assert_eq!(read_ply(&path).expect(format), expected, "{format}");
        }

        // Doubles, under both spellings, are accepted and converted to f32.
        let double_props: Vec<String> = inria_property_names(9)
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{} {n}", if i % 2 == 0 { "double" } else { "float64" }))
            .collect();
        let mut bytes = header("binary_big_endian", 2, &double_props).into_bytes();
        for v in rows.iter().flatten() {
            bytes.extend_from_slice(&v.to_be_bytes());
        }
        let path = write_bytes(&dir, "double.ply", &bytes);
        assert_eq!(read_ply(&path).expect("doubles"), expected);
    }

    #[test]
    fn unknown_properties_and_elements_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (rows, expected) = hand_rows();
        let names = inria_property_names(9);

        // Extra properties of every size interleaved, a list among the vertex properties (so rows vary in
        // size), an element with a list before the vertices and one after.
        let extra_types = ["short", "ushort", "int8", "uint", "double", "char"];
        let extra_sizes = [2, 2, 1, 4, 8, 1];
        let mut text = String::from("ply\nformat binary_little_endian 1.0\ncomment before\n");
        text.push_str("element camera 2\nproperty float fx\nproperty list int uchar tag\n");
        text.push_str("element vertex 2\nproperty uchar red\nproperty list uchar int ids\n");
        for (i, n) in names.iter().enumerate() {
            text.push_str(&format!(
                "property float {n}\nproperty {} extra_{i}\n",
                extra_types[i % 6]
            ));
        }
        text.push_str("element face 1\nproperty list uchar int vertex_indices\nend_header\n");
        let mut bytes = text.into_bytes();
        for tags in 0..2u8 {
            bytes.extend_from_slice(&1.5f32.to_le_bytes());
            bytes.extend_from_slice(&i32::from(tags).to_le_bytes());
            bytes.extend(std::iter::repeat_n(7u8, usize::from(tags)));
        }
        for (r, row) in rows.iter().enumerate() {
            bytes.push(200); // red
            bytes.push(r as u8); // list length, then that many ints
            bytes.extend(std::iter::repeat_n(0xFFu8, 4 * r));
            for (i, &v) in row.iter().enumerate() {
                bytes.extend_from_slice(&(v as f32).to_le_bytes());
                bytes.extend(std::iter::repeat_n(0xEEu8, extra_sizes[i % 6]));
            }
        }
        bytes.extend_from_slice(&[3, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]); // the face
        let path = write_bytes(&dir, "lists.ply", &bytes);
        assert_eq!(read_ply(&path).expect("lists"), expected);

        // Without lists the rows have a fixed size and take the fast path.
        let mut props: Vec<String> = ["uchar red", "uchar green", "uchar blue"].map(String::from).into();
        for n in &names {
            props.push(format!("float {n}"));
            props.push(format!("int16 pad_{n}"));
        }
        let mut bytes = header("binary_little_endian", 2, &props).into_bytes();
        for row in &rows {
            bytes.extend_from_slice(&[1, 2, 3]);
            for &v in row {
                bytes.extend_from_slice(&(v as f32).to_le_bytes());
                bytes.extend_from_slice(&[0x55, 0x55]);
            }
        }
        let path = write_bytes(&dir, "rgb.ply", &bytes);
        assert_eq!(read_ply(&path).expect("rgb"), expected);
    }

    #[test]
    fn truncated_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.ply");
        write_ply(&random_splats(10, 0, 3), &path).expect("write");
        let bytes = fs::read(&path).expect("read");
        let err = error_of(&bytes[..bytes.len() - 5]);
        assert!(
            err.contains("truncated: expected 10 vertices (680 bytes) but the file has 675 bytes of data"),
            "{err}"
        );

        // An absurd count is rejected from the file size, not by trying to allocate it.
        let huge = header("binary_little_endian", 1 << 60, &float_props(0, ""));
        assert!(error_of(huge.as_bytes()).contains("truncated"));
        assert!(error_of(huge.replace("binary_little_endian", "ascii").as_bytes()).contains("truncated"));

        // ascii: the second vertex is cut short.
        let mut ascii = header("ascii", 2, &float_props(0, ""));
        ascii.push_str("0 0 0 0 0 0 0 0 0 0 0 0 0 1 0 0 0\n0 0 0 0 0 0 0 0                                   \n");
        let err = error_of(ascii.as_bytes());
        assert!(err.contains("truncated") && err.contains("inside vertex 1"), "{err}");
    }

    #[test]
    fn header_errors() {
        let err = error_of(header("binary_little_endian", 0, &float_props(0, "opacity")).as_bytes());
        assert!(err.contains("missing property 'opacity'"), "{err}");
        let err = error_of(header("binary_little_endian", 0, &float_props(9, "rot_3")).as_bytes());
        assert!(err.contains("missing property 'rot_3'"), "{err}");

        let mut props = float_props(0, "opacity");
        props.push("uchar opacity".into());
        let err = error_of(header("binary_little_endian", 0, &props).as_bytes());
        assert!(
            err.contains("property 'opacity' has type uchar, expected float"),
            "{err}"
        );
        let mut props = float_props(0, "x");
        props.push("list uchar float x".into());
        let err = error_of(header("binary_little_endian", 0, &props).as_bytes());
        assert!(
            err.contains("property 'x' has type list uchar float, expected float"),
            "{err}"
        );

        let err = error_of(header("binary_little_endian", 0, &float_props(5, "")).as_bytes());
        assert!(err.contains("found 5 f_rest_* properties"), "{err}");
        // Nine f_rest properties, but with f_rest_4 missing.
        let mut props = float_props(10, "f_rest_4");
        let err = error_of(header("binary_little_endian", 0, &props).as_bytes());
        assert!(err.contains("missing property 'f_rest_4'"), "{err}");
        props.push("float f_rest_50".into());
        let err = error_of(header("binary_little_endian", 0, &props).as_bytes());
        assert!(err.contains("'f_rest_50' is beyond SH degree 3"), "{err}");

        let err = error_of(b"");
        assert!(err.contains("empty"), "{err}");
        let err = error_of(b"PK\x03\x04 not a ply");
        assert!(err.contains("not a PLY file"), "{err}");
        let err = error_of(b"ply\nformat binary_little_endian 1.0\nelement vertex 3\n");
        assert!(err.contains("no 'end_header'"), "{err}");
        let err = error_of(b"ply\nformat binary_middle_endian 1.0\nend_header\n");
        assert!(err.contains("header line 2") && err.contains("unknown format"), "{err}");
        let err = error_of(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty quad x\nend_header\n");
        assert!(
            err.contains("header line 4") && err.contains("unknown type 'quad'"),
            "{err}"
        );
        let err = error_of(b"ply\nformat ascii 1.0\nelement vertex -1\nend_header\n");
        assert!(err.contains("header line 3") && err.contains("count"), "{err}");
        let err = error_of(b"ply\nformat ascii 1.0\nproperty float x\nend_header\n");
        assert!(
            err.contains("header line 3") && err.contains("before any element"),
            "{err}"
        );
        let err = error_of(b"ply\nformat ascii 1.0\nelement face 0\nend_header\n");
        assert!(err.contains("no 'vertex' element"), "{err}");
        let mut props = float_props(0, "");
        props.push("float x".into());
        let err = error_of(header("ascii", 0, &props).as_bytes());
        assert!(err.contains("property 'x' appears twice"), "{err}");

        let compressed = "ply\nformat binary_little_endian 1.0\nelement chunk 1\nproperty float min_x\n\
                          element vertex 1\nproperty uint packed_position\nend_header\n";
        // Read as a compressed PLY (see compressed_ply.rs), whose data is missing here.
        let err = error_of(compressed.as_bytes());
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn quaternions_are_normalised_and_zero_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ascii = header("ascii", 2, &float_props(0, ""));
        ascii.push_str("0 0 0 0 0 0 0 0 0 0 0 0 0 2 0 0 0\n0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 3 4\n");
        let path = write_bytes(&dir, "q.ply", ascii.as_bytes());
        assert_eq!(
            read_ply(&path).expect("read").rotations,
            vec![[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.6, 0.8]]
        );

        let mut ascii = header("ascii", 2, &float_props(0, ""));
        ascii.push_str("0 0 0 0 0 0 0 0 0 0 0 0 0 1 0 0 0\n0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n");
        let err = error_of(ascii.as_bytes());
        assert!(err.contains("splat 1 has a zero rotation quaternion"), "{err}");
    }

    #[test]
    fn non_finite_values_are_repaired_by_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut splats = random_splats(6, 1, 9);
        splats.opacity_logits[1] = f32::INFINITY;
        splats.opacity_logits[2] = f32::NEG_INFINITY;
        splats.opacity_logits[3] = f32::NAN;
        splats.sh[5 * 4 + 2][1] = f32::INFINITY;
        let path = dir.path().join("nan.ply");
        write_ply(&splats, &path).expect("a NaN can be written, for inspection");
        let (loaded, repairs) = crate::scene::load_reporting(&path).expect("a few bad values do not cost the scene");
        assert_eq!(
            repairs,
            crate::scene::Repairs {
                total: 6,
                clamped_opacities: 2,
                dropped: 2
            }
        );
        let message = repairs.to_string();
        assert!(
            message.contains("dropped 2 of 6 splats") && message.contains("clamped 2"),
            "{message}"
        );
        // Splats 0, 1, 2 and 4 are kept, in order; the infinities are now finite with the same alpha.
        assert_eq!(loaded.means, [0, 1, 2, 4].map(|i| splats.means[i]));
        assert_eq!(loaded.sh[4..8], splats.sh[4..8]);
        assert_eq!(loaded.sh[12..16], splats.sh[16..20]);
        let limit = crate::scene::OPACITY_LOGIT_LIMIT;
        assert_eq!(loaded.opacity_logits[1..3], [limit, -limit]);
        let sigmoid = |x: f32| 1.0 / (1.0 + (-x).exp());
        assert_eq!((sigmoid(limit), sigmoid(-limit)), (1.0, 0.0));

        // ascii "nan" parses as a number; a scene of nothing but broken splats is an error.
        let mut ascii = header("ascii", 1, &float_props(0, ""));
        ascii.push_str("nan 0 0 0 0 0 0 0 0 0 0 0 0 1 0 0 0\n");
        let path = write_bytes(&dir, "nan_ascii.ply", ascii.as_bytes());
        let err = crate::scene::load(&path).expect_err("nothing left").to_string();
        assert!(err.contains("nan_ascii.ply") && err.contains("no splats left"), "{err}");

        let mut ascii = header("ascii", 1, &float_props(0, ""));
        ascii.push_str("zero 0 0 0 0 0 0 0 0 0 0 0 0 1 0 0 0\n");
        let err = error_of(ascii.as_bytes());
        assert!(err.contains("vertex 0: property 'x': 'zero' is not a number"), "{err}");
    }

    #[test]
    fn empty_vertex_element_is_rejected_by_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_bytes(
            &dir,
            "none.ply",
            header("binary_little_endian", 0, &float_props(0, "")).as_bytes(),
        );
        assert_eq!(read_ply(&path).expect("an empty vertex element parses").len(), 0);
        let err = crate::scene::load(&path).expect_err("no splats").to_string();
        assert!(err.contains("no splats"), "{err}");
    }

    #[test]
    fn luigi_asset() {
        let path = crate::repo_root().join("assets/luigi.ply");
        if !path.exists() {
            eprintln!("SKIPPED: {} is absent; run scripts/fetch_assets.sh", path.display());
            return;
        }
        let start = std::time::Instant::now();
        let splats = crate::scene::load(&path).expect("load luigi.ply");
        eprintln!("luigi.ply: {} splats in {:?}", splats.len(), start.elapsed());
        assert_eq!(splats.len(), 14_526);
        assert_eq!(splats.sh_degree, 0);
        for q in &splats.rotations {
            let norm = q.iter().map(|c| c * c).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{q:?}");
        }
    }
}
