"""Pictures: patch boxes, `pig explain` PNGs, `pig rank --format html` pages, and their errors."""

from __future__ import annotations

import base64
import html
import io
import re
import shutil
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import TINY_T, frame_number, write_broken, write_test_video
from pigcli.query import media
from pigcli.cli import app
from pigcli.errors import PigError
from pigcli.query.rank import Ranking

TINY_S, TINY_PATCH = 32, 8             # the tiny preset's image and patch size: a 4 x 4 grid
ODD_ID = "<i>x&\"y'"                     # a video id that html must escape
VIDEOS = ("alpha.mp4", "bravo.mkv", "charlie.avi")


def pig(*args) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], env={"PIG_INDEX": None, "PIG_DEBUG": None})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def chain(tmp_path_factory, tiny_model_dir, video_folder):
    """3 videos (one with an id html must escape) -> extract, select (k 16), generate, fuse."""
    from pigcli.stages.extract import extract
    from pigcli.stages.fuse import fuse
    from pigcli.stages.generate import generate
    from pigcli.stages.select import select

    root = tmp_path_factory.mktemp("media")
    videos = root / "videos"
    videos.mkdir()
    for name in VIDEOS:
        shutil.copy(video_folder / name, videos / name)
    shutil.copy(video_folder / "delta.webm", videos / f"{ODD_ID}.webm")
    paths = SimpleNamespace(videos=videos, feats=root / "feats.h5", sel=root / "sel.h5", gen=root / "gen.h5",
                            index=root / "index.h5")
    extract([videos], paths.feats, str(tiny_model_dir), device="cpu", workers=0)
    select(paths.feats, paths.sel)
    generate(paths.sel, paths.gen, str(tiny_model_dir), device="cpu")
    fuse(paths.gen, paths.index, str(tiny_model_dir), device="cpu")
    return paths


def stored(path, video_id: str, *names):
    with h5py.File(path, "r") as handle:
        ids = [x.decode() if isinstance(x, bytes) else x for x in handle["ids"][:]]
        row = ids.index(video_id)
        return [handle[name][row] for name in names]


# --- geometry --------------------------------------------------------------------------------------

