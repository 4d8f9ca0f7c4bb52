// Display path only (the viewer): the depth-sorted visible splats drawn by the hardware rasterizer,
// one triangle per splat around its ellipse, blended front to back ("under": dst += (1 - dst.a) * src,
// with premultiplied colour) into an 8-bit target, as web-splat and SuperSplat draw. Same projection,
// alpha rule (min(max_alpha, o * exp(-power)), skipped below 1/255) and order as the compute
// rasterizer, without its 1e-4 transmittance stop and at 8-bit precision, and no depth (a second
// blended target nearly doubles the cost where fragments are expensive): for looking at, not for
// gradients (training and recording use the compute path, whose forward state the backward pass
// reads). On lavapipe a frame's cost is mostly per triangle (setup and binning), not per fragment: one
// triangle per splat instead of a two-triangle quad, in one non-instanced draw, is what makes it fast.

@group(0) @binding(0) var<uniform> u: QuadUniforms;
@group(0) @binding(1) var<storage, read> projected_mean: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> projected_conic: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> projected_color: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> sorted_ids: array<u32>;

/// The equilateral triangle around the unit circle (its incircle).
const TRIANGLE = array<vec2<f32>, 3>(vec2<f32>(0.0, 2.0), vec2<f32>(1.7320508, -1.0), vec2<f32>(-1.7320508, -1.0));

struct VertexOut {
    @builtin(position) position: vec4<f32>,
    @location(0) @interpolate(flat) xy: vec2<f32>,
    @location(1) @interpolate(flat) conic: vec3<f32>,
    @location(2) @interpolate(flat) color_opacity: vec4<f32>,
}

@vertex
fn vs_main(@builtin(vertex_index) vertex: u32) -> VertexOut {
    var out: VertexOut;
    let id = sorted_ids[vertex / VERTICES_PER_SPLAT];
    let mean = projected_mean[id];
    let conic_radius = projected_conic[id];
    let conic = conic_radius.xyz;
    // The ellipse where the alpha can reach 1/255 (power <= ln(255 o)), its half-axes capped by the
    // 3-sigma radius the compute path bins tiles with, inside an equilateral triangle (scaled to it).
    let power = log(255.0 * mean.w);
    let det = conic.x * conic.z - conic.y * conic.y;
    if power <= 0.0 || det <= 0.0 {
        out.position = vec4<f32>(0.0, 0.0, 2.0, 1.0); // outside the clip volume: nothing drawn
        return out;
    }
    // The 2D covariance is the inverse of the conic; its eigenvalues and major axis.
    let sxx = conic.z / det;
    let syy = conic.x / det;
    let sxy = -conic.y / det;
    let mid = 0.5 * (sxx + syy);
    let rad = sqrt(max(0.25 * (sxx - syy) * (sxx - syy) + sxy * sxy, 0.0));
    let lambda = vec2<f32>(mid + rad, max(mid - rad, 0.0));
    var major = vec2<f32>(1.0, 0.0);
    if abs(sxy) > 1e-12 * mid {
        major = normalize(vec2<f32>(sxy, lambda.x - sxx));
    } else if syy > sxx {
        major = vec2<f32>(0.0, 1.0);
    }
    let minor = vec2<f32>(-major.y, major.x);
    let half_axes = min(sqrt(2.0 * power * lambda), vec2<f32>(conic_radius.w));
    var triangle = TRIANGLE;
    let corner = triangle[vertex % VERTICES_PER_SPLAT];
    let pixel = mean.xy + corner.x * half_axes.x * major + corner.y * half_axes.y * minor;
    out.position = vec4<f32>(pixel.x / u.size.x * 2.0 - 1.0, 1.0 - pixel.y / u.size.y * 2.0, 0.0, 1.0);
    out.xy = mean.xy;
    out.conic = conic;
    out.color_opacity = vec4<f32>(projected_color[id].xyz, mean.w);
    return out;
}

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    // @builtin(position) is the pixel centre (x + 0.5, y + 0.5), y down, as the compute path samples.
    let d = in.xy - in.position.xy;
    let conic = in.conic;
    let power = 0.5 * (conic.x * d.x * d.x + conic.z * d.y * d.y) + conic.y * d.x * d.y;
    let alpha = min(u.max_alpha, in.color_opacity.w * exp(-power));
    if power < 0.0 || alpha < 1.0 / 255.0 {
        discard;
    }
    return vec4<f32>(in.color_opacity.xyz * alpha, alpha);
}
