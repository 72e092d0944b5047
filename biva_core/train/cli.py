"""`python train.py` / `biva-train`: train a BIVA on a data set into a pretrained folder.

    python train.py --preset celeba64 --data celeba --data-dir ../shared/data --out runs/celeba64
    python train.py --preset tiny --data folder --data-dir my_images --out runs/mine \\
        --steps 2000 --set image_shape=[3,8,8] lr=1e-3
    python train.py ... --resume            # continue exactly where runs/... stopped
    torchrun --nproc_per_node 4 train.py ... # data-parallel over 4 GPUs (batch = global batch)
    python train.py --preset mnist_ssl --data mnist_binary --labels 100 --out runs/ssl   # semi-supervised

`--set key=value` changes a model-config key (image_shape, likelihood, mixtures, levels,
dropout_q, dropout_p, variant, classes, block) or a training key (see TrainConfig; the
semi-supervised ones by their dotted names, ssl.alpha=1 ssl.consistency.weight=1, or by the flat
names of older configs, ssl_alpha=1 ssl_consistency=1); values are JSON (strings may go bare). `--init DIR` starts from a pretrained folder's weights with a fresh
optimizer (`--set init_partial=true` for another layout: the tensors that match are copied). SIGINT / SIGTERM (Ctrl-C, a scheduler's kill) save the state and exit cleanly.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.distributed

from biva_core.data import DATASETS, base_dataset, dataset_root, load_labels, load_split
from biva_core.data.folder import inspect
from biva_core.data.images import adapt
from biva_core.data.mnist import binarize
from biva_core.train import distributed as dist
from biva_core.model.config import PRESETS, RETIRED as RETIRED_MODEL_KEYS, ModelConfig, auto, preset
from biva_core.train.config import LEGACY, RETIRED as RETIRED_TRAIN_KEYS, flatten, set_key
from biva_core.train.trainer import TrainConfig, Trainer

DIGITS = ("binarized_mnist", "mnist", "fashion_mnist", "mnist_binary", "fashion_mnist_binary")


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def folder_model(args: argparse.Namespace, log=print) -> dict:
    """The model config for `--data folder`: the auto preset from the images' channels and size
    without --preset; with one, the preset with the folder's channels (unless --set image_shape)."""
    channels, native = inspect(dataset_root("folder", args.data_dir))
    kind = "grey" if channels == 1 else "RGB"
    if args.preset is None:
        cfg = auto(channels, native)
        log(f"auto preset: {kind} images of about {native} px -> a {cfg.image_shape[1]}x{cfg.image_shape[2]} "
            f"model with L = {cfg.L} levels, likelihood {cfg.likelihood} ({cfg.mixtures} components)")
        return cfg.to_dict()
    model = preset(args.preset).to_dict()
    if not any(item.startswith("image_shape=") for item in args.set) and model["image_shape"][0] != channels:
        model["image_shape"] = [channels, *model["image_shape"][1:]]
        log(f"{args.preset}: {kind} folder, so image_shape={model['image_shape']} "
            f"(--set image_shape=[C,H,W] to choose another)")
    return model


