"""Decoding, sampling and preprocessing (pigcli/inputs/video.py) on real generated files."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import BROKEN_KINDS, VIDEO_FOLDER_SPECS, frame_number, video_frames, write_broken
from pigcli.inputs.video import (VideoError, normalize, read_clip, resize_and_crop, resize_frames, resolve_decoder,
                                  sample_indices, to_uint8)

DECODERS = ["decord", "pyav"]


# --- sampling --------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, t", [(16, 4), (100, 12), (12, 12), (13, 12), (5, 12), (1, 12), (7, 3), (1000, 7)])
def test_sample_indices_are_segment_centres(n: int, t: int) -> None:
    got = sample_indices(n, t, "centre")
    want = [(2 * i + 1) * n // (2 * t) for i in range(t)]  # floor((i + 0.5) * n / T), in integers
    assert got.dtype == np.int64 and got.tolist() == want
    assert np.all(np.diff(got) >= 0) and got.min() >= 0 and got.max() < n
    if n < t:
        assert len(set(got.tolist())) == n  # every frame used, some repeated
    else:
        assert len(set(got.tolist())) == t


def test_sample_indices_known_values() -> None:
    assert sample_indices(10, 4, "centre").tolist() == [1, 3, 6, 8]
    assert sample_indices(5, 12, "centre").tolist() == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4]


@pytest.mark.parametrize("n, t", [(16, 8), (100, 12), (12, 12), (13, 12), (5, 12), (1, 12), (7, 3), (1000, 7),
                                  (300, 12), (1, 1), (9, 1)])
def test_uniform_sampling_picks_the_official_frame_numbers(n: int, t: int) -> None:
    """The official test-time sampler, linspace(0, n - 1, T).astype(int): frame floor(i (n - 1) / (T - 1))."""
    got = sample_indices(n, t)  # uniform is the default
    want = [i * (n - 1) // (t - 1) if t > 1 else 0 for i in range(t)]
    assert got.dtype == np.int64 and got.tolist() == want
    assert got[0] == 0 and got[-1] == (n - 1 if t > 1 else 0)  # the first and the last frame are in


def test_uniform_sampling_known_values_and_float_rounding() -> None:
    # MSRVTT-like: 300 frames, 12 sampled (linspace 0, 27.18, 54.36, ... 299)
    assert sample_indices(300, 12).tolist() == [0, 27, 54, 81, 108, 135, 163, 190, 217, 244, 271, 299]
    assert sample_indices(16, 8).tolist() == [0, 2, 4, 6, 8, 10, 12, 15]  # centre: 1, 3, ..., 15
    # where float linspace lands just below an integer the official code truncates it down; so does pig
    # (exactly: 7 * 122 / 14 = 61, but linspace gives 60.99999...)
    assert sample_indices(123, 15)[7] == 60 == int(np.linspace(0, 122, 15)[7])


@pytest.mark.parametrize("n, t", [(100, 12), (300, 12), (12, 12), (13, 12), (5, 12), (1, 12), (50, 4)])
def test_training_jitter_follows_the_official_rule_and_is_seeded(n: int, t: int) -> None:
    """First frame from [0, d], last from [n - 1 - d, n - 1], d = n // (T - 1); linspace between them."""
    spread = n // (t - 1)
    firsts, lasts = set(), set()
    for epoch in range(200):
        got = sample_indices(n, t, jitter=(0, 2, epoch, 7))
        first, last = int(got[0]), int(got[-1])
        assert 0 <= first <= spread and n - 1 - spread <= last <= n - 1
        assert got.tolist() == np.linspace(first, last, t).astype(np.int64).tolist()
        assert got.tolist() == sample_indices(n, t, jitter=(0, 2, epoch, 7)).tolist()  # seeded: reproducible
        firsts.add(first), lasts.add(last)
    assert firsts == set(range(min(spread, n - 1) + 1)) or n <= 2  # every allowed start is drawn
    assert lasts == set(range(max(n - 1 - spread, 0), n))
    assert sample_indices(n, t, "centre", jitter=(0, 2, 0, 7)).tolist() == sample_indices(n, t, "centre").tolist()


