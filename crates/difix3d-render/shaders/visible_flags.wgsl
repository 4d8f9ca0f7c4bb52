// Between projection and the depth sort: 1 for every splat that touches a tile, 0 for the rest, plus
// a trailing 0, so the exclusive scan of this list gives each visible splat its slot in the compacted
// list (and, at index n, how many there are): only visible splats are depth-sorted.

@group(0) @binding(0) var<uniform> u: LengthUniforms;
@group(0) @binding(1) var<storage, read> tile_counts: array<u32>;
@group(0) @binding(2) var<storage, read_write> flags: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = flat_index(wg, nwg, li);
    if i < u.n {
        flags[i] = select(0u, 1u, tile_counts[i] > 0u);
    } else if i == u.n {
        flags[i] = 0u;
    }
}
