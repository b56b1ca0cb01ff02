"""Distributed training on patches streamed from S3: the data path of a pathology foundation
model (a tiny model stands in for the real one).

    torchrun --nproc_per_node=N examples/train_ddp.py s3://bucket/prefix/ --recipe prov_gigapath
    torchrun --nnodes=2 --node_rank=R --master_addr=HOST --nproc_per_node=8 \\
        examples/train_ddp.py s3://bucket/prefix/ --recipe midnight

S3 endpoint and region: ``--s3-endpoint`` / ``WSI_S3_ENDPOINT`` and ``--s3-region`` /
``WSI_S3_REGION``, spelled as ``wsi-streamer serve`` and ``patches`` spell them (credentials:
the boto3 chain). NCCL on
GPUs, gloo on CPUs. What matters here:

- One ``WsiStreamDataset`` per rank over the whole source: it splits the slides over every
  (rank, DataLoader worker) itself, disjointly, re-drawn each epoch. No DistributedSampler,
  no ``partition_slides_by_rank``.
- ``dataset.set_epoch(epoch)`` before each epoch: a new split and new patches, reproducible
  for a given ``--seed`` (resuming at epoch E gives epoch E's data).
- The stream is endless (``cycle=True``): an "epoch" is ``--steps`` steps, the same number on
  every rank, so DDP's all-reduce never waits for a rank that ran out of data.
- uint8 batches (a quarter of the bytes through worker queues and pinned memory),
  normalised on the device.
- Preemption: torchdata's ``StatefulDataLoader`` (torch's ``DataLoader``, resumable). Every
  ``--save-every`` steps each rank writes ``CHECKPOINT/rank-R.pt``: the model and optimiser
  (the same on every rank) with its loader's ``state_dict()``. ``--resume`` loads them and
  goes on from the next batch, exactly the batches an uninterrupted run would have had. On
  another number of ranks (``torchrun --nnodes=1:4``), each rank gives every old rank's loader
  state to ``dataset.load_state_dict`` instead: the epoch goes on, each slide's budget used
  once (docs/resume.md).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torchdata.stateful_dataloader import StatefulDataLoader

from wsi_streamer.patches.torch import MonitoredLoader, WsiStreamDataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def recipe_arguments(name: str) -> dict[str, Any]:
    from wsi_streamer.patches.recipes import get_recipe

    return get_recipe(name)


class TinyEncoder(nn.Module):
    """Stands in for a ViT: two convolutions, pooled, predicting the patch's mean colour."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 5, stride=4), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="s3://bucket/prefix/ (or a local folder)")
    parser.add_argument("--recipe", default="prov_gigapath",
                        help="wsi_streamer.patches.recipes name (uni and gpfm assume whole "
                             "slides: their CLAM area thresholds find no tissue on small crops)")
    parser.add_argument("--s3-endpoint", default=os.environ.get("WSI_S3_ENDPOINT"),
                        help="custom S3 endpoint URL (MinIO, Ceph, moto, ...) "
                             "[env WSI_S3_ENDPOINT]")
    parser.add_argument("--s3-region", default=os.environ.get("WSI_S3_REGION"),
                        help="S3 region [env WSI_S3_REGION]")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch")
    parser.add_argument("--batch-size", type=int, default=64, help="per rank")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers per rank")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--patches-per-slide", type=int, help="override the recipe's")
    parser.add_argument("--thumbnail-size", type=int, help="override the recipe's (pixels)")
    parser.add_argument("--checkpoint", default="checkpoint",
                        help="folder of the checkpoints (rank-R.pt per rank)")
    parser.add_argument("--save-every", type=int, default=0,
                        help="steps between checkpoints (0: none)")
    parser.add_argument("--resume", action="store_true",
                        help="go on from the checkpoints in --checkpoint")
    return parser.parse_args()


