//! The hash-grid kernel on burn's CPU backend ([`CpuBackend`]) and autodiff over it, a level at a
//! time so that the level's rows of the table stay in the cache: forward, one level after the other,
//! one rayon task per 1024 points; backward, one task per level (each level owns its rows of the
//! table, so no two tasks write the same row), the table's and the points' gradients in one pass.

use std::any::TypeId;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;
use rayon::prelude::*;
use std::ops::Range;

use super::{track, GridShape, Level};
use crate::nn::backend::{retype, CpuBackend};
use crate::nn::multiversion::multiversion;

/// Points per parallel task in the forward pass.
const POINTS_PER_TASK: usize = 1024;

/// The 8 table rows and trilinear weights of each of up to [`BLOCK`] points at one level, a lane per
/// point, so that each step below is one vector instruction over the block.
struct Cells {
    /// Points in the block.
    len: usize,
    /// `rows[corner][lane]`: the corners' rows within the level's (from [`Level::first_row`]),
    /// corner `4x + 2y + z` with 1 taking the upper corner along that axis.
    rows: [[u32; BLOCK]; 8],
    /// `offsets[axis][lane]`: the weight of the upper corner, `o = s − floor(s)`.
    offsets: [[f32; BLOCK]; 3],
}

impl Cells {
    /// The cells of `points` (`[n, 3]`, at most [`BLOCK`] of them) at `level`, in code that
    /// vectorises over the block ([`find_cells`] compiles it for AVX2 as well).
    #[inline(always)]
    fn new(points: &[f32], level: &Level, shift: f32) -> Self {
        let len = points.len() / 3;
        debug_assert!(len <= BLOCK);
        let mut coordinates = [[0f32; BLOCK]; 3];
        for (i, point) in points.chunks_exact(3).enumerate() {
            for axis in 0..3 {
                coordinates[axis][i] = point[axis];
            }
        }
        let factors = level.factors();
        let mut offsets = [[0f32; BLOCK]; 3];
        // Per axis, the lower and upper corners' shares (coordinate × factor) of the index.
        let mut shares = [[[0u32; BLOCK]; 2]; 3];
        for axis in 0..3 {
            for i in 0..BLOCK {
                let scaled = coordinates[axis][i] * level.scale + shift;
                let low = floor(scaled);
                offsets[axis][i] = scaled - low;
                // burn's float-to-int cast of the floor, then the wrapping 32-bit product.
                let corner = to_i32(low) as u32;
                shares[axis][0][i] = corner.wrapping_mul(factors[axis]);
                shares[axis][1][i] = corner.wrapping_add(1).wrapping_mul(factors[axis]);
            }
        }
        let mut rows = [[0u32; BLOCK]; 8];
        let rows_in_level = u32::try_from(level.rows).expect("a level's rows fit 32 bits (GridShape::kernel_ready)");
        for (corner, rows) in rows.iter_mut().enumerate() {
            let [x, y, z] = [
                &shares[0][corner >> 2],
                &shares[1][(corner >> 1) & 1],
                &shares[2][corner & 1],
            ];
            for i in 0..BLOCK {
                rows[i] = match level.dense_resolution {
                    Some(_) => x[i].wrapping_add(y[i]).wrapping_add(z[i]),
                    None => x[i] ^ y[i] ^ z[i],
                };
            }
            // The index modulo the level's rows. A division per corner was a tenth of the kernel's
            // time: hashed levels' row counts are powers of two (a mask), and a dense level's index
            // is mostly below its row count already.
            if rows_in_level.is_power_of_two() {
                for row in rows.iter_mut() {
                    *row &= rows_in_level - 1;
                }
            } else {
                for row in rows.iter_mut() {
                    if *row >= rows_in_level {
                        *row %= rows_in_level;
                    }
                }
            }
        }
        Cells { len, rows, offsets }
    }

    /// The table row of `lane`'s corner `[x][y][z]`, counted from the level's first.
    fn row(&self, lane: usize, x: usize, y: usize, z: usize) -> usize {
        self.rows[4 * x + 2 * y + z][lane] as usize
    }

    /// Asks for the cache lines of the cells' corners in `level_values`, the level's rows of
    /// `features` values each.
    fn prefetch(&self, level_values: &[f32], features: usize) {
        for rows in &self.rows {
            for &row in &rows[..self.len] {
                prefetch(level_values.as_ptr().wrapping_add(row as usize * features));
            }
        }
    }
}

multiversion! {
    /// [`Cells::new`], compiled for AVX2 where the CPU has it (the rest of the program targets
    /// baseline x86-64, SSE2, without 32-bit vector products).
    fn find_cells(points: &[f32], level: &Level, shift: f32) -> Cells {
        Cells::new(points, level, shift)
    }
}

