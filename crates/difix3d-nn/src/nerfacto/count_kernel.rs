//! [`super::sampler::count_at_most`] (torch's `searchsorted(..., side="right")`) as a kernel: a binary
//! search per value on the CPU backend (rayon) and on burn's GPU backends (one CubeCL thread per
//! value, compiled to WGSL and to CUDA). Rows that are not sorted, or hold NaN, are counted one
//! entry at a time, so the counts are the burn-ops version's in every case. In burn ops the count is
//! one comparison, cast and sum per value column: on a GPU a few thousand small launches per
//! training step, here one (two on the GPU: the rows' sortedness first).

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;
use rayon::prelude::*;

use crate::nn::backend::{is_cpu_backend, retype, retype_int};
use crate::nn::cube::{elementwise, on_cube, CubeF32, OnCube};

/// For each row, how many entries of the sorted `sorted` `[R, C]` are <= each `values` `[R, U]`
/// entry, `[R, U]`; `None` where `B` has no kernel (the caller then uses burn ops).
pub fn count_at_most<B: Backend>(sorted: &Tensor<B, 2>, values: &Tensor<B, 2>) -> Option<Tensor<B, 2, Int>> {
    if is_cpu_backend::<B>() {
        return Some(on_cpu(sorted, values));
    }
    on_cube::<B, _>(Count { sorted, values })
}

fn on_cpu<B: Backend>(sorted: &Tensor<B, 2>, values: &Tensor<B, 2>) -> Tensor<B, 2, Int> {
    let [rays, u] = values.dims();
    let c = sorted.dims()[1];
    let read = |t: &Tensor<B, 2>| {
        let data = t.clone().into_data().convert::<f32>();
        data.into_vec::<f32>().expect("a float tensor converted to f32")
    };
    let (sorted_values, values_values) = (read(sorted), read(values));
    let mut counts = vec![0i64; rays * u];
    counts
        .par_chunks_mut(u.max(1))
        .zip(sorted_values.par_chunks(c.max(1)))
        .zip(values_values.par_chunks(u.max(1)))
        .for_each(|((counts, row), values)| {
            let is_sorted = row.windows(2).all(|w| w[0] <= w[1]);
            for (count, &v) in counts.iter_mut().zip(values) {
                *count = if is_sorted {
                    row.partition_point(|&s| v >= s)
                } else {
                    row.iter().filter(|&&s| v >= s).count()
                } as i64;
            }
        });
    let data = TensorData::new(counts, [rays, u]).convert::<B::IntElem>();
    Tensor::from_data(data, &values.device())
}

struct Count<'a, B: Backend> {
    sorted: &'a Tensor<B, 2>,
    values: &'a Tensor<B, 2>,
}

impl<B: Backend> OnCube for Count<'_, B> {
    type Output = Tensor<B, 2, Int>;

    fn plain<C: CubeF32>(self) -> Option<Tensor<B, 2, Int>> {
        let sorted = retype::<B, C, 2>(self.sorted.clone())?;
        let values = retype::<B, C, 2>(self.values.clone())?;
        retype_int::<C, B, 2>(on_gpu(sorted, values)?)
    }

    /// The counts carry no gradient: the kernel runs on the inner tensors.
    fn tracked<C: CubeF32>(self) -> Option<Tensor<B, 2, Int>> {
        let sorted = retype::<B, burn::backend::Autodiff<C>, 2>(self.sorted.clone())?.inner();
        let values = retype::<B, burn::backend::Autodiff<C>, 2>(self.values.clone())?.inner();
        let counts = Tensor::<burn::backend::Autodiff<C>, 2, Int>::from_inner(on_gpu(sorted, values)?);
        retype_int::<burn::backend::Autodiff<C>, B, 2>(counts)
    }
}

/// The counts on a CubeCL backend whose integers are i32; `None` for other element types.
fn on_gpu<C: CubeF32>(sorted: Tensor<C, 2>, values: Tensor<C, 2>) -> Option<Tensor<C, 2, Int>> {
    if std::any::TypeId::of::<C::IntElem>() != std::any::TypeId::of::<i32>()
        || sorted.dtype() != DType::F32
        || values.dtype() != DType::F32
    {
        return None;
    }
    let [rows, columns] = sorted.dims();
    let [_, u] = values.dims();
    let float = |t: Tensor<C, 2>| into_contiguous(t.into_primitive().tensor());
    let (sorted, values) = (float(sorted), float(values));
    let (client, device) = (values.client.clone(), values.device.clone());
    let counts: CubeTensor<C::Runtime> =
        empty_device::<C::Runtime, i32>(client.clone(), device.clone(), [rows, u].into());
    if rows * u > 0 {
        let flags = empty_device::<C::Runtime, u32>(client.clone(), device, [rows].into());
        let (cube_count, cube_dim) = elementwise(&client, rows);
        rows_sorted::launch::<C::Runtime>(
            &client,
            cube_count,
            cube_dim,
            sorted.clone().into_array_arg(),
            flags.clone().into_array_arg(),
            columns,
        );
        let (cube_count, cube_dim) = elementwise(&client, rows * u);
        count_kernel::launch::<C::Runtime>(
            &client,
            cube_count,
            cube_dim,
            sorted.into_array_arg(),
            flags.into_array_arg(),
            values.into_array_arg(),
            counts.clone().into_array_arg(),
            columns,
        );
    }
    Some(Tensor::from_primitive(counts))
}

