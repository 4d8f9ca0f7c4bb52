//! The splat rasterizer as a burn autodiff operation, so training losses are ordinary burn code:
//! `render` takes the splat parameters as tensors and returns the image [H, W, 4] (RGB + alpha);
//! calling `backward()` on a loss of it runs the rasterizer's backward pass
//! ([`super::backward`]) and hands burn the parameter gradients.
//!
//! When burn runs on the renderer's own wgpu device ([`GpuContext::burn_device`]), the parameters,
//! the image, the pixel gradients and the parameter gradients move between burn and the rasterizer
//! by GPU-side copies ([`super::burn_bridge`]); only the 2D-mean gradients and the visibility
//! that densification needs are read back. On any other backend or device they go through the CPU.
//! The backward step reuses the rasterizer's forward state when its frame is still the last one
//! drawn, and renders it again otherwise (when something else was rendered in between).

use std::sync::{Arc, Mutex};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};

use super::backward::GpuGradients;
use super::burn_bridge::{self, buffer_from_tensor, from_shared, tensor_from_buffer, tensor_written_by};
use super::{GpuContext, GpuError, GpuSplats, RasterMode, Rasterizer, RenderOptions, RenderedImage, SplatGradients};
use crate::data::Camera;
use crate::scene::Splats;

/// The wgpu device and rasterizer a training run renders with.
pub struct SplatRenderer {
    pub gpu: GpuContext,
    /// The rasterizer constants and antialiasing every frame is drawn with.
    mode: RasterMode,
    /// Whether backward passes also gather the absolute 2D-mean gradients ([`ViewGradients::mean2d_abs`]).
    absgrad: bool,
    state: Mutex<RasterState>,
    /// What the last backward pass saw, for densification (burn's graph has no slot for it).
    last_view: Mutex<Option<ViewGradients>>,
    backward_error: Mutex<Option<String>>,
}

/// The rasterizer and the frame it drew last (id and splats), whose forward state a backward pass
/// reuses instead of rendering again.
struct RasterState {
    rasterizer: Rasterizer,
    frame: Option<(u64, Arc<GpuSplats>)>,
    next_id: u64,
}

/// The splats a frame was drawn from: on the CPU, or already in GPU buffers.
#[derive(Clone)]
enum Source {
    Cpu(Arc<Splats>),
    Gpu(Arc<GpuSplats>),
}

impl Source {
    fn len(&self) -> usize {
        match self {
            Source::Cpu(s) => s.len(),
            Source::Gpu(s) => s.count as usize,
        }
    }

    fn sh_degree(&self) -> u32 {
        match self {
            Source::Cpu(s) => s.sh_degree,
            Source::Gpu(s) => s.sh_degree,
        }
    }

    fn on_gpu(&self, gpu: &GpuContext) -> Result<Arc<GpuSplats>, GpuError> {
        Ok(match self {
            Source::Cpu(s) => Arc::new(GpuSplats::upload(gpu, s)?),
            Source::Gpu(s) => s.clone(),
        })
    }
}

/// The 2D-mean gradients of one backward pass and which splats that view drew.
#[derive(Clone, Debug)]
pub struct ViewGradients {
    pub mean2d: Vec<[f32; 2]>,
    /// gsplat's absgrad: per splat, the sums over pixels of |each pixel's part of `mean2d`| (empty
    /// unless the renderer was made with absgrad on).
    pub mean2d_abs: Vec<[f32; 2]>,
    pub visible: Vec<bool>,
    pub width: u32,
    pub height: u32,
}

impl SplatRenderer {
    /// A renderer with the viewer's rasterizer constants (INRIA's, as `difix3d render` and `eval`).
    pub fn new(gpu: GpuContext) -> Arc<Self> {
        Self::with_mode(gpu, RasterMode::default())
    }

    /// A renderer drawing in `mode` (3DGS training uses [`super::RasterConstants::Gsplat`]).
    pub fn with_mode(gpu: GpuContext, mode: RasterMode) -> Arc<Self> {
        Self::for_training(gpu, mode, false)
    }

