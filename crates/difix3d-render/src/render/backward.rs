//! The backward pass of the rasterizer: given dL/d(colour, alpha) of every pixel of the last frame,
//! the gradients of L with respect to every splat parameter, plus the 2D-mean gradients that
//! densification reads. Two kernels (`shaders/rasterize_backward.wgsl`, `shaders/project_backward.wgsl`)
//! reuse the forward state the rasterizer keeps (sorted tile lists, projected splats, last indices).

use super::buffers::{storage_from, uniform, STORAGE};
use super::gpu::{check_items, GpuContext, GpuError};
use super::kernels::{bind, dispatch_1d};
use super::rasterize::Rasterizer;
use super::splats::GpuSplats;

/// Per-splat gradients on the GPU, in the layout of [`GpuSplats`] (flat f32 buffers).
pub struct GpuGradients {
    pub means: wgpu::Buffer,
    pub log_scales: wgpu::Buffer,
    pub rotations: wgpu::Buffer,
    pub opacity_logits: wgpu::Buffer,
    pub sh: wgpu::Buffer,
    /// dL/d(projected 2D mean) in pixels, [x, y] per splat.
    pub mean2d: wgpu::Buffer,
    /// The sums over pixels of |each pixel's part of dL/d(2D mean)|, [x, y] per splat: gsplat's
    /// `absgrad` (zeros unless [`Rasterizer::set_absgrad`] is on).
    pub mean2d_abs: wgpu::Buffer,
    pub count: u32,
    pub sh_coeffs: u32,
}

/// [`GpuGradients`] read back to the CPU.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SplatGradients {
    pub means: Vec<[f32; 3]>,
    pub log_scales: Vec<[f32; 3]>,
    /// Quaternions (w, x, y, z), before normalisation.
    pub rotations: Vec<[f32; 4]>,
    pub opacity_logits: Vec<f32>,
    /// `sh[i * coeffs + k]`, like [`crate::scene::Splats::sh`].
    pub sh: Vec<[f32; 3]>,
    pub mean2d: Vec<[f32; 2]>,
    /// See [`GpuGradients::mean2d_abs`].
    pub mean2d_abs: Vec<[f32; 2]>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackwardError {
    #[error("the backward pass needs a rendered frame of these splats first")]
    NoFrame,
    #[error("dL/d(pixels) has {got} entries, the frame has {expected} pixels")]
    Size { got: usize, expected: usize },
    #[error(transparent)]
    Gpu(#[from] GpuError),
}

/// Floats per splat of dL/d(2D mean, conic, opacity, colour) and the absolute 2D-mean sums
/// (`V_STRIDE` in `shaders/rasterize_backward.wgsl`).
const V_PROJECTED_FLOATS: u64 = 11;

fn zeroed(device: &wgpu::Device, floats: u64, label: &str) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (floats * 4).max(16).next_multiple_of(16),
        usage: STORAGE,
        mapped_at_creation: false,
    })
}

impl Rasterizer {
    /// Gradients of the last frame rendered (of `splats`) for pixel gradients `v_out`: one
    /// [d colour r, g, b, d alpha] per pixel, row-major. Buffers stay on the GPU.
    pub fn backward_gpu(
        &self,
        ctx: &GpuContext,
        splats: &GpuSplats,
        v_out: &wgpu::Buffer,
    ) -> Result<GpuGradients, BackwardError> {
        let (project_u, mut raster_u) = self.last_uniforms.ok_or(BackwardError::NoFrame)?;
        raster_u.flags[0] = u32::from(self.absgrad);
        if project_u.counts[0] != splats.count {
            return Err(BackwardError::NoFrame);
        }
        let n = splats.count as u64;
        check_items(
            &ctx.device,
            || format!("the 2D gradients of {n} splats"),
            n,
            V_PROJECTED_FLOATS * 4,
            |fit| format!("the backward pass holds at most {fit} splats on this GPU; train a smaller scene"),
        )?;
        check_items(
            &ctx.device,
            || format!("the SH gradients of {n} splats"),
            n,
            splats.sh_coeffs() as u64 * 12,
            |fit| {
                format!(
                    "the backward pass holds at most {fit} splats at SH degree {} on this GPU; train a smaller scene or at a lower SH degree",
                    splats.sh_degree
                )
            },
        )?;
        ctx.scoped("the backward pass", || {
            self.encode_backward(ctx, splats, v_out, project_u, raster_u)
        })?
    }

