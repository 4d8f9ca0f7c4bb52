//! The hash-grid kernel on burn's GPU backends (wgpu, and CUDA with the `cuda` feature) and autodiff
//! over them, written once in CubeCL: one thread per point and level, forward and backward (the
//! forward one per point on a CPU device, where each read of memory is what costs). On a GPU the
//! backward adds each corner's share into the table gradient atomically: with the device's float
//! atomic add where it has one (CUDA; wgpu where the adapter offers `SHADER_FLOAT32_ATOMIC`), else
//! with a compare-and-swap loop on the value's bits, as burn's own deformable-convolution backward
//! does. On a CPU device a thread takes one level for all points instead and adds without atomics,
//! as the CPU backend's kernel does ([`Scatter`]).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorPrimitive};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::{empty_device, zeros_client};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::features::AtomicUsage;
use cubecl::ir::{ElemType, FloatKind, StorageType};
use cubecl::prelude::*;

use super::{track, GridShape, PRIMES};
use crate::nn::backend::retype;
use crate::nn::cube::{cpu_device, elementwise, on_cube, CubeF32, OnCube};

/// [`super::encode`] on the GPU backends this build has; `None` on any other backend or for
/// tracked points.
pub(super) fn encode<B: Backend>(
    points: &Tensor<B, 2>,
    table: Tensor<B, 2>,
    shape: &GridShape,
) -> Option<Tensor<B, 2>> {
    on_cube::<B, _>(Encode { points, table, shape })
}

struct Encode<'a, B: Backend> {
    points: &'a Tensor<B, 2>,
    table: Tensor<B, 2>,
    shape: &'a GridShape,
}

impl<B: Backend> OnCube for Encode<'_, B> {
    type Output = Tensor<B, 2>;

    fn plain<C: CubeF32>(self) -> Option<Tensor<B, 2>> {
        let points = retype::<B, C, 2>(self.points.clone())?;
        let table = retype::<B, C, 2>(self.table)?;
        let out = forward::<C::Runtime>(primitive(points), primitive(table), self.shape)?;
        retype::<C, B, 2>(Tensor::from_primitive(TensorPrimitive::Float(out)))
    }

    fn tracked<C: CubeF32>(self) -> Option<Tensor<B, 2>> {
        let points = retype::<B, Autodiff<C>, 2>(self.points.clone())?;
        let table = retype::<B, Autodiff<C>, 2>(self.table)?;
        retype::<Autodiff<C>, B, 2>(encode_tracked(points, table, self.shape)?)
    }
}

fn primitive<C: CubeF32>(t: Tensor<C, 2>) -> CubeTensor<C::Runtime> {
    t.into_primitive().tensor()
}

/// Under autodiff: the forward on the inner tensors, and a backward step for the table and, when
/// tracked, the points.
fn encode_tracked<C: CubeF32>(
    points: Tensor<Autodiff<C>, 2>,
    table: Tensor<Autodiff<C>, 2>,
    shape: &GridShape,
) -> Option<Tensor<Autodiff<C>, 2>> {
    track(points, table, HashGridBackward, |points, table, points_tracked| {
        let table_rows = table.meta.shape()[0];
        let points = into_contiguous(points);
        let table = into_contiguous(table);
        let output = forward::<C::Runtime>(points.clone(), table.clone(), shape)?;
        let state = HashGridState {
            points,
            table: points_tracked.then_some(table),
            shape: shape.clone(),
            table_rows,
        };
        Some((output, state))
    })
}

/// Values per dense level in [`Grid::dense_words`].
const DENSE_WORDS: usize = 3;

