//! [`super::contracted_samples`] on burn's CPU backend ([`CpuBackend`]) and autodiff over it: one
//! rayon task per block of rays, forward and backward, with the kernels' arithmetic in plain f32
//! (the forward is bit-identical to burn's ops on this backend).

use std::any::TypeId;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::InCubeSamples;
use crate::nn::backend::{retype, CpuBackend};

/// Rays per parallel task.
const RAYS_PER_TASK: usize = 64;

/// [`super::contracted_samples`] when `B` is the CPU backend or autodiff over it.
pub(super) fn contracted_samples<B: Backend>(
    origins: &Tensor<B, 2>,
    directions: &Tensor<B, 2>,
    midpoints: &Tensor<B, 2>,
) -> Option<InCubeSamples<B>> {
    if TypeId::of::<B>() == TypeId::of::<CpuBackend>() {
        let inner = |t: &Tensor<B, 2>| retype::<B, CpuBackend, 2>(t.clone()).map(flex);
        let (o, d, t) = (inner(origins)?, inner(directions)?, inner(midpoints)?);
        let (unit, inside) = forward(&o, &d, &t)?;
        Some((retype::<CpuBackend, B, 2>(unit)?, retype::<CpuBackend, B, 2>(inside)?))
    } else if TypeId::of::<B>() == TypeId::of::<Autodiff<CpuBackend>>() {
        let tracked = |t: &Tensor<B, 2>| retype::<B, Autodiff<CpuBackend>, 2>(t.clone());
        let (unit, inside) = forward_tracked(tracked(origins)?, tracked(directions)?, tracked(midpoints)?)?;
        Some((
            retype::<Autodiff<CpuBackend>, B, 2>(unit)?,
            retype::<Autodiff<CpuBackend>, B, 2>(inside)?,
        ))
    } else {
        None
    }
}

fn flex(t: Tensor<CpuBackend, 2>) -> FlexTensor {
    t.into_primitive().tensor().to_contiguous()
}

fn tensor(values: Vec<f32>, shape: [usize; 2]) -> Tensor<CpuBackend, 2> {
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

/// Under autodiff: the forward on the inner tensors and a backward step for origins and directions.
fn forward_tracked(
    origins: Tensor<Autodiff<CpuBackend>, 2>,
    directions: Tensor<Autodiff<CpuBackend>, 2>,
    midpoints: Tensor<Autodiff<CpuBackend>, 2>,
) -> Option<InCubeSamples<Autodiff<CpuBackend>>> {
    let (o, d, t) = (
        origins.into_primitive().tensor(),
        directions.into_primitive().tensor(),
        midpoints.into_primitive().tensor(),
    );
    if !t.node.requirement.is_none() {
        // The backward gives no gradient to the midpoints.
        return None;
    }
    let inner = |p: FlexTensor| flex(Tensor::from_primitive(TensorPrimitive::Float(p)));
    let state = SamplesState {
        origins: inner(o.primitive),
        directions: inner(d.primitive),
        midpoints: inner(t.primitive),
    };
    let (unit, inside) = forward(&state.origins, &state.directions, &state.midpoints)?;
    let unit = unit.into_primitive().tensor();
    let unit = match SamplesBackward
        .prepare::<NoCheckpointing>([o.node, d.node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state, unit),
        OpsKind::UnTracked(prep) => prep.finish(unit),
    };
    Some((
        Tensor::from_primitive(TensorPrimitive::Float(unit)),
        Tensor::from_inner(inside),
    ))
}

/// The f32 values of origins `[R, 3]`, directions `[R, 3]` and midpoints `[R, n]`.
struct Inputs<'a> {
    o: &'a [f32],
    d: &'a [f32],
    t: &'a [f32],
    /// `n`.
    samples: usize,
}

impl<'a> Inputs<'a> {
    /// `None` for other shapes or element types.
    fn new(o: &'a FlexTensor, d: &'a FlexTensor, t: &'a FlexTensor) -> Option<Self> {
        let (o, d, t) = (o.as_slice::<f32>()?, d.as_slice::<f32>()?, t.as_slice::<f32>()?);
        let rays = o.len() / 3;
        // No rays, no samples: `n` is then 0 and nothing divides by it.
        let samples_fit = if rays == 0 { t.is_empty() } else { t.len() % rays == 0 };
        let fits = o.len() == 3 * rays && d.len() == o.len() && samples_fit;
        fits.then(|| Self {
            o,
            d,
            t,
            samples: t.len().checked_div(rays).unwrap_or(0),
        })
    }
}

/// The unit-cube positions `[R · n, 3]` and inside flags `[R · n, 1]`.
fn forward(o: &FlexTensor, d: &FlexTensor, t: &FlexTensor) -> Option<InCubeSamples<CpuBackend>> {
    let Inputs { o, d, t, samples } = Inputs::new(o, d, t)?;
    let n = t.len();
    let mut unit = vec![0f32; 3 * n];
    let mut inside = vec![0f32; n];
    let per_task = RAYS_PER_TASK * samples.max(1);
    unit.par_chunks_mut(3 * per_task)
        .zip(inside.par_chunks_mut(per_task))
        .enumerate()
        .for_each(|(task, (unit, inside))| {
            let first = task * per_task;
            for (k, flag) in inside.iter_mut().enumerate() {
                let i = first + k;
                let r = i / samples;
                let c = InCube::of(&Position::new(&o[3 * r..3 * r + 3], &d[3 * r..3 * r + 3], t[i]));
                *flag = if c.inside { 1.0 } else { 0.0 };
                for axis in 0..3 {
                    unit[3 * k + axis] = c.x[axis] * *flag;
                }
            }
        });
    Some((tensor(unit, [n, 3]), tensor(inside, [n, 1])))
}

