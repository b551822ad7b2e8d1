#!/usr/bin/env python3
"""Load a model written by `svite export` (dense, sparse or `--compact`, with or without an
SViTE+ token selector) into PyTorch and, optionally, measure its top-1 accuracy.

    python3 benchmarks/load_export.py runs/x/model.json                      # load, print the shape
    python3 benchmarks/load_export.py runs/x/compact.json --idx DIR --limit 500
    python3 benchmarks/load_export.py runs/x/model.json --folder DIR/val     # an image folder's split

The model is timm's VisionTransformer, changed only where svite's export says so:
- `compact` (S2ViTE/SSP): each block gets its own head count and MLP width
  (compact.block_heads, compact.block_hidden); timm's Attention reshapes to the input
  width, so kept-head blocks use the small `CompactAttention` below.
- `token_selector` (SViTE+): a scorer on the patch tokens (after the position embedding)
  keeps the top `kept_patches` by score (ties to the lower index, in patch order) and only
  CLS and those go through the blocks, as `svite eval` does.
Every tensor of the .safetensors file loads by its name (strict), so nothing is dropped.

Needs torch, timm and safetensors (`python3 -m venv /opt/ref && /opt/ref/bin/pip install
torch timm safetensors`); --folder also needs Pillow (timm brings it). Prints one JSON line.
"""
import argparse
import gzip
import json
import os
import sys


