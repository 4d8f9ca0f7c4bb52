//! `difix3d bench live`: the live post-render pass as the viewer runs it.

use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use super::orbit::OrbitBench;
use super::{append_row, chrono_date, file_name, memory};
use difix3d::difix::images::SizePolicy;
use difix3d::difix::pipeline::DEFAULT_PROMPT;
use difix3d::fix::gpu_frame::GpuFrame;
use difix3d::fix::session::{LiveFixSession, WorkerKey};
use difix3d::fix::{FixEvent, FrameImage};
use difix3d::nn::backend::{BackendKind, Precision};
/// How long `bench live` runs: camera moves per timed phase, the frame hand-off, the soak after them.
pub(super) struct LiveRun {
    pub(super) frames: u32,
    pub(super) gpu_frames: bool,
    pub(super) soak: Duration,
}

/// Renders `frames` orbit views with the fix off, then again feeding each frame to a live fixer as the
/// viewer does (read back, submit, never wait), timing what a user would see.
pub(super) fn bench_live(
    path: &std::path::Path,
    key: WorkerKey,
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
    if gpu_frames && !(key.backend == BackendKind::Wgpu && key.precision == Precision::Fp32) {
        anyhow::bail!("--gpu-frames needs --backend wgpu and --precision fp32");
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

    let backend = key.backend;
    let model_name = file_name(&key.model);
    // The viewer's session: with --gpu-frames it runs Difix on the renderer's own device.
    let mut session = LiveFixSession::new(DEFAULT_PROMPT.into(), gpu_frames.then(|| bench.ctx.clone()));
    session.ensure_worker(key);
    if !matches!(
        wait_event(&mut session, Duration::from_secs(3600))?,
        Some(FixEvent::Ready)
    ) {
        anyhow::bail!("the Difix worker did not start");
    }
    // Warm up the model (kernel compilation, autotuning) on one frame.
    bench.render(0)?;
    let image = hand_off(&bench)?;
    let submit = |session: &mut LiveFixSession, id: u64, image| session.submit(id, image, None, SizePolicy::Native);
    submit(&mut session, u64::MAX, image);
    while !matches!(
        wait_event(&mut session, Duration::from_secs(3600))?,
        Some(FixEvent::Fixed { .. })
    ) {}

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
        submit(&mut session, i as u64, image);
        while let Some(event) = wait_event(&mut session, Duration::ZERO)? {
            on_event(event, &rendered_at);
        }
    }
    let render_phase = on.elapsed().as_secs_f64();
    // The newest frame is always fixed (latest wins); the user waits for it.
    let last = frames as u64 - 1;
    loop {
        let Some(event) = wait_event(&mut session, Duration::from_secs(3600))? else {
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
        submit(&mut session, i, hand_off(&bench)?);
        while wait_event(&mut session, Duration::ZERO)?.is_some() {}
        soak_frames += 1;
        trace.sample();
    }
    if soak_frames > 0 {
        let last = frames as u64 + soak_frames - 1;
        loop {
            match wait_event(&mut session, Duration::from_secs(3600))? {
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

/// The session's next event within `timeout`; an error event ends the benchmark.
fn wait_event(session: &mut LiveFixSession, timeout: Duration) -> anyhow::Result<Option<FixEvent>> {
    match session.next_event(timeout) {
        Some(FixEvent::Error(e)) => anyhow::bail!("the live fix failed: {e}"),
        other => Ok(other),
    }
}
