//! The hash grid's lookup as one kernel, forward and backward: [`cpu`] for burn's CPU backend
//! ([`CpuBackend`](crate::nn::backend::CpuBackend)), [`cube`] for its GPU backends (wgpu and CUDA,
//! one CubeCL kernel compiled to WGSL and to CUDA), each also under autodiff.
//!
//! [`super::encoding::HashEncoding::forward`] in burn ops is a graph of about a hundred tensor ops per
//! call (per axis: scale, floor, ceil, hash; per corner: XOR, mask, gather; seven blends of three
//! ops each), each writing an `[N, L]` or `[N, L, F]` tensor. Under autodiff each gather's backward
//! scatters into a zeroed copy of the whole table (64 MB for nerfacto's field) before the eight are
//! summed; on the GPU backends that scatter (burn's `select_assign`) runs one thread per feature
//! column, each adding all `N · L` rows in turn. Here one task per level and block of points (CPU)
//! or one thread per point and level (GPU) computes the same numbers in registers, and the backward
//! pass is one scatter into one zeroed table gradient: on the CPU parallel over levels (each level
//! owns its rows of the table), on the GPU with atomic adds.
//!
//! The forward values follow the burn-ops version operation for operation: the same f32 operations
//! in the same order (`x · s`, floor/ceil, `o = x·s − floor`, each blend `hi · o + lo · (−o + 1)`,
//! x first, then y, then z), and the same hash (only the low `log2 T` bits of the products matter,
//! see `encoding::mul_mod_pow2`, so wrapping 32-bit products give the same rows). On the CPU they are
//! bit-identical; a GPU compiler may fuse a product and a sum into one rounding, so there they agree
//! to float rounding. The table gradient sums the same terms in another order, so it agrees to float
//! rounding.
//!
//! The table always gets a gradient. The points get one when autodiff tracks them (with the camera
//! optimiser, whose corrections move the rays): per point, the sum over levels and features of the
//! output's gradient times `d(trilinear)/d(offset) · scale` on each axis, the corner values read
//! from the table, as the burn-ops path differentiates `x · scale − floor(x · scale)` (the floor
//! has no gradient). On backends without a kernel (ndarray) the caller uses the burn-ops path.

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::ops::{Backward, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};

mod cpu;
mod cube;

/// Instant-NGP's spatial hash primes, per axis, as wrapping 32-bit factors.
const PRIMES: [u32; 3] = [1, 2_654_435_761, 805_459_861];
// The x axis' factor is 1 on dense and hashed levels alike (the GPU kernel relies on it).
const _: () = assert!(PRIMES[0] == 1);

/// One level of a grid as the kernels need it: where a point lands and which table rows its
/// corners are.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Level {
    /// A coordinate `x` in [0, 1] lands at `x · scale + shift` (the grid's shift).
    pub scale: f32,
    /// The level's rows of the table: `first_row .. first_row + rows`.
    pub first_row: usize,
    pub rows: usize,
    /// `Some(r)`: the corner `(x, y, z)` is row `x + r·y + r²·z` (mod `rows`), a dense grid of
    /// resolution `r`; `None`: its hash `(x·p₀ ⊕ y·p₁ ⊕ z·p₂) mod rows` ([`PRIMES`], wrapping
    /// 32-bit products).
    pub dense_resolution: Option<u32>,
}

impl Level {
    /// Each axis' factor of the corner's index: the dense strides or the hash primes.
    fn factors(&self) -> [u32; 3] {
        match self.dense_resolution {
            Some(r) => [1, r, r.wrapping_mul(r)],
            None => PRIMES,
        }
    }
}

/// What the kernels need of a hash grid besides its table `[rows, F]`.
///
/// A point's cell at a level: `s = x · scale + shift` per axis, its corners `floor(s)` and
/// `floor(s) + 1`, the second weighted `o = s − floor(s)`. nerfstudio's torch grid has shift 0 and
/// takes `ceil(s)` as the second corner; the two differ only where `s` is a whole number, where
/// that corner's weight is 0, so the outputs and gradients are the same.
#[derive(Clone, Debug, PartialEq)]
pub struct GridShape {
    pub levels: Vec<Level>,
    pub shift: f32,
    pub features_per_level: usize,
}

impl GridShape {
    fn num_levels(&self) -> usize {
        self.levels.len()
    }

    /// The rows a table of this grid has.
    pub fn table_rows(&self) -> usize {
        self.levels.last().map_or(0, |l| l.first_row + l.rows)
    }

    /// The dense levels, which come first (resolutions only grow), and where the hashed ones
    /// start: the GPU kernel reads a table for the dense levels only, and finds a hashed level's
    /// rows from its index.
    fn hashed_levels(&self) -> HashedLevels {
        let dense = self.levels.iter().take_while(|l| l.dense_resolution.is_some()).count();
        let first = self.levels.get(dense);
        HashedLevels {
            dense,
            first_row: first.map_or(self.table_rows(), |l| l.first_row),
            log2_rows: first.map_or(0, |l| l.rows.trailing_zeros()),
        }
    }

