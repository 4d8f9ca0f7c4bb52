//! Adam as burn's own `Adam` computes it (no weight decay, no AMSGrad), with each parameter's
//! update done in one pass over its values.
//!
//! burn's `Adam` updates a parameter with about a dozen tensor ops (scale and add each moment,
//! square the gradient, the bias-corrected step, subtract), each reading and writing the whole
//! tensor. nerfacto's field has a hash table of 12.6M values (nerfstudio's Adam updates it densely
//! every step), so on lavapipe that was 7% of a training step's kernel time (BENCHMARKS.md). Here
//! one CubeCL kernel (wgpu, CUDA) or one parallel loop (the CPU backend) reads the parameter, its
//! gradient and both moments once and writes the three new tensors. Other backends run burn's ops.
//!
//! The arithmetic is burn's, operation for operation, in f32:
//!
//! ```text
//! m ← m · β₁ + g · (1 − β₁)
//! v ← v · β₂ + (g · g) · (1 − β₂)
//! p ← p − (m · c) / (√v + ε · √(1 − β₂ᵗ)) · lr,   c = √(1 − β₂ᵗ) / (1 − β₁ᵗ)
//! ```
//!
//! with zero moments before the first step (burn starts from `g · (1 − β₁)`, the same values). On
//! the CPU the result is bit-identical to burn's `Adam`; a GPU compiler may fuse a product and a sum
//! into one rounding, so there it agrees to float rounding. The state is burn's [`AdamState`], so
//! records and checkpoints are those of `Adam`.

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::LearningRate;
use burn::optim::{AdamState, AdaptiveMomentumState, SimpleOptimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;
use burn_flex::FlexTensor;
use cubecl::prelude::*;
use rayon::prelude::*;

use super::backend::{retype, CpuBackend};
use super::cube::{elementwise, on_cube, CubeF32, OnCube};

/// Adam's hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FusedAdam {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
}

impl FusedAdam {
    /// The optimiser for module `M`'s parameters.
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(self) -> OptimizerAdaptor<Self, M, B> {
        OptimizerAdaptor::from(self)
    }

    /// The scalars of step `time` (1 for the first) at learning rate `lr`.
    fn factors(&self, time: usize, lr: LearningRate) -> Factors {
        let time = time as i32;
        let bias_correction2_sqrt = (1.0 - self.beta_2.powi(time)).sqrt();
        Factors {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            one_minus_beta_1: 1.0 - self.beta_1,
            one_minus_beta_2: 1.0 - self.beta_2,
            combined: bias_correction2_sqrt / (1.0 - self.beta_1.powi(time)),
            epsilon: self.epsilon * bias_correction2_sqrt,
            lr: lr as f32,
        }
    }
}

/// The scalars of one step, as burn's `Adam` computes them.
#[derive(Clone, Copy, Debug)]
struct Factors {
    beta_1: f32,
    beta_2: f32,
    one_minus_beta_1: f32,
    one_minus_beta_2: f32,
    /// `√(1 − β₂ᵗ) / (1 − β₁ᵗ)`.
    combined: f32,
    /// `ε · √(1 − β₂ᵗ)`.
    epsilon: f32,
    lr: f32,
}

impl Factors {
    /// One value's step: the new parameter and moments.
    fn step(&self, p: f32, g: f32, m: f32, v: f32) -> [f32; 3] {
        let m = m * self.beta_1 + g * self.one_minus_beta_1;
        let v = v * self.beta_2 + (g * g) * self.one_minus_beta_2;
        let update = (m * self.combined) / (v.sqrt() + self.epsilon);
        [p - update * self.lr, m, v]
    }
}

/// A parameter, its gradient and moments, all of one shape.
struct Step<B: Backend, const D: usize> {
    parameter: Tensor<B, D>,
    grad: Tensor<B, D>,
    m: Tensor<B, D>,
    v: Tensor<B, D>,
}

impl<B: Backend> SimpleOptimizer<B> for FusedAdam {
    type State<const D: usize> = AdamState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let (time, m, v) = match state {
            Some(state) => (
                state.momentum.time + 1,
                state.momentum.moment_1,
                state.momentum.moment_2,
            ),
            None => (1, tensor.zeros_like(), tensor.zeros_like()),
        };
        let factors = self.factors(time, lr);
        let step = Step {
            parameter: tensor,
            grad,
            m,
            v,
        };
        let [parameter, m, v] = step.run(&factors);
        (parameter, Some(AdamState::new(AdaptiveMomentumState::new(time, m, v))))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}

