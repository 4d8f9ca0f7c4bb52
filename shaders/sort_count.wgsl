// Radix sort, pass part 1 of 2: histogram of one 4-bit digit over each block of 1024 keys.
// Counts are stored digit-major (counts[digit * num_blocks + block]) so one exclusive scan over the
// whole array yields every block's first output slot for every digit.

struct Uniforms {
    n: u32,
    shift: u32,
    num_blocks: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> u: Uniforms;
@group(0) @binding(1) var<storage, read> keys: array<u32>;
@group(0) @binding(2) var<storage, read_write> counts: array<u32>;

var<workgroup> histogram: array<atomic<u32>, 16>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let block = wg.y * nwg.x + wg.x;
    if li < 16u {
        atomicStore(&histogram[li], 0u);
    }
    workgroupBarrier();
    for (var r = 0u; r < 4u; r++) {
        let i = block * 1024u + r * 256u + li;
        if i < u.n {
            atomicAdd(&histogram[(keys[i] >> u.shift) & 15u], 1u);
        }
    }
    workgroupBarrier();
    if li < 16u && block < u.num_blocks {
        counts[li * u.num_blocks + block] = atomicLoad(&histogram[li]);
    }
}