    /// Whether the levels are laid out as the kernels take them ([`Self::hashed_levels`]): dense
    /// levels first, then hashed ones of one power-of-two size, one after the other (as
    /// `encoding::grid_shape` makes them), each with rows that a 32-bit index counts.
    fn kernel_ready(&self) -> bool {
        let hashed = self.hashed_levels();
        self.levels.iter().all(|l| u32::try_from(l.rows).is_ok())
            && self.levels[hashed.dense..].iter().enumerate().all(|(k, l)| {
                l.dense_resolution.is_none()
                    && l.rows == 1 << hashed.log2_rows
                    && l.first_row == hashed.first_row + (k << hashed.log2_rows)
            })
    }
}

/// The dense levels' count and the hashed levels' layout (see [`GridShape::hashed_levels`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct HashedLevels {
    dense: usize,
    /// The first hashed level's first row.
    first_row: usize,
    /// Each hashed level has `2^log2_rows` rows.
    log2_rows: u32,
}

/// The encoding of `points` `[N, 3]` (`[0, 1]³`) through `table` `[rows, F]`: `[N, L · F]`.
/// `None` when `B` has no kernel (ndarray): the caller then runs the burn-ops version.
pub fn encode<B: Backend>(points: &Tensor<B, 2>, table: Tensor<B, 2>, shape: &GridShape) -> Option<Tensor<B, 2>> {
    if shape.features_per_level == 0 || shape.num_levels() == 0 {
        // Nothing to look up (and no row length to split the work by): the burn-ops version.
        return None;
    }
    if table.dims() != [shape.table_rows(), shape.features_per_level] || !shape.kernel_ready() {
        // Not this grid's table, or levels laid out otherwise (`HashEncoding::new` makes sure of
        // both): no kernel reads past the table.
        return None;
    }
    cpu::encode(points, table.clone(), shape).or_else(|| cube::encode(points, table, shape))
}

/// The lookup under autodiff over `C`, with `step` as its backward step (the points and the table
/// its parents): `forward` maps the inner points and table, and whether the points are tracked
/// (their gradient then needs the table kept), to the output and the state `step` keeps. `None`
/// when `forward` declines.
fn track<C: Backend, S: Backward<C, 2>>(
    points: Tensor<Autodiff<C>, 2>,
    table: Tensor<Autodiff<C>, 2>,
    step: S,
    forward: impl FnOnce(
        C::FloatTensorPrimitive,
        C::FloatTensorPrimitive,
        bool,
    ) -> Option<(C::FloatTensorPrimitive, S::State)>,
) -> Option<Tensor<Autodiff<C>, 2>> {
    let points = points.into_primitive().tensor();
    let tracked = !points.node.requirement.is_none();
    let table = table.into_primitive().tensor();
    let (output, state) = forward(points.primitive, table.primitive.clone(), tracked)?;
    let parents = [points.node, table.node];
    let result = match step.prepare::<NoCheckpointing>(parents).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(state, output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    };
    Some(Tensor::from_primitive(TensorPrimitive::Float(result)))
}

#[cfg(test)]
mod tests {
    use burn::backend::Autodiff;
    use burn::tensor::Distribution;

    use super::*;
    use crate::nerfacto::encoding::{grid_shape, GridLayout, HashEncoding};
    use crate::nn::backend::CpuBackend;

    /// Both layouts: nerfstudio's torch grid and tiny-cuda-nn's (a dense first level of 27
    /// corners in 32 rows, where the index wraps, then two hashed ones).
    pub(super) const LAYOUTS: [GridLayout; 2] = [GridLayout::Torch, GridLayout::Tcnn];

    /// A small grid of `layout` (3 levels of at most 2^10 rows, 2 features; coarse levels with
    /// colliding corners) and points in [0, 1]³, including the cube's faces, where a point lies on
    /// a cell's boundary.
    pub(super) fn grid<B: Backend>(device: &B::Device, layout: GridLayout) -> (HashEncoding<B>, Tensor<B, 2>) {
        grid_of(device, layout, 300)
    }

