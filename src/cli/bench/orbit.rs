//! What every render benchmark starts from: a scene on the GPU, a warmed-up rasterizer, and the
//! cameras of an orbit (or fixed cameras).

use difix3d::render::{GpuContext, GpuSplats, Rasterizer, RenderOptions};
use difix3d::{scene, view};
/// The scene, a device, a rasterizer warmed up (shader compilation, buffer growth), and the cameras
/// of an orbit of `frames` views around the default view: what every render benchmark starts from.
pub(super) struct OrbitBench {
    pub(super) splats: scene::Splats,
    pub(super) ctx: GpuContext,
    pub(super) gpu_splats: GpuSplats,
    pub(super) rasterizer: Rasterizer,
    pub(super) start: view::ViewController,
    pub(super) frames: u32,
    pub(super) size: (u32, u32),
    /// Fixed cameras to cycle through instead of the orbit (empty: the orbit).
    pub(super) fixed: Vec<difix3d::data::Camera>,
}

impl OrbitBench {
    pub(super) fn new(path: &std::path::Path, size: (u32, u32), frames: u32) -> anyhow::Result<Self> {
        Self::with_cameras(path, size, Vec::new(), frames)
    }

    pub(super) fn with_cameras(
        path: &std::path::Path,
        size: (u32, u32),
        fixed: Vec<difix3d::data::Camera>,
        frames: u32,
    ) -> anyhow::Result<Self> {
        let splats = scene::load(path)?;
        let ctx = GpuContext::headless()?;
        let gpu_splats = GpuSplats::upload(&ctx, &splats)?;
        let rasterizer = Rasterizer::new(&ctx.device);
        let start = view::ViewController::default_for(&splats, crate::cli::render::default_up());
        let mut bench = Self {
            splats,
            ctx,
            gpu_splats,
            rasterizer,
            start,
            frames,
            size,
            fixed,
        };
        for i in 0..3 {
            bench.render(i)?;
            bench.ctx.wait()?;
        }
        Ok(bench)
    }

    pub(super) fn camera(&self, i: u32) -> difix3d::data::Camera {
        if !self.fixed.is_empty() {
            return self.fixed[i as usize % self.fixed.len()].clone();
        }
        let mut v = self.start.clone();
        v.orbit(std::f32::consts::TAU * i as f32 / self.frames as f32, 0.0);
        v.camera(self.size.0, self.size.1)
    }

    pub(super) fn render(&mut self, i: u32) -> anyhow::Result<difix3d::render::FrameStats> {
        let camera = self.camera(i);
        Ok(self
            .rasterizer
            .render(&self.ctx, &self.gpu_splats, &camera, &RenderOptions::default())?)
    }
}
