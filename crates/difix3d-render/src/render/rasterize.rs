//! The forward tile rasterizer: project -> depth sort -> emit tile intersections -> tile sort ->
//! tile ranges -> rasterize. The same algorithm and constants as 3DGS/gsplat (see `shaders/`).
//!
//! Every intermediate buffer stays alive after a frame (projected splats, sorted intersections, tile
//! ranges, per-pixel last index), which is the forward state a backward pass reads.

use std::time::{Duration, Instant};

use super::buffers::{uniform, Growable};
use super::display::QuadPath;
use super::gpu::{check_binding, check_items, GpuContext, GpuError};
use super::kernels::{bind, dispatch_1d, Kernels};
use super::sort::{bits_for, encode_exclusive_scan, encode_radix_sort, SortLen, SortScratch};
use super::splats::GpuSplats;
use super::uniforms::{EmitUniforms, LengthUniforms, PresentUniforms, ProjectUniforms, RasterUniforms};
use crate::data::Camera;

pub const TILE_SIZE: u32 = 16;
/// Bytes per splat of each plane of the projection's output (one `vec4<f32>`).
const PLANE_BYTES: u64 = 16;

/// What to draw beyond the camera.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RenderOptions {
    /// SH degree to evaluate; clamped to the degree the scene stores.
    pub sh_degree: u32,
    pub background: [f32; 3],
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            sh_degree: 3,
            background: [0.0; 3],
        }
    }
}

/// The rasterizer constants on which the reference implementations differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RasterConstants {
    /// INRIA 3DGS's (the viewer's): screen box 3 sigma of the 2D covariance's major axis, alpha
    /// clamped at 0.99.
    #[default]
    Inria,
    /// gsplat 1.5.3's (3DGS training): splats with opacity below 1/255 culled, the opacity-aware
    /// per-axis box `ceil(min(3.33, sqrt(2 ln(255 o))) sqrt(Σ_ii))`, alpha clamped at 0.999.
    Gsplat,
}

impl RasterConstants {
    fn shader_mode(self) -> u32 {
        match self {
            RasterConstants::Inria => 0,
            RasterConstants::Gsplat => 1,
        }
    }

    pub fn max_alpha(self) -> f32 {
        match self {
            RasterConstants::Inria => 0.99,
            RasterConstants::Gsplat => 0.999,
        }
    }
}

/// How a renderer draws: the rasterizer constants and whether it is antialiased.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RasterMode {
    pub constants: RasterConstants,
    /// gsplat's `rasterize_mode="antialiased"` (see [`Rasterizer::set_antialiased`]).
    pub antialiased: bool,
}

/// Counts and (when profiling) per-stage wall times of one frame.
#[derive(Clone, Debug, Default)]
pub struct FrameStats {
    pub visible_splats: u32,
    pub intersections: u32,
    /// Only filled in by [`Rasterizer::render_profiled`], which waits for the GPU after every stage.
    pub project: Duration,
    /// Both sorts: `depth_sort` + `tile_sort`.
    pub sort: Duration,
    /// Depth sort of the splats, their tile counts in that order, the scan and its readback.
    pub depth_sort: Duration,
    /// Emitting (tile, splat) pairs, the tile sort and the tile ranges.
    pub tile_sort: Duration,
    pub rasterize: Duration,
}

/// A rendered frame copied to the CPU (defined beside the image I/O that turns it into 8-bit RGB).
/// Depth stays on the GPU; the viewer reads single pixels of it with [`Rasterizer::read_depth_at`].
pub use crate::image_io::RenderedImage;

/// The projection's per-splat output as three planes of `vec4<f32>` (structure of arrays, so each
/// fits in one storage binding for scenes of millions of splats; see `shaders/common.wgsl`).
#[derive(Default)]
pub(super) struct ProjectedPlanes {
    /// Pixel-space x, y, view-space depth, opacity.
    pub(super) mean: Growable,
    /// Inverse 2D covariance (a, b, c) and the screen radius (0: culled).
    pub(super) conic: Growable,
    /// View-dependent RGB from SH (w unused).
    pub(super) color: Growable,
}

