// Shared helpers, prepended to every kernel by `render/kernels.rs` (WGSL has no #include).

// Flat element index for 1D work dispatched as a 2D grid of 256-wide workgroups
// (a grid dimension is limited to 65535 workgroups).
fn flat_index(wg: vec3<u32>, nwg: vec3<u32>, local_index: u32) -> u32 {
    return (wg.y * nwg.x + wg.x) * 256u + local_index;
}

// Radix sort blocks (`render/sort.rs` SORT_BLOCK): 256 threads of SORT_KEYS_PER_THREAD keys each.
const SORT_KEYS_PER_THREAD: u32 = 8u;
const SORT_BLOCK: u32 = 2048u;

// The display path (`quad_args.wgsl`, `quads.wgsl`) draws one triangle per visible splat.
const VERTICES_PER_SPLAT: u32 = 3u;

// The per-splat result of projection, consumed by the rasterizer and its backward pass, is three
// planes of vec4<f32> (structure of arrays, so each fits in one storage binding for scenes of millions
// of splats; `ProjectedPlanes` in render/rasterize.rs):
//   projected_mean[i]  = (pixel-space x, y, view-space depth, opacity = sigmoid(logit))
//   projected_conic[i] = (inverse 2D covariance a, b, c, screen radius; 0 when culled)
//   projected_color[i] = (view-dependent RGB from SH, unused)

// Splat maths shared by the projection and its backward pass.

const SH_C0: f32 = 0.28209479177387814;
const SH_C1: f32 = 0.4886025119029199;
const SH_C2 = array<f32, 5>(1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396);
const SH_C3 = array<f32, 7>(-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658, 1.445305721320277, -0.5900435899266435);

fn sh_count(degree: u32) -> u32 {
    return (degree + 1u) * (degree + 1u);
}

// The real SH basis up to `degree` (INRIA's sh_utils.eval_sh signs) at unit direction d; unused
// entries are 0.
fn sh_basis(degree: u32, d: vec3<f32>) -> array<f32, 16> {
    var b = array<f32, 16>();
    b[0] = SH_C0;
    if degree >= 1u {
        let x = d.x;
        let y = d.y;
        let z = d.z;
        b[1] = -SH_C1 * y;
        b[2] = SH_C1 * z;
        b[3] = -SH_C1 * x;
        if degree >= 2u {
            let xx = x * x;
            let yy = y * y;
            let zz = z * z;
            b[4] = SH_C2[0] * x * y;
            b[5] = SH_C2[1] * y * z;
            b[6] = SH_C2[2] * (2.0 * zz - xx - yy);
            b[7] = SH_C2[3] * x * z;
            b[8] = SH_C2[4] * (xx - yy);
            if degree >= 3u {
                b[9] = SH_C3[0] * y * (3.0 * xx - yy);
                b[10] = SH_C3[1] * x * y * z;
                b[11] = SH_C3[2] * y * (4.0 * zz - xx - yy);
                b[12] = SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy);
                b[13] = SH_C3[4] * x * (4.0 * zz - xx - yy);
                b[14] = SH_C3[5] * z * (xx - yy);
                b[15] = SH_C3[6] * x * (xx - 3.0 * yy);
            }
        }
    }
    return b;
}

// Rotation matrix of the quaternion q = (w, x, y, z), normalised here.
fn rotation_matrix(q: vec4<f32>) -> mat3x3<f32> {
    let n = normalize(q);
    let w = n.x;
    let x = n.y;
    let y = n.z;
    let z = n.w;
    // Columns of the usual row-major formula.
    return mat3x3<f32>(
        vec3<f32>(1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y + w * z), 2.0 * (x * z - w * y)),
        vec3<f32>(2.0 * (x * y - w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z + w * x)),
        vec3<f32>(2.0 * (x * z + w * y), 2.0 * (y * z - w * x), 1.0 - 2.0 * (x * x + y * y)),
    );
}

// The uniform structs of every shader, each defined once here and once in render/uniforms.rs (same
// name); a test there checks that the two layouts agree and that no shader defines one of its own.

// Uniforms of the projection stage and its backward pass.
// The screen-space dilation added to every splat's 2D covariance (gsplat's eps2d, INRIA's 0.3).
const EPS2D: f32 = 0.3;
const MODE_GSPLAT: u32 = 1u;
const MODE_ANTIALIASED: u32 = 2u;

// gsplat's "antialiased" mode (Mip-Splatting's 2D filter): the blur of EPS2D added to a splat's screen
// covariance also scales its opacity by sqrt(det(cov) / det(cov + EPS2D I)), so the dilation keeps the
// splat's total mass instead of adding to it. `det_orig` and `det_blur` are those two determinants.
fn antialias_compensation(det_orig: f32, det_blur: f32) -> f32 {
    return sqrt(max(0.0, det_orig / det_blur));
}

struct ProjectUniforms {
    camera_from_world: mat4x4<f32>,
    camera_position: vec4<f32>,
    intrinsics: vec4<f32>,   // fx, fy, cx, cy
    size: vec4<u32>,         // width, height, tiles_x, tiles_y
    counts: vec4<u32>,       // splat count, SH degree to evaluate, SH coefficients stored per splat,
                             // mode bits: 1 gsplat's constants (else INRIA's: RasterConstants),
                             // 2 antialiased (gsplat's rasterize_mode="antialiased")
    chunk: vec4<u32>,        // the projection's dispatch: first splat, one past the last (its SH
                             // coefficients are bound from the first splat on); unused by the backward
}

