//! Linear layers with few inputs and outputs over many rows ([`linear`], [`linear_grouped`]), as
//! nerfacto's MLPs are: widths of 1 to 64 over hundreds of thousands of samples. burn's GPU matmul
//! tiles the output, which suits square products; here the weight gradient `xᵀ · dy` sums over all
//! the rows into a 64 × 64 result, and burn's kernels took 57% of a nerfacto training step's kernel
//! time on lavapipe (BENCHMARKS.md). These CubeCL kernels (WGSL for wgpu, CUDA for the `cuda` build)
//! are shaped for such layers:
//! - `y = x · W + b` (and the input gradient `dy · Wᵀ`), on a GPU: one thread per 4 rows and block
//!   of up to 8 outputs, the block the same for a whole cube, so every thread of a cube reads the
//!   same weights, and each weight read serves 4 rows;
//! - the same on a CPU device (lavapipe), where reading memory is what costs: one thread per block
//!   of up to 8 outputs that keeps the block's weights in registers over 64 rows
//!   ([`resident_plan`]);
//! - the weight gradient `xᵀ · dy`: one thread per 4 inputs and block of outputs over a chunk of
//!   rows (on a CPU device, per tile of up to 16 × 16 kept in registers), the chunks' partial sums
//!   then added by burn;
//! - the bias gradient is burn's sum over rows.
//!
//! The bias may differ per group of consecutive rows ([`linear_grouped`]): a term shared by a ray's
//! samples is computed once per ray and added as such a bias.
//!
//! A ReLU after the layer ([`Activation::Relu`]) is applied as each output is written, and its
//! gradient (`dy` where the output is positive, else 0) is one pass before the others, instead of
//! burn's comparison and masked fill each way.
//!
//! Each output is summed in the order burn's CPU backends use (inputs from the first, bias last), so
//! values agree with burn's to float rounding. On burn's CPU backend the layer is one gemm into the
//! bias rows with the ReLU in place ([`flex_kernels::linear_rows`]; under autodiff
//! [`flex_linear`], whose backward step is gemms too); on other backends (ndarray), burn's ops.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorPrimitive};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use cubecl::prelude::*;

use super::backend::retype;
use super::cube::{cpu_device, elementwise, on_cube, CubeF32, OnCube};
use super::tracked_linear::{record, LinearState};
use super::{flex_kernels, flex_linear};

/// Threads per cube along the rows (forward) or the inputs (weight gradient).
const CUBE_THREADS: usize = 64;
/// The most outputs per thread.
const MAX_BLOCK: usize = 8;
/// Rows per thread of the rows kernel.
const ROWS: usize = 4;
/// The most outputs per thread of the resident kernel.
const MAX_RESIDENT_BLOCK: usize = 8;
/// The most weights a thread of the resident kernel keeps. lavapipe compiles a kernel in time that
/// grows fast with the values it keeps in registers: 32 outputs of 64 inputs ran the forward 1.5x
/// faster than 8 but took 45 s to compile, against about a second (BENCHMARKS.md).
const MAX_RESIDENT_WEIGHTS: usize = 512;
/// The most inputs and outputs per thread of the resident weight-gradient kernel (a tile of up to
/// 16 × 16 sums in registers).
const MAX_GRADIENT_BLOCK: usize = 16;
/// Rows per thread of the resident kernel (a stride of the grid apart).
const RESIDENT_ROWS: usize = 64;
/// The fewest rows per chunk of the resident weight-gradient kernel.
const RESIDENT_CHUNK_ROWS: usize = 1024;
/// The most chunks of rows of the resident weight-gradient kernel.
const MAX_RESIDENT_CHUNKS: usize = 256;
/// Threads per cube of the resident weight-gradient kernel, along the chunks.
const RESIDENT_GRADIENT_THREADS: usize = 16;
/// Inputs per thread of the weight-gradient kernel.
const INPUTS: usize = 4;
/// The most chunks of rows the weight gradient is split into.
const MAX_CHUNKS: usize = 1024;
/// The fewest rows per chunk of the weight gradient.
const MIN_CHUNK_ROWS: usize = 256;

/// What follows the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    None,
    Relu,
}

/// `activation(x · weight + bias)` for `x` `[N, in]`, `weight` `[in, out]`, `bias` `[out]`:
/// burn's `linear`, then `relu` if asked.
pub fn linear<B: Backend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    activation: Activation,
) -> Tensor<B, 2> {
    let relu = activation == Activation::Relu;
    let bias_row = bias.clone().map(|b| b.unsqueeze_dim(0));
    if let Some(y) = flex_kernels::linear_rows(&x, &weight, bias_row.as_ref(), relu) {
        return y;
    }
    if let Some(y) = flex_linear::linear_tracked(&x, &weight, bias_row.as_ref(), relu) {
        return y;
    }
    let job = Linear {
        x: x.clone(),
        weight: weight.clone(),
        bias: bias_row,
        relu,
    };
    match on_cube::<B, _>(job) {
        Some(y) => y,
        None => activate(burn::tensor::module::linear(x, weight, bias), activation),
    }
}

