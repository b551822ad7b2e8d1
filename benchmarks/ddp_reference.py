#!/usr/bin/env python3
"""PyTorch DistributedDataParallel over gloo: the same training as an svite run, for a cluster comparison.

What svite's users run instead on a CPU cluster: one rank per host, started by torchrun,
the gradients all-reduced by gloo (optionally through DDP's fp16 or PowerSGD hooks). It
trains the model of an svite config (timm's VisionTransformer with the config's shape, as
benchmarks/reference.py builds it) on the same data (the config's IDX files) with the same
recipe: AdamW with timm's no-decay set, linear warm-up then cosine per step, label
smoothing, the global batch split evenly over the ranks, the same epochs, random crop and
flip, evaluation every eval_every_epochs. Rank 0 writes svite-shaped metrics.jsonl records
(start, train windows, eval, end), so `svite plot` overlays both systems.

The config is a resolved one, as svite writes it into a run directory (RUN/config.yaml):
every default is spelled out there.

    torchrun --nnodes 4 --nproc-per-node 1 --node-rank R --master-addr HOST --master-port 29500 \\
        benchmarks/ddp_reference.py --config runs/x/config.yaml --out runs/ddp --threads 1 [--hook fp16|powersgd]

Needs torch and timm (python3 -m venv /opt/ref && /opt/ref/bin/pip install torch timm).
"""
import argparse
import datetime
import gzip
import json
import math
import os
import struct
import sys
import time


