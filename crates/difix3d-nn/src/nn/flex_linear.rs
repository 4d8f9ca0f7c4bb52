//! [`super::linear`]'s layers under autodiff on burn's CPU backend ([`Flex`]), as nerfacto trains
//! them: burn's `linear` there is a matmul, a pass adding the bias (for a bias per group of rows, a
//! repeated copy of it first) and a ReLU, each with its own backward step. Here the forward is one
//! gemm into the bias rows with the ReLU in place ([`flex_kernels::products`]), and the backward
//! step zeroes the output's gradient where the ReLU's output is not positive, then finds
//! - the input's gradient `dy · Wᵀ`, one gemm;
//! - the weight's gradient `xᵀ · dy`, one gemm per thread over its share of the rows (a product of
//!   64 × 64 outputs over hundreds of thousands of rows, which gemm splits by outputs only), the
//!   shares then added;
//! - the bias's gradient, `dy` summed over each bias row's rows.

use std::any::TypeId;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use super::backend::retype;
use super::flex_kernels;
use super::tracked_linear::{record, LinearState};

type Tracked = Autodiff<Flex>;

/// Rows per task of the bias gradient's sums, and the fewest per thread of the weight gradient.
const CHUNK_ROWS: usize = 4096;

/// `x · weight + bias` (`bias` `[G, out]`, row `g` for the `N / G` consecutive rows of group `g`;
/// without one, none), through a ReLU when `relu`, when `B` is autodiff over [`Flex`] and the
/// tensors are f32; `None` otherwise (burn's ops then run it).
pub fn linear_tracked<B: Backend>(
    x: &Tensor<B, 2>,
    weight: &Tensor<B, 2>,
    bias: Option<&Tensor<B, 2>>,
    relu: bool,
) -> Option<Tensor<B, 2>> {
    if TypeId::of::<B>() != TypeId::of::<Tracked>() {
        return None;
    }
    let x = retype::<B, Tracked, 2>(x.clone())?;
    let weight = retype::<B, Tracked, 2>(weight.clone())?;
    let [rows, outputs] = [x.dims()[0], weight.dims()[1]];
    // Without a bias, a zero one that no gradient reaches.
    let bias = match bias {
        Some(b) => retype::<B, Tracked, 2>(b.clone())?,
        None => Tensor::from_inner(Tensor::zeros([1, outputs], &Default::default())),
    };
    let groups = bias.dims()[0];
    if groups == 0 || !rows.is_multiple_of(groups) || bias.dims()[1] != outputs {
        return None;
    }
    let (x, weight, bias) = (
        x.into_primitive().tensor(),
        weight.into_primitive().tensor(),
        bias.into_primitive().tensor(),
    );
    let x_inner = x.primitive.clone().to_contiguous();
    let weight_inner = weight.primitive.clone().to_contiguous();
    if [x_inner.dtype(), weight_inner.dtype(), bias.primitive.dtype()] != [DType::F32; 3] {
        return None;
    }
    let bias_inner = Tensor::<Flex, 2>::from_primitive(TensorPrimitive::Float(bias.primitive.clone()));
    let weight_tensor = Tensor::<Flex, 2>::from_primitive(TensorPrimitive::Float(weight_inner.clone()));
    let y = flex_kernels::products(x_inner.clone(), &weight_tensor, Some(&bias_inner), relu).ok()?;
    let result = record(
        LinearBackward,
        [x, weight, bias],
        [x_inner, weight_inner],
        relu,
        groups,
        y,
    );
    retype::<Tracked, B, 2>(result)
}

#[derive(Debug)]
struct LinearBackward;

impl Backward<Flex, 3> for LinearBackward {
    type State = LinearState<FlexTensor>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let [x_node, weight_node, bias_node] = ops.parents;
        let LinearState {
            x,
            weight,
            relu_output,
            groups,
        } = ops.state;
        let [rows, inputs] = [x.layout().shape()[0], x.layout().shape()[1]];
        let outputs = weight.layout().shape()[1];
        let masked;
        let dy = match &relu_output {
            Some(y) => {
                masked = relu_gradient(values(&grad), values(y));
                masked.as_slice()
            }
            None => values(&grad),
        };
        let register = |grads: &mut Gradients, id, values: Vec<f32>, shape: [usize; 2]| {
            grads.register::<Flex>(id, FlexTensor::from_data(TensorData::new(values, shape)));
        };
        if let Some(node) = bias_node {
            register(grads, node.id, group_sums(dy, outputs, groups), [groups, outputs]);
        }
        if let Some(node) = weight_node {
            let value = weight_gradient(values(&x), dy, rows, inputs, outputs);
            register(grads, node.id, value, [inputs, outputs]);
        }
        if let Some(node) = x_node {
            let value = input_gradient(dy, values(&weight), rows, inputs, outputs);
            register(grads, node.id, value, [rows, inputs]);
        }
    }
}