def test_training_jitter_stays_ordered_for_few_frames() -> None:
    """T <= 3: the official d = n // (T - 1) can let the first index pass the last (or leave the video);
    pig caps d at (n - 1) // 2."""
    for n, t in [(10, 3), (11, 2), (2, 2), (1, 2), (6, 1)]:
        for epoch in range(100):
            got = sample_indices(n, t, jitter=(epoch,))
            assert np.all(np.diff(got) >= 0) and got.min() >= 0 and got.max() < n, (n, t, got)


def test_unknown_sampling_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown frame sampling 'middle'"):
        sample_indices(10, 4, "middle")


def test_sample_indices_no_frames() -> None:
    with pytest.raises(VideoError, match="no frames"):
        sample_indices(0, 12)


# --- resize and crop -------------------------------------------------------------------------------

def _thirds(height: int, width: int, vertical: bool = False) -> np.ndarray:
    """[1, H, W, 3]: red | green | blue thirds along the long side."""
    rgb = np.zeros((1, height, width, 3), np.uint8)
    length = height if vertical else width
    for c in range(3):
        part = slice(c * length // 3, (c + 1) * length // 3)
        if vertical:
            rgb[0, part, :, c] = 255
        else:
            rgb[0, :, part, c] = 255
    return rgb


def test_crop_without_resize_is_the_exact_centre() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (2, 40, 81, 3), dtype=np.uint8)
    out = resize_and_crop(rgb, 40)
    assert out.shape == (2, 3, 40, 40) and out.dtype == np.uint8
    left = (81 - 40) // 2
    np.testing.assert_array_equal(out, rgb[:, :, left : left + 40].transpose(0, 3, 1, 2))


@pytest.mark.parametrize("height, width, vertical", [(64, 192, False), (192, 64, True), (20, 60, False)])
def test_resize_shortest_side_then_centre_crop(height: int, width: int, vertical: bool) -> None:
    out = resize_and_crop(_thirds(height, width, vertical), 32)
    assert out.shape == (1, 3, 32, 32)
    # the long side became 96 px: the centre crop is the green third, blurred only at its edges
    inner = out[0, :, 4:28, :] if vertical else out[0, :, :, 4:28]
    assert inner[1].min() >= 250 and inner[0].max() <= 5 and inner[2].max() <= 5


def test_resize_keeps_square_and_upscales() -> None:
    rgb = np.full((3, 10, 10, 3), 77, np.uint8)
    out = resize_and_crop(rgb, 32)
    assert out.shape == (3, 3, 32, 32)
    assert np.all(out == 77)


def _official_transform(rgb: np.ndarray, size: int, mean, std) -> np.ndarray:
    """CLIP-ViP's test transform as the official loader applies it, computed independently of pig: uint8
    frames to floats in 0..1, Resize((S, S)) bicubic without antialiasing (torchvision 0.12 on tensors),
    the centre crop of S x S (a no-op), Normalize(mean, std)."""
    import torch
    import torch.nn.functional as F

    floats = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255.0
    resized = F.interpolate(floats, size=(size, size), mode="bicubic", align_corners=False, antialias=False)
    return ((resized - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)).numpy()


CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


@pytest.mark.parametrize("height, width", [(48, 64), (60, 32), (24, 24), (64, 64)])
def test_squash_is_the_official_transform(height: int, width: int) -> None:
    import torch

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    rgb[0] = _thirds(height, width, vertical=False)[0]  # hard edges: bicubic overshoots past 0 and 255
    out = resize_frames(rgb, 32, "squash")
    assert out.shape == (3, 3, 32, 32) and out.dtype == np.float32
    got = normalize(torch.from_numpy(out), CLIP_MEAN, CLIP_STD).numpy()
    np.testing.assert_allclose(got, _official_transform(rgb, 32, CLIP_MEAN, CLIP_STD), rtol=0, atol=2e-5)
    if (height, width) != (32, 32) and height != 64:
        assert out.min() < 0 or out.max() > 255  # floats kept: neither rounded nor clamped, as the official