impl ProjectedPlanes {
    fn ensure(&mut self, device: &wgpu::Device, n: u64) -> Result<[wgpu::Buffer; 3], GpuError> {
        Ok([
            self.mean.ensure(device, n * PLANE_BYTES, "projected means")?.clone(),
            self.conic.ensure(device, n * PLANE_BYTES, "projected conics")?.clone(),
            self.color.ensure(device, n * PLANE_BYTES, "projected colours")?.clone(),
        ])
    }

    /// The three planes of the last frame, in binding order (mean, conic, colour).
    pub(super) fn get(&self) -> Option<[&wgpu::Buffer; 3]> {
        Some([self.mean.get()?, self.conic.get()?, self.color.get()?])
    }

    fn capacity(&self) -> u64 {
        self.mean.capacity() + self.conic.capacity() + self.color.capacity()
    }
}

/// Per-frame working memory, reused across frames.
#[derive(Default)]
pub(super) struct Workspace {
    pub(super) projected: ProjectedPlanes,
    pub(super) tile_counts: Growable,
    pub(super) tile_rects: Growable,
    pub(super) depth_keys: [Growable; 2],
    pub(super) depth_ids: [Growable; 2],
    pub(super) sorted_counts: Growable,
    pub(super) visible_slots: Growable,
    pub(super) visible_count: Growable,
    pub(super) isect_tiles: [Growable; 2],
    pub(super) isect_splats: [Growable; 2],
    pub(super) ranges: Growable,
    pub(super) color: Growable,
    pub(super) depth: Growable,
    pub(super) last: Growable,
    pub(super) scratch: SortScratch,
    /// Block sums of the frame's own scans (visible slots, tile-count offsets).
    pub(super) scratch_scan: Vec<Growable>,
}

impl Workspace {
    fn capacity(&self) -> u64 {
        let singles = [
            &self.tile_counts,
            &self.tile_rects,
            &self.sorted_counts,
            &self.visible_slots,
            &self.visible_count,
            &self.ranges,
            &self.color,
            &self.depth,
            &self.last,
        ];
        let pairs = [&self.depth_keys, &self.depth_ids, &self.isect_tiles, &self.isect_splats];
        singles.iter().map(|g| g.capacity()).sum::<u64>()
            + pairs.iter().flat_map(|p| p.iter()).map(Growable::capacity).sum::<u64>()
            + self.scratch.capacity()
            + self.projected.capacity()
            + self.scratch_scan.iter().map(Growable::capacity).sum::<u64>()
    }
}

/// Which of the ping-pong buffers hold the sorted results of the last frame.
#[derive(Clone, Copy, Default)]
pub(super) struct Sorted {
    pub(super) depth: usize,
    pub(super) tiles: usize,
}

pub struct Rasterizer {
    pub(super) kernels: Kernels,
    pub(super) ws: Workspace,
    pub(super) sorted: Sorted,
    pub(super) last_size: (u32, u32),
    /// The uniforms of the last frame, which its backward pass reuses (`None` after a display frame).
    pub(super) last_uniforms: Option<(ProjectUniforms, RasterUniforms)>,
    /// The hardware-rasterised display path, made on first use.
    quads: Option<QuadPath>,
    /// Whether the depth buffer belongs to the last frame (display frames draw none).
    depth_valid: bool,
    peak_bytes: u64,
    constants: RasterConstants,
    /// Whether backward passes also sum the per-pixel absolute 2D-mean gradients (gsplat's absgrad).
    pub(super) absgrad: bool,
    /// gsplat's `rasterize_mode="antialiased"` (see [`Rasterizer::set_antialiased`]).
    antialiased: bool,
}

impl Rasterizer {
    pub fn new(device: &wgpu::Device) -> Self {
        Self {
            kernels: Kernels::new(device),
            ws: Workspace::default(),
            sorted: Sorted::default(),
            last_size: (0, 0),
            last_uniforms: None,
            quads: None,
            depth_valid: false,
            peak_bytes: 0,
            constants: RasterConstants::default(),
            absgrad: false,
            antialiased: false,
        }
    }

