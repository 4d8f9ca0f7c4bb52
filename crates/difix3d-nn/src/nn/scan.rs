//! Cumulative sums along the rows of a 2-D tensor ([`cumsum_rows`]). burn's GPU backends run
//! `cumsum` with one thread per element, each summing its whole prefix again: `n²/2` additions per
//! row of `n`, 15% of a nerfacto training step's kernel time on lavapipe (BENCHMARKS.md). Here one
//! CubeCL thread per row keeps a running sum, forward and (reversed) backward. It adds the same
//! terms in the same order as burn's kernel (zero, then each entry from the first), so the values
//! are the same. Other backends (the CPU ones, whose own cumsum is a running sum) use burn's.
//! [`cumsum_rows_from_zero`] also writes the leading zero column nerfacto puts before its sums,
//! instead of a concatenation.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorPrimitive};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::*;

use super::backend::retype;
use super::cube::{elementwise, on_cube, CubeF32, OnCube};

/// `t.cumsum(1)` for `t` `[R, n]`.
pub fn cumsum_rows<B: Backend>(t: Tensor<B, 2>) -> Tensor<B, 2> {
    match on_cube::<B, _>(Scan {
        t: t.clone(),
        from_zero: false,
    }) {
        Some(sums) => sums,
        None => t.cumsum(1),
    }
}

/// The cumulative sums of `t` `[R, n]` after a leading zero: `[R, n + 1]`, `[0, t₀, t₀ + t₁, …]`,
/// as `cat([0, t.cumsum(1)], 1)` (the same values) in one pass.
pub fn cumsum_rows_from_zero<B: Backend>(t: Tensor<B, 2>) -> Tensor<B, 2> {
    match on_cube::<B, _>(Scan {
        t: t.clone(),
        from_zero: true,
    }) {
        Some(sums) => sums,
        None => {
            let zeros = Tensor::zeros([t.dims()[0], 1], &t.device());
            Tensor::cat(vec![zeros, t.cumsum(1)], 1)
        }
    }
}

struct Scan<B: Backend> {
    t: Tensor<B, 2>,
    /// Output a leading zero column before the sums.
    from_zero: bool,
}

impl<B: Backend> OnCube for Scan<B> {
    type Output = Tensor<B, 2>;

    fn plain<C: CubeF32>(self) -> Option<Tensor<B, 2>> {
        let t = retype::<B, C, 2>(self.t)?.into_primitive().tensor();
        let sums = running_sums(t, Direction::forward(self.from_zero))?;
        retype::<C, B, 2>(Tensor::from_primitive(TensorPrimitive::Float(sums)))
    }

    fn tracked<C: CubeF32>(self) -> Option<Tensor<B, 2>> {
        let t = retype::<B, Autodiff<C>, 2>(self.t)?.into_primitive().tensor();
        let sums = running_sums(t.primitive, Direction::forward(self.from_zero))?;
        let result = match ScanBackward
            .prepare::<NoCheckpointing>([t.node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(self.from_zero, sums),
            OpsKind::UnTracked(prep) => prep.finish(sums),
        };
        retype::<Autodiff<C>, B, 2>(Tensor::from_primitive(TensorPrimitive::Float(result)))
    }
}

/// The gradient of a cumulative sum is the cumulative sum of the output's gradient from the end
/// (without the leading zero's column, which depends on nothing).
#[derive(Debug)]
struct ScanBackward;

impl<C: CubeF32> Backward<C, 1> for ScanBackward {
    /// Whether the forward output a leading zero.
    type State = bool;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<C>(&ops.node);
        let [parent] = ops.parents;
        let Some(parent) = parent else { return };
        let from_zero = ops.state;
        let sums = running_sums(grad.clone(), Direction::backward(from_zero)).unwrap_or_else(|| {
            // Not f32 (not reached: the forward only runs on f32 tensors): burn's own.
            let grad = Tensor::<C, 2>::from_primitive(TensorPrimitive::Float(grad));
            let [_, columns] = grad.dims();
            let grad = if from_zero {
                grad.narrow(1, 1, columns - 1)
            } else {
                grad
            };
            grad.flip([1]).cumsum(1).flip([1]).into_primitive().tensor()
        });
        grads.register::<C>(parent.id, sums);
    }
}

/// Which running sums [`running_sums`] computes.
#[derive(Clone, Copy, Debug)]
struct Direction {
    /// From the end of each row.
    reverse: bool,
    /// Output a zero column before the sums (`[R, n + 1]`).
    zero_first: bool,
    /// Skip the input's first column (`[R, n + 1]` in, `[R, n]` out).
    skip_first: bool,
}

impl Direction {
    fn forward(from_zero: bool) -> Self {
        Self {
            reverse: false,
            zero_first: from_zero,
            skip_first: false,
        }
    }

