// After the scan of `visible_flags.wgsl`: copy the depth key and index of every visible splat to its
// slot (in index order, so the stable depth sort breaks ties by index as before), and store how many
// there are for the kernels after it.

@group(0) @binding(0) var<uniform> u: LengthUniforms;
@group(0) @binding(1) var<storage, read> tile_counts: array<u32>;
@group(0) @binding(2) var<storage, read> slots: array<u32>;
@group(0) @binding(3) var<storage, read> keys_in: array<u32>;
@group(0) @binding(4) var<storage, read_write> keys_out: array<u32>;
@group(0) @binding(5) var<storage, read_write> ids_out: array<u32>;
@group(0) @binding(6) var<storage, read_write> visible: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = flat_index(wg, nwg, li);
    if i < u.n {
        if tile_counts[i] > 0u {
            let slot = slots[i];
            keys_out[slot] = keys_in[i];
            ids_out[slot] = i;
        }
    } else if i == u.n {
        visible[0] = slots[i];
    }
}
