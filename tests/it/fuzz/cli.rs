//! Subcommand argument fuzz, out of process: every subcommand run on tiny valid inputs with one
//! numeric flag set to nonsense (NaN, ±inf, 0, negative, huge) or one input swapped for a file of
//! another kind. Each run must end within its time limit, exit non-zero without a panic, and leave
//! `--out` exactly as it was (absent stays absent; an existing folder keeps its files untouched).
//!
//! The default slice is a fixed table of cases; `DIFIX3D_FUZZ_CASES=N` adds N/100 random
//! combinations of up to three nonsense flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::gen::{case_count, long_slice, seed, Rng};

/// Per run. A refusal takes well under a second; the limit is for a loaded debug build.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Small valid inputs for every subcommand.
struct Inputs {
    _dir: tempfile::TempDir,
    root: PathBuf,
    scene: PathBuf,
    data: PathBuf,
    path: PathBuf,
    pairs: PathBuf,
    photo: PathBuf,
    model: PathBuf,
    vgg: PathBuf,
    vgg_lin: PathBuf,
    /// One 16x12 camera looking at the origin from z = -3 (OpenCV axes).
    camera: PathBuf,
    /// nerfstudio's dataparser_transforms.json with the identity transform.
    transforms: PathBuf,
}

fn inputs() -> Inputs {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let scene = root.join("scene.ply");
    let vertex = crate::bad_input::good_vertex();
    std::fs::write(
        &scene,
        crate::bad_input::ply_with(crate::bad_input::GOOD_HEADER, &[vertex.clone(), vertex].concat()),
    )
    .unwrap();
    // A dataset of three 16x12 photos: the COLMAP seed of the reader fuzz, as text.
    let data = root.join("data");
    let sparse = super::readers::dataset_dir(&data);
    for (name, text) in super::readers::colmap_text() {
        std::fs::write(sparse.join(name), text).unwrap();
    }
    let camera = root.join("camera.json");
    std::fs::write(
        &camera,
        serde_json::json!({"name": "cam.png", "width": 16, "height": 12, "fx": 14.0, "fy": 13.0, "cx": 8.0, "cy": 6.0,
            "world_from_camera": [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -3.0], [0.0, 0.0, 0.0, 1.0]]})
        .to_string(),
    )
    .unwrap();
    let path = root.join("path.json");
    std::fs::write(
        &path,
        serde_json::json!({"version": 1, "duration_s": 0.2, "keyframes": [
            {"position": [0.0, 0.0, -3.0], "rotation": [0.0, 0.0, 0.0, 1.0], "fov_y_deg": 50.0},
            {"position": [0.2, 0.0, -3.0], "rotation": [0.0, 0.0, 0.0, 1.0], "fov_y_deg": 50.0}]})
        .to_string(),
    )
    .unwrap();
    let photo = data.join("images/a.png");
    let pairs = root.join("pairs.json");
    std::fs::write(
        &pairs,
        serde_json::json!({"train": {"a": {"image": "data/images/a.png", "target_image": "data/images/b.png"}}})
            .to_string(),
    )
    .unwrap();
    let transforms = root.join("dataparser_transforms.json");
    std::fs::write(
        &transforms,
        serde_json::json!({"transform": [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]], "scale": 1.0})
            .to_string(),
    )
    .unwrap();
    let fixtures = crate::repo().join("tests/fixtures");
    Inputs {
        transforms,
        _dir: dir,
        scene,
        data,
        path,
        pairs,
        photo,
        model: fixtures.join("difix/tiny"),
        vgg: fixtures.join("lpips/vgg_tiny_backbone.pth"),
        vgg_lin: fixtures.join("lpips/vgg_tiny_lin.pth"),
        camera,
        root,
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn nerfacto_fixture(name: &str) -> PathBuf {
    crate::repo().join("tests/fixtures/nerfacto").join(name)
}

/// The subcommand a table entry runs (`train-nerfacto` is `train --method nerfacto`,
/// `refine-nerfacto` is `refine --method nerfacto`).
fn command(entry: &str) -> &str {
    match entry {
        "train-nerfacto" => "train",
        "refine-nerfacto" => "refine",
        other => other,
    }
}

/// The valid arguments of `subcommand` (flag, value), `--out` last; `None` for switches.
fn base(subcommand: &str, i: &Inputs, out: &Path) -> Vec<(String, Option<String>)> {
    let pairs: Vec<(&str, String)> = match subcommand {
        "render" => vec![
            ("--scene", s(&i.scene)),
            ("--width", "32".into()),
            ("--height", "24".into()),
        ],
        "record" => vec![
            ("--scene", s(&i.scene)),
            ("--path", s(&i.path)),
            ("--size", "32x24".into()),
            ("--fps", "10".into()),
        ],
        "fix" => vec![
            ("--model", s(&i.model)),
            ("--input", s(&i.photo)),
            ("--backend", "cpu".into()),
            ("--size", "16x16".into()),
        ],
        "train" => vec![
            ("--data", s(&i.data)),
            ("--backend", "cpu".into()),
            ("--steps", "1".into()),
        ],
        "refine" => vec![
            ("--scene", s(&i.scene)),
            ("--data", s(&i.data)),
            ("--model", s(&i.model)),
            ("--backend", "cpu".into()),
            ("--steps", "1".into()),
        ],
        "train-difix" => vec![
            ("--data", s(&i.pairs)),
            ("--model", s(&i.model)),
            ("--lpips-backbone", s(&i.vgg)),
            ("--lpips-lin", s(&i.vgg_lin)),
            ("--backend", "cpu".into()),
            ("--steps", "1".into()),
            ("--size", "16x16".into()),
        ],
        "eval" => vec![("--scene", s(&i.scene)), ("--data", s(&i.data))],
        "train-nerfacto" => vec![
            ("--method", "nerfacto".into()),
            ("--data", s(&i.data)),
            ("--steps", "1".into()),
            ("--rays-per-batch", "16".into()),
            ("--nerfacto-config", s(&nerfacto_fixture("config.json"))),
        ],
        // Every photo in both splits: three training views for the checkpoint's three appearance
        // codes; one step, at which a round runs.
        "refine-nerfacto" => vec![
            ("--method", "nerfacto".into()),
            ("--checkpoint", s(&nerfacto_fixture("step-000000300.ckpt"))),
            ("--nerfacto-config", s(&nerfacto_fixture("config.json"))),
            ("--dataparser-transforms", s(&i.transforms)),
            ("--data", s(&i.data)),
            ("--difix3d-test-every", "0".into()),
            ("--model", s(&i.model)),
            ("--steps", "1".into()),
            ("--every", "1".into()),
            ("--patch-size", "4".into()),
            ("--rays-per-batch", "32".into()),
        ],
        "nerfacto-render" => vec![
            ("--checkpoint", s(&nerfacto_fixture("step-000000300.ckpt"))),
            ("--config", s(&nerfacto_fixture("config.json"))),
            ("--camera-json", s(&i.camera)),
            ("--width", "8".into()),
            ("--height", "6".into()),
        ],
        "nerfacto-export" => vec![
            ("--checkpoint", s(&nerfacto_fixture("step-000000300.ckpt"))),
            ("--config", s(&nerfacto_fixture("config.json"))),
            ("--camera-json", s(&i.camera)),
            ("--width", "8".into()),
            ("--height", "6".into()),
            ("--min-accumulation", "0".into()),
            ("--no-crop", String::new()),
            ("--keep-outliers", String::new()),
        ],
        other => panic!("no base arguments for {other}"),
    };
    let mut args: Vec<(String, Option<String>)> = pairs
        .into_iter()
        .map(|(f, v)| (f.to_string(), (!v.is_empty()).then_some(v)))
        .collect();
    let out = match subcommand {
        "record" => out.join("frames"),
        "nerfacto-export" => out.join("splats.ply"),
        _ => out.to_path_buf(),
    };
    args.push(("--out".into(), Some(s(&out))));
    args
}

/// Nonsense for each subcommand's flags: values of the right syntax outside their domain, and
/// inputs of the wrong kind.
fn nonsense(subcommand: &str, i: &Inputs) -> Vec<(&'static str, Vec<String>)> {
    let v = |items: &[&str]| items.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let floats = v(&["nan", "inf", "-inf", "0", "-1", "1e39"]);
    let counts = v(&["0", "-1", "nan", "1.5", "99999999999999999999999"]);
    let sides = v(&["0", "-1", "100000", "nan"]);
    let colours = v(&["nan,0,0", "inf,0,0", "0,0", "-1,0,0", "2,0,0"]);
    let sizes = v(&["0x0", "100000x100000", "nanx4", "-1x5", "64x0", "64"]);
    match subcommand {
        "render" => vec![
            ("--factor", counts.clone()),
            ("--width", sides.clone()),
            ("--height", sides),
            ("--sh-degree", v(&["4", "-1", "nan"])),
            ("--background", colours),
            ("--scene", vec![s(&i.pairs), s(&i.photo), s(&i.data)]),
            ("--camera-json", vec![s(&i.path), s(&i.scene)]),
        ],
        "record" => vec![
            ("--fps", floats.clone()),
            ("--size", sizes),
            ("--sh-degree", v(&["4"])),
            ("--background", v(&["nan,0,0"])),
            ("--path", vec![s(&i.pairs), s(&i.scene)]),
            ("--scene", vec![s(&i.path)]),
        ],
        "fix" => vec![
            ("--timestep", v(&["-1", "nan", "100000"])),
            ("--size", v(&["0x0", "nanx8", "100000x100000", "7x7"])),
            ("--precision", v(&["fp64"])),
            ("--model", vec![s(&i.data), s(&i.scene)]),
            ("--input", vec![s(&i.scene)]),
        ],
        "train" => vec![
            ("--factor", counts.clone()),
            ("--steps", v(&["-1", "nan", "18446744073709551615"])),
            ("--checkpoint-every", counts.clone()),
            ("--sh-degree", v(&["4", "-1"])),
            ("--seed", v(&["-1", "nan"])),
            ("--eval-steps", v(&["-5", "nan"])),
            ("--grow-grad2d", v(&["-1", "nan", "inf"])),
            ("--data", vec![s(&i.model), s(&i.root.join("absent"))]),
            ("--resume", vec![s(&i.scene), s(&i.pairs)]),
        ],
        "refine" => vec![
            ("--distance", floats),
            ("--every", counts.clone()),
            ("--path-samples", counts.clone()),
            ("--steps", v(&["-1", "18446744073709551615"])),
            ("--factor", v(&["0"])),
            ("--targets", vec![s(&i.pairs), s(&i.scene)]),
            ("--model", vec![s(&i.data)]),
        ],
        "train-difix" => vec![
            ("--steps", v(&["-1", "18446744073709551615"])),
            ("--size", v(&["0x0", "100000x100000", "nanx16", "16", "12x16"])),
            ("--resolution", v(&["0", "-1", "100000", "nan"])),
            ("--image-prep", v(&["square", ""])),
            ("--lr", v(&["nan", "inf", "0", "-1"])),
            ("--lambda-l2", v(&["nan", "-1", "inf"])),
            ("--lambda-lpips", v(&["nan", "-1"])),
            ("--lambda-gram", v(&["-1", "inf"])),
            ("--gram-crop", v(&["8", "0", "100000"])),
            ("--grad-accumulation", v(&["0", "-1"])),
            ("--devices", v(&["-1", "nan"])),
            ("--lpips-backbone", vec![s(&i.scene)]),
            ("--data", vec![s(&i.path)]),
        ],
        "eval" => vec![
            ("--factor", v(&["0", "-1"])),
            ("--background", v(&["nan,0,0", "2,0,0"])),
            ("--lpips-backbone", vec![s(&i.scene)]),
            ("--data", vec![s(&i.model)]),
        ],
        "train-nerfacto" => vec![
            ("--factor", v(&["0", "-1"])),
            ("--steps", v(&["-1", "nan", "18446744073709551615"])),
            ("--rays-per-batch", v(&["0", "-1", "nan", "1.5", "2000000"])),
            ("--eval-steps", v(&["-5", "nan", "0"])),
            ("--method", v(&["nerf", ""])),
            ("--backend", v(&["metal", ""])),
            ("--sh-degree", v(&["2"])),
            ("--resume", vec![s(&i.scene)]),
            ("--nerfacto-config", vec![s(&i.pairs), s(&i.scene), s(&i.path)]),
            ("--camera-optimizer", v(&["so3xr3", "on", ""])),
            ("--data", vec![s(&i.model), s(&i.root.join("absent"))]),
        ],
        "refine-nerfacto" => vec![
            ("--steps", v(&["-1", "18446744073709551615"])),
            ("--every", v(&["0", "-1", "nan"])),
            ("--distance", v(&["nan", "0", "-1", "inf"])),
            ("--novel-probability", v(&["nan", "-0.1", "1.5"])),
            ("--rays-per-batch", v(&["0", "-1", "nan", "2000000", "8"])),
            ("--patch-size", v(&["0", "-1", "nan", "13"])),
            ("--backend", v(&["metal", ""])),
            ("--scene", vec![s(&i.scene)]),
            ("--targets", v(&["eval"])),
            (
                "--checkpoint",
                vec![
                    s(&i.scene),
                    s(&i.pairs),
                    s(&nerfacto_fixture("splatfacto.ckpt")),
                    s(&nerfacto_fixture("nerfacto_tcnn.ckpt")),
                ],
            ),
            ("--nerfacto-config", vec![s(&i.pairs), s(&i.scene)]),
            ("--camera-optimizer", v(&["SE4", "Off"])),
            ("--dataparser-transforms", vec![s(&i.pairs), s(&i.scene), s(&i.camera)]),
            ("--data", vec![s(&i.model), s(&i.root.join("absent"))]),
            ("--model", vec![s(&i.data)]),
        ],
        "nerfacto-render" => vec![
            ("--width", v(&["0", "-1", "100000", "nan"])),
            ("--rays-per-chunk", v(&["0", "-1", "nan"])),
            (
                "--checkpoint",
                vec![
                    s(&i.scene),
                    s(&i.pairs),
                    s(&i.data),
                    s(&nerfacto_fixture("splatfacto.ckpt")),
                    s(&nerfacto_fixture("nerfacto_tcnn.ckpt")),
                    s(&nerfacto_fixture("goldens.safetensors")),
                ],
            ),
            ("--config", vec![s(&i.pairs), s(&i.scene)]),
            ("--camera-json", vec![s(&i.path), s(&i.scene)]),
            ("--dataparser-transforms", vec![s(&i.pairs), s(&i.scene), s(&i.camera)]),
        ],
        "nerfacto-export" => vec![
            ("--width", v(&["0", "-1", "100000", "nan"])),
            ("--min-accumulation", v(&["nan", "-0.1", "1.5", "inf"])),
            ("--max-points", v(&["0", "-1", "nan"])),
            ("--rays-per-chunk", v(&["0", "-1", "nan"])),
            (
                "--checkpoint",
                vec![
                    s(&i.scene),
                    s(&i.data),
                    s(&nerfacto_fixture("splatfacto.ckpt")),
                    s(&nerfacto_fixture("nerfacto_tcnn.ckpt")),
                ],
            ),
            ("--config", vec![s(&i.pairs), s(&i.scene)]),
            ("--camera-json", vec![s(&i.path), s(&i.scene)]),
            ("--dataparser-transforms", vec![s(&i.pairs), s(&i.scene), s(&i.camera)]),
        ],
        other => panic!("no nonsense for {other}"),
    }
}

/// Every file under `dir` with its contents, or `None` when `dir` does not exist.
fn snapshot(dir: &Path) -> Option<BTreeMap<PathBuf, Vec<u8>>> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.insert(path.strip_prefix(root).unwrap().to_path_buf(), b"<dir>".to_vec());
                walk(&path, root, out);
            } else {
                out.insert(
                    path.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    dir.is_dir().then(|| {
        let mut out = BTreeMap::new();
        walk(dir, dir, &mut out);
        out
    })
}

/// Runs the binary with a limit; (exit code or `None` when killed, stderr).
fn run(args: &[String]) -> (Option<i32>, String) {
    let err = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_difix3d"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err.reopen().unwrap())
        .spawn()
        .expect("run difix3d");
    let start = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status.code().unwrap_or(-1));
        }
        if start.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (code, std::fs::read_to_string(err.path()).unwrap_or_default())
}