/// A grid as the kernels read it besides its table.
#[derive(CubeLaunch, CubeType)]
struct Grid {
    /// Each level's scale.
    scales: Array<f32>,
    /// Per dense level [`DENSE_WORDS`] values: first row, rows, resolution (one unused entry when
    /// there is none: a device array is never empty). Hashed levels need no entry: their rows
    /// follow from their index ([`super::GridShape::hashed_levels`]), so on nerfstudio's torch grid
    /// a thread reads one value per level besides the corners.
    dense_words: Array<u32>,
    /// The dense levels' count, the first hashed level's first row, and each hashed level's rows
    /// as a power of two.
    dense_levels: u32,
    hashed_first_row: u32,
    log2_rows: u32,
    shift: f32,
}

/// A device array of `values` (4-byte words) of `dtype`.
fn device_array<R: CubeRuntime>(like: &CubeTensor<R>, bytes: Vec<u8>, len: usize, dtype: DType) -> ArrayArg<R> {
    let handle = like.client.create_from_slice(&bytes);
    CubeTensor::new_contiguous(like.client.clone(), like.device.clone(), [len].into(), handle, dtype).into_array_arg()
}

/// `shape` as a kernel argument, on `like`'s device.
fn grid_arg<R: CubeRuntime>(like: &CubeTensor<R>, shape: &GridShape) -> GridLaunch<R> {
    let scales: Vec<u8> = shape.levels.iter().flat_map(|l| l.scale.to_le_bytes()).collect();
    let mut words: Vec<u32> = shape
        .levels
        .iter()
        .filter_map(|l| Some([l.first_row as u32, l.rows as u32, l.dense_resolution?]))
        .flatten()
        .collect();
    if words.is_empty() {
        words = vec![0; DENSE_WORDS];
    }
    let count = words.len();
    let words = words.into_iter().flat_map(u32::to_le_bytes).collect();
    let hashed = shape.hashed_levels();
    GridLaunch::new(
        device_array(like, scales, shape.num_levels(), DType::F32),
        device_array(like, words, count, DType::U32),
        hashed.dense as u32,
        hashed.first_row as u32,
        hashed.log2_rows,
        shape.shift,
    )
}

/// The encoding `[N, L · F]`; `None` for tensors that are not f32.
///
/// On a GPU a thread takes one point at one level; on a CPU device (lavapipe), where each read of
/// memory is what costs, a thread takes all the levels of one point and reads its coordinates once.
/// Either way a corner's features are read together, as one vector when there are 1, 2 or 4.
fn forward<R: CubeRuntime>(points: CubeTensor<R>, table: CubeTensor<R>, shape: &GridShape) -> Option<CubeTensor<R>> {
    if points.dtype != DType::F32 || table.dtype != DType::F32 {
        return None;
    }
    let (points, table) = (into_contiguous(points), into_contiguous(table));
    let n = points.meta.shape()[0];
    let levels = shape.num_levels();
    let features = shape.features_per_level;
    let output_shape = [n, levels * features].into();
    let output = empty_device::<R, f32>(points.client.clone(), points.device.clone(), output_shape);
    let client = points.client.clone();
    let levels_per_thread = if cpu_device(&client) { levels.max(1) } else { 1 };
    let (cube_count, cube_dim) = elementwise(&client, n * levels.div_ceil(levels_per_thread));
    let grid = grid_arg(&points, shape);
    let vector = if matches!(features, 1 | 2 | 4) { features } else { 1 };
    hash_grid_forward::launch::<R>(
        &client,
        cube_count,
        cube_dim,
        vector,
        points.into_array_arg(),
        grid,
        table.into_array_arg(),
        output.clone().into_array_arg(),
        features,
        levels_per_thread,
    );
    Some(output)
}

/// How the backward pass adds the points' shares into the table gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scatter {
    /// A thread per point and level, with the device's own float atomic add.
    NativeAtomic,
    /// A thread per point and level, with a compare-and-swap loop on the value's bits.
    SwapAtomic,
    /// A thread per level over all points, in their order, into the level's own rows: no two
    /// threads write one row, so no atomics. On a CPU device (lavapipe) a float atomic add is a
    /// compare-and-swap loop on x86, which was the whole backward's cost, and a level's thread
    /// keeps one core busy (the CPU backend's kernel splits the work the same way).
    ByLevel,
}

