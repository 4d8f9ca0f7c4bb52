// Copies the rasterized colour into the 8-bit texture the viewer shows.

@group(0) @binding(0) var<uniform> u: PresentUniforms;
@group(0) @binding(1) var<storage, read> color: array<vec4<f32>>;
@group(0) @binding(2) var target_texture: texture_storage_2d<rgba8unorm, write>;

@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x >= u.width || id.y >= u.height {
        return;
    }
    let c = color[id.y * u.width + id.x];
    textureStore(target_texture, vec2<i32>(id.xy), vec4<f32>(clamp(c.xyz, vec3<f32>(0.0), vec3<f32>(1.0)), 1.0));
}
