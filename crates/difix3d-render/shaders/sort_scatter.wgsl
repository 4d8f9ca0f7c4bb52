// Radix sort, pass part 2 of 2: move each key/value to its slot for one 4-bit digit, stably.
// Each of the 256 threads of a block takes SORT_KEYS_PER_THREAD consecutive keys and ranks them among
// themselves serially (no synchronisation); one workgroup prefix sum over every thread's digit counts,
// packed two 16-bit counters per u32 (lo: digits 0..7, hi: digits 8..15), then ranks each key among the
// keys of earlier threads. One scan per block instead of one per 256 keys: on a CPU adapter (lavapipe)
// the barriers and shared-memory traffic of the scan are most of a pass.

@group(0) @binding(0) var<uniform> u: SortUniforms;
@group(0) @binding(1) var<storage, read> keys_in: array<u32>;
@group(0) @binding(2) var<storage, read> values_in: array<u32>;
@group(0) @binding(3) var<storage, read> offsets: array<u32>;
@group(0) @binding(4) var<storage, read_write> keys_out: array<u32>;
@group(0) @binding(5) var<storage, read_write> values_out: array<u32>;
@group(0) @binding(6) var<storage, read> sort_len: array<u32>; // [0]: how many keys to sort

var<workgroup> scan_lo: array<vec4<u32>, 256>;
var<workgroup> scan_hi: array<vec4<u32>, 256>;

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
    let n = sort_len[0];
    let first = block * SORT_BLOCK + li * SORT_KEYS_PER_THREAD;
    var keys = array<u32, SORT_KEYS_PER_THREAD>();
    var values = array<u32, SORT_KEYS_PER_THREAD>();
    var ranks = array<u32, SORT_KEYS_PER_THREAD>();
    var lo = vec4<u32>(0u);
    var hi = vec4<u32>(0u);
    for (var k = 0u; k < SORT_KEYS_PER_THREAD; k++) {
        let i = first + k;
        if i < n {
            let key = keys_in[i];
            let digit = (key >> u.shift) & 15u;
            keys[k] = key;
            values[k] = values_in[i];
            ranks[k] = packed_count(lo, hi, digit);
            let one = 1u << ((digit % 2u) * 16u);
            let word = digit / 2u;
            if word < 4u {
                lo[word] += one;
            } else {
                hi[word - 4u] += one;
            }
        }
    }
    scan_lo[li] = lo;
    scan_hi[li] = hi;
    workgroupBarrier();
    // Hillis-Steele inclusive scan of the packed counts (no counter exceeds SORT_BLOCK < 2^16).
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
    let before_lo = scan_lo[li] - lo;
    let before_hi = scan_hi[li] - hi;
    for (var k = 0u; k < SORT_KEYS_PER_THREAD; k++) {
        let i = first + k;
        if i < n {
            let digit = (keys[k] >> u.shift) & 15u;
            let slot = offsets[digit * u.num_blocks + block] + packed_count(before_lo, before_hi, digit) + ranks[k];
            keys_out[slot] = keys[k];
            values_out[slot] = values[k];
        }
    }
}