impl Scatter {
    /// What `client`'s device does best.
    fn for_device<R: CubeRuntime>(client: &ComputeClient<R>) -> Self {
        if cpu_device(client) {
            Scatter::ByLevel
        } else if has_float_atomic_add(client) {
            Scatter::NativeAtomic
        } else {
            Scatter::SwapAtomic
        }
    }
}

/// The table's gradient `[rows, F]` from the output's `grad` `[N, L · F]`.
fn table_gradient<R: CubeRuntime>(
    points: CubeTensor<R>,
    grad: CubeTensor<R>,
    shape: &GridShape,
    table_rows: usize,
    scatter: Scatter,
) -> CubeTensor<R> {
    let grad = into_contiguous(grad);
    let out_shape = [table_rows, shape.features_per_level].into();
    let out = zeros_client(grad.client.clone(), grad.device.clone(), out_shape, DType::F32);
    let client = grad.client.clone();
    let grid = grid_arg(&points, shape);
    let (levels, features) = (shape.num_levels(), shape.features_per_level);
    let threads = points.meta.shape()[0] * levels;
    let (points, grad_arg, out_arg) = (
        points.into_array_arg(),
        grad.into_array_arg(),
        out.clone().into_array_arg(),
    );
    match scatter {
        Scatter::ByLevel => {
            // One thread per cube, so that the levels spread over all of the device's cores.
            let cube_dim = CubeDim::new_1d(1);
            let cube_count = CubeCount::Static(levels.max(1) as u32, 1, 1);
            hash_grid_backward_by_level::launch::<R>(
                &client, cube_count, cube_dim, points, grid, grad_arg, out_arg, features,
            );
        }
        Scatter::NativeAtomic | Scatter::SwapAtomic => {
            let (cube_count, cube_dim) = elementwise(&client, threads);
            let launch = if scatter == Scatter::NativeAtomic {
                hash_grid_backward::launch::<NativeAdd, R>
            } else {
                hash_grid_backward::launch::<SwapAdd, R>
            };
            launch(&client, cube_count, cube_dim, points, grid, grad_arg, out_arg, features);
        }
    }
    out
}

/// The points' gradient `[N, 3]` from the output's `grad` `[N, L · F]`: a thread per point sums its
/// levels' shares (a thread per point and level would need an `[N, L, 3]` buffer and a sum over
/// it, which cost more than they parallelise on lavapipe).
fn point_gradient<C: CubeF32>(
    points: CubeTensor<C::Runtime>,
    table: CubeTensor<C::Runtime>,
    grad: CubeTensor<C::Runtime>,
    shape: &GridShape,
) -> CubeTensor<C::Runtime> {
    let grad = into_contiguous(grad);
    let n = points.meta.shape()[0];
    let client = grad.client.clone();
    let output = empty_device::<C::Runtime, f32>(client.clone(), grad.device.clone(), [n, 3].into());
    let (cube_count, cube_dim) = elementwise(&client, n);
    let grid = grid_arg(&points, shape);
    hash_grid_point_backward::launch::<C::Runtime>(
        &client,
        cube_count,
        cube_dim,
        points.into_array_arg(),
        grid,
        table.into_array_arg(),
        grad.into_array_arg(),
        output.clone().into_array_arg(),
        shape.features_per_level,
    );
    output
}

/// Whether `client`'s device adds f32 atomically itself.
fn has_float_atomic_add<R: CubeRuntime>(client: &ComputeClient<R>) -> bool {
    client
        .properties()
        .atomic_type_usage(Type::new(StorageType::Atomic(ElemType::Float(FloatKind::F32))))
        .contains(AtomicUsage::Add)
}

#[derive(Debug)]
struct HashGridBackward;

/// What the backward step keeps: the points, and the table when the points are tracked (their
/// gradient reads its values; the table's own needs only its size).
#[derive(Clone, Debug)]
struct HashGridState<R: CubeRuntime> {
    points: CubeTensor<R>,
    table: Option<CubeTensor<R>>,
    shape: GridShape,
    table_rows: usize,
}

