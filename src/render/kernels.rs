//! The compute pipelines of the rasterizer, one per file in `shaders/`, compiled once per device.

const COMMON: &str = include_str!("../../shaders/common.wgsl");

/// Every compute pipeline of the rasterizer and its backward pass.
pub struct Kernels {
    pub project: wgpu::ComputePipeline,
    pub scan_blocks: wgpu::ComputePipeline,
    pub scan_add: wgpu::ComputePipeline,
    pub sort_count: wgpu::ComputePipeline,
    pub sort_scatter: wgpu::ComputePipeline,
    pub visible_flags: wgpu::ComputePipeline,
    pub compact_visible: wgpu::ComputePipeline,
    pub gather_counts: wgpu::ComputePipeline,
    pub emit_intersections: wgpu::ComputePipeline,
    pub tile_ranges: wgpu::ComputePipeline,
    pub rasterize: wgpu::ComputePipeline,
    pub present: wgpu::ComputePipeline,
    pub quad_args: wgpu::ComputePipeline,
    pub quads_resolve: wgpu::ComputePipeline,
    pub rasterize_backward: wgpu::ComputePipeline,
    pub project_backward: wgpu::ComputePipeline,
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

/// A shader module of `body` with `shaders/common.wgsl` in front.
pub fn module(device: &wgpu::Device, name: &str, body: &str) -> wgpu::ShaderModule {
    let source = format!("{COMMON}\n{body}");
    device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(name),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    })
}

fn compile(device: &wgpu::Device, name: &str, body: &str) -> wgpu::ComputePipeline {
    let module = module(device, name, body);
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(name),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    })
}

/// A bind group for group 0 of `pipeline`, binding `resources` to bindings 0, 1, 2, ... in order.
pub fn bind(
    device: &wgpu::Device,
    pipeline: &wgpu::ComputePipeline,
    resources: &[wgpu::BindingResource],
) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry> = resources
        .iter()
        .enumerate()
        .map(|(i, r)| wgpu::BindGroupEntry {
            binding: i as u32,
            resource: r.clone(),
        })
        .collect();
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
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
