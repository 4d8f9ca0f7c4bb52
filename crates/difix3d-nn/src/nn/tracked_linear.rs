//! A linear layer as one op under autodiff, shared by its two backward steps (the CubeCL kernels'
//! in [`super::linear`] and burn-flex's in [`super::flex_linear`]): what the step keeps
//! ([`LinearState`]) and how the layer's output, found on the inner backend, is recorded
//! ([`record`]).

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::ops::{Backward, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};

/// What a linear layer's backward step keeps: the input and the weight, contiguous, and the output
/// after a ReLU, as tensors `T` of the inner backend.
#[derive(Clone, Debug)]
pub struct LinearState<T> {
    pub x: T,
    pub weight: T,
    pub relu_output: Option<T>,
    /// The bias's rows.
    pub groups: usize,
}

/// `y`, a linear layer's output found on the inner backend `C`, as the output of the backward
/// `step` under autodiff, whose parents are the input, the weight and the bias (`parents`, the
/// first two also given contiguous on `C`, `inner`), keeping what `step` needs.
pub fn record<C: Backend, S: Backward<C, 3, State = LinearState<C::FloatTensorPrimitive>>>(
    step: S,
    parents: [FloatTensor<Autodiff<C>>; 3],
    inner: [C::FloatTensorPrimitive; 2],
    relu: bool,
    groups: usize,
    y: C::FloatTensorPrimitive,
) -> Tensor<Autodiff<C>, 2> {
    let [x, weight, bias] = parents;
    let [x_inner, weight_inner] = inner;
    let result = match step
        .prepare::<NoCheckpointing>([x.node, weight.node, bias.node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = LinearState {
                x: x_inner,
                weight: weight_inner,
                relu_output: relu.then(|| y.clone()),
                groups,
            };
            prep.finish(state, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Tensor::from_primitive(TensorPrimitive::Float(result))
}