impl<C: CubeF32> Backward<C, 2> for HashGridBackward {
    type State = HashGridState<C::Runtime>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<C>(&ops.node);
        let [points, table] = ops.parents;
        let state = ops.state;
        if let (Some(points), Some(values)) = (points, state.table) {
            let value = point_gradient::<C>(state.points.clone(), values, grad.clone(), &state.shape);
            grads.register::<C>(points.id, value);
        }
        if let Some(table) = table {
            let scatter = Scatter::for_device(&grad.client);
            let value = table_gradient(state.points, grad, &state.shape, state.table_rows, scatter);
            grads.register::<C>(table.id, value);
        }
    }
}

/// One axis of a point's cell at one level: the lower and upper corners' shares of the row index
/// (coordinate × the axis' factor, wrapping), and the upper corner's weight `o = s − floor(s)`.
#[derive(CubeType)]
struct Axis {
    low_share: u32,
    high_share: u32,
    offset: f32,
}

#[cube]
fn axis(x: f32, scale: f32, shift: f32, factor: u32) -> Axis {
    let scaled = x * scale + shift;
    let low = scaled.floor();
    // burn's float-to-int cast of the floor, then the wrapping 32-bit products.
    let corner = u32::cast_from(i32::cast_from(low));
    Axis {
        low_share: corner * factor,
        high_share: (corner + 1) * factor,
        offset: scaled - low,
    }
}

/// The table row of the corner whose axes' shares are `x`, `y`, `z` (see [`super::Level::row`]):
/// a dense level's index modulo its rows, a hashed level's masked to its power-of-two rows.
#[cube]
fn corner_row(x: u32, y: u32, z: u32, dense: bool, first_row: u32, rows: u32) -> usize {
    let mut index = (x ^ y ^ z) & (rows - 1);
    if dense {
        index = (x + y + z) % rows;
    }
    usize::cast_from(index) + usize::cast_from(first_row)
}

/// The cell of one point at one level: its 8 corners' table rows (`rXYZ`, 1 taking the upper
/// corner along that axis) and per axis the upper corner's weight.
#[derive(CubeType)]
struct Cell {
    r000: usize,
    r100: usize,
    r010: usize,
    r110: usize,
    r001: usize,
    r101: usize,
    r011: usize,
    r111: usize,
    ox: f32,
    oy: f32,
    oz: f32,
}

/// The cell of thread `thread` = point · L + level.
#[cube]
fn cell(points: &Array<f32>, grid: &Grid, thread: usize) -> Cell {
    let levels = grid.scales.len();
    let (point, level) = (thread / levels, thread % levels);
    cell_of(points, point, grid, level)
}

/// The cell of point `point` at `level`.
#[cube]
fn cell_of(points: &Array<f32>, point: usize, grid: &Grid, level: usize) -> Cell {
    cell_at(
        points[3 * point],
        points[3 * point + 1],
        points[3 * point + 2],
        grid,
        level,
    )
}