/// [`linear`] with a bias per group of rows: `bias` `[G, out]`, row `g` added to the `N / G`
/// consecutive rows of group `g` (`G` must divide `N`). A term that is the same for all the
/// samples of a ray is one such bias, computed once per ray.
pub fn linear_grouped<B: Backend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Tensor<B, 2>,
    activation: Activation,
) -> Tensor<B, 2> {
    let ([rows, _], [groups, _]) = (x.dims(), bias.dims());
    assert!(
        groups > 0 && rows.is_multiple_of(groups),
        "linear_grouped: {groups} bias groups for {rows} rows"
    );
    let relu = activation == Activation::Relu;
    if let Some(y) = flex_kernels::linear_rows(&x, &weight, Some(&bias), relu) {
        return y;
    }
    if let Some(y) = flex_linear::linear_tracked(&x, &weight, Some(&bias), relu) {
        return y;
    }
    let job = Linear {
        x: x.clone(),
        weight: weight.clone(),
        bias: Some(bias.clone()),
        relu,
    };
    match on_cube::<B, _>(job) {
        Some(y) => y,
        None => activate(x.matmul(weight) + repeat_rows(bias, rows), activation),
    }
}

/// `t` `[g, k]` with each row repeated `rows / g` times in a row: `[rows, k]` (`g` divides `rows`),
/// as [`linear_grouped`] applies its bias rows.
pub fn repeat_rows<B: Backend>(t: Tensor<B, 2>, rows: usize) -> Tensor<B, 2> {
    let [g, k] = t.dims();
    match g {
        _ if g == rows || g == 0 => t,
        _ => t.reshape([g, 1, k]).expand([g, rows / g, k]).reshape([rows, k]),
    }
}

fn activate<B: Backend>(y: Tensor<B, 2>, activation: Activation) -> Tensor<B, 2> {
    match activation {
        Activation::None => y,
        Activation::Relu => burn::tensor::activation::relu(y),
    }
}

struct Linear<B: Backend> {
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    /// `[G, out]`, each row for `N / G` consecutive rows.
    bias: Option<Tensor<B, 2>>,
    relu: bool,
}

impl<B: Backend> OnCube for Linear<B> {
    type Output = Tensor<B, 2>;

    fn plain<C: CubeF32>(self) -> Option<Tensor<B, 2>> {
        let x = retype::<B, C, 2>(self.x)?.into_primitive().tensor();
        let weight = retype::<B, C, 2>(self.weight)?.into_primitive().tensor();
        let bias = match self.bias {
            Some(b) => Some(retype::<B, C, 2>(b)?.into_primitive().tensor()),
            None => None,
        };
        let y = rows_times(x, weight, bias, self.relu)?;
        retype::<C, B, 2>(Tensor::from_primitive(TensorPrimitive::Float(y)))
    }

    fn tracked<C: CubeF32>(self) -> Option<Tensor<B, 2>> {
        let x = retype::<B, Autodiff<C>, 2>(self.x)?.into_primitive().tensor();
        let weight = retype::<B, Autodiff<C>, 2>(self.weight)?.into_primitive().tensor();
        // Without a bias, a zero one that no gradient reaches.
        let bias = match self.bias {
            Some(b) => retype::<B, Autodiff<C>, 2>(b)?,
            None => {
                let weight = Tensor::<C, 2>::from_primitive(TensorPrimitive::Float(weight.primitive.clone()));
                Tensor::from_inner(Tensor::zeros([1, weight.dims()[1]], &weight.device()))
            }
        }
        .into_primitive()
        .tensor();
        let (x_inner, weight_inner) = (
            into_contiguous(x.primitive.clone()),
            into_contiguous(weight.primitive.clone()),
        );
        let groups = bias.primitive.meta.shape()[0];
        let y = rows_times(
            x_inner.clone(),
            weight_inner.clone(),
            Some(bias.primitive.clone()),
            self.relu,
        )?;
        let result = record(
            LinearBackward,
            [x, weight, bias],
            [x_inner, weight_inner],
            self.relu,
            groups,
            y,
        );
        retype::<Autodiff<C>, B, 2>(result)
    }
}

/// The gradients of `y = x · W + b`: `dy · Wᵀ`, `xᵀ · dy` and `dy` summed over each bias row's
/// rows, `dy` first zeroed where a ReLU's output is not positive.
#[derive(Debug)]
struct LinearBackward;

