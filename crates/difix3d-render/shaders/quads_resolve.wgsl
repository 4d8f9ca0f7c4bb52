// Display path, after `quads.wgsl`: the blended premultiplied colour target into the rasterizer's
// colour buffer, with the background behind what is left of the transmittance, as the compute
// rasterizer writes it (so presenting and reading back the frame work the same).

@group(0) @binding(0) var<uniform> u: RasterUniforms;
@group(0) @binding(1) var color_target: texture_2d<f32>;
@group(0) @binding(2) var<storage, read_write> out_color: array<vec4<f32>>;

@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x >= u.width || id.y >= u.height {
        return;
    }
    let c = textureLoad(color_target, vec2<i32>(id.xy), 0);
    let alpha = c.w;
    let pix = id.y * u.width + id.x;
    out_color[pix] = vec4<f32>(c.xyz + (1.0 - alpha) * u.background.xyz, alpha);
}