/// The cell of the point `(x, y, z)` at `level`: a dense level's rows and resolution from its words, a
/// hashed level's rows from its index (the hashed levels, `2^log2_rows` rows each, follow one
/// another from `hashed_first_row`).
#[cube]
fn cell_at(x: f32, y: f32, z: f32, grid: &Grid, level: usize) -> Cell {
    let scale = grid.scales[level];
    let level = u32::cast_from(level);
    let dense = level < grid.dense_levels;
    // A hashed level's rows follow from its index (this wraps for a dense level, whose rows are
    // read instead: only a dense level reads its words).
    let mut first_row = grid.hashed_first_row + ((level - grid.dense_levels) << grid.log2_rows);
    let mut rows = 1u32 << grid.log2_rows;
    let mut resolution = rows; // any value: only a dense level's is used
    if dense {
        let words = usize::cast_from(level) * DENSE_WORDS;
        first_row = grid.dense_words[words];
        rows = grid.dense_words[words + 1];
        resolution = grid.dense_words[words + 2];
    }
    // The x factor is 1 either way (stride 1, and the first prime).
    let fx = PRIMES[0];
    let fy = select(dense, resolution, PRIMES[1]);
    let fz = select(dense, resolution * resolution, PRIMES[2]);
    let x = axis(x, scale, grid.shift, fx);
    let y = axis(y, scale, grid.shift, fy);
    let z = axis(z, scale, grid.shift, fz);
    let (xl, xh, yl, yh, zl, zh) = (
        x.low_share,
        x.high_share,
        y.low_share,
        y.high_share,
        z.low_share,
        z.high_share,
    );
    Cell {
        r000: corner_row(xl, yl, zl, dense, first_row, rows),
        r100: corner_row(xh, yl, zl, dense, first_row, rows),
        r010: corner_row(xl, yh, zl, dense, first_row, rows),
        r110: corner_row(xh, yh, zl, dense, first_row, rows),
        r001: corner_row(xl, yl, zh, dense, first_row, rows),
        r101: corner_row(xh, yl, zh, dense, first_row, rows),
        r011: corner_row(xl, yh, zh, dense, first_row, rows),
        r111: corner_row(xh, yh, zh, dense, first_row, rows),
        ox: x.offset,
        oy: y.offset,
        oz: z.offset,
    }
}

/// `hi · t + lo · (−t + 1)` for each of a vector's values, as the burn-ops version computes it.
#[cube]
fn lerp_vector<N: Size>(hi: Vector<f32, N>, lo: Vector<f32, N>, t: f32) -> Vector<f32, N> {
    hi * Vector::new(t) + lo * Vector::new(-t + 1.0)
}

/// Thread `t` encodes point `t / G` at levels `(t % G) · levels_per_thread ..` (`G` groups of
/// levels), reading and writing a corner's `features` values `N` at a time.
#[cube(launch)]
fn hash_grid_forward<N: Size>(
    points: &Array<f32>,
    grid: &Grid,
    table: &Array<Vector<f32, N>>,
    output: &mut Array<Vector<f32, N>>,
    #[comptime] features: usize,
    #[comptime] levels_per_thread: usize,
) {
    let levels = grid.scales.len();
    // By hand: CubeCL has no `div_ceil` to expand.
    #[allow(clippy::manual_div_ceil)]
    let groups = (levels + levels_per_thread - 1) / levels_per_thread;
    let point = ABSOLUTE_POS / groups;
    if point >= points.len() / 3 {
        terminate!();
    }
    let width = N::value();
    let vectors = comptime!(features / width);
    let (x, y, z) = (points[3 * point], points[3 * point + 1], points[3 * point + 2]);
    let first = (ABSOLUTE_POS % groups) * levels_per_thread;
    let mut last = first + levels_per_thread;
    if last > levels {
        last = levels;
    }
    for level in first..last {
        let c = cell_at(x, y, z, grid, level);
        #[unroll]
        for k in 0..vectors {
            // nerfstudio's corner numbering: f_0 = (c, c, c), f_3 = (f, c, c), ...
            let f03 = lerp_vector(table[c.r111 * vectors + k], table[c.r011 * vectors + k], c.ox);
            let f12 = lerp_vector(table[c.r101 * vectors + k], table[c.r001 * vectors + k], c.ox);
            let f56 = lerp_vector(table[c.r100 * vectors + k], table[c.r000 * vectors + k], c.ox);
            let f47 = lerp_vector(table[c.r110 * vectors + k], table[c.r010 * vectors + k], c.ox);
            let f0312 = lerp_vector(f03, f12, c.oy);
            let f4756 = lerp_vector(f47, f56, c.oy);
            output[(point * levels + level) * vectors + k] = lerp_vector(f0312, f4756, c.oz);
        }
    }
}

