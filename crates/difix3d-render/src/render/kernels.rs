//! The compute pipelines of the rasterizer, one per file in `shaders/`, compiled once per device.

const COMMON: &str = include_str!("../../shaders/common.wgsl");

/// A compute pipeline with the names of its group-0 bindings as its shader declares them, so bind
/// groups are built by name ([`bind`]) and cannot silently shift when a shader gains a binding.
pub struct Kernel {
    pub pipeline: wgpu::ComputePipeline,
    name: &'static str,
    /// (variable name, binding index), in the shader's order.
    bindings: Vec<(String, u32)>,
}

impl std::ops::Deref for Kernel {
    type Target = wgpu::ComputePipeline;

    fn deref(&self) -> &wgpu::ComputePipeline {
        &self.pipeline
    }
}

/// Every compute pipeline of the rasterizer and its backward pass.
pub struct Kernels {
    pub project: Kernel,
    pub scan_blocks: Kernel,
    pub scan_add: Kernel,
    pub sort_count: Kernel,
    pub sort_scatter: Kernel,
    pub visible_flags: Kernel,
    pub compact_visible: Kernel,
    pub gather_counts: Kernel,
    pub emit_intersections: Kernel,
    pub tile_ranges: Kernel,
    pub rasterize: Kernel,
    pub present: Kernel,
    pub quad_args: Kernel,
    pub quads_resolve: Kernel,
    pub rasterize_backward: Kernel,
    pub project_backward: Kernel,
}

macro_rules! kernel {
    ($device:expr, $name:literal) => {
        compile($device, $name, include_str!(concat!("../../shaders/", $name, ".wgsl")))
    };
}

impl Kernels {
    pub fn new(device: &wgpu::Device) -> Self {
        Self {
            project: kernel!(device, "project"),
            scan_blocks: kernel!(device, "scan_blocks"),
            scan_add: kernel!(device, "scan_add"),
            sort_count: kernel!(device, "sort_count"),
            sort_scatter: kernel!(device, "sort_scatter"),
            visible_flags: kernel!(device, "visible_flags"),
            compact_visible: kernel!(device, "compact_visible"),
            gather_counts: kernel!(device, "gather_counts"),
            emit_intersections: kernel!(device, "emit_intersections"),
            tile_ranges: kernel!(device, "tile_ranges"),
            rasterize: kernel!(device, "rasterize"),
            present: kernel!(device, "present"),
            quad_args: kernel!(device, "quad_args"),
            quads_resolve: kernel!(device, "quads_resolve"),
            rasterize_backward: kernel!(device, "rasterize_backward"),
            project_backward: kernel!(device, "project_backward"),
        }
    }
}

/// `body` with `shaders/common.wgsl` in front: the source every kernel is compiled from.
fn with_common(body: &str) -> String {
    format!("{COMMON}\n{body}")
}

/// A shader module of `body` with `shaders/common.wgsl` in front.
pub fn module(device: &wgpu::Device, name: &str, body: &str) -> wgpu::ShaderModule {
    device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(name),
        source: wgpu::ShaderSource::Wgsl(with_common(body).into()),
    })
}

fn compile(device: &wgpu::Device, name: &'static str, body: &str) -> Kernel {
    let module = module(device, name, body);
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(name),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    Kernel {
        pipeline,
        name,
        bindings: bindings_of(&with_common(body))
            .into_iter()
            .map(|(name, _, binding)| (name, binding))
            .collect(),
    }
}

/// The resource bindings a WGSL source declares, as (name, group, binding), read by naga (wgpu's
/// own shader compiler). A source that does not parse has none here; creating its module reports why.
fn bindings_of(source: &str) -> Vec<(String, u32, u32)> {
    let Ok(module) = wgpu::naga::front::wgsl::parse_str(source) else {
        return Vec::new();
    };
    module
        .global_variables
        .iter()
        .filter_map(|(_, var)| {
            let binding = var.binding.as_ref()?;
            Some((var.name.clone()?, binding.group, binding.binding))
        })
        .collect()
}