    /// A renderer drawing in `mode` whose backward passes also gather the absolute
    /// 2D-mean gradients when `absgrad` is on (gsplat's `absgrad=True`, for densification).
    pub fn for_training(gpu: GpuContext, mode: RasterMode, absgrad: bool) -> Arc<Self> {
        let mut rasterizer = Rasterizer::new(&gpu.device);
        rasterizer.set_absgrad(absgrad);
        let state = Mutex::new(RasterState {
            rasterizer,
            frame: None,
            next_id: 0,
        });
        Arc::new(Self {
            gpu,
            mode,
            absgrad,
            state,
            last_view: Mutex::new(None),
            backward_error: Mutex::new(None),
        })
    }

    /// Why the last backward pass through the rasterizer failed (taken), if it did. burn's backward
    /// has no error channel: a failed pass registers no gradients and leaves its error here for the
    /// training step to return.
    pub fn take_backward_error(&self) -> Option<String> {
        self.backward_error.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The 2D-mean gradients of the last backward pass (taken: a second call returns `None`).
    pub fn take_view_gradients(&self) -> Option<ViewGradients> {
        self.last_view.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Renders `splats` (colour and alpha, read back).
    pub fn render_image(
        &self,
        splats: &Splats,
        camera: &Camera,
        options: &RenderOptions,
    ) -> Result<RenderedImage, GpuError> {
        Ok(self.render_frame(splats, camera, options)?.1)
    }

    /// Renders and remembers the frame; returns its id and the image.
    fn render_frame(
        &self,
        splats: &Splats,
        camera: &Camera,
        options: &RenderOptions,
    ) -> Result<(u64, RenderedImage), GpuError> {
        let gpu_splats = Arc::new(GpuSplats::upload(&self.gpu, splats)?);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let id = state.draw(&self.gpu, gpu_splats, camera, options, self.mode)?;
        Ok((id, state.rasterizer.read_image(&self.gpu)?))
    }

    /// Renders splats already on the GPU and copies the image [H, W, 4] into a tensor on the shared
    /// burn device; returns the frame's id and the image.
    fn render_frame_on_gpu(
        &self,
        splats: Arc<GpuSplats>,
        camera: &Camera,
        options: &RenderOptions,
    ) -> Result<(u64, Tensor<burn_bridge::SharedBackend, 3>), GpuError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let id = state.draw(&self.gpu, splats, camera, options, self.mode)?;
        let shape = [camera.height as usize, camera.width as usize, 4];
        let image = tensor_written_by(&self.gpu, shape, |dst, offset, _| {
            state.rasterizer.copy_image_to(&self.gpu, dst, offset);
        })?;
        Ok((id, image))
    }

    /// The gradients of frame `id` for pixel gradients `v_out` (an [H, W, 4] f32 buffer), left on
    /// the GPU: reuses the rasterizer's state when that frame is still the last one drawn, and renders
    /// it again otherwise. Reads back the 2D-mean gradients and visibility for densification.
    fn backward_on_gpu(
        &self,
        id: u64,
        source: &Source,
        camera: &Camera,
        options: &RenderOptions,
        v_out: &wgpu::Buffer,
    ) -> Result<GpuGradients, String> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *state;
        let current = state.frame.as_ref().is_some_and(|(last, _)| *last == id);
        if !current {
            let splats = source.on_gpu(&self.gpu).map_err(|e| e.to_string())?;
            state
                .draw(&self.gpu, splats, camera, options, self.mode)
                .map_err(|e| e.to_string())?;
        }
        let Some((_, gpu_splats)) = &state.frame else {
            return Err("no frame to differentiate".into());
        };
        let grads = state
            .rasterizer
            .backward_gpu(&self.gpu, gpu_splats, v_out)
            .map_err(|e| e.to_string())?;
        let n = grads.count as u64;
        let read_pairs = |buffer: &wgpu::Buffer| -> Result<Vec<[f32; 2]>, String> {
            if n == 0 {
                return Ok(Vec::new());
            }
            let floats: Vec<f32> =
                bytemuck::pod_collect_to_vec(&self.gpu.read_buffer(buffer, 0, n * 8).map_err(|e| e.to_string())?);
            Ok(floats.chunks_exact(2).map(|c| [c[0], c[1]]).collect())
        };
        let mean2d = read_pairs(&grads.mean2d)?;
        let mean2d_abs = if self.absgrad {
            read_pairs(&grads.mean2d_abs)?
        } else {
            Vec::new()
        };
        let visible = state
            .rasterizer
            .read_visible(&self.gpu, gpu_splats.count)
            .map_err(|e| e.to_string())?;
        *self.last_view.lock().unwrap_or_else(|p| p.into_inner()) = Some(ViewGradients {
            mean2d,
            mean2d_abs,
            visible,
            width: camera.width,
            height: camera.height,
        });
        Ok(grads)
    }

