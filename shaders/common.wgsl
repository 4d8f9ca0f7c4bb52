// Shared helpers, prepended to every kernel by `render/kernels.rs` (WGSL has no #include).

// Flat element index for 1D work dispatched as a 2D grid of 256-wide workgroups
// (a grid dimension is limited to 65535 workgroups).
fn flat_index(wg: vec3<u32>, nwg: vec3<u32>, local_index: u32) -> u32 {
    return (wg.y * nwg.x + wg.x) * 256u + local_index;
}

// The per-splat result of projection, consumed by the rasterizer (and later by its backward pass).
struct Projected {
    xy: vec2<f32>,      // pixel-space mean
    depth: f32,         // view-space z
    opacity: f32,       // sigmoid(opacity logit)
    conic: vec4<f32>,   // inverse 2D covariance (a, b, c) and the screen radius in w
    color: vec4<f32>,   // view-dependent RGB from SH (w unused)
}
