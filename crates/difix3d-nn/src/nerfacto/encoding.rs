//! The multiresolution hash grid and the spherical-harmonics direction encoding, as nerfstudio's
//! torch implementations compute them (nerfstudio/field_components/encodings.py, `HashEncoding`
//! and `SHEncoding`; nerfstudio/utils/math.py, `components_from_spherical_harmonics`).
//!
//! The hash grid, level by level: the point `x` in [0, 1]³ is scaled by the level's resolution
//! `s_l = floor(base · g^l)` (with `g = exp((ln max − ln base) / (L − 1))`, computed as nerfstudio
//! does: `g` in f64, `g^l` in f32, so nerfacto's finest level is 2047, not 2048), the 8 corners of
//! the cell around it (floor and floor + 1 per axis; nerfstudio takes the ceil, the same corner but
//! where it has weight 0) are hashed with Instant-NGP's primes
//! `(x · 1) ⊕ (y · 2654435761) ⊕ (z · 805459861) mod T` into that level's rows
//! `[l · T, (l + 1) · T)` of the table, and their features are blended trilinearly. Every level is
//! hashed, coarse ones too. tiny-cuda-nn's grid (nerfstudio's tcnn implementation) indexes coarse
//! levels densely and offsets positions by half a cell: [`GridLayout::Tcnn`]. The output is
//! `[N, L · F]`, level-major.

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::ElementConversion;

use super::hash_kernel::{self, GridShape, Level};

/// The largest grid resolution accepted: coordinates stay below 2^15, so the hash products below
/// fit in i32, the integer type of burn's CPU backend.
pub const MAX_GRID_RESOLUTION: usize = 1 << 15;
/// The largest hash table accepted (tiny-cuda-nn's limit is 2^24 entries per level too).
pub const MAX_LOG2_HASHMAP_SIZE: u32 = 24;

/// Instant-NGP's spatial hash primes, per axis (the first is 1).
const PRIMES: [u64; 3] = [1, 2_654_435_761, 805_459_861];

/// nerfstudio's growth factor between levels, `exp((ln max − ln base) / (L − 1))` in f64 (a numpy
/// float64 in `HashEncoding.__init__`; the same value goes to tiny-cuda-nn as `per_level_scale`).
fn growth_factor(num_levels: usize, base_res: usize, max_res: usize) -> f64 {
    if num_levels > 1 {
        (((max_res as f64).ln() - (base_res as f64).ln()) / (num_levels - 1) as f64).exp()
    } else {
        1.0
    }
}

/// The resolutions of the grid levels exactly as nerfstudio's `HashEncoding.__init__` computes
/// them: `torch.floor(min_res * growth_factor**levels)` with `growth_factor` a numpy float64 that
/// torch turns into a float32 before the power.
pub fn level_scalings(num_levels: usize, base_res: usize, max_res: usize) -> Vec<f32> {
    let growth = growth_factor(num_levels, base_res, max_res) as f32;
    (0..num_levels)
        .map(|l| (base_res as f32 * growth.powf(l as f32)).floor())
        .collect()
}

/// How a grid's levels sit in its table, and where a point lands in each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GridLayout {
    /// nerfstudio's torch `HashEncoding`: level `l` has scale `floor(base · g^l)` ([`level_scalings`])
    /// and rows `[l · T, (l + 1) · T)`, every level hashed.
    #[default]
    Torch,
    /// tiny-cuda-nn's `HashGrid` (nerfstudio's tcnn implementation): scale `base · 2^(l · log2 g) − 1`,
    /// points shifted by half a cell, and a level of resolution `r = ceil(scale) + 1` indexed densely
    /// when its `r³` corners fit in `T`; each level has `min(r³ rounded up to a multiple of 8, T)`
    /// rows, one level after the other.
    Tcnn,
}

