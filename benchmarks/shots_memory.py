"""Peak memory of shots as rows (`--segments`): does it grow with the number of shots?

1. The segments file alone: scan (check + hash) and stream a generated file of N shots over V video ids
   (no decoding), for N = 100k and 1M, each in a fresh process.
2. `pig frames --segments` end to end on small generated videos, for two shot counts, each in a fresh
   process: the decode, build and write loop, the join at the end.

Peak resident memory is the process's ru_maxrss. Usage (results: RESULTS_shots.md):
    PYTHONPATH=$PWD python benchmarks/shots_memory.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCAN = """
import json, resource, sys, time
from pathlib import Path
from pigcli.inputs.segments import scan_segments, shot_entries
path, videos = Path(sys.argv[1]), int(sys.argv[2])
table = {f"{v:05d}": Path(f"/videos/{v:05d}.mp4") for v in range(videos)}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
info = scan_segments(path, table)
scanned = time.perf_counter() - start
rows = sum(1 for _ in shot_entries(path, table))
print(json.dumps({"shots": info.shots, "rows": rows, "scan_s": round(scanned, 1),
                  "stream_s": round(time.perf_counter() - start - scanned, 1),
                  "start_mb": before // 1024, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))
"""


def write_segments(path: Path, shots: int, videos: int) -> None:
    per_video = shots // videos
    with path.open("w") as out:
        out.write("shot\tvideo\tstartframe\tendframe\n")
        for v in range(videos):
            for k in range(per_video):
                out.write(f"shot{v:05d}_{k + 1}\t{v:05d}\t{k * 50}\t{k * 50 + 49}\n")


def scan_memory(root: Path) -> list[dict]:
    results = []
    for shots in (100_000, 1_000_000):
        path = root / f"seg{shots}.tsv"
        write_segments(path, shots, 1000)
        out = subprocess.run([sys.executable, "-c", SCAN, str(path), "1000"], capture_output=True, text=True,
                             check=True)
        results.append(json.loads(out.stdout))
    return results


def frames_memory(root: Path) -> list[dict]:
    import numpy as np

    from pigcli.toy.videowrite import write_video

    videos = root / "videos"
    videos.mkdir()
    length, count = 200, 8
    for v in range(count):
        frames = np.full((length, 32, 40, 3), 30 * v, np.uint8)
        write_video(videos / f"{v:05d}.mp4", frames, fps=8)
    results = []
    for shots_per_video in (25, 200):  # 200 shots and 1600 shots
        path = root / f"frames{shots_per_video}.tsv"
        with path.open("w") as out:
            out.write("shot\tvideo\tstartframe\tendframe\n")
            width = length // shots_per_video
            for v in range(count):
                for k in range(shots_per_video):
                    out.write(f"shot{v:05d}_{k + 1}\t{v:05d}\t{k * width}\t{k * width + width - 1}\n")
        output = root / f"frames{shots_per_video}.h5"
        start = time.perf_counter()
        code = ("import resource, runpy, sys; sys.argv = ['pig'] + sys.argv[1:]\n"
                "try:\n    runpy.run_module('pigcli', run_name='__main__')\n"
                "except SystemExit:\n    pass\n"
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, file=sys.stderr)")
        out = subprocess.run([sys.executable, "-c", code, "frames", str(videos), "--segments", str(path),
                              "--frames", "12", "--size", "224", "--workers", "0", "-o", str(output)],
                             capture_output=True, text=True, check=True)
        results.append({"shots": shots_per_video * count, "T": 12, "S": 224,
                        "wall_s": round(time.perf_counter() - start, 1),
                        "peak_mb": int(out.stderr.strip().splitlines()[-1]),
                        "output_mb": round(output.stat().st_size / 2**20)})
    return results


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        print(json.dumps({"segments_file": scan_memory(root), "pig_frames": frames_memory(root)}, indent=1))


if __name__ == "__main__":
    main()
