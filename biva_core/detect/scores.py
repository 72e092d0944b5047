"""Per-image statistics of the detector (spec section 6), in nats unless said otherwise: L^{>0}
(= L_K), L^{>k} and LLR^{>k} = L^{>0} - L^{>k} for each k, bits/dim of L^{>0}, the ELBO L_1, and
the image's size under lossless codecs (its complexity, as a compressor sees it)."""
from __future__ import annotations

import io

import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

# the lossless codecs of the complexity statistic (Pillow's options)
CODECS = {"png": dict(format="PNG", optimize=True), "jpeg2000": dict(format="JPEG2000", irreversible=False)}


def batches(images: Tensor, batch_size: int, desc: str, progress: bool):
    starts = range(0, len(images), batch_size)
    for i, s in enumerate(tqdm(starts, desc=desc, disable=not progress, dynamic_ncols=True, leave=False)):
        yield i, images[s:s + batch_size]


def scores_per_image(model, images: Tensor, ks: list[int], K: int, *, batch_size: int = 64,
                     chunk: int = 256, seed: int = 0, progress: bool = False, desc: str = "scores",
                     on_batch=None, prior: str = "sample", seed_of=None, elbo: bool = True) -> dict:
    """Per image (nats): L^{>0} (= L_K), L^{>k} and LLR^{>k} for k in ks, bits/dim of L^{>0}, the
    single-sample ELBO L_1, and the image's size under each lossless codec in bits/dim
    ("compressed_bpd": {codec: (N,)}). Batch i draws with seed `seed + i`; on_batch(done, total) after
    each batch (a progress callback). prior: how L^{>k} takes z_{<=k} ("sample" or "mode").
    seed_of(i): batch i's seed instead (the studio's per-image seeds); elbo=False leaves L_1 out
    (no extra pass when K > 1)."""
    l1, l0, bpd = [], [], []
    comp: dict[str, list[Tensor]] = {c: [] for c in CODECS}
    lk: dict[int, list[Tensor]] = {k: [] for k in ks}
    for i, x in batches(images, batch_size, desc, progress):
        seed_i = seed + i if seed_of is None else seed_of(i)
        s = model.scores(x, ks, K=K, chunk=chunk, seed=seed_i, prior=prior)
        l0.append(s.l0.float().cpu())
        if elbo:  # K = 1: L^{>0} drew the same z as the ELBO with this seed
            l1.append(l0[-1] if K == 1 else model.elbo(x, seed=seed_i)["elbo"].float().cpu())
        bpd.append(s.bpd.float().cpu())
        for c in CODECS:
            comp[c].append(compressed_bits_per_dim(x, c))
        for k in ks:
            lk[k].append(s.lk[k].float().cpu())
        if on_batch is not None:
            on_batch(min(len(images), (i + 1) * batch_size), len(images))
    l0_all = torch.cat(l0)
    lk_all = {k: torch.cat(v) for k, v in lk.items()}
    return {**({"L_1": torch.cat(l1)} if elbo else {}), "L_gt_0": l0_all, "bpd": torch.cat(bpd), "L_gt_k": lk_all,
            "LLR_gt_k": {k: l0_all - v for k, v in lk_all.items()}, "compressed_bpd": {c: torch.cat(v) for c, v in comp.items()}}



def compressed_bits_per_dim(images: Tensor, codec: str = "png") -> Tensor:
    """(B,) the size of each image under a lossless `codec` (CODECS), in bits per dimension: its
    complexity as a compressor measures it. images: (B, C, H, W) in [0, 1], C = 1 or 3,
    quantized to 8 bits (binary images: 0 and 255)."""
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {list(CODECS)}, got {codec!r}")
    x = (images.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    out = []
    for im in x:
        a = im[0].numpy() if im.shape[0] == 1 else im.permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, **CODECS[codec])
        out.append(8.0 * len(buf.getvalue()) / im.numel())
    return torch.tensor(out, dtype=torch.float32)