/// Asks the CPU to bring the cache line of `at` in: a hint, which reads nothing the program sees
/// (nothing at all on other architectures than x86-64). The kernels below find every corner of
/// a point (or of a block of points) first and ask for them all, then blend, so that the reads
/// of the fine levels' tables (far larger than the caches) overlap instead of waiting one level at
/// a time: about 4% in training, too little to see in rendering (BENCHMARKS.md, 2026-12-07).
fn prefetch(at: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch does not fault, whatever the address, and changes no value.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// `x.floor()`, without the libm call it is on baseline x86-64 (a tenth of the kernel's time), and
/// without branches, so that [`Cells::new`] runs it on a vector of points: below 2^23 every
/// float's integer part is exact, so truncating and stepping is exact; from 2^23 on (and for
/// infinities and NaN) `x` is its own floor.
#[inline(always)]
fn floor(x: f32) -> f32 {
    let truncated = to_i32(x) as f32;
    let stepped = if truncated > x { truncated - 1.0 } else { truncated };
    // A zero result has the sign of `x`, as libm's (floor(−0) = −0).
    let signed = if stepped == 0.0 { stepped.copysign(x) } else { stepped };
    if x.abs() < (1 << 23) as f32 {
        signed
    } else {
        x
    }
}

/// `x as i32` (toward zero, saturating, NaN to 0), in operations that vectorise: the compiler turns
/// `as` into one scalar conversion and NaN test per lane.
#[inline(always)]
fn to_i32(x: f32) -> i32 {
    // Up to the largest float below 2^31; `max` takes the bound for NaN.
    let clamped = x.max(i32::MIN as f32).min(2_147_483_520.0);
    // SAFETY: `clamped` is a finite float within i32's range.
    let truncated = unsafe { clamped.to_int_unchecked::<i32>() };
    if x.is_nan() {
        0
    } else if x >= 2_147_483_648.0 {
        i32::MAX
    } else {
        truncated
    }
}

/// `hi · t + lo · (−t + 1)`, as the burn-ops version computes it.
fn lerp(hi: f32, lo: f32, t: f32) -> f32 {
    hi * t + lo * (-t + 1.0)
}

/// Points whose corners are found and asked for together, before any is blended.
const BLOCK: usize = 16;

/// Calls `visit(first, cells)` for the cells of the points `range` at `level`, [`BLOCK`] points at
/// a time (`first` the block's first point): the caller asks for the block's corners, then reads
/// or writes them.
fn cell_blocks(points: &[f32], range: Range<usize>, level: &Level, shift: f32, mut visit: impl FnMut(usize, &Cells)) {
    for first in range.clone().step_by(BLOCK) {
        let end = (first + BLOCK).min(range.end);
        visit(first, &find_cells(&points[3 * first..3 * end], level, shift));
    }
}

/// [`super::encode`] on the CPU backend; `None` on any other backend or for tracked points.
pub(super) fn encode<B: Backend>(
    points: &Tensor<B, 2>,
    table: Tensor<B, 2>,
    shape: &GridShape,
) -> Option<Tensor<B, 2>> {
    if TypeId::of::<B>() == TypeId::of::<CpuBackend>() {
        let points = retype::<B, CpuBackend, 2>(points.clone())?;
        let table = retype::<B, CpuBackend, 2>(table)?;
        let out = forward_values(&contiguous(points), &contiguous(table), shape);
        retype::<CpuBackend, B, 2>(out)
    } else if TypeId::of::<B>() == TypeId::of::<Autodiff<CpuBackend>>() {
        let points = retype::<B, Autodiff<CpuBackend>, 2>(points.clone())?;
        let table = retype::<B, Autodiff<CpuBackend>, 2>(table)?;
        retype::<Autodiff<CpuBackend>, B, 2>(encode_tracked(points, table, shape)?)
    } else {
        None
    }
}

/// Under autodiff: the forward on the inner tensors, and a backward step for the table and, when
/// tracked, the points.
fn encode_tracked(
    points: Tensor<Autodiff<CpuBackend>, 2>,
    table: Tensor<Autodiff<CpuBackend>, 2>,
    shape: &GridShape,
) -> Option<Tensor<Autodiff<CpuBackend>, 2>> {
    track(points, table, HashGridBackward, |points, table, points_tracked| {
        let points = contiguous(Tensor::from_primitive(TensorPrimitive::Float(points)));
        let table = Tensor::<CpuBackend, 2>::from_primitive(TensorPrimitive::Float(table));
        let table_rows = table.dims()[0];
        let table = contiguous(table);
        let output = forward_values(&points, &table, shape);
        let state = HashGridState {
            points,
            table: points_tracked.then_some(table),
            shape: shape.clone(),
            table_rows,
        };
        Some((output.into_primitive().tensor(), state))
    })
}

fn contiguous(t: Tensor<CpuBackend, 2>) -> FlexTensor {
    t.into_primitive().tensor().to_contiguous()
}

/// The f32 values of a contiguous tensor (the backend's float type is f32).
fn f32_values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("a contiguous f32 tensor")
}