    /// [`grid`] with `n` random points (and the three on the faces).
    pub(super) fn grid_of<B: Backend>(
        device: &B::Device,
        layout: GridLayout,
        n: usize,
    ) -> (HashEncoding<B>, Tensor<B, 2>) {
        let rows = grid_shape(layout, 3, 3, 64, 10, 2).table_rows();
        let table = Tensor::<B, 2>::random([rows, 2], Distribution::Uniform(-1.0, 1.0), device);
        let encoding = encoding_of(table, layout);
        let mut points = Tensor::<B, 2>::random([n, 3], Distribution::Uniform(0.0, 1.0), device);
        let corners = Tensor::<B, 2>::from_floats([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.25, 1.0]], device);
        points = Tensor::cat(vec![points, corners], 0);
        (encoding, points)
    }

    /// The test grid's encoding of `layout` with `table`.
    pub(super) fn encoding_of<B: Backend>(table: Tensor<B, 2>, layout: GridLayout) -> HashEncoding<B> {
        HashEncoding::new(table, layout, 3, 3, 64, 10).expect("valid sizes")
    }

    #[test]
    fn the_test_grids_have_the_levels_they_test() {
        let torch = grid_shape(GridLayout::Torch, 3, 3, 64, 10, 2);
        assert_eq!(torch.table_rows(), 3 << 10);
        assert!(torch.levels.iter().all(|l| l.dense_resolution.is_none()));
        let tcnn = grid_shape(GridLayout::Tcnn, 3, 3, 64, 10, 2);
        let sizes: Vec<_> = tcnn
            .levels
            .iter()
            .map(|l| (l.first_row, l.rows, l.dense_resolution))
            .collect();
        assert_eq!(sizes, [(0, 32, Some(3)), (32, 1024, None), (1056, 1024, None)]);
        // Both are laid out as the kernels take them; a dense level after a hashed one is not.
        assert!(torch.kernel_ready() && tcnn.kernel_ready());
        assert_eq!(
            tcnn.hashed_levels(),
            HashedLevels {
                dense: 1,
                first_row: 32,
                log2_rows: 10
            }
        );
        let mut reordered = tcnn.clone();
        reordered.levels.swap(0, 1);
        assert!(!reordered.kernel_ready());
    }

    /// The table gradients of `kernel` and `ops` (two encodings of the same points under autodiff),
    /// weighted by random weights per output.
    pub(super) fn table_gradients<B: burn::tensor::backend::AutodiffBackend>(
        encoding: &HashEncoding<B>,
        kernel: Tensor<B, 2>,
        ops: Tensor<B, 2>,
    ) -> (Vec<f32>, Vec<f32>) {
        let weights = Tensor::<B, 2>::random(kernel.dims(), Distribution::Normal(0.0, 1.0), &kernel.device());
        let gradient = |out: Tensor<B, 2>| {
            let grads = (out * weights.clone()).sum().backward();
            let grad = encoding.table.val().grad(&grads).expect("the table has a gradient");
            grad.into_data().to_vec::<f32>().expect("f32 values")
        };
        (gradient(kernel), gradient(ops))
    }

    /// The points' gradients of the kernel and of burn ops (the encodings of tracked `points`,
    /// weighted by random weights per output), in the same table that gets its gradient too.
    pub(super) fn point_gradients<B: burn::tensor::backend::AutodiffBackend>(
        encoding: &HashEncoding<B>,
        points: Tensor<B, 2>,
    ) -> (Vec<f32>, Vec<f32>) {
        let encoding = HashEncoding {
            table: burn::module::Param::from_tensor(encoding.table.val().require_grad()),
            ..encoding.clone()
        };
        let [n, _] = points.dims();
        let weights = Tensor::<B, 2>::random(
            [n, encoding.out_dim()],
            Distribution::Normal(0.0, 1.0),
            &points.device(),
        );
        let gradient = |kernel: bool| {
            let tracked = Tensor::<B, 2>::from_inner(points.clone().inner()).require_grad();
            let out = match kernel {
                true => encode(&tracked, encoding.table.val(), &encoding.shape).expect("the backend has a kernel"),
                false => encoding.forward_ops(tracked.clone()),
            };
            let grads = (out * weights.clone()).sum().backward();
            let grad = tracked.grad(&grads).expect("the points have a gradient");
            assert!(
                encoding.table.val().grad(&grads).is_some(),
                "the table has a gradient too"
            );
            grad.into_data().to_vec::<f32>().expect("f32 values")
        };
        (gradient(true), gradient(false))
    }

    /// `kernel` equals `ops` to `tolerance` of `ops`' largest value, which is not trivial, and both
    /// are zero in the same places.
    pub(super) fn assert_close(kernel: &[f32], ops: &[f32], tolerance: f32) {
        assert_eq!(kernel.len(), ops.len());
        let largest = ops.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(largest > 0.1, "the values are not trivial");
        for (i, (a, b)) in kernel.iter().zip(ops).enumerate() {
            assert!(
                (a - b).abs() <= tolerance * largest,
                "row {} feature {}: {a} vs {b}",
                i / 2,
                i % 2
            );
        }
        assert_eq!(
            kernel.iter().filter(|v| **v != 0.0).count(),
            ops.iter().filter(|v| **v != 0.0).count()
        );
    }

    /// Tracked points take the kernel too; ndarray has none.
    #[test]
    fn ndarray_falls_back_to_burn_ops() {
        let (encoding, points) = grid::<Autodiff<CpuBackend>>(&Default::default(), GridLayout::Torch);
        let shape = encoding.shape.clone();
        assert!(encode(&points, encoding.table.val(), &shape).is_some());
        assert!(encode(&points.require_grad(), encoding.table.val(), &shape).is_some());
        let ndarray_points = Tensor::<burn::backend::NdArray, 2>::zeros([1, 3], &Default::default());
        let ndarray_table = Tensor::<burn::backend::NdArray, 2>::zeros([3 << 10, 2], &Default::default());
        assert!(encode(&ndarray_points, ndarray_table, &shape).is_none());
    }
}
