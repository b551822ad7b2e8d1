#!/usr/bin/env python3
"""PyTorch/timm reference for `svite bench model --reference`.

Times timm's VisionTransformer on random data at the shapes svite benchmarks: a training
step (forward, label-smoothed cross-entropy, backward, AdamW step) and inference, in fp32
and with bf16 autocast, on a fixed number of threads. Prints one JSON object.

Optional: it needs torch and timm, e.g. in a virtual environment outside the repository:
    python3 -m venv /opt/ref && /opt/ref/bin/pip install torch timm safetensors
svite runs it with SVITE_REFERENCE_PYTHON (default /opt/ref/bin/python3) and prints
both sides of one run together, with the ratio.
"""
import argparse
import json
import platform
import statistics
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, required=True)
    p.add_argument("--patch-size", type=int, required=True)
    p.add_argument("--in-channels", type=int, required=True)
    p.add_argument("--num-classes", type=int, required=True)
    p.add_argument("--dim", type=int, required=True)
    p.add_argument("--depth", type=int, required=True)
    p.add_argument("--heads", type=int, required=True)
    p.add_argument("--mlp-ratio", type=float, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--precisions", default="fp32,bf16")
    a = p.parse_args()

    try:
        import torch
        import timm
        from timm.models.vision_transformer import VisionTransformer
    except ImportError as e:
        print(json.dumps({"error": f"torch/timm not importable: {e}"}))
        return 3

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = VisionTransformer(img_size=a.image_size, patch_size=a.patch_size, in_chans=a.in_channels,
                              num_classes=a.num_classes, embed_dim=a.dim, depth=a.depth, num_heads=a.heads,
                              mlp_ratio=a.mlp_ratio, qkv_bias=True, class_token=True, global_pool="token")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    x = torch.randn(a.batch, a.in_channels, a.image_size, a.image_size)
    y = torch.randint(0, a.num_classes, (a.batch,))

    def timed(fn):
        for _ in range(a.warmup):
            fn()
        samples = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t)
        med = statistics.median(samples)
        return {"median_ms": med * 1e3, "samples_ms": [s * 1e3 for s in samples], "images_per_second": a.batch / med}

    out = {"torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version(),
           "threads": torch.get_num_threads(), "batch": a.batch,
           "mkldnn_bf16": bool(getattr(torch.backends.mkldnn, "is_available", lambda: False)()),
           "parameters": sum(p.numel() for p in model.parameters()), "results": {}}
    for precision in a.precisions.split(","):
        autocast = precision == "bf16"

        def train_step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()

        def infer():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                model(x)

        model.train()
        step = timed(train_step)
        model.eval()
        inference = timed(infer)
        out["results"][precision] = {"train_step": step, "inference": inference}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
