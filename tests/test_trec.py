"""TRECVID AVS evaluation: sample_eval.pl's stratified infAP by hand, trec_eval's infAP and AP where they
must agree, the qrels / run / topics readers and `pig eval RUN --qrels`."""

from __future__ import annotations

import random
import re
import sys

import pytest

from pigcli.core.infap import (SAMPLE_EVAL_SMOOTHING, TREC_EVAL_SMOOTHING, Judgement, inferred_ap, run_order)
from pigcli.errors import PigError
from pigcli.inputs.trec import read_qrels, read_run, read_topics
from pigcli.query.trec import evaluate_run

pytrec_eval = pytest.importorskip("pytrec_eval")

A, B = SAMPLE_EVAL_SMOOTHING  # 1e-5, 3e-5

# Topic 611, two strata. Stratum 1 (the top of the pool) is judged in full, stratum 2 at half the rate:
#   stratum 1: s1a relevant, s1b not, s1c relevant           N1 = 3 pooled, n1 = 3 judged, r1 = 2 relevant
#   stratum 2: s2a relevant, s2b unjudged, s2c not, s2d unj.  N2 = 4,        n2 = 2,        r2 = 1
# R = r1 N1 / n1 + r2 N2 / n2 = 2 * 3/3 + 1 * 4/2 = 4 relevant shots inferred.
QRELS_4 = """\
611 1 s1a 1
611 1 s1b 0
611 1 s1c 1
611 2 s2a 1
611 2 s2b -1
611 2 s2c 0
611 2 s2d -1
"""
# The run, best first; u1 was never pooled.
RUN = ["s1a", "u1", "s2b", "s1b", "s2a", "s1c", "s2c"]


def hand_judgements() -> dict[str, Judgement]:
    return read_qrels_text(QRELS_4)["611"]


def read_qrels_text(text: str, tmp_path=None):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "qrels"
        path.write_text(text)
        return read_qrels(path)


def test_sample_eval_estimator_on_a_hand_worked_stratified_example() -> None:
    # Above each rank, per stratum: d pooled shots of the run, j judged, m relevant. A relevant shot at
    # rank k scores (1 + sum_s d_s (m_s + a) / (j_s + b)) / k, with (a, b) = (1e-5, 3e-5).
    # rank 1 s1a (relevant, stratum 1): nothing pooled above          -> 1/1 = 1
    # rank 2 u1 (not pooled), rank 3 s2b (stratum 2, unjudged), rank 4 s1b (stratum 1, not relevant)
    # rank 5 s2a (relevant, stratum 2): above, stratum 1 d=2 j=2 m=1, stratum 2 d=1 j=0 m=0
    #        -> (1 + 2 (1+a)/(2+b) + 1 (0+a)/(0+b)) / 5 ~ (1 + 1 + 1/3) / 5 = 0.4667
    #        (an unjudged stratum counts a/b = 1/3 of its shots as relevant: sample_eval's smoothing)
    # rank 6 s1c (relevant, stratum 1): above, stratum 1 d=2 j=2 m=1, stratum 2 d=2 j=1 m=1
    #        -> (1 + 2 (1+a)/(2+b) + 2 (1+a)/(1+b)) / 6 ~ (1 + 1 + 2) / 6 = 0.6667
    # S1 = 1 + 0.6667, S2 = 0.4667; infAP = (N1/n1 S1 + N2/n2 S2) / R = (1.6667 + 2 * 0.4667) / 4 ~ 0.65
    at_5 = (1 + 2 * (1 + A) / (2 + B) + A / B) / 5
    at_6 = (1 + 2 * (1 + A) / (2 + B) + 2 * (1 + A) / (1 + B)) / 6
    want = (3 / 3 * (1 + at_6) + 4 / 2 * at_5) / 4
    scores = inferred_ap(RUN, hand_judgements(), cutoffs=(5, 10))
    assert scores.infap == pytest.approx(want, rel=1e-12)
    assert scores.infap == pytest.approx(0.65, abs=1e-4)
    assert scores.relevant == 4
    # inferred P@c: sum_s d_s (m_s + a) / (j_s + b) over the top c, over c. Top 5: stratum 1 d=2 j=2 m=1,
    # stratum 2 d=2 j=1 m=1 -> (2 (1+a)/(2+b) + 2 (1+a)/(1+b)) / 5 ~ 3/5. The run has 7 shots, so P@10 keeps
    # the estimate at rank 7: stratum 1 d=3 j=3 m=2, stratum 2 d=3 j=2 m=1 -> (3 (2+a)/(3+b) + 3 (1+a)/(2+b)) / 10
    assert scores.precision[5] == pytest.approx((2 * (1 + A) / (2 + B) + 2 * (1 + A) / (1 + B)) / 5, rel=1e-12)
    assert scores.precision[10] == pytest.approx((3 * (2 + A) / (3 + B) + 3 * (1 + A) / (2 + B)) / 10, rel=1e-12)
    assert scores.retrieved == 7