/// An atomic f32 add into a slot of `Word`s.
#[cube]
trait FloatAdd: Send + Sync + 'static {
    type Word: Numeric;
    fn add(slot: &mut Atomic<Self::Word>, value: f32);
}

/// The device's own float atomic add.
#[derive(CubeType)]
struct NativeAdd;

#[cube]
impl FloatAdd for NativeAdd {
    type Word = f32;
    fn add(slot: &mut Atomic<f32>, value: f32) {
        slot.fetch_add(value);
    }
}

/// A compare-and-swap loop on the value's bits, for devices without a float atomic add.
#[derive(CubeType)]
struct SwapAdd;

#[cube]
impl FloatAdd for SwapAdd {
    type Word = u32;
    fn add(slot: &mut Atomic<u32>, value: f32) {
        let mut current = slot.load();
        loop {
            let expected = current;
            let sum = (f32::from_bits(expected) + value).to_bits();
            current = slot.compare_exchange_weak(expected, sum);
            if current == expected {
                break;
            }
        }
    }
}

/// A load, an add and a store, for slots no other thread writes ([`Scatter::ByLevel`]): relaxed
/// atomic loads and stores are plain ones on the CPU.
#[derive(CubeType)]
struct PlainAdd;

#[cube]
impl FloatAdd for PlainAdd {
    type Word = u32;
    fn add(slot: &mut Atomic<u32>, value: f32) {
        slot.store((f32::from_bits(slot.load()) + value).to_bits());
    }
}

/// Adds `grad · weight` for each feature of row `row` (skipping zero weights, which add nothing).
#[cube]
fn add_corner<A: FloatAdd>(
    table_grad: &mut Array<Atomic<A::Word>>,
    grad: &Array<f32>,
    at: usize,
    row: usize,
    weight: f32,
    #[comptime] features: usize,
) {
    if weight != 0.0 {
        #[unroll]
        for k in 0..features {
            A::add(&mut table_grad[row * features + k], grad[at * features + k] * weight);
        }
    }
}

/// Adds one point's shares at one level (its gradient from `grad[at · F ..]`) into the rows of
/// the cell's corners.
#[cube]
fn add_cell<A: FloatAdd>(
    table_grad: &mut Array<Atomic<A::Word>>,
    grad: &Array<f32>,
    at: usize,
    c: Cell,
    #[comptime] features: usize,
) {
    let (x1, y1, z1) = (c.ox, c.oy, c.oz);
    let (x0, y0, z0) = (-x1 + 1.0, -y1 + 1.0, -z1 + 1.0);
    // The weight of each corner: `wz · wy · wx`, as the CPU kernel multiplies them.
    add_corner::<A>(table_grad, grad, at, c.r000, z0 * y0 * x0, features);
    add_corner::<A>(table_grad, grad, at, c.r100, z0 * y0 * x1, features);
    add_corner::<A>(table_grad, grad, at, c.r010, z0 * y1 * x0, features);
    add_corner::<A>(table_grad, grad, at, c.r110, z0 * y1 * x1, features);
    add_corner::<A>(table_grad, grad, at, c.r001, z1 * y0 * x0, features);
    add_corner::<A>(table_grad, grad, at, c.r101, z1 * y0 * x1, features);
    add_corner::<A>(table_grad, grad, at, c.r011, z1 * y1 * x0, features);
    add_corner::<A>(table_grad, grad, at, c.r111, z1 * y1 * x1, features);
}

/// Thread `t` adds point `t / L`'s shares at level `t % L`.
#[cube(launch)]
fn hash_grid_backward<A: FloatAdd>(
    points: &Array<f32>,
    grid: &Grid,
    grad: &Array<f32>,
    table_grad: &mut Array<Atomic<A::Word>>,
    #[comptime] features: usize,
) {
    if ABSOLUTE_POS >= (points.len() / 3) * grid.scales.len() {
        terminate!();
    }
    let c = cell(points, grid, ABSOLUTE_POS);
    add_cell::<A>(table_grad, grad, ABSOLUTE_POS, c, features);
}

