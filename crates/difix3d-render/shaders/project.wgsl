// Stage 1: project every Gaussian to the image (EWA splatting, as in 3DGS/gsplat), evaluate its
// view-dependent colour from SH, and count the 16x16 tiles of its 3-sigma box it can contribute to.

@group(0) @binding(0) var<uniform> u: ProjectUniforms;
@group(0) @binding(1) var<storage, read> means: array<f32>;
@group(0) @binding(2) var<storage, read> log_scales: array<f32>;
@group(0) @binding(3) var<storage, read> rotations: array<f32>;
@group(0) @binding(4) var<storage, read> opacity_logits: array<f32>;
// Only this dispatch's splats (u.chunk): splat i's coefficients start at (i - u.chunk.x) * coeffs * 3.
@group(0) @binding(5) var<storage, read> sh: array<f32>;
@group(0) @binding(6) var<storage, read_write> projected_mean: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> projected_conic: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> projected_color: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read_write> tile_counts: array<u32>;
@group(0) @binding(10) var<storage, read_write> depth_keys: array<u32>;
@group(0) @binding(11) var<storage, read_write> depth_ids: array<u32>;
@group(0) @binding(12) var<storage, read_write> tile_rects: array<vec2<u32>>; // packed (x | y << 16) min and max tile

const NEAR: f32 = 0.01;
const FAR: f32 = 1e10;
const TILE: f32 = 16.0;

// Colour from the SH coefficients of splat `i` (stored after `base`) in direction `d`, INRIA's sign
// conventions, offset by 0.5 and clamped at 0.
fn eval_sh(base: u32, degree: u32, d: vec3<f32>) -> vec3<f32> {
    let basis = sh_basis(degree, d);
    var c = vec3<f32>(0.0);
    for (var k = 0u; k < sh_count(degree); k++) {
        let o = base + k * 3u;
        c += basis[k] * vec3<f32>(sh[o], sh[o + 1u], sh[o + 2u]);
    }
    return max(c + 0.5, vec3<f32>(0.0));
}

fn cull(i: u32) {
    tile_counts[i] = 0u;
    depth_keys[i] = 0xffffffffu;
    projected_conic[i] = vec4<f32>(0.0);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = u.chunk.x + flat_index(wg, nwg, li);
    if i >= u.chunk.y {
        return;
    }
    depth_ids[i] = i;

    let mean = vec3<f32>(means[3u * i], means[3u * i + 1u], means[3u * i + 2u]);
    let p = (u.camera_from_world * vec4<f32>(mean, 1.0)).xyz;
    if p.z < NEAR || p.z > FAR {
        cull(i);
        return;
    }

    // 3D covariance R S S^T R^T, then into camera space.
    let s = exp(vec3<f32>(log_scales[3u * i], log_scales[3u * i + 1u], log_scales[3u * i + 2u]));
    let r = rotation_matrix(vec4<f32>(rotations[4u * i], rotations[4u * i + 1u], rotations[4u * i + 2u], rotations[4u * i + 3u]));
    let m = mat3x3<f32>(r[0] * s.x, r[1] * s.y, r[2] * s.z);
    let sigma_world = m * transpose(m);
    let w = mat3x3<f32>(u.camera_from_world[0].xyz, u.camera_from_world[1].xyz, u.camera_from_world[2].xyz);
    let sigma_cam = w * sigma_world * transpose(w);

    // Perspective Jacobian, with the mean clamped to 1.3x the view frustum as gsplat does.
    let fx = u.intrinsics.x;
    let fy = u.intrinsics.y;
    let cx = u.intrinsics.z;
    let cy = u.intrinsics.w;
    let width = f32(u.size.x);
    let height = f32(u.size.y);
    let j = perspective(p, u.intrinsics, vec2<f32>(width, height)).j;
    let rz = 1.0 / p.z;
    let cov = j * sigma_cam * transpose(j);
    let a = cov[0][0] + EPS2D;
    let b = cov[0][1];
    let c = cov[1][1] + EPS2D;
    let det = a * c - b * b;
    if det <= 0.0 {
        cull(i);
        return;
    }
    let conic = vec3<f32>(c / det, -b / det, a / det);
    var opacity = 1.0 / (1.0 + exp(-opacity_logits[i]));
    if (u.counts.w & MODE_ANTIALIASED) != 0u {
        opacity *= antialias_compensation(cov[0][0] * cov[1][1] - b * b, det);
    }

    let xy = vec2<f32>(fx * p.x * rz + cx, fy * p.y * rz + cy);
    // Half sizes of the screen box: 3 sigma of the major axis (INRIA's, the viewer's), or with gsplat's
    // constants gsplat 1.5.3's opacity-aware per-axis box out to where alpha falls to 1/255 (at most
    // 3.33 sigma), splats fainter than 1/255 culled (the opacity is the compensated one when
    // antialiased, as in gsplat).
    var box_half = vec2<f32>(0.0);
    if (u.counts.w & MODE_GSPLAT) != 0u {
        if opacity >= 1.0 / 255.0 {
            box_half = ceil(min(3.33, sqrt(2.0 * log(255.0 * opacity))) * sqrt(vec2<f32>(a, c)));
        }
    } else {
        let mid = 0.5 * (a + c);
        let lambda = mid + sqrt(max(0.01, mid * mid - det));
        box_half = vec2<f32>(ceil(3.0 * sqrt(lambda)));
    }
    let radius = max(box_half.x, box_half.y);
    if radius <= 0.0 || xy.x + box_half.x <= 0.0 || xy.x - box_half.x >= width || xy.y + box_half.y <= 0.0
        || xy.y - box_half.y >= height {
        cull(i);
        return;
    }

    let tiles = vec2<f32>(f32(u.size.z), f32(u.size.w));
    let tile_min = clamp(floor((xy - box_half) / TILE), vec2<f32>(0.0), tiles);
    let tile_max = clamp(ceil((xy + box_half) / TILE), vec2<f32>(0.0), tiles);
    let lo = vec2<u32>(tile_min);
    let hi = vec2<u32>(tile_max);
    // Only the tiles of the 3-sigma box where the splat can reach the 1/255 alpha threshold
    // (`emit_intersections.wgsl` walks the same tiles with the same test).
    var count = 0u;
    for (var ty = lo.y; ty < hi.y; ty++) {
        for (var tx = lo.x; tx < hi.x; tx++) {
            if splat_touches_tile(xy, conic, opacity, vec2<u32>(tx, ty), u.size.xy) {
                count++;
            }
        }
    }
    if count == 0u {
        cull(i);
        return;
    }

    let dir = normalize(mean - u.camera_position.xyz);
    let color = eval_sh((i - u.chunk.x) * u.counts.z * 3u, u.counts.y, dir);

    projected_mean[i] = vec4<f32>(xy, p.z, opacity);
    projected_conic[i] = vec4<f32>(conic, radius);
    projected_color[i] = vec4<f32>(color, 0.0);
    tile_counts[i] = count;
    depth_keys[i] = bitcast<u32>(p.z);
    tile_rects[i] = vec2<u32>(lo.x | (lo.y << 16u), hi.x | (hi.y << 16u));
}
