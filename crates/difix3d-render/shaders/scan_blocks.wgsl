// Exclusive prefix sum, level 1 of 2: scan each block of 256 values in place and record the block total.
// `render/sort.rs` scans the block totals recursively, then `scan_add.wgsl` adds them back.

@group(0) @binding(0) var<uniform> u: LengthUniforms;
@group(0) @binding(1) var<storage, read_write> data: array<u32>;
@group(0) @binding(2) var<storage, read_write> block_sums: array<u32>;

var<workgroup> buf: array<u32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = flat_index(wg, nwg, li);
    var value = 0u;
    if i < u.n {
        value = data[i];
    }
    buf[li] = value;
    workgroupBarrier();
    // Hillis-Steele inclusive scan.
    for (var offset = 1u; offset < 256u; offset = offset << 1u) {
        var sum = buf[li];
        if li >= offset {
            sum += buf[li - offset];
        }
        workgroupBarrier();
        buf[li] = sum;
        workgroupBarrier();
    }
    if i < u.n {
        data[i] = buf[li] - value;
    }
    let block = wg.y * nwg.x + wg.x;
    if li == 255u && block * 256u < u.n {
        block_sums[block] = buf[255];
    }
}
