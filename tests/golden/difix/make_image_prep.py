#!/usr/bin/env python3
"""Golden of Difix3D's training-image preparation (nv-tlabs/Difix3D src/dataset.py, PairedDataset):

    img_t = F.to_tensor(img)                  # [3, H, W] in [0, 1]
    img_t = F.resize(img_t, (576, 1024))      # torchvision.transforms.functional, on a tensor
    img_t = F.normalize(img_t, mean=[0.5], std=[0.5])

torchvision's `F.resize` of a tensor defaults to bilinear with `antialias=True` (since torchvision 0.17;
Difix3D's requirements.txt does not pin torchvision) and calls
`torch.nn.functional.interpolate(img, size, mode="bilinear", align_corners=False, antialias=True)`;
that call is what this script runs (torchvision itself is not needed; when it is installed, its
`F.resize` is checked to give the same values). It also checks that PIL's BILINEAR resize of the 8-bit
image (the same triangle filter, rounded to 8 bits) is within one level.

The input is a 23x13 RGB image whose pixel (x, y) channel c is
`(x * 37 + y * 91 + c * 53 + (x * y % 17) * 13) % 256` (the Rust test builds the same image).
Writes tests/fixtures/difix/image_prep.json: for each output size, the resized values in [0, 1]
(before the normalisation, which is `2 v - 1`), row-major, channel-interleaved.

    ~/.cache/difix-venv/bin/python tests/golden/difix/make_image_prep.py
"""

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[3]
OUT = REPO / "tests" / "fixtures" / "difix" / "image_prep.json"
WIDTH, HEIGHT = 23, 13
# (height, width): both shrunk, one axis grown and one shrunk, both grown, unchanged.
SIZES = [(8, 16), (20, 9), (17, 29), (13, 23)]


def image() -> np.ndarray:
    y, x, c = np.meshgrid(np.arange(HEIGHT), np.arange(WIDTH), np.arange(3), indexing="ij")
    return ((x * 37 + y * 91 + c * 53 + (x * y % 17) * 13) % 256).astype(np.uint8)


def main() -> None:
    pixels = image()
    # F.to_tensor: [3, H, W] float in [0, 1].
    tensor = torch.from_numpy(pixels).permute(2, 0, 1).float().div(255.0)
    cases = []
    for height, width in SIZES:
        resized = torch.nn.functional.interpolate(
            tensor[None], size=[height, width], mode="bilinear", align_corners=False, antialias=True
        )[0]
        try:
            import torchvision.transforms.functional as F

            same = F.resize(tensor, [height, width])
            assert torch.equal(same, resized), "torchvision's F.resize differs from interpolate"
        except ImportError:
            pass
        values = resized.permute(1, 2, 0).numpy()
        pil = np.asarray(Image.fromarray(pixels).resize((width, height), Image.BILINEAR)).astype(np.float64)
        worst = np.abs(pil - values.astype(np.float64) * 255.0).max()
        assert worst <= 1.0, f"PIL's bilinear differs by {worst} levels at {height}x{width}"
        cases.append(
            {
                "height": height,
                "width": width,
                "values": [float(v) for v in values.reshape(-1)],
            }
        )
        print(f"{height}x{width}: PIL's 8-bit bilinear within {worst:.3f} levels")
    OUT.write_text(
        json.dumps(
            {
                "what": "torch.nn.functional.interpolate(bilinear, align_corners=False, antialias=True) "
                "of the 23x13 test image in [0, 1] (tests/golden/difix/make_image_prep.py)",
                "torch": torch.__version__,
                "input": {"width": WIDTH, "height": HEIGHT},
                "cases": cases,
            }
        )
        + "\n"
    )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