impl<C: CubeF32> Backward<C, 3> for LinearBackward {
    type State = LinearState<C::FloatTensorPrimitive>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let mut grad = into_contiguous(grads.consume::<C>(&ops.node));
        let [x_node, weight_node, bias_node] = ops.parents;
        let LinearState {
            x,
            weight,
            relu_output,
            groups,
        } = ops.state;
        if let Some(y) = relu_output {
            grad = relu_gradient(grad, y);
        }
        if let Some(node) = bias_node {
            let g = Tensor::<C, 2>::from_primitive(TensorPrimitive::Float(grad.clone()));
            let [rows, out] = g.dims();
            let sums = g
                .reshape([groups, rows / groups, out])
                .sum_dim(1)
                .reshape([groups, out]);
            grads.register::<C>(node.id, sums.into_primitive().tensor());
        }
        if let Some(node) = weight_node {
            grads.register::<C>(node.id, weight_gradient::<C>(x, grad.clone()));
        }
        if let Some(node) = x_node {
            let weight_t = Tensor::<C, 2>::from_primitive(TensorPrimitive::Float(weight)).transpose();
            let weight_t = into_contiguous(weight_t.into_primitive().tensor());
            let value = rows_times(grad.clone(), weight_t.clone(), None, false).unwrap_or_else(|| {
                // Not f32 (not reached: the forward only runs on f32 tensors): burn's matmul.
                let g = Tensor::<C, 2>::from_primitive(TensorPrimitive::Float(grad));
                let w = Tensor::<C, 2>::from_primitive(TensorPrimitive::Float(weight_t));
                g.matmul(w).into_primitive().tensor()
            });
            grads.register::<C>(node.id, value);
        }
    }
}

/// The largest block of outputs (at most 8) that divides `outputs`.
fn output_block(outputs: usize) -> usize {
    largest_block(outputs, MAX_BLOCK, 1, |_| true).unwrap_or(1)
}

/// The largest block of at most `most` that divides `n`, is a multiple of `multiple_of` and `fits`.
fn largest_block(n: usize, most: usize, multiple_of: usize, fits: impl Fn(usize) -> bool) -> Option<usize> {
    (1..=most.min(n))
        .rev()
        .find(|b| n.is_multiple_of(*b) && b.is_multiple_of(multiple_of) && fits(*b))
}

/// How many values at a time a resident kernel reads or writes a row of `n`: 4 where they tile it.
fn vector_width(n: usize) -> usize {
    if n.is_multiple_of(4) {
        4
    } else {
        1
    }
}

fn cube_count(x: usize, y: usize, z: usize) -> CubeCount {
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    CubeCount::Static(count(x), count(y), count(z))
}

/// How the resident kernel splits a layer: outputs per thread, and the widths it reads the input
/// and writes the output in.
struct ResidentPlan {
    block: usize,
    input_vector: usize,
    output_vector: usize,
}

/// The resident kernel's plan on a device that runs kernels on the CPU's vector units, `None`
/// elsewhere (and for layers too wide to keep a block of weights per thread).
///
/// lavapipe (Mesa 22) reads storage buffers one invocation and one value at a time (vector reads
/// too), tens of cycles per read against one for a multiply-add: there the rows kernel spends its
/// time reading, and the resident kernel, which reads each weight once per thread and each input
/// value once per block of 8 outputs, ran a 64 × 64 layer's forward about 2.5x faster
/// (BENCHMARKS.md). On a GPU the weights a thread keeps would spill from its registers, so the
/// rows kernel stays.
fn resident_plan<R: CubeRuntime>(client: &ComputeClient<R>, inputs: usize, outputs: usize) -> Option<ResidentPlan> {
    if !cpu_device(client) {
        return None;
    }
    let output_vector = vector_width(outputs);
    let block = largest_block(outputs, MAX_RESIDENT_BLOCK, output_vector, |b| {
        b * inputs <= MAX_RESIDENT_WEIGHTS
    })?;
    Some(ResidentPlan {
        block,
        input_vector: vector_width(inputs),
        output_vector,
    })
}