def test_depth_cuts_the_run_and_scales_when_more_are_relevant_than_it_holds() -> None:
    # depth 5: s1c (rank 6) no longer counts: (3/3 * 1 + 4/2 * at_5) / 4, R = 4 <= 5 so no scaling
    at_5 = (1 + 2 * (1 + A) / (2 + B) + A / B) / 5
    assert inferred_ap(RUN, hand_judgements(), depth=5).infap == pytest.approx((1 + 2 * at_5) / 4, rel=1e-12)
    # depth 3: only s1a (precision 1) counts, and R = 4 > 3: infAP = (1 * 1) / 4 * (4 / 3) = 1/3
    assert inferred_ap(RUN, hand_judgements(), depth=3).infap == pytest.approx(1 / 3, rel=1e-12)


def test_five_field_qrels_read_the_same() -> None:
    five = "".join(f"{t} 0 {shot} {stratum} {rel}\n" for t, stratum, shot, rel in
                   (line.split() for line in QRELS_4.splitlines()))
    assert read_qrels_text(five) == read_qrels_text(QRELS_4)


@pytest.mark.parametrize("text, message", [
    ("611 1 s1a\n", "found 3"),
    ("611 1 s1a 1\n611 0 s1b 1 0\n", "line 2"),
    ("611 1 s1a yes\n", "judgement 'yes' is not a number"),
    ("611 1 s1a -2\n", "use -1 (not judged)"),
])
def test_bad_qrels_name_the_line(text: str, message: str) -> None:
    with pytest.raises(PigError, match=re.escape(message)):
        read_qrels_text(text)


def random_topics(seed: int, strata: int):
    """Topics of pooled shots (judgements -1, 0, 1, 2 in `strata` strata) and runs with unpooled shots and
    tied scores."""
    rng = random.Random(seed)
    qrels, run = {}, {}
    for topic in range(1, 9):
        pooled = [f"shot{topic}_{i}" for i in range(rng.randint(5, 60))]
        judgements = {shot: Judgement(str(rng.randint(1, strata)), rng.choice((-1, -1, 0, 0, 0, 1, 2)))
                      for shot in pooled}
        judgements[pooled[0]] = Judgement("1", 1)  # trec_eval skips topics without a relevant shot
        shots = rng.sample(pooled, rng.randint(1, len(pooled))) + [f"other{topic}_{i}" for i in range(20)]
        qrels[str(topic)] = judgements
        run[str(topic)] = {shot: round(rng.random(), 1) for shot in shots}  # one decimal: many ties
    return qrels, run


def trec_eval_measure(qrels, run, measure: str) -> dict[str, float]:
    from pigcli.query.trec import trec_eval_qrels

    results = pytrec_eval.RelevanceEvaluator(trec_eval_qrels(qrels), {measure}).evaluate(run)
    return {topic: values[measure] for topic, values in results.items()}


@pytest.mark.parametrize("seed", range(4))
def test_one_stratum_is_trec_eval_infap(seed: int) -> None:
    # With one stratum, sample_eval's estimator is trec_eval's infAP but for the smoothing constant in the
    # denominator (3e-5 against 2e-5); with trec_eval's constant the two agree to rounding, ties included.
    # (The constants matter where only unjudged shots lie above a relevant one: they count as relevant
    # at a/b = 1/3 in sample_eval, 1/2 in trec_eval.)
    qrels, run = random_topics(seed, strata=1)
    theirs = trec_eval_measure(qrels, run, "infAP")
    assert set(theirs) == set(qrels)
    for topic, judgements in qrels.items():
        ranked = run_order(run[topic])
        assert inferred_ap(ranked, judgements, smoothing=TREC_EVAL_SMOOTHING).infap == pytest.approx(
            theirs[topic], abs=1e-12)