/// The levels of a grid of `layout` (see [`GridLayout`]) with `features` per level.
pub fn grid_shape(
    layout: GridLayout,
    num_levels: usize,
    base_res: usize,
    max_res: usize,
    log2_table_size: u32,
    features: usize,
) -> GridShape {
    let table = 1usize << log2_table_size;
    let levels = match layout {
        GridLayout::Torch => level_scalings(num_levels, base_res, max_res)
            .into_iter()
            .enumerate()
            .map(|(l, scale)| Level {
                scale,
                first_row: l * table,
                rows: table,
                dense_resolution: None,
            })
            .collect(),
        GridLayout::Tcnn => {
            let log2_growth = (growth_factor(num_levels, base_res, max_res) as f32).log2();
            let mut first_row = 0;
            (0..num_levels)
                .map(|l| {
                    let scale = (l as f32 * log2_growth).exp2() * base_res as f32 - 1.0;
                    let resolution = scale.ceil() as usize + 1;
                    let corners = resolution.saturating_pow(3);
                    let rows = corners.div_ceil(8).saturating_mul(8).min(table);
                    let level = Level {
                        scale,
                        first_row,
                        rows,
                        dense_resolution: (corners <= table).then_some(resolution as u32),
                    };
                    first_row += rows;
                    level
                })
                .collect()
        }
    };
    GridShape {
        levels,
        shift: match layout {
            GridLayout::Torch => 0.0,
            GridLayout::Tcnn => 0.5,
        },
        features_per_level: features,
    }
}

/// A hash grid with its table `[rows, F]`.
#[derive(Module, Debug)]
pub struct HashEncoding<B: Backend> {
    pub table: Param<Tensor<B, 2>>,
    #[module(skip)]
    pub layout: GridLayout,
    #[module(skip)]
    pub shape: GridShape,
    pub log2_table_size: u32,
}

impl<B: Backend> HashEncoding<B> {
    /// A grid of `layout` over `table` (its rows as the layout needs them, row-major). The caller
    /// checks the sizes against the stored shape; this checks them against the limits.
    pub fn new(
        table: Tensor<B, 2>,
        layout: GridLayout,
        num_levels: usize,
        base_res: usize,
        max_res: usize,
        log2_table_size: u32,
    ) -> Result<Self, String> {
        if num_levels == 0 {
            return Err("the hash grid has no levels".into());
        }
        if !(1..=MAX_GRID_RESOLUTION).contains(&max_res) || base_res > max_res {
            return Err(format!(
                "grid resolutions {base_res}..{max_res} are outside 1..{MAX_GRID_RESOLUTION}"
            ));
        }
        if log2_table_size > MAX_LOG2_HASHMAP_SIZE {
            return Err(format!(
                "a hash table of 2^{log2_table_size} entries per level is larger than 2^{MAX_LOG2_HASHMAP_SIZE}"
            ));
        }
        let [rows, features_per_level] = table.dims();
        let shape = grid_shape(
            layout,
            num_levels,
            base_res,
            max_res,
            log2_table_size,
            features_per_level,
        );
        let needed = shape.table_rows();
        if rows != needed {
            return Err(format!(
                "the hash table has {rows} rows; {num_levels} levels of at most 2^{log2_table_size} need {needed}"
            ));
        }
        Ok(Self {
            table: Param::from_tensor(table),
            layout,
            shape,
            log2_table_size,
        })
    }

    pub fn num_levels(&self) -> usize {
        self.shape.levels.len()
    }

    pub fn features_per_level(&self) -> usize {
        self.shape.features_per_level
    }

    pub fn out_dim(&self) -> usize {
        self.num_levels() * self.features_per_level()
    }

    /// Encodes points `[N, 3]` in [0, 1]³ to `[N, L · F]` (`HashEncoding.pytorch_fwd`, or
    /// tiny-cuda-nn's grid): through [`hash_kernel`] on the backends it has a kernel for, elsewhere
    /// in burn ops ([`Self::forward_ops`]).
    pub fn forward(&self, points: Tensor<B, 2>) -> Tensor<B, 2> {
        match hash_kernel::encode(&points, self.table.val(), &self.shape) {
            Some(encoded) => encoded,
            None => self.forward_ops(points),
        }
    }

