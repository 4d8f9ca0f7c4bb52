//! Handing a rendered frame to Difix without leaving the GPU: burn's wgpu backend runs on the
//! renderer's own device ([`GpuContext::burn_device`]: eframe's device in the viewer), so a frame
//! goes from the rasterizer's colour buffer into a burn tensor by GPU-side copies (one on the render
//! thread, one on the fix worker), instead of a read-back to the CPU and an upload.

use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::Tensor;

use crate::render::burn_bridge::tensor_from_buffer;
pub use crate::render::burn_bridge::SharedBackend;
use crate::render::{GpuContext, GpuError, Rasterizer};

/// A rendered frame still on the GPU: a copy of the rasterizer's colour buffer (`height · width`
/// linear RGBA f32), taken without involving burn so the render thread never waits on the model.
#[derive(Clone)]
pub struct GpuFrame {
    pub width: u32,
    pub height: u32,
    rgba: wgpu::Buffer,
    gpu: GpuContext,
}

impl GpuFrame {
    /// Copies the rasterizer's last frame into a new buffer on `gpu` (queued, not waited for);
    /// `None` before the first frame.
    pub fn capture(gpu: &GpuContext, rasterizer: &Rasterizer) -> Option<Self> {
        let (width, height) = rasterizer.frame_size()?;
        let rgba = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("frame for difix"),
            size: width as u64 * height as u64 * 16,
            usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        rasterizer.copy_image_to(gpu, &rgba, 0)?;
        Some(Self {
            width,
            height,
            rgba,
            gpu: gpu.clone(),
        })
    }

    /// The frame as a tensor on the renderer's burn device ([`GpuContext::burn_device`]): one more
    /// GPU-side copy, into memory burn owns. Runs on the fix worker's thread.
    fn tensor(&self) -> Result<Tensor<SharedBackend, 1>, GpuError> {
        let floats = self.width as usize * self.height as usize * 4;
        tensor_from_buffer(&self.gpu, &self.rgba, 0, [floats])
    }

    /// Difix's input [1, 3, height, width] in [0, 1]: the frame quantised to 8 bits exactly as the CPU
    /// path's [`crate::image_io::to_rgb8`] does, so at the frame's own size both paths fix the same
    /// picture; scaled to another working size with bicubic interpolation on the GPU (the CPU path
    /// uses Lanczos) and quantised again.
    pub fn to_input(&self, width: u32, height: u32) -> Result<Tensor<SharedBackend, 4>, GpuError> {
        let (h, w) = (self.height as usize, self.width as usize);
        let rgb = self.tensor()?.reshape([h, w, 4]).slice([0..h, 0..w, 0..3]);
        let frame = quantize(rgb).permute([2, 0, 1]).unsqueeze_dim::<4>(0);
        if (width, height) == (self.width, self.height) {
            return Ok(frame);
        }
        let options = InterpolateOptions::new(InterpolateMode::Bicubic);
        let scaled = interpolate(frame, [height as usize, width as usize], options);
        Ok(quantize(scaled))
    }
}

/// round(v · 255) / 255 of `v` clamped to [0, 1], halves away from zero as `f32::round` does.
fn quantize<const D: usize>(v: Tensor<SharedBackend, D>) -> Tensor<SharedBackend, D> {
    v.clamp(0.0, 1.0)
        .mul_scalar(255.0)
        .add_scalar(0.5)
        .floor()
        .div_scalar(255.0)
}
