// Backward of stage 5: one 16x16 workgroup per tile walks the tile's splats back to front, from the
// last splat any of its pixels used, undoing the compositing to recover each splat's transmittance
// and accumulating dL/d(2D mean, conic, opacity, colour) per splat. Same skip rules as the forward
// pass, so exactly the splats that contributed get gradients.
//
// Gradients of many pixels land on one splat, so they are added with a compare-and-swap loop on the
// bit pattern (WGSL has no float atomics).

@group(0) @binding(0) var<uniform> u: RasterUniforms;
@group(0) @binding(1) var<storage, read> ranges: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read> isect_splats: array<u32>;
@group(0) @binding(3) var<storage, read> projected_mean: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> projected_conic: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> projected_color: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> out_color: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> out_last: array<u32>;
// dL/d(output colour, output alpha) per pixel.
@group(0) @binding(8) var<storage, read> v_out: array<vec4<f32>>;
// Per splat, 11 floats: d(mean2d.x, mean2d.y, conic.a, conic.b, conic.c, opacity, r, g, b), then
// (with u.flags.x == 1, gsplat's absgrad) the sums over pixels of |d(mean2d.x)|, |d(mean2d.y)|.
@group(0) @binding(9) var<storage, read_write> v_projected: array<atomic<u32>>;

const V_STRIDE: u32 = 11u;

var<workgroup> batch_ids: array<u32, 256>;
var<workgroup> batch_xy_opacity: array<vec4<f32>, 256>;
var<workgroup> batch_conic: array<vec4<f32>, 256>;
var<workgroup> batch_color: array<vec4<f32>, 256>;
var<workgroup> tile_last: atomic<u32>;
var<workgroup> shared_range: vec2<u32>;
var<workgroup> shared_end: u32;

fn add_f32(index: u32, value: f32) {
    if value == 0.0 {
        return;
    }
    var old = atomicLoad(&v_projected[index]);
    loop {
        let updated = bitcast<u32>(bitcast<f32>(old) + value);
        let result = atomicCompareExchangeWeak(&v_projected[index], old, updated);
        if result.exchanged {
            break;
        }
        old = result.old_value;
    }
}

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
        atomicStore(&tile_last, 0u);
    }
    let range = workgroupUniformLoad(&shared_range);

    // This pixel's final transmittance, the splats it used, and the gradient arriving at it.
    var transmittance = 1.0;
    var last = range.x;
    var v_color = vec3<f32>(0.0);
    var v_alpha_out = 0.0;
    if inside {
        let pix = py * u.width + px;
        transmittance = 1.0 - out_color[pix].w;
        last = out_last[pix];
        let v = v_out[pix];
        v_color = v.xyz;
        v_alpha_out = v.w;
    }
    let t_final = transmittance;
    // Colour of the splats behind the current one (plus background), as seen through them.
    var behind = vec3<f32>(0.0);
    let background_term = -t_final * dot(u.background.xyz, v_color) + t_final * v_alpha_out;
    atomicMax(&tile_last, last);
    workgroupBarrier();
    if li == 0u {
        shared_end = atomicLoad(&tile_last);
    }
    let end = workgroupUniformLoad(&shared_end);

    let count = end - range.x;
    let num_batches = (count + 255u) / 256u;
    for (var b = 0u; b < num_batches; b++) {
        // Batches from the back: [batch_start, batch_end).
        let batch_end = end - b * 256u;
        let batch_start = max(range.x, batch_end - min(batch_end, 256u));
        workgroupBarrier();
        let idx = batch_start + li;
        if idx < batch_end {
            let id = isect_splats[idx];
            let mean = projected_mean[id];
            batch_ids[li] = id;
            batch_xy_opacity[li] = vec4<f32>(mean.xy, mean.w, 0.0);
            batch_conic[li] = projected_conic[id];
            batch_color[li] = projected_color[id];
        }
        workgroupBarrier();
        if !inside {
            continue;
        }
        for (var j = batch_end; j > batch_start; j--) {
            let g = j - 1u;
            if g >= last {
                continue;
            }
            let k = g - batch_start;
            let xyo = batch_xy_opacity[k];
            let conic = batch_conic[k];
            let d = xyo.xy - pixel;
            let sigma = 0.5 * (conic.x * d.x * d.x + conic.z * d.y * d.y) + conic.y * d.x * d.y;
            if sigma < 0.0 {
                continue;
            }
            let gaussian = exp(-sigma);
            let raw_alpha = xyo.z * gaussian;
            let alpha = min(u.max_alpha, raw_alpha);
            if alpha < 1.0 / 255.0 {
                continue;
            }
            // Undo this splat: the transmittance in front of it.
            let one_minus = 1.0 - alpha;
            transmittance = transmittance / one_minus;
            let color = batch_color[k].xyz;
            let weight = alpha * transmittance;

            let v_rgb = weight * v_color;
            let v_a = dot(color * transmittance - behind / one_minus, v_color) + background_term / one_minus;
            behind += color * weight;

            var v_opacity = 0.0;
            var v_sigma = 0.0;
            if raw_alpha < u.max_alpha {
                v_opacity = v_a * gaussian;
                v_sigma = -v_a * alpha;
            }
            let v_conic = vec3<f32>(0.5 * d.x * d.x, d.x * d.y, 0.5 * d.y * d.y) * v_sigma;
            let v_xy = v_sigma * vec2<f32>(conic.x * d.x + conic.y * d.y, conic.y * d.x + conic.z * d.y);

            let o = batch_ids[k] * V_STRIDE;
            add_f32(o, v_xy.x);
            add_f32(o + 1u, v_xy.y);
            add_f32(o + 2u, v_conic.x);
            add_f32(o + 3u, v_conic.y);
            add_f32(o + 4u, v_conic.z);
            add_f32(o + 5u, v_opacity);
            add_f32(o + 6u, v_rgb.x);
            add_f32(o + 7u, v_rgb.y);
            add_f32(o + 8u, v_rgb.z);
            if u.flags.x == 1u {
                // gsplat's absgrad: each pixel's contribution in absolute value
                // (RasterizeToPixels3DGSBwd.cu, v_means2d_abs).
                add_f32(o + 9u, abs(v_xy.x));
                add_f32(o + 10u, abs(v_xy.y));
            }
        }
    }
}
