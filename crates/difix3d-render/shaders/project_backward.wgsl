// Backward of stage 1: from dL/d(2D mean, conic, opacity, colour) of each splat (accumulated by
// rasterize_backward) to dL/d(means, log scales, quaternions, opacity logits, SH coefficients).
// Recomputes the forward quantities of project.wgsl and applies the chain rule by hand:
//   conic = (J W R S S^T R^T W^T J^T + 0.3 I)^-1,  mean2d = (fx x/z + cx, fy y/z + cy),
//   colour = max(SH(dir) + 0.5, 0) with dir = normalize(mean - camera),  opacity = sigmoid(logit).

@group(0) @binding(0) var<uniform> u: ProjectUniforms;
@group(0) @binding(1) var<storage, read> means: array<f32>;
@group(0) @binding(2) var<storage, read> log_scales: array<f32>;
@group(0) @binding(3) var<storage, read> rotations: array<f32>;
@group(0) @binding(4) var<storage, read> opacity_logits: array<f32>;
@group(0) @binding(5) var<storage, read> sh: array<f32>;
@group(0) @binding(6) var<storage, read> projected_conic: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> v_projected: array<f32>;
@group(0) @binding(8) var<storage, read_write> v_means: array<f32>;
@group(0) @binding(9) var<storage, read_write> v_log_scales: array<f32>;
@group(0) @binding(10) var<storage, read_write> v_rotations: array<f32>;
@group(0) @binding(11) var<storage, read_write> v_opacity_logits: array<f32>;
@group(0) @binding(12) var<storage, read_write> v_sh: array<f32>;
@group(0) @binding(13) var<storage, read_write> v_mean2d: array<f32>;
// Sums over pixels of |each pixel's dL/d mean2d| (gsplat's absgrad; zeros unless the rasterize
// backward pass accumulated them).
@group(0) @binding(14) var<storage, read_write> v_mean2d_abs: array<f32>;

const V_STRIDE: u32 = 11u;

// d(basis_k)/d(dir) for the SH basis of common.wgsl.
fn sh_basis_grad(degree: u32, d: vec3<f32>) -> array<vec3<f32>, 16> {
    var g = array<vec3<f32>, 16>();
    if degree >= 1u {
        let x = d.x;
        let y = d.y;
        let z = d.z;
        g[1] = vec3<f32>(0.0, -SH_C1, 0.0);
        g[2] = vec3<f32>(0.0, 0.0, SH_C1);
        g[3] = vec3<f32>(-SH_C1, 0.0, 0.0);
        if degree >= 2u {
            let xx = x * x;
            let yy = y * y;
            let zz = z * z;
            g[4] = SH_C2[0] * vec3<f32>(y, x, 0.0);
            g[5] = SH_C2[1] * vec3<f32>(0.0, z, y);
            g[6] = SH_C2[2] * vec3<f32>(-2.0 * x, -2.0 * y, 4.0 * z);
            g[7] = SH_C2[3] * vec3<f32>(z, 0.0, x);
            g[8] = SH_C2[4] * vec3<f32>(2.0 * x, -2.0 * y, 0.0);
            if degree >= 3u {
                g[9] = SH_C3[0] * vec3<f32>(6.0 * x * y, 3.0 * xx - 3.0 * yy, 0.0);
                g[10] = SH_C3[1] * vec3<f32>(y * z, x * z, x * y);
                g[11] = SH_C3[2] * vec3<f32>(-2.0 * x * y, 4.0 * zz - xx - 3.0 * yy, 8.0 * y * z);
                g[12] = SH_C3[3] * vec3<f32>(-6.0 * x * z, -6.0 * y * z, 6.0 * zz - 3.0 * xx - 3.0 * yy);
                g[13] = SH_C3[4] * vec3<f32>(4.0 * zz - 3.0 * xx - yy, -2.0 * x * y, 8.0 * x * z);
                g[14] = SH_C3[5] * vec3<f32>(2.0 * x * z, -2.0 * y * z, xx - yy);
                g[15] = SH_C3[6] * vec3<f32>(3.0 * xx - 3.0 * yy, -6.0 * x * y, 0.0);
            }
        }
    }
    return g;
}

