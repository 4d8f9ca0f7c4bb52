//! `difix3d bench ...`: performance measurements, printed as JSON and as a BENCHMARKS.md table row.

mod memory;
mod refine;
mod train_difix;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;

use difix3d::difix::images::SizePolicy;
use difix3d::difix::pipeline::StageTimes;
use difix3d::difix::Difix;
use difix3d::fix::gpu_frame::GpuFrame;
use difix3d::fix::{FixEvent, Frame, FrameImage, LiveFixer, LiveFixerOptions};
use difix3d::nn::backend::{run_on, run_on_cpu, run_on_renderer_device, BackendKind, CpuImpl, Precision, WithBackend};
use difix3d::render::{GpuContext, GpuSplats, Rasterizer, RenderOptions};
use difix3d::{scene, view};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Frame times of the splat renderer along an orbit around the scene, or at fixed cameras.
    Render {
        #[arg(long)]
        scene: PathBuf,
        /// Resolution WIDTHxHEIGHT [default: 1920x1080, or the cameras' own with --camera-json].
        #[arg(long, value_parser = super::parse_size)]
        size: Option<(u32, u32)>,
        /// Time these cameras (a camera JSON file as `render --camera-json` reads: one camera or a
        /// list, cycled through) instead of an orbit.
        #[arg(long)]
        camera_json: Option<PathBuf>,
        #[arg(long, value_parser = super::values::at_least_one_u32, default_value_t = 100)]
        frames: u32,
        /// Also append the result as a table row to this markdown file (e.g. BENCHMARKS.md).
        #[arg(long)]
        append_md: Option<PathBuf>,
    },
    /// Time of the Difix pipeline per image, with the encode / UNet / decode split.
    Fix {
        /// Model directory (diffusers layout).
        #[arg(long, default_value = "checkpoints/difix_ref")]
        model: PathBuf,
        /// Working size HEIGHTxWIDTH.
        #[arg(long, default_value = "576x1024", value_parser = super::parse_hw)]
        size: (u32, u32),
        /// Run with one reference view per image.
        #[arg(long = "ref")]
        with_ref: bool,
        #[arg(long, value_enum, default_value_t = Precision::Fp32)]
        precision: Precision,
        #[arg(long, value_enum, default_value_t = BackendKind::Wgpu)]
        backend: BackendKind,
        /// With `--backend cpu`: which of burn's CPU backends to time (`--backend cpu` elsewhere
        /// always runs flex).
        #[arg(long, value_enum, default_value_t = CpuImpl::Flex)]
        cpu_impl: CpuImpl,
        /// Timed runs after one warm-up run.
        #[arg(long, value_parser = super::values::at_least_one_u32, default_value_t = 10)]
        iters: u32,
        #[arg(long)]
        append_md: Option<PathBuf>,
    },
    /// 3DGS training steps: it/s, the split between forward, loss, backward, optimiser and
    /// densification, and peak memory.
    Train {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, value_parser = super::values::factor, default_value_t = 1)]
        factor: u32,
        #[arg(long, default_value_t = 200)]
        steps: usize,
        /// Where the loss and optimiser run.
        #[arg(long, value_enum, default_value_t = BackendKind::Wgpu)]
        backend: BackendKind,
        #[arg(long)]
        append_md: Option<PathBuf>,
    },
    /// The live post-render pass as the viewer runs it: render fps with the fix off and on, fix
    /// latency, fixed frames per second, and latency from a camera change to its fixed frame.
    Live {
        #[arg(long)]
        scene: PathBuf,
        /// Model directory (diffusers layout).
        #[arg(long, default_value = "checkpoints/difix_ref")]
        model: PathBuf,
        /// Render and working size HEIGHTxWIDTH.
        #[arg(long, default_value = "576x1024", value_parser = super::parse_hw)]
        size: (u32, u32),
        #[arg(long, value_enum, default_value_t = Precision::Fp32)]
        precision: Precision,
        #[arg(long, value_enum, default_value_t = BackendKind::Wgpu)]
        backend: BackendKind,
        /// Camera moves (rendered frames) per phase.
        #[arg(long, value_parser = super::values::at_least_one_u32, default_value_t = 60)]
        frames: u32,
        /// Run Difix on the renderer's own wgpu device and hand frames over on the GPU (as the
        /// viewer does with the wgpu backend) instead of reading them back.
        #[arg(long)]
        gpu_frames: bool,
        /// After the timed phases, keep flying and fixing for this many seconds, sampling resident
        /// memory (a leak shows as growth; reported as `soak`).
        #[arg(long, value_parser = super::values::seconds, default_value_t = 0.0)]
        soak_s: f64,
        #[arg(long)]
        append_md: Option<PathBuf>,
    },
    /// Difix fine-tuning: it/s after a warm-up step and peak memory, batch 1, on generated pairs.
    TrainDifix {
        /// Model directory (diffusers layout).
        #[arg(long, default_value = "checkpoints/difix_ref")]
        model: PathBuf,
        /// torchvision's VGG16 weights for LPIPS and the Gram loss.
        #[arg(long)]
        lpips_backbone: PathBuf,
        #[arg(long)]
        lpips_lin: Option<PathBuf>,
        #[arg(long, value_parser = super::values::image_side, default_value_t = 512)]
        resolution: u32,
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Train without a reference view (single-view model).
        #[arg(long)]
        no_ref: bool,
        #[arg(long, value_enum, default_value_t = BackendKind::Wgpu)]
        backend: BackendKind,
        #[arg(long)]
        append_md: Option<PathBuf>,
    },
    /// The cost of a Difix3D refinement round: training step time, and rendering and fixing time
    /// per novel view, from a short run; also the estimate for a round of 2000 steps.
    Refine {
        /// The trained scene (.ply / .splat, or a training checkpoint).
        #[arg(long)]
        scene: PathBuf,
        #[arg(long)]
        data: PathBuf,
        #[arg(long, value_parser = super::values::factor, default_value_t = 1)]
        factor: u32,
        /// Model directory (diffusers layout).
        #[arg(long, default_value = "checkpoints/difix_ref")]
        model: PathBuf,
        #[arg(long, default_value_t = 40)]
        steps: usize,
        /// Steps between rounds in the short run (at least two rounds are wanted).
        #[arg(long, default_value_t = 20)]
        every: usize,
        /// Where Difix, the loss and the optimiser run.
        #[arg(long, value_enum, default_value_t = BackendKind::Wgpu)]
        backend: BackendKind,
        #[arg(long)]
        append_md: Option<PathBuf>,
    },
}