    fn encode_backward(
        &self,
        ctx: &GpuContext,
        splats: &GpuSplats,
        v_out: &wgpu::Buffer,
        project_u: super::uniforms::ProjectUniforms,
        raster_u: super::uniforms::RasterUniforms,
    ) -> Result<GpuGradients, BackwardError> {
        let device = &ctx.device;
        let ws = &self.ws;
        let (Some(ranges), Some(isect), Some(projected), Some(color), Some(last)) = (
            ws.ranges.get(),
            ws.isect_splats[self.sorted.tiles].get(),
            ws.projected.get(),
            ws.color.get(),
            ws.last.get(),
        ) else {
            return Err(BackwardError::NoFrame);
        };
        let n = splats.count as u64;
        let coeffs = splats.sh_coeffs() as u64;
        let v_projected = zeroed(device, n * V_PROJECTED_FLOATS, "v_projected");
        let grads = GpuGradients {
            means: zeroed(device, n * 3, "v_means"),
            log_scales: zeroed(device, n * 3, "v_log_scales"),
            rotations: zeroed(device, n * 4, "v_rotations"),
            opacity_logits: zeroed(device, n, "v_opacity_logits"),
            sh: zeroed(device, n * coeffs * 3, "v_sh"),
            mean2d: zeroed(device, n * 2, "v_mean2d"),
            mean2d_abs: zeroed(device, n * 2, "v_mean2d_abs"),
            count: splats.count,
            sh_coeffs: coeffs as u32,
        };

        let k = &self.kernels;
        let mut encoder = device.create_command_encoder(&Default::default());
        let raster_uniforms = uniform(device, &raster_u);
        let bg = bind(
            device,
            &k.rasterize_backward,
            &[
                ("u", raster_uniforms.as_entire_binding()),
                ("ranges", ranges.as_entire_binding()),
                ("isect_splats", isect.as_entire_binding()),
                ("projected_mean", projected[0].as_entire_binding()),
                ("projected_conic", projected[1].as_entire_binding()),
                ("projected_color", projected[2].as_entire_binding()),
                ("out_color", color.as_entire_binding()),
                ("out_last", last.as_entire_binding()),
                ("v_out", v_out.as_entire_binding()),
                ("v_projected", v_projected.as_entire_binding()),
            ],
        );
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("rasterize backward"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&k.rasterize_backward);
            pass.set_bind_group(0, &bg, &[]);
            let (width, height) = self.last_size;
            pass.dispatch_workgroups(width.div_ceil(16), height.div_ceil(16), 1);
        }
        let project_uniforms = uniform(device, &project_u);
        let bg = bind(
            device,
            &k.project_backward,
            &[
                ("u", project_uniforms.as_entire_binding()),
                ("means", splats.means.as_entire_binding()),
                ("log_scales", splats.log_scales.as_entire_binding()),
                ("rotations", splats.rotations.as_entire_binding()),
                ("opacity_logits", splats.opacity_logits.as_entire_binding()),
                ("sh", splats.sh.as_entire_binding()),
                ("projected_conic", projected[1].as_entire_binding()),
                ("v_projected", v_projected.as_entire_binding()),
                ("v_means", grads.means.as_entire_binding()),
                ("v_log_scales", grads.log_scales.as_entire_binding()),
                ("v_rotations", grads.rotations.as_entire_binding()),
                ("v_opacity_logits", grads.opacity_logits.as_entire_binding()),
                ("v_sh", grads.sh.as_entire_binding()),
                ("v_mean2d", grads.mean2d.as_entire_binding()),
                ("v_mean2d_abs", grads.mean2d_abs.as_entire_binding()),
            ],
        );
        dispatch_1d(&mut encoder, &k.project_backward, &bg, splats.count.div_ceil(256));
        ctx.queue.submit([encoder.finish()]);
        Ok(grads)
    }

    /// [`Self::backward_gpu`] with the pixel gradients given and the result read back.
    pub fn backward(
        &self,
        ctx: &GpuContext,
        splats: &GpuSplats,
        v_out: &[[f32; 4]],
    ) -> Result<SplatGradients, BackwardError> {
        let (width, height) = self.last_size;
        let expected = (width * height) as usize;
        if v_out.len() != expected {
            return Err(BackwardError::Size {
                got: v_out.len(),
                expected,
            });
        }
        let v_out = storage_from(&ctx.device, v_out, "v_out");
        let grads = self.backward_gpu(ctx, splats, &v_out)?;
        grads.read(ctx).map_err(BackwardError::from)
    }
}

impl GpuGradients {
    pub fn read(&self, ctx: &GpuContext) -> Result<SplatGradients, GpuError> {
        let n = self.count as u64;
        let read = |buffer: &wgpu::Buffer, floats: u64| -> Result<Vec<f32>, GpuError> {
            if floats == 0 {
                return Ok(Vec::new());
            }
            Ok(bytemuck::pod_collect_to_vec(&ctx.read_buffer(buffer, 0, floats * 4)?))
        };
        let chunks3 = |v: Vec<f32>| v.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect();
        Ok(SplatGradients {
            means: chunks3(read(&self.means, n * 3)?),
            log_scales: chunks3(read(&self.log_scales, n * 3)?),
            rotations: read(&self.rotations, n * 4)?
                .chunks_exact(4)
                .map(|c| [c[0], c[1], c[2], c[3]])
                .collect(),
            opacity_logits: read(&self.opacity_logits, n)?,
            sh: chunks3(read(&self.sh, n * self.sh_coeffs as u64 * 3)?),
            mean2d: read(&self.mean2d, n * 2)?
                .chunks_exact(2)
                .map(|c| [c[0], c[1]])
                .collect(),
            mean2d_abs: read(&self.mean2d_abs, n * 2)?
                .chunks_exact(2)
                .map(|c| [c[0], c[1]])
                .collect(),
        })
    }
}
