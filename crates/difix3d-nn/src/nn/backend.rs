//! Picking the burn backend a model runs on (Difix, the losses of 3DGS training and refinement, the
//! live fix), and checking that it can run before burn is asked to.
//!
//! burn's CUDA backend panics at first use where no NVIDIA driver exists, so we probe the driver
//! ourselves and turn its absence into an ordinary error.

use std::fmt;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorPrimitive};

/// The chosen backend, precision or devices cannot run on this machine; the message says why and
/// what to use instead.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(String);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// NVIDIA GPUs through burn-cuda (needs the `cuda` cargo feature and an NVIDIA driver).
    Cuda,
    /// Any GPU through wgpu (Vulkan/Metal/DX12); runs on the CPU via lavapipe where there is no GPU.
    Wgpu,
    /// The CPU, always available: burn-flex (gemm matmuls, im2col convolutions, rayon threads), the
    /// fastest of burn's CPU backends on the Difix model (BENCHMARKS.md).
    Cpu,
}

/// The CPU backend `--backend cpu` runs.
pub type CpuBackend = burn::backend::Flex;

/// Whether `B` is the CPU backend or autodiff over it: where a tensor's data is in this process's
/// memory, so CPU kernels may read it (`nerfacto::count_kernel`).
pub fn is_cpu_backend<B: Backend>() -> bool {
    use std::any::TypeId;
    let b = TypeId::of::<B>();
    b == TypeId::of::<CpuBackend>() || b == TypeId::of::<burn::backend::Autodiff<CpuBackend>>()
}

/// Whether `B` is burn's wgpu backend itself (not under autodiff), which every wgpu model here runs
/// on (`Wgpu<f32>`, also the renderer-shared one): where convolutions go through `nn::tap_conv`.
pub fn is_wgpu_backend<B: Backend>() -> bool {
    std::any::TypeId::of::<B>() == std::any::TypeId::of::<burn::backend::Wgpu<f32>>()
}

/// `t` as a tensor of backend `C` when `C` is `B` itself (compared by type), else `None`: how
/// backend-generic code hands a tensor to a kernel written for one backend (`nn::flex_kernels`,
/// `nerfacto::hash_kernel`), in place of the specialisation Rust does not have.
pub fn retype<B: Backend, C: Backend, const D: usize>(t: Tensor<B, D>) -> Option<Tensor<C, D>> {
    let primitive: Box<dyn std::any::Any> = Box::new(t.into_primitive());
    primitive
        .downcast::<TensorPrimitive<C>>()
        .ok()
        .map(|p| Tensor::from_primitive(*p))
}

/// [`retype`] for integer tensors. Integer tensors are compared by their primitive's type, which
/// autodiff shares with the backend it wraps (it does not track integers), so an integer tensor of
/// `Autodiff<C>` and one of `C` retype into each other.
pub fn retype_int<B: Backend, C: Backend, const D: usize>(t: Tensor<B, D, Int>) -> Option<Tensor<C, D, Int>> {
    let primitive: Box<dyn std::any::Any> = Box::new(t.into_primitive());
    primitive
        .downcast::<C::IntTensorPrimitive>()
        .ok()
        .map(|p| Tensor::from_primitive(*p))
}

/// burn's CPU implementations. `--backend cpu` runs [`CpuImpl::Flex`] ([`CpuBackend`]); ndarray (what
/// it ran before) stays selectable in `difix3d bench fix --cpu-impl` so the comparison in BENCHMARKS.md
/// can be repeated. (burn-candle, deprecated in burn 0.21, was measured too and dropped.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CpuImpl {
    #[default]
    Flex,
    Ndarray,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Precision {
    Fp32,
    Fp16,
    Bf16,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Cuda => "cuda",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cpu => "cpu",
        })
    }
}

/// Code to run once the backend type is known (a generic closure, which Rust cannot express directly).
pub trait WithBackend {
    type Output;
    fn run<B: Backend>(self, device: B::Device) -> Self::Output;
}

/// Runs `job` on the chosen backend and precision, or explains why that combination cannot run here.
pub fn run_on<J: WithBackend>(kind: BackendKind, precision: Precision, job: J) -> Result<J::Output, BackendError> {
    use burn::backend::{wgpu::WgpuDevice, Wgpu};
    match (kind, precision) {
        (BackendKind::Cpu, Precision::Fp32) => Ok(job.run::<CpuBackend>(Default::default())),
        (BackendKind::Cpu, p) => Err(cpu_precision(p)),
        (BackendKind::Wgpu, Precision::Fp32) => Ok(job.run::<Wgpu<f32>>(WgpuDevice::DefaultDevice)),
        (BackendKind::Wgpu, p) => Err(BackendError(format!(
            "{p:?} on wgpu is not yet supported (use --precision fp32, or --backend cuda on NVIDIA)"
        ))),
        (BackendKind::Cuda, precision) => run_cuda(precision, job),
    }
}

