// Radix sort, pass part 1 of 2: histogram of one 4-bit digit over each block of SORT_BLOCK keys.
// Counts are stored digit-major (counts[digit * num_blocks + block]) so one exclusive scan over the
// whole array yields every block's first output slot for every digit.

@group(0) @binding(0) var<uniform> u: SortUniforms;
@group(0) @binding(1) var<storage, read> keys: array<u32>;
@group(0) @binding(2) var<storage, read_write> counts: array<u32>;
@group(0) @binding(3) var<storage, read> sort_len: array<u32>; // [0]: how many keys to sort

var<workgroup> histogram: array<atomic<u32>, 16>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let block = wg.y * nwg.x + wg.x;
    let n = sort_len[0];
    if li < 16u {
        atomicStore(&histogram[li], 0u);
    }
    workgroupBarrier();
    // Which thread counts which key does not matter here: read them 256 apart (coalesced).
    for (var r = 0u; r < SORT_KEYS_PER_THREAD; r++) {
        let i = block * SORT_BLOCK + r * 256u + li;
        if i < n {
            atomicAdd(&histogram[(keys[i] >> u.shift) & 15u], 1u);
        }
    }
    workgroupBarrier();
    if li < 16u && block < u.num_blocks {
        counts[li * u.num_blocks + block] = atomicLoad(&histogram[li]);
    }
}