    /// [`Self::backward_on_gpu`] with the pixel gradients and the result on the CPU.
    fn backward(
        &self,
        id: u64,
        source: &Source,
        camera: &Camera,
        options: &RenderOptions,
        v_out: &[[f32; 4]],
    ) -> Result<SplatGradients, String> {
        let expected = (camera.width * camera.height) as usize;
        if v_out.len() != expected {
            return Err(format!("{} pixel gradients for a {expected}-pixel frame", v_out.len()));
        }
        let v_out = super::storage_from(&self.gpu.device, v_out, "v_out");
        let grads = self.backward_on_gpu(id, source, camera, options, &v_out)?;
        grads.read(&self.gpu).map_err(|e| e.to_string())
    }
}

impl RasterState {
    /// Renders `splats` and remembers them as the last frame; returns its id.
    fn draw(
        &mut self,
        gpu: &GpuContext,
        splats: Arc<GpuSplats>,
        camera: &Camera,
        options: &RenderOptions,
        mode: RasterMode,
    ) -> Result<u64, GpuError> {
        self.frame = None;
        self.rasterizer.set_mode(mode);
        self.rasterizer.render(gpu, &splats, camera, options)?;
        self.next_id += 1;
        self.frame = Some((self.next_id, splats));
        Ok(self.next_id)
    }
}

/// Splat parameters as tensors, in the activation-free form the optimiser updates: means [N, 3],
/// log scales [N, 3], quaternions (w, x, y, z) [N, 4], opacity logits [N, 1], SH [N, K * 3].
#[derive(Clone, Debug)]
pub struct SplatTensors<B: Backend> {
    pub means: Tensor<B, 2>,
    pub log_scales: Tensor<B, 2>,
    pub rotations: Tensor<B, 2>,
    pub opacity_logits: Tensor<B, 2>,
    pub sh: Tensor<B, 2>,
    pub sh_degree: u32,
}

fn flat<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Vec<f32> {
    t.clone()
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("a float tensor converts to f32")
}

fn rows<const N: usize>(v: &[f32]) -> Vec<[f32; N]> {
    v.chunks_exact(N).map(|c| std::array::from_fn(|i| c[i])).collect()
}

impl<B: Backend> SplatTensors<B> {
    pub fn from_splats(splats: &Splats, device: &B::Device) -> Self {
        let n = splats.len();
        let k = crate::scene::sh_coeffs(splats.sh_degree);
        let t = |v: Vec<f32>, cols: usize| Tensor::<B, 2>::from_data(TensorData::new(v, [n, cols]), device);
        Self {
            means: t(splats.means.iter().flatten().copied().collect(), 3),
            log_scales: t(splats.log_scales.iter().flatten().copied().collect(), 3),
            rotations: t(splats.rotations.iter().flatten().copied().collect(), 4),
            opacity_logits: t(splats.opacity_logits.clone(), 1),
            sh: t(splats.sh.iter().flatten().copied().collect(), k * 3),
            sh_degree: splats.sh_degree,
        }
    }

