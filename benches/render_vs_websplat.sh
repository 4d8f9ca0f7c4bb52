#!/usr/bin/env bash
# One frame of a splat scene through difix3d's renderer and through web-splat
# (github.com/KeKsBoTer/web-splat, wgpu 25), same camera, same adapter, one run; prints both per-frame
# times and their ratio.
#
# web-splat is built from local source trees, outside this repository (nothing of its code is kept
# here): its two git dependencies (rustgd/cgmath, KeKsBoTer/splines) are patched to local paths, and a
# small timing binary (below) is added to the copy. Pass the three trees (work trees or bare git
# directories) or let the script clone them at the commits web-splat's Cargo.lock pins:
#
#   WEB_SPLAT_SRC=... CGMATH_SRC=... SPLINES_SRC=... benches/render_vs_websplat.sh [options]
#
# Options (defaults: the bonsai comparison of issue 13):
#   --scene FILE        a .splat scene (web-splat reads .ply; the timing binary converts it in memory
#                       the same way difix3d reads .splat)      [assets/bonsai-7k-mini.splat]
#   --size WxH          [1280x720]
#   --eye X,Y,Z --target X,Y,Z --focal F   look-at camera, scene up -y (COLMAP frame)
#                       [-0.2,-1.4,-4.0] [-0.2,-0.1,0.3] [1000]
#   --frames N          timed frames each, after warm-up        [5]
#   --png DIR           also write both images there (to check they show the same view)
# Environment: WORK (build folder, default ~/.cache/web-splat), DIFIX3D (a built difix3d binary; by
# default `cargo build --release` of this repository into $CARGO_TARGET_DIR or target/).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

scene="$repo/assets/bonsai-7k-mini.splat"
size="1280x720"
eye="-0.2,-1.4,-4.0"
target="-0.2,-0.1,0.3"
focal=1000
frames=5
png=""
while [ $# -gt 0 ]; do
    case "$1" in
        --scene) scene="$2"; shift 2 ;;
        --size) size="$2"; shift 2 ;;
        --eye) eye="$2"; shift 2 ;;
        --target) target="$2"; shift 2 ;;
        --focal) focal="$2"; shift 2 ;;
        --frames) frames="$2"; shift 2 ;;
        --png) png="$2"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
width="${size%x*}"
height="${size#*x}"

WORK="${WORK:-$HOME/.cache/web-splat}"
mkdir -p "$WORK"

# --- sources ------------------------------------------------------------------------------------
WEB_SPLAT_COMMIT=959a3ec  # the web-splat commit this script was written against
CGMATH_COMMIT=ff840cbf48d79441eaac3e78155df4723511d247
SPLINES_COMMIT=cdb1be6c7ffbfc5eee0aca91df405c62b62b2c0a

# copy_tree NAME SRC URL COMMIT: $WORK/NAME from a work tree, a bare git directory, or a fresh clone.
copy_tree() {
    local name="$1" src="$2" url="$3" commit="$4"
    local dst="$WORK/$name"
    if [ -e "$dst/.copied" ]; then return; fi
    rm -rf "$dst"
    mkdir -p "$dst"
    if [ -z "$src" ]; then
        git clone -q "$url" "$dst.git-tmp"
        git -C "$dst.git-tmp" archive "$commit" | tar -x -C "$dst"
        rm -rf "$dst.git-tmp"
    elif git -C "$src" rev-parse --is-bare-repository 2>/dev/null | grep -q true; then
        git -C "$src" archive "$commit" | tar -x -C "$dst"
    else
        cp -a "$src/." "$dst/"
    fi
    touch "$dst/.copied"
}
copy_tree web-splat "${WEB_SPLAT_SRC:-}" https://github.com/KeKsBoTer/web-splat "$WEB_SPLAT_COMMIT"
copy_tree cgmath "${CGMATH_SRC:-}" https://github.com/rustgd/cgmath "$CGMATH_COMMIT"
copy_tree splines "${SPLINES_SRC:-}" https://github.com/KeKsBoTer/splines "$SPLINES_COMMIT"

# Git dependencies -> local paths (idempotent); [patch] covers both web-splat's and splines' cgmath.
ws="$WORK/web-splat"
if ! grep -q '^# patched by difix3d' "$ws/Cargo.toml"; then
    cat >> "$ws/Cargo.toml" <<PATCH

# patched by difix3d's benches/render_vs_websplat.sh
[patch."https://github.com/rustgd/cgmath"]
cgmath = { path = "$WORK/cgmath" }
[patch."https://github.com/KeKsBoTer/splines"]
splines = { path = "$WORK/splines" }
PATCH
fi

# The timing binary: one frame = preprocess + sort (web-splat's `prepare`) + the instanced-quad draw
# into an Rgba8Unorm texture, then a wait for the device, as difix3d's `bench render` waits per frame.
mkdir -p "$ws/src/bin"
cat > "$ws/src/bin/difix3d_timing.rs" <<'EOF'
use std::io::Cursor;
use std::time::{Duration, Instant};