/// A bind group for group 0 of `kernel`, each resource bound to the binding its shader declares
/// under that name. Panics (a programming error, caught by any test that renders) when a name is
/// not one of the shader's bindings or a binding is left out.
pub fn bind(device: &wgpu::Device, kernel: &Kernel, resources: &[(&str, wgpu::BindingResource)]) -> wgpu::BindGroup {
    let known = || {
        kernel
            .bindings
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let entries: Vec<wgpu::BindGroupEntry> = resources
        .iter()
        .map(|(name, resource)| {
            let binding = kernel
                .bindings
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, index)| *index)
                .unwrap_or_else(|| panic!("shader {} has no binding {name} (it has {})", kernel.name, known()));
            wgpu::BindGroupEntry {
                binding,
                resource: resource.clone(),
            }
        })
        .collect();
    assert_eq!(
        entries.len(),
        kernel.bindings.len(),
        "shader {} binds {}; given {:?}",
        kernel.name,
        known(),
        resources.iter().map(|(n, _)| *n).collect::<Vec<_>>()
    );
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(kernel.name),
        layout: &kernel.pipeline.get_bind_group_layout(0),
        entries: &entries,
    })
}

/// Workgroup counts for `groups` 1D workgroups, folded into 2D because each dimension is capped.
pub fn grid(groups: u32) -> (u32, u32) {
    const MAX: u32 = 65_535;
    if groups <= MAX {
        (groups.max(1), 1)
    } else {
        (MAX, groups.div_ceil(MAX))
    }
}

/// Records one dispatch of a 256-wide 1D kernel over `n` elements.
pub fn dispatch_1d(
    encoder: &mut wgpu::CommandEncoder,
    pipeline: &wgpu::ComputePipeline,
    bind_group: &wgpu::BindGroup,
    groups: u32,
) {
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: None,
        timestamp_writes: None,
    });
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, bind_group, &[]);
    let (x, y) = grid(groups);
    pass.dispatch_workgroups(x, y, 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_names_are_read_from_the_shader() {
        let source = "@group(0) @binding(0) var<uniform> u: vec4<u32>;\n\
                      @group(0) @binding(2) var<storage, read_write> data: array<u32>;\n\
                      @group(1) @binding(1) var color: texture_storage_2d<rgba8unorm, write>;";
        let mut found = bindings_of(source);
        found.sort();
        assert_eq!(
            found,
            vec![
                ("color".to_string(), 1, 1),
                ("data".to_string(), 0, 2),
                ("u".to_string(), 0, 0)
            ]
        );
    }

    /// Every kernel's bindings are in group 0 and numbered 0, 1, 2, ... without gaps or repeats, as
    /// the pipelines' automatic layouts expect of the resources `bind` is given.
    #[test]
    fn every_shader_declares_its_bindings_once_in_order() {
        let folder = crate::repo_root().join("crates/difix3d-render/shaders");
        for entry in std::fs::read_dir(&folder).expect("shaders/") {
            let path = entry.expect("a readable entry").path();
            let body = std::fs::read_to_string(&path).expect("a readable shader");
            let source = if path.ends_with("common.wgsl") {
                body
            } else {
                with_common(&body)
            };
            wgpu::naga::front::wgsl::parse_str(&source)
                .unwrap_or_else(|e| panic!("{}: {}", path.display(), e.emit_to_string(&source)));
            let bindings = bindings_of(&source);
            assert!(bindings.iter().all(|(_, group, _)| *group == 0), "{}", path.display());
            let mut indices: Vec<u32> = bindings.into_iter().map(|(_, _, i)| i).collect();
            indices.sort_unstable();
            let expected: Vec<u32> = (0..indices.len() as u32).collect();
            assert_eq!(indices, expected, "{}", path.display());
        }
    }
}