impl<B: Backend, const D: usize> Step<B, D> {
    /// The new parameter and moments: a kernel where there is one, else burn's ops.
    fn run(self, factors: &Factors) -> [Tensor<B, D>; 3] {
        let shape = self.parameter.shape();
        let flat = |t: &Tensor<B, D>| t.clone().reshape([shape.num_elements()]);
        let flat_step = || Step {
            parameter: flat(&self.parameter),
            grad: flat(&self.grad),
            m: flat(&self.m),
            v: flat(&self.v),
        };
        let kernel = flat_step().on_cpu(factors).or_else(|| {
            on_cube::<B, _>(CubeStep {
                step: flat_step(),
                factors: *factors,
            })
        });
        match kernel {
            Some(values) => values.map(|t| t.reshape(shape.clone())),
            None => self.ops(factors),
        }
    }

    /// burn's `Adam`, op for op.
    fn ops(self, f: &Factors) -> [Tensor<B, D>; 3] {
        let m = self
            .m
            .mul_scalar(f.beta_1)
            .add(self.grad.clone().mul_scalar(f.one_minus_beta_1));
        let v = self
            .v
            .mul_scalar(f.beta_2)
            .add(self.grad.square().mul_scalar(f.one_minus_beta_2));
        let update = m
            .clone()
            .mul_scalar(f.combined)
            .div(v.clone().sqrt().add_scalar(f.epsilon));
        [self.parameter - update.mul_scalar(f.lr), m, v]
    }
}

impl<B: Backend> Step<B, 1> {
    /// On the CPU backend: one parallel loop over the values.
    fn on_cpu(self, f: &Factors) -> Option<[Tensor<B, 1>; 3]> {
        let flex = |t: Tensor<B, 1>| -> Option<FlexTensor> {
            Some(retype::<B, CpuBackend, 1>(t)?.into_primitive().tensor().to_contiguous())
        };
        let (p, g, m, v) = (flex(self.parameter)?, flex(self.grad)?, flex(self.m)?, flex(self.v)?);
        let (p, g, m, v) = (
            p.as_slice::<f32>()?,
            g.as_slice::<f32>()?,
            m.as_slice::<f32>()?,
            v.as_slice::<f32>()?,
        );
        let n = p.len();
        let (mut p_out, mut m_out, mut v_out) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
        const CHUNK: usize = 1 << 14;
        p_out
            .par_chunks_mut(CHUNK)
            .zip(m_out.par_chunks_mut(CHUNK))
            .zip(v_out.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(chunk, ((p_out, m_out), v_out))| {
                let start = chunk * CHUNK;
                for k in 0..p_out.len() {
                    let i = start + k;
                    [p_out[k], m_out[k], v_out[k]] = f.step(p[i], g[i], m[i], v[i]);
                }
            });
        let back = |values: Vec<f32>| {
            let t = Tensor::<CpuBackend, 1>::from_data(TensorData::new(values, [n]), &Default::default());
            retype::<CpuBackend, B, 1>(t)
        };
        Some([back(p_out)?, back(m_out)?, back(v_out)?])
    }
}

/// The step on a CubeCL backend.
struct CubeStep<B: Backend> {
    step: Step<B, 1>,
    factors: Factors,
}

impl<B: Backend> OnCube for CubeStep<B> {
    type Output = [Tensor<B, 1>; 3];

    fn plain<C: CubeF32>(self) -> Option<[Tensor<B, 1>; 3]> {
        let primitive = |t: Tensor<B, 1>| retype::<B, C, 1>(t).map(|t| t.into_primitive().tensor());
        let s = self.step;
        let (p, g, m, v) = (
            primitive(s.parameter)?,
            primitive(s.grad)?,
            primitive(s.m)?,
            primitive(s.v)?,
        );
        let outputs = adam_step(p, g, m, v, &self.factors)?;
        let back = |t: CubeTensor<C::Runtime>| retype::<C, B, 1>(Tensor::from_primitive(TensorPrimitive::Float(t)));
        let [p, m, v] = outputs;
        Some([back(p)?, back(m)?, back(v)?])
    }