/// Thread `t` adds every point's shares at level `t`, in the points' order ([`Scatter::ByLevel`]).
#[cube(launch)]
fn hash_grid_backward_by_level(
    points: &Array<f32>,
    grid: &Grid,
    grad: &Array<f32>,
    table_grad: &mut Array<Atomic<u32>>,
    #[comptime] features: usize,
) {
    let levels = grid.scales.len();
    let level = ABSOLUTE_POS;
    if level >= levels {
        terminate!();
    }
    for point in 0..points.len() / 3 {
        let c = cell_of(points, point, grid, level);
        add_cell::<PlainAdd>(table_grad, grad, point * levels + level, c, features);
    }
}

/// Thread `t` writes point `t`'s gradient (`point_grad` `[N, 3]`): per axis, summed over levels
/// and features, the output gradient times the blend's slope along the axis (upper face minus lower
/// face, weighted by the other two axes' weights) times the level's scale.
#[cube(launch)]
fn hash_grid_point_backward(
    points: &Array<f32>,
    grid: &Grid,
    table: &Array<f32>,
    grad: &Array<f32>,
    point_grad: &mut Array<f32>,
    #[comptime] features: usize,
) {
    let point = ABSOLUTE_POS;
    if point >= points.len() / 3 {
        terminate!();
    }
    let levels = grid.scales.len();
    let (x, y, z) = (points[3 * point], points[3 * point + 1], points[3 * point + 2]);
    // Runtime zeros (a literal would be a compile-time constant that cannot be added to).
    let mut px = x * 0.0;
    let mut py = x * 0.0;
    let mut pz = x * 0.0;
    for level in 0..levels {
        let c = cell_at(x, y, z, grid, level);
        let (x1, y1, z1) = (c.ox, c.oy, c.oz);
        let (x0, y0, z0) = (-x1 + 1.0, -y1 + 1.0, -z1 + 1.0);
        let mut gx = x * 0.0;
        let mut gy = x * 0.0;
        let mut gz = x * 0.0;
        let at = (point * levels + level) * features;
        #[unroll]
        for k in 0..features {
            let g = grad[at + k];
            let v000 = table[c.r000 * features + k];
            let v100 = table[c.r100 * features + k];
            let v010 = table[c.r010 * features + k];
            let v110 = table[c.r110 * features + k];
            let v001 = table[c.r001 * features + k];
            let v101 = table[c.r101 * features + k];
            let v011 = table[c.r011 * features + k];
            let v111 = table[c.r111 * features + k];
            gx += g
                * ((v100 - v000) * y0 * z0
                    + (v110 - v010) * y1 * z0
                    + (v101 - v001) * y0 * z1
                    + (v111 - v011) * y1 * z1);
            gy += g
                * ((v010 - v000) * x0 * z0
                    + (v110 - v100) * x1 * z0
                    + (v011 - v001) * x0 * z1
                    + (v111 - v101) * x1 * z1);
            gz += g
                * ((v001 - v000) * x0 * y0
                    + (v101 - v100) * x1 * y0
                    + (v011 - v010) * x0 * y1
                    + (v111 - v110) * x1 * y1);
        }
        let scale = grid.scales[level];
        px += gx * scale;
        py += gy * scale;
        pz += gz * scale;
    }
    point_grad[3 * point] = px;
    point_grad[3 * point + 1] = py;
    point_grad[3 * point + 2] = pz;
}

#[cfg(test)]
mod tests {
    use burn::backend::wgpu::WgpuDevice;
    use burn::backend::Wgpu;

    use super::super::tests::{assert_close, encoding_of, grid, point_gradients, table_gradients, LAYOUTS};
    use super::*;
    use crate::nerfacto::encoding::HashEncoding;
    use crate::nn::cube::with_both_kernels;

    type Ad = Autodiff<Wgpu<f32>>;