// Uniforms of the compositing stage and its backward pass.
struct RasterUniforms {
    width: u32,
    height: u32,
    tiles_x: u32,
    max_alpha: f32,          // alpha clamp: 0.99 (INRIA's constants) or 0.999 (gsplat's)
    background: vec4<f32>,
    flags: vec4<u32>,        // x: the backward pass also sums |dL/d mean2d| per pixel (absgrad); yzw unused
}

// Uniforms of the kernels that need only an element count (the scans, visible_flags, compact_visible,
// gather_counts, tile_ranges), padded to the 16 bytes every uniform buffer here has.
struct LengthUniforms {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// Uniforms of one pass of the radix sort (sort_count, sort_scatter).
struct SortUniforms {
    _n: u32,                 // unused: the length comes from `sort_len`
    shift: u32,
    num_blocks: u32,
    _pad: u32,
}

// Uniforms of emit_intersections.
struct EmitUniforms {
    n: u32,
    tiles_x: u32,
    size: vec2<u32>,         // image width, height
}

// Uniforms of present.
struct PresentUniforms {
    width: u32,
    height: u32,
    _pad: vec2<u32>,
}

// Uniforms of the display path's triangles (quads).
struct QuadUniforms {
    size: vec2<f32>,         // image width, height in pixels
    max_alpha: f32,          // the alpha clamp of the compute path's constants
    _pad: f32,
}

// The perspective Jacobian J (2x3) at camera-space mean p, with p's x/z and y/z clamped to 1.3x the
// view frustum as gsplat does; `t` is the clamped (x, y) (= p.z times the clamped ratio) and `free`
// says per axis whether the ratio was inside the limits (the backward pass differentiates J there).
struct Perspective {
    j: mat3x2<f32>,
    t: vec2<f32>,
    free: vec2<bool>,
}

fn perspective(p: vec3<f32>, intrinsics: vec4<f32>, size: vec2<f32>) -> Perspective {
    let f = intrinsics.xy;
    let c = intrinsics.zw;
    let tan_fov = 0.5 * size / f;
    let lim_pos = (size - c) / f + 0.3 * tan_fov;
    let lim_neg = c / f + 0.3 * tan_fov;
    let rz = 1.0 / p.z;
    let rz2 = rz * rz;
    let ratio = p.xy * rz;
    let t = p.z * min(lim_pos, max(-lim_neg, ratio));
    // WGSL matrices are column-major: mat3x2 has 3 columns of vec2.
    let j = mat3x2<f32>(vec2<f32>(f.x * rz, 0.0), vec2<f32>(0.0, f.y * rz), vec2<f32>(-f.x * t.x * rz2, -f.y * t.y * rz2));
    return Perspective(j, t, (ratio >= -lim_neg) & (ratio <= lim_pos));
}

// Whether a projected splat can add anything to tile `tile` (TILE_SIZE x TILE_SIZE pixels, cut at the
// image border `size`): the smallest Mahalanobis power 0.5 d^T conic d over the tile's pixel centres
// against the power at which o * exp(-power) falls below the rasterizer's 1/255 skip threshold. Exact
// for the convex quadratic (its minimum over a rectangle lies at the mean or on an edge) and slightly
// conservative, so a tile it rejects is one where every pixel would skip the splat anyway: dropping it
// changes no pixel, only the work (gsplat's and Brush's opacity-aware, ellipse-exact tile binning).
const TILE_SIZE: u32 = 16u;

fn splat_touches_tile(xy: vec2<f32>, conic: vec3<f32>, opacity: f32, tile: vec2<u32>, size: vec2<u32>) -> bool {
    let limit = log(255.0 * opacity) + 1e-3;
    if limit < 0.0 {
        return false;
    }
    let lo = vec2<f32>(tile * TILE_SIZE) + 0.5 - xy;
    let hi = vec2<f32>(min((tile + 1u) * TILE_SIZE, size)) - 0.5 - xy;
    if lo.x <= 0.0 && hi.x >= 0.0 && lo.y <= 0.0 && hi.y >= 0.0 {
        return true;
    }
    let a = conic.x;
    let b = conic.y;
    let c = conic.z;
    // On the vertical edges x = X: the power is smallest at dy = -b X / c (clamped to the edge).
    let y_lo = clamp(-b * lo.x / c, lo.y, hi.y);
    let y_hi = clamp(-b * hi.x / c, lo.y, hi.y);
    let x_lo = clamp(-b * lo.y / a, lo.x, hi.x);
    let x_hi = clamp(-b * hi.y / a, lo.x, hi.x);
    let p0 = 0.5 * (a * lo.x * lo.x + c * y_lo * y_lo) + b * lo.x * y_lo;
    let p1 = 0.5 * (a * hi.x * hi.x + c * y_hi * y_hi) + b * hi.x * y_hi;
    let p2 = 0.5 * (a * x_lo * x_lo + c * lo.y * lo.y) + b * x_lo * lo.y;
    let p3 = 0.5 * (a * x_hi * x_hi + c * hi.y * hi.y) + b * x_hi * hi.y;
    return min(min(p0, p1), min(p2, p3)) * (1.0 - 1e-5) <= limit;
}
