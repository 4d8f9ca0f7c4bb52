#!/usr/bin/env python3
"""Cross-check the goldens against the UPSTREAM code itself (nv-tlabs/Difix3D): its DifixPipeline
(src/pipeline_difix.py), its VAE forwards (src/model.py) and its multi-view UNet (src/mv_unet.py), run on
the tiny model in fp32. Optional: make_goldens.py does not need it. Needs the upstream sources, read from
a git repository (bare or not) given by --upstream (default: the local mirror of nv-tlabs/Difix3D).

Deviations forced for a deterministic comparison (both documented in README.md):
* retrieve_latents is patched to return the posterior mean (the pipeline samples it);
* the pipeline is run with one target (and one reference), where its pairing is correct.
Run as its own process: importing mv_unet.py patches diffusers' BasicTransformerBlock globally.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import reference_difix as ref  # noqa: E402

REPO = HERE.parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "difix"
DEFAULT_UPSTREAM = "/work/.mirror/nv-tlabs+Difix3D/repo"


def upstream_file(repo: str, path: str) -> str:
    return subprocess.run(["git", "-C", repo, "show", f"HEAD:{path}"], check=True, capture_output=True,
                          text=True).stdout


def model_py_functions(src: str) -> dict:
    """Only the two VAE forward functions of src/model.py (the module itself needs CUDA and the hub)."""
    tree = ast.parse(src)
    keep = [n for n in tree.body if isinstance(n, ast.FunctionDef)
            and n.name in ("my_vae_encoder_fwd", "my_vae_decoder_fwd")]
    assert len(keep) == 2
    ns: dict = {}
    exec(compile(ast.Module(body=keep, type_ignores=[]), "model.py", "exec"), ns)
    return ns


def report(name, got, want, tol):
    d = (got.double() - want.double()).abs().max().item()
    ok = d <= tol
    print(f"{'OK  ' if ok else 'FAIL'} {name}: max |diff| = {d:.3e} (tol {tol:g})")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", default=DEFAULT_UPSTREAM, help="git repo of nv-tlabs/Difix3D")
    args = ap.parse_args()
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    gold = load_file(str(FIXTURES / "goldens.safetensors"))
    tmp = Path(tempfile.mkdtemp(prefix="difix-upstream-"))
    for f in ("pipeline_difix.py", "mv_unet.py"):
        (tmp / f).write_text(upstream_file(args.upstream, f"src/{f}"))
    fns = model_py_functions(upstream_file(args.upstream, "src/model.py"))
    sys.path.insert(0, str(tmp))

    models = ref.load_models(FIXTURES / "tiny")
    vae = models.vae
    vae.encoder.forward = types.MethodType(fns["my_vae_encoder_fwd"], vae.encoder)
    vae.decoder.forward = types.MethodType(fns["my_vae_decoder_fwd"], vae.decoder)

    import pipeline_difix as up
    up.retrieve_latents = lambda enc, generator=None, sample_mode="sample": enc.latent_dist.mode()
    ok = True

    def make_pipe(unet):
        return up.DifixPipeline(vae=vae, text_encoder=models.text_encoder, tokenizer=models.tokenizer, unet=unet,
                                scheduler=models.scheduler, safety_checker=None, feature_extractor=None,
                                requires_safety_checker=False)

    def run(pipe, image, ref_image=None):
        with torch.no_grad():
            return pipe(ref.PROMPT, image=image, ref_image=ref_image, num_inference_steps=1, timesteps=[199],
                        guidance_scale=0.0, output_type="pt", generator=torch.Generator().manual_seed(0)).images

    pipe = make_pipe(models.unet)
    ok &= report("upstream DifixPipeline (posterior mean) vs pipe.output",
                 run(pipe, gold["pipe.input"]), gold["pipe.output"], 2e-5)
    with torch.no_grad():
        ok &= report("upstream VAE forwards: decode(vae.dec.input, enc skips) vs vae.dec.output",
                     ref.vae_decode(vae, gold["vae.dec.input"], [gold[f"vae.enc.skip{i}"] for i in range(4)]),
                     gold["vae.dec.output"], 2e-5)
        ok &= report("diffusers UNet (single view) vs unet.out",
                     models.unet(gold["unet.sample"], gold["unet.timestep"],
                                 encoder_hidden_states=gold["unet.encoder_hidden_states"]).sample,
                     gold["unet.out"], 2e-5)
    # Informative: what the published pipeline's posterior *sampling* changes on this tiny model.
    up.retrieve_latents = lambda enc, generator=None, sample_mode="sample": enc.latent_dist.sample(generator)
    d = (run(pipe, gold["pipe.input"]) - gold["pipe.output"]).abs().max().item()
    print(f"info: sampling the posterior instead of its mean changes pipe.output by up to {d:.3e}")
    up.retrieve_latents = lambda enc, generator=None, sample_mode="sample": enc.latent_dist.mode()

    with torch.no_grad():
        single0 = models.unet(gold["unet.mv.sample"][:1], gold["unet.timestep"],
                              encoder_hidden_states=gold["unet.encoder_hidden_states"]).sample

    # Reference mode: the upstream mv_unet (patches BasicTransformerBlock.forward globally, num_views = 2).
    import mv_unet
    mv = mv_unet.UNet2DConditionModel.from_pretrained(str(FIXTURES / "tiny" / "unet")).eval()
    with torch.no_grad():
        ehs = gold["unet.encoder_hidden_states"]
        ok &= report("upstream mv_unet vs unet.mv.out",
                     mv(gold["unet.mv.sample"], gold["unet.timestep"], encoder_hidden_states=ehs.repeat(2, 1, 1)).sample,
                     gold["unet.mv.out"], 2e-5)
        ok &= report("upstream mv_unet vs unet.mv2.out (2 samples x 2 views)",
                     mv(gold["unet.mv2.sample"], gold["unet.timestep"], encoder_hidden_states=ehs.repeat(4, 1, 1)).sample,
                     gold["unet.mv2.out"], 2e-5)
        print(f"info: joint attention changes the target's eps by up to "
              f"{(single0 - gold['unet.mv.out'][:1]).abs().max().item():.3e} vs running it alone")
    ok &= report("upstream DifixPipeline with ref_image (mv_unet) vs pipe.ref.output",
                 run(make_pipe(mv), gold["pipe.ref.input"], gold["pipe.ref.ref"]), gold["pipe.ref.output"], 2e-5)
    print("ALL OK" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