    /// The parameters read back into a [`Splats`] (for rendering, saving, exporting).
    pub fn to_splats(&self) -> Splats {
        Splats {
            means: rows(&flat(&self.means)),
            log_scales: rows(&flat(&self.log_scales)),
            rotations: rows(&flat(&self.rotations)),
            opacity_logits: flat(&self.opacity_logits),
            sh_degree: self.sh_degree,
            sh: rows(&flat(&self.sh)),
        }
    }
}

#[derive(Clone)]
struct RenderState<B: Backend> {
    renderer: Arc<SplatRenderer>,
    frame: u64,
    source: Source,
    camera: Camera,
    options: RenderOptions,
    device: B::Device,
}

impl<B: Backend> std::fmt::Debug for RenderState<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RenderState({} splats, {})", self.source.len(), self.camera.name)
    }
}

#[derive(Debug)]
struct RenderBackward;

impl<B: Backend> Backward<B, 5> for RenderBackward {
    type State = RenderState<B>;

    fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, _: &mut Checkpointer) {
        let state = ops.state;
        let grad_out = Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(grads.consume::<B>(&ops.node)));
        let values = match &state.source {
            Source::Gpu(_) => gradients_on_gpu(&state, grad_out),
            Source::Cpu(_) => gradients_through_cpu(&state, grad_out),
        };
        // burn's backward has no error channel: leave the error for the step (see
        // `SplatRenderer::take_backward_error`) and register nothing.
        let values = match values {
            Ok(values) => values,
            Err(e) => {
                *state.renderer.backward_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                return;
            }
        };
        for (parent, value) in ops.parents.iter().zip(values) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, value);
            }
        }
    }
}

/// Columns of each parameter tensor: means, log scales, rotations, opacity logits, SH.
fn param_columns(sh_degree: u32) -> [usize; 5] {
    [3, 3, 4, 1, crate::scene::sh_coeffs(sh_degree) * 3]
}

fn gradients_through_cpu<B: Backend>(
    state: &RenderState<B>,
    grad_out: Tensor<B, 3>,
) -> Result<[B::FloatTensorPrimitive; 5], String> {
    let v = flat(&grad_out);
    let g = state.renderer.backward(
        state.frame,
        &state.source,
        &state.camera,
        &state.options,
        &rows::<4>(&v),
    )?;
    let n = state.source.len();
    let values: [Vec<f32>; 5] = [
        g.means.into_iter().flatten().collect(),
        g.log_scales.into_iter().flatten().collect(),
        g.rotations.into_iter().flatten().collect(),
        g.opacity_logits,
        g.sh.into_iter().flatten().collect(),
    ];
    let columns = param_columns(state.source.sh_degree());
    let mut values = values.into_iter().zip(columns);
    Ok(std::array::from_fn(|_| {
        let (v, cols) = values.next().expect("five parameter groups");
        Tensor::<B, 2>::from_data(TensorData::new(v, [n, cols]), &state.device)
            .into_primitive()
            .tensor()
    }))
}

fn gradients_on_gpu<B: Backend>(
    state: &RenderState<B>,
    grad_out: Tensor<B, 3>,
) -> Result<[B::FloatTensorPrimitive; 5], String> {
    let gpu = &state.renderer.gpu;
    let shared = burn_bridge::to_shared(grad_out).ok_or("a GPU frame's gradient is not on the shared backend")?;
    let v_out = buffer_from_tensor(gpu, shared, "v_out").map_err(|e| e.to_string())?;
    let g = state
        .renderer
        .backward_on_gpu(state.frame, &state.source, &state.camera, &state.options, &v_out)?;
    let n = state.source.len();
    let buffers = [&g.means, &g.log_scales, &g.rotations, &g.opacity_logits, &g.sh];
    let mut values = Vec::with_capacity(5);
    for (buffer, cols) in buffers.into_iter().zip(param_columns(state.source.sh_degree())) {
        let tensor = tensor_from_buffer(gpu, buffer, 0, [n, cols]).map_err(|e| e.to_string())?;
        let tensor = from_shared::<B, 2>(tensor).ok_or("the shared backend is not the training backend")?;
        values.push(tensor.into_primitive().tensor());
    }
    values.try_into().map_err(|_| "five parameter groups".to_string())
}

