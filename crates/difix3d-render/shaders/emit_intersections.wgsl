// Stage 3: write one (tile, splat) pair per tile each splat touches (the tiles `project.wgsl`
// counted), in depth order, so that a stable sort by tile afterwards leaves every tile's splats sorted
// front to back.

@group(0) @binding(0) var<uniform> u: EmitUniforms;
@group(0) @binding(1) var<storage, read> depth_ids: array<u32>;
@group(0) @binding(2) var<storage, read> offsets: array<u32>;
@group(0) @binding(3) var<storage, read> tile_rects: array<vec2<u32>>;
@group(0) @binding(4) var<storage, read> tile_counts: array<u32>;
@group(0) @binding(5) var<storage, read_write> isect_tiles: array<u32>;
@group(0) @binding(6) var<storage, read_write> isect_splats: array<u32>;
@group(0) @binding(7) var<storage, read> projected_mean: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> projected_conic: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read> visible: array<u32>; // [0]: how many splats were depth-sorted

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let j = flat_index(wg, nwg, li);
    if j >= visible[0] {
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
    let mean = projected_mean[g];
    let conic = projected_conic[g].xyz;
    var slot = offsets[j];
    let end = slot + tile_counts[g];
    // The count came from the same test in `project.wgsl`; should a compiler have rounded a borderline
    // tile differently there, the splat still gets exactly `count` distinct tiles of its box, each
    // decided once (a tile taken only to fill the count holds nothing the splat adds: every pixel
    // skips it).
    var left_in_box = (x1 - x0) * (y1 - y0);
    for (var y = y0; y < y1; y++) {
        for (var x = x0; x < x1; x++) {
            if slot < end && (left_in_box <= end - slot
                || splat_touches_tile(mean.xy, conic, mean.w, vec2<u32>(x, y), u.size)) {
                isect_tiles[slot] = y * u.tiles_x + x;
                isect_splats[slot] = g;
                slot++;
            }
            left_in_box--;
        }
    }
}
