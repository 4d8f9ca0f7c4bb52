// Stage 4: find where each tile's run starts and ends in the tile-sorted intersection list.
// Tiles without splats keep the (0, 0) range the buffer was cleared to.

@group(0) @binding(0) var<uniform> u: LengthUniforms; // n: the number of intersections
@group(0) @binding(1) var<storage, read> isect_tiles: array<u32>;
@group(0) @binding(2) var<storage, read_write> ranges: array<vec2<u32>>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = flat_index(wg, nwg, li);
    let n = u.n;
    if i >= n {
        return;
    }
    let tile = isect_tiles[i];
    if i == 0u || isect_tiles[i - 1u] != tile {
        ranges[tile].x = i;
    }
    if i + 1u == n || isect_tiles[i + 1u] != tile {
        ranges[tile].y = i + 1u;
    }
}
