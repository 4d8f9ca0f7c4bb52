//! Reaching kernels of our own on burn's GPU backends from backend-generic code. burn's wgpu and
//! CUDA backends are both `CubeBackend`s, whose tensors are CubeCL buffers; a kernel written once in
//! CubeCL (`#[cube]`) compiles to WGSL for the one and to CUDA for the other. [`on_cube`] finds out
//! whether a generic backend `B` is one of them at f32 (or autodiff over one) and hands the job the
//! concrete backend type, as [`super::backend::retype`] does for the CPU kernels.

use std::any::TypeId;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn_cubecl::element::BoolElement;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{CubeBackend, CubeRuntime, IntElement};
use cubecl::prelude::ComputeClient;
use cubecl::{calculate_cube_count_elemwise, CubeCount, CubeDim};

/// burn's CubeCL backends at f32, with the runtime their tensors live on.
pub trait CubeF32:
    Backend<FloatTensorPrimitive = CubeTensor<Self::Runtime>, IntTensorPrimitive = CubeTensor<Self::Runtime>>
{
    type Runtime: CubeRuntime;
}

impl<R: CubeRuntime, I: IntElement, BT: BoolElement> CubeF32 for CubeBackend<R, f32, I, BT> {
    type Runtime = R;
}

/// Work for a GPU kernel, given the concrete backend: `plain` when `B` is the CubeCL backend `C`,
/// `tracked` when it is autodiff over `C`. Either may decline (`None`), and the caller then runs its
/// burn-ops version.
pub trait OnCube {
    type Output;
    fn plain<C: CubeF32>(self) -> Option<Self::Output>;
    fn tracked<C: CubeF32>(self) -> Option<Self::Output>;
}

/// Runs `job` when `B` is one of this build's CubeCL backends at f32 (wgpu; CUDA with the `cuda`
/// feature) or autodiff over one; `None` otherwise.
pub fn on_cube<B: Backend, J: OnCube>(job: J) -> Option<J::Output> {
    let b = TypeId::of::<B>();
    #[cfg(feature = "cuda")]
    {
        type Cuda = burn::backend::Cuda<f32>;
        if b == TypeId::of::<Cuda>() {
            return job.plain::<Cuda>();
        }
        if b == TypeId::of::<Autodiff<Cuda>>() {
            return job.tracked::<Cuda>();
        }
    }
    type Wgpu = burn::backend::Wgpu<f32>;
    if b == TypeId::of::<Wgpu>() {
        job.plain::<Wgpu>()
    } else if b == TypeId::of::<Autodiff<Wgpu>>() {
        job.tracked::<Wgpu>()
    } else {
        None
    }
}

/// Whether `client`'s device runs kernels on the CPU's vector units (lavapipe, llvmpipe): there
/// our kernels take another shape (`nn::linear`'s resident kernels, the hash grid's thread per
/// point). cubecl turns plane (subgroup) operations off on wgpu's CPU adapters, and every GPU API it
/// targets has them: their absence is the sign.
pub fn cpu_device<R: CubeRuntime>(client: &ComputeClient<R>) -> bool {
    #[cfg(test)]
    if GPU_KERNELS.with(std::cell::Cell::get) {
        return false;
    }
    !client
        .properties()
        .features
        .plane
        .contains(cubecl::features::Plane::Ops)
}

#[cfg(test)]
thread_local! {
    /// Set: [`cpu_device`] says no, so that lavapipe tests the GPU's kernel shapes too.
    static GPU_KERNELS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `test` with the kernel shapes this device picks, then (on a CPU device) with the GPU's.
#[cfg(test)]
pub(crate) fn with_both_kernels(test: impl Fn()) {
    for gpu in [false, true] {
        GPU_KERNELS.with(|g| g.set(gpu));
        test();
    }
    GPU_KERNELS.with(|g| g.set(false));
}

/// The launch shape for `threads` threads, one element each (at least one cube, so an empty job
/// still launches validly).
pub fn elementwise<R: CubeRuntime>(client: &ComputeClient<R>, threads: usize) -> (CubeCount, CubeDim) {
    let threads = threads.max(1);
    let cube_dim = CubeDim::new(client, threads);
    (calculate_cube_count_elemwise(client, threads, cube_dim), cube_dim)
}