/// `flags[r]` = 1 where row `r` of `sorted` (`columns` wide) is ascending without NaN, else 0.
#[cube(launch)]
fn rows_sorted(sorted: &Array<f32>, flags: &mut Array<u32>, columns: usize) {
    if ABSOLUTE_POS >= flags.len() {
        terminate!();
    }
    let base = ABSOLUTE_POS * columns;
    let mut ascending = 1u32;
    for j in 1..columns {
        // Not ordered: a descent, or NaN on either side.
        let ordered = sorted[base + j - 1] <= sorted[base + j];
        if !ordered {
            ascending = 0u32;
        }
    }
    flags[ABSOLUTE_POS] = ascending;
}

/// One value per thread: how many entries of its row of `sorted` are <= it.
#[cube(launch)]
fn count_kernel(sorted: &Array<f32>, flags: &Array<u32>, values: &Array<f32>, counts: &mut Array<i32>, columns: usize) {
    if ABSOLUTE_POS >= values.len() {
        terminate!();
    }
    let row = ABSOLUTE_POS / (values.len() / flags.len());
    let value = values[ABSOLUTE_POS];
    let base = row * columns;
    let mut count = 0usize;
    if flags[row] == 1u32 {
        // The first entry not <= the value (`partition_point`).
        let mut hi = columns;
        loop {
            if count >= hi {
                break;
            }
            let mid = (count + hi) / 2;
            if value >= sorted[base + mid] {
                count = mid + 1;
            } else {
                hi = mid;
            }
        }
    } else {
        for j in 0..columns {
            if value >= sorted[base + j] {
                count += 1;
            }
        }
    }
    counts[ABSOLUTE_POS] = i32::cast_from(count);
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, NdArray, Wgpu};
    use burn::tensor::Distribution;

    use super::*;
    use crate::nn::backend::CpuBackend;

    /// The kernels give the burn-ops counts (ndarray runs those): sorted rows with ties, an unsorted
    /// row, a row with NaN, values outside the range and NaN values.
    #[test]
    fn kernels_match_burn_ops() {
        let device = Default::default();
        let random = Tensor::<NdArray, 2>::random([64, 33], Distribution::Uniform(0.0, 1.0), &device);
        let sorted = Tensor::cat(
            vec![
                random.clone().cumsum(1) / 17.0,
                Tensor::from_floats([[0.0; 33]], &device),
                random.clone().narrow(0, 0, 1),
                Tensor::from_floats([[f32::NAN; 33]], &device),
            ],
            0,
        );
        let rows = sorted.dims()[0];
        let mut values = Tensor::<NdArray, 2>::random([rows, 9], Distribution::Uniform(-0.5, 2.5), &device);
        values = values.slice_assign([0..1, 0..3], Tensor::from_floats([[f32::NAN, 0.0, 1.0]], &device));
        assert!(count_at_most(&sorted, &values).is_none(), "ndarray has no kernel");
        let want = super::super::sampler::count_at_most(&sorted, &values).into_data();
        assert!(want.as_slice::<i64>().unwrap().iter().any(|&c| c > 0 && c < 33));
        fn on<C: Backend>(sorted: &Tensor<NdArray, 2>, values: &Tensor<NdArray, 2>) -> Vec<i64> {
            let device = Default::default();
            let sorted = Tensor::<C, 2>::from_data(sorted.to_data(), &device);
            let values = Tensor::<C, 2>::from_data(values.to_data(), &device);
            count_at_most(&sorted, &values)
                .expect("a kernel for this backend")
                .into_data()
                .convert::<i64>()
                .into_vec()
                .unwrap()
        }
        let want = want.into_vec::<i64>().unwrap();
        assert_eq!(on::<CpuBackend>(&sorted, &values), want);
        assert_eq!(on::<Autodiff<CpuBackend>>(&sorted, &values), want);
        assert_eq!(on::<Wgpu<f32>>(&sorted, &values), want);
        assert_eq!(on::<Autodiff<Wgpu<f32>>>(&sorted, &values), want);
    }
}
