"""biva-studio [--weights DIR ...] [--runs DIR] [--host 127.0.0.1] [--port 7860] [--device cpu|cuda]

With no --weights it serves every model under ./weights (else the weights/ folder beside the
studio package): each subfolder holding a config.json, face models first, celeba64 first. A
folder named with --weights that does not load is an error (exit status 2); a discovered one
that does not load is listed in the page with the reason.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home; machines may be offline

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def default_weights_root() -> Path:
    local = Path("weights")
    return local if local.is_dir() else PACKAGE_ROOT / "weights"


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="biva-studio", description="Serve pretrained BIVA models in the browser.")
    p.add_argument("--weights", nargs="+", action="extend", metavar="DIR",
                   help="pretrained folders (config.json + safetensors); default: every model under weights/")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--concurrency", type=int, default=1, metavar="N",
                   help="requests computed at once (default 1; the rest wait in the queue)")
    p.add_argument("--runs", metavar="DIR", help="training runs for the Runs tab (default: runs/ when it exists)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default: torch's choice; 1 is fastest on a busy machine)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def fail(message: str) -> int:
        print(f"biva-studio: error: {message}", file=sys.stderr)
        return 2

    if not 0 <= args.port <= 65535:
        return fail(f"--port {args.port}: not a port number")
    if args.concurrency < 1:
        return fail("--concurrency must be at least 1")
    if args.weights:
        directories = [Path(d) for d in args.weights]
        missing = [str(d) for d in directories if not d.is_dir()]
        if missing:
            return fail(f"weights folder not found: {', '.join(missing)}")
    else:
        root = default_weights_root()
        from .models import discover
        directories = discover(root)
        if not directories:
            return fail(f"no model under {root.resolve()} (a model is a folder with config.json and "
                        "safetensors weights); pass --weights DIR")

    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    # the studio's one folder: its outputs and, as Gradio's temp folder, every upload and served
    # file; removed when the studio stops (Gradio reads GRADIO_TEMP_DIR once, when imported)
    from .engine import GRADIO_FOLDER, Studio
    workdir = Path(tempfile.mkdtemp(prefix="biva-studio-"))
    os.environ["GRADIO_TEMP_DIR"] = str(workdir / GRADIO_FOLDER)
    from .app import launch
    try:
        runs = args.runs or ("runs" if Path("runs").is_dir() else None)
        if args.runs and not Path(args.runs).is_dir():
            shutil.rmtree(workdir, ignore_errors=True)
            return fail(f"--runs {args.runs}: not a folder")
        studio = Studio(directories, device=args.device, strict=bool(args.weights), runs=runs, workdir=workdir)
    except ValueError as err:
        shutil.rmtree(workdir, ignore_errors=True)
        return fail(str(err))
    served = [n for n in studio.names if studio.entries[n].error is None]
    for name in studio.names:
        if studio.entries[name].error is not None:
            print(f"biva-studio: warning: not serving {name}: {studio.entries[name].error}", file=sys.stderr)
    if not served:
        return fail("none of the models could be loaded")
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it like Ctrl-C: outputs are removed
    try:
        demo = launch(studio, host=args.host, port=args.port, concurrency=args.concurrency, block=False)
    except (OSError, KeyboardInterrupt) as err:
        studio.close()
        if isinstance(err, KeyboardInterrupt):
            return 130
        return fail(f"cannot serve on {args.host}:{args.port} ({err}); is the port in use? pass --port")
    print(f"BIVA Studio: serving {', '.join(served)} on {args.device} at http://{args.host}:{args.port}", flush=True)
    try:
        demo.block_thread()  # until Ctrl-C
    finally:
        demo.close()
        studio.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