pub fn run(what: BenchCommand) -> anyhow::Result<()> {
    match what {
        BenchCommand::Render {
            scene: path,
            size,
            camera_json,
            frames,
            append_md,
        } => {
            let cameras = match &camera_json {
                Some(file) => {
                    let cameras = difix3d::data::camera::read_json(file)?;
                    anyhow::ensure!(!cameras.is_empty(), "{}: no cameras", file.display());
                    match size {
                        Some((w, h)) => cameras.into_iter().map(|c| c.resized(w, h)).collect(),
                        None => cameras,
                    }
                }
                None => Vec::new(),
            };
            bench_render(&path, size.unwrap_or((1920, 1080)), cameras, frames.max(1), append_md)
        }
        BenchCommand::Fix {
            model,
            size: (height, width),
            with_ref,
            precision,
            backend,
            cpu_impl,
            iters,
            append_md,
        } => {
            let job = FixBench {
                model,
                height,
                width,
                with_ref,
                iters: iters.max(1),
            };
            let (report, row) = match backend {
                BackendKind::Cpu => run_on_cpu(cpu_impl, precision, job)??,
                _ => run_on(backend, precision, job)??,
            };
            let backend = match backend {
                BackendKind::Cpu => format!("cpu ({cpu_impl:?})").to_lowercase(),
                other => other.to_string(),
            };
            let row = format!("| {} | fix | {} | {row}", chrono_date(), backend);
            println!("{}", serde_json::to_string_pretty(&report)?);
            println!("{row}");
            append_row(append_md, &row, "fix", "encode / UNet / decode")
        }
        BenchCommand::Train {
            data,
            factor,
            steps,
            backend,
            append_md,
        } => bench_train(data, factor, steps.max(2), backend, append_md),
        BenchCommand::TrainDifix {
            model,
            lpips_backbone,
            lpips_lin,
            resolution,
            steps,
            no_ref,
            backend,
            append_md,
        } => train_difix::bench_train_difix(train_difix::TrainDifixBenchArgs {
            model,
            lpips: difix3d::perceptual::lpips::LpipsFiles {
                backbone: lpips_backbone,
                lin: lpips_lin,
            },
            resolution,
            steps,
            with_ref: !no_ref,
            backend,
            append_md,
        }),
        BenchCommand::Refine {
            scene,
            data,
            factor,
            model,
            steps,
            every,
            backend,
            append_md,
        } => refine::bench_refine(refine::RefineBenchArgs {
            scene,
            data,
            factor,
            model,
            steps,
            every,
            backend,
            append_md,
        }),
        BenchCommand::Live {
            scene,
            model,
            size: (height, width),
            precision,
            backend,
            frames,
            gpu_frames,
            soak_s,
            append_md,
        } => {
            let options = LiveFixerOptions {
                model,
                backend,
                precision,
                prompt: difix3d::difix::pipeline::DEFAULT_PROMPT.into(),
                shared: None,
            };
            let run = LiveRun {
                frames: frames.max(2),
                gpu_frames,
                soak: Duration::from_secs_f64(soak_s),
            };
            bench_live(&scene, options, (width, height), run, append_md)
        }
    }
}

