#!/usr/bin/env bash
# Regenerates tests/fixtures/scene_formats/ (committed; the tests never need node or torch):
#   small.ply                 500 splats, SH degree 3 (make_scene.py)
#   ckpt_500_rank{0,1}.pt     the same splats as a two-rank gsplat checkpoint (torch.save, unnormalised quats)
#   small.compressed.ply      small.ply compressed by PlayCanvas splat-transform
#   small.decoded.ply         splat-transform's own decode of small.compressed.ply
#   ours.compressed.ply       small.ply compressed by `difix3d convert`
#   ours.decoded.ply          splat-transform's decode of ours.compressed.ply (it reads our file)
#   small.spz                 small.ply as .spz version 3 (gzip) by splat-transform
#   small.spz.decoded.ply     splat-transform's decode of small.spz
#   ours.spz                  small.ply as .spz by `difix3d convert`
#   ours.spz.decoded.ply      splat-transform's decode of ours.spz
#   small.v4.spz              small.ply as .spz version 4 (zstd streams) by splat-transform
#   small.v4.spz.decoded.ply  splat-transform's decode of small.v4.spz
#   ours.v4.spz               small.ply as .spz version 4 by `difix3d convert --spz-version 4`
#   ours.v4.spz.decoded.ply   splat-transform's decode of ours.v4.spz
#   small.sog                 small.ply as PlayCanvas SOG (meta version 2, zip) by splat-transform (its SH
#                             k-means starts from Math.random, so each run makes different bytes)
#   small.sog.decoded.ply     splat-transform's decode of small.sog
#   ours.sog                  small.ply as SOG by `difix3d convert`
#   ours.sog.decoded.ply      splat-transform's decode of ours.sog
#   reference_checks.jsonl    torch.load(weights_only=True) of our `.pt` against small.ply
# Needs: node + `npm install --prefix ~/.cache/splat-transform @playcanvas/splat-transform` (2.7.1 used),
# a Python with torch and numpy (PYTHON, default ~/.cache/peer-venv/bin/python: torch 2.5.1), and cargo.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
out="$repo/tests/fixtures/scene_formats"
python=${PYTHON:-$HOME/.cache/peer-venv/bin/python}
st=${SPLAT_TRANSFORM:-$HOME/.cache/splat-transform/node_modules/.bin/splat-transform}
mkdir -p "$out"
"$python" "$here/make_scene.py" "$out"
node "$st" -q -w "$out/small.ply" "$out/small.compressed.ply"
node "$st" -q -w "$out/small.compressed.ply" "$out/small.decoded.ply"
difix3d() { (cd "$repo" && cargo run --quiet --locked -- "$@"); }
difix3d convert "$out/small.ply" "$out/ours.compressed.ply"
node "$st" -q -w "$out/ours.compressed.ply" "$out/ours.decoded.ply"
node "$st" -q -w --spz-version 3 "$out/small.ply" "$out/small.spz"
node "$st" -q -w "$out/small.spz" "$out/small.spz.decoded.ply"
difix3d convert "$out/small.ply" "$out/ours.spz"
node "$st" -q -w "$out/ours.spz" "$out/ours.spz.decoded.ply"
node "$st" -q -w --spz-version 4 "$out/small.ply" "$out/small.v4.spz"
node "$st" -q -w "$out/small.v4.spz" "$out/small.v4.spz.decoded.ply"
difix3d convert --spz-version 4 "$out/small.ply" "$out/ours.v4.spz"
node "$st" -q -w "$out/ours.v4.spz" "$out/ours.v4.spz.decoded.ply"
node "$st" -q -w -g cpu "$out/small.ply" "$out/small.sog"
node "$st" -q -w "$out/small.sog" "$out/small.sog.decoded.ply"
difix3d convert "$out/small.ply" "$out/ours.sog"
node "$st" -q -w "$out/ours.sog" "$out/ours.sog.decoded.ply"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
difix3d convert "$out/small.ply" "$tmp/ours.pt"
"$python" "$here/check_pt.py" "$tmp/ours.pt" "$out/small.ply" > "$out/reference_checks.jsonl"
cat "$out/reference_checks.jsonl"
ls -l "$out"
