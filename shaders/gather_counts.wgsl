// Between the depth sort and the tile sort: list each splat's tile count in depth order, plus a
// trailing zero so the exclusive scan of this list also yields the total number of intersections.

struct Uniforms {
    n: u32,
}

@group(0) @binding(0) var<uniform> u: Uniforms;
@group(0) @binding(1) var<storage, read> tile_counts: array<u32>;
@group(0) @binding(2) var<storage, read> depth_ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> sorted_counts: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let j = flat_index(wg, nwg, li);
    if j < u.n {
        sorted_counts[j] = tile_counts[depth_ids[j]];
    } else if j == u.n {
        sorted_counts[j] = 0u;
    }
}
