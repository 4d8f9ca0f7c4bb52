// Stage 5: one 16x16 workgroup per tile composites the tile's splats front to back, loading them into
// workgroup memory 256 at a time. Same rules as 3DGS/gsplat: alpha = min(0.99 or 0.999, o * exp(-sigma)), splats
// with alpha < 1/255 are skipped, and a pixel stops before transmittance would fall to 1e-4.
// Besides colour, alpha and depth it keeps per pixel the index just past the last splat it used, which
// the backward pass needs to walk the same splats in reverse.

@group(0) @binding(0) var<uniform> u: RasterUniforms;
@group(0) @binding(1) var<storage, read> ranges: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read> isect_splats: array<u32>;
@group(0) @binding(3) var<storage, read> projected_mean: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> projected_conic: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> projected_color: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> out_color: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> out_depth: array<f32>;
@group(0) @binding(8) var<storage, read_write> out_last: array<u32>;

var<workgroup> batch_xy_opacity: array<vec4<f32>, 256>;
var<workgroup> batch_conic: array<vec4<f32>, 256>;
var<workgroup> batch_color_depth: array<vec4<f32>, 256>;
var<workgroup> done_count: atomic<u32>;
var<workgroup> shared_u32: u32;
var<workgroup> shared_range: vec2<u32>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let tile = wg.y * u.tiles_x + wg.x;
    let px = wg.x * 16u + lid.x;
    let py = wg.y * 16u + lid.y;
    let inside = px < u.width && py < u.height;
    let pixel = vec2<f32>(f32(px) + 0.5, f32(py) + 0.5);

    if li == 0u {
        shared_range = ranges[tile];
        atomicStore(&done_count, 0u);
    }
    let range = workgroupUniformLoad(&shared_range);

    var done = !inside;
    if done {
        atomicAdd(&done_count, 1u);
    }
    var transmittance = 1.0;
    var color = vec3<f32>(0.0);
    var depth = 0.0;
    var last = range.x;

    let num_batches = (range.y - range.x + 255u) / 256u;
    for (var b = 0u; b < num_batches; b++) {
        workgroupBarrier();
        if li == 0u {
            shared_u32 = atomicLoad(&done_count);
        }
        if workgroupUniformLoad(&shared_u32) >= 256u {
            break;
        }
        let batch_start = range.x + b * 256u;
        let idx = batch_start + li;
        if idx < range.y {
            let id = isect_splats[idx];
            let mean = projected_mean[id];
            // w: a power beyond which the splat's alpha is certainly below 1/255 (see below).
            batch_xy_opacity[li] = vec4<f32>(mean.xy, mean.w, log(255.0 * mean.w) + 1e-3);
            batch_conic[li] = projected_conic[id];
            batch_color_depth[li] = vec4<f32>(projected_color[id].xyz, mean.z);
        }
        workgroupBarrier();
        let batch_size = min(256u, range.y - batch_start);
        for (var k = 0u; k < batch_size && !done; k++) {
            let xyo = batch_xy_opacity[k];
            let conic = batch_conic[k];
            let d = xyo.xy - pixel;
            let sigma = 0.5 * (conic.x * d.x * d.x + conic.z * d.y * d.y) + conic.y * d.x * d.y;
            // Past w, o * exp(-sigma) < exp(-1e-3) / 255: the 1/255 test below would skip the splat,
            // so skip it before paying for the exponential (the same splats are used either way).
            if sigma < 0.0 || sigma > xyo.w {
                continue;
            }
            let alpha = min(u.max_alpha, xyo.z * exp(-sigma));
            if alpha < 1.0 / 255.0 {
                continue;
            }
            let next_t = transmittance * (1.0 - alpha);
            if next_t <= 1e-4 {
                done = true;
                atomicAdd(&done_count, 1u);
                break;
            }
            let cd = batch_color_depth[k];
            let weight = alpha * transmittance;
            color += cd.xyz * weight;
            depth += cd.w * weight;
            transmittance = next_t;
            last = batch_start + k + 1u;
        }
    }

    if inside {
        let pix = py * u.width + px;
        let alpha = 1.0 - transmittance;
        out_color[pix] = vec4<f32>(color + transmittance * u.background.xyz, alpha);
        out_depth[pix] = select(0.0, depth / alpha, alpha > 1e-10);
        out_last[pix] = last;
    }
}