    /// [`Self::forward`] in burn ops, on any backend.
    pub fn forward_ops(&self, points: Tensor<B, 2>) -> Tensor<B, 2> {
        let device = points.device();
        let [n, _] = points.dims();
        let levels = &self.shape.levels;
        let per_level_floats = |f: &dyn Fn(&Level) -> f32| {
            let values: Vec<f32> = levels.iter().map(f).collect();
            Tensor::<B, 1>::from_floats(values.as_slice(), &device).reshape([1, levels.len()])
        };
        let per_level_ints = |f: &dyn Fn(&Level) -> i64| {
            let values: Vec<i64> = levels.iter().map(f).collect();
            Tensor::<B, 1, Int>::from_ints(values.as_slice(), &device).reshape([1, levels.len()])
        };
        let scales = per_level_floats(&|l| l.scale);
        // Axis by axis, so every tensor below is contiguous ([N, L]): burn's CPU backend walks
        // strided views (a narrowed [N, L, 3]) element by element, which cost a quarter of a render.
        let scaled: [Tensor<B, 2>; 3] = std::array::from_fn(|axis| {
            let s = points.clone().narrow(1, axis, 1) * scales.clone();
            match self.shape.shift {
                0.0 => s,
                shift => s + shift,
            }
        }); // [N, L]
        let floor = scaled.clone().map(|s| s.floor());
        let corners = floor.clone().map(|f| {
            let low = f.int();
            [low.clone(), low + 1]
        });

        // Each axis' share of a corner's hash, then of its dense index where a level is dense: [N, L].
        let table = 1u64 << self.log2_table_size;
        let hash_share =
            |axis: usize, high: usize| mul_mod_pow2(corners[axis][high].clone(), PRIMES[axis], self.log2_table_size);
        let dense = levels.iter().any(|l| l.dense_resolution.is_some());
        let strides: [Tensor<B, 2, Int>; 3] = std::array::from_fn(|axis| {
            per_level_ints(&|l| l.dense_resolution.map_or(0, |r| (r as i64).pow(axis as u32)))
        });
        let dense_levels = per_level_ints(&|l| l.dense_resolution.is_some() as i64).equal_elem(1);
        let rows = per_level_ints(&|l| l.rows as i64);
        let first_rows = per_level_ints(&|l| l.first_row as i64);
        let mask = ((table - 1) as i64).elem::<B::IntElem>();
        let [sx, sy, sz] = scaled;
        let [fx, fy, fz] = floor;
        // The trilinear weights along each axis: [N, L, 1].
        let (ox, oy, oz) = (
            (sx - fx).unsqueeze_dim(2),
            (sy - fy).unsqueeze_dim(2),
            (sz - fz).unsqueeze_dim(2),
        );
        // The features of one corner, `true` taking the upper one along that axis: [N, L, F].
        let corner = |cx: bool, cy: bool, cz: bool| {
            let high = [cx as usize, cy as usize, cz as usize];
            let mut index = hash_share(0, high[0])
                .bitwise_xor(hash_share(1, high[1]))
                .bitwise_xor(hash_share(2, high[2]))
                .bitwise_and_scalar(mask);
            if dense {
                let dense_index = (0..3)
                    .map(|axis| corners[axis][high[axis]].clone() * strides[axis].clone())
                    .reduce(|a, b| a + b)
                    .expect("three axes")
                    .remainder(rows.clone());
                index = index.mask_where(dense_levels.clone().expand([n, levels.len()]), dense_index);
            }
            self.table
                .val()
                .select(0, (index + first_rows.clone()).reshape([n * levels.len()]))
                .reshape([n, levels.len(), self.features_per_level()])
        };
        let lerp = |hi: Tensor<B, 3>, lo: Tensor<B, 3>, t: &Tensor<B, 3>| hi * t.clone() + lo * (t.clone().neg() + 1.0);

        // nerfstudio's corner numbering: f_0 = (c, c, c), f_1 = (c, f, c), f_2 = (f, f, c),
        // f_3 = (f, c, c), f_4 = (c, c, f), f_5 = (c, f, f), f_6 = (f, f, f), f_7 = (f, c, f).
        let f03 = lerp(corner(true, true, true), corner(false, true, true), &ox);
        let f12 = lerp(corner(true, false, true), corner(false, false, true), &ox);
        let f56 = lerp(corner(true, false, false), corner(false, false, false), &ox);
        let f47 = lerp(corner(true, true, false), corner(false, true, false), &ox);
        let f0312 = lerp(f03, f12, &oy);
        let f4756 = lerp(f47, f56, &oy);
        lerp(f0312, f4756, &oz).reshape([n, self.out_dim()])
    }
}

