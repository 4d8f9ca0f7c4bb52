//! The quantisers the `.sog` writer needs: a 256-entry scalar codebook (1D k-means) and a vector
//! palette (k-means over SH coefficient vectors). Both are deterministic: the same input gives the
//! same bytes, on any number of threads. Also the smallest-three rotation form that compressed PLY
//! and SOG both store ([`smallest_three`]).

use rayon::prelude::*;

use crate::rng::Rng;

/// Lloyd iterations of the 1D codebook (each costs O(k log n), so many are cheap).
const ITERATIONS_1D: usize = 100;
/// Lloyd iterations of each palette k-means (bounded: each is a pass over the points).
const ITERATIONS_PALETTE: usize = 10;
/// Largest number of centroids one flat k-means fits; a larger palette is built as a tree (clusters
/// split again), so the work per point stays a few hundred distances however large the palette.
const SPLIT: usize = 256;
/// A flat k-means fits its centroids on at most this many points per centroid (a deterministic
/// sample), then assigns every point once.
const SAMPLE_PER_CENTROID: usize = 64;

/// A codebook of `k` values (ascending; repeated at the end when the data has fewer distinct
/// values) and, for every input value, the index of its nearest entry. Minimises the squared error
/// (1D k-means, Lloyd's algorithm on the sorted distinct values, started from quantiles). With at
/// most `k` distinct values the codebook holds them exactly. The values must be finite; `k` is 1..=256.
pub fn codebook_1d(values: &[f32], k: usize) -> (Vec<f32>, Vec<u8>) {
    let k = k.clamp(1, 256);
    if values.is_empty() {
        return (vec![0.0; k], Vec::new());
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    // Distinct values with their counts, and prefix sums for cluster means.
    let mut distinct: Vec<f32> = Vec::new();
    let mut counts: Vec<f64> = Vec::new();
    for &v in &sorted {
        if distinct.last() == Some(&v) {
            if let Some(c) = counts.last_mut() {
                *c += 1.0;
            }
        } else {
            distinct.push(v);
            counts.push(1.0);
        }
    }
    let mut centroids: Vec<f64> = if distinct.len() <= k {
        distinct.iter().map(|&v| f64::from(v)).collect()
    } else {
        // Start from the asymptotically optimal level density for squared error, proportional to the
        // cube root of the data's density (from a histogram), then refine with Lloyd's algorithm.
        const BINS: usize = 1024;
        let (lo, hi) = (f64::from(sorted[0]), f64::from(sorted[sorted.len() - 1]));
        let width = (hi - lo) / BINS as f64;
        let mut histogram = vec![0.0f64; BINS];
        for &v in &sorted {
            let b = ((f64::from(v) - lo) / width) as usize;
            histogram[b.min(BINS - 1)] += 1.0;
        }
        let density: Vec<f64> = histogram.iter().map(|c| c.cbrt()).collect();
        let total: f64 = density.iter().sum();
        let mut start: Vec<f64> = Vec::with_capacity(k);
        let (mut bin, mut below) = (0usize, 0.0f64);
        let mut at = 0usize;
        for i in 0..k {
            let target = (i as f64 + 0.5) / k as f64 * total;
            while bin + 1 < BINS && below + density[bin] < target {
                below += density[bin];
                bin += 1;
            }
            let within = if density[bin] > 0.0 {
                ((target - below) / density[bin]).clamp(0.0, 1.0)
            } else {
                0.5
            };
            let q = lo + (bin as f64 + within) * width;
            // The nearest distinct value at or above the previous start, leaving room for the rest.
            let mut j = distinct.partition_point(|&d| f64::from(d) < q).max(at);
            j = j.min(distinct.len() - (k - i));
            start.push(f64::from(distinct[j]));
            at = j + 1;
        }
        let mut weight = vec![0.0f64; distinct.len() + 1];
        let mut sum = vec![0.0f64; distinct.len() + 1];
        for (i, (&v, &c)) in distinct.iter().zip(&counts).enumerate() {
            weight[i + 1] = weight[i] + c;
            sum[i + 1] = sum[i] + c * f64::from(v);
        }
        let mut c = start;
        for _ in 0..ITERATIONS_1D {
            let mut next = c.clone();
            let mut lo = 0usize;
            for i in 0..k {
                let hi = if i + 1 == k {
                    distinct.len()
                } else {
                    let boundary = 0.5 * (c[i] + c[i + 1]);
                    distinct.partition_point(|&d| f64::from(d) < boundary)
                };
                let w = weight[hi] - weight[lo];
                if w > 0.0 {
                    next[i] = (sum[hi] - sum[lo]) / w;
                }
                lo = hi.max(lo);
            }
            let moved = next.iter().zip(&c).any(|(a, b)| a != b);
            c = next;
            if !moved {
                break;
            }
        }
        c
    };
    centroids.sort_by(f64::total_cmp);
    let mut book: Vec<f32> = centroids.iter().map(|&c| c as f32).collect();
    let last = *book.last().unwrap_or(&0.0);
    book.resize(k, last);
    let labels = values.iter().map(|&v| nearest_1d(&book, v)).collect();
    (book, labels)
}

/// Index of the entry of the ascending `book` nearest to `v`.
fn nearest_1d(book: &[f32], v: f32) -> u8 {
    let i = book.partition_point(|&b| b < v);
    let best = if i == 0 {
        0
    } else if i >= book.len() {
        book.len() - 1
    } else if (v - book[i - 1]) <= (book[i] - v) {
        i - 1
    } else {
        i
    };
    best.min(255) as u8
}

/// A palette of at most `k` vectors of `dim` values for the `n = data.len() / dim` points in `data`
/// (row-major), and each point's palette index. k-means (Lloyd's algorithm, a bounded number of
/// iterations, seeded from `seed`); palettes larger than [`SPLIT`] are built as a tree: the points
/// are clustered coarsely, each cluster gets a share of the palette in proportion to its size and
/// is clustered again. With at most `k` points every point is its own entry.
pub fn palette(data: &[f32], dim: usize, k: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let n = data.len().checked_div(dim).unwrap_or(0);
    let mut labels = vec![0u32; n];
    let mut centroids = Vec::new();
    if n == 0 || k == 0 {
        return (centroids, labels);
    }
    let members: Vec<u32> = (0..n as u32).collect();
    let mut rng = Rng(seed);
    split(data, dim, &members, k, &mut rng, &mut centroids, &mut labels);
    (centroids, labels)
}

fn split(
    data: &[f32],
    dim: usize,
    members: &[u32],
    budget: usize,
    rng: &mut Rng,
    centroids: &mut Vec<f32>,
    labels: &mut [u32],
) {
    let row = |i: u32| &data[i as usize * dim..(i as usize + 1) * dim];
    if members.len() <= budget {
        for &i in members {
            labels[i as usize] = (centroids.len() / dim) as u32;
            centroids.extend_from_slice(row(i));
        }
        return;
    }
    let parts = budget.min(SPLIT);
    let (local_centroids, local_labels) = kmeans(data, dim, members, parts, rng);
    let groups = local_centroids.len() / dim;
    if parts == budget {
        let base = (centroids.len() / dim) as u32;
        for (&i, &l) in members.iter().zip(&local_labels) {
            labels[i as usize] = base + l;
        }
        centroids.extend_from_slice(&local_centroids);
        return;
    }
    // Share the budget among the coarse clusters in proportion to their sizes (at least one each).
    let mut by_group: Vec<Vec<u32>> = vec![Vec::new(); groups];
    for (&i, &l) in members.iter().zip(&local_labels) {
        by_group[l as usize].push(i);
    }
    by_group.retain(|g| !g.is_empty());
    let total = members.len() as f64;
    let exact: Vec<f64> = by_group
        .iter()
        .map(|g| budget as f64 * g.len() as f64 / total)
        .collect();
    let mut shares: Vec<usize> = exact.iter().map(|&e| (e.floor() as usize).max(1)).collect();
    let mut assigned: usize = shares.iter().sum();
    while assigned > budget {
        // Take from the largest share (all are at least 1, and there are at most `budget` groups).
        let (j, _) = shares
            .iter()
            .enumerate()
            .max_by_key(|&(j, &s)| (s, std::cmp::Reverse(j)))
            .unwrap_or((0, &1));
        shares[j] -= 1;
        assigned -= 1;
    }
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|&a, &b| {
        let ra = exact[a] - shares[a] as f64;
        let rb = exact[b] - shares[b] as f64;
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    for &j in order.iter().cycle().take(budget - assigned) {
        shares[j] += 1;
    }
    for (group, share) in by_group.iter().zip(shares) {
        split(data, dim, group, share, rng, centroids, labels);
    }
}

/// Flat k-means of the points `members` into at most `k` clusters (`members.len() > k`): the
/// centroids (empty clusters dropped) and each member's cluster.
fn kmeans(data: &[f32], dim: usize, members: &[u32], k: usize, rng: &mut Rng) -> (Vec<f32>, Vec<u32>) {
    let row = |i: u32| &data[i as usize * dim..(i as usize + 1) * dim];
    // Fit on a deterministic sample when there are many points per centroid.
    let sample: Vec<u32> = if members.len() > SAMPLE_PER_CENTROID * k {
        let order = rng.permutation(members.len());
        let mut picked: Vec<u32> = order[..SAMPLE_PER_CENTROID * k].iter().map(|&j| members[j]).collect();
        picked.sort_unstable();
        picked
    } else {
        members.to_vec()
    };
    // Start from k distinct sample points.
    let mut centroids: Vec<f32> = Vec::with_capacity(k * dim);
    for j in rng.permutation(sample.len()).into_iter().take(k) {
        centroids.extend_from_slice(row(sample[j]));
    }
    let mut assigned = vec![u32::MAX; sample.len()];
    for _ in 0..ITERATIONS_PALETTE {
        let next = assign(data, dim, &sample, &centroids);
        let changed = next != assigned;
        assigned = next;
        if !changed {
            break;
        }
        let mut sums = vec![0.0f64; k * dim];
        let mut counts = vec![0usize; k];
        for (&i, &l) in sample.iter().zip(&assigned) {
            counts[l as usize] += 1;
            for (s, &v) in sums[l as usize * dim..(l as usize + 1) * dim].iter_mut().zip(row(i)) {
                *s += f64::from(v);
            }
        }
        for c in 0..k {
            let target = &mut centroids[c * dim..(c + 1) * dim];
            if counts[c] == 0 {
                // Re-seed an empty cluster at a random sample point.
                target.copy_from_slice(row(sample[rng.below(sample.len())]));
            } else {
                for (t, s) in target.iter_mut().zip(&sums[c * dim..(c + 1) * dim]) {
                    *t = (s / counts[c] as f64) as f32;
                }
            }
        }
    }
    let labels = assign(data, dim, members, &centroids);
    // Drop clusters no member uses, renumbering the rest.
    let mut used = vec![u32::MAX; k];
    let mut kept = Vec::with_capacity(centroids.len());
    let mut next_id = 0u32;
    let labels = labels
        .into_iter()
        .map(|l| {
            let slot = &mut used[l as usize];
            if *slot == u32::MAX {
                *slot = next_id;
                next_id += 1;
                kept.extend_from_slice(&centroids[l as usize * dim..(l as usize + 1) * dim]);
            }
            *slot
        })
        .collect();
    (kept, labels)
}

/// The nearest centroid (squared distance; ties to the lower index) of each point in `members`.
fn assign(data: &[f32], dim: usize, members: &[u32], centroids: &[f32]) -> Vec<u32> {
    members
        .par_iter()
        .map(|&i| {
            let p = &data[i as usize * dim..(i as usize + 1) * dim];
            let mut best = (f32::INFINITY, 0u32);
            for (c, centroid) in centroids.chunks_exact(dim).enumerate() {
                let mut d = 0.0f32;
                for (a, b) in p.iter().zip(centroid) {
                    let t = a - b;
                    d += t * t;
                }
                if d < best.0 {
                    best = (d, c as u32);
                }
            }
            best.1
        })
        .collect()
}

/// A rotation (components in storage order) normalised, with the component of largest magnitude
/// made positive, and that component's index: what the smallest-three packings (compressed PLY,
/// SOG) store of it. A zero quaternion is the identity (1, 0, 0, 0).
pub(super) fn smallest_three(q: [f64; 4]) -> ([f64; 4], usize) {
    let len = q.iter().map(|c| c * c).sum::<f64>().sqrt();
    let q = if len > 0.0 {
        q.map(|c| c / len)
    } else {
        [1.0, 0.0, 0.0, 0.0]
    };
    let largest = (1..4).fold(0, |best, i| if q[i].abs() > q[best].abs() { i } else { best });
    (if q[largest] < 0.0 { q.map(|c| -c) } else { q }, largest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codebook_keeps_few_distinct_values_exactly() {
        let values = [0.5f32, -1.0, 0.5, 3.0, -1.0];
        let (book, labels) = codebook_1d(&values, 256);
        assert_eq!(book.len(), 256);
        for (v, l) in values.iter().zip(&labels) {
            assert_eq!(book[*l as usize], *v);
        }
    }

    #[test]
    fn codebook_error_is_small_and_sorted() {
        let mut rng = Rng(3);
        let values: Vec<f32> = (0..20_000).map(|_| rng.normal() * 2.0 - 4.0).collect();
        let (book, labels) = codebook_1d(&values, 256);
        assert!(book.windows(2).all(|w| w[0] <= w[1]));
        let worst = values
            .iter()
            .zip(&labels)
            .map(|(v, &l)| (v - book[l as usize]).abs())
            .fold(0.0f32, f32::max);
        // 256 levels over roughly ±4 sigma of 2: spacing ~0.05 in the bulk; the few points of the far
        // tails share wide cells (k-means spends levels where the points are).
        assert!(worst < 1.0, "worst error {worst}");
        let mean_sq: f32 = values
            .iter()
            .zip(&labels)
            .map(|(v, &l)| (v - book[l as usize]).powi(2))
            .sum::<f32>()
            / values.len() as f32;
        eprintln!("worst error {worst}, mean squared error {mean_sq}");
        // Better than a uniform grid of 256 levels over the range (about 3.3e-4 here).
        assert!(mean_sq < 2.5e-4, "mean squared error {mean_sq}");
        // Deterministic.
        assert_eq!(codebook_1d(&values, 256), (book, labels));
    }

    #[test]
    fn palette_is_deterministic_and_close() {
        let mut rng = Rng(5);
        let dim = 9;
        let n = 3000;
        let data: Vec<f32> = (0..n * dim).map(|_| rng.normal() * 0.1).collect();
        for k in [64, 1000] {
            let (centroids, labels) = palette(&data, dim, k, 7);
            let entries = centroids.len() / dim;
            assert!(entries <= k && entries > k / 2, "{entries} entries for k = {k}");
            assert!(labels.iter().all(|&l| (l as usize) < entries));
            let err: f32 = (0..n)
                .map(|i| {
                    let l = labels[i] as usize;
                    (0..dim)
                        .map(|d| (data[i * dim + d] - centroids[l * dim + d]).powi(2))
                        .sum::<f32>()
                })
                .sum::<f32>()
                / n as f32;
            // The data's own variance per point is 9 * 0.01.
            assert!(err < 0.09, "k = {k}: mean squared error {err}");
            assert_eq!(palette(&data, dim, k, 7), (centroids, labels));
        }
        // Fewer points than entries: every point is its own entry.
        let (centroids, labels) = palette(&data[..10 * dim], dim, 64, 7);
        assert_eq!(centroids, data[..10 * dim].to_vec());
        assert_eq!(labels, (0..10).collect::<Vec<u32>>());
    }
}