/// `x · weight (+ bias, `[G, out]` by groups of rows)`, through a ReLU when `relu`, with the rows
/// kernel; `None` for tensors that are not f32 or a bias whose groups do not divide the rows.
fn rows_times<R: CubeRuntime>(
    x: CubeTensor<R>,
    weight: CubeTensor<R>,
    bias: Option<CubeTensor<R>>,
    relu: bool,
) -> Option<CubeTensor<R>> {
    if x.dtype != DType::F32 || weight.dtype != DType::F32 || bias.as_ref().is_some_and(|b| b.dtype != DType::F32) {
        return None;
    }
    let (x, weight) = (into_contiguous(x), into_contiguous(weight));
    let [rows, inputs] = [x.meta.shape()[0], x.meta.shape()[1]];
    let outputs = weight.meta.shape()[1];
    let groups = bias.as_ref().map_or(1, |b| b.meta.shape()[0]);
    if groups == 0 || !rows.is_multiple_of(groups) {
        return None;
    }
    let output = empty_device::<R, f32>(x.client.clone(), x.device.clone(), [rows, outputs].into());
    if rows * outputs == 0 {
        return Some(output);
    }
    let client = x.client.clone();
    let has_bias = bias.is_some();
    // Without a bias the kernel is given the weight in its place and does not read it.
    let bias = bias.map_or_else(|| weight.clone(), into_contiguous);
    if let Some(plan) = resident_plan(&client, inputs, outputs) {
        let cubes = cube_count(rows.div_ceil(CUBE_THREADS * RESIDENT_ROWS), outputs / plan.block, 1);
        // SAFETY: every index the kernel reads or writes is in bounds: threads take rows below
        // `rows` only, the output blocks tile `outputs` exactly, the vector widths divide the rows
        // they read, and the buffers have the shapes read above (the bias's groups dividing the rows).
        unsafe {
            linear_resident_kernel::launch_unchecked::<R>(
                &client,
                cubes,
                CubeDim::new_1d(CUBE_THREADS as u32),
                plan.input_vector,
                plan.output_vector,
                x.into_array_arg(),
                weight.into_array_arg(),
                bias.into_array_arg(),
                output.clone().into_array_arg(),
                rows,
                rows / groups,
                inputs,
                outputs,
                plan.block,
                has_bias,
                relu,
            );
        }
        return Some(output);
    }
    let block = output_block(outputs);
    let cubes = cube_count(rows.div_ceil(CUBE_THREADS * ROWS), outputs / block, 1);
    // SAFETY: every index the kernel reads or writes is in bounds: threads past the last row read
    // that row and write nothing, the output blocks tile `outputs` exactly, and the buffers have the
    // shapes read above (the bias's groups dividing the rows).
    unsafe {
        linear_rows_kernel::launch_unchecked::<R>(
            &client,
            cubes,
            CubeDim::new_1d(CUBE_THREADS as u32),
            x.into_array_arg(),
            weight.into_array_arg(),
            bias.into_array_arg(),
            output.clone().into_array_arg(),
            rows,
            rows / groups,
            inputs,
            outputs,
            block,
            has_bias,
            relu,
        );
    }
    Some(output)
}

/// `grad`, zeroed where the ReLU's `output` is not positive (both `[N, out]`, contiguous f32).
fn relu_gradient<R: CubeRuntime>(grad: CubeTensor<R>, output: CubeTensor<R>) -> CubeTensor<R> {
    let shape = grad.meta.shape().clone();
    let out = empty_device::<R, f32>(grad.client.clone(), grad.device.clone(), shape);
    let client = grad.client.clone();
    let (cube_count, cube_dim) = elementwise(&client, grad.meta.shape().num_elements());
    relu_gradient_kernel::launch::<R>(
        &client,
        cube_count,
        cube_dim,
        grad.into_array_arg(),
        output.into_array_arg(),
        out.clone().into_array_arg(),
    );
    out
}

#[cube(launch)]
fn relu_gradient_kernel(grad: &Array<f32>, output: &Array<f32>, out: &mut Array<f32>) {
    if ABSOLUTE_POS >= grad.len() {
        terminate!();
    }
    // As burn's ReLU backward: zero where the output is not positive.
    let mut value = grad[ABSOLUTE_POS];
    if output[ABSOLUTE_POS] <= 0.0 {
        value = 0.0;
    }
    out[ABSOLUTE_POS] = value;
}

/// `xᵀ · grad` `[in, out]` for `x` `[N, in]` and `grad` `[N, out]`, both contiguous f32.
fn weight_gradient<C: CubeF32>(x: CubeTensor<C::Runtime>, grad: CubeTensor<C::Runtime>) -> CubeTensor<C::Runtime> {
    let [rows, inputs] = [x.meta.shape()[0], x.meta.shape()[1]];
    let outputs = grad.meta.shape()[1];
    let client = x.client.clone();
    let resident = resident_gradient_plan(&client, inputs, outputs);
    let (min_chunk_rows, max_chunks) = match resident {
        Some(_) => (RESIDENT_CHUNK_ROWS, MAX_RESIDENT_CHUNKS),
        None => (MIN_CHUNK_ROWS, MAX_CHUNKS),
    };
    let chunks = rows.div_ceil(min_chunk_rows).clamp(1, max_chunks);
    let chunk_rows = rows.div_ceil(chunks).max(1);
    let partials =
        empty_device::<C::Runtime, f32>(x.client.clone(), x.device.clone(), [chunks, inputs * outputs].into());
    if inputs * outputs == 0 {
        // Nothing to sum: burn's sum of the empty partials is the empty gradient.
    } else if let Some(plan) = resident {
        let cubes = cube_count(
            chunks.div_ceil(RESIDENT_GRADIENT_THREADS),
            outputs / plan.output_block,
            inputs / plan.input_block,
        );
        // SAFETY: threads past the last chunk read and write nothing, rows stop at `rows`, the
        // blocks tile `inputs` and `outputs` exactly, the vector widths divide the rows they read,
        // and `partials` has a row per chunk.
        unsafe {
            linear_weight_resident_kernel::launch_unchecked::<C::Runtime>(
                &client,
                cubes,
                CubeDim::new_1d(RESIDENT_GRADIENT_THREADS as u32),
                plan.input_vector,
                plan.output_vector,
                x.into_array_arg(),
                grad.into_array_arg(),
                partials.clone().into_array_arg(),
                rows,
                chunk_rows,
                chunks,
                inputs,
                outputs,
                plan.input_block,
                plan.output_block,
            );
        }
    } else {
        let block = output_block(outputs);
        // Threads along x cover the inputs, along y the chunks.
        let threads = inputs.div_ceil(INPUTS).min(CUBE_THREADS);
        let chunks_per_cube = (CUBE_THREADS / threads).max(1);
        let cube_dim = CubeDim::new_2d(threads as u32, chunks_per_cube as u32);
        let cubes = cube_count(
            chunks.div_ceil(chunks_per_cube),
            outputs / block,
            inputs.div_ceil(threads * INPUTS),
        );
        // SAFETY: threads past the last input read that input and write nothing, threads past the
        // last chunk read no rows and write nothing, rows stop at `rows`, the output blocks tile
        // `outputs` exactly and `partials` has a row per chunk.
        unsafe {
            linear_weight_partials_kernel::launch_unchecked::<C::Runtime>(
                &client,
                cubes,
                cube_dim,
                x.into_array_arg(),
                grad.into_array_arg(),
                partials.clone().into_array_arg(),
                rows,
                chunk_rows,
                inputs,
                outputs,
                block,
            );
        }
    }
    let partials = Tensor::<C, 2>::from_primitive(TensorPrimitive::Float(partials));
    partials.sum_dim(0).reshape([inputs, outputs]).into_primitive().tensor()
}

