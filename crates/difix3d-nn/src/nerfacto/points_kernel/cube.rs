//! [`super::contracted_samples`] on burn's GPU backends: one CubeCL kernel compiled to WGSL for
//! wgpu and to CUDA, a thread per sample forward and a thread per ray backward, under autodiff too.

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

use super::InCubeSamples;
use crate::nn::backend::retype;
use crate::nn::cube::{elementwise, on_cube, CubeF32, OnCube};

/// [`super::contracted_samples`] when `B` is a CubeCL backend at f32 or autodiff over one.
pub(super) fn contracted_samples<B: Backend>(
    origins: &Tensor<B, 2>,
    directions: &Tensor<B, 2>,
    midpoints: &Tensor<B, 2>,
) -> Option<InCubeSamples<B>> {
    on_cube::<B, _>(Samples {
        origins: origins.clone(),
        directions: directions.clone(),
        midpoints: midpoints.clone(),
    })
}

struct Samples<B: Backend> {
    origins: Tensor<B, 2>,
    directions: Tensor<B, 2>,
    midpoints: Tensor<B, 2>,
}

impl<B: Backend> OnCube for Samples<B> {
    type Output = InCubeSamples<B>;

    fn plain<C: CubeF32>(self) -> Option<Self::Output> {
        let inner = |t: Tensor<B, 2>| retype::<B, C, 2>(t).map(|t| t.into_primitive().tensor());
        let (o, d, t) = (inner(self.origins)?, inner(self.directions)?, inner(self.midpoints)?);
        let (unit, inside) = forward(o, d, t)?;
        let outer = |t: CubeTensor<C::Runtime>| retype::<C, B, 2>(Tensor::from_primitive(TensorPrimitive::Float(t)));
        Some((outer(unit)?, outer(inside)?))
    }

