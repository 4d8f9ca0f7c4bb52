//! The splat rasterizer as a burn autodiff operation, so training losses are ordinary burn code:
//! `render` takes the splat parameters as tensors and returns the image [H, W, 4] (RGB + alpha);
//! calling `backward()` on a loss of it runs the rasterizer's backward pass
//! (`render/backward.rs`) and hands burn the parameter gradients.
//!
//! This first version moves parameters and images through the CPU on every step (any burn backend
//! works, and the wgpu renderer need not share burn's device). The backward step reuses the
//! rasterizer's forward state when its frame is still the last one drawn, and renders it again
//! otherwise (when something else was rendered in between).

use std::sync::{Arc, Mutex};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};

use crate::data::Camera;
use crate::render::{GpuContext, GpuError, GpuSplats, Rasterizer, RenderOptions, RenderedImage, SplatGradients};
use crate::scene::Splats;

/// The wgpu device and rasterizer a training run renders with.
pub struct SplatRenderer {
    pub gpu: GpuContext,
    state: Mutex<RasterState>,
    /// What the last backward pass saw, for densification (burn's graph has no slot for it).
    last_view: Mutex<Option<ViewGradients>>,
}

/// The rasterizer and the frame it drew last (id and splats), whose forward state a backward pass
/// reuses instead of rendering again.
struct RasterState {
    rasterizer: Rasterizer,
    frame: Option<(u64, GpuSplats)>,
    next_id: u64,
}

/// The 2D-mean gradients of one backward pass and which splats that view drew.
#[derive(Clone, Debug)]
pub struct ViewGradients {
    pub mean2d: Vec<[f32; 2]>,
    pub visible: Vec<bool>,
    pub width: u32,
    pub height: u32,
}

impl SplatRenderer {
    pub fn new(gpu: GpuContext) -> Arc<Self> {
        let state = Mutex::new(RasterState {
            rasterizer: Rasterizer::new(&gpu.device),
            frame: None,
            next_id: 0,
        });
        Arc::new(Self {
            gpu,
            state,
            last_view: Mutex::new(None),
        })
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
        let gpu_splats = GpuSplats::upload(&self.gpu.device, splats);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.frame = None;
        state.rasterizer.render(&self.gpu, &gpu_splats, camera, options)?;
        let image = state.rasterizer.read_image(&self.gpu)?;
        state.next_id += 1;
        let id = state.next_id;
        state.frame = Some((id, gpu_splats));
        Ok((id, image))
    }

    /// The backward pass of frame `id`: reuses the rasterizer's state when that frame is still the
    /// last one drawn, and renders it again otherwise.
    fn backward(
        &self,
        id: u64,
        splats: &Splats,
        camera: &Camera,
        options: &RenderOptions,
        v_out: &[[f32; 4]],
    ) -> Result<SplatGradients, String> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *state;
        let current = state.frame.as_ref().is_some_and(|(last, _)| *last == id);
        if !current {
            let gpu_splats = GpuSplats::upload(&self.gpu.device, splats);
            state.frame = None;
            state
                .rasterizer
                .render(&self.gpu, &gpu_splats, camera, options)
                .map_err(|e| e.to_string())?;
            state.frame = Some((id, gpu_splats));
        }
        let Some((_, gpu_splats)) = &state.frame else {
            return Err("no frame to differentiate".into());
        };
        let grads = state
            .rasterizer
            .backward(&self.gpu, gpu_splats, v_out)
            .map_err(|e| e.to_string())?;
        let visible = state
            .rasterizer
            .read_visible(&self.gpu, gpu_splats.count)
            .map_err(|e| e.to_string())?;
        *self.last_view.lock().unwrap_or_else(|p| p.into_inner()) = Some(ViewGradients {
            mean2d: grads.mean2d.clone(),
            visible,
            width: camera.width,
            height: camera.height,
        });
        Ok(grads)
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
    splats: Arc<Splats>,
    camera: Camera,
    options: RenderOptions,
    device: B::Device,
}

impl<B: Backend> std::fmt::Debug for RenderState<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RenderState({} splats, {})", self.splats.len(), self.camera.name)
    }
}

#[derive(Debug)]
struct RenderBackward;

impl<B: Backend> Backward<B, 5> for RenderBackward {
    type State = RenderState<B>;

    fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, _: &mut Checkpointer) {
        let state = ops.state;
        let grad_out = grads.consume::<B>(&ops.node);
        let v: Vec<f32> = Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(grad_out))
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("a float tensor converts to f32");
        // A failure here has no error channel in burn's backward: it is a lost device, a true invariant.
        let g = state
            .renderer
            .backward(
                state.frame,
                &state.splats,
                &state.camera,
                &state.options,
                &rows::<4>(&v),
            )
            .unwrap_or_else(|e| panic!("the rasterizer's backward pass failed: {e}"));
        let n = state.splats.len();
        let k = crate::scene::sh_coeffs(state.splats.sh_degree);
        let tensor = |v: Vec<f32>, cols: usize| {
            Tensor::<B, 2>::from_data(TensorData::new(v, [n, cols]), &state.device)
                .into_primitive()
                .tensor()
        };
        let values = [
            tensor(g.means.into_iter().flatten().collect(), 3),
            tensor(g.log_scales.into_iter().flatten().collect(), 3),
            tensor(g.rotations.into_iter().flatten().collect(), 4),
            tensor(g.opacity_logits, 1),
            tensor(g.sh.into_iter().flatten().collect(), k * 3),
        ];
        for (parent, value) in ops.parents.iter().zip(values) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, value);
            }
        }
    }
}

/// Renders the splats differentiably: the image [H, W, 4] (linear RGB + alpha).
pub fn render<B: Backend, C: CheckpointStrategy>(
    renderer: &Arc<SplatRenderer>,
    params: &SplatTensors<Autodiff<B, C>>,
    camera: &Camera,
    options: &RenderOptions,
) -> Result<Tensor<Autodiff<B, C>, 3>, GpuError> {
    let splats = Arc::new(params.to_splats());
    let (frame, image) = renderer.render_frame(&splats, camera, options)?;
    // An autodiff backend runs on its inner backend's device.
    let inner_device: B::Device = params.means.device();
    let shape = [camera.height as usize, camera.width as usize, 4];
    let values: Vec<f32> = image.rgba.into_iter().flatten().collect();
    let output = Tensor::<B, 3>::from_data(TensorData::new(values, shape), &inner_device)
        .into_primitive()
        .tensor();
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
                splats,
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