/// How the resident weight-gradient kernel tiles `xᵀ · dy`: inputs and outputs per thread, and the
/// widths it reads `x` and `dy` in.
struct ResidentGradientPlan {
    input_block: usize,
    output_block: usize,
    input_vector: usize,
    output_vector: usize,
}

/// The resident weight-gradient kernel's plan where [`resident_plan`] would pick the resident
/// kernel (a CPU device): each thread sums a tile of up to 16 × 16 of the gradient over its chunk
/// of rows, reading each value of `x` and `dy` once per tile.
fn resident_gradient_plan<R: CubeRuntime>(
    client: &ComputeClient<R>,
    inputs: usize,
    outputs: usize,
) -> Option<ResidentGradientPlan> {
    if !cpu_device(client) {
        return None;
    }
    let (input_vector, output_vector) = (vector_width(inputs), vector_width(outputs));
    Some(ResidentGradientPlan {
        input_block: largest_block(inputs, MAX_GRADIENT_BLOCK, input_vector, |_| true)?,
        output_block: largest_block(outputs, MAX_GRADIENT_BLOCK, output_vector, |_| true)?,
        input_vector,
        output_vector,
    })
}

/// One thread per `ROWS` rows and block of `block` outputs (the cube's y position):
/// `output[r, j] = bias[r / group_rows, j] + Σ_k input[r, k] · weight[k, j]`, then `max(·, 0)`
/// when `relu`.
#[cube(launch_unchecked)]
fn linear_rows_kernel(
    input: &Array<f32>,
    weight: &Array<f32>,
    bias: &Array<f32>,
    output: &mut Array<f32>,
    rows: usize,
    group_rows: usize,
    #[comptime] inputs: usize,
    #[comptime] outputs: usize,
    #[comptime] block: usize,
    #[comptime] has_bias: bool,
    #[comptime] relu: bool,
) {
    let base = usize::cast_from(CUBE_POS_X) * usize::cast_from(CUBE_DIM_X) * ROWS + usize::cast_from(UNIT_POS_X);
    let first = usize::cast_from(CUBE_POS_Y) * block;
    let mut sums = Array::<f32>::new(block * ROWS);
    let mut at = Array::<usize>::new(ROWS);
    #[unroll]
    for r in 0..ROWS {
        let mut row = base + r * usize::cast_from(CUBE_DIM_X);
        if row >= rows {
            row = rows - 1;
        }
        at[r] = row * inputs;
    }
    #[unroll]
    for b in 0..block * ROWS {
        sums[b] = 0.0;
    }
    for k in 0..inputs {
        let mut w = Array::<f32>::new(block);
        #[unroll]
        for b in 0..block {
            w[b] = weight[k * outputs + first + b];
        }
        #[unroll]
        for r in 0..ROWS {
            let value = input[at[r] + k];
            #[unroll]
            for b in 0..block {
                sums[r * block + b] += value * w[b];
            }
        }
    }
    #[unroll]
    for r in 0..ROWS {
        let row = base + r * usize::cast_from(CUBE_DIM_X);
        if row < rows {
            let bias_row = row / group_rows * outputs;
            #[unroll]
            for b in 0..block {
                let mut sum = sums[r * block + b];
                if has_bias {
                    sum += bias[bias_row + first + b];
                }
                // As burn's `relu`: non-positive values (not NaN) become 0.
                if relu && sum <= 0.0 {
                    sum = 0.0;
                }
                output[row * outputs + first + b] = sum;
            }
        }
    }
}