/// The scene, a device, a rasterizer warmed up (shader compilation, buffer growth), and the cameras
/// of an orbit of `frames` views around the default view: what every render benchmark starts from.
struct OrbitBench {
    splats: scene::Splats,
    ctx: GpuContext,
    gpu_splats: GpuSplats,
    rasterizer: Rasterizer,
    start: view::ViewController,
    frames: u32,
    size: (u32, u32),
    /// Fixed cameras to cycle through instead of the orbit (empty: the orbit).
    fixed: Vec<difix3d::data::Camera>,
}

impl OrbitBench {
    fn new(path: &std::path::Path, size: (u32, u32), frames: u32) -> anyhow::Result<Self> {
        Self::with_cameras(path, size, Vec::new(), frames)
    }

    fn with_cameras(
        path: &std::path::Path,
        size: (u32, u32),
        fixed: Vec<difix3d::data::Camera>,
        frames: u32,
    ) -> anyhow::Result<Self> {
        let splats = scene::load(path)?;
        let ctx = GpuContext::headless()?;
        let gpu_splats = GpuSplats::upload(&ctx, &splats)?;
        let rasterizer = Rasterizer::new(&ctx.device);
        let start = view::ViewController::default_for(&splats, super::render::default_up());
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

    fn camera(&self, i: u32) -> difix3d::data::Camera {
        if !self.fixed.is_empty() {
            return self.fixed[i as usize % self.fixed.len()].clone();
        }
        let mut v = self.start.clone();
        v.orbit(std::f32::consts::TAU * i as f32 / self.frames as f32, 0.0);
        v.camera(self.size.0, self.size.1)
    }

    fn render(&mut self, i: u32) -> anyhow::Result<difix3d::render::FrameStats> {
        let camera = self.camera(i);
        Ok(self
            .rasterizer
            .render(&self.ctx, &self.gpu_splats, &camera, &RenderOptions::default())?)
    }
}

/// Renders `frames` orbit views with the fix off, then again feeding each frame to a live fixer as the
/// viewer does (read back, submit, never wait), timing what a user would see.
/// How long `bench live` runs: camera moves per timed phase, the frame hand-off, the soak after them.
struct LiveRun {
    frames: u32,
    gpu_frames: bool,
    soak: Duration,
}

fn bench_live(
    path: &std::path::Path,
    mut options: LiveFixerOptions,
    (width, height): (u32, u32),
    run: LiveRun,
    append_md: Option<PathBuf>,
) -> anyhow::Result<()> {
    let LiveRun {
        frames,
        gpu_frames,
        soak,
    } = run;
    let mut trace = memory::MemoryTrace::new(Duration::from_secs(5));
    let mut bench = OrbitBench::new(path, (width, height), frames)?;
    if gpu_frames {
        options.shared = Some(bench.ctx.burn_device());
        if !options.shares_device() {
            anyhow::bail!("--gpu-frames needs --backend wgpu and --precision fp32");
        }
    }
    // The hand-off: a read-back to 8-bit RGB, or a copy into a burn tensor on the same device.
    let hand_off = |bench: &OrbitBench| -> anyhow::Result<FrameImage> {
        Ok(if gpu_frames {
            let frame = GpuFrame::capture(&bench.ctx, &bench.rasterizer);
            FrameImage::Gpu(frame.ok_or_else(|| anyhow::anyhow!("nothing was rendered"))?)
        } else {
            FrameImage::Cpu(difix3d::image_io::to_rgb8(&bench.rasterizer.read_image(&bench.ctx)?))
        })
    };
    let off = Instant::now();
    for i in 0..frames {
        bench.render(i)?;
        bench.ctx.wait()?;
    }
    let fps_off = frames as f64 / off.elapsed().as_secs_f64();

    let backend = options.backend;
    let model_name = file_name(&options.model);
    let fixer = LiveFixer::spawn(options);
    let wait_event = |timeout: Duration| -> anyhow::Result<Option<FixEvent>> {
        match fixer.events().recv_timeout(timeout) {
            Ok(FixEvent::Error(e)) => anyhow::bail!("the live fix failed: {e}"),
            Ok(event) => Ok(Some(event)),
            Err(_) => Ok(None),
        }
    };
    if !matches!(wait_event(Duration::from_secs(3600))?, Some(FixEvent::Ready)) {
        anyhow::bail!("the Difix worker did not start");
    }
    // Warm up the model (kernel compilation, autotuning) on one frame.
    bench.render(0)?;
    let image = hand_off(&bench)?;
    let frame = |id: u64, image| Frame {
        id,
        image,
        reference: None,
        policy: SizePolicy::Native,
    };
    fixer.submit(frame(u64::MAX, image));
    while !matches!(wait_event(Duration::from_secs(3600))?, Some(FixEvent::Fixed { .. })) {}

    let mut rendered_at = std::collections::HashMap::new();
    let (mut fix_ms, mut e2e_ms, mut readback) = (Vec::new(), Vec::new(), Duration::ZERO);
    // Returns the id of a fixed frame.
    let mut on_event = |event: FixEvent, rendered_at: &std::collections::HashMap<u64, Instant>| match event {
        FixEvent::Fixed { id, millis, .. } => {
            fix_ms.push(millis);
            if let Some(t) = rendered_at.get(&id) {
                e2e_ms.push(t.elapsed().as_secs_f64() * 1e3);
            }
            Some(id)
        }
        _ => None,
    };
    let on = Instant::now();
    for i in 0..frames {
        rendered_at.insert(i as u64, Instant::now());
        bench.render(i)?;
        let r = Instant::now();
        let image = hand_off(&bench)?;
        readback += r.elapsed();
        fixer.submit(frame(i as u64, image));
        while let Some(event) = wait_event(Duration::ZERO)? {
            on_event(event, &rendered_at);
        }
    }
    let render_phase = on.elapsed().as_secs_f64();
    // The newest frame is always fixed (latest wins); the user waits for it.
    let last = frames as u64 - 1;
    loop {
        let Some(event) = wait_event(Duration::from_secs(3600))? else {
            anyhow::bail!("the last frame was never fixed");
        };
        if on_event(event, &rendered_at) == Some(last) {
            break;
        }
    }
    let fps_on = frames as f64 / render_phase;
    let fixed_fps = fix_ms.len() as f64 / on.elapsed().as_secs_f64();
    // The soak: the same loop for `soak`, memory sampled as it goes.
    let soak_start = Instant::now();
    let mut soak_frames = 0u64;
    while soak_start.elapsed() < soak {
        let i = frames as u64 + soak_frames;
        bench.render(i as u32)?;
        fixer.submit(frame(i, hand_off(&bench)?));
        while wait_event(Duration::ZERO)?.is_some() {}
        soak_frames += 1;
        trace.sample();
    }
    if soak_frames > 0 {
        let last = frames as u64 + soak_frames - 1;
        loop {
            match wait_event(Duration::from_secs(3600))? {
                None => anyhow::bail!("the last soak frame was never fixed"),
                Some(FixEvent::Fixed { id, .. }) if id == last => break,
                Some(_) => {}
            }
        }
    }
    let soak_report = (soak_frames > 0).then(|| {
        let mut report = trace.report();
        report["frames"] = soak_frames.into();
        report["renderer_gpu_mib"] = (bench.rasterizer.peak_bytes() as f64 / 1048576.0).into();
        report
    });
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let report = serde_json::json!({
        "bench": "live",
        "scene": path.display().to_string(),
        "height": height, "width": width,
        "backend": backend.to_string(),
        "model": model_name,
        "frames": frames,
        "render_fps_fix_off": fps_off,
        "render_fps_fix_on": fps_on,
        "frames_handed_over": if gpu_frames { "on the GPU (shared device)" } else { "read back to the CPU" },
        "readback_ms": readback.as_secs_f64() * 1e3 / frames as f64,
        "fix_ms": mean(&fix_ms),
        "fixed_frames": fix_ms.len(),
        "fixed_fps": fixed_fps,
        "end_to_end_ms": mean(&e2e_ms),
        "adapter": &*bench.ctx.adapter_name,
        "soak": soak_report,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    let row = format!(
        "| {} | live | {} | {}x{} | {} / {backend}{} | {model_name} | {fps_off:.2} / {fps_on:.2} | {:.1} | {:.0} | {fixed_fps:.2} | {:.0} | {frames} |",
        chrono_date(),
        file_name(path),
        height,
        width,
        bench.ctx.adapter_name,
        if gpu_frames { " (frames on the GPU)" } else { "" },
        readback.as_secs_f64() * 1e3 / frames as f64,
        mean(&fix_ms),
        mean(&e2e_ms),
    );
    println!("{row}");
    append_row(append_md, &row, "live", "fix off / on")
}

struct FixBench {
    model: PathBuf,
    height: u32,
    width: u32,
    with_ref: bool,
    iters: u32,
}

impl WithBackend for FixBench {
    type Output = anyhow::Result<(serde_json::Value, String)>;

    fn run<B: burn::tensor::backend::Backend>(self, device: B::Device) -> Self::Output {
        use burn::tensor::{Distribution, Tensor};
        let load = Instant::now();
        let mut model = Difix::<B>::load(&self.model, None, &device)?;
        let load_s = load.elapsed().as_secs_f64();
        let (h, w) = (self.height as usize, self.width as usize);
        let image = || Tensor::<B, 4>::random([1, 3, h, w], Distribution::Uniform(0.0, 1.0), &device);
        let reference = || self.with_ref.then(image);
        let prompt = difix3d::difix::pipeline::DEFAULT_PROMPT;
        // Warm-up: kernel compilation, autotuning and memory pools.
        let _ = model.fix(image(), reference(), prompt)?.into_data();
        let start = Instant::now();
        for _ in 0..self.iters {
            let _ = model.fix(image(), reference(), prompt)?.into_data();
        }
        let mean_ms = start.elapsed().as_secs_f64() * 1e3 / self.iters as f64;
        let mut stages = StageTimes::default();
        for _ in 0..self.iters {
            let _ = model
                .fix_timed(image(), reference(), prompt, Some(&mut stages))?
                .into_data();
        }
        let per = |d: Duration| d.as_secs_f64() * 1e3 / self.iters as f64;
        let rss = peak_rss_mib();
        let model_name = file_name(&self.model);
        let report = serde_json::json!({
            "bench": "fix",
            "model": self.model.display().to_string(),
            "height": h, "width": w, "reference": self.with_ref,
            "precision": std::any::type_name::<B::FloatElem>(),
            "iters": self.iters,
            "load_s": load_s,
            "mean_ms": mean_ms,
            "encode_ms": per(stages.encode), "unet_ms": per(stages.unet), "decode_ms": per(stages.decode),
            "peak_rss_mib": rss,
        });
        let row = format!(
            "{model_name} | {h}x{w} | {} | {} | {mean_ms:.1} | {:.1} / {:.1} / {:.1} | {rss:.0} | {} |",
            if self.with_ref { "yes" } else { "no" },
            std::any::type_name::<B::FloatElem>(),
            per(stages.encode),
            per(stages.unet),
            per(stages.decode),
            self.iters
        );
        Ok((report, row))
    }
}

use memory::peak_rss_mib;

/// Adds `row` to the markdown table whose rows carry `| bench |` (after its last row, or after the
/// header separator of the table whose header contains `header_marker`); at the end otherwise.
fn append_row(append_md: Option<PathBuf>, row: &str, bench: &str, header_marker: &str) -> anyhow::Result<()> {
    let Some(md) = append_md else { return Ok(()) };
    let text = match std::fs::read_to_string(&md) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("{}: cannot read", md.display())),
    };
    let mut lines: Vec<&str> = text.lines().collect();
    let tag = format!("| {bench} |");
    let at = match lines.iter().rposition(|l| l.starts_with('|') && l.contains(&tag)) {
        Some(i) => i + 1,
        None => match lines
            .iter()
            .position(|l| l.starts_with('|') && l.contains(header_marker))
        {
            Some(h) => (h + 2).min(lines.len()),
            None => lines.len(),
        },
    };
    lines.insert(at, row);
    let mut out = lines.join("\n");
    out.push('\n');
    difix3d::image_io::write_atomic(&md, |tmp| std::fs::write(tmp, &out).map_err(|e| e.to_string()))?;
    Ok(())
}

fn bench_render(
    path: &std::path::Path,
    size: (u32, u32),
    cameras: Vec<difix3d::data::Camera>,
    frames: u32,
    append_md: Option<PathBuf>,
) -> anyhow::Result<()> {
    let (width, height) = cameras.first().map_or(size, |c| (c.width, c.height));
    let fixed = !cameras.is_empty();
    let mut bench = OrbitBench::with_cameras(path, size, cameras, frames)?;
    let mut times = Vec::with_capacity(frames as usize);
    let mut intersections = 0u64;
    for i in 0..frames {
        let t = Instant::now();
        let stats = bench.render(i)?;
        bench.ctx.wait()?;
        times.push(t.elapsed());
        intersections += stats.intersections as u64;
    }
    // A second pass with a GPU wait after every stage splits the time per stage.
    let profiled_frames = frames.min(20);
    let (mut project, mut sort, mut raster) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut depth_sort, mut tile_sort) = (Duration::ZERO, Duration::ZERO);
    for i in 0..profiled_frames {
        let camera = bench.camera(i);
        let s = bench
            .rasterizer
            .render_profiled(&bench.ctx, &bench.gpu_splats, &camera, &RenderOptions::default())?;
        project += s.project;
        sort += s.sort;
        depth_sort += s.depth_sort;
        tile_sort += s.tile_sort;
        raster += s.rasterize;
    }
    // The viewer's path (`render_display`: instanced quads, hardware blending), timed the same way
    // after one warm-up frame that builds its pipeline.
    let options = RenderOptions::default();
    bench
        .rasterizer
        .render_display(&bench.ctx, &bench.gpu_splats, &bench.camera(0), &options)?;
    bench.ctx.wait()?;
    let mut display_times = Vec::with_capacity(frames as usize);
    for i in 0..frames {
        let camera = bench.camera(i);
        let t = Instant::now();
        bench
            .rasterizer
            .render_display(&bench.ctx, &bench.gpu_splats, &camera, &options)?;
        bench.ctx.wait()?;
        display_times.push(t.elapsed());
    }
    let (mut d_project, mut d_sort, mut d_draw) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for i in 0..profiled_frames {
        let camera = bench.camera(i);
        let s = bench
            .rasterizer
            .render_display_profiled(&bench.ctx, &bench.gpu_splats, &camera, &options)?;
        d_project += s.project;
        d_sort += s.sort;
        d_draw += s.rasterize;
    }
    times.sort();
    display_times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mean_of = |t: &[Duration]| t.iter().map(|d| ms(*d)).sum::<f64>() / t.len() as f64;
    let p95_of = |t: &[Duration]| ms(t[((t.len() as f64 * 0.95).ceil() as usize).clamp(1, t.len()) - 1]);
    let (mean, p95) = (mean_of(&times), p95_of(&times));
    let (display_mean, display_p95) = (mean_of(&display_times), p95_of(&display_times));
    let per = |d: Duration| ms(d) / profiled_frames as f64;
    let peak_mib = bench.rasterizer.peak_bytes() as f64 / (1024.0 * 1024.0);
    let report = serde_json::json!({
        "bench": "render",
        "scene": path.display().to_string(),
        "splats": bench.splats.len(),
        "width": width,
        "height": height,
        "frames": frames,
        "cameras": if fixed { "fixed (--camera-json)" } else { "orbit" },
        "adapter": &*bench.ctx.adapter_name,
        "mean_ms": mean,
        "p95_ms": p95,
        "fps": 1e3 / mean,
        "project_ms": per(project),
        "sort_ms": per(sort),
        "depth_sort_ms": per(depth_sort),
        "tile_sort_ms": per(tile_sort),
        "rasterize_ms": per(raster),
        "mean_intersections": intersections / frames as u64,
        "display_mean_ms": display_mean,
        "display_p95_ms": display_p95,
        "display_project_ms": per(d_project),
        "display_sort_ms": per(d_sort),
        "display_draw_ms": per(d_draw),
        "peak_gpu_mib": peak_mib,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    let row = format!(
        "| {} | render | {} | {}x{} | {} | {:.1} | {:.1} | {:.1} / {:.1} / {:.1} | {:.0} | {} |",
        chrono_date(),
        file_name(path),
        width,
        height,
        bench.ctx.adapter_name,
        mean,
        p95,
        per(project),
        per(sort),
        per(raster),
        peak_mib,
        frames,
    );
    println!("{row}");
    let display_row = format!(
        "| {} | render (display) | {} | {}x{} | {} | {:.1} | {:.1} | {:.1} / {:.1} / {:.1} | {:.0} | {} |",
        chrono_date(),
        file_name(path),
        width,
        height,
        bench.ctx.adapter_name,
        display_mean,
        display_p95,
        per(d_project),
        per(d_sort),
        per(d_draw),
        peak_mib,
        frames,
    );
    println!("{display_row}");
    append_row(append_md.clone(), &row, "render", "project / sort / raster")?;
    append_row(append_md, &display_row, "render (display)", "project / sort / raster")
}

/// Today's date (UTC) as YYYY-MM-DD, without pulling in a date crate.
/// The last component of `path` (a model folder, scene or dataset name for the result tables).
fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn chrono_date() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0) as i64;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}")
}