fn forward_values(points: &FlexTensor, table: &FlexTensor, shape: &GridShape) -> Tensor<CpuBackend, 2> {
    let (points, table) = (f32_values(points), f32_values(table));
    let n = points.len() / 3;
    let f = shape.features_per_level;
    let row_len = shape.num_levels() * f;
    if n == 0 {
        return Tensor::from_data(TensorData::new(Vec::<f32>::new(), [0, row_len]), &Default::default());
    }
    // A level at a time, all points each: the level's table rows (4 MB at a hashed level of
    // nerfacto's field) stay in the cache while every point reads them, where a point at a time
    // reads all the levels' (64 MB). Values `[L, N, F]`, then laid out as `[N, L · F]`.
    let mut by_level = vec![0f32; n * row_len];
    for (level, values) in shape.levels.iter().zip(by_level.chunks_mut(n * f)) {
        let level_table = &table[level.first_row * f..];
        values
            .par_chunks_mut(POINTS_PER_TASK * f)
            .enumerate()
            .for_each(|(task, values)| {
                let first = task * POINTS_PER_TASK;
                cell_blocks(
                    points,
                    first..first + values.len() / f,
                    level,
                    shape.shift,
                    |block, cells| {
                        cells.prefetch(level_table, f);
                        for i in 0..cells.len {
                            let out = &mut values[(block + i - first) * f..][..f];
                            let [ox, oy, oz] = cells.offsets.map(|o| o[i]);
                            let r = |x, y, z| cells.row(i, x, y, z);
                            for (k, out) in out.iter_mut().enumerate() {
                                let v = |row: usize| level_table[row * f + k];
                                // nerfstudio's corner numbering: f_0 = (c, c, c), f_3 = (f, c, c), ...
                                let f03 = lerp(v(r(1, 1, 1)), v(r(0, 1, 1)), ox);
                                let f12 = lerp(v(r(1, 0, 1)), v(r(0, 0, 1)), ox);
                                let f56 = lerp(v(r(1, 0, 0)), v(r(0, 0, 0)), ox);
                                let f47 = lerp(v(r(1, 1, 0)), v(r(0, 1, 0)), ox);
                                let f0312 = lerp(f03, f12, oy);
                                let f4756 = lerp(f47, f56, oy);
                                *out = lerp(f0312, f4756, oz);
                            }
                        }
                    },
                );
            });
    }
    let out = point_major(&by_level, n, f);
    Tensor::from_data(TensorData::new(out, [n, row_len]), &Default::default())
}

/// `values` `[L, N, width]` as `[N, L · width]`.
fn point_major(values: &[f32], n: usize, width: usize) -> Vec<f32> {
    let row_len = values.len() / n.max(1);
    let mut out = vec![0f32; values.len()];
    if width == 0 {
        return out;
    }
    out.par_chunks_mut(POINTS_PER_TASK * row_len)
        .enumerate()
        .for_each(|(task, rows)| {
            for (i, row) in rows.chunks_exact_mut(row_len).enumerate() {
                let p = task * POINTS_PER_TASK + i;
                for (l, slot) in row.chunks_exact_mut(width).enumerate() {
                    slot.copy_from_slice(&values[(l * n + p) * width..][..width]);
                }
            }
        });
    out
}