/// The values of a contiguous f32 tensor.
fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("a contiguous f32 tensor")
}

/// `grad` where the ReLU's `output` is positive, else 0.
fn relu_gradient(grad: &[f32], output: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; grad.len()];
    out.par_chunks_mut(1 << 16)
        .zip(grad.par_chunks(1 << 16).zip(output.par_chunks(1 << 16)))
        .for_each(|(out, (grad, output))| {
            for ((o, g), y) in out.iter_mut().zip(grad).zip(output) {
                *o = if *y > 0.0 { *g } else { 0.0 };
            }
        });
    out
}

/// `dy` `[N, out]` summed over each of `groups` groups of consecutive rows: `[groups, out]`.
fn group_sums(dy: &[f32], outputs: usize, groups: usize) -> Vec<f32> {
    let mut out = vec![0f32; groups * outputs];
    if outputs == 0 || dy.is_empty() {
        return out;
    }
    let group_len = dy.len() / groups;
    // Each group's rows in chunks summed in parallel, then the chunks' sums added in order.
    let chunk_len = group_len.min(CHUNK_ROWS * outputs);
    let partial: Vec<Vec<f32>> = dy
        .par_chunks(group_len)
        .flat_map_iter(|group| group.chunks(chunk_len))
        .map(|chunk| {
            let mut sums = vec![0f32; outputs];
            for row in chunk.chunks_exact(outputs) {
                sums.iter_mut().zip(row).for_each(|(s, v)| *s += v);
            }
            sums
        })
        .collect();
    let chunks_per_group = group_len.div_ceil(chunk_len);
    for (sums, parts) in out.chunks_exact_mut(outputs).zip(partial.chunks(chunks_per_group)) {
        for part in parts {
            sums.iter_mut().zip(part).for_each(|(s, v)| *s += v);
        }
    }
    out
}

/// `xᵀ · dy` `[in, out]` for `x` `[N, in]` and `dy` `[N, out]`: a gemm per thread over its share of
/// the rows, the shares then added in order.
fn weight_gradient(x: &[f32], dy: &[f32], rows: usize, inputs: usize, outputs: usize) -> Vec<f32> {
    let size = inputs * outputs;
    if size == 0 || rows == 0 {
        return vec![0f32; size];
    }
    let shares = rayon::current_num_threads().clamp(1, rows.div_ceil(CHUNK_ROWS));
    let share_rows = rows.div_ceil(shares);
    let partial: Vec<Vec<f32>> = (0..rows.div_ceil(share_rows))
        .into_par_iter()
        .map(|share| {
            let first = share * share_rows;
            let k = share_rows.min(rows - first);
            let mut out = vec![0f32; size];
            // SAFETY: dst is `out`, [in, out] row-major; lhs element (i, r) is x[(first + r)·in + i]
            // and rhs element (r, j) is dy[(first + r)·out + j], for r < k: rows below `rows`, inside
            // both slices.
            unsafe {
                gemm::gemm(
                    inputs,
                    outputs,
                    k,
                    out.as_mut_ptr(),
                    1,
                    outputs as isize,
                    false,
                    x.as_ptr().add(first * inputs),
                    inputs as isize,
                    1,
                    dy.as_ptr().add(first * outputs),
                    1,
                    outputs as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            out
        })
        .collect();
    let mut parts = partial.into_iter();
    let mut sum = parts.next().unwrap_or_else(|| vec![0f32; size]);
    for part in parts {
        sum.iter_mut().zip(part).for_each(|(s, v)| *s += v);
    }
    sum
}

/// `dy · Wᵀ` `[N, in]` for `dy` `[N, out]` and `weight` `[in, out]`.
fn input_gradient(dy: &[f32], weight: &[f32], rows: usize, inputs: usize, outputs: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * inputs];
    if out.is_empty() || outputs == 0 {
        return out;
    }
    // SAFETY: dst is `out`, [N, in] row-major; lhs element (r, j) is dy[r·out + j] and rhs element
    // (j, i) is weight[i·out + j]: inside both slices for r < N, j < out, i < in.
    unsafe {
        gemm::gemm(
            rows,
            inputs,
            outputs,
            out.as_mut_ptr(),
            1,
            inputs as isize,
            false,
            dy.as_ptr(),
            1,
            outputs as isize,
            weight.as_ptr(),
            outputs as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_sums_add_each_groups_rows() {
        // 3 groups of 2 rows of 2 outputs, and one group of them all.
        let dy: Vec<f32> = (0..12).map(|v| v as f32).collect();
        assert_eq!(group_sums(&dy, 2, 3), [2.0, 4.0, 10.0, 12.0, 18.0, 20.0]);
        assert_eq!(group_sums(&dy, 2, 1), [30.0, 36.0]);
    }
}
