// Display path, before `quads.wgsl`: the indirect draw's arguments from the number of visible splats,
// one triangle (three vertices) per splat in one non-instanced draw.

@group(0) @binding(0) var<storage, read> visible_count: array<u32>;
@group(0) @binding(1) var<storage, read_write> draw_args: array<u32>; // vertex count, instance count, first vertex, first instance

@compute @workgroup_size(1)
fn main() {
    draw_args[0] = VERTICES_PER_SPLAT * visible_count[0];
    draw_args[1] = 1u;
    draw_args[2] = 0u;
    draw_args[3] = 0u;
}