// dL/dq for the normalised quaternion n = (w, x, y, z), given G[c][r] = dL/dR[r][c].
fn rotation_vjp(n: vec4<f32>, g: mat3x3<f32>) -> vec4<f32> {
    let w = n.x;
    let x = n.y;
    let y = n.z;
    let z = n.w;
    // g(r, c) = dL/dR[r][c]; WGSL matrices are indexed [column][row].
    let g00 = g[0][0];
    let g01 = g[1][0];
    let g02 = g[2][0];
    let g10 = g[0][1];
    let g11 = g[1][1];
    let g12 = g[2][1];
    let g20 = g[0][2];
    let g21 = g[1][2];
    let g22 = g[2][2];
    return 2.0 * vec4<f32>(
        -z * g01 + y * g02 + z * g10 - x * g12 - y * g20 + x * g21,
        y * g01 + z * g02 + y * g10 - 2.0 * x * g11 - w * g12 + z * g20 + w * g21 - 2.0 * x * g22,
        -2.0 * y * g00 + x * g01 + w * g02 + x * g10 + z * g12 - w * g20 + z * g21 - 2.0 * y * g22,
        -2.0 * z * g00 - w * g01 + x * g02 + w * g10 - 2.0 * z * g11 + y * g12 + x * g20 + y * g21,
    );
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = flat_index(wg, nwg, li);
    let n = u.counts.x;
    if i >= n {
        return;
    }
    let coeffs = u.counts.z;
    // Culled splats (radius 0) got no gradient.
    if projected_conic[i].w <= 0.0 {
        return;
    }
    let vo = i * V_STRIDE;
    let v_xy = vec2<f32>(v_projected[vo], v_projected[vo + 1u]);
    let v_conic = vec3<f32>(v_projected[vo + 2u], v_projected[vo + 3u], v_projected[vo + 4u]);
    let v_opacity = v_projected[vo + 5u];
    let v_color = vec3<f32>(v_projected[vo + 6u], v_projected[vo + 7u], v_projected[vo + 8u]);
    v_mean2d[2u * i] = v_xy.x;
    v_mean2d[2u * i + 1u] = v_xy.y;
    v_mean2d_abs[2u * i] = v_projected[vo + 9u];
    v_mean2d_abs[2u * i + 1u] = v_projected[vo + 10u];

    // Colour: SH coefficients and, through the view direction, the mean.
    let mean = vec3<f32>(means[3u * i], means[3u * i + 1u], means[3u * i + 2u]);
    let offset = mean - u.camera_position.xyz;
    let dist = length(offset);
    let dir = offset / dist;
    let degree = u.counts.y;
    let basis = sh_basis(degree, dir);
    let base = i * coeffs * 3u;
    var raw = vec3<f32>(0.0);
    for (var k = 0u; k < sh_count(degree); k++) {
        let o = base + k * 3u;
        raw += basis[k] * vec3<f32>(sh[o], sh[o + 1u], sh[o + 2u]);
    }
    // max(raw + 0.5, 0) passes the gradient where it did not clamp, including exactly at 0 (as
    // torch.clamp_min does; black splats sit exactly there).
    let v_raw = select(vec3<f32>(0.0), v_color, raw + 0.5 >= vec3<f32>(0.0));
    let basis_grad = sh_basis_grad(degree, dir);
    var v_dir = vec3<f32>(0.0);
    for (var k = 0u; k < coeffs; k++) {
        let o = base + k * 3u;
        if k < sh_count(degree) {
            let v = basis[k] * v_raw;
            v_sh[o] = v.x;
            v_sh[o + 1u] = v.y;
            v_sh[o + 2u] = v.z;
            let c = vec3<f32>(sh[o], sh[o + 1u], sh[o + 2u]);
            v_dir += dot(c, v_raw) * basis_grad[k];
        } else {
            v_sh[o] = 0.0;
            v_sh[o + 1u] = 0.0;
            v_sh[o + 2u] = 0.0;
        }
    }
    var v_mean = (v_dir - dir * dot(dir, v_dir)) / dist;

    // Forward geometry again.
    let w = mat3x3<f32>(u.camera_from_world[0].xyz, u.camera_from_world[1].xyz, u.camera_from_world[2].xyz);
    let p = (u.camera_from_world * vec4<f32>(mean, 1.0)).xyz;
    let s = exp(vec3<f32>(log_scales[3u * i], log_scales[3u * i + 1u], log_scales[3u * i + 2u]));
    let q = vec4<f32>(rotations[4u * i], rotations[4u * i + 1u], rotations[4u * i + 2u], rotations[4u * i + 3u]);
    let qn = normalize(q);
    let r = rotation_matrix(q);
    let m = mat3x3<f32>(r[0] * s.x, r[1] * s.y, r[2] * s.z);
    let sigma_world = m * transpose(m);
    let sigma_cam = w * sigma_world * transpose(w);

    let fx = u.intrinsics.x;
    let fy = u.intrinsics.y;
    let persp = perspective(p, u.intrinsics, vec2<f32>(f32(u.size.x), f32(u.size.y)));
    let j = persp.j;
    let rz = 1.0 / p.z;
    let rz2 = rz * rz;

    // conic = inverse(cov): dL/dcov = -conic G conic, G the symmetric gradient of the conic matrix.
    let conic = projected_conic[i];
    let ci = mat2x2<f32>(vec2<f32>(conic.x, conic.y), vec2<f32>(conic.y, conic.z));
    let gm = mat2x2<f32>(vec2<f32>(v_conic.x, 0.5 * v_conic.y), vec2<f32>(0.5 * v_conic.y, v_conic.z));
    var v_cov = -1.0 * (ci * gm * ci);

    // Opacity: the rasterizer's is sigmoid(logit), times the compensation when antialiased, whose
    // gradient reaches the screen covariance as gsplat's add_blur_vjp does it (with its 1e-6).
    let opacity = 1.0 / (1.0 + exp(-opacity_logits[i]));
    var compensation = 1.0;
    if (u.counts.w & MODE_ANTIALIASED) != 0u {
        let cov = j * sigma_cam * transpose(j);
        let det_orig = cov[0][0] * cov[1][1] - cov[0][1] * cov[1][0];
        let det_blur = (cov[0][0] + EPS2D) * (cov[1][1] + EPS2D) - cov[0][1] * cov[1][0];
        compensation = antialias_compensation(det_orig, det_blur);
        let v_sqr_comp = v_opacity * opacity * 0.5 / (compensation + 1e-6);
        let one_minus_sqr_comp = 1.0 - compensation * compensation;
        let det_conic = conic.x * conic.z - conic.y * conic.y;
        let identity = mat2x2<f32>(1.0, 0.0, 0.0, 1.0);
        v_cov += v_sqr_comp * (one_minus_sqr_comp * ci - EPS2D * det_conic * identity);
    }
    v_opacity_logits[i] = v_opacity * compensation * opacity * (1.0 - opacity);

    // cov = J Sigma_cam J^T.
    let v_sigma_cam = transpose(j) * v_cov * j;
    let v_j = 2.0 * (v_cov * j * sigma_cam);
    // Sigma_cam = W Sigma_world W^T; Sigma_world = M M^T; M = R diag(s).
    let v_sigma_world = transpose(w) * v_sigma_cam * w;
    let v_m = 2.0 * (v_sigma_world * m);
    let v_r = mat3x3<f32>(v_m[0] * s.x, v_m[1] * s.y, v_m[2] * s.z);
    let v_s = vec3<f32>(dot(r[0], v_m[0]), dot(r[1], v_m[1]), dot(r[2], v_m[2]));
    let v_ls = v_s * s;
    v_log_scales[3u * i] = v_ls.x;
    v_log_scales[3u * i + 1u] = v_ls.y;
    v_log_scales[3u * i + 2u] = v_ls.z;
    let v_qn = rotation_vjp(qn, v_r);
    let v_q = (v_qn - qn * dot(qn, v_qn)) / length(q);
    v_rotations[4u * i] = v_q.x;
    v_rotations[4u * i + 1u] = v_q.y;
    v_rotations[4u * i + 2u] = v_q.z;
    v_rotations[4u * i + 3u] = v_q.w;

    // The camera-space mean, through the 2D mean and through J (whose x/z, y/z are clamped).
    var v_p = vec3<f32>(fx * rz * v_xy.x, fy * rz * v_xy.y, -(fx * p.x * v_xy.x + fy * p.y * v_xy.y) * rz2);
    // J00 = fx/z, J11 = fy/z.
    v_p.z += -fx * rz2 * v_j[0][0] - fy * rz2 * v_j[1][1];
    // J02 = -fx tx/z^2 with tx = x (free) or z * limit (clamped); likewise J12.
    if persp.free.x {
        v_p.x += -fx * rz2 * v_j[2][0];
        v_p.z += 2.0 * fx * p.x * rz2 * rz * v_j[2][0];
    } else {
        v_p.z += fx * (persp.t.x * rz) * rz2 * v_j[2][0];
    }
    if persp.free.y {
        v_p.y += -fy * rz2 * v_j[2][1];
        v_p.z += 2.0 * fy * p.y * rz2 * rz * v_j[2][1];
    } else {
        v_p.z += fy * (persp.t.y * rz) * rz2 * v_j[2][1];
    }
    v_mean += transpose(w) * v_p;
    v_means[3u * i] = v_mean.x;
    v_means[3u * i + 1u] = v_mean.y;
    v_means[3u * i + 2u] = v_mean.z;
}