/// The gradients of the table `[rows, F]` and, given the table's values, of the points `[N, 3]`,
/// from the output's `grad` `[N, L · F]`.
///
/// One task per level, each over all the points: a level's corners are all in its own rows (no
/// two tasks write the same one), and the rows it writes and reads stay in the cache. At each
/// corner the table gradient gets the output's gradient times the corner's trilinear weight. The
/// point's gradient on each axis is the sum over levels and features of the output's gradient
/// times the blend's slope along the axis (upper face minus lower face, weighted by the other two
/// axes) times the level's scale: each level's share is kept, `[L, N, 3]`, and the shares then
/// summed in level order.
fn gradients(
    points: &FlexTensor,
    table: Option<&FlexTensor>,
    grad: &FlexTensor,
    shape: &GridShape,
    table_rows: usize,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let (points, grad) = (f32_values(points), f32_values(grad));
    let table = table.map(f32_values);
    let n = points.len() / 3;
    let f = shape.features_per_level;
    let row_len = shape.num_levels() * f;
    let mut table_grad = vec![0f32; table_rows * f];
    if n == 0 {
        return (table_grad, table.map(|_| Vec::new()));
    }
    let mut level_rows = Vec::with_capacity(shape.num_levels());
    let mut rest = table_grad.as_mut_slice();
    for level in &shape.levels {
        let (rows, after) = std::mem::take(&mut rest).split_at_mut(level.rows * f);
        level_rows.push(rows);
        rest = after;
    }
    let mut shares = vec![0f32; if table.is_some() { 3 * n * shape.num_levels() } else { 0 }];
    let level_shares: Vec<&mut [f32]> = match table {
        Some(_) => shares.chunks_mut(3 * n).collect(),
        None => shape.levels.iter().map(|_| <&mut [f32]>::default()).collect(),
    };
    level_rows
        .into_par_iter()
        .zip(level_shares)
        .zip(shape.levels.par_iter())
        .enumerate()
        .for_each(|(l, ((rows, shares), level))| {
            let level_table = table.map(|t| &t[level.first_row * f..]);
            cell_blocks(points, 0..n, level, shape.shift, |block, cells| {
                cells.prefetch(rows, f);
                if let Some(level_table) = level_table {
                    cells.prefetch(level_table, f);
                }
                for i in 0..cells.len {
                    let p = block + i;
                    let weights = cells.offsets.map(|o| [-o[i] + 1.0, o[i]]);
                    let g = &grad[p * row_len + l * f..][..f];
                    for (z, wz) in weights[2].iter().enumerate() {
                        for (y, wy) in weights[1].iter().enumerate() {
                            for (x, wx) in weights[0].iter().enumerate() {
                                let row = cells.row(i, x, y, z);
                                for k in 0..f {
                                    rows[row * f + k] += g[k] * wz * wy * wx;
                                }
                            }
                        }
                    }
                    if let Some(level_table) = level_table {
                        let mut sums = [0f32; 3];
                        for (k, gk) in g.iter().enumerate() {
                            let v = |x: usize, y: usize, z: usize| level_table[cells.row(i, x, y, z) * f + k];
                            let mut slopes = [0f32; 3];
                            for a in 0..2 {
                                for b in 0..2 {
                                    slopes[0] += (v(1, a, b) - v(0, a, b)) * weights[1][a] * weights[2][b];
                                    slopes[1] += (v(a, 1, b) - v(a, 0, b)) * weights[0][a] * weights[2][b];
                                    slopes[2] += (v(a, b, 1) - v(a, b, 0)) * weights[0][a] * weights[1][b];
                                }
                            }
                            for (sum, slope) in sums.iter_mut().zip(slopes) {
                                *sum += gk * slope * level.scale;
                            }
                        }
                        shares[3 * p..3 * p + 3].copy_from_slice(&sums);
                    }
                }
            });
        });
    let point_grad = table.map(|_| {
        let mut out = vec![0f32; 3 * n];
        out.par_chunks_mut(3 * POINTS_PER_TASK)
            .enumerate()
            .for_each(|(task, chunk)| {
                for (i, slot) in chunk.chunks_exact_mut(3).enumerate() {
                    let p = task * POINTS_PER_TASK + i;
                    for level in shares.chunks_exact(3 * n) {
                        slot.iter_mut()
                            .zip(&level[3 * p..])
                            .for_each(|(sum, share)| *sum += share);
                    }
                }
            });
        out
    });
    (table_grad, point_grad)
}

#[derive(Debug)]
struct HashGridBackward;

/// What the backward step keeps: the points, and the table when the points are tracked (their
/// gradient reads its values; the table's own needs only its size).
#[derive(Clone, Debug)]
struct HashGridState {
    points: FlexTensor,
    table: Option<FlexTensor>,
    shape: GridShape,
    table_rows: usize,
}