    /// Optimisers step the parameters outside autodiff.
    fn tracked<C: CubeF32>(self) -> Option<[Tensor<B, 1>; 3]> {
        None
    }
}

/// The new parameter and moments of one step; `None` for tensors that are not f32.
fn adam_step<R: CubeRuntime>(
    p: CubeTensor<R>,
    g: CubeTensor<R>,
    m: CubeTensor<R>,
    v: CubeTensor<R>,
    f: &Factors,
) -> Option<[CubeTensor<R>; 3]> {
    if [&p, &g, &m, &v].iter().any(|t| t.dtype != DType::F32) {
        return None;
    }
    let [p, g, m, v] = [p, g, m, v].map(into_contiguous);
    let n = p.meta.shape()[0];
    let client = p.client.clone();
    let new = || empty_device::<R, f32>(client.clone(), p.device.clone(), [n].into());
    let (p_out, m_out, v_out) = (new(), new(), new());
    if n > 0 {
        let (cube_count, cube_dim) = elementwise(&client, n);
        adam_kernel::launch::<R>(
            &client,
            cube_count,
            cube_dim,
            p.into_array_arg(),
            g.into_array_arg(),
            m.into_array_arg(),
            v.into_array_arg(),
            p_out.clone().into_array_arg(),
            m_out.clone().into_array_arg(),
            v_out.clone().into_array_arg(),
            f.beta_1,
            f.beta_2,
            f.one_minus_beta_1,
            f.one_minus_beta_2,
            f.combined,
            f.epsilon,
            f.lr,
        );
    }
    Some([p_out, m_out, v_out])
}

/// Thread `i` steps value `i` ([`Factors::step`]).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn adam_kernel(
    p: &Array<f32>,
    g: &Array<f32>,
    m: &Array<f32>,
    v: &Array<f32>,
    p_out: &mut Array<f32>,
    m_out: &mut Array<f32>,
    v_out: &mut Array<f32>,
    beta_1: f32,
    beta_2: f32,
    one_minus_beta_1: f32,
    one_minus_beta_2: f32,
    combined: f32,
    epsilon: f32,
    lr: f32,
) {
    let i = ABSOLUTE_POS;
    if i >= p.len() {
        terminate!();
    }
    let grad = g[i];
    let m_new = m[i] * beta_1 + grad * one_minus_beta_1;
    let v_new = v[i] * beta_2 + (grad * grad) * one_minus_beta_2;
    let update = (m_new * combined) / (v_new.sqrt() + epsilon);
    p_out[i] = p[i] - update * lr;
    m_out[i] = m_new;
    v_out[i] = v_new;
}

#[cfg(test)]
mod tests {
    use burn::backend::wgpu::WgpuDevice;
    use burn::backend::{Autodiff, Wgpu};
    use burn::module::{Module, Param};
    use burn::optim::{AdamConfig, GradientsParams, Optimizer};
    use burn::tensor::Distribution;

    use super::*;

    #[derive(Module, Debug)]
    struct Weights<B: Backend> {
        matrix: Param<Tensor<B, 2>>,
        vector: Param<Tensor<B, 1>>,
    }

    impl<B: Backend> Weights<B> {
        fn new(device: &B::Device) -> Self {
            let normal = Distribution::Normal(0.0, 1.0);
            Self {
                matrix: Param::from_tensor(Tensor::random([257, 33], normal, device)),
                vector: Param::from_tensor(Tensor::random([1001], normal, device)),
            }
        }

        fn loss(&self, x: &Tensor<B, 2>) -> Tensor<B, 1> {
            let y = x.clone().matmul(self.matrix.val()).tanh();
            (y.sum_dim(1).reshape([x.dims()[0]]) * self.vector.val().narrow(0, 0, x.dims()[0]).exp()).sum()
        }
    }

    fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().expect("f32 values")
    }

    /// Three steps at changing learning rates with [`FusedAdam`] and with burn's `Adam` (the same
    /// hyper-parameters) from the same start: the parameters after each step.
    fn both<B: AutodiffBackend>(device: &B::Device) -> [Vec<Vec<f32>>; 2] {
        let start = Weights::<B>::new(device);
        let x = Tensor::<B, 2>::random([400, 257], Distribution::Normal(0.0, 0.5), device);
        let fused_adam = FusedAdam {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-15,
        };
        let burn_adam = AdamConfig::new()
            .with_beta_1(0.9)
            .with_beta_2(0.999)
            .with_epsilon(1e-15);
        let mut trajectories = [vec![], vec![]];
        let mut fused = fused_adam.init::<B, Weights<B>>();
        let mut reference = burn_adam.init::<B, Weights<B>>();
        let (mut a, mut b) = (start.clone(), start);
        for (step, lr) in [1e-2, 5e-3, 2e-2].into_iter().enumerate() {
            let grads = GradientsParams::from_grads(a.loss(&x).backward(), &a);
            a = fused.step(lr, a, grads);
            let grads = GradientsParams::from_grads(b.loss(&x).backward(), &b);
            b = reference.step(lr, b, grads);
            for (k, w) in [&a, &b].into_iter().enumerate() {
                let mut all = values(w.matrix.val());
                all.extend(values(w.vector.val()));
                trajectories[k].push(all);
            }
            assert_eq!(trajectories[0].len(), step + 1);
        }
        trajectories
    }

    #[test]
    fn equals_burn_adam_on_the_cpu_backend() {
        let [fused, reference] = both::<Autodiff<CpuBackend>>(&Default::default());
        // The same f32 operations in the same order: the same bits.
        assert_eq!(fused, reference);
    }

    #[test]
    fn matches_burn_adam_on_wgpu() {
        let [fused, reference] = both::<Autodiff<Wgpu<f32>>>(&WgpuDevice::DefaultDevice);
        for (step, (a, b)) in fused.iter().zip(&reference).enumerate() {
            let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            // A step moves each value by about lr (1e-2); a fused multiply-add differs by rounding.
            assert!(worst < 1e-6, "step {step}: the parameters differ by {worst}");
            let moved = a.iter().zip(&fused[0]).filter(|(x, y)| x != y).count();
            assert!(
                step == 0 || moved > a.len() / 2,
                "step {step}: the parameters did not move"
            );
        }
    }

    /// The kernels run where they should: the comparisons above would pass trivially on burn's ops.
    #[test]
    fn the_kernels_take_the_step() {
        fn step<B: Backend>(device: &B::Device) -> Step<B, 1> {
            let t = || Tensor::<B, 1>::random([1000], Distribution::Normal(0.0, 1.0), device);
            Step {
                parameter: t(),
                grad: t(),
                m: t(),
                v: t().abs(),
            }
        }
        let f = FusedAdam {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-15,
        }
        .factors(3, 1e-2);
        assert!(step::<CpuBackend>(&Default::default()).on_cpu(&f).is_some());
        let cube = CubeStep {
            step: step::<Wgpu<f32>>(&WgpuDevice::DefaultDevice),
            factors: f,
        };
        assert!(on_cube::<Wgpu<f32>, _>(cube).is_some());
    }

    /// The moments come out as burn's too (what checkpoints save).
    #[test]
    fn keeps_burn_adams_moments() {
        let device = Default::default();
        let p = Tensor::<CpuBackend, 1>::random([100], Distribution::Normal(0.0, 1.0), &device);
        let g = Tensor::<CpuBackend, 1>::random([100], Distribution::Normal(0.0, 1.0), &device);
        let fused = FusedAdam {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-15,
        };
        let burn_adam = AdamConfig::new()
            .with_beta_1(0.9)
            .with_beta_2(0.999)
            .with_epsilon(1e-15)
            .build();
        let (mut a_state, mut b_state) = (None, None);
        let (mut a, mut b) = (p.clone(), p);
        for lr in [1e-2, 1e-3] {
            let (pa, sa) = SimpleOptimizer::<CpuBackend>::step(&fused, lr, a, g.clone(), a_state);
            let (pb, sb) = SimpleOptimizer::<CpuBackend>::step(&burn_adam, lr, b, g.clone(), b_state);
            let (ma, mb) = (sa.clone().unwrap().momentum, sb.clone().unwrap().momentum);
            assert_eq!(ma.time, mb.time);
            assert_eq!(values(ma.moment_1), values(mb.moment_1));
            assert_eq!(values(ma.moment_2), values(mb.moment_2));
            (a, b, a_state, b_state) = (pa, pb, sa, sb);
        }
        assert_eq!(values(a), values(b));
    }
}
