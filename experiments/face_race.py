"""The face race (issue 40): of runs trained for a budget of CPU minutes, whose valid curve falls
fastest, and which stands lowest after the same CPU time?

    python experiments/face_race.py --runs warm=runs/race_warm bottleneck=runs/race_bottleneck \
        A=weights/celeba64_biva_120min --minutes 60 --against A --out docs/notes/2026-12-08-face-race

A run is a run folder or a shipped one (config.json with its training config, metrics.jsonl).
Its CPU minutes come from its budget (`max_cpu_minutes`) spread evenly over its steps: a step
costs the same all run long, and wall seconds would count a run's pauses (`kill -STOP`). Prints a
row per run: parameters, steps and valid bits/dim (EMA weights, the first 300 valid images) at
its first validation, at --minutes and the fall over the 20 minutes before, per hour, and with
--against R the CPU minutes that run R (trained longer) took to reach that valid bits/dim (a
run that gets there in fewer minutes than R learns faster by their ratio); draws
OUT.png, each run's valid bits/dim against CPU minutes, and OUT_fall.png, how far each has fallen
since its first validation, so that runs at different levels compare on one scale.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from biva_core.io.checkpoint import load_pretrained, read_metrics
from biva_core.io.plots import line_chart


def curve(folder: Path) -> tuple[dict, list[tuple[float, float, int]]]:
    """(the run's config, [(CPU minutes, valid bits/dim, step), ...]) from its folder."""
    config = json.loads((folder / "config.json").read_text())
    budget = config["training"]["train_config"]["max_cpu_minutes"]
    rows = read_metrics(folder / "metrics.jsonl")
    if not budget or not rows:
        raise SystemExit(f"{folder}: needs a CPU budget (max_cpu_minutes) and a metrics.jsonl")
    last = max(r["step"] for r in rows)
    return config, [(budget * r["step"] / last, r["valid_bpd"], r["step"]) for r in rows if "valid_bpd" in r]


def at(points: list[tuple[float, float, int]], minutes: float) -> float:
    """Valid bits/dim at `minutes`, linear between the validations around it."""
    for (m0, v0, _), (m1, v1, _) in zip(points, points[1:]):
        if m0 <= minutes <= m1:
            return v0 + (v1 - v0) * (minutes - m0) / (m1 - m0)
    return points[-1][1] if minutes >= points[-1][0] else points[0][1]


def minutes_to_reach(points: list[tuple[float, float, int]], value: float) -> float | None:
    """The first CPU minute at which the curve reaches `value` (linear between validations), or
    None if it never does."""
    for (m0, v0, _), (m1, v1, _) in zip(points, points[1:]):
        if v0 > value >= v1:
            return round(m0 + (m1 - m0) * (v0 - value) / (v0 - v1), 1)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", required=True, metavar="NAME=FOLDER")
    ap.add_argument("--minutes", type=float, default=60.0, help="compare the runs at this many CPU minutes")
    ap.add_argument("--out", required=True, help="prefix of the pictures: OUT.png and OUT_fall.png")
    ap.add_argument("--against", metavar="NAME", help="a run of --runs with a longer curve: the minutes it took "
                    "to reach each run's valid bits/dim at --minutes")
    args = ap.parse_args()
    series, fallen = {}, {}
    folders = dict(item.split("=", 1) for item in args.runs)
    reference = curve(Path(folders[args.against]))[1] if args.against else None
    for item in args.runs:
        name, folder = item.split("=", 1)
        config, points = curve(Path(folder))
        end, before = at(points, args.minutes), at(points, args.minutes - 20)
        points = [p for p in points if p[0] <= args.minutes + 1e-6]
        steps = max(s for _, _, s in points)
        params = sum(p.numel() for p in load_pretrained(folder).parameters())
        print(json.dumps({"run": name, "folder": folder, "parameters": params, "first_valid_step": points[0][2],
                          "first_valid_bpd": round(points[0][1], 4), "minutes": args.minutes,
                          "steps_by_then": steps, "valid_bpd": round(end, 4),
                          "fall_last_20_min_per_hour": round(3 * (before - end), 4),
                          **({f"{args.against}_minutes_to_reach_it": minutes_to_reach(reference, end)}
                             if reference else {})}))
        series[name] = [(m, v) for m, v, _ in points]
        fallen[name] = [(m, points[0][1] - v) for m, v, _ in points]
    line_chart(series, f"{args.out}.png", title="valid bits/dim against CPU minutes", xlabel="CPU minutes (one core)",
               ylabel="bits/dim", note="EMA weights, the first 300 valid images")
    line_chart(fallen, f"{args.out}_fall.png", title="bits/dim fallen since the first validation",
               xlabel="CPU minutes (one core)", ylabel="bits/dim fallen",
               note="a steeper line learns faster per CPU minute, whatever level it started at")


if __name__ == "__main__":
    main()