    /// With a thread per point and level (a GPU's) and per point (a CPU device's).
    #[test]
    fn forward_matches_burn_ops_on_wgpu() {
        with_both_kernels(forward_matches_burn_ops);
    }

    fn forward_matches_burn_ops() {
        for layout in LAYOUTS {
            let (encoding, points) = grid::<Wgpu<f32>>(&WgpuDevice::DefaultDevice, layout);
            let kernel = encode(&points, encoding.table.val(), &encoding.shape).expect("wgpu has the kernel");
            let ops = encoding.forward_ops(points);
            let values = |t: Tensor<Wgpu<f32>, 2>| t.into_data().to_vec::<f32>().expect("f32 values");
            assert_close(&values(kernel), &values(ops), 1e-6);
        }
    }

    /// With a thread per level (a CPU device's) and atomic adds (a GPU's).
    #[test]
    fn table_gradient_matches_burn_ops_autodiff_on_wgpu() {
        with_both_kernels(table_gradient_matches_burn_ops_autodiff);
    }

    fn table_gradient_matches_burn_ops_autodiff() {
        for layout in LAYOUTS {
            let (encoding, points) = grid::<Ad>(&WgpuDevice::DefaultDevice, layout);
            let encoding = HashEncoding {
                table: burn::module::Param::from_tensor(encoding.table.val().require_grad()),
                ..encoding
            };
            let kernel_out = encoding.forward(points.clone());
            let ops_out = encoding.forward_ops(points);
            let (kernel, ops) = table_gradients(&encoding, kernel_out, ops_out);
            assert_close(&kernel, &ops, 1e-6);
        }
    }

    #[test]
    fn point_gradient_matches_burn_ops_autodiff_on_wgpu() {
        for layout in LAYOUTS {
            let (encoding, points) = grid::<Ad>(&WgpuDevice::DefaultDevice, layout);
            let (kernel, ops) = point_gradients(&encoding, points);
            assert_close(&kernel, &ops, 1e-5);
        }
    }

    /// Every way of adding into the table gradient (a thread per level; the device's own atomic
    /// add, where it has one; the compare-and-swap loop) gives burn-ops autodiff's.
    #[test]
    fn every_scatter_gives_the_table_gradient() {
        let device = WgpuDevice::DefaultDevice;
        for layout in LAYOUTS {
            let (encoding, points) = grid::<Wgpu<f32>>(&device, layout);
            let shape = encoding.shape.clone();
            let grad = Tensor::<Wgpu<f32>, 2>::random(
                [points.dims()[0], encoding.out_dim()],
                burn::tensor::Distribution::Normal(0.0, 1.0),
                &device,
            );
            let table = Tensor::<Ad, 2>::from_inner(encoding.table.val()).require_grad();
            let tracked = encoding_of(table.clone(), layout);
            let out = tracked.forward_ops(Tensor::from_inner(points.clone()));
            let grads = (out * Tensor::from_inner(grad.clone())).sum().backward();
            let values = |t: Tensor<Wgpu<f32>, 2>| t.into_data().to_vec::<f32>().expect("f32 values");
            let expected = values(table.grad(&grads).expect("the table has a gradient"));

            let rows = encoding.table.val().dims()[0];
            let by = |scatter: Scatter| {
                let (points, grad) = (primitive(points.clone()), primitive(grad.clone()));
                let value = table_gradient(into_contiguous(points), grad, &shape, rows, scatter);
                values(Tensor::from_primitive(TensorPrimitive::Float(value)))
            };
            assert_close(&by(Scatter::ByLevel), &expected, 1e-6);
            assert_close(&by(Scatter::SwapAtomic), &expected, 1e-6);
            if has_float_atomic_add(&primitive(points.clone()).client) {
                assert_close(&by(Scatter::NativeAtomic), &expected, 1e-6);
            } else {
                eprintln!("this device has no float atomic add: only the compare-and-swap loop was tested");
            }
        }
    }
}
