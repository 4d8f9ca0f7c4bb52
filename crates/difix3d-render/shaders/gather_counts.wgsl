// Between the depth sort and the tile sort: list each visible splat's tile count in depth order, then
// zeros up to index n, so the exclusive scan of the first n + 1 entries also yields the total number
// of intersections (at n); the visible count goes to n + 1, read back with that total.

@group(0) @binding(0) var<uniform> u: LengthUniforms;
@group(0) @binding(1) var<storage, read> tile_counts: array<u32>;
@group(0) @binding(2) var<storage, read> depth_ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> sorted_counts: array<u32>;
@group(0) @binding(4) var<storage, read> visible: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let j = flat_index(wg, nwg, li);
    let n_visible = visible[0];
    if j < n_visible {
        sorted_counts[j] = tile_counts[depth_ids[j]];
    } else if j <= u.n {
        sorted_counts[j] = 0u;
    } else if j == u.n + 1u {
        sorted_counts[j] = n_visible;
    }
}