def save_checkpoint(folder: str, rank: int, model: nn.Module, optimizer: Any,
                    loader: StatefulDataLoader, epoch: int, step: int) -> None:
    """This rank's checkpoint, written whole or not at all (a kill mid-write keeps the last)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"rank-{rank}.pt")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "loader": loader.state_dict(), "epoch": epoch, "step": step}, path + ".tmp")
    os.replace(path + ".tmp", path)


def load_checkpoints(folder: str, rank: int, world: int) -> tuple[dict[str, Any], list[Any]]:
    """This rank's checkpoint (its own, or rank 0's on a grown topology) and every old rank's
    loader state (for a restart on another topology)."""
    ranks = sorted(int(name[5:-3]) for name in os.listdir(folder)
                   if name.startswith("rank-") and name.endswith(".pt"))
    mine = torch.load(os.path.join(folder, f"rank-{rank if rank in ranks else 0}.pt"),
                      weights_only=False)
    states = [torch.load(os.path.join(folder, f"rank-{r}.pt"), weights_only=False)["loader"]
              for r in ranks] if len(ranks) != world else []
    return mine, states


def main() -> None:
    args = parse_args()
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    torch.manual_seed(args.seed)  # the same initial weights on every rank

    pipeline_args = recipe_arguments(args.recipe)
    if args.patches_per_slide:
        pipeline_args["patches_per_slide"] = args.patches_per_slide
    if args.thumbnail_size:
        pipeline_args["thumbnail_size"] = (args.thumbnail_size, args.thumbnail_size)
    dataset = WsiStreamDataset(
        args.source, **pipeline_args, cycle=True, seed=args.seed, output_dtype="uint8",
        storage_options={key: value for key, value in (("endpoint_url", args.s3_endpoint),
                                                       ("region", args.s3_region)) if value}
        or None)
    loader = StatefulDataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers,
                                pin_memory=cuda, persistent_workers=args.workers > 0)
    monitor = MonitoredLoader(loader, dataset=dataset, device=device,
                              log_every=args.log_every)

    model = DistributedDataParallel(TinyEncoder().to(device),
                                    device_ids=[local_rank] if cuda else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    first_epoch, first_step = 0, 0
    if args.resume:
        saved, old_states = load_checkpoints(args.checkpoint, rank, world)
        model.module.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        first_epoch, first_step = saved["epoch"], saved["step"]
        if old_states:  # another number of ranks: the epoch goes on over this topology
            dataset.load_state_dict(old_states)
        else:  # the same ranks: each loader exactly where it was
            loader.load_state_dict(saved["loader"])
        if first_step == args.steps:
            first_epoch, first_step = first_epoch + 1, 0
    if rank == 0:
        print(f"{world} rank(s), {len(dataset.slide_paths)} slides, recipe {args.recipe}, "
              f"{args.workers} workers per rank"
              + (f", resumed at epoch {first_epoch} step {first_step}" if args.resume else ""),
              flush=True)

    started = time.perf_counter()
    last = (first_epoch, first_step)
    for epoch in range(first_epoch, args.epochs):
        dataset.set_epoch(epoch)  # every rank: a new split of the slides, new patches
        start = first_step if epoch == first_epoch else 0
        for step, batch in enumerate(monitor, start=start):
            images = batch["image"].to(device, non_blocking=True).float().div_(255)
            images = (images - mean) / std
            loss = nn.functional.mse_loss(model(images), images.mean(dim=(2, 3)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            payload = monitor.mark_step({"loss": loss.item(), "epoch": epoch})
            if payload and rank == 0:
                print(f"epoch {epoch} step {step + 1}: loss {payload['loss']:.4f}, "
                      f"{payload['loader/patches_per_sec']:.0f} patches/s per rank, data "
                      f"wait {payload['loader/data_fraction']:.0%}", flush=True)
            last = (epoch, step + 1)
            if args.save_every and (step + 1) % args.save_every == 0:
                save_checkpoint(args.checkpoint, rank, model.module, optimizer, loader, epoch,
                                step + 1)
            if step + 1 == args.steps:  # the same number of steps on every rank
                break

    stats = dataset.stats_dict()
    counts = torch.tensor([stats["pipeline/patches_extracted"], stats["io/requests"],
                           stats["io/bytes"]], dtype=torch.float64, device=device)
    dist.all_reduce(counts)
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()
    sums: list[Any] = [None] * world
    dist.all_gather_object(sums, float(checksum))
    if counts[0] == 0:  # every rank: a run that read nothing did not train
        raise SystemExit(f"rank {rank}: 0 patches read by all ranks: nothing was trained")
    if rank == 0:
        seconds = time.perf_counter() - started
        print(f"done in {seconds:.1f} s: {int(counts[0])} patches read by all ranks, "
              f"{int(counts[1])} storage requests, {counts[2] / 2**20:.1f} MiB", flush=True)
        print(f"parameters in sync across {world} rank(s): {len(set(sums)) == 1}; trained "
              f"to epoch {last[0]} step {last[1]}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