    fn tracked<C: CubeF32>(self) -> Option<Self::Output> {
        let tracked = |t: Tensor<B, 2>| retype::<B, Autodiff<C>, 2>(t).map(|t| t.into_primitive().tensor());
        let (o, d, t) = (
            tracked(self.origins)?,
            tracked(self.directions)?,
            tracked(self.midpoints)?,
        );
        if !t.node.requirement.is_none() {
            // The kernel's backward gives no gradient to the midpoints.
            return None;
        }
        let (unit, inside) = forward(o.primitive.clone(), d.primitive.clone(), t.primitive.clone())?;
        let state = SamplesState {
            origins: o.primitive,
            directions: d.primitive,
            midpoints: t.primitive,
        };
        let unit = match SamplesBackward
            .prepare::<NoCheckpointing>([o.node, d.node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(state, unit),
            OpsKind::UnTracked(prep) => prep.finish(unit),
        };
        let unit = Tensor::<Autodiff<C>, 2>::from_primitive(TensorPrimitive::Float(unit));
        // Whether a sample is inside depends on comparisons only: no gradient.
        let inside = Tensor::<Autodiff<C>, 2>::from_inner(Tensor::from_primitive(TensorPrimitive::Float(inside)));
        Some((retype::<Autodiff<C>, B, 2>(unit)?, retype::<Autodiff<C>, B, 2>(inside)?))
    }
}

/// The unit-cube positions and the inside flags; `None` for tensors that are not f32 or whose
/// shapes do not fit together.
fn forward<R: CubeRuntime>(
    origins: CubeTensor<R>,
    directions: CubeTensor<R>,
    midpoints: CubeTensor<R>,
) -> Option<(CubeTensor<R>, CubeTensor<R>)> {
    let (rays, samples) = sizes(&origins, &directions, &midpoints)?;
    let [o, d, t] = [origins, directions, midpoints].map(into_contiguous);
    let client = o.client.clone();
    let n = rays * samples;
    let unit = empty_device::<R, f32>(client.clone(), o.device.clone(), [n, 3].into());
    let inside = empty_device::<R, f32>(client.clone(), o.device.clone(), [n, 1].into());
    if n > 0 {
        let (cube_count, cube_dim) = elementwise(&client, n);
        contracted_samples_kernel::launch::<R>(
            &client,
            cube_count,
            cube_dim,
            o.into_array_arg(),
            d.into_array_arg(),
            t.into_array_arg(),
            unit.clone().into_array_arg(),
            inside.clone().into_array_arg(),
            samples,
        );
    }
    Some((unit, inside))
}

/// `(R, n)` when origins and directions are `[R, 3]` and midpoints `[R, n]`, all f32.
fn sizes<R: CubeRuntime>(o: &CubeTensor<R>, d: &CubeTensor<R>, t: &CubeTensor<R>) -> Option<(usize, usize)> {
    if [o, d, t].iter().any(|x| x.dtype != DType::F32) {
        return None;
    }
    let (o_shape, d_shape, t_shape) = (o.meta.shape(), d.meta.shape(), t.meta.shape());
    let rays = o_shape[0];
    (o_shape[1] == 3 && d_shape[0] == rays && d_shape[1] == 3 && t_shape[0] == rays).then_some((rays, t_shape[1]))
}

#[derive(Debug)]
struct SamplesBackward;

/// What the backward step needs: the inputs again.
#[derive(Clone, Debug)]
struct SamplesState<R: CubeRuntime> {
    origins: CubeTensor<R>,
    directions: CubeTensor<R>,
    midpoints: CubeTensor<R>,
}

impl<C: CubeF32> Backward<C, 2> for SamplesBackward {
    type State = SamplesState<C::Runtime>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = into_contiguous(grads.consume::<C>(&ops.node));
        let [origins, directions] = ops.parents;
        let SamplesState {
            origins: o,
            directions: d,
            midpoints: t,
        } = ops.state;
        let [o, d, t] = [o, d, t].map(into_contiguous);
        let rays = o.meta.shape()[0];
        let samples = t.meta.shape()[1];
        let client = grad.client.clone();
        let origin_grad = empty_device::<C::Runtime, f32>(client.clone(), grad.device.clone(), [rays, 3].into());
        let direction_grad = empty_device::<C::Runtime, f32>(client.clone(), grad.device.clone(), [rays, 3].into());
        if rays > 0 {
            let (cube_count, cube_dim) = elementwise(&client, rays);
            contracted_samples_backward_kernel::launch::<C::Runtime>(
                &client,
                cube_count,
                cube_dim,
                o.into_array_arg(),
                d.into_array_arg(),
                t.into_array_arg(),
                grad.into_array_arg(),
                origin_grad.clone().into_array_arg(),
                direction_grad.clone().into_array_arg(),
                samples,
            );
        }
        if let Some(node) = origins {
            grads.register::<C>(node.id, origin_grad);
        }
        if let Some(node) = directions {
            grads.register::<C>(node.id, direction_grad);
        }
    }
}

/// A sample's world position, its L∞ magnitude and the axis that has it (the first such).
#[derive(CubeType)]
struct Position {
    x: f32,
    y: f32,
    z: f32,
    magnitude: f32,
    axis: u32,
}

/// Sample `s` of ray `r`: `o + d · t`, as `RaySamples::positions` computes it.
#[cube]
fn position(o: &Array<f32>, d: &Array<f32>, t: f32, r: usize) -> Position {
    let x = o[3 * r] + d[3 * r] * t;
    let y = o[3 * r + 1] + d[3 * r + 1] * t;
    let z = o[3 * r + 2] + d[3 * r + 2] * t;
    let (ax, ay, az) = (x.abs(), y.abs(), z.abs());
    let mut magnitude = ax;
    let mut axis = 0u32;
    if ay > magnitude {
        magnitude = ay;
        axis = 1u32;
    }
    if az > magnitude {
        magnitude = az;
        axis = 2u32;
    }
    Position {
        x,
        y,
        z,
        magnitude,
        axis,
    }
}

/// A sample in the unit cube: `(c + 2) / 4` of its contracted position `c`, and whether that lies
/// strictly inside the cube.
#[derive(CubeType)]
struct InCube {
    x: f32,
    y: f32,
    z: f32,
    inside: bool,
}