def test_squash_keeps_the_whole_width_that_crop_drops() -> None:
    """A 3:1 frame of three vertical stripes: squash keeps all three, crop only the middle one."""
    rgb = _thirds(32, 96, vertical=False)
    squash, crop = resize_frames(rgb, 32, "squash"), resize_frames(rgb, 32, "crop")
    assert squash[0, 0, :, :8].min() > 250 and squash[0, 2, :, -8:].min() > 250  # red left, blue right
    assert crop[0, 0, :, :8].max() < 5 and crop[0, 2, :, -8:].max() < 5        # cut away by the crop
    assert crop.dtype == np.uint8


def test_squash_at_the_model_size_is_the_identity() -> None:
    """Square frames of the model's size (the toy corpus and pig demo): both rules give the source pixels."""
    rgb = np.random.default_rng(2).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_frames(rgb, 64, "squash"), rgb.transpose(0, 3, 1, 2).astype(np.float32))
    np.testing.assert_array_equal(resize_frames(rgb, 64, "crop"), rgb.transpose(0, 3, 1, 2))


def test_to_uint8_rounds_half_to_even_and_clamps() -> None:
    frames = np.array([-3.2, 0.5, 1.5, 2.49, 254.6, 300.0], np.float32)
    assert to_uint8(frames).tolist() == [0, 0, 2, 2, 255, 255]
    raw = np.array([7, 200], np.uint8)
    assert to_uint8(raw) is raw


def test_unknown_resize_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown resize 'stretch'"):
        resize_frames(np.zeros((1, 8, 8, 3), np.uint8), 8, "stretch")


# --- decoding real files ---------------------------------------------------------------------------

@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("name", list(VIDEO_FOLDER_SPECS))
def test_every_container_is_readable(video_folder, name: str, decoder: str) -> None:
    frames, height, width, _ = VIDEO_FOLDER_SPECS[name]
    clip = read_clip(video_folder / name, 12, 32, decoder)
    assert clip.frames.shape == (12, 3, 32, 32) and clip.frames.dtype == np.float32  # squash keeps floats
    assert clip.num_frames == frames
    assert clip.frame_index.tolist() == sample_indices(frames, 12).tolist()
    assert clip.fps == pytest.approx(8.0)
    np.testing.assert_allclose(clip.timestamps, clip.frame_index / 8.0)


@pytest.mark.parametrize("name", list(VIDEO_FOLDER_SPECS))
def test_decord_and_pyav_give_the_same_frames(video_folder, name: str) -> None:
    a = read_clip(video_folder / name, 12, 32, "decord")
    b = read_clip(video_folder / name, 12, 32, "pyav")
    np.testing.assert_array_equal(a.frame_index, b.frame_index)
    diff = np.abs(a.frames.astype(np.float64) - b.frames.astype(np.float64))
    assert diff.max() <= 2, diff.max()  # measured: 0 for every file here (both use FFmpeg's swscale)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("suffix", [".mp4", ".avi"])  # h264 crf 18 and mjpeg keep the frame code intact
def test_decoded_frames_are_the_sampled_source_frames(make_video, suffix: str, decoder: str) -> None:
    path = make_video("numbered" + suffix, num_frames=30, height=48, width=64, seed=3)
    clip = read_clip(path, 7, 48, decoder, resize="crop")  # shortest side already 48: a pure centre crop
    assert [frame_number(f, channels_first=True) for f in clip.frames] == clip.frame_index.tolist()
    # and the picture itself is the source's centre crop, up to coding loss (measured median error:
    # 1 for h264, 2 for mjpeg; the mean is larger, from chroma subsampling at the squares' edges)
    source = video_frames(30, 48, 64, seed=3)[clip.frame_index][:, :, 8:56].transpose(0, 3, 1, 2)
    assert np.median(np.abs(source.astype(int) - clip.frames.astype(int))) <= 3


