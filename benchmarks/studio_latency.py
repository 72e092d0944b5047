"""Studio latency on the shipped weights: start-up to a served page, then each API endpoint.

    python benchmarks/studio_latency.py                     # weights/celeba64, 1 torch thread
    python benchmarks/studio_latency.py --threads 2 --runs 5 --out latency.json

Starts `biva-studio` (the console script when installed, else `python -m studio`) on a free
port and times (1) from process start to the first HTTP 200 of the page, (2) each endpoint
through gradio_client, --runs times after one warm-up call, reporting the median and the
fastest (wall time at the client: upload, queue, compute, download). Inputs are the studio's
shipped examples. The server's torch threads are set with --threads (1 is fastest on a shared
machine; give a dedicated machine more).
"""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "studio" / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(weights: Path, port: int, threads: int, device: str) -> tuple[subprocess.Popen, float]:
    """Launch the studio; return the process and the seconds until its page was served."""
    exe = shutil.which("biva-studio")
    cmd = [exe] if exe else [sys.executable, "-m", "studio"]
    cmd += ["--weights", str(weights), "--port", str(port), "--threads", str(threads), "--device", device]
    t0 = time.perf_counter()  # the studio as installed (pip install -e .): no path of this checkout is added
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                if r.status == 200:
                    return proc, time.perf_counter() - t0
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the studio exited with {proc.returncode}: {proc.stderr.read()}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", type=Path, default=ROOT / "weights" / "celeba64")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = p.parse_args()

    from gradio_client import Client, handle_file

    faces = sorted(str(f) for f in EXAMPLES.glob("celeba_test_*.png"))
    everything = faces + sorted(str(f) for f in EXAMPLES.glob("ood_*.png"))
    name = args.weights.name
    port = free_port()
    proc, startup = start(args.weights, port, args.threads, args.device)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        calls = {
            "sample (16 images, T=0.8)": lambda: client.predict(name, 16, "0.8", 0, api_name="/sample"),
            "sample (64 images, T=0.8)": lambda: client.predict(name, 64, "0.8", 0, api_name="/sample"),
            f"reconstruct ({len(faces)} images)": lambda: client.predict(
                name, [handle_file(f) for f in faces], api_name="/reconstruct"),
            "resample (default ks, 4 draws)": lambda: client.predict(
                name, handle_file(faces[0]), [], 4, "1.0", 0, api_name="/resample"),
            "mix (default ks)": lambda: client.predict(
                name, handle_file(faces[0]), handle_file(faces[1]), [], api_name="/mix"),
            # the reference's K and k (a reference made with another K is refused)
            f"anomaly ({len(everything)} images, k=5, K=4, no maps)": lambda: client.predict(
                name, [handle_file(f) for f in everything], 5, 4, 0.05, 0, False, api_name="/anomaly"),
            f"anomaly ({len(everything)} images, k=5, K=4, pixel maps)": lambda: client.predict(
                name, [handle_file(f) for f in everything], 5, 4, 0.05, 0, True, api_name="/anomaly"),
            "latents (examples)": lambda: client.predict(name, None, api_name="/latents"),
            "model_card": lambda: client.predict(name, api_name="/model_card"),
        }
        results = {"weights": str(args.weights), "threads": args.threads, "device": args.device,
                   "startup_to_page_s": round(startup, 2), "endpoints": {}}
        print(f"start-up to a served page: {startup:.1f} s")
        print(f"{'endpoint':40s} {'median s':>9s} {'min s':>7s}")
        for label, call in calls.items():
            call()  # warm-up
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                call()
                times.append(time.perf_counter() - t0)
            median = statistics.median(times)
            results["endpoints"][label] = {"median_s": round(median, 3), "min_s": round(min(times), 3)}
            print(f"{label:40s} {median:9.2f} {min(times):7.2f}", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