impl Backward<CpuBackend, 2> for HashGridBackward {
    type State = HashGridState;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<CpuBackend>(&ops.node);
        let [points, table] = ops.parents;
        let state = ops.state;
        let grad = contiguous(Tensor::from_primitive(TensorPrimitive::Float(grad)));
        let register = |grads: &mut Gradients, id, values: Vec<f32>, shape: [usize; 2]| {
            let value = Tensor::<CpuBackend, 2>::from_data(TensorData::new(values, shape), &Default::default());
            grads.register::<CpuBackend>(id, value.into_primitive().tensor());
        };
        let (table_grad, point_grad) = gradients(
            &state.points,
            points.as_ref().and(state.table.as_ref()),
            &grad,
            &state.shape,
            state.table_rows,
        );
        if let (Some(points), Some(values)) = (points, point_grad) {
            let n = values.len() / 3;
            register(grads, points.id, values, [n, 3]);
        }
        if let Some(table) = table {
            let shape = [state.table_rows, state.shape.features_per_level];
            register(grads, table.id, table_grad, shape);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_close, grid_of, point_gradients, table_gradients, LAYOUTS};
    use super::*;
    use crate::nerfacto::encoding::HashEncoding;

    type Ad = Autodiff<CpuBackend>;

    /// Points in the test grid: more than a task of the kernels takes.
    const POINTS: usize = 2500;

    #[test]
    fn to_i32_is_as() {
        let cases = [
            0.0,
            -0.0,
            0.5,
            -0.5,
            2.999_999_8,
            -2.999_999_8,
            2_147_483_520.0,
            2_147_483_648.0,
            -2_147_483_648.0,
            -2_147_483_904.0,
            1e30,
            -1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        for x in cases {
            assert_eq!(to_i32(x), x as i32, "{x}");
        }
    }

    #[test]
    fn floor_is_floor() {
        let cases = [
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.0,
            -1.0,
            2.999_999_8,
            -2.999_999_8,
            8_388_607.5,
            -8_388_607.5,
        ];
        let more = [
            8_388_608.0,
            1e30,
            -1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
        ];
        for x in cases.into_iter().chain(more) {
            assert_eq!(floor(x).to_bits(), x.floor().to_bits(), "{x}");
        }
        assert!(floor(f32::NAN).is_nan());
    }

    /// The tests below run [`find_cells`] as this CPU dispatches it (AVX2 where it has it); the
    /// baseline build of the same code must give the same cells.
    #[test]
    fn cells_are_the_same_with_and_without_avx2() {
        for layout in LAYOUTS {
            let (encoding, points) = grid_of::<CpuBackend>(&Default::default(), layout, POINTS);
            let points = points.into_data().to_vec::<f32>().unwrap();
            let shape = &encoding.shape;
            for level in &shape.levels {
                for block in points.chunks(3 * BLOCK) {
                    let (dispatched, baseline) = (
                        find_cells(block, level, shape.shift),
                        Cells::new(block, level, shape.shift),
                    );
                    assert_eq!(dispatched.len, baseline.len);
                    assert_eq!(dispatched.rows, baseline.rows, "{layout:?} {level:?}");
                    assert_eq!(
                        dispatched.offsets.map(|o| o.map(f32::to_bits)),
                        baseline.offsets.map(|o| o.map(f32::to_bits))
                    );
                }
            }
        }
    }

    #[test]
    fn forward_is_bit_identical_to_burn_ops() {
        for layout in LAYOUTS {
            let (encoding, points) = grid_of::<CpuBackend>(&Default::default(), layout, POINTS);
            let kernel = encoding.forward(points.clone()).into_data();
            let ops = encoding.forward_ops(points).into_data();
            assert_eq!(
                kernel.as_slice::<f32>().unwrap(),
                ops.as_slice::<f32>().unwrap(),
                "{layout:?}"
            );
        }
    }

    #[test]
    fn table_gradient_matches_burn_ops_autodiff() {
        for layout in LAYOUTS {
            let (encoding, points) = grid_of::<Ad>(&Default::default(), layout, POINTS);
            let encoding = HashEncoding {
                table: burn::module::Param::from_tensor(encoding.table.val().require_grad()),
                ..encoding
            };
            let kernel_out = encoding.forward(points.clone());
            let ops_out = encoding.forward_ops(points);
            assert_eq!(
                kernel_out.clone().into_data().as_slice::<f32>().unwrap(),
                ops_out.clone().into_data().as_slice::<f32>().unwrap()
            );
            let (kernel, ops) = table_gradients(&encoding, kernel_out, ops_out);
            // A coarse level's row sums the terms of hundreds of the 2500 random points in another
            // order than burn's scatter: the worst error was up to 1.0e-6 of the largest value over
            // 15 runs, so 1e-6 failed now and then.
            assert_close(&kernel, &ops, 1e-5);
        }
    }

    #[test]
    fn point_gradient_matches_burn_ops_autodiff() {
        for layout in LAYOUTS {
            let (encoding, points) = grid_of::<Ad>(&Default::default(), layout, POINTS);
            let (kernel, ops) = point_gradients(&encoding, points);
            assert_close(&kernel, &ops, 1e-5);
        }
    }
}