/// [`run_on`] at fp32, compiling only the fp32 backends into `job`: for models with no
/// reduced-precision path (nerfacto), so the f16/bf16 CUDA variants are neither built nor offered.
pub fn run_on_fp32<J: WithBackend>(kind: BackendKind, job: J) -> Result<J::Output, BackendError> {
    use burn::backend::{wgpu::WgpuDevice, Wgpu};
    match kind {
        BackendKind::Cpu => Ok(job.run::<CpuBackend>(Default::default())),
        BackendKind::Wgpu => Ok(job.run::<Wgpu<f32>>(WgpuDevice::DefaultDevice)),
        BackendKind::Cuda => run_cuda_fp32(job),
    }
}

/// [`run_on`], except that wgpu at fp32 runs on `gpu`'s own device
/// ([`crate::render::GpuContext::burn_device`]), so the renderer and burn exchange data by GPU-side
/// copies (training's render op, the live fix) instead of through the CPU.
pub fn run_on_renderer_device<J: WithBackend>(
    kind: BackendKind,
    precision: Precision,
    gpu: &crate::render::GpuContext,
    job: J,
) -> Result<J::Output, BackendError> {
    match (kind, precision) {
        (BackendKind::Wgpu, Precision::Fp32) => {
            Ok(job.run::<crate::render::burn_bridge::SharedBackend>(gpu.burn_device()))
        }
        _ => run_on(kind, precision, job),
    }
}

fn cpu_precision(precision: Precision) -> BackendError {
    BackendError(format!("{precision:?} needs a GPU backend; the CPU backend runs fp32"))
}

/// Runs `job` on one of burn's CPU implementations (fp32 only). Only the benchmark calls this: every
/// other job runs [`CpuBackend`] through [`run_on`], so the others are not compiled into them.
pub fn run_on_cpu<J: WithBackend>(which: CpuImpl, precision: Precision, job: J) -> Result<J::Output, BackendError> {
    use burn::backend::{ndarray::NdArrayDevice, NdArray};
    if precision != Precision::Fp32 {
        return Err(cpu_precision(precision));
    }
    Ok(match which {
        CpuImpl::Flex => job.run::<CpuBackend>(Default::default()),
        CpuImpl::Ndarray => job.run::<NdArray<f32>>(NdArrayDevice::Cpu),
    })
}

#[cfg(feature = "cuda")]
fn run_cuda<J: WithBackend>(precision: Precision, job: J) -> Result<J::Output, BackendError> {
    use burn::backend::{cuda::CudaDevice, Cuda};
    probe_cuda()?;
    let device = CudaDevice::default();
    Ok(match precision {
        Precision::Fp32 => job.run::<Cuda<f32>>(device),
        Precision::Fp16 => job.run::<Cuda<half::f16>>(device),
        Precision::Bf16 => job.run::<Cuda<half::bf16>>(device),
    })
}

#[cfg(feature = "cuda")]
fn run_cuda_fp32<J: WithBackend>(job: J) -> Result<J::Output, BackendError> {
    use burn::backend::{cuda::CudaDevice, Cuda};
    probe_cuda()?;
    Ok(job.run::<Cuda<f32>>(CudaDevice::default()))
}

#[cfg(not(feature = "cuda"))]
fn run_cuda<J: WithBackend>(_precision: Precision, _job: J) -> Result<J::Output, BackendError> {
    Err(no_cuda_in_this_build())
}

#[cfg(not(feature = "cuda"))]
fn run_cuda_fp32<J: WithBackend>(_job: J) -> Result<J::Output, BackendError> {
    Err(no_cuda_in_this_build())
}

#[cfg(not(feature = "cuda"))]
fn no_cuda_in_this_build() -> BackendError {
    BackendError(
        "this build has no CUDA backend: rebuild with `cargo build --release --features cuda`, or use --backend wgpu"
            .into(),
    )
}

/// The devices `--devices` names on the backend `kind` runs on, starting from its `default`
/// device: GPU `i` for CUDA, the `i`-th discrete GPU for wgpu; on the CPU backend every index is
/// one more worker thread on the same CPU (useful for testing data-parallel training). No indices:
/// just the default device.
pub fn devices<B: Backend>(
    kind: BackendKind,
    default: &B::Device,
    indices: &[usize],
) -> Result<Vec<B::Device>, BackendError> {
    use burn::tensor::backend::{Device, DeviceId};
    if indices.is_empty() {
        return Ok(vec![default.clone()]);
    }
    for (k, i) in indices.iter().enumerate() {
        if indices[..k].contains(i) {
            return Err(BackendError(format!("device {i} is listed twice in --devices")));
        }
    }
    let available = match kind {
        BackendKind::Cpu => return Ok(vec![default.clone(); indices.len()]),
        BackendKind::Cuda => probe_cuda()?,
        BackendKind::Wgpu => pollster::block_on(wgpu::Instance::default().enumerate_adapters(wgpu::Backends::all()))
            .iter()
            .filter(|a| a.get_info().device_type == wgpu::DeviceType::DiscreteGpu)
            .count(),
    };
    if let Some(missing) = indices.iter().find(|&&i| i >= available) {
        let what = if kind == BackendKind::Wgpu {
            "discrete GPUs"
        } else {
            "CUDA devices"
        };
        return Err(BackendError(format!(
            "--devices names device {missing}, but {kind} sees {available} {what} (numbered from 0)"
        )));
    }
    // CUDA and wgpu both number their GPUs as device type 0 (wgpu: discrete GPUs).
    Ok(indices
        .iter()
        .map(|&i| B::Device::from_id(DeviceId::new(0, i as u16)))
        .collect())
}