struct TrainBench {
    config: difix3d::train::trainer::TrainConfig,
    gpu: GpuContext,
}

impl WithBackend for TrainBench {
    /// (summary, per-step reports, resident memory over the run)
    type Output = anyhow::Result<(
        difix3d::train::trainer::TrainSummary,
        Vec<difix3d::train::trainer::StepReport>,
        serde_json::Value,
    )>;

    fn run<B: burn::tensor::backend::Backend>(self, device: B::Device) -> Self::Output {
        let mut reports = Vec::new();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let mut trace = memory::MemoryTrace::new(Duration::from_secs(5));
        let started = std::time::Instant::now();
        let every = (self.config.steps / 10).max(1);
        let summary = difix3d::train::trainer::train::<B>(
            &self.config,
            self.gpu,
            &device,
            &mut |r: &difix3d::train::trainer::StepReport| {
                // Progress on stderr (the report is stdout's): where a slow or stuck run got to.
                if r.step <= 3 || r.step.is_multiple_of(every) {
                    let t = &r.times;
                    eprintln!(
                        "bench train: step {}/{} after {:.1} s (this step: render {:.1} / loss {:.1} / backward {:.1} / optimiser {:.1} ms)",
                        r.step,
                        r.steps,
                        started.elapsed().as_secs_f64(),
                        t.render.as_secs_f64() * 1e3,
                        t.loss.as_secs_f64() * 1e3,
                        t.backward.as_secs_f64() * 1e3,
                        t.optimizer.as_secs_f64() * 1e3,
                    );
                }
                reports.push(r.clone());
                trace.sample();
            },
            &stop,
        )?;
        Ok((summary, reports, trace.report()))
    }
}