/// A sample's world position `o + d · t`, its L∞ magnitude and the axis that has it (the first).
struct Position {
    x: [f32; 3],
    magnitude: f32,
    axis: usize,
}

impl Position {
    fn new(o: &[f32], d: &[f32], t: f32) -> Self {
        let x: [f32; 3] = std::array::from_fn(|k| o[k] + d[k] * t);
        let (mut magnitude, mut axis) = (x[0].abs(), 0);
        for (k, v) in x.iter().enumerate().skip(1) {
            if v.abs() > magnitude {
                (magnitude, axis) = (v.abs(), k);
            }
        }
        Self { x, magnitude, axis }
    }
}

/// A sample in the unit cube: `(c + 2) / 4` of its contracted position `c`, and whether that lies
/// strictly inside the cube.
struct InCube {
    x: [f32; 3],
    inside: bool,
}

impl InCube {
    /// `p` contracted (`(−(1/m) + 2) · (x / m)` where `m ≥ 1`, as `contract` computes it) and
    /// mapped to the unit cube.
    fn of(p: &Position) -> Self {
        let m = p.magnitude;
        let factor = -(1.0 / m) + 2.0;
        let x = p.x.map(|v| (if m >= 1.0 { factor * (v / m) } else { v } + 2.0) / 4.0);
        Self {
            x,
            inside: x.iter().all(|&v| v > 0.0 && v < 1.0),
        }
    }
}

/// One ray's origin and direction gradients from its samples' `grad` (`[n · 3]`) and midpoints.
fn ray_gradient(o: &[f32], d: &[f32], t: &[f32], grad: &[f32]) -> [[f32; 3]; 2] {
    let (mut origin, mut direction) = ([0f32; 3], [0f32; 3]);
    for (s, &ts) in t.iter().enumerate() {
        let p = Position::new(o, d, ts);
        if !InCube::of(&p).inside {
            continue;
        }
        // Through `(c + 2) / 4`.
        let g: [f32; 3] = std::array::from_fn(|k| grad[3 * s + k] / 4.0);
        let mut h = g;
        let m = p.magnitude;
        if m >= 1.0 {
            let inverse = 1.0 / m;
            let scale = (-inverse + 2.0) * inverse;
            // ∂(scale)/∂m · (g · x), onto the axis of the magnitude with its sign.
            let slope = 2.0 * inverse * inverse * inverse - 2.0 * inverse * inverse;
            let along = (g[0] * p.x[0] + g[1] * p.x[1] + g[2] * p.x[2]) * slope;
            h = g.map(|v| v * scale);
            h[p.axis] += along * if p.x[p.axis] < 0.0 { -1.0 } else { 1.0 };
        }
        for k in 0..3 {
            origin[k] += h[k];
            direction[k] += h[k] * ts;
        }
    }
    [origin, direction]
}

#[derive(Debug)]
struct SamplesBackward;

/// What the backward step needs: the inputs again.
#[derive(Clone, Debug)]
struct SamplesState {
    origins: FlexTensor,
    directions: FlexTensor,
    midpoints: FlexTensor,
}

impl Backward<CpuBackend, 2> for SamplesBackward {
    type State = SamplesState;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = flex(Tensor::from_primitive(TensorPrimitive::Float(
            grads.consume::<CpuBackend>(&ops.node),
        )));
        let [origins, directions] = ops.parents;
        let state = ops.state;
        let Inputs { o, d, t, samples } = Inputs::new(&state.origins, &state.directions, &state.midpoints)
            .expect("the forward pass checked the inputs");
        let grad = grad.as_slice::<f32>().expect("an f32 gradient");
        let rays = o.len() / 3;
        let mut origin_grad = vec![0f32; 3 * rays];
        let mut direction_grad = vec![0f32; 3 * rays];
        origin_grad
            .par_chunks_mut(3)
            .zip(direction_grad.par_chunks_mut(3))
            .enumerate()
            .with_min_len(RAYS_PER_TASK)
            .for_each(|(r, (origin, direction))| {
                let ray = r * samples..(r + 1) * samples;
                let [og, dg] = ray_gradient(
                    &o[3 * r..3 * r + 3],
                    &d[3 * r..3 * r + 3],
                    &t[ray.clone()],
                    &grad[3 * ray.start..3 * ray.end],
                );
                origin.copy_from_slice(&og);
                direction.copy_from_slice(&dg);
            });
        for (node, values) in [(origins, origin_grad), (directions, direction_grad)] {
            if let Some(node) = node {
                grads.register::<CpuBackend>(node.id, tensor(values, [rays, 3]).into_primitive().tensor());
            }
        }
    }
}