/// The parameters copied into the rasterizer's buffers on the GPU, when burn shares its device.
fn splats_on_gpu<B: Backend, C: CheckpointStrategy>(
    renderer: &SplatRenderer,
    params: &SplatTensors<Autodiff<B, C>>,
) -> Result<Option<GpuSplats>, GpuError> {
    let count = params.means.dims()[0];
    if count == 0 || !burn_bridge::is_shared::<B>(&renderer.gpu, &params.means.device()) {
        return Ok(None);
    }
    let buffer = |t: &Tensor<Autodiff<B, C>, 2>, label: &str| -> Result<Option<wgpu::Buffer>, GpuError> {
        match burn_bridge::to_shared(t.clone().inner()) {
            Some(shared) => buffer_from_tensor(&renderer.gpu, shared, label).map(Some),
            None => Ok(None),
        }
    };
    let (Some(means), Some(log_scales), Some(rotations), Some(opacity_logits), Some(sh)) = (
        buffer(&params.means, "means")?,
        buffer(&params.log_scales, "log_scales")?,
        buffer(&params.rotations, "rotations")?,
        buffer(&params.opacity_logits, "opacity_logits")?,
        buffer(&params.sh, "sh")?,
    ) else {
        return Ok(None);
    };
    Ok(Some(GpuSplats {
        means,
        log_scales,
        rotations,
        opacity_logits,
        sh,
        count: count as u32,
        sh_degree: params.sh_degree,
    }))
}

/// Renders the splats differentiably: the image [H, W, 4] (linear RGB + alpha).
pub fn render<B: Backend, C: CheckpointStrategy>(
    renderer: &Arc<SplatRenderer>,
    params: &SplatTensors<Autodiff<B, C>>,
    camera: &Camera,
    options: &RenderOptions,
) -> Result<Tensor<Autodiff<B, C>, 3>, GpuError> {
    // An autodiff backend runs on its inner backend's device.
    let inner_device: B::Device = params.means.device();
    let (frame, output, source) = match splats_on_gpu(renderer, params)? {
        Some(gpu_splats) => {
            let gpu_splats = Arc::new(gpu_splats);
            let (frame, image) = renderer.render_frame_on_gpu(gpu_splats.clone(), camera, options)?;
            let image = from_shared::<B, 3>(image).expect("splats_on_gpu checked the backend");
            (frame, image.into_primitive().tensor(), Source::Gpu(gpu_splats))
        }
        None => {
            let splats = Arc::new(params.to_splats());
            let (frame, image) = renderer.render_frame(&splats, camera, options)?;
            let shape = [camera.height as usize, camera.width as usize, 4];
            let values: Vec<f32> = image.rgba.into_iter().flatten().collect();
            let output = Tensor::<B, 3>::from_data(TensorData::new(values, shape), &inner_device)
                .into_primitive()
                .tensor();
            (frame, output, Source::Cpu(splats))
        }
    };
    let nodes = [
        &params.means,
        &params.log_scales,
        &params.rotations,
        &params.opacity_logits,
        &params.sh,
    ]
    .map(|t| t.clone().into_primitive().tensor().node);
    let result = match RenderBackward.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(
            RenderState {
                renderer: renderer.clone(),
                frame,
                source,
                camera: camera.clone(),
                options: *options,
                device: inner_device,
            },
            output,
        ),
        OpsKind::UnTracked(prep) => prep.finish(output),
    };
    Ok(Tensor::from_primitive(TensorPrimitive::Float(result)))
}
