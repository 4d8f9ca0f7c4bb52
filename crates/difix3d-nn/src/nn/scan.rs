//! Cumulative sums along the rows of a 2-D tensor ([`cumsum_rows`]). burn's GPU backends run
//! `cumsum` with one thread per element, each summing its whole prefix again: `n²/2` additions per
//! row of `n`, 15% of a nerfacto training step's kernel time on lavapipe (BENCHMARKS.md). Here one
//! CubeCL thread per row keeps a running sum, forward and (reversed) backward. It adds the same
//! terms in the same order as burn's kernel (zero, then each entry from the first), so the values
//! are the same. Other backends (the CPU ones, whose own cumsum is a running sum) use burn's.

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
    match on_cube::<B, _>(Scan(t.clone())) {
        Some(sums) => sums,
        None => t.cumsum(1),
    }
}

struct Scan<B: Backend>(Tensor<B, 2>);

impl<B: Backend> OnCube for Scan<B> {
    type Output = Tensor<B, 2>;

    fn plain<C: CubeF32>(self) -> Option<Tensor<B, 2>> {
        let t = retype::<B, C, 2>(self.0)?.into_primitive().tensor();
        let sums = running_sums(t, false)?;
        retype::<C, B, 2>(Tensor::from_primitive(TensorPrimitive::Float(sums)))
    }

    fn tracked<C: CubeF32>(self) -> Option<Tensor<B, 2>> {
        let t = retype::<B, Autodiff<C>, 2>(self.0)?.into_primitive().tensor();
        let sums = running_sums(t.primitive, false)?;
        let result = match ScanBackward
            .prepare::<NoCheckpointing>([t.node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((), sums),
            OpsKind::UnTracked(prep) => prep.finish(sums),
        };
        retype::<Autodiff<C>, B, 2>(Tensor::from_primitive(TensorPrimitive::Float(result)))
    }
}

/// The gradient of a cumulative sum is the cumulative sum of the output's gradient from the end.
#[derive(Debug)]
struct ScanBackward;

impl<C: CubeF32> Backward<C, 1> for ScanBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<C>(&ops.node);
        let [parent] = ops.parents;
        let Some(parent) = parent else { return };
        let sums = running_sums(grad.clone(), true).unwrap_or_else(|| {
            // Not f32 (not reached: the forward only runs on f32 tensors): burn's own.
            let grad = Tensor::<C, 2>::from_primitive(TensorPrimitive::Float(grad));
            grad.flip([1]).cumsum(1).flip([1]).into_primitive().tensor()
        });
        grads.register::<C>(parent.id, sums);
    }
}

/// Running sums along each row of `t` `[R, n]`, from the end when `reverse`; `None` for tensors
/// that are not f32.
fn running_sums<R: CubeRuntime>(t: CubeTensor<R>, reverse: bool) -> Option<CubeTensor<R>> {
    if t.dtype != DType::F32 {
        return None;
    }
    let t = into_contiguous(t);
    let [rows, columns] = [t.meta.shape()[0], t.meta.shape()[1]];
    let out = empty_device::<R, f32>(t.client.clone(), t.device.clone(), [rows, columns].into());
    if rows * columns > 0 {
        let client = t.client.clone();
        let (cube_count, cube_dim) = elementwise(&client, rows);
        running_sum_kernel::launch::<R>(
            &client,
            cube_count,
            cube_dim,
            t.into_array_arg(),
            out.clone().into_array_arg(),
            columns,
            reverse,
        );
    }
    Some(out)
}

/// One row per thread: `output[j]` = the sum of `input[0..=j]` (of `input[j..]` when `reverse`).
#[cube(launch)]
fn running_sum_kernel(input: &Array<f32>, output: &mut Array<f32>, columns: usize, #[comptime] reverse: bool) {
    if ABSOLUTE_POS >= input.len() / columns {
        terminate!();
    }
    let base = ABSOLUTE_POS * columns;
    let mut sum = 0.0f32;
    for j in 0..columns {
        let k = if reverse { columns - 1 - j } else { j };
        sum += input[base + k];
        output[base + k] = sum;
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
}