    /// The constants the next frames are drawn with (INRIA's until set).
    pub fn set_constants(&mut self, constants: RasterConstants) {
        self.constants = constants;
    }

    /// The constants and antialiasing the next frames are drawn with.
    pub fn set_mode(&mut self, mode: RasterMode) {
        self.constants = mode.constants;
        self.antialiased = mode.antialiased;
    }

    /// Whether the next frames are drawn antialiased, as gsplat's `rasterize_mode="antialiased"`
    /// (Mip-Splatting's 2D filter): each splat's opacity is scaled by
    /// `sqrt(det(Σ2D) / det(Σ2D + 0.3 I))`, so the screen-space dilation no longer thickens small
    /// splats (off until set). A scene trained this way must be drawn this way.
    pub fn set_antialiased(&mut self, antialiased: bool) {
        self.antialiased = antialiased;
    }

    /// Whether the next backward passes also sum, per splat, the absolute values of each pixel's
    /// contribution to dL/d(2D mean) (gsplat's `absgrad`, AbsGS), into
    /// [`GpuGradients::mean2d_abs`](super::backward::GpuGradients::mean2d_abs) (off until set;
    /// zeros when off).
    pub fn set_absgrad(&mut self, absgrad: bool) {
        self.absgrad = absgrad;
    }

    /// Renders one frame into the rasterizer's output buffers (see [`Rasterizer::read_image`]).
    pub fn render(
        &mut self,
        ctx: &GpuContext,
        splats: &GpuSplats,
        camera: &Camera,
        opts: &RenderOptions,
    ) -> Result<FrameStats, GpuError> {
        self.render_inner(ctx, splats, camera, opts, false, false)
    }

    /// Renders one frame for the screen (the viewer) by the path that is faster on this adapter:
    /// [`Rasterizer::render_display`] on a CPU adapter (lavapipe, 1280x720 bonsai: 0.29 s against
    /// the compute path's 0.8 s), the compute tile rasterizer of [`Rasterizer::render`] on a GPU
    /// (an H200, 1920x1080 bonsai: 5.5 ms against the display path's 12.5 ms). BENCHMARKS.md has both.
    pub fn render_for_screen(
        &mut self,
        ctx: &GpuContext,
        splats: &GpuSplats,
        camera: &Camera,
        opts: &RenderOptions,
    ) -> Result<FrameStats, GpuError> {
        let display = ctx.is_cpu_adapter();
        self.render_inner(ctx, splats, camera, opts, false, display)
    }

    /// Renders one frame for looking at (the viewer): the same projection, depth order and alpha
    /// rule, but drawn as instanced quads with hardware blending (see `render/display.rs`) instead
    /// of the compute tile rasterizer, which is far faster where pixels are expensive (a CPU adapter).
    /// Output as [`Rasterizer::render`] (colour and alpha for `present`, `copy_image_to`,
    /// `read_image`), at 16-bit float blending precision and without the 1e-4 transmittance stop; no
    /// depth ([`Rasterizer::has_depth`] is false until a [`Rasterizer::render`]), no backward state (a
    /// backward pass after it is [`super::backward::BackwardError::NoFrame`]), and the stats count
    /// no intersections.
    pub fn render_display(
        &mut self,
        ctx: &GpuContext,
        splats: &GpuSplats,
        camera: &Camera,
        opts: &RenderOptions,
    ) -> Result<FrameStats, GpuError> {
        self.render_inner(ctx, splats, camera, opts, false, true)
    }

    /// [`Rasterizer::render_display`] timed per stage like [`Rasterizer::render_profiled`]
    /// (`depth_sort` then covers the compaction and the sort, `rasterize` the draw and resolve).
    pub fn render_display_profiled(
        &mut self,
        ctx: &GpuContext,
        splats: &GpuSplats,
        camera: &Camera,
        opts: &RenderOptions,
    ) -> Result<FrameStats, GpuError> {
        self.render_inner(ctx, splats, camera, opts, true, true)
    }

