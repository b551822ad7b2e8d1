#!/usr/bin/env python3
"""How much the block codecs round off real gradients, and what error feedback then does to
AdamW's variance.

Takes a checkpoint of an svite run (its weights) and its resolved config (RUN/config.yaml),
computes the gradients of `--batches` batches of `--batch` training images at those weights
(timm's VisionTransformer, as benchmarks/ddp_reference.py builds it), and for each codec
prints, over the tensors of 1000 weights or more:

- the relative error of one rounding, sum (q(g) - g)^2 / sum g^2;
- sqrt(mean of sent^2) / sqrt(mean of g^2) per weight when the batches' gradients go one
  after the other through error feedback (sent = q(g + residual)), the median weight's and
  the mean over the quarter of weights with the smallest gradients. AdamW's variance is the
  average of sent^2: a ratio above 1 is how much shorter that weight's steps get.

The codecs are re-implemented here from their definitions (ScaledBlocks.swift,
LevelBlocks.swift), with the even-step int4 of wire protocol 7 for comparison.

    /opt/ref/bin/python benchmarks/codec_error.py --config RUN/config.yaml \
        --checkpoint RUN/checkpoints/step-00000470.safetensors
"""
import argparse
import os
import sys

import numpy as np

LEVELS = np.array([0, 1, 2, 3, 4.5, 6.5, 9, 12], np.float32)


def blocks(v, n=64):
    pad = (-len(v)) % n
    return np.concatenate([v, np.zeros(pad, np.float32)]).reshape(-1, n)


def even_steps(v, limit):
    """int8 (limit 127), or protocol 7's int4 (limit 7): q * 2^e, max |v| <= limit * 2^e."""
    b = blocks(v)
    top = np.maximum(np.abs(b).max(1, keepdims=True), 1e-38)
    s = 2.0 ** np.ceil(np.log2(top / limit))
    return (np.clip(np.rint(b / s), -limit, limit) * s).reshape(-1)[:len(v)]


def bf16_up(x):
    bits = x.astype(np.float32).view(np.uint32)
    up = np.where(bits & 0xFFFF, (bits | 0xFFFF) + 1, bits).astype(np.uint32)
    return up.view(np.float32)


def levels(v):
    """int4 of protocol 8: the nearest of +-LEVELS times a bf16 scale >= max |v| / 12."""
    b = blocks(v)
    s = bf16_up(np.abs(b).max(1, keepdims=True) / 12)
    a = np.abs(b) / np.where(s > 0, s, 1)
    k = np.searchsorted((LEVELS[1:] + LEVELS[:-1]) / 2, a, side="left")
    return (np.sign(b) * LEVELS[np.minimum(k, 7)] * s).reshape(-1)[:len(v)]


CODECS = {
    "int8": lambda v: even_steps(v, 127),
    "int4, even steps (protocol 7)": lambda v: even_steps(v, 7),
    "int4, levels (protocol 8)": levels,
}


def gradients(config, checkpoint, batches, batch):
    import torch
    import yaml
    from safetensors.numpy import load_file
    from timm.models.vision_transformer import VisionTransformer
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from ddp_reference import load_split
    with open(config) as f:
        c = yaml.safe_load(f)
    m = c["model"]
    model = VisionTransformer(img_size=m["image_size"], patch_size=m["patch_size"], in_chans=m["in_channels"],
                              num_classes=m["num_classes"], embed_dim=m["dim"], depth=m["depth"], num_heads=m["heads"],
                              mlp_ratio=m["mlp_ratio"], qkv_bias=True, class_token=True, global_pool="token")
    state = model.state_dict()
    weights = load_file(checkpoint)
    missing = [k for k in state if k not in weights]
    if missing:
        raise SystemExit(f"{checkpoint}: no {missing[0]} (and {len(missing) - 1} more): not a checkpoint of this config")
    model.load_state_dict({k: torch.from_numpy(weights[k].copy()).reshape(state[k].shape) for k in state})
    x, y = load_split(c, "train")
    loss = torch.nn.CrossEntropyLoss(label_smoothing=c.get("training", {}).get("label_smoothing", 0.1))
    generator = torch.Generator().manual_seed(0)
    out = []
    for _ in range(batches):
        idx = torch.randint(0, len(y), (batch,), generator=generator)
        model.zero_grad()
        loss(model(x[idx]), y[idx]).backward()
        out.append([p.grad.detach().flatten().numpy().copy() for p in model.parameters()])
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--batches", type=int, default=64)
    p.add_argument("--batch", type=int, default=32, help="images per gradient (a worker's share)")
    a = p.parse_args()
    steps = gradients(a.config, a.checkpoint, a.batches, a.batch)
    tensors = [t for t in range(len(steps[0])) if steps[0][t].size >= 1000]
    print(f"{len(tensors)} tensors, {a.batches} gradients of {a.batch} images")
    print(f"{'codec':32s} {'one rounding':>12s} {'sqrt(v) ratio, median':>22s} {'smallest quarter':>17s}")
    for name, q in CODECS.items():
        err = total = 0.0
        ratios, sizes = [], []
        for t in tensors:
            residual = np.zeros_like(steps[0][t])
            sent2 = np.zeros(residual.size)
            g2 = np.zeros(residual.size)
            for s in steps:
                g = s[t]
                err += float(((q(g) - g) ** 2).sum()); total += float((g ** 2).sum())
                c = g + residual
                sent = q(c)
                residual = c - sent
                sent2 += sent.astype(np.float64) ** 2; g2 += g.astype(np.float64) ** 2
            r = np.sqrt(sent2 / np.maximum(g2, 1e-40))
            small = np.argsort(g2)[: len(g2) // 4]
            ratios.append((np.median(r), r[small].mean())); sizes.append(g2.size)
        w = np.array(sizes, float)
        med = np.average([r[0] for r in ratios], weights=w)
        low = np.average([r[1] for r in ratios], weights=w)
        print(f"{name:32s} {err / total:12.4f} {med:22.3f} {low:17.3f}")


if __name__ == "__main__":
    main()