def build(info):
    import torch
    from torch import nn
    from timm.models.vision_transformer import VisionTransformer

    m = info["model"]
    compact = info.get("compact")
    vit = VisionTransformer(img_size=m["image_size"], patch_size=m["patch_size"], in_chans=m["in_channels"],
                            num_classes=m["num_classes"], embed_dim=m["dim"], depth=m["depth"], num_heads=m["heads"],
                            mlp_ratio=m["mlp_ratio"], qkv_bias=True, class_token=True, global_pool="token")
    head_dim = m["dim"] // m["heads"]

    class CompactAttention(nn.Module):
        """timm's Attention with its own number of heads (possibly none)."""

        def __init__(self, dim, heads):
            super().__init__()
            self.num_heads, self.head_dim = heads, head_dim
            self.qkv = nn.Linear(dim, 3 * heads * head_dim)
            self.proj = nn.Linear(heads * head_dim, dim)

        def forward(self, x, **_):
            b, n, _ = x.shape
            if self.num_heads == 0:
                return self.proj(x.new_zeros(b, n, 0))
            qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            y = torch.nn.functional.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
            return self.proj(y.transpose(1, 2).reshape(b, n, -1))

    if compact:
        for blk, heads, hidden in zip(vit.blocks, compact["block_heads"], compact["block_hidden"]):
            blk.attn = CompactAttention(m["dim"], heads)
            blk.mlp.fc1 = nn.Linear(m["dim"], hidden)
            blk.mlp.fc2 = nn.Linear(hidden, m["dim"])

    selector = info.get("token_selector")
    if selector:
        class TokenSelector(nn.Module):
            def __init__(self, dim, hidden):
                super().__init__()
                if hidden > 0:
                    self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1)
                else:
                    self.fc = nn.Linear(dim, 1)

            def forward(self, x):
                return (self.fc2(self.act(self.fc1(x))) if hasattr(self, "fc1") else self.fc(x)).squeeze(-1)

        vit.token_selector = TokenSelector(m["dim"], selector["selector_hidden"])
        keep = selector["kept_patches"]

        def forward_features(x, **_):
            x = vit._pos_embed(vit.patch_embed(x))
            scores = vit.token_selector(x[:, 1:])
            order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :keep]
            kept = torch.sort(order, dim=1).values
            patches = torch.gather(x[:, 1:], 1, kept.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
            x = torch.cat([x[:, :1], patches], dim=1)
            return vit.norm(vit.blocks(vit.norm_pre(x)))

        vit.forward_features = forward_features
    return vit


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return shape, data[4 + 4 * dims:]


def idx_split(directory, limit):
    import torch

    def find(name):
        for c in (f"{directory}/{name}", f"{directory}/{name}.gz"):
            if os.path.exists(c):
                return c
        sys.exit(f"{directory}/{name}[.gz]: no such file")

    shape, pixels = read_idx(find("t10k-images-idx3-ubyte"))
    _, labels = read_idx(find("t10k-labels-idx1-ubyte"))
    n = min(limit or shape[0], shape[0])
    images = torch.frombuffer(bytearray(pixels[:n * shape[1] * shape[2]]), dtype=torch.uint8).reshape(n, 1, shape[1], shape[2])
    return images, torch.tensor(list(labels[:n]))


def folder_split(directory, size, channels, crop_pct, limit):
    """torchvision's ImageFolder order and timm's evaluation crop, resized with Pillow's
    antialiased bilinear (what svite's image folders use)."""
    import torch
    from PIL import Image

    classes = sorted(d for d in os.listdir(directory) if not d.startswith(".") and os.path.isdir(f"{directory}/{d}"))
    files = [(f"{directory}/{c}/{f}", k) for k, c in enumerate(classes)
             for f in sorted(os.listdir(f"{directory}/{c}"))
             if not f.startswith(".") and f.lower().rsplit(".", 1)[-1] in ("jpg", "jpeg", "png")]
    if limit:
        files = [files[i * len(files) // limit] for i in range(min(limit, len(files)))]
    scaled = int(size / crop_pct)
    out = []
    for path, _ in files:
        im = Image.open(path).convert("RGB" if channels == 3 else "L")
        w, h = im.size
        s = scaled / min(w, h)
        side = size / s  # the centre size×size of the resized picture, in source pixels
        box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
        im = im.resize((size, size), Image.BILINEAR, box=box)
        t = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).reshape(size, size, channels).permute(2, 0, 1)
        out.append(t)
    return torch.stack(out), torch.tensor([k for _, k in files])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json", help="the .json that svite export wrote beside the .safetensors")
    p.add_argument("--idx", help="a folder of MNIST-format test files (t10k-*-idx*-ubyte[.gz]) to measure accuracy on")
    p.add_argument("--folder", help="an image folder's split (class folders of JPEG/PNG) to measure accuracy on")
    p.add_argument("--crop-pct", type=float, default=0.875, help="image folders: timm's crop_pct (default 0.875)")
    p.add_argument("--limit", type=int, default=0, help="only the first N test images (of a folder: N spread over it)")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    try:
        import torch
        from safetensors.torch import load_file
    except ImportError as e:
        print(json.dumps({"error": f"torch/timm/safetensors not importable: {e}"}))
        return 3
    torch.set_num_threads(a.threads)
    with open(a.json) as f:
        info = json.load(f)
    model = build(info)
    weights = os.path.join(os.path.dirname(os.path.abspath(a.json)), info["weights"])
    model.load_state_dict(load_file(weights), strict=True)
    model.eval()
    result = {"parameters": sum(t.numel() for t in model.state_dict().values()),
              "compact": "compact" in info, "token_selector": "token_selector" in info}
    m = info["model"]
    images = None
    if a.idx:
        images, labels = idx_split(a.idx, a.limit)
    elif a.folder:
        images, labels = folder_split(a.folder, m["image_size"], m["in_channels"], a.crop_pct, a.limit)
    if images is not None:
        mean = torch.tensor(info["normalization"]["mean"]).view(1, -1, 1, 1)
        std = torch.tensor(info["normalization"]["std"]).view(1, -1, 1, 1)
        correct = 0
        with torch.no_grad():
            for i in range(0, len(labels), 250):
                x = (images[i:i + 250].float() / 255 - mean) / std
                correct += (model(x).argmax(1) == labels[i:i + 250]).sum().item()
        result.update(images=len(labels), correct=correct, accuracy=correct / len(labels))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
