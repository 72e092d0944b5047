"""`python -m biva_core.eval.export`: turn a training run's best weights into a shipped folder.

    python -m biva_core.eval.export --run runs/celeba64_cpu --out weights/celeba64_cpu --data celeba

The folder gets what the studio and a reader need: the weights in fp16, in shards of at most
16 MiB (the model loads them back as float32), config.json with the run's training metadata,
the run's metrics.jsonl and KL-per-latent plot, sample grids at temperatures 1.0, 0.8 and 0.6
(a row per class for a model with classes), a resample grid over k for one test image (row k:
the image, then draws that keep z_{>k} and redraw the levels at and below k; k = 0 is the
reconstruction, k = L a new sample) and
reference.json (the anomaly scores of valid images, which the studio ranks a new image among).
The pictures and the reference are made from the fp16 weights, the ones users will load.

A run warm-started from a shipped folder (`train.py --init weights/celeba64`) continues that
folder's record: `--continues weights/celeba64` writes its metrics first and the run's after
them (steps and seconds counted on), carries its results.json with the run added under
`train.continued`, and draws valid_curve.png (valid bits/dim against training hours, all of it).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import torch

from biva_core.io.files import atomic_write
from biva_core.io.checkpoint import (CheckpointError, load_pretrained, read_config, read_metrics, save_pretrained,
                         training_totals)
from biva_core.data.inputs import load_images
from biva_core.detect import CODECS, COMBINES, Detector, build_reference
from biva_core.model import BIVA, PRIORS
from biva_core.io.plots import line_chart, save_grid, save_samples

TEMPERATURES = (1.0, 0.8, 0.6)


def resample_ks(L: int) -> list[int]:
    """0, a few levels spread up the hierarchy, and L."""
    return sorted({0, 1, 2, 3} | {round(L * f) for f in (0.25, 0.4, 0.55, 0.7, 0.85)} | {L})


def run_offset(run: str | os.PathLike, from_step: int) -> tuple[int, float]:
    """(step, seconds) of `run` where `earlier` was taken from it: (0, 0) for a warm start (--init);
    for a run that resumed a copy of the run `earlier` was exported from, its step then (the
    rows up to it are already in earlier's record) and the seconds its metrics give that step."""
    if from_step <= 0:
        return 0, 0.0
    before = [r["seconds"] for r in read_metrics(Path(run) / "metrics.jsonl") if r["step"] <= from_step and "seconds" in r]
    if not before:
        raise ValueError(f"--from-step {from_step}: {run}/metrics.jsonl has no row at or before that step")
    return from_step, float(max(before))


def continue_record(run: str | os.PathLike, earlier: str | os.PathLike, out: str | os.PathLike,
                    command: str = "", from_step: int = 0) -> dict:
    """`run` was warm-started from the shipped folder `earlier`: write out/metrics.jsonl (earlier's
    rows, then the run's with steps and seconds after earlier's), out/results.json (earlier's, with
    this run appended to train.continued; earlier's test eval moves into that entry, since it does
    not describe the new weights) and out/valid_curve.png. Returns the new train.continued entry.
    from_step: see run_offset (the run's rows up to it are earlier's, and are not counted twice)."""
    run, earlier, out = Path(run), Path(earlier), Path(out)
    step0, sec0 = training_totals(read_config(earlier)[1])
    step_run, sec_run = run_offset(run, from_step)
    old = [r for r in read_metrics(earlier / "metrics.jsonl") if r["step"] <= step0]  # later rows were not carried on
    new = [{**r, "step": r["step"] - step_run + step0, "seconds": round(r["seconds"] - sec_run + sec0, 1)}
           for r in read_metrics(run / "metrics.jsonl") if r["step"] > step_run]
    rows = old + new
    atomic_write(out / "metrics.jsonl", lambda p: Path(p).write_text("".join(json.dumps(r) + "\n" for r in rows)))
    valid = [r for r in new if "valid_bpd" in r]
    entry = {"run": str(run), "from_step": step0, "steps": new[-1]["step"] - step0 if new else 0,
             "seconds": round(new[-1]["seconds"] - sec0, 1) if new else 0.0,
             **({"command": command} if command else {}),
             "valid_bpd": {str(r["step"]): [round(r["valid_bpd"], 4), round(r.get("raw_valid_bpd", float("nan")), 4)]
                           for r in valid},
             "valid_columns": ["ema", "raw"]}
    results_path = earlier / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    if "eval" in results:
        entry["eval_before"] = results.pop("eval")
    train = results.setdefault("train", {})
    train.setdefault("continued", []).append(entry)
    hours_before = train.get("hours_total", sec0 / 3600)  # may count runs before earlier's metrics
    train["hours_total"] = round(hours_before + entry["seconds"] / 3600, 2)
    atomic_write(out / "results.json", lambda p: Path(p).write_text(json.dumps(results, indent=1) + "\n"))
    pts = [r for r in rows if "valid_bpd" in r]
    line_chart({"valid, EMA weights": [(r["seconds"] / 3600, r["valid_bpd"]) for r in pts],
                "valid, raw weights": [(r["seconds"] / 3600, r["raw_valid_bpd"]) for r in pts if "raw_valid_bpd" in r]},
               out / "valid_curve.png", title="valid bits/dim against training hours",
               xlabel="hours (as metrics.jsonl counts them)", ylabel="bits/dim",
               note=f"{len(train['continued'])} warm-started continuation(s); the last from step {step0}")
    return entry


def export(run: str | os.PathLike, out: str | os.PathLike, *, test_image: torch.Tensor | None = None,
           valid_images: torch.Tensor | None = None, draws: int = 6, temperature: float = 0.8,
           note: str = "", source: BIVA | None = None, log=print, K: int = 1,
           ks: list[int] | None = None, detector_k=None, prior: str = "sample", complexity=None,
           combine: str = "bonferroni",
           continues: str | os.PathLike | None = None, command: str = "", from_step: int = 0) -> Path:
    """Write the shipped folder `out` from the pretrained layout in `run` (`source`: that model,
    when the caller has loaded it already). test_image: (1, C, H, W) in [0, 1] for the resample
    grid; valid_images: (N, C, H, W) for reference.json, the detector's reference (ks, default
    1..L-1, with K importance samples and `prior`; detector_k its default k, or several; complexity: the lossless
    codec(s) whose bits/dim the detector subtracts by default (None: off); combine: how it combines its
    statistics by default (biva_core.detect.COMBINES); continues: the
    shipped folder the run was warm-started from, whose record it extends; from_step: the run's step
    at which `continues` was exported from it, when the run resumed a copy of that run)."""
    run, out = Path(run), Path(out)
    source = source if source is not None else load_pretrained(run)
    info = {**(source.training_info or {}), "exported_from": str(run)}
    if continues is not None:
        if Path(continues).resolve() == out.resolve():
            raise ValueError("--continues must name the folder the run started from, not --out: export elsewhere, then copy")
        step0, sec0 = training_totals(read_config(continues)[1])
        step_run, sec_run = run_offset(run, from_step)
        info.update(continues=str(continues), step_total=step0 + int(info.get("step", 0)) - step_run,
                    seconds_total=round(sec0 + float(info.get("seconds", 0.0)) - sec_run, 1))
    save_pretrained(source, out, training=info, dtype=torch.float16, max_shard_mb=16)
    model = load_pretrained(out)  # what users get: fp16-rounded weights, float32 compute
    for name in ("kl_per_latent.png",) + (() if continues is not None else ("metrics.jsonl",)):
        if (run / name).is_file() and run.resolve() != out.resolve():
            shutil.copyfile(run / name, out / name)
    if continues is not None:  # the run's metrics after the shipped ones
        continue_record(run, continues, out, command=command, from_step=from_step)
    for t in TEMPERATURES:
        save_samples(model, out / f"samples_t{t:.1f}.png", t)
    log(f"samples at t = {', '.join(str(t) for t in TEMPERATURES)}")
    if test_image is not None:
        rows_k = resample_ks(model.config.L)
        rows = [torch.cat([test_image, model.resample(test_image, k, draws, temperature=temperature, seed=k)[0]])
                for k in rows_k]
        save_grid(torch.cat(rows), out / "resample_grid.png", nrow=draws + 1)
        (out / "resample_grid.json").write_text(json.dumps({"rows_k": rows_k, "draws": draws, "temperature": temperature}))
        log(f"resample grid, rows k = {rows_k}")
    if valid_images is not None:
        ks = ks or list(range(1, model.config.L))
        ref = build_reference(model, valid_images, ks, K, k=detector_k, split="valid", progress=True, prior=prior,
                              complexity=complexity, combine=combine,
                              note=note or f"first {len(valid_images)} images of the valid split")
        ref.write(out / "reference.json")
        log(f"reference.json over {len(valid_images)} valid images, K={K}, prior={prior}, k in {ref.ks}, "
            f"detector k={list(ref.default_ks)}{f', complexity {list(ref.complexity)}' if ref.complexity else ''}, "
            f"combined by {ref.combine}")
        det = Detector(ref)
        if det.smallest_p >= det.alpha:
            log(f"WARNING: a reference of {len(valid_images)} valid images is too small for its detector to flag "
                f"anything at alpha = {det.alpha:g} (the smallest p it can give is {det.smallest_p:.3g}): it needs "
                f"at least {det.images_needed} (--reference-images, and that many valid images)")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m biva_core.eval.export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a training output folder (its best weights are exported)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", help="the data set: a test image for the resample grid, valid images for the reference")
    ap.add_argument("--data-dir", default=os.environ.get("BIVA_DATA"))
    ap.add_argument("--test-index", type=int, default=0)
    ap.add_argument("--reference-images", type=int, default=1000)
    ap.add_argument("--iw", type=int, default=1, metavar="K", help="importance samples of the reference's scores")
    ap.add_argument("--ks", type=int, nargs="*", help="the reference's k (default 1..L-1)")
    ap.add_argument("--detector-k", type=int, nargs="+", help="the detector's default k, or several (default: the "
                    "smallest of --ks)")
    ap.add_argument("--complexity", nargs="+", choices=list(CODECS), help="the detector also tests bits/dim - "
                    "this lossless codec's bits/dim, one statistic per codec (default: not)")
    ap.add_argument("--combine", choices=COMBINES, default="bonferroni", help="how the detector combines its "
                    "statistics by default (bonferroni: the spec's; density: the reference's joint density)")
    ap.add_argument("--prior", choices=PRIORS, default="sample",
                    help="how the reference's L^{>k} takes z_{<=k}: a prior draw or the prior mean (mode)")
    ap.add_argument("--continues", metavar="DIR", help="the shipped folder the run was warm-started from (--init): "
                    "extend its metrics, results.json and valid curve")
    ap.add_argument("--command", default="", help="the training command, recorded with --continues")
    ap.add_argument("--from-step", type=int, default=0, metavar="S",
                    help="with --continues, when the run resumed (--resume) a copy of the run that folder was "
                         "exported from: the run's step then (its rows up to S are not counted twice)")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model = load_pretrained(args.run)
    except CheckpointError as e:
        raise SystemExit(f"run: {e}") from None
    test = valid = None
    if args.data:
        if not args.data_dir:
            raise SystemExit("--data-dir is required when $BIVA_DATA is not set")
        try:
            test = load_images(args.data, "test", args.data_dir, model.config, limit=args.test_index + 1)[-1:]
            valid = load_images(args.data, "valid", args.data_dir, model.config, limit=args.reference_images)
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f"data: {e}") from None
    if args.continues and not (Path(args.continues) / "metrics.jsonl").is_file():
        raise SystemExit(f"--continues {args.continues}: no metrics.jsonl there (not a shipped folder?)")
    try:
        export(args.run, args.out, test_image=test, valid_images=valid, source=model,
               log=lambda m: print(m, file=sys.stderr), K=args.iw, ks=args.ks, detector_k=args.detector_k, complexity=args.complexity,
               combine=args.combine, prior=args.prior, continues=args.continues, command=args.command, from_step=args.from_step)
    except ValueError as e:
        raise SystemExit(f"export: {e}") from None
    print(args.out)


if __name__ == "__main__":
    main()
