"""The quickstart end to end, as a new user runs it, timed from the outside.

    python benchmarks/quickstart.py [--out runs/quickstart-bench]

Runs `gendiff run recipes/quickstart.toml` in a subprocess (imports, training, sampling and the
report all inside the wall time), then prints the wall time and the classifier figures that the
run wrote to eval/classifier.json, and the mean training throughput from metrics.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/quickstart-bench")
    parser.add_argument("--set", action="append", default=[], help="extra recipe overrides")
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "gendiff", "run", str(ROOT / "recipes" / "quickstart.toml"), "--out", str(out),
           "--no-progress"]
    for item in args.set:
        cmd += ["--set", item]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=dict(os.environ))
    wall = time.perf_counter() - start
    report = json.loads((out / "eval" / "classifier.json").read_text())
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    figures = {
        "command": " ".join(["gendiff", *cmd[3:]]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "wall_seconds": round(wall, 1),
        "training_seconds": last["time"],
        "training_images_per_second": round(last["img_per_s"], 1),
        **{k: report[k] for k in ("samples", "mean_top_class_probability", "classes_present", "copies",
                                  "nearest_train_distance_median", "train_to_train_distance_median",
                                  "classifier_test_accuracy", "passes")},
    }
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