    fn backward(from_zero: bool) -> Self {
        Self {
            reverse: true,
            zero_first: false,
            skip_first: from_zero,
        }
    }
}

/// Running sums along each row of `t` `[R, n]` as `direction` says; `None` for tensors that are
/// not f32 (or without the column to skip).
fn running_sums<R: CubeRuntime>(t: CubeTensor<R>, direction: Direction) -> Option<CubeTensor<R>> {
    if t.dtype != DType::F32 {
        return None;
    }
    let t = into_contiguous(t);
    let [rows, in_columns] = [t.meta.shape()[0], t.meta.shape()[1]];
    let columns = match direction.skip_first {
        true => in_columns.checked_sub(1)?,
        false => in_columns,
    };
    let out_columns = columns + usize::from(direction.zero_first);
    let out = empty_device::<R, f32>(t.client.clone(), t.device.clone(), [rows, out_columns].into());
    if rows * out_columns > 0 {
        let client = t.client.clone();
        let (cube_count, cube_dim) = elementwise(&client, rows);
        running_sum_kernel::launch::<R>(
            &client,
            cube_count,
            cube_dim,
            t.into_array_arg(),
            out.clone().into_array_arg(),
            rows,
            columns,
            direction.reverse,
            direction.zero_first,
            direction.skip_first,
        );
    }
    Some(out)
}

/// One row per thread, with `columns` sums: `output[j]` = the sum of `input[0..=j]` (of
/// `input[j..]` when `reverse`); with `zero_first` the output row starts with an extra 0, with
/// `skip_first` the input row with an extra column that is not read.
#[cube(launch)]
fn running_sum_kernel(
    input: &Array<f32>,
    output: &mut Array<f32>,
    rows: usize,
    columns: usize,
    #[comptime] reverse: bool,
    #[comptime] zero_first: bool,
    #[comptime] skip_first: bool,
) {
    if ABSOLUTE_POS >= rows {
        terminate!();
    }
    let mut base_in = ABSOLUTE_POS * columns;
    if skip_first {
        base_in = ABSOLUTE_POS * (columns + 1) + 1;
    }
    let mut base_out = ABSOLUTE_POS * columns;
    if zero_first {
        base_out = ABSOLUTE_POS * (columns + 1);
        output[base_out] = 0.0;
        base_out += 1;
    }
    let mut sum = 0.0f32;
    for j in 0..columns {
        let k = if reverse { columns - 1 - j } else { j };
        sum += input[base_in + k];
        output[base_out + k] = sum;
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::wgpu::WgpuDevice;
    use burn::backend::Wgpu;
    use burn::tensor::Distribution;

    use super::*;

    type Ad = Autodiff<Wgpu<f32>>;

    fn values<B: Backend>(t: Tensor<B, 2>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().expect("f32 values")
    }

    /// The kernel's sums and gradient equal burn's cumsum and its autodiff.
    #[test]
    fn matches_burn_cumsum_on_wgpu() {
        let device = WgpuDevice::DefaultDevice;
        let t = Tensor::<Ad, 2>::random([37, 257], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let weights = Tensor::<Ad, 2>::random([37, 257], Distribution::Normal(0.0, 1.0), &device);
        let (kernel, burn) = (cumsum_rows(t.clone()), t.clone().cumsum(1));
        assert_eq!(values(kernel.clone()), values(burn.clone()));
        let gradient =
            |out: Tensor<Ad, 2>| values(t.grad(&(out * weights.clone()).sum().backward()).expect("a gradient"));
        assert_eq!(gradient(kernel), gradient(burn));
        // Without autodiff, and a transposed (not contiguous) input.
        let plain = t.inner().transpose();
        assert_eq!(values(cumsum_rows(plain.clone())), values(plain.cumsum(1)));
    }

    /// The sums after a leading zero equal burn's zero column concatenated with its cumsum, and so
    /// does their gradient.
    #[test]
    fn from_zero_matches_a_zero_column_and_burn_cumsum_on_wgpu() {
        let device = WgpuDevice::DefaultDevice;
        let t = Tensor::<Ad, 2>::random([37, 65], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let weights = Tensor::<Ad, 2>::random([37, 66], Distribution::Normal(0.0, 1.0), &device);
        let burn = Tensor::cat(vec![Tensor::zeros([37, 1], &device), t.clone().cumsum(1)], 1);
        let kernel = cumsum_rows_from_zero(t.clone());
        assert_eq!(values(kernel.clone()), values(burn.clone()));
        let gradient =
            |out: Tensor<Ad, 2>| values(t.grad(&(out * weights.clone()).sum().backward()).expect("a gradient"));
        assert_eq!(gradient(kernel), gradient(burn));
        let plain = t.inner();
        let burn = Tensor::cat(vec![Tensor::zeros([37, 1], &device), plain.clone().cumsum(1)], 1);
        assert_eq!(values(cumsum_rows_from_zero(plain)), values(burn));
    }
}
