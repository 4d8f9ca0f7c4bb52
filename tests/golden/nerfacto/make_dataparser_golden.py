"""Golden for nerfacto's world frame (`nerfacto::trainer::Normalization`): the
`dataparser_transforms.json` nerfstudio 1.1.5's own dataparsers compute, with `ns-train nerfacto`'s
defaults (`orientation_method="up"`, `center_method="poses"`, `auto_scale_poses=True`).

Run (the venv of make_nerfacto_golden.py):

    ~/.cache/ns-venv/bin/python tests/golden/nerfacto/make_dataparser_golden.py

Two datasets:
- `colmap`: `assets/maupertuis` through `ColmapDataParser` (`colmap_path="colmap/sparse/0"`,
  downscale 8), whose default `assume_colmap_world_coordinate_convention=True` first turns COLMAP's
  world (y and z swapped, the new z negated) and composes that into the transform;
- `transforms`: `tests/fixtures/nerfstudio/train_parity/transforms.json` through
  `NerfstudioDataParser`, whose poses are in the turned world of its `applied_transform` (also
  composed into the transform).

Writes tests/fixtures/nerfacto/dataparser_golden.json: per dataset `transform` (3x4, from the data's
own world) and `scale`.
"""

import json
from pathlib import Path

from nerfstudio.data.dataparsers.colmap_dataparser import ColmapDataParserConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

ROOT = Path(__file__).resolve().parents[3]


def transform_of(parser):
    outputs = parser._generate_dataparser_outputs("train")
    return {
        "transform": outputs.dataparser_transform.tolist(),
        "scale": float(outputs.dataparser_scale),
    }


def main():
    colmap = ColmapDataParserConfig(
        data=ROOT / "assets/maupertuis",
        colmap_path=Path("colmap/sparse/0"),
        downscale_factor=8,
        load_3D_points=False,
    ).setup()
    transforms = NerfstudioDataParserConfig(
        data=ROOT / "tests/fixtures/nerfstudio/train_parity/transforms.json",
        downscale_factor=1,
        load_3D_points=False,
    ).setup()
    golden = {"colmap": transform_of(colmap), "transforms": transform_of(transforms)}
    out = ROOT / "tests/fixtures/nerfacto/dataparser_golden.json"
    out.write_text(json.dumps(golden, indent=2) + "\n")
    print(json.dumps(golden, indent=2))


if __name__ == "__main__":
    main()