/// One thread per row at a time and block of `block` outputs (the cube's y position), the block's
/// weights loaded once into the thread's registers and kept over all the rows it takes (a stride
/// of the grid's threads apart), the input read `NI` values at a time and the output written `NO`
/// at a time. `output[r, j] = bias[r / group_rows, j] + Σ_k input[r, k] · weight[k, j]`, then
/// `max(·, 0)` when `relu`.
#[cube(launch_unchecked)]
fn linear_resident_kernel<NI: Size, NO: Size>(
    input: &Array<Vector<f32, NI>>,
    weight: &Array<Vector<f32, NO>>,
    bias: &Array<Vector<f32, NO>>,
    output: &mut Array<Vector<f32, NO>>,
    rows: usize,
    group_rows: usize,
    #[comptime] inputs: usize,
    #[comptime] outputs: usize,
    #[comptime] block: usize,
    #[comptime] has_bias: bool,
    #[comptime] relu: bool,
) {
    let ni = NI::value();
    let no = NO::value();
    let (in_vectors, out_vectors, block_vectors) = comptime!((inputs / ni, outputs / no, block / no));
    let first = usize::cast_from(CUBE_POS_Y) * block_vectors;
    let mut w = Array::<Vector<f32, NO>>::new(inputs * block_vectors);
    #[unroll]
    for k in 0..inputs {
        #[unroll]
        for b in 0..block_vectors {
            w[k * block_vectors + b] = weight[k * out_vectors + first + b];
        }
    }
    let stride = usize::cast_from(CUBE_COUNT_X) * usize::cast_from(CUBE_DIM_X);
    let mut row = usize::cast_from(CUBE_POS_X) * usize::cast_from(CUBE_DIM_X) + usize::cast_from(UNIT_POS_X);
    while row < rows {
        let mut sums = Array::<Vector<f32, NO>>::new(block_vectors);
        #[unroll]
        for b in 0..block_vectors {
            sums[b] = Vector::new(0.0);
        }
        #[unroll]
        for kv in 0..in_vectors {
            let x = input[row * in_vectors + kv];
            #[unroll]
            for c in 0..ni {
                let value = Vector::<f32, NO>::new(x[c]);
                #[unroll]
                for b in 0..block_vectors {
                    sums[b] += value * w[(kv * ni + c) * block_vectors + b];
                }
            }
        }
        let bias_row = row / group_rows * out_vectors + first;
        #[unroll]
        for b in 0..block_vectors {
            let mut sum = sums[b];
            if has_bias {
                sum += bias[bias_row + b];
            }
            if relu {
                // As burn's `relu`: non-positive values (not NaN) become 0.
                let mut cell = RuntimeCell::<Vector<f32, NO>>::new(sum);
                #[unroll]
                for c in 0..no {
                    if sum[c] <= 0.0 {
                        cell.store_at(c, 0.0);
                    }
                }
                sum = cell.consume();
            }
            output[row * out_vectors + first + b] = sum;
        }
        row += stride;
    }
}

/// One thread per chunk of rows (the cube's x position and the thread's) and tile of
/// `input_block` inputs (the cube's z position) × `output_block` outputs (its y position), the
/// tile's sums kept in registers: `partials[c, k · out + j] = Σ_{r in chunk c} input[r, k] · grad[r, j]`.
#[cube(launch_unchecked)]
fn linear_weight_resident_kernel<NI: Size, NO: Size>(
    input: &Array<Vector<f32, NI>>,
    grad: &Array<Vector<f32, NO>>,
    partials: &mut Array<Vector<f32, NO>>,
    rows: usize,
    chunk_rows: usize,
    chunks: usize,
    #[comptime] inputs: usize,
    #[comptime] outputs: usize,
    #[comptime] input_block: usize,
    #[comptime] output_block: usize,
) {
    let ni = NI::value();
    let no = NO::value();
    let (in_vectors, out_vectors, input_vectors, output_vectors) =
        comptime!((inputs / ni, outputs / no, input_block / ni, output_block / no));
    let chunk = usize::cast_from(CUBE_POS_X) * usize::cast_from(CUBE_DIM_X) + usize::cast_from(UNIT_POS_X);
    let first_input = usize::cast_from(CUBE_POS_Z) * input_vectors;
    let first_output = usize::cast_from(CUBE_POS_Y) * output_vectors;
    if chunk < chunks {
        let mut sums = Array::<Vector<f32, NO>>::new(input_block * output_vectors);
        #[unroll]
        for i in 0..input_block * output_vectors {
            sums[i] = Vector::new(0.0);
        }
        let start = chunk * chunk_rows;
        let mut end = start + chunk_rows;
        if end > rows {
            end = rows;
        }
        for r in start..end {
            let mut g = Array::<Vector<f32, NO>>::new(output_vectors);
            #[unroll]
            for b in 0..output_vectors {
                g[b] = grad[r * out_vectors + first_output + b];
            }
            #[unroll]
            for kv in 0..input_vectors {
                let x = input[r * in_vectors + first_input + kv];
                #[unroll]
                for c in 0..ni {
                    let value = Vector::<f32, NO>::new(x[c]);
                    #[unroll]
                    for b in 0..output_vectors {
                        sums[(kv * ni + c) * output_vectors + b] += value * g[b];
                    }
                }
            }
        }
        #[unroll]
        for i in 0..input_block {
            let k = first_input * ni + i;
            #[unroll]
            for b in 0..output_vectors {
                partials[(chunk * inputs + k) * out_vectors + first_output + b] = sums[i * output_vectors + b];
            }
        }
    }
}