/// One case: `changes` applied over the base arguments, into an absent `--out` and into an
/// existing one holding a file; both runs must be refused cleanly, leaving `--out` as it was.
fn check(subcommand: &str, i: &Inputs, changes: &[(&str, String)], failures: &mut Vec<String>) {
    for existing in [false, true] {
        let out_dir = tempfile::tempdir_in(&i.root).unwrap();
        let out = out_dir.path().join("out");
        if existing {
            std::fs::create_dir_all(&out).unwrap();
            std::fs::write(out.join("keep.txt"), b"from an earlier run").unwrap();
        }
        let mut args = base(subcommand, i, &out);
        for (flag, value) in changes {
            match args.iter_mut().find(|(f, _)| f == flag) {
                Some(slot) => slot.1 = Some(value.clone()),
                None => args.insert(0, (flag.to_string(), Some(value.clone()))),
            }
        }
        let mut argv = vec![command(subcommand).to_string()];
        for (flag, value) in args {
            argv.push(flag);
            argv.extend(value);
        }
        let before = snapshot(&out);
        let start = Instant::now();
        let (code, stderr) = run(&argv);
        let took = start.elapsed();
        let after = snapshot(&out);
        let what = format!("{argv:?} (--out {})", if existing { "existing" } else { "absent" });
        let last_line = stderr.lines().last().unwrap_or("").to_string();
        match code {
            None => failures.push(format!("{what}: no exit within {RUN_LIMIT:?} (a hang)")),
            Some(0) => failures.push(format!("{what}: exit 0 on nonsense")),
            Some(_) if stderr.contains("panicked") => failures.push(format!("{what}: panicked: {stderr}")),
            Some(_) if before != after => failures.push(format!(
                "{what}: --out changed ({} entries before, {} after); stderr: {last_line}",
                before.as_ref().map_or(0, |b| b.len()),
                after.as_ref().map_or(0, |a| a.len())
            )),
            Some(_) => {}
        }
        if took > Duration::from_secs(20) {
            eprintln!("slow refusal ({took:?}): {what}");
        }
    }
}

