//! `difix3d bench render`: frame times of the splat renderer along an orbit or at fixed cameras.

use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use super::orbit::OrbitBench;
use super::{append_row, chrono_date, file_name};
use difix3d::render::RenderOptions;
pub(super) fn bench_render(
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