/// `p` contracted (`(−(1/m) + 2) · (x / m)` where `m ≥ 1`, as `contract` computes it) and mapped to
/// the unit cube.
#[cube]
fn in_cube(p: &Position) -> InCube {
    let m = p.magnitude;
    let outside = m >= 1.0;
    let factor = -(1.0 / m) + 2.0;
    let x = (select(outside, factor * (p.x / m), p.x) + 2.0) / 4.0;
    let y = (select(outside, factor * (p.y / m), p.y) + 2.0) / 4.0;
    let z = (select(outside, factor * (p.z / m), p.z) + 2.0) / 4.0;
    InCube {
        x,
        y,
        z,
        inside: x > 0.0 && x < 1.0 && y > 0.0 && y < 1.0 && z > 0.0 && z < 1.0,
    }
}

/// Thread `i` maps sample `i` (ray `i / samples`) to the unit cube (the origin where outside).
#[cube(launch)]
fn contracted_samples_kernel(
    o: &Array<f32>,
    d: &Array<f32>,
    t: &Array<f32>,
    unit: &mut Array<f32>,
    inside: &mut Array<f32>,
    samples: usize,
) {
    let i = ABSOLUTE_POS;
    if i >= t.len() {
        terminate!();
    }
    let c = in_cube(&position(o, d, t[i], i / samples));
    let flag = select(c.inside, 1.0f32, 0.0f32);
    unit[3 * i] = c.x * flag;
    unit[3 * i + 1] = c.y * flag;
    unit[3 * i + 2] = c.z * flag;
    inside[i] = flag;
}

/// Thread `r` sums the gradients of ray `r`'s samples into its origin (`Σ g_x`) and direction
/// (`Σ g_x · t`), in sample order.
#[cube(launch)]
fn contracted_samples_backward_kernel(
    o: &Array<f32>,
    d: &Array<f32>,
    t: &Array<f32>,
    grad: &Array<f32>,
    origin_grad: &mut Array<f32>,
    direction_grad: &mut Array<f32>,
    samples: usize,
) {
    let r = ABSOLUTE_POS;
    if r >= o.len() / 3 {
        terminate!();
    }
    // Runtime zeros (a literal would be a compile-time constant that cannot be added to).
    let zero = o[3 * r] * 0.0;
    let (mut ox, mut oy, mut oz) = (zero, zero, zero);
    let (mut dx, mut dy, mut dz) = (zero, zero, zero);
    for s in 0..samples {
        let i = r * samples + s;
        let ti = t[i];
        let p = position(o, d, ti, r);
        if in_cube(&p).inside {
            // Through `(c + 2) / 4`.
            let (gx, gy, gz) = (grad[3 * i] / 4.0, grad[3 * i + 1] / 4.0, grad[3 * i + 2] / 4.0);
            let (mut hx, mut hy, mut hz) = (gx, gy, gz);
            let m = p.magnitude;
            if m >= 1.0 {
                let inverse = 1.0 / m;
                let scale = (-inverse + 2.0) * inverse;
                // ∂(scale)/∂m · (g · x), onto the axis of the magnitude with its sign.
                let slope = 2.0 * inverse * inverse * inverse - 2.0 * inverse * inverse;
                let along = (gx * p.x + gy * p.y + gz * p.z) * slope;
                hx = gx * scale;
                hy = gy * scale;
                hz = gz * scale;
                if p.axis == 0 {
                    hx += along * select(p.x < 0.0, -1.0f32, 1.0f32);
                } else if p.axis == 1 {
                    hy += along * select(p.y < 0.0, -1.0f32, 1.0f32);
                } else {
                    hz += along * select(p.z < 0.0, -1.0f32, 1.0f32);
                }
            }
            ox += hx;
            oy += hy;
            oz += hz;
            dx += hx * ti;
            dy += hy * ti;
            dz += hz * ti;
        }
    }
    origin_grad[3 * r] = ox;
    origin_grad[3 * r + 1] = oy;
    origin_grad[3 * r + 2] = oz;
    direction_grad[3 * r] = dx;
    direction_grad[3 * r + 1] = dy;
    direction_grad[3 * r + 2] = dz;
}