fn fuzz_subcommand(subcommand: &str) {
    let i = inputs();
    // The control: the base arguments alone must work, or every refusal below proves nothing.
    let control_dir = tempfile::tempdir_in(&i.root).unwrap();
    let mut argv = vec![command(subcommand).to_string()];
    for (flag, value) in base(subcommand, &i, &control_dir.path().join("out")) {
        argv.push(flag);
        argv.extend(value);
    }
    let start = Instant::now();
    let (code, stderr) = run(&argv);
    assert_eq!(code, Some(0), "the control run {argv:?} must succeed; stderr: {stderr}");
    eprintln!("fuzz {subcommand}: control run in {:?}", start.elapsed());
    let mut failures = Vec::new();
    let table = nonsense(subcommand, &i);
    let mut cases = 0;
    for (flag, values) in &table {
        for value in values {
            check(subcommand, &i, &[(flag, value.clone())], &mut failures);
            cases += 1;
        }
    }
    // The long slice: random combinations of up to three nonsense flags.
    if long_slice() {
        let mut rng = Rng::new(seed(subcommand));
        for _ in 0..case_count(0) / 100 {
            let changes: Vec<(&str, String)> = (0..1 + rng.below(3))
                .map(|_| {
                    let (flag, values) = rng.pick(&table);
                    (*flag, rng.pick(values).clone())
                })
                .collect();
            check(subcommand, &i, &changes, &mut failures);
            cases += 1;
        }
    }
    eprintln!("fuzz {subcommand}: {cases} cases, each with --out absent and existing");
    assert!(
        failures.is_empty(),
        "{subcommand}: {} of {} runs failed:\n{}",
        failures.len(),
        2 * cases,
        failures.join("\n")
    );
}

#[test]
fn fuzz_render_arguments() {
    fuzz_subcommand("render");
}

#[test]
fn fuzz_record_arguments() {
    fuzz_subcommand("record");
}

#[test]
fn fuzz_fix_arguments() {
    fuzz_subcommand("fix");
}

#[test]
fn fuzz_train_arguments() {
    fuzz_subcommand("train");
}

#[test]
fn fuzz_refine_arguments() {
    fuzz_subcommand("refine");
}

#[test]
fn fuzz_train_difix_arguments() {
    fuzz_subcommand("train-difix");
}

#[test]
fn fuzz_eval_arguments() {
    fuzz_subcommand("eval");
}

#[test]
fn fuzz_train_nerfacto_arguments() {
    fuzz_subcommand("train-nerfacto");
}

#[test]
fn fuzz_refine_nerfacto_arguments() {
    fuzz_subcommand("refine-nerfacto");
}

#[test]
fn fuzz_nerfacto_render_arguments() {
    fuzz_subcommand("nerfacto-render");
}

#[test]
fn fuzz_nerfacto_export_arguments() {
    fuzz_subcommand("nerfacto-export");
}