def read_idx(path):
    import torch
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, kind, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or kind != 0x08:
        raise SystemExit(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return torch.frombuffer(bytearray(data[4 + 4 * dims:]), dtype=torch.uint8).reshape(shape)


def load_split(config, split):
    d = config["data"]
    if d["dataset"] not in ("fashion-mnist", "mnist"):
        raise SystemExit(f"data.dataset {d['dataset']}: this script reads IDX data sets (mnist, fashion-mnist)")
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(os.path.join(d["dir"], f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(d["dir"], f"{prefix}-labels-idx1-ubyte.gz")).long()
    limit = d.get(f"{split}_limit", 0) or 0
    if limit > 0:
        images, labels = images[:limit], labels[:limit]
    import torch
    x = images.float().div_(255).unsqueeze(1)
    mean = torch.tensor(d["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(d["std"]).view(1, -1, 1, 1)
    return (x - mean) / std, labels


def augment(x, padding, flip, generator):
    import torch
    if padding > 0:
        n, c, h, w = x.shape
        padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        x = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    if flip:
        mask = torch.rand(x.shape[0], generator=generator) < 0.5
        x = torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)
    return x


def lr_at(step, base, warmup_steps, warmup_lr, min_lr, total):
    """svite's LRSchedule: linear warm-up from warmup_lr, then cosine from base to min_lr."""
    if step < warmup_steps:
        return warmup_lr + (base - warmup_lr) * step / warmup_steps
    span = max(1, total - warmup_steps - 1)
    t = min(1.0, (step - warmup_steps) / span)
    return min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * t))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="a resolved svite config (RUN/config.yaml)")
    p.add_argument("--out", required=True, help="directory for metrics.jsonl (rank 0)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--hook", choices=["none", "fp16", "powersgd"], default="none")
    p.add_argument("--rank", type=int, default=4, help="PowerSGD's matrix approximation rank")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: the config's)")
    p.add_argument("--timeout", type=float, default=300, help="seconds a collective may wait for the other ranks")
    a = p.parse_args()

    import torch
    import torch.distributed as dist
    import yaml
    from timm.models.vision_transformer import VisionTransformer

    with open(a.config) as f:
        config = yaml.safe_load(f)
    m, t, o, s = config["model"], config["training"], config["optimizer"], config["schedule"]
    torch.set_num_threads(a.threads)
    # A rank that died must not leave the others waiting for ever.
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=a.timeout))
    rank, world = dist.get_rank(), dist.get_world_size()
    if t["batch_size"] % world != 0:
        raise SystemExit(f"training.batch_size {t['batch_size']} does not split evenly over {world} ranks")
    per_rank = t["batch_size"] // world

    train_x, train_y = load_split(config, "train")
    test_x, test_y = load_split(config, "test") if rank == 0 else (None, None)
    steps_per_epoch = len(train_y) // t["batch_size"]
    total = t["max_steps"] if t.get("max_steps", 0) else t["epochs"] * steps_per_epoch
    if a.max_steps:
        total = min(total, a.max_steps)
    # (PyYAML reads 1e-06 as a string: numbers are taken with float().)
    warmup = int(s.get("warmup_steps") or round(float(s.get("warmup_epochs", 0)) * steps_per_epoch))

    torch.manual_seed(t.get("seed", 0))
    model = VisionTransformer(img_size=m["image_size"], patch_size=m["patch_size"], in_chans=m["in_channels"],
                              num_classes=m["num_classes"], embed_dim=m["dim"], depth=m["depth"], num_heads=m["heads"],
                              mlp_ratio=m["mlp_ratio"], qkv_bias=True, class_token=True, global_pool="token")
    # One bucket: gloo fails with several under PowerSGD ("Received data size doesn't match").
    ddp = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=1024)
    if a.hook == "fp16":
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
        ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
    elif a.hook == "powersgd":
        from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook
        state = powerSGD_hook.PowerSGDState(process_group=None, matrix_approximation_rank=a.rank, start_powerSGD_iter=2)
        ddp.register_comm_hook(state, powerSGD_hook.powerSGD_hook)

    # timm's rule, as svite's: no weight decay on 1-D tensors, pos_embed and cls_token.
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim <= 1 or name in ("pos_embed", "cls_token") else decay).append(param)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": float(o["weight_decay"])}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=float(o["lr"]), betas=tuple(float(b) for b in o.get("betas", [0.9, 0.999])),
                            eps=float(o.get("eps", 1e-8)))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=float(t.get("label_smoothing", 0.0)))
    aug = config["data"].get("augmentation", {}) or {}
    generator = torch.Generator().manual_seed(1000 + rank)

    metrics = None
    if rank == 0:
        os.makedirs(a.out, exist_ok=True)
        metrics = open(os.path.join(a.out, "metrics.jsonl"), "w")

    def write(record):
        if metrics is not None:
            record["time"] = round(time.time(), 3)
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()

    params = sum(p.numel() for p in model.parameters())
    write({"kind": "start", "step": 0, "run": f"{config.get('name', 'config')} ddp-{a.hook}", "total_steps": total,
           "steps_per_epoch": steps_per_epoch, "parameters": params, "threads": a.threads,
           "train_images": len(train_y), "test_images": len(test_y) if test_y is not None else None, "world_size": world})

    def evaluate(step, epoch, start):
        dist.barrier()
        if rank == 0:
            e0 = time.time()
            model.eval()
            correct, loss_sum = 0, 0.0
            with torch.no_grad():
                for i in range(0, len(test_y), t.get("eval_batch_size", 500)):
                    logits = model(test_x[i:i + t.get("eval_batch_size", 500)])
                    y = test_y[i:i + t.get("eval_batch_size", 500)]
                    loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
                    correct += (logits.argmax(1) == y).sum().item()
            model.train()
            write({"kind": "eval", "step": step, "epoch": epoch, "eval_accuracy": correct / len(test_y),
                   "eval_loss": loss_sum / len(test_y), "eval_seconds": time.time() - e0, "elapsed_seconds": time.time() - start})
        dist.barrier()

    start = time.time()
    window = {"loss": 0.0, "correct": 0, "images": 0, "steps": 0, "start": start}
    order, order_epoch = None, -1
    model.train()
    for step in range(total):
        epoch, in_epoch = divmod(step, steps_per_epoch)
        if order_epoch != epoch:
            order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(t.get("seed", 0) * 1000003 + epoch))
            order_epoch = epoch
        lo = in_epoch * t["batch_size"] + rank * per_rank
        idx = order[lo:lo + per_rank]
        x = augment(train_x[idx], aug.get("random_crop_padding", 0), aug.get("horizontal_flip", False), generator)
        y = train_y[idx]
        lr = lr_at(step, float(o["lr"]), warmup, float(s.get("warmup_lr", 1e-6)), float(s.get("min_lr", 1e-5)), total)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        logits = ddp(x)
        loss = loss_fn(logits, y)
        loss.backward()
        if float(o.get("clip_grad_norm", 0)) > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(o["clip_grad_norm"]))
        opt.step()
        window["loss"] += loss.item() * len(y)
        window["correct"] += (logits.argmax(1) == y).sum().item()
        window["images"] += len(y)
        window["steps"] += 1
        done = step + 1
        last = done == total
        epoch_end = done % steps_per_epoch == 0
        if window["steps"] >= t.get("log_every_steps", 20) or epoch_end or last:
            sums = torch.tensor([window["loss"], window["correct"], window["images"]], dtype=torch.float64)
            dist.all_reduce(sums)
            now = time.time()
            write({"kind": "train", "step": done, "epoch": done / steps_per_epoch, "loss": sums[0].item() / sums[2].item(),
                   "train_accuracy": sums[1].item() / sums[2].item(), "lr": lr,
                   "images_per_second": sums[2].item() / max(now - window["start"], 1e-9), "elapsed_seconds": now - start})
            window = {"loss": 0.0, "correct": 0, "images": 0, "steps": 0, "start": now}
        every = t.get("eval_every_epochs", 1)
        if (epoch_end and every > 0 and (done // steps_per_epoch) % every == 0) or last:
            evaluate(done, done // steps_per_epoch, start)
            window["start"] = time.time()
    write({"kind": "end", "step": total, "elapsed_seconds": time.time() - start})
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
