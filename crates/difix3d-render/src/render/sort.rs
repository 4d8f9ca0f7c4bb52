//! GPU prefix sums and a stable LSD radix sort (4 bits per pass), the building blocks of tile binning.
//!
//! Stability is what makes the two-sort scheme work: splats are first sorted by depth, their tile
//! intersections emitted in that order, then stably sorted by tile id, which leaves every tile's list
//! ordered front to back without 64-bit keys (WGSL has no u64).

use super::buffers::{storage_from, uniform, Growable};
use super::gpu::GpuError;
use super::kernels::{bind, dispatch_1d, Kernels};
use super::uniforms::{LengthUniforms, SortUniforms};

/// Keys per radix-sort block (`SORT_BLOCK` in `shaders/common.wgsl`).
const SORT_BLOCK: u32 = 2048;

/// Scratch memory for scans and sorts, reused across frames.
#[derive(Default)]
pub struct SortScratch {
    scan_levels: Vec<Growable>,
    counts: Growable,
}

impl SortScratch {
    pub fn capacity(&self) -> u64 {
        self.counts.capacity() + self.scan_levels.iter().map(Growable::capacity).sum::<u64>()
    }
}

/// Records an in-place exclusive prefix sum of the first `n` u32s of `data`.
pub fn encode_exclusive_scan(
    device: &wgpu::Device,
    kernels: &Kernels,
    encoder: &mut wgpu::CommandEncoder,
    data: &wgpu::Buffer,
    n: u32,
    levels: &mut Vec<Growable>,
    level: usize,
) -> Result<(), GpuError> {
    if n == 0 {
        return Ok(());
    }
    let groups = n.div_ceil(256);
    if levels.len() <= level {
        levels.resize_with(level + 1, Growable::default);
    }
    let sums = levels[level]
        .ensure(device, groups as u64 * 4, "scan block sums")?
        .clone();
    let params = uniform(device, &LengthUniforms::new(n));
    let bg = bind(
        device,
        &kernels.scan_blocks,
        &[
            ("u", params.as_entire_binding()),
            ("data", data.as_entire_binding()),
            ("block_sums", sums.as_entire_binding()),
        ],
    );
    dispatch_1d(encoder, &kernels.scan_blocks, &bg, groups);
    if groups > 1 {
        encode_exclusive_scan(device, kernels, encoder, &sums, groups, levels, level + 1)?;
        let bg = bind(
            device,
            &kernels.scan_add,
            &[
                ("u", params.as_entire_binding()),
                ("data", data.as_entire_binding()),
                ("block_sums", sums.as_entire_binding()),
            ],
        );
        dispatch_1d(encoder, &kernels.scan_add, &bg, groups);
    }
    Ok(())
}

/// How many pairs a sort covers: known on the CPU, or a u32 that earlier commands write to the first
/// word of a GPU buffer (at most `max`), so a frame need not wait for the count.
#[derive(Clone, Copy)]
pub enum SortLen<'a> {
    Cpu(u32),
    Gpu { max: u32, count: &'a wgpu::Buffer },
}

/// Records a stable sort of `len` (key, value) pairs by the low `bits` bits of the key. The pairs start
/// in `keys[0]`/`values[0]`; the returned index (0 or 1) says which pair of buffers holds the result.
#[allow(clippy::too_many_arguments)]
pub fn encode_radix_sort(
    device: &wgpu::Device,
    kernels: &Kernels,
    encoder: &mut wgpu::CommandEncoder,
    keys: [&wgpu::Buffer; 2],
    values: [&wgpu::Buffer; 2],
    len: SortLen,
    bits: u32,
    scratch: &mut SortScratch,
) -> Result<usize, GpuError> {
    let (n, count) = match len {
        SortLen::Cpu(n) => (n, storage_from(device, &[n, 0, 0, 0], "sort length")),
        SortLen::Gpu { max, count } => (max, count.clone()),
    };
    if n <= 1 {
        return Ok(0);
    }
    let num_blocks = n.div_ceil(SORT_BLOCK);
    let counts = scratch
        .counts
        .ensure(device, 16 * num_blocks as u64 * 4, "sort counts")?
        .clone();
    let passes = bits.div_ceil(4);
    for pass in 0..passes {
        let src = (pass % 2) as usize;
        let dst = 1 - src;
        let params = uniform(device, &SortUniforms::new(n, pass * 4, num_blocks));
        let bg = bind(
            device,
            &kernels.sort_count,
            &[
                ("u", params.as_entire_binding()),
                ("keys", keys[src].as_entire_binding()),
                ("counts", counts.as_entire_binding()),
                ("sort_len", count.as_entire_binding()),
            ],
        );
        dispatch_1d(encoder, &kernels.sort_count, &bg, num_blocks);
        encode_exclusive_scan(
            device,
            kernels,
            encoder,
            &counts,
            16 * num_blocks,
            &mut scratch.scan_levels,
            0,
        )?;
        let bg = bind(
            device,
            &kernels.sort_scatter,
            &[
                ("u", params.as_entire_binding()),
                ("keys_in", keys[src].as_entire_binding()),
                ("values_in", values[src].as_entire_binding()),
                ("offsets", counts.as_entire_binding()),
                ("keys_out", keys[dst].as_entire_binding()),
                ("values_out", values[dst].as_entire_binding()),
                ("sort_len", count.as_entire_binding()),
            ],
        );
        dispatch_1d(encoder, &kernels.sort_scatter, &bg, num_blocks);
    }
    Ok((passes % 2) as usize)
}

