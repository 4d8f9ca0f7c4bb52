//! Moving data between the renderer's wgpu buffers and burn tensors without leaving the GPU. burn's
//! wgpu backend can run on the renderer's own device and queue ([`GpuContext::burn_device`]); its
//! tensors then live in wgpu buffers of that device, and a copy between a tensor and a render buffer
//! is one `copy_buffer_to_buffer` on the shared queue. The live fix hands frames to Difix this way,
//! and training hands the splat parameters, the image and the gradients between burn and the
//! rasterizer.

use std::any::Any;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::buffers::STORAGE;
use super::{GpuContext, GpuError};

/// burn's backend on the renderer's device.
pub type SharedBackend = burn::backend::Wgpu<f32>;

/// Whether tensors of `B` on `device` live on `gpu`'s device (so the copies here apply).
pub fn is_shared<B: Backend>(gpu: &GpuContext, device: &B::Device) -> bool {
    let device: &dyn Any = device;
    device
        .downcast_ref::<burn::backend::wgpu::WgpuDevice>()
        .is_some_and(|d| *d == gpu.burn_device())
}

/// `tensor` as a tensor of the shared backend, when `B` is that backend.
pub fn to_shared<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Option<Tensor<SharedBackend, D>> {
    let boxed: Box<dyn Any> = Box::new(tensor);
    boxed.downcast::<Tensor<SharedBackend, D>>().ok().map(|t| *t)
}

/// A shared-backend tensor as a tensor of `B`, when `B` is that backend.
pub fn from_shared<B: Backend, const D: usize>(tensor: Tensor<SharedBackend, D>) -> Option<Tensor<B, D>> {
    let boxed: Box<dyn Any> = Box::new(tensor);
    boxed.downcast::<Tensor<B, D>>().ok().map(|t| *t)
}

fn error(what: &str, e: impl std::fmt::Debug) -> GpuError {
    GpuError::Device(format!("{what}: {e:?}"))
}

/// A new tensor of `shape` on `gpu`'s burn device holding the f32 values of `src` from `offset`.
pub fn tensor_from_buffer<const D: usize>(
    gpu: &GpuContext,
    src: &wgpu::Buffer,
    offset: u64,
    shape: [usize; D],
) -> Result<Tensor<SharedBackend, D>, GpuError> {
    tensor_written_by(gpu, shape, |dst, dst_offset, bytes| {
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(src, offset, dst, dst_offset, bytes);
        gpu.queue.submit([encoder.finish()]);
    })
}

/// A new tensor of `shape` on `gpu`'s burn device whose memory `write(buffer, offset, bytes)` fills
/// by submitting GPU work on `gpu`'s queue (before it returns).
pub fn tensor_written_by<const D: usize>(
    gpu: &GpuContext,
    shape: [usize; D],
    write: impl FnOnce(&wgpu::Buffer, u64, u64),
) -> Result<Tensor<SharedBackend, D>, GpuError> {
    let tensor = Tensor::<SharedBackend, D>::empty(shape, &gpu.burn_device());
    let bytes = shape.iter().product::<usize>() as u64 * 4;
    if bytes == 0 {
        return Ok(tensor);
    }
    // burn may still hold recorded work for memory this tensor now reuses: `with_buffer` submits it
    // first so the write lands after it in the queue.
    with_buffer(&tensor, |buffer, offset| write(buffer, offset, bytes))?;
    Ok(tensor)
}

/// A new storage buffer on `gpu` holding `tensor`'s values (row-major f32; at least 16 bytes, so an
/// empty tensor still binds).
pub fn buffer_from_tensor<const D: usize>(
    gpu: &GpuContext,
    tensor: Tensor<SharedBackend, D>,
    label: &str,
) -> Result<wgpu::Buffer, GpuError> {
    let bytes = tensor.shape().num_elements() as u64 * 4;
    let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.max(16).next_multiple_of(16),
        usage: STORAGE,
        mapped_at_creation: false,
    });
    if bytes == 0 {
        return Ok(buffer);
    }
    let mut tensor = tensor;
    if !tensor.clone().into_primitive().tensor().is_contiguous() {
        // An element-wise op writes a fresh row-major tensor.
        tensor = tensor.mul_scalar(1.0);
        if !tensor.clone().into_primitive().tensor().is_contiguous() {
            return Err(GpuError::Device(
                "a tensor could not be made row-major for the renderer".into(),
            ));
        }
    }
    with_buffer(&tensor, |source, offset| {
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(source, offset, &buffer, 0, bytes);
        gpu.queue.submit([encoder.finish()]);
    })?;
    Ok(buffer)
}

/// Runs `f` on the wgpu buffer and offset holding `tensor`, once burn has submitted the work it
/// recorded so far (so GPU work `f` submits is ordered after it).
fn with_buffer<const D: usize, R>(
    tensor: &Tensor<SharedBackend, D>,
    f: impl FnOnce(&wgpu::Buffer, u64) -> R,
) -> Result<R, GpuError> {
    let primitive = tensor.clone().into_primitive().tensor();
    primitive
        .client
        .flush()
        .map_err(|e| error("burn could not submit its work", e))?;
    let resource = primitive
        .client
        .get_resource(primitive.handle.clone())
        .map_err(|e| error("burn has no buffer for a tensor", e))?;
    let resource = resource.resource();
    Ok(f(&resource.buffer, resource.offset))
}