/// Trains `steps` steps (into a temporary run folder) and reports where the time went.
fn bench_train(
    data: PathBuf,
    factor: u32,
    steps: usize,
    backend: BackendKind,
    append_md: Option<PathBuf>,
) -> anyhow::Result<()> {
    let out = std::env::temp_dir().join(format!("difix3d-bench-train-{}", std::process::id()));
    let mut config = difix3d::train::trainer::TrainConfig::new(data.clone(), out.clone());
    config.factor = factor;
    config.steps = steps;
    let gpu = GpuContext::headless()?;
    let adapter = gpu.adapter_name.clone();
    let result = run_on_renderer_device(
        backend,
        Precision::Fp32,
        &gpu,
        TrainBench {
            config,
            gpu: gpu.clone(),
        },
    );
    let _ = std::fs::remove_dir_all(&out);
    let (summary, reports, memory) = result??;
    // The first steps compile kernels; time the rest.
    let timed = &reports[reports.len().min(5)..];
    let n = timed.len().max(1) as f64;
    let ms = |f: fn(&difix3d::train::trainer::StepTimes) -> Duration| {
        timed.iter().map(|r| f(&r.times).as_secs_f64()).sum::<f64>() * 1e3 / n
    };
    let (render, loss, backward, optimizer, densify) = (
        ms(|t| t.render),
        ms(|t| t.loss),
        ms(|t| t.backward),
        ms(|t| t.optimizer),
        ms(|t| t.densify),
    );
    let step_ms = render + loss + backward + optimizer + densify;
    let rss = peak_rss_mib();
    let camera = {
        let d = difix3d::data::open_dataset(&data, factor)?;
        d.train
            .first()
            .map(|v| (v.camera.width, v.camera.height))
            .unwrap_or((0, 0))
    };
    let report = serde_json::json!({
        "bench": "train",
        "data": data.display().to_string(),
        "factor": factor,
        "size": [camera.0, camera.1],
        "steps": steps,
        "backend": backend.to_string(),
        "adapter": &*adapter,
        "its": 1e3 / step_ms,
        "render_ms": render, "loss_ms": loss, "backward_ms": backward, "optimizer_ms": optimizer,
        "densify_ms": densify,
        "final_splats": summary.splats,
        "peak_rss_mib": rss,
        "eval_psnr_after": summary.eval_psnr_after,
        "memory": memory,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    let name = file_name(&data);
    let row = format!(
        "| {} | train | {name} | {}x{} | {adapter} / {backend} | {:.2} | {render:.1} / {loss:.1} / {backward:.1} / {optimizer:.1} / {densify:.1} | {} | {rss:.0} | {steps} |",
        chrono_date(),
        camera.0,
        camera.1,
        1e3 / step_ms,
        summary.splats,
    );
    println!("{row}");
    append_row(append_md, &row, "train", "render / loss / backward")
}