/// One thread per `INPUTS` inputs (the cube's z position and the thread's x), block of outputs (the
/// cube's y position) and chunk of rows (the cube's x position and the thread's y):
/// `partials[c, k · out + j] = Σ_{r in chunk c} input[r, k] · grad[r, j]`.
#[cube(launch_unchecked)]
fn linear_weight_partials_kernel(
    input: &Array<f32>,
    grad: &Array<f32>,
    partials: &mut Array<f32>,
    rows: usize,
    chunk_rows: usize,
    #[comptime] inputs: usize,
    #[comptime] outputs: usize,
    #[comptime] block: usize,
) {
    let first_input =
        (usize::cast_from(CUBE_POS_Z) * usize::cast_from(CUBE_DIM_X) + usize::cast_from(UNIT_POS_X)) * INPUTS;
    let chunk = usize::cast_from(CUBE_POS_X) * usize::cast_from(CUBE_DIM_Y) + usize::cast_from(UNIT_POS_Y);
    let chunks = partials.len() / (inputs * outputs);
    let first = usize::cast_from(CUBE_POS_Y) * block;
    let mut start = rows;
    if chunk < chunks {
        start = chunk * chunk_rows;
    }
    let mut end = start + chunk_rows;
    if end > rows {
        end = rows;
    }
    let mut column = Array::<usize>::new(INPUTS);
    #[unroll]
    for i in 0..INPUTS {
        let mut k = first_input + i;
        if k >= inputs {
            k = inputs - 1;
        }
        column[i] = k;
    }
    let mut sums = Array::<f32>::new(block * INPUTS);
    #[unroll]
    for b in 0..block * INPUTS {
        sums[b] = 0.0;
    }
    for r in start..end {
        let mut g = Array::<f32>::new(block);
        #[unroll]
        for b in 0..block {
            g[b] = grad[r * outputs + first + b];
        }
        #[unroll]
        for i in 0..INPUTS {
            let value = input[r * inputs + column[i]];
            #[unroll]
            for b in 0..block {
                sums[i * block + b] += value * g[b];
            }
        }
    }
    #[unroll]
    for i in 0..INPUTS {
        let k = first_input + i;
        if k < inputs && chunk < chunks {
            #[unroll]
            for b in 0..block {
                partials[(chunk * inputs + k) * outputs + first + b] = sums[i * block + b];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::wgpu::WgpuDevice;
    use burn::backend::Wgpu;
    use burn::tensor::activation::relu;
    use burn::tensor::backend::AutodiffBackend;
    use burn::tensor::Distribution;

    use super::*;
    use crate::nn::backend::CpuBackend;
    use crate::nn::cube::with_both_kernels;

    type Ad = Autodiff<Wgpu<f32>>;

    fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().expect("f32 values")
    }

    fn assert_close(kernel: &[f32], burn: &[f32], tolerance: f32) {
        assert_eq!(kernel.len(), burn.len());
        let largest = burn.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(largest > 0.1, "the values are not trivial");
        for (i, (a, b)) in kernel.iter().zip(burn).enumerate() {
            assert!((a - b).abs() <= tolerance * largest, "entry {i}: {a} vs {b}");
        }
    }

    /// Values and all three gradients equal burn's `linear` (and `relu` after it) and its autodiff,
    /// for nerfacto's layer shapes (odd output counts and a row count that fills no chunk exactly
    /// among them), a layer of fewer rows than a cube and one of more inputs than a cube covers, with
    /// both the CPU device's kernels and the GPU's.
    #[test]
    fn matches_burn_linear_on_wgpu() {
        with_both_kernels(|| matches_burn_linear::<Ad>(&WgpuDevice::DefaultDevice));
    }

    /// The same on burn's CPU backend ([`flex_kernels::linear_rows`], [`flex_linear`]).
    #[test]
    fn matches_burn_linear_on_the_cpu_backend() {
        matches_burn_linear::<Autodiff<CpuBackend>>(&Default::default());
        grouped_bias_matches_burn_ops::<Autodiff<CpuBackend>>(&Default::default());
    }

    fn matches_burn_linear<Ad: AutodiffBackend>(device: &Ad::Device) {
        let shapes = [
            (1000, 32, 64),
            (777, 63, 3),
            (3000, 10, 16),
            (300, 16, 1),
            (5, 64, 15),
            (70, 300, 2),
            (9000, 16, 32),
            (10_000, 64, 64),
        ];
        for (rows, inputs, outputs) in shapes {
            let random = |shape: [usize; 2]| Tensor::<Ad, 2>::random(shape, Distribution::Normal(0.0, 1.0), device);
            let x = random([rows, inputs]).require_grad();
            let weight = random([inputs, outputs]).require_grad();
            let bias = random([1, outputs]).reshape([outputs]).require_grad();
            // The output's gradient has mean 1: a bias gradient is a sum over rows, which a
            // zero-mean draw left below `assert_close`'s 0.1 now and then (one output, one sum).
            let weights = random([rows, outputs]) + 1.0;
            let gradients = |y: Tensor<Ad, 2>| {
                let grads = (y * weights.clone()).sum().backward();
                let g = |t: &Tensor<Ad, 2>| values(t.grad(&grads).expect("a gradient"));
                (g(&x), g(&weight), values(bias.grad(&grads).expect("a gradient")))
            };
            let mut theirs = (Vec::new(), Vec::new(), Vec::new());
            for activation in [Activation::Relu, Activation::None] {
                // A graph of its own each time: a backward pass frees the one it walked.
                let burn = burn::tensor::module::linear(x.clone(), weight.clone(), Some(bias.clone()));
                let burn = match activation {
                    Activation::Relu => relu(burn),
                    Activation::None => burn,
                };
                let kernel = linear(x.clone(), weight.clone(), Some(bias.clone()), activation);
                assert_close(&values(kernel.clone()), &values(burn.clone()), 1e-5);
                let ours;
                (ours, theirs) = (gradients(kernel), gradients(burn));
                assert_close(&ours.0, &theirs.0, 1e-5);
                assert_close(&ours.1, &theirs.1, 1e-5);
                assert_close(&ours.2, &theirs.2, 1e-5);
            }
            // Without a bias, under autodiff and without it.
            let unbiased = linear(x.clone(), weight.clone(), None, Activation::None);
            assert_close(
                &values(unbiased.clone()),
                &values(x.clone().matmul(weight.clone())),
                1e-5,
            );
            let grads = (unbiased * weights.clone()).sum().backward();
            assert_close(&values(weight.grad(&grads).expect("a gradient")), &theirs.1, 1e-5);
            let (x, weight) = (x.inner(), weight.inner());
            assert_close(
                &values(linear(x.clone(), weight.clone(), None, Activation::None)),
                &values(x.matmul(weight)),
                1e-5,
            );
        }
    }

    /// A bias per group of rows equals the expanded bias added in burn ops, values and gradients,
    /// with both kernels.
    #[test]
    fn grouped_bias_matches_burn_ops_on_wgpu() {
        with_both_kernels(|| grouped_bias_matches_burn_ops::<Ad>(&WgpuDevice::DefaultDevice));
    }

    fn grouped_bias_matches_burn_ops<Ad: AutodiffBackend>(device: &Ad::Device) {
        for (rows, inputs, outputs, groups) in [(960, 15, 64, 20), (777, 10, 3, 7), (64, 4, 8, 64)] {
            let random = |shape: [usize; 2]| Tensor::<Ad, 2>::random(shape, Distribution::Normal(0.0, 1.0), device);
            let x = random([rows, inputs]).require_grad();
            let weight = random([inputs, outputs]).require_grad();
            let bias = random([groups, outputs]).require_grad();
            // The output's gradient has mean 1: a bias gradient is a sum over rows, which a
            // zero-mean draw left below `assert_close`'s 0.1 now and then (one output, one sum).
            let weights = random([rows, outputs]) + 1.0;
            let gradients = |y: Tensor<Ad, 2>| {
                let grads = (y * weights.clone()).sum().backward();
                let g = |t: &Tensor<Ad, 2>| values(t.grad(&grads).expect("a gradient"));
                (g(&x), g(&weight), g(&bias))
            };
            let expanded = bias
                .clone()
                .reshape([groups, 1, outputs])
                .expand([groups, rows / groups, outputs])
                .reshape([rows, outputs]);
            let burn = relu(x.clone().matmul(weight.clone()) + expanded);
            let kernel = linear_grouped(x.clone(), weight.clone(), bias.clone(), Activation::Relu);
            assert_close(&values(kernel.clone()), &values(burn.clone()), 1e-5);
            let (ours, theirs) = (gradients(kernel), gradients(burn));
            assert_close(&ours.0, &theirs.0, 1e-5);
            assert_close(&ours.1, &theirs.1, 1e-5);
            assert_close(&ours.2, &theirs.2, 1e-5);
        }
    }
}