def test_patch_boxes_are_the_pixels_the_backbone_reads_for_the_stored_patch_numbers(chain, tiny_model) -> None:
    """Each box, and only it, feeds the patch token its stored flat number names (the model's own conv)."""
    flat, scores = stored(chain.sel, "alpha", "selected_index", "selected_score")
    view = media.selected_patches(chain.sel, "alpha")
    boxes = media.patch_boxes(view)
    assert len(boxes) == len(flat) == 16
    np.testing.assert_array_equal([b.score for b in boxes], scores.astype(np.float32))
    conv = tiny_model.model.clip.vision_model.embeddings.patch_embedding
    per_frame = (TINY_S // TINY_PATCH) ** 2
    for box, number in zip(boxes, flat):
        assert box.frame == number // per_frame
        assert (box.x1 - box.x0, box.y1 - box.y0) == (TINY_PATCH, TINY_PATCH)
        pixels = torch.zeros(1, 3, TINY_S, TINY_S)
        pixels[:, :, box.y0:box.y1, box.x0:box.x1] = 1.0
        with torch.no_grad():
            tokens = conv(pixels).flatten(2)[0].T            # [L, W], the backbone's patch order
        touched = np.flatnonzero(tokens.abs().sum(1).numpy() > 0)
        assert touched.tolist() == [number % per_frame]


def test_selected_patches_from_every_stage_file(chain) -> None:
    """A generate or index file finds its select file; an extract file gives the top k of its ITS scores."""
    from_sel = media.selected_patches(chain.sel, "bravo")
    for path in (chain.gen, chain.index):
        view = media.selected_patches(path, "bravo")
        assert view.source == chain.sel
        np.testing.assert_array_equal(media.patch_boxes(view), media.patch_boxes(from_sel))
    (its_score,) = stored(chain.feats, "bravo", "its_score")
    top5 = np.argsort(-its_score, kind="stable")[:5]
    view = media.selected_patches(chain.feats, "bravo", k=5)
    np.testing.assert_array_equal(view.frames * 16 + view.patches, top5)
    np.testing.assert_array_equal(view.scores, its_score[top5])
    best3 = media.selected_patches(chain.sel, "bravo", k=3)
    np.testing.assert_array_equal(media.patch_boxes(best3), media.patch_boxes(from_sel)[:3])
    with pytest.raises(PigError, match="-k must be between 1 and 16"):
        media.selected_patches(chain.sel, "bravo", k=17)
    default = media.selected_patches(chain.feats, "bravo")        # the model's select_k, as select took it
    np.testing.assert_array_equal(default.frames * 16 + default.patches, from_sel.frames * 16 + from_sel.patches)
    assert (view.num_frames, view.grid, view.patch_size, view.image_size) == (TINY_T, 4, TINY_PATCH, TINY_S)


def test_frames_are_the_ones_extract_sampled(chain) -> None:
    videos = media.SourceVideos(chain.index)
    assert videos.file == chain.feats
    assert media.video_path_for(chain.index, "charlie") == (chain.videos / "charlie.avi").absolute()
    frames = videos.frames("charlie")
    assert frames.shape == (TINY_T, TINY_S, TINY_S, 3) and frames.dtype == np.uint8
    (recorded,) = stored(chain.feats, "charlie", "frame_index")
    assert [frame_number(f) for f in frames] == recorded.tolist()
    thumbs = videos.thumbnails("charlie", count=3, max_side=20)
    shown = [Image.open(io.BytesIO(t)) for t in thumbs]
    assert [(im.format, im.size) for im in shown] == [("JPEG", (20, 20))] * 3
    picked = [frame_number(np.asarray(im.convert("RGB"))) for im in shown]
    assert picked == recorded[[2, 6, 10]].tolist()      # spread evenly over the 12 sampled frames


def test_frames_follow_the_sampling_the_file_records(chain, tmp_path, tiny_model_dir) -> None:
    """A file made with centre sampling (every file made before --sampling) draws the frames it sampled."""
    from pigcli.stages.extract import ExtractSettings, extract

    centre = tmp_path / "centre.h5"
    extract([chain.videos / "bravo.mkv"], centre, str(tiny_model_dir), device="cpu", workers=0,
            settings=ExtractSettings(sampling="centre"))
    (recorded,) = stored(centre, "bravo", "frame_index")
    (uniform,) = stored(chain.feats, "bravo", "frame_index")
    assert recorded.tolist() != uniform.tolist()
    # frames() checks the frame numbers it sampled against the recorded ones (it raised before it followed them)
    drawn = media.SourceVideos(centre).frames("bravo")
    source = chain.videos / "bravo.mkv"
    np.testing.assert_array_equal(drawn, media.model_frames(source, TINY_T, TINY_S, sampling="centre"))
    assert not np.array_equal(drawn, media.model_frames(source, TINY_T, TINY_S, sampling="uniform"))


def test_jpeg_shrinks_to_max_side_and_never_enlarges() -> None:
    frame = np.zeros((30, 60, 3), np.uint8)
    frame[..., 2] = 200
    assert Image.open(io.BytesIO(media.jpeg(frame, max_side=40))).size == (40, 20)
    small = Image.open(io.BytesIO(media.jpeg(frame, max_side=160)))
    assert small.size == (60, 30)
    assert np.abs(np.asarray(small).astype(int) - [0, 0, 200]).max() <= 3


# --- pig explain ------------------------------------------------------------------------------------

def test_explain_png_outlines_the_selected_patches(chain, tmp_path) -> None:
    out = tmp_path / "explain.png"
    code, stdout, stderr = pig("explain", "alpha", "--features", chain.sel, "-o", out)
    assert code == 0, stderr
    assert stdout.strip() == str(out)
    image = np.asarray(Image.open(out).convert("RGB"))
    scale = 6                                               # 32 px frames drawn at 192 px (at least MIN_CELL)
    cell, gap, title, label = TINY_S * scale, 6, 28, 18
    assert image.shape == (title + 3 * (cell + label + gap), 4 * cell + 5 * gap, 3)   # 12 frames, 4 per row

    frames = media.SourceVideos(chain.sel).frames("alpha")
    view = media.selected_patches(chain.sel, "alpha")
    layout = media.ExplainLayout(TINY_T, TINY_S)

    def bottom_left(frame: int, x0: int, y1: int) -> np.ndarray:
        left, top = layout.frame_origin(frame)
        return image[top + y1 * scale - 2, left + x0 * scale + 1]

    boxes = media.patch_boxes(view)
    best, worst = boxes[0], boxes[-1]
    assert tuple(bottom_left(best.frame, best.x0, best.y1)) == media.outline_colour(1.0) == (255, 0, 0)
    assert tuple(bottom_left(worst.frame, worst.x0, worst.y1)) == media.outline_colour(0.0) == (255, 220, 0)
    chosen = {(b.frame, b.x0, b.y0) for b in boxes}
    plain = [(f, x, y) for f in range(TINY_T) for y in range(0, TINY_S, TINY_PATCH) for x in range(0, TINY_S, TINY_PATCH)
             if (f, x, y) not in chosen]
    assert plain
    for frame, x0, y0 in plain:
        pixel = bottom_left(frame, x0, y0 + TINY_PATCH)
        np.testing.assert_array_equal(pixel, frames[frame, y0 + TINY_PATCH - 1, x0])   # the frame, untouched


def one_line_error(code: int, stderr: str) -> str:
    assert code == 1 and stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    return stderr


def test_explain_errors_say_what_is_wrong(chain, tmp_path, tiny_model_dir) -> None:
    from pigcli.stages.embed_text import embed_text
    from pigcli.stages.extract import extract

    out = tmp_path / "e.png"
    err = one_line_error(*pig("explain", "zulu", "--features", chain.sel, "-o", out)[::2])
    assert "'zulu' is not in" in err and "sel.h5" in err
    (tmp_path / "q.txt").write_text("a red car\n")
    embed_text(tmp_path / "q.txt", tmp_path / "q.h5", str(tiny_model_dir), device="cpu")
    err = one_line_error(*pig("explain", "alpha", "--features", tmp_path / "q.h5", "-o", out)[::2])
    assert "is a 'embed-text' file" in err
    err = one_line_error(*pig("explain", "alpha", "--features", chain.sel, "-o", chain.sel)[::2])
    assert "is an input of this command" in err

    video = write_test_video(tmp_path / "videos" / "gone.mp4", 16, 48, 64, seed=3)
    write_broken("garbage", tmp_path / "videos" / "broken.mp4")
    extract([tmp_path / "videos"], tmp_path / "feats.h5", str(tiny_model_dir), device="cpu", workers=0)
    err = one_line_error(*pig("explain", "broken", "--features", tmp_path / "feats.h5", "-o", out)[::2])
    assert "'broken' failed in" in err and "cannot decode" in err
    write_test_video(video, 30, 48, 64, seed=3)             # rewritten: other frames are sampled
    err = one_line_error(*pig("explain", "gone", "--features", tmp_path / "feats.h5", "-o", out)[::2])
    assert f"{video} has changed since" in err and "rerun extract" in err
    video.unlink()
    err = one_line_error(*pig("explain", "gone", "--features", tmp_path / "feats.h5", "-o", out)[::2])
    assert f"the source video of 'gone' is missing: {video}" in err
    assert not out.exists()


# --- pig rank --format html -------------------------------------------------------------------------

def test_rank_html_page_has_every_result_escaped_with_thumbnails(chain, tmp_path) -> None:
    query = "</h2><script>alert('q')</script> & a red square"
    code, tsv, err = pig("rank", chain.index, "-q", query, "-q", "blue", "-n", 4)
    assert code == 0, err
    ranking = [line.split("\t") for line in tsv.splitlines()]
    out = tmp_path / "results.html"
    code, stdout, err = pig("rank", chain.index, "-q", query, "-q", "blue", "-n", 4, "--format", "html",
                            "--thumbnails", 2, "-o", out)
    assert code == 0, err
    assert stdout.strip() == str(out)
    page = out.read_text(encoding="utf-8")
    assert "<script>" not in page and "<i>" not in page
    assert html.escape(query) in page
    cells = re.findall(r'<tr><td class="num">(\d+)</td><td>(.*?)</td><td class="num">([-0-9.]+)</td>'
                       r'<td class="thumbs">(.*?)</td></tr>', page)
    assert [(rank, html.unescape(video)) for rank, video, _, _ in cells] == [(r[1], r[2]) for r in ranking]
    assert ODD_ID in [r[2] for r in ranking]
    np.testing.assert_allclose([float(c[2]) for c in cells], [float(r[3]) for r in ranking], atol=1e-4)
    for _, video, _, thumbs in cells:
        uris = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', thumbs)
        assert len(uris) == 2
        assert Image.open(io.BytesIO(base64.b64decode(uris[0]))).size == (TINY_S, TINY_S)


def test_rank_html_shows_a_missing_video_in_its_row(chain, tmp_path) -> None:
    moved = chain.videos / "bravo.mkv"
    shutil.move(moved, tmp_path / "bravo.mkv")
    try:
        code, _, err = pig("rank", chain.index, "-q", "x", "-n", 4, "--format", "html", "-o", tmp_path / "r.html")
    finally:
        shutil.move(tmp_path / "bravo.mkv", moved)
    assert code == 0, err
    page = (tmp_path / "r.html").read_text()
    assert html.escape(f"the source video of 'bravo' is missing: {moved.absolute()}") in page
    assert "bravo" in err                                    # and a warning on stderr
    assert page.count("data:image/jpeg") == 3 * 4            # the other three videos' thumbnails


def test_ranking_html_escapes_ids_and_texts() -> None:
    ids = ["</td><script>alert(1)</script>", "a&b", 'q"uote']
    ranking = Ranking(["<q1>"], ids, np.array([[2, 0, 1]]), np.array([[0.5, 0.25, -0.125]], np.float32),
                      ["<b>bold</b> query"])
    page = media.ranking_html(ranking, None)
    for text in ids + ["<q1>", "<b>bold</b> query"]:
        assert html.escape(text) in page
    assert "<script>" not in page and "<b>" not in page and "<img" not in page
    assert page.index(html.escape(ids[2])) < page.index(html.escape(ids[0])) < page.index(html.escape(ids[1]))
    with pytest.raises(PigError, match="not found"):
        media.SourceVideos("no-such-index.h5")


def test_result_file_never_replaces_a_stage_file(chain, tmp_path) -> None:
    copy = tmp_path / "copy.h5"
    shutil.copy(chain.feats, copy)
    err = one_line_error(*pig("rank", chain.index, "-q", "x", "-o", copy)[::2])
    assert "exists and is not a pig result" in err