use cgmath::Vector2;
use web_splats::{
    io::GenericGaussianPointCloud, GaussianRenderer, PerspectiveCamera, PointCloud, SceneCamera,
    SplattingArgs, Split, WGPUContext,
};

const SH_C0: f32 = 0.28209479177387814;

/// .splat (32-byte records) -> binary INRIA .ply with SH degree 0, as difix3d reads .splat.
fn splat_to_ply(bytes: &[u8]) -> Vec<u8> {
    let n = bytes.len() / 32;
    let props = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
        "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"];
    let mut out = format!("ply\nformat binary_little_endian 1.0\nelement vertex {n}\n").into_bytes();
    for p in props {
        out.extend_from_slice(format!("property float {p}\n").as_bytes());
    }
    out.extend_from_slice(b"end_header\n");
    for r in bytes.chunks_exact(32) {
        let f = |at: usize| f32::from_le_bytes([r[at], r[at + 1], r[at + 2], r[at + 3]]);
        let a = (r[27] as f32 / 255.0).clamp(0.5 / 255.0, 1.0 - 0.5 / 255.0);
        let q: Vec<f32> = r[28..32].iter().map(|&c| (c as f32 - 128.0) / 128.0).collect();
        let norm = q.iter().map(|c| c * c).sum::<f32>().sqrt().max(1e-12);
        let mut v = vec![f(0), f(4), f(8), 0.0, 0.0, 0.0];
        v.extend((24..27).map(|i| (r[i] as f32 / 255.0 - 0.5) / SH_C0));
        v.push((a / (1.0 - a)).ln());
        v.extend((0..3).map(|i| f(12 + 4 * i).max(1e-8).ln()));
        v.extend(q.iter().map(|c| c / norm));
        for x in v {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out
}

#[pollster::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (scene, camera_json, frames) = (&args[1], &args[2], args[3].parse::<u32>().unwrap());
    let png = args.get(4);
    let cam: serde_json::Value = serde_json::from_slice(&std::fs::read(camera_json).unwrap()).unwrap();
    let cam = if cam.is_array() { cam[0].clone() } else { cam };
    let m: Vec<Vec<f32>> = serde_json::from_value(cam["world_from_camera"].clone()).unwrap();
    let (width, height) = (cam["width"].as_u64().unwrap() as u32, cam["height"].as_u64().unwrap() as u32);
    let scene_camera = SceneCamera {
        id: 0,
        img_name: "bench".into(),
        width,
        height,
        position: [m[0][3], m[1][3], m[2][3]],
        rotation: [[m[0][0], m[0][1], m[0][2]], [m[1][0], m[1][1], m[1][2]], [m[2][0], m[2][1], m[2][2]]],
        fx: cam["fx"].as_f64().unwrap() as f32,
        fy: cam["fy"].as_f64().unwrap() as f32,
        split: Split::Train,
    };

    let ctx = WGPUContext::new_instance().await;
    let (device, queue) = (&ctx.device, &ctx.queue);
    let ply = splat_to_ply(&std::fs::read(scene).unwrap());
    let pc_raw = GenericGaussianPointCloud::load(Cursor::new(ply)).unwrap();
    let pc = PointCloud::new(device, pc_raw).unwrap();
    let mut renderer =
        GaussianRenderer::new(device, queue, wgpu::TextureFormat::Rgba8Unorm, pc.sh_deg(), pc.compressed()).await;
    let target = device.create_texture(&wgpu::TextureDescriptor {
        label: None,
        size: wgpu::Extent3d { width, height, depth_or_array_layers: 1 },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: renderer.color_format(),
        usage: wgpu::TextureUsages::COPY_SRC | wgpu::TextureUsages::RENDER_ATTACHMENT,
        view_formats: &[],
    });
    let view = target.create_view(&Default::default());
    let mut camera: PerspectiveCamera = scene_camera.into();
    camera.fit_near_far(pc.bbox());

    let frame = |renderer: &mut GaussianRenderer| {
        let mut encoder = device.create_command_encoder(&Default::default());
        renderer.prepare(
            &mut encoder,
            device,
            queue,
            &pc,
            SplattingArgs {
                camera,
                viewport: Vector2::new(width, height),
                gaussian_scaling: 1.,
                max_sh_deg: pc.sh_deg(),
                mip_splatting: None,
                kernel_size: None,
                clipping_box: None,
                walltime: Duration::from_secs(100),
                scene_center: None,
                scene_extend: None,
                background_color: wgpu::Color::BLACK,
            },
            &mut None,
        );
        {
            let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
                label: None,
                color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                    view: &view,
                    resolve_target: None,
                    ops: wgpu::Operations { load: wgpu::LoadOp::Clear(wgpu::Color::BLACK), store: wgpu::StoreOp::Store },
                })],
                depth_stencil_attachment: None,
                timestamp_writes: None,
                occlusion_query_set: None,
            });
            renderer.render(&mut pass, &pc);
        }
        queue.submit([encoder.finish()]);
        device.poll(wgpu::PollType::Wait).unwrap();
    };
    for _ in 0..2 {
        frame(&mut renderer);
    }
    let mut times = Vec::new();
    for _ in 0..frames {
        let t = Instant::now();
        frame(&mut renderer);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    println!("{}", serde_json::json!({ "adapter": ctx.adapter.get_info().name, "mean_ms": mean, "frames": frames }));

    if let Some(png) = png {
        let bytes_per_row = (width * 4).next_multiple_of(256);
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: (bytes_per_row * height) as u64,
            usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
            mapped_at_creation: false,
        });
        let mut encoder = device.create_command_encoder(&Default::default());
        encoder.copy_texture_to_buffer(
            target.as_image_copy(),
            wgpu::TexelCopyBufferInfo {
                buffer: &buffer,
                layout: wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(bytes_per_row), rows_per_image: None },
            },
            wgpu::Extent3d { width, height, depth_or_array_layers: 1 },
        );
        queue.submit([encoder.finish()]);
        buffer.slice(..).map_async(wgpu::MapMode::Read, |_| ());
        device.poll(wgpu::PollType::Wait).unwrap();
        let data = buffer.slice(..).get_mapped_range();
        let mut rgb = Vec::with_capacity((width * height * 3) as usize);
        for y in 0..height {
            let row = &data[(y * bytes_per_row) as usize..];
            for x in 0..width as usize {
                rgb.extend_from_slice(&row[4 * x..4 * x + 3]);
            }
        }
        image::save_buffer(png, &rgb, width, height, image::ColorType::Rgb8).unwrap();
    }
}
EOF