def test_every_shot_judged_infap_is_ap(tmp_path) -> None:
    # Every pooled shot judged, one stratum: infAP estimates AP itself. The run holds 1005 shots with
    # relevant ones beyond rank 1000, so the depth cut shows too.
    rng = random.Random(7)
    shots = [f"shot{i}" for i in range(1005)]
    relevant = set(rng.sample(shots[:200], 12)) | {"shot1002", "shot1004"}
    qrels = tmp_path / "qrels"
    qrels.write_text("".join(f"611 1 {shot} {int(shot in relevant)}\n" for shot in shots[::2] + list(relevant)))
    run = tmp_path / "run"
    run.write_text("".join(f"611 Q0 {shot} {rank} {1 - rank / 2000:.6f} tag\n"
                           for rank, shot in enumerate(shots, start=1)))
    report = evaluate_run(run, qrels)
    assert report.complete
    top = {"611": {shot: 1 - rank / 2000 for rank, shot in enumerate(shots[:1000], start=1)}}
    judged = {"611": {line.split()[2]: Judgement("1", int(line.split()[3])) for line in qrels.read_text().splitlines()}}
    ap = trec_eval_measure(judged, top, "map")["611"]
    assert report.per_topic["611"]["AP"] == ap
    assert report.per_topic["611"]["infAP"] == pytest.approx(ap, abs=1e-4)
    assert report.per_topic["611"]["recall@1000"] == 12 / 14
    assert report.per_topic["611"]["P@10"] == trec_eval_measure(judged, top, "P_10")["611"]


def test_without_trec_eval_only_the_estimates(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "pytrec_eval", None)  # import fails as where it is not installed
    (tmp_path / "qrels").write_text(QRELS_4)
    (tmp_path / "run").write_text("".join(f"611 Q0 {s} {i} {10 - i} t\n" for i, s in enumerate(RUN, start=1)))
    report = evaluate_run(tmp_path / "run", tmp_path / "qrels")
    assert "AP" not in report.per_topic["611"] and not report.library
    assert report.per_topic["611"]["infAP"] == pytest.approx(0.65, abs=1e-4)
    assert "pip install 'pigcli[trec]'" in capsys.readouterr().err


def test_run_lines_need_six_fields(tmp_path) -> None:
    path = tmp_path / "run"
    path.write_text("611 Q0 a 1 0.5 tag\n611 Q0 b 2 0.4\n")
    with pytest.raises(PigError, match="line 2: a TREC run line has 6 fields"):
        read_run(path)


def test_topics_xml_and_lines(tmp_path) -> None:
    xml = tmp_path / "tv19.avs.topics.xml"
    xml.write_text('<?xml version="1.0" encoding="UTF-8"?>\n'
                   '<!DOCTYPE videoAdhocSearchTopics SYSTEM "videoAdhocSearchTopics.dtd">\n'
                   '<videoAdhocSearchTopics>\n'
                   '  <videoAdhocSearchTopic num="611" text="Find shots of a drone flying"/>\n'
                   '  <videoAdhocSearchTopic num="612">Find shots of a truck\n   at night</videoAdhocSearchTopic>\n'
                   '</videoAdhocSearchTopics>\n')
    lines = tmp_path / "tv19.avs.topics.txt"
    lines.write_text("611 Find shots of a drone flying\n\n612 Find shots of a truck at night\n")
    for path in (xml, lines):
        assert [(q.id, q.text) for q in read_topics(path)] == [
            ("611", "Find shots of a drone flying"), ("612", "Find shots of a truck at night")]
    lines.write_text("611 a\n611 b\n")
    with pytest.raises(PigError, match="topic ids repeat: 611"):
        read_topics(lines)


def test_pig_eval_qrels_command(tmp_path) -> None:
    from typer.testing import CliRunner

    from pigcli.cli import app

    def pig(*args):
        result = CliRunner().invoke(app, [str(a) for a in args])
        return result.exit_code, result.stdout, result.stderr

    (tmp_path / "qrels").write_text(QRELS_4 + "612 1 x 1\n")
    (tmp_path / "run").write_text("".join(f"611 Q0 {s} {i} {10 - i} t\n" for i, s in enumerate(RUN, start=1)))
    code, out, err = pig("eval", tmp_path / "run", "--qrels", tmp_path / "qrels")
    assert code == 0, err
    assert out.splitlines()[1].split() == ["infAP", "0.6500"]
    assert "1 judged topics have no shot in the run" in err
    code, out, err = pig("eval", tmp_path / "run")
    assert code == 2 and "give --captions" in err
    code, out, err = pig("eval", tmp_path / "run", "--qrels", tmp_path / "qrels", "--rerank", 5)
    assert code == 2 and "--rerank score an index; --qrels scores a finished run" in err
    code, out, err = pig("rank", tmp_path / "index.h5", "--topics", tmp_path / "topics.txt", "--run-tag", "F Pig")
    assert code == 2 and "--run-tag must be one word" in err


def test_no_shared_topic_names_both_id_lists(tmp_path) -> None:
    (tmp_path / "qrels").write_text("1501 1 a 1\n")
    (tmp_path / "run").write_text("501 Q0 a 1 1.0 t\n")
    with pytest.raises(PigError, match=r"\(run: 501; qrels: 1501\)"):
        evaluate_run(tmp_path / "run", tmp_path / "qrels")