@pytest.mark.parametrize("decoder", DECODERS)
def test_short_video_repeats_frames(make_broken, decoder: str) -> None:
    clip = read_clip(make_broken("short"), 12, 32, decoder)  # 5 frames, T = 12: not an error
    assert clip.num_frames == 5
    assert clip.frame_index.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4]  # floor(i * 4 / 11), uniform
    np.testing.assert_array_equal(clip.frames[0], clip.frames[1])
    assert [frame_number(f, channels_first=True) for f in clip.frames] == clip.frame_index.tolist()


def test_auto_reads_videos_that_decord_cannot(make_video) -> None:
    """decord fails on some frame widths (48 px here; dmlc/decord#336): 'auto' falls back to PyAV."""
    path = make_video("narrow.mp4", num_frames=16, height=64, width=48, seed=4)
    auto = read_clip(path, 8, 32, "auto")
    pyav = read_clip(path, 8, 32, "pyav")
    np.testing.assert_array_equal(auto.frames, pyav.frames)
    np.testing.assert_array_equal(auto.frame_index, pyav.frame_index)


EXPECTED_ERRORS = {
    "garbage": "cannot decode",
    "empty": "empty file (0 bytes)",
    "truncated": "cannot decode",
    "audio": "no video stream",
}


@pytest.mark.parametrize("decoder", ["auto", *DECODERS])
@pytest.mark.parametrize("kind", [k for k in BROKEN_KINDS if k != "short"])
def test_broken_files_raise_video_error(tmp_path, kind: str, decoder: str) -> None:
    path = write_broken(kind, tmp_path / f"{kind}.mp4")
    with pytest.raises(VideoError) as info:
        read_clip(path, 12, 32, decoder)
    message = str(info.value)
    assert EXPECTED_ERRORS[kind] in message
    assert "\n" not in message and len(message) < 200
    assert not message.startswith("[")  # no decoder log prefix (clock time, source file)


@pytest.mark.parametrize("decoder", ["auto", *DECODERS])
def test_missing_file_and_folder(tmp_path, decoder: str) -> None:
    with pytest.raises(VideoError, match="file not found"):
        read_clip(tmp_path / "nope.mp4", 12, 32, decoder)
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(VideoError, match="folder"):
        read_clip(tmp_path / "dir.mp4", 12, 32, decoder)


@pytest.mark.parametrize("decoder", DECODERS)
def test_same_failure_gives_the_same_message(tmp_path, decoder: str) -> None:
    """Summaries group failures by message: two audio-only files must give identical text."""
    messages = set()
    for name in ("one.mp4", "two.mkv"):
        with pytest.raises(VideoError) as info:
            read_clip(write_broken("audio", tmp_path / name), 12, 32, decoder)
        messages.add(str(info.value))
    assert messages == {"no video stream (audio-only or not a video)"}


def test_resolve_decoder() -> None:
    assert resolve_decoder("pyav") == "pyav"
    assert resolve_decoder("auto") in ("decord", "pyav")
    with pytest.raises(ValueError, match="unknown decoder"):
        resolve_decoder("ffmpeg")


@pytest.mark.parametrize("decoder", DECODERS)
def test_read_clip_decodes_the_frames_each_sampling_chooses(make_video, decoder: str) -> None:
    path = make_video("numbered.avi", 30)  # each frame's red level tells its number (mjpeg: every frame intra)
    for sampling, jitter in (("uniform", None), ("centre", None), ("uniform", (0, 2, 1, 5))):
        clip = read_clip(path, 12, 32, decoder, sampling, jitter)
        assert clip.frame_index.tolist() == sample_indices(30, 12, sampling, jitter).tolist()
        assert [frame_number(f, channels_first=True) for f in clip.frames] == clip.frame_index.tolist()
    jittered = {tuple(read_clip(path, 12, 32, decoder, jitter=(0, 2, epoch, 5)).frame_index) for epoch in range(4)}
    assert len(jittered) > 1  # epochs see other frames