echo "building web-splat in $ws (its own target folder)..." >&2
(cd "$ws" && CARGO_TARGET_DIR="$WORK/target" cargo build --release --bin difix3d_timing >&2)
websplat_bin="$WORK/target/release/difix3d_timing"

if [ -z "${DIFIX3D:-}" ]; then
    (cd "$repo" && cargo build --release >&2)
    DIFIX3D="${CARGO_TARGET_DIR:-$repo/target}/release/difix3d"
fi

# --- the camera (difix3d's camera JSON; the timing binary reads the same file) ------------------------
camera="$WORK/camera.json"
python3 - "$eye" "$target" "$focal" "$width" "$height" > "$camera" <<'EOF'
import json, math, sys
eye = [float(v) for v in sys.argv[1].split(",")]
target = [float(v) for v in sys.argv[2].split(",")]
f, w, h = float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
def norm(v):
    n = math.sqrt(sum(c * c for c in v)); return [c / n for c in v]
def cross(a, b):
    return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
z = norm([t - e for t, e in zip(target, eye)])   # OpenCV camera: z forward, y down, x right
down = [0.0, 1.0, 0.0]                            # scene up is -y
x = norm(cross(down, z))
y = cross(z, x)
rows = [[x[i], y[i], z[i], eye[i]] for i in range(3)] + [[0.0, 0.0, 0.0, 1.0]]
print(json.dumps({"name": "bench", "width": w, "height": h, "fx": f, "fy": f, "cx": w / 2, "cy": h / 2,
                  "world_from_camera": rows}))
EOF

# --- one run: both renderers, one after the other ----------------------------------------------------
ours_json="$("$DIFIX3D" bench render --scene "$scene" --camera-json "$camera" --frames "$frames" | python3 -c \
    'import json,sys; t=sys.stdin.read(); print(json.dumps(json.loads(t[:t.rindex("}")+1])))')"
theirs_json="$("$websplat_bin" "$scene" "$camera" "$frames" ${png:+"$png/web-splat.png"})"
if [ -n "$png" ]; then
    "$DIFIX3D" render --scene "$scene" --camera-json "$camera" --sh-degree 0 --out "$png" >/dev/null
fi
python3 - "$ours_json" "$theirs_json" <<'EOF'
import json, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"adapter: {ours['adapter']}; {ours['splats']} splats, {ours['width']}x{ours['height']}")
print(f"web-splat:                   {theirs['mean_ms']:8.1f} ms/frame")
print(f"difix3d viewer (display):    {ours['display_mean_ms']:8.1f} ms/frame (project {ours['display_project_ms']:.1f} / "
      f"sort {ours['display_sort_ms']:.1f} / draw {ours['display_draw_ms']:.1f})")
print(f"difix3d compute (training):  {ours['mean_ms']:8.1f} ms/frame (project {ours['project_ms']:.1f} / "
      f"depth sort {ours['depth_sort_ms']:.1f} / tile sort {ours['tile_sort_ms']:.1f} / raster {ours['rasterize_ms']:.1f}; "
      f"{ours['mean_intersections']} intersections)")
print(f"difix3d / web-splat: display {ours['display_mean_ms'] / theirs['mean_ms']:.2f}, "
      f"compute {ours['mean_ms'] / theirs['mean_ms']:.2f}")
EOF
