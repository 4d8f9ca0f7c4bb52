// Stage 3: write one (tile, splat) pair per tile each splat touches, in depth order, so that a stable
// sort by tile afterwards leaves every tile's splats sorted front to back.

struct Uniforms {
    n: u32,
    tiles_x: u32,
}

@group(0) @binding(0) var<uniform> u: Uniforms;
@group(0) @binding(1) var<storage, read> depth_ids: array<u32>;
@group(0) @binding(2) var<storage, read> offsets: array<u32>;
@group(0) @binding(3) var<storage, read> tile_rects: array<vec2<u32>>;
@group(0) @binding(4) var<storage, read> tile_counts: array<u32>;
@group(0) @binding(5) var<storage, read_write> isect_tiles: array<u32>;
@group(0) @binding(6) var<storage, read_write> isect_splats: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let j = flat_index(wg, nwg, li);
    if j >= u.n {
        return;
    }
    let g = depth_ids[j];
    if tile_counts[g] == 0u {
        return;
    }
    let rect = tile_rects[g];
    let x0 = rect.x & 0xffffu;
    let y0 = rect.x >> 16u;
    let x1 = rect.y & 0xffffu;
    let y1 = rect.y >> 16u;
    var slot = offsets[j];
    for (var y = y0; y < y1; y++) {
        for (var x = x0; x < x1; x++) {
            isect_tiles[slot] = y * u.tiles_x + x;
            isect_splats[slot] = g;
            slot++;
        }
    }
}
