"""`pig demo` end to end at a tiny size: every step runs, the table is complete, a rerun reuses work."""

import json

import pytest

pytestmark = pytest.mark.slow  # a subprocess running the whole demo


def test_demo_runs_every_method_and_reuses_finished_steps(tmp_path, run_pig) -> None:
    work = tmp_path / "demo"
    args = ["demo", str(work), "--videos", "60", "--images", "40", "--pretrain-epochs", "1", "--epochs", "1",
            "--generator-epochs", "1", "--workers", "0"]
    code, out, err = run_pig(args, timeout=600)
    assert code == 0, err
    lines = out.strip().splitlines()
    rows = {line.split()[0]: line.split() for line in lines[1:4]}
    assert list(rows) == ["meanpool", "pig", "xpool"]
    assert lines[4].startswith("text-to-video on the toy test split")
    assert lines[5].startswith("R@1 ceiling 100.0")

    results = json.loads((work / "results.json").read_text())
    by_method = {row["method"]: row for row in results["rows"]}
    test_videos = len((work / "test_videos.txt").read_text().split())
    dim = 128  # the 'toy' preset's projection width
    # the online cost: meanpool and PIG both scan one D-vector per video; xpool attends per pair
    assert by_method["meanpool"]["macs_per_query"] == by_method["pig"]["macs_per_query"] == test_videos * dim
    assert by_method["xpool"]["macs_per_query"] >= 100 * by_method["pig"]["macs_per_query"]
    for row in results["rows"]:
        metrics = row["metrics"]
        assert 0 <= metrics["R@1"] <= metrics["R@5"] <= metrics["R@10"] <= 100
        assert metrics["count"] == 3 * test_videos  # three captions per test video

    code, out2, err2 = run_pig(args, timeout=600)
    assert code == 0, err2
    assert "corpus: reusing" in err2 and "train pretrain: reusing" in err2
    assert "train pig: reusing" in err2 and "train meanpool: reusing" in err2
    metrics = lambda text: [line.split()[:7] for line in text.splitlines()[1:4]]  # noqa: E731 (not the timings)
    assert metrics(out2) == metrics(out)
