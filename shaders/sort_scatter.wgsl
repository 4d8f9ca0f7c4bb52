// Radix sort, pass part 2 of 2: move each key/value to its slot for one 4-bit digit, stably.
// A block of 1024 keys is processed as 4 consecutive rounds of 256; within a round, a key's rank among
// earlier keys with the same digit comes from a workgroup prefix sum over one-hot digit vectors packed
// two 16-bit counters per u32 (lo: digits 0..7, hi: digits 8..15).

struct Uniforms {
    n: u32,
    shift: u32,
    num_blocks: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> u: Uniforms;
@group(0) @binding(1) var<storage, read> keys_in: array<u32>;
@group(0) @binding(2) var<storage, read> values_in: array<u32>;
@group(0) @binding(3) var<storage, read> offsets: array<u32>;
@group(0) @binding(4) var<storage, read_write> keys_out: array<u32>;
@group(0) @binding(5) var<storage, read_write> values_out: array<u32>;

var<workgroup> scan_lo: array<vec4<u32>, 256>;
var<workgroup> scan_hi: array<vec4<u32>, 256>;
var<workgroup> running: array<u32, 16>;

fn packed_count(lo: vec4<u32>, hi: vec4<u32>, digit: u32) -> u32 {
    let word = digit / 2u;
    var packed: u32;
    if word < 4u {
        packed = lo[word];
    } else {
        packed = hi[word - 4u];
    }
    return (packed >> ((digit % 2u) * 16u)) & 0xffffu;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let block = wg.y * nwg.x + wg.x;
    if li < 16u {
        running[li] = 0u;
    }
    workgroupBarrier();
    for (var r = 0u; r < 4u; r++) {
        let i = block * 1024u + r * 256u + li;
        var digit = 16u; // 16 = no key: contributes to no counter
        var key = 0u;
        var value = 0u;
        if i < u.n {
            key = keys_in[i];
            value = values_in[i];
            digit = (key >> u.shift) & 15u;
        }
        var lo = vec4<u32>(0u);
        var hi = vec4<u32>(0u);
        if digit < 16u {
            let one = 1u << ((digit % 2u) * 16u);
            let word = digit / 2u;
            if word < 4u {
                lo[word] = one;
            } else {
                hi[word - 4u] = one;
            }
        }
        scan_lo[li] = lo;
        scan_hi[li] = hi;
        workgroupBarrier();
        for (var offset = 1u; offset < 256u; offset = offset << 1u) {
            var a = scan_lo[li];
            var b = scan_hi[li];
            if li >= offset {
                a += scan_lo[li - offset];
                b += scan_hi[li - offset];
            }
            workgroupBarrier();
            scan_lo[li] = a;
            scan_hi[li] = b;
            workgroupBarrier();
        }
        if digit < 16u {
            let rank = packed_count(scan_lo[li], scan_hi[li], digit) - 1u;
            let slot = offsets[digit * u.num_blocks + block] + running[digit] + rank;
            keys_out[slot] = key;
            values_out[slot] = value;
        }
        workgroupBarrier();
        if li < 16u {
            running[li] += packed_count(scan_lo[255], scan_hi[255], li);
        }
        workgroupBarrier();
    }
}
