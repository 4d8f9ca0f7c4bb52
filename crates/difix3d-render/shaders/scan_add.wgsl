// Exclusive prefix sum, level 2 of 2: add each block's (already scanned) offset to its elements.

@group(0) @binding(0) var<uniform> u: LengthUniforms;
@group(0) @binding(1) var<storage, read_write> data: array<u32>;
@group(0) @binding(2) var<storage, read> block_sums: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = flat_index(wg, nwg, li);
    if i < u.n {
        data[i] += block_sums[wg.y * nwg.x + wg.x];
    }
}
