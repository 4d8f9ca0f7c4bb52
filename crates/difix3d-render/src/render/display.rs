//! The display path of [`super::Rasterizer::render_display`]: after the shared projection and depth
//! sort, the visible splats are drawn by the hardware rasterizer, one triangle each, with blending
//! (`shaders/quad_args.wgsl`, `shaders/quads.wgsl`), then resolved into the rasterizer's colour
//! buffer (`shaders/quads_resolve.wgsl`); no depth (see [`super::Rasterizer::has_depth`]). Only
//! pixels inside each splat's triangle are shaded, where the compute rasterizer evaluates every splat
//! for all 256 pixels of each tile it touches: on a CPU adapter (lavapipe) that is most of a frame. No
//! backward state is kept, so it is for viewing only.

use super::buffers::uniform;
use super::kernels::{module, Kernels};
use super::uniforms::QuadUniforms;

/// Blendable everywhere. 8-bit blending is lavapipe's fastest path (web-splat draws into the same format); 16-bit float
/// targets cost about 10% more per frame there for no visible gain (the display test's bound holds).
const TARGET_FORMAT: wgpu::TextureFormat = wgpu::TextureFormat::Rgba8Unorm;

/// Front to back "under" compositing of premultiplied colour: dst += (1 - dst.a) * src.
const UNDER: wgpu::BlendComponent = wgpu::BlendComponent {
    src_factor: wgpu::BlendFactor::OneMinusDstAlpha,
    dst_factor: wgpu::BlendFactor::One,
    operation: wgpu::BlendOperation::Add,
};

struct Target {
    size: (u32, u32),
    color: wgpu::TextureView,
}

pub(super) struct QuadPath {
    pipeline: wgpu::RenderPipeline,
    /// Indirect draw arguments: six vertices per visible splat, one instance (`shaders/quad_args.wgsl`).
    draw_args: wgpu::Buffer,
    target: Option<Target>,
}

impl QuadPath {
    pub(super) fn new(device: &wgpu::Device) -> Self {
        let shader = module(device, "quads", include_str!("../../shaders/quads.wgsl"));
        let target = Some(wgpu::ColorTargetState {
            format: TARGET_FORMAT,
            blend: Some(wgpu::BlendState {
                color: UNDER,
                alpha: UNDER,
            }),
            write_mask: wgpu::ColorWrites::ALL,
        });
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("quads"),
            layout: None,
            vertex: wgpu::VertexState {
                module: &shader,
                entry_point: Some("vs_main"),
                compilation_options: Default::default(),
                buffers: &[],
            },
            primitive: wgpu::PrimitiveState {
                topology: wgpu::PrimitiveTopology::TriangleList,
                ..Default::default()
            },
            depth_stencil: None,
            multisample: Default::default(),
            fragment: Some(wgpu::FragmentState {
                module: &shader,
                entry_point: Some("fs_main"),
                compilation_options: Default::default(),
                targets: &[target],
            }),
            multiview_mask: None,
            cache: None,
        });
        let draw_args = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("quad draw args"),
            size: 16,
            usage: wgpu::BufferUsages::INDIRECT | wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        Self {
            pipeline,
            draw_args,
            target: None,
        }
    }

    fn target(&mut self, device: &wgpu::Device, (width, height): (u32, u32)) -> &Target {
        if self.target.as_ref().is_none_or(|t| t.size != (width, height)) {
            let color = device
                .create_texture(&wgpu::TextureDescriptor {
                    label: Some("quad colour"),
                    size: wgpu::Extent3d {
                        width,
                        height,
                        depth_or_array_layers: 1,
                    },
                    mip_level_count: 1,
                    sample_count: 1,
                    dimension: wgpu::TextureDimension::D2,
                    format: TARGET_FORMAT,
                    usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::TEXTURE_BINDING,
                    view_formats: &[],
                })
                .create_view(&Default::default());
            self.target = Some(Target {
                size: (width, height),
                color,
            });
        }
        self.target.as_ref().expect("the target was just made")
    }

    /// Records the draw of the first `visible_count[0]` splats of `sorted_ids` (front to back) and
    /// the resolve into `color` (the rasterizer's output buffer, `width · height` pixels).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn encode(
        &mut self,
        device: &wgpu::Device,
        kernels: &Kernels,
        encoder: &mut wgpu::CommandEncoder,
        projected: &[wgpu::Buffer; 3],
        sorted_ids: &wgpu::Buffer,
        visible_count: &wgpu::Buffer,
        raster_uniforms: &wgpu::Buffer,
        color: &wgpu::Buffer,
        (width, height): (u32, u32),
        max_alpha: f32,
    ) {
        {
            let args_bg = super::kernels::bind(
                device,
                &kernels.quad_args,
                &[
                    ("visible_count", visible_count.as_entire_binding()),
                    ("draw_args", self.draw_args.as_entire_binding()),
                ],
            );
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("quad args"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&kernels.quad_args);
            pass.set_bind_group(0, &args_bg, &[]);
            pass.dispatch_workgroups(1, 1, 1);
        }
        let quad_uniforms = uniform(device, &QuadUniforms::new(width as f32, height as f32, max_alpha));
        let draw_bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &self.pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: quad_uniforms.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: projected[0].as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: projected[1].as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: projected[2].as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 4,
                    resource: sorted_ids.as_entire_binding(),
                },
            ],
        });
        let pipeline = self.pipeline.clone();
        let draw_args = self.draw_args.clone();
        let target = self.target(device, (width, height));
        let clear = wgpu::Operations {
            load: wgpu::LoadOp::Clear(wgpu::Color::TRANSPARENT),
            store: wgpu::StoreOp::Store,
        };
        {
            let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
                label: Some("quads"),
                color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                    view: &target.color,
                    depth_slice: None,
                    resolve_target: None,
                    ops: clear,
                })],
                depth_stencil_attachment: None,
                timestamp_writes: None,
                occlusion_query_set: None,
                multiview_mask: None,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &draw_bg, &[]);
            pass.draw_indirect(&draw_args, 0);
        }
        let resolve_bg = super::kernels::bind(
            device,
            &kernels.quads_resolve,
            &[
                ("u", raster_uniforms.as_entire_binding()),
                ("color_target", wgpu::BindingResource::TextureView(&target.color)),
                ("out_color", color.as_entire_binding()),
            ],
        );
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("quads resolve"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&kernels.quads_resolve);
        pass.set_bind_group(0, &resolve_bg, &[]);
        pass.dispatch_workgroups(width.div_ceil(16), height.div_ceil(16), 1);
    }
}
