//! The novel-camera schedule of the Difix3D progressive update (`CameraPoseInterpolator.shift_poses`
//! in the reference's `examples/utils.py`): each round moves, for every target pose, the nearest
//! current novel pose a fixed distance toward it, so the pseudo views creep from the training cameras
//! to the targets over the rounds. Poses are world_from_camera (camera-to-world), as in gsplat.

use glam::{Affine3A, Mat3, Quat, Vec3};

use crate::data::camera::pose_distance;

/// Index of the pose in `candidates` nearest to `target` (the first one on ties, like `np.argmin`).
pub fn nearest(candidates: &[Affine3A], target: &Affine3A) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, c) in candidates.iter().enumerate() {
        let d = pose_distance(c, target);
        if best.is_none_or(|(_, b)| d < b) {
            best = Some((i, d));
        }
    }
    best.map(|(i, _)| i)
}

/// One round of the schedule: for each target, its nearest pose in `current` moved `distance` toward
/// it (translation along the straight line, rotation slerped by `min(distance / gap, 1)`), or the
/// target itself once the two are within `distance` (translation + rotation angle), or when the step
/// would land within `distance` of it. Exactly the reference's rules, including that last jump.
pub fn shift_poses(current: &[Affine3A], targets: &[Affine3A], distance: f32) -> Vec<Affine3A> {
    targets
        .iter()
        .map(|target| {
            let Some(i) = nearest(current, target) else {
                return *target;
            };
            let from = &current[i];
            if pose_distance(from, target) <= distance {
                return *target;
            }
            let (t1, t2) = (Vec3::from(from.translation), Vec3::from(target.translation));
            let gap = t2 - t1;
            let norm = gap.length();
            let mut translation = if norm > 1e-6 { t1 + gap / norm * distance } else { t2 };
            if (translation - t1).dot(gap) <= 0.0 || translation.distance(t2) <= distance {
                translation = t2;
            }
            let (q1, q2) = (rotation_of(from), rotation_of(target));
            let rotation = if norm > 1e-6 {
                q1.slerp(q2, (distance / norm).min(1.0))
            } else {
                q2
            };
            Affine3A::from_rotation_translation(rotation.normalize(), translation)
        })
        .collect()
}

fn rotation_of(pose: &Affine3A) -> Quat {
    Quat::from_mat3(&Mat3::from(pose.matrix3)).normalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pose(yaw_deg: f32, t: [f32; 3]) -> Affine3A {
        Affine3A::from_rotation_translation(Quat::from_rotation_y(yaw_deg.to_radians()), Vec3::from(t))
    }

    fn close(a: &Affine3A, b: &Affine3A) -> bool {
        pose_distance(a, b) < 1e-4
    }

    #[test]
    fn moves_the_nearest_pose_half_a_unit_toward_each_target() {
        // From the origin toward (2, 0, 0) turned 90 degrees: 0.5 along x, a quarter of the turn.
        let current = [pose(0.0, [0.0; 3]), pose(0.0, [10.0, 0.0, 0.0])];
        let target = pose(90.0, [2.0, 0.0, 0.0]);
        let shifted = shift_poses(&current, &[target], 0.5);
        assert!(close(&shifted[0], &pose(22.5, [0.5, 0.0, 0.0])));
    }

    #[test]
    fn jumps_to_the_target_when_close_or_when_the_step_lands_near_it() {
        let start = pose(0.0, [0.0; 3]);
        // Within 0.5 (0.3 translation + 0.1 rad): the target itself.
        let near = pose(0.1f32.to_degrees(), [0.3, 0.0, 0.0]);
        assert!(close(&shift_poses(&[start], &[near], 0.5)[0], &near));
        // 0.8 away: a 0.5 step would leave 0.3 <= 0.5, so the translation jumps to the target while
        // the rotation is slerped by 0.5 / 0.8.
        let target = pose(40.0, [0.8, 0.0, 0.0]);
        let shifted = shift_poses(&[start], &[target], 0.5)[0];
        assert!(close(&shifted, &pose(25.0, [0.8, 0.0, 0.0])), "{shifted:?}");
    }

    #[test]
    fn the_nearest_pose_counts_rotation_as_well_as_translation() {
        // 1.0 away but facing the same way vs 0.6 away but turned 90 degrees (0.6 + 1.571).
        let current = [pose(0.0, [1.0, 0.0, 0.0]), pose(90.0, [0.0, 0.6, 0.0])];
        assert_eq!(nearest(&current, &pose(0.0, [0.0; 3])), Some(0));
        // Rounds converge: repeated shifts reach the target.
        let target = pose(30.0, [3.0, 1.0, 0.0]);
        let mut poses = vec![pose(0.0, [0.0; 3])];
        for _ in 0..10 {
            poses = shift_poses(&poses, &[target], 0.5);
        }
        assert!(close(&poses[0], &target));
    }
}