/// Number of bits needed to represent every value below `n`.
pub fn bits_for(n: u32) -> u32 {
    32 - n.saturating_sub(1).leading_zeros()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::buffers::storage_from;
    use crate::render::GpuContext;

    fn lcg(state: &mut u64) -> u32 {
        *state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (*state >> 33) as u32
    }

    fn read_u32(ctx: &GpuContext, buffer: &wgpu::Buffer, n: usize) -> Vec<u32> {
        bytemuck::pod_collect_to_vec(&ctx.read_buffer(buffer, 0, n as u64 * 4).unwrap())
    }

    /// The GPU sort equals a stable CPU sort on random keys, for sizes around block boundaries and
    /// for narrow key ranges (many ties, which is where stability matters).
    #[test]
    fn radix_sort_is_a_stable_sort() {
        let ctx = GpuContext::headless().expect("a wgpu adapter (lavapipe on CI)");
        let kernels = Kernels::new(&ctx.device);
        let mut scratch = SortScratch::default();
        let mut seed = 7u64;
        for (n, bits) in [
            (1usize, 32u32),
            (255, 32),
            (1024, 8),
            (1025, 13),
            (2048, 4),
            (2049, 12),
            (4097, 1),
            (70_000, 32),
            (300_001, 5),
        ] {
            let keys: Vec<u32> = (0..n).map(|_| lcg(&mut seed) >> (32 - bits)).collect();
            let values: Vec<u32> = (0..n as u32).collect();
            let k = [
                storage_from(&ctx.device, &keys, "k0"),
                storage_from(&ctx.device, &keys, "k1"),
            ];
            let v = [
                storage_from(&ctx.device, &values, "v0"),
                storage_from(&ctx.device, &values, "v1"),
            ];
            let mut encoder = ctx.device.create_command_encoder(&Default::default());
            let out = encode_radix_sort(
                &ctx.device,
                &kernels,
                &mut encoder,
                [&k[0], &k[1]],
                [&v[0], &v[1]],
                SortLen::Cpu(n as u32),
                bits,
                &mut scratch,
            )
            .unwrap();
            ctx.queue.submit([encoder.finish()]);
            let mut expected: Vec<(u32, u32)> = keys.iter().copied().zip(values.iter().copied()).collect();
            expected.sort_by_key(|&(key, _)| key);
            let got_keys = read_u32(&ctx, &k[out], n);
            let got_values = read_u32(&ctx, &v[out], n);
            let got: Vec<(u32, u32)> = got_keys.into_iter().zip(got_values).collect();
            assert!(
                got == expected,
                "sort of {n} keys with {bits} bits differs from a stable sort"
            );
        }
    }

    #[test]
    fn exclusive_scan_matches_cpu() {
        let ctx = GpuContext::headless().expect("a wgpu adapter (lavapipe on CI)");
        let kernels = Kernels::new(&ctx.device);
        let mut seed = 3u64;
        for n in [1usize, 256, 257, 65_536, 70_001] {
            let data: Vec<u32> = (0..n).map(|_| lcg(&mut seed) % 100).collect();
            let buffer = storage_from(&ctx.device, &data, "scan");
            let mut encoder = ctx.device.create_command_encoder(&Default::default());
            encode_exclusive_scan(
                &ctx.device,
                &kernels,
                &mut encoder,
                &buffer,
                n as u32,
                &mut Vec::new(),
                0,
            )
            .unwrap();
            ctx.queue.submit([encoder.finish()]);
            let expected: Vec<u32> = data
                .iter()
                .scan(0u32, |acc, x| {
                    let before = *acc;
                    *acc += x;
                    Some(before)
                })
                .collect();
            assert_eq!(read_u32(&ctx, &buffer, n), expected, "scan of {n}");
        }
    }

    #[test]
    fn bits_for_counts() {
        assert_eq!(bits_for(1), 0);
        assert_eq!(bits_for(2), 1);
        assert_eq!(bits_for(8160), 13);
        assert_eq!(bits_for(8192), 13);
        assert_eq!(bits_for(8193), 14);
    }
}