def build_configs(args: argparse.Namespace, log=print) -> tuple[ModelConfig, TrainConfig]:
    if args.preset is None and args.data != "folder":
        raise SystemExit(f"--preset is required for --data {args.data} (without it, --data folder picks one "
                         f"from the images); presets: {', '.join(sorted(PRESETS))}")
    try:
        model = folder_model(args, log) if args.data == "folder" else preset(args.preset).to_dict()
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"data: {e}") from None
    train = TrainConfig().to_dict()
    train["flip"] = args.data not in DIGITS
    train["binarize"] = args.data.endswith("_binary")  # dynamic binarization of the 8-bit images
    try:
        for item in args.set:
            if "=" not in item:
                raise SystemExit(f"--set {item!r}: expected key=value")
            key, value = item.split("=", 1)
            if key in model or key in RETIRED_MODEL_KEYS:  # a retired key: from_dict says why it is refused
                model[key] = parse_value(value)
            elif key.split(".")[0] in train or key in LEGACY or key in RETIRED_TRAIN_KEYS:
                set_key(train, key, parse_value(value))
            else:
                raise SystemExit(f"--set {key}: unknown key; model keys {sorted(model)}, training keys "
                                 f"{sorted(flatten(train))} (or the flat names of older configs: {sorted(LEGACY)})")
        for key in ("steps", "batch_size", "max_minutes", "max_cpu_minutes", "labels"):
            if getattr(args, key) is not None:
                set_key(train, key, getattr(args, key))
        return ModelConfig.from_dict(model), TrainConfig.from_dict(train)
    except (TypeError, ValueError) as e:
        raise SystemExit(str(e)) from None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), help="the model layout; with --data folder it may be "
                    "left out: the auto preset picks one by the images' size and channels")
    ap.add_argument("--data", required=True, choices=DATASETS)
    ap.add_argument("--data-dir", default=os.environ.get("BIVA_DATA"), help="default: $BIVA_DATA")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--max-minutes", type=float, help="stop after this wall time")
    ap.add_argument("--max-cpu-minutes", type=float, help="stop after this much CPU time of the process (all its "
                    "threads): the same budget for runs on a shared machine")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--resume", action="store_true", help="continue from OUT/state")
    ap.add_argument("--init", help="start from the weights of this pretrained folder")
    ap.add_argument("--labels", type=int, help="semi-supervised: this many labelled training images, "
                    "as many of each class (a model with classes, e.g. --preset mnist_ssl)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.data_dir is None:
        raise SystemExit("--data-dir is required when $BIVA_DATA is not set")
    model_cfg, train_cfg = build_configs(args, log=lambda m: print(m, file=sys.stderr))
    size = model_cfg.image_shape[1]
    try:
        # binarize=true draws the training images from their 8-bit intensities at every step
        train = load_split(base_dataset(args.data) if train_cfg.binarize else args.data, "train",
                           args.data_dir, image_size=size, progress=not args.no_progress)
        valid = load_split(args.data, "valid", args.data_dir, image_size=size, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"data: {e}") from None
    if args.data == "folder" and tuple(train.shape[1:]) != model_cfg.image_shape:  # RGB files, a grey model
        train, valid = adapt(train, model_cfg.image_shape), adapt(valid, model_cfg.image_shape)
    if tuple(train.shape[1:]) != model_cfg.image_shape:
        raise SystemExit(f"data: {args.data} images are {tuple(train.shape[1:])}, the model expects "
                         f"{model_cfg.image_shape}; choose another --preset or --set image_shape=...")
    if len(valid) == 0:
        raise SystemExit(f"data: the valid split of {args.data} is empty")
    if train_cfg.binarize and valid.max() > 1:  # --set binarize=true on an 8-bit set
        valid = binarize(valid, f"{args.data}/valid")
    if args.data == "mnist" and model_cfg.likelihood == "bernoulli":
        train, valid = (train > 127).astype("uint8"), (valid > 127).astype("uint8")
    train_labels = valid_labels = None
    if model_cfg.classes:  # the labels (of the labelled part; the valid ones choose the model)
        try:
            train_labels, valid_labels = (load_labels(args.data, s, args.data_dir) for s in ("train", "valid"))
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"data: a model with classes needs labels: {e}") from None
    try:
        trainer = Trainer(model_cfg, train_cfg, train, valid, args.out, device=dist.local_device(args.device),
                          init=args.init, log=lambda m: print(m, file=sys.stderr), dataset=args.data,
                          train_labels=train_labels, valid_labels=valid_labels)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    if args.resume:
        trainer.load_state()
        if trainer.rank == 0:
            print(f"resumed at step {trainer.step}", file=sys.stderr)
    try:
        result = trainer.run(progress=not args.no_progress)
    finally:
        if trainer.distributed:
            torch.distributed.destroy_process_group()
    if trainer.rank == 0:
        print(json.dumps(result))
    if "stopped" in result:  # the update guard gave up: said on the console already; fail the command
        raise SystemExit(2)


if __name__ == "__main__":
    main()