    /// Like [`Rasterizer::render`] but waits for the GPU after each stage to time it. Slower; for benchmarks.
    pub fn render_profiled(
        &mut self,
        ctx: &GpuContext,
        splats: &GpuSplats,
        camera: &Camera,
        opts: &RenderOptions,
    ) -> Result<FrameStats, GpuError> {
        self.render_inner(ctx, splats, camera, opts, true, false)
    }

    fn render_inner(
        &mut self,
        ctx: &GpuContext,
        splats: &GpuSplats,
        camera: &Camera,
        opts: &RenderOptions,
        profile: bool,
        display: bool,
    ) -> Result<FrameStats, GpuError> {
        check_frame_size(&ctx.device, camera.width.max(1), camera.height.max(1), display)?;
        ctx.scoped("rendering a frame", || {
            self.encode_frame(ctx, splats, camera, opts, profile, display)
        })?
    }

    fn encode_frame(
        &mut self,
        ctx: &GpuContext,
        splats: &GpuSplats,
        camera: &Camera,
        opts: &RenderOptions,
        profile: bool,
        display: bool,
    ) -> Result<FrameStats, GpuError> {
        let device = &ctx.device;
        let k = &self.kernels;
        let ws = &mut self.ws;
        let n = splats.count;
        let (width, height) = (camera.width.max(1), camera.height.max(1));
        let tiles_x = width.div_ceil(TILE_SIZE);
        let tiles_y = height.div_ceil(TILE_SIZE);
        let num_tiles = tiles_x * tiles_y;
        let pixels = (width * height) as u64;
        let mut stats = FrameStats::default();
        self.last_size = (width, height);

        // Stage 1: projection.
        let t0 = Instant::now();
        let nb = n as u64;
        let projected = ws.projected.ensure(device, nb)?;
        let tile_counts = ws.tile_counts.ensure(device, nb * 4, "tile counts")?.clone();
        let tile_rects = ws.tile_rects.ensure(device, nb * 8, "tile rects")?.clone();
        let depth_keys = [
            ws.depth_keys[0].ensure(device, nb * 4, "depth keys")?.clone(),
            ws.depth_keys[1].ensure(device, nb * 4, "depth keys")?.clone(),
        ];
        let depth_ids = [
            ws.depth_ids[0].ensure(device, nb * 4, "depth ids")?.clone(),
            ws.depth_ids[1].ensure(device, nb * 4, "depth ids")?.clone(),
        ];
        let sorted_counts = ws
            .sorted_counts
            .ensure(device, (nb + 2) * 4, "sorted tile counts")?
            .clone();
        let visible_slots = ws.visible_slots.ensure(device, (nb + 1) * 4, "visible slots")?.clone();
        let visible_count = ws.visible_count.ensure(device, 16, "visible count")?.clone();

        let camera_from_world = glam::Mat4::from(camera.camera_from_world());
        let position = camera.position();
        let project_values = ProjectUniforms {
            camera_from_world: camera_from_world.to_cols_array_2d(),
            camera_position: [position.x, position.y, position.z, 0.0],
            intrinsics: [camera.fx, camera.fy, camera.cx, camera.cy],
            size: [width, height, tiles_x, tiles_y],
            counts: [
                n,
                opts.sh_degree.min(splats.sh_degree),
                splats.sh_coeffs(),
                self.constants.shader_mode() | if self.antialiased { 2 } else { 0 },
            ],
            chunk: [0, n, 0, 0],
        };
        let mut encoder = device.create_command_encoder(&Default::default());
        // One dispatch per chunk of splats whose SH coefficients fit in one binding.
        let chunk_len = splats.sh_chunk_len(device);
        let mut first = 0;
        while first < n {
            let count = chunk_len.min(n - first);
            let chunk_uniforms = uniform(
                device,
                &ProjectUniforms {
                    chunk: [first, first + count, 0, 0],
                    ..project_values
                },
            );
            let bg = bind(
                device,
                &k.project,
                &[
                    ("u", chunk_uniforms.as_entire_binding()),
                    ("means", splats.means.as_entire_binding()),
                    ("log_scales", splats.log_scales.as_entire_binding()),
                    ("rotations", splats.rotations.as_entire_binding()),
                    ("opacity_logits", splats.opacity_logits.as_entire_binding()),
                    ("sh", splats.sh_binding(first, count)),
                    ("projected_mean", projected[0].as_entire_binding()),
                    ("projected_conic", projected[1].as_entire_binding()),
                    ("projected_color", projected[2].as_entire_binding()),
                    ("tile_counts", tile_counts.as_entire_binding()),
                    ("depth_keys", depth_keys[0].as_entire_binding()),
                    ("depth_ids", depth_ids[0].as_entire_binding()),
                    ("tile_rects", tile_rects.as_entire_binding()),
                ],
            );
            dispatch_1d(&mut encoder, &k.project, &bg, count.div_ceil(256));
            first += count;
        }
        if profile {
            ctx.queue.submit([encoder.finish()]);
            ctx.wait()?;
            stats.project = t0.elapsed();
            encoder = device.create_command_encoder(&Default::default());
        }

        // Stage 2: compact the visible splats, sort them by depth, then lay out their tile counts in
        // that order and scan them.
        let t1 = Instant::now();
        let counts_uniforms = uniform(device, &LengthUniforms::new(n));
        let bg = bind(
            device,
            &k.visible_flags,
            &[
                ("u", counts_uniforms.as_entire_binding()),
                ("tile_counts", tile_counts.as_entire_binding()),
                ("flags", visible_slots.as_entire_binding()),
            ],
        );
        dispatch_1d(&mut encoder, &k.visible_flags, &bg, (n + 1).div_ceil(256));
        encode_exclusive_scan(device, k, &mut encoder, &visible_slots, n + 1, &mut ws.scratch_scan, 0)?;
        let bg = bind(
            device,
            &k.compact_visible,
            &[
                ("u", counts_uniforms.as_entire_binding()),
                ("tile_counts", tile_counts.as_entire_binding()),
                ("slots", visible_slots.as_entire_binding()),
                ("keys_in", depth_keys[0].as_entire_binding()),
                ("keys_out", depth_keys[1].as_entire_binding()),
                ("ids_out", depth_ids[1].as_entire_binding()),
                ("visible", visible_count.as_entire_binding()),
            ],
        );
        dispatch_1d(&mut encoder, &k.compact_visible, &bg, (n + 1).div_ceil(256));
        // The compacted pairs start in buffers 1.
        let sorted_in = encode_radix_sort(
            device,
            k,
            &mut encoder,
            [&depth_keys[1], &depth_keys[0]],
            [&depth_ids[1], &depth_ids[0]],
            SortLen::Gpu {
                max: n,
                count: &visible_count,
            },
            32,
            &mut ws.scratch,
        )?;
        let d = 1 - sorted_in;
        self.sorted.depth = d;
        let bgc = opts.background;
        let raster_values = RasterUniforms {
            width,
            height,
            tiles_x,
            max_alpha: self.constants.max_alpha(),
            background: [bgc[0], bgc[1], bgc[2], 0.0],
            flags: [0; 4],
        };
        let raster_uniforms = uniform(device, &raster_values);

        if display {
            if profile {
                ctx.queue.submit([encoder.finish()]);
                ctx.wait()?;
                stats.depth_sort = t1.elapsed();
                stats.sort = stats.depth_sort;
                encoder = device.create_command_encoder(&Default::default());
            }
            let t2 = Instant::now();
            let color = ws.color.ensure(device, pixels * 16, "color")?.clone();
            self.last_uniforms = None;
            self.depth_valid = false;
            let quads = self.quads.get_or_insert_with(|| QuadPath::new(device));
            quads.encode(
                device,
                k,
                &mut encoder,
                &projected,
                &depth_ids[d],
                &visible_count,
                &raster_uniforms,
                &color,
                (width, height),
                self.constants.max_alpha(),
            );
            ctx.queue.submit([encoder.finish()]);
            if profile {
                ctx.wait()?;
                stats.rasterize = t2.elapsed();
            }
            self.peak_bytes = self.peak_bytes.max(ws.capacity() + splats.bytes());
            return Ok(stats);
        }
        let bg = bind(
            device,
            &k.gather_counts,
            &[
                ("u", counts_uniforms.as_entire_binding()),
                ("tile_counts", tile_counts.as_entire_binding()),
                ("depth_ids", depth_ids[d].as_entire_binding()),
                ("sorted_counts", sorted_counts.as_entire_binding()),
                ("visible", visible_count.as_entire_binding()),
            ],
        );
        dispatch_1d(&mut encoder, &k.gather_counts, &bg, (n + 2).div_ceil(256));
        encode_exclusive_scan(device, k, &mut encoder, &sorted_counts, n + 1, &mut ws.scratch_scan, 0)?;
        ctx.queue.submit([encoder.finish()]);
        // The total number of intersections decides the size of the next buffers: one small readback
        // (with the number of visible splats beside it).
        let total_bytes = ctx.read_buffer(&sorted_counts, nb * 4, 8)?;
        stats.visible_splats = u32::from_le_bytes([total_bytes[4], total_bytes[5], total_bytes[6], total_bytes[7]]);
        let m = u32::from_le_bytes([total_bytes[0], total_bytes[1], total_bytes[2], total_bytes[3]]);
        stats.intersections = m;
        let t_tiles = Instant::now();
        if profile {
            stats.depth_sort = t_tiles - t1;
        }

        // Stage 3: emit (tile, splat) pairs in depth order and sort them stably by tile.
        let mb = m as u64;
        check_binding(
            device,
            || format!("the {m} tile intersections of this view ({width}x{height}, {n} splats)"),
            mb * 4,
            "render at a smaller size, or from further away",
        )?;
        let isect_tiles = [
            ws.isect_tiles[0].ensure(device, mb * 4, "isect tiles")?.clone(),
            ws.isect_tiles[1].ensure(device, mb * 4, "isect tiles")?.clone(),
        ];
        let isect_splats = [
            ws.isect_splats[0].ensure(device, mb * 4, "isect splats")?.clone(),
            ws.isect_splats[1].ensure(device, mb * 4, "isect splats")?.clone(),
        ];
        let ranges = ws.ranges.ensure(device, num_tiles as u64 * 8, "tile ranges")?.clone();
        let mut encoder = device.create_command_encoder(&Default::default());
        let emit_uniforms = uniform(
            device,
            &EmitUniforms {
                n,
                tiles_x,
                size: [width, height],
            },
        );
        let bg = bind(
            device,
            &k.emit_intersections,
            &[
                ("u", emit_uniforms.as_entire_binding()),
                ("depth_ids", depth_ids[d].as_entire_binding()),
                ("offsets", sorted_counts.as_entire_binding()),
                ("tile_rects", tile_rects.as_entire_binding()),
                ("tile_counts", tile_counts.as_entire_binding()),
                ("isect_tiles", isect_tiles[0].as_entire_binding()),
                ("isect_splats", isect_splats[0].as_entire_binding()),
                ("projected_mean", projected[0].as_entire_binding()),
                ("projected_conic", projected[1].as_entire_binding()),
                ("visible", visible_count.as_entire_binding()),
            ],
        );
        dispatch_1d(&mut encoder, &k.emit_intersections, &bg, n.div_ceil(256));
        let t = encode_radix_sort(
            device,
            k,
            &mut encoder,
            [&isect_tiles[0], &isect_tiles[1]],
            [&isect_splats[0], &isect_splats[1]],
            SortLen::Cpu(m),
            bits_for(num_tiles),
            &mut ws.scratch,
        )?;
        self.sorted.tiles = t;
        encoder.clear_buffer(&ranges, 0, None);
        let range_uniforms = uniform(device, &LengthUniforms::new(m));
        let bg = bind(
            device,
            &k.tile_ranges,
            &[
                ("u", range_uniforms.as_entire_binding()),
                ("isect_tiles", isect_tiles[t].as_entire_binding()),
                ("ranges", ranges.as_entire_binding()),
            ],
        );
        dispatch_1d(&mut encoder, &k.tile_ranges, &bg, m.div_ceil(256));
        if profile {
            ctx.queue.submit([encoder.finish()]);
            ctx.wait()?;
            stats.sort = t1.elapsed();
            stats.tile_sort = t_tiles.elapsed();
            encoder = device.create_command_encoder(&Default::default());
        }

        // Stage 4: composite each tile.
        let t2 = Instant::now();
        let color = ws.color.ensure(device, pixels * 16, "color")?.clone();
        let depth = ws.depth.ensure(device, pixels * 4, "depth")?.clone();
        let last = ws.last.ensure(device, pixels * 4, "last index")?.clone();
        self.depth_valid = true;
        self.last_uniforms = Some((project_values, raster_values));
        let bg = bind(
            device,
            &k.rasterize,
            &[
                ("u", raster_uniforms.as_entire_binding()),
                ("ranges", ranges.as_entire_binding()),
                ("isect_splats", isect_splats[t].as_entire_binding()),
                ("projected_mean", projected[0].as_entire_binding()),
                ("projected_conic", projected[1].as_entire_binding()),
                ("projected_color", projected[2].as_entire_binding()),
                ("out_color", color.as_entire_binding()),
                ("out_depth", depth.as_entire_binding()),
                ("out_last", last.as_entire_binding()),
            ],
        );
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("rasterize"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&k.rasterize);
            pass.set_bind_group(0, &bg, &[]);
            pass.dispatch_workgroups(tiles_x, tiles_y, 1);
        }
        ctx.queue.submit([encoder.finish()]);
        if profile {
            ctx.wait()?;
            stats.rasterize = t2.elapsed();
        }
        self.peak_bytes = self.peak_bytes.max(ws.capacity() + splats.bytes());
        Ok(stats)
    }

    /// Writes the last frame into an `Rgba8Unorm` storage texture of the same size (for display).
    pub fn present(&self, ctx: &GpuContext, target: &wgpu::TextureView) {
        let (width, height) = self.last_size;
        let Some(color) = self.ws.color.get() else { return };
        let params = uniform(&ctx.device, &PresentUniforms::new(width, height));
        let bg = bind(
            &ctx.device,
            &self.kernels.present,
            &[
                ("u", params.as_entire_binding()),
                ("color", color.as_entire_binding()),
                ("target_texture", wgpu::BindingResource::TextureView(target)),
            ],
        );
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("present"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&self.kernels.present);
            pass.set_bind_group(0, &bg, &[]);
            pass.dispatch_workgroups(width.div_ceil(16), height.div_ceil(16), 1);
        }
        ctx.queue.submit([encoder.finish()]);
    }

    /// The last frame's (width, height); `None` before the first.
    pub fn frame_size(&self) -> Option<(u32, u32)> {
        self.ws.color.get().map(|_| self.last_size)
    }

    /// Copies the last frame's colour and alpha (`width · height` RGBA f32, row-major) into `dst` at
    /// `offset` on the GPU, in the queue's order; returns the frame's (width, height). Nothing to
    /// copy: `None`.
    pub fn copy_image_to(&self, ctx: &GpuContext, dst: &wgpu::Buffer, offset: u64) -> Option<(u32, u32)> {
        let (width, height) = self.last_size;
        let color = self.ws.color.get()?;
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(color, 0, dst, offset, width as u64 * height as u64 * 16);
        ctx.queue.submit([encoder.finish()]);
        Some((width, height))
    }

    /// Copies the last frame's colour and alpha to the CPU (every caller's per-frame read-back: the
    /// live fix, recording and training, so it reads nothing else).
    pub fn read_image(&self, ctx: &GpuContext) -> Result<RenderedImage, GpuError> {
        let (width, height) = self.last_size;
        let pixels = (width * height) as u64;
        let Some(color) = self.ws.color.get() else {
            return Ok(RenderedImage {
                width: 0,
                height: 0,
                rgba: Vec::new(),
            });
        };
        let rgba = ctx.read_buffer(color, 0, pixels * 16)?;
        Ok(RenderedImage {
            width,
            height,
            rgba: bytemuck::pod_collect_to_vec(&rgba),
        })
    }

    /// Whether the last frame has a depth buffer ([`Rasterizer::read_depth_at`]): frames of
    /// [`Rasterizer::render`] do, frames of [`Rasterizer::render_display`] do not.
    pub fn has_depth(&self) -> bool {
        self.depth_valid
    }

    /// Expected depth of the last frame at one pixel; `None` outside the image, where nothing was
    /// drawn, or after a display frame (see [`Rasterizer::has_depth`]).
    pub fn read_depth_at(&self, ctx: &GpuContext, x: u32, y: u32) -> Result<Option<f32>, GpuError> {
        let (width, height) = self.last_size;
        let Some(depth) = self.ws.depth.get().filter(|_| self.depth_valid) else {
            return Ok(None);
        };
        if x >= width || y >= height {
            return Ok(None);
        }
        let bytes = ctx.read_buffer(depth, (y as u64 * width as u64 + x as u64) * 4, 4)?;
        let d = f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        Ok((d > 0.0 && d.is_finite()).then_some(d))
    }

    /// Which splats the last frame drew (passed every cull and touched a tile): what densification
    /// counts as "seen by this view".
    pub fn read_visible(&self, ctx: &GpuContext, count: u32) -> Result<Vec<bool>, GpuError> {
        let Some(conics) = self.ws.projected.conic.get() else {
            return Ok(vec![false; count as usize]);
        };
        if count == 0 {
            return Ok(Vec::new());
        }
        let bytes = ctx.read_buffer(conics, 0, count as u64 * PLANE_BYTES)?;
        // The screen radius is the conic plane's w (bytes 12..16); culled splats have 0.
        Ok(bytes
            .chunks_exact(PLANE_BYTES as usize)
            .map(|r| f32::from_le_bytes([r[12], r[13], r[14], r[15]]) > 0.0)
            .collect())
    }

    /// The largest amount of GPU memory this rasterizer and the splats it drew have held at once.
    pub fn peak_bytes(&self) -> u64 {
        self.peak_bytes
    }
}