/// `(coordinate · prime) mod 2^log2` for coordinates in `0..2^15`, without overflowing 32-bit
/// integers. Only the low `log2` bits of the product matter (the hash XORs the three products and
/// keeps those bits, and the same bits come out of torch's 64-bit and tiny-cuda-nn's wrapping 32-bit
/// products), so the prime is first reduced mod 2^log2, then split into 16-bit halves:
/// `c · p = c · p_lo + (c · p_hi mod 2^(log2 − 16)) · 2^16 (mod 2^log2)`, each term below 2^31.
fn mul_mod_pow2<B: Backend>(coordinate: Tensor<B, 2, Int>, prime: u64, log2: u32) -> Tensor<B, 2, Int> {
    let table = 1u64 << log2;
    let prime = prime % table;
    let (low, high) = (prime & 0xFFFF, prime >> 16);
    let product_low = coordinate.clone().mul_scalar(low as i64);
    let product = if high == 0 {
        product_low
    } else {
        // log2 > 16 here, so the high part is kept mod 2^(log2 - 16) before the shift.
        let high_mask = ((table >> 16) - 1) as i64;
        let product_high = coordinate
            .mul_scalar(high as i64)
            .bitwise_and_scalar(high_mask.elem::<B::IntElem>())
            .mul_scalar(1i64 << 16);
        product_low + product_high
    };
    product.bitwise_and_scalar(((table - 1) as i64).elem::<B::IntElem>())
}

/// The spherical-harmonics encoding of directions `[N, 3]` up to degree 4 (16 components), as
/// `components_from_spherical_harmonics(levels=4, ...)` computes them.
///
/// Nerfacto hands this encoding `(d + 1) / 2` (`get_normalized_directions`: tiny-cuda-nn's SH
/// encoding expects [0, 1] inputs and maps them back to [-1, 1] itself), and nerfstudio's torch
/// fallback does not undo it; checkpoints of the torch implementation are trained with exactly that,
/// so [`super::field`] passes the same shifted directions.
pub fn spherical_harmonics<B: Backend>(directions: Tensor<B, 2>) -> Tensor<B, 2> {
    let [n, _] = directions.dims();
    let column = |axis: usize| directions.clone().narrow(1, axis, 1);
    let (x, y, z) = (column(0), column(1), column(2));
    let (xx, yy, zz) = (
        x.clone().powi_scalar(2),
        y.clone().powi_scalar(2),
        z.clone().powi_scalar(2),
    );
    let constant = Tensor::<B, 2>::full([n, 1], 0.282_094_791_773_878_14, &directions.device());
    let components = vec![
        // l = 0
        constant,
        // l = 1
        y.clone() * 0.488_602_511_902_919_9,
        z.clone() * 0.488_602_511_902_919_9,
        x.clone() * 0.488_602_511_902_919_9,
        // l = 2
        x.clone() * 1.092_548_430_592_079_2 * y.clone(),
        y.clone() * 1.092_548_430_592_079_2 * z.clone(),
        zz.clone() * 0.946_174_695_757_560_1 - 0.315_391_57,
        x.clone() * 1.092_548_430_592_079_2 * z.clone(),
        (xx.clone() - yy.clone()) * 0.546_274_215_296_039_6,
        // l = 3
        y.clone() * 0.590_043_589_926_643_5 * (xx.clone() * 3.0 - yy.clone()),
        x.clone() * 2.890_611_442_640_554 * y.clone() * z.clone(),
        y.clone() * 0.457_045_799_464_465_8 * (zz.clone() * 5.0 - 1.0),
        z.clone() * 0.373_176_332_590_115_4 * (zz.clone() * 5.0 - 3.0),
        x.clone() * 0.457_045_799_464_465_8 * (zz.clone() * 5.0 - 1.0),
        z * 1.445_305_721_320_277 * (xx.clone() - yy.clone()),
        x * 0.590_043_589_926_643_5 * (xx - yy * 3.0),
    ];
    Tensor::cat(components, 1)
}