/// Checks that an NVIDIA driver is installed and sees at least one GPU, and that what burn-cuda
/// loads later is there too (NVRTC, which compiles its kernels, and the CUDA headers they include):
/// without them burn-cuda panics at first use. Returns how many GPUs the driver sees.
pub fn probe_cuda() -> Result<usize, BackendError> {
    let gpus = probe_cuda_driver()?;
    probe_nvrtc()?;
    probe_cuda_headers()?;
    Ok(gpus)
}

fn cuda_not_usable(why: String) -> BackendError {
    BackendError(format!("CUDA is not usable here: {why}; use --backend wgpu or cpu"))
}

/// NVRTC's library names as cudarc tries them (bindings of CUDA 13 in this build; older majors too).
const NVRTC_NAMES: [&str; 4] = ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11"];

fn probe_nvrtc() -> Result<(), BackendError> {
    type NvrtcVersion = unsafe extern "C" fn(*mut i32, *mut i32) -> i32;
    let no = cuda_not_usable;
    // SAFETY: loading NVRTC runs its initialisers, as any CUDA program that compiles kernels does.
    let lib = NVRTC_NAMES
        .iter()
        .find_map(|name| unsafe { libloading::Library::new(name) }.ok())
        .ok_or_else(|| {
            no(format!(
                "NVRTC (the CUDA runtime compiler) was not found as any of {NVRTC_NAMES:?}; put the folder \
                 holding it on LD_LIBRARY_PATH (a CUDA toolkit's lib64, or pip's nvidia/cu13/lib)"
            ))
        })?;
    // SAFETY: nvrtcVersion(int*, int*) is NVRTC's C signature.
    unsafe {
        let version: libloading::Symbol<NvrtcVersion> = lib
            .get(b"nvrtcVersion\0")
            .map_err(|e| no(format!("NVRTC has no nvrtcVersion ({e})")))?;
        let (mut major, mut minor) = (0, 0);
        if version(&mut major, &mut minor) != 0 {
            return Err(no("NVRTC does not report its version".into()));
        }
    }
    Ok(())
}

/// burn-cuda's kernels include the CUDA headers from `$CUDA_PATH/include` or the usual install folders.
fn probe_cuda_headers() -> Result<(), BackendError> {
    let candidates: Vec<std::path::PathBuf> = match std::env::var_os("CUDA_PATH") {
        Some(path) => vec![path.into()],
        None => ["/usr/local/cuda", "/opt/cuda", "/usr"]
            .iter()
            .map(Into::into)
            .collect(),
    };
    if candidates
        .iter()
        .any(|dir| dir.join("include").join("cuda_fp16.h").is_file())
    {
        return Ok(());
    }
    Err(cuda_not_usable(format!(
        "no CUDA headers (include/cuda_fp16.h) under {}; set CUDA_PATH to a CUDA toolkit",
        candidates
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

fn probe_cuda_driver() -> Result<usize, BackendError> {
    type CuInit = unsafe extern "C" fn(u32) -> i32;
    type CuDeviceGetCount = unsafe extern "C" fn(*mut i32) -> i32;
    let no = cuda_not_usable;
    // SAFETY: loading the system's CUDA driver library runs its initialisers, as any CUDA program does.
    let lib = unsafe { libloading::Library::new("libcuda.so.1").or_else(|_| libloading::Library::new("libcuda.so")) }
        .map_err(|e| no(format!("no NVIDIA driver library ({e})")))?;
    // SAFETY: the symbols are declared with the driver API's C signatures.
    unsafe {
        let init: libloading::Symbol<CuInit> = lib.get(b"cuInit\0").map_err(|e| no(e.to_string()))?;
        let count: libloading::Symbol<CuDeviceGetCount> =
            lib.get(b"cuDeviceGetCount\0").map_err(|e| no(e.to_string()))?;
        let status = init(0);
        if status != 0 {
            return Err(no(format!("cuInit failed with status {status}")));
        }
        let mut n = 0;
        let status = count(&mut n);
        if status != 0 || n == 0 {
            return Err(no(format!("no CUDA device (status {status}, {n} devices)")));
        }
        Ok(n as usize)
    }
}