/// An error unless a `width` x `height` frame fits this device: its colour buffer in one storage
/// binding and, for the display path (`display`), its render target within the texture size limit.
/// Every render checks this; commands check their cameras with it before writing anything.
pub fn check_frame_size(device: &wgpu::Device, width: u32, height: u32, display: bool) -> Result<(), GpuError> {
    check_items(
        device,
        || format!("a {width}x{height} frame"),
        width as u64 * height as u64,
        16,
        |fit| {
            format!(
                "at most {fit} pixels fit in one frame on this GPU; render at a smaller size or a lower render scale"
            )
        },
    )?;
    let max_side = device.limits().max_texture_dimension_2d;
    if display && (width > max_side || height > max_side) {
        return Err(GpuError::TooLarge {
            what: format!("a {width}x{height} frame"),
            bytes: width.max(height) as u64,
            limit: max_side as u64,
            limit_name: "max_texture_dimension_2d, in pixels per side",
            hint: "render at a smaller size or a lower render scale".into(),
        });
    }
    Ok(())
}

/// The largest size of `width` x `height`'s aspect, at most that size, that passes
/// [`check_frame_size`] for the display path (the viewer renders its window at this size when the
/// window times the render scale is more than the GPU can hold).
pub fn fit_frame_size(device: &wgpu::Device, width: u32, height: u32) -> (u32, u32) {
    let max_pixels = super::gpu::binding_limit(device) / 16;
    let max_side = device.limits().max_texture_dimension_2d;
    let (w, h) = (width.max(1) as f64, height.max(1) as f64);
    let scale = (max_pixels as f64 / (w * h))
        .sqrt()
        .min(max_side as f64 / w.max(h))
        .min(1.0);
    let fit = |side: f64| ((side * scale).floor() as u32).clamp(1, max_side);
    (fit(w), fit(h))
}
