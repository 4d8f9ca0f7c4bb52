//! The uniform structs the shaders read, each defined once here and once in `shaders/common.wgsl`
//! (which every shader is compiled with) under the same name; the tests check that the two layouts
//! agree field by field and that no shader reads a uniform struct defined anywhere else.

use bytemuck::{Pod, Zeroable};

/// The projection stage and its backward pass.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(super) struct ProjectUniforms {
    pub(super) camera_from_world: [[f32; 4]; 4],
    pub(super) camera_position: [f32; 4],
    /// fx, fy, cx, cy
    pub(super) intrinsics: [f32; 4],
    /// width, height, tiles_x, tiles_y
    pub(super) size: [u32; 4],
    /// Splat count, SH degree to evaluate, SH coefficients stored per splat, rasterizer constants.
    pub(super) counts: [u32; 4],
    /// The splats of this dispatch of the projection: first, one past the last.
    pub(super) chunk: [u32; 4],
}

/// The compositing stage and its backward pass.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(super) struct RasterUniforms {
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) tiles_x: u32,
    pub(super) max_alpha: f32,
    pub(super) background: [f32; 4],
    /// `flags[0]`: the backward pass also accumulates the absolute 2D-mean gradients (absgrad).
    pub(super) flags: [u32; 4],
}

/// The kernels that need only an element count (the scans, visibility flags, compaction, count
/// gathering, tile ranges).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(super) struct LengthUniforms {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

impl LengthUniforms {
    pub(super) fn new(n: u32) -> Self {
        Self {
            n,
            ..Zeroable::zeroed()
        }
    }
}

/// One pass of the radix sort over 4-bit digits.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(super) struct SortUniforms {
    /// The length when known on the CPU (the shaders read it from `sort_len`).
    _n: u32,
    shift: u32,
    num_blocks: u32,
    _pad: u32,
}

impl SortUniforms {
    pub(super) fn new(n: u32, shift: u32, num_blocks: u32) -> Self {
        Self {
            _n: n,
            shift,
            num_blocks,
            _pad: 0,
        }
    }
}

/// Emitting the (tile, splat) pairs.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(super) struct EmitUniforms {
    pub(super) n: u32,
    pub(super) tiles_x: u32,
    /// Image width, height.
    pub(super) size: [u32; 2],
}

/// Copying the colour into the viewer's texture.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(super) struct PresentUniforms {
    width: u32,
    height: u32,
    _pad: [u32; 2],
}

impl PresentUniforms {
    pub(super) fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            _pad: [0; 2],
        }
    }
}

/// The display path's triangles.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(super) struct QuadUniforms {
    /// Image width, height in pixels.
    size: [f32; 2],
    /// The alpha clamp of the compute path's constants.
    max_alpha: f32,
    _pad: f32,
}

impl QuadUniforms {
    pub(super) fn new(width: f32, height: f32, max_alpha: f32) -> Self {
        Self {
            size: [width, height],
            max_alpha,
            _pad: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgpu::naga;

    const COMMON: &str = include_str!("../../shaders/common.wgsl");

    /// A struct's size and its (member, offset) list.
    type Layout = (u32, Vec<(String, u32)>);

    fn parse(source: &str, what: &str) -> naga::Module {
        naga::front::wgsl::parse_str(source).unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(source)))
    }

    /// Size and (member, offset) list of struct `name` in `shaders/common.wgsl`, as naga lays it out.
    fn wgsl_layout(name: &str) -> Layout {
        let module = parse(COMMON, "common.wgsl");
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(module.to_ctx()).expect("common.wgsl lays out");
        let ty = module
            .types
            .iter()
            .find_map(|(_, ty)| (ty.name.as_deref() == Some(name)).then_some(ty))
            .unwrap_or_else(|| panic!("no struct {name} in common.wgsl"));
        let naga::TypeInner::Struct { members, span } = &ty.inner else {
            panic!("{name} is not a struct");
        };
        let members = members
            .iter()
            .map(|m| (m.name.clone().unwrap_or_default(), m.offset))
            .collect();
        (*span, members)
    }

    /// Size and (field, offset) list of a Rust struct; fields left out show up as a size mismatch.
    macro_rules! rust_layout {
        ($t:ty, $($field:ident),+) => {
            (
                std::mem::size_of::<$t>() as u32,
                vec![$((stringify!($field).to_string(), std::mem::offset_of!($t, $field) as u32)),+],
            )
        };
    }

    /// Every uniform struct, by name, with its Rust layout.
    fn rust_layouts() -> Vec<(&'static str, Layout)> {
        vec![
            (
                "ProjectUniforms",
                rust_layout!(
                    ProjectUniforms,
                    camera_from_world,
                    camera_position,
                    intrinsics,
                    size,
                    counts,
                    chunk
                ),
            ),
            (
                "RasterUniforms",
                rust_layout!(RasterUniforms, width, height, tiles_x, max_alpha, background, flags),
            ),
            ("LengthUniforms", rust_layout!(LengthUniforms, n, _pad0, _pad1, _pad2)),
            ("SortUniforms", rust_layout!(SortUniforms, _n, shift, num_blocks, _pad)),
            ("EmitUniforms", rust_layout!(EmitUniforms, n, tiles_x, size)),
            ("PresentUniforms", rust_layout!(PresentUniforms, width, height, _pad)),
            ("QuadUniforms", rust_layout!(QuadUniforms, size, max_alpha, _pad)),
        ]
    }

    /// The uniform structs the Rust side uploads are laid out exactly as the shaders read them.
    #[test]
    fn uniform_structs_match_their_wgsl_definitions() {
        for (name, rust) in rust_layouts() {
            assert_eq!(rust, wgsl_layout(name), "{name}: Rust (size, fields) vs WGSL");
        }
    }

    /// Every shader reads its uniforms through one of the structs above, so a uniform layout cannot
    /// be changed on one side only.
    #[test]
    fn every_shader_reads_a_checked_uniform_struct() {
        let checked: Vec<&str> = rust_layouts().into_iter().map(|(name, _)| name).collect();
        let folder = crate::repo_root().join("crates/difix3d-render/shaders");
        let mut shaders = 0;
        for entry in std::fs::read_dir(&folder).expect("shaders/") {
            let path = entry.expect("a readable entry").path();
            if path.extension().is_none_or(|e| e != "wgsl") || path.ends_with("common.wgsl") {
                continue;
            }
            let body = std::fs::read_to_string(&path).expect("a readable shader");
            // As render::kernels::module compiles it.
            let source = format!("{COMMON}\n{body}");
            let module = parse(&source, &path.display().to_string());
            for (_, global) in module.global_variables.iter() {
                if global.space != naga::AddressSpace::Uniform {
                    continue;
                }
                let ty = module.types[global.ty].name.as_deref().unwrap_or("(unnamed)");
                assert!(
                    checked.contains(&ty),
                    "{}: uniform `{}` is a {ty}, not one of the structs of render/uniforms.rs {checked:?}",
                    path.display(),
                    global.name.as_deref().unwrap_or("?")
                );
            }
            shaders += 1;
        }
        assert!(shaders >= 17, "found only {shaders} shaders in {}", folder.display());
    }
}
