"""Training data: caption pairs, per-epoch batch plans, and the three video sources.

Frozen-feature mode (`FeatureSource`): the tokens of an `extract` file (x_v, x_p, x_f and the top-k
patches by the stored ITS score, exactly what `pig select` takes), held in memory. Valid only while
the backbone is frozen: the stored tokens are what the backbone computes.
Raw-video mode (`VideoSource`): frames decoded with `read_clip` in a torch DataLoader (spawned
workers); the training step runs the backbone.
Cached-frames mode (`FrameSource`): the same frames, decoded once by `pig frames` and read back from
its file; the batches, and so the training step, are identical to raw-video mode without its jitter.
Raw-video training with uniform sampling jitters the frames per video and epoch, as the official code
does (pigcli.inputs.video.sample_indices), seeded by (seed, phase, epoch, video row).

Batches are planned in the main process from (seed, phase, epoch) alone, so a resumed run sees the
same batches and captions as an uninterrupted one, and every rank of a torchrun job the same global
batch (each takes its own contiguous slice).
"""

from __future__ import annotations

import hashlib
import signal
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..inputs.captions import group_paragraphs, load_captions
from ..console import log
from ..errors import StaleInputError, UsageError
from ..core.selection import PatchIndexError, choose_patches, gather_patches
from ..core.text import tokenize
from ..inputs.sources import discover_videos
from ..stagefiles import (corrupt_extract, open_stage, recorded_resize, recorded_sampling, recorded_settings, require_extract_layout,
                          require_kept_patches)
from ..store import ok_rows, read_ids, recorded_model, recorded_model_path, take_rows
from ..inputs.video import DEFAULT_RESIZE, DEFAULT_SAMPLING, VideoError, frames_dtype, read_clip

FEATURE_BLOCK_ROWS = 256  # rows read from the extract file at a time


# --- captions -------------------------------------------------------------------------------------

@dataclass
class PairSet:
    """Videos that have captions and are in the source, with their captions."""

    video_ids: list[str]
    captions: list[list[str]]                               # captions[i]: all captions of video_ids[i]
    missing: list[str] = field(default_factory=list)        # named by captions, absent from the source

    def __len__(self) -> int:
        return len(self.video_ids)

    @property
    def num_captions(self) -> int:
        return sum(len(c) for c in self.captions)

    def caption_ids(self) -> list[str]:
        """'<video_id>#<n>' for every caption, in the order of `captions` (for messages)."""
        return [f"{video}#{n}" for video, texts in zip(self.video_ids, self.captions) for n in range(len(texts))]


def load_pairs(captions_path: str | Path, available: set[str], what: str, paragraph: bool = False) -> PairSet:
    """Group a captions file by video, keeping the videos the source has; report the others.
    paragraph: one caption per video, its captions joined (DiDeMo, ActivityNet)."""
    grouped: dict[str, list[str]] = {}
    captions = load_captions(captions_path)
    for caption in group_paragraphs(captions) if paragraph else captions:
        grouped.setdefault(caption.video_id, []).append(caption.text)
    kept = [v for v in grouped if v in available]
    pairs = PairSet(kept, [grouped[v] for v in kept], sorted(v for v in grouped if v not in available))
    if pairs.missing:
        shown = ", ".join(pairs.missing[:5]) + (" ..." if len(pairs.missing) > 5 else "")
        log(f"{what}: {len(pairs.missing)} of {len(grouped)} captioned videos are not in the video source "
            f"(or failed in extract or frames) and are left out: {shown}")
    if not kept:
        raise UsageError(f"{what}: none of the videos named in {captions_path} is in the video source "
                         f"(e.g. caption video {next(iter(grouped))!r})")
    return pairs


class CaptionTokens:
    """Every caption of a PairSet tokenized once, before the epochs (not per step).

    A batch's token ids are its captions' rows cut to the batch's longest caption: exactly what
    tokenizing the batch alone gives (padded on the right to the longest). Held as int32 on the CPU
    (MSR-VTT's 180k captions of <= 77 tokens: 55 MB)."""

    def __init__(self, tokenizer, pairs: PairSet, max_tokens: int):
        texts = [text for captions in pairs.captions for text in captions]
        tokens = tokenize(tokenizer, texts, max_tokens)
        self.input_ids = tokens["input_ids"].to(torch.int32)
        self.lengths = tokens["attention_mask"].sum(dim=1).numpy()
        counts = np.array([len(c) for c in pairs.captions])
        self.first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)  # row of each video's caption 0

    def batch(self, videos: np.ndarray, captions: np.ndarray) -> torch.Tensor:
        """Token ids [B, longest] (int64) of caption captions[i] of video videos[i]."""
        rows = self.first[videos] + captions
        return self.input_ids[torch.from_numpy(rows), : int(self.lengths[rows].max())].long()


# --- batch plans ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlannedBatch:
    videos: np.ndarray     # [B] indices into the PairSet
    captions: np.ndarray   # [B] which caption of each video


def epoch_plan(pairs: PairSet, batch_size: int, seed: int, phase: int, epoch: int) -> list[PlannedBatch]:
    """A seeded shuffle of the videos in batches, one random caption per video.

    The last partial batch is dropped when there is at least one full batch (a tiny last batch makes
    a noisy contrastive loss; open_clip drops it too).
    """
    rng = np.random.default_rng([seed, phase, epoch])
    order = rng.permutation(len(pairs))
    counts = np.array([len(c) for c in pairs.captions])[order]
    choice = (rng.random(len(order)) * counts).astype(np.int64)  # uniform over each video's captions
    count = len(order) // batch_size if len(order) >= batch_size else 1
    return [PlannedBatch(order[i * batch_size : (i + 1) * batch_size], choice[i * batch_size : (i + 1) * batch_size])
            for i in range(count)]


def batches_per_epoch(num_videos: int, batch_size: int) -> int:
    return max(1, num_videos // batch_size)


def rank_slice(batch: PlannedBatch, rank: int, world_size: int) -> PlannedBatch:
    """This rank's contiguous share of a global batch (gathering in rank order restores the batch)."""
    per_rank = len(batch.videos) // world_size
    part = slice(rank * per_rank, (rank + 1) * per_rank)
    return PlannedBatch(batch.videos[part], batch.captions[part])


# --- what the heads take --------------------------------------------------------------------------

@dataclass
class HeadInputs:
    """Backbone outputs the heads need (docs/method.md sections 1-3)."""

    video: torch.Tensor      # [B, D]    x_v
    proxies: torch.Tensor    # [B, P, D] x_p
    frames: torch.Tensor     # [B, T, D] x_f
    selected: torch.Tensor   # [B, k, D] top-k ITS patches
    patches: torch.Tensor | None = None  # [B, T*L, D] every patch token: raw-video mode only

    def to(self, device, dtype=torch.float32) -> "HeadInputs":
        return HeadInputs(*(None if t is None else t.to(device=device, dtype=dtype, non_blocking=True)
                            for t in (self.video, self.proxies, self.frames, self.selected, self.patches)))

    def eercf_patches(self) -> torch.Tensor:
        """The patches EERCF's S_pw runs over: all of them when decoded from video; from an extract file
        only the top-k ITS patches (holding every patch of every video in memory would not scale)."""
        return self.selected if self.patches is None else self.patches


@dataclass
class SourceBatch:
    rows: np.ndarray                    # [b] source rows
    valid: torch.Tensor                 # [b] bool: False for a video that could not be decoded
    tokens: HeadInputs | None = None    # frozen-feature mode
    pixels: torch.Tensor | None = None  # raw-video mode: [b, T, 3, S, S] uint8
    errors: list[tuple[int, str]] = field(default_factory=list)

    def pin_memory(self) -> "SourceBatch":
        """Called by the DataLoader (pin_memory=True on GPU): page-locked frames copy to the GPU faster."""
        if self.pixels is not None:
            self.pixels = self.pixels.pin_memory()
        return self


# --- frozen features ------------------------------------------------------------------------------

class FeatureSource:
    """Tokens of an `extract` file for the videos a run uses, read once into memory.

    Memory: (1 + P + T) float32 + k float16 vectors of D per video (about 60 KB for B/32 defaults).
    """

    frozen = True
    always_valid = True  # every row of a batch holds its video (no decoding that can fail)

    def __init__(self, path: str | Path, loaded, k: int, selector: str = "its"):
        self.path = Path(path)
        with open_stage(path, "extract") as handle:
            check_features_model(self.path, handle, loaded)
            self.settings = recorded_settings(handle)
            self.backbone = self.settings.get("backbone", "vip")
            self.sampling = recorded_sampling(self.settings)
            self.resize = recorded_resize(self.settings)
            rows = ok_rows(handle)
            ids = read_ids(handle)
            self.ids = [ids[r] for r in rows]
            self._file_rows = rows
            require_extract_layout(self.path, handle, ("video", "proxies", "frames"))
            require_kept_patches(self.path, handle["patch_index"].shape[1], k)
        self.k, self.selector = k, selector
        self._row_of = {vid: i for i, vid in enumerate(self.ids)}
        self.tokens: HeadInputs | None = None

    def row_of(self, video_id: str) -> int:
        return self._row_of[video_id]

    def load(self, video_ids: list[str]) -> None:
        """Read the tokens of these videos (the union of the training and validation sets)."""
        wanted = np.array(sorted({self._row_of[v] for v in video_ids}), dtype=np.int64)
        self._source_rows = wanted
        self._position = np.full(len(self.ids), -1, np.int64)
        self._position[wanted] = np.arange(len(wanted))
        parts: dict[str, list[np.ndarray]] = {name: [] for name in ("video", "proxies", "frames", "selected")}
        with open_stage(self.path, "extract") as handle:
            for start in range(0, len(wanted), FEATURE_BLOCK_ROWS):
                file_rows = self._file_rows[wanted[start : start + FEATURE_BLOCK_ROWS]]
                for name in ("video", "proxies", "frames"):
                    parts[name].append(take_rows(handle[name], file_rows).astype(np.float32))
                scores = take_rows(handle["its_score"], file_rows)
                chosen = choose_patches(scores, self.k, self.selector)
                try:
                    selected = gather_patches(take_rows(handle["patches"], file_rows),
                                               take_rows(handle["patch_index"], file_rows), chosen)
                except PatchIndexError as err:
                    raise corrupt_extract(self.path, f"row {file_rows[err.row]}: its patch_index lacks patch "
                                                     f"{err.patch}, which its its_score chooses") from None
                parts["selected"].append(selected.astype(np.float16))  # as stored: no precision lost
        self.tokens = HeadInputs(*(torch.from_numpy(np.concatenate(parts[name]))
                                   for name in ("video", "proxies", "frames", "selected")))

    def iterate(self, batches: list[np.ndarray], jitter: tuple[int, ...] | None = None) -> Iterator[SourceBatch]:
        """The tokens of each batch of rows (jitter: ignored, the features are fixed)."""
        for rows in batches:
            index = torch.from_numpy(self._position[rows])
            tokens = HeadInputs(*(t[index] for t in (self.tokens.video, self.tokens.proxies,
                                                     self.tokens.frames, self.tokens.selected)))
            yield SourceBatch(np.asarray(rows), torch.ones(len(rows), dtype=torch.bool), tokens=tokens)

    def close(self) -> None:
        pass


def check_features_model(path: Path, handle, loaded) -> None:
    """The features must be what this model's backbone computes.

    Same checkpoint: fine. Another checkpoint (e.g. a phase-1 result) with an identical backbone: fine
    too, checked by hashing the backbone weights of the model the file records.
    """
    recorded = recorded_model(handle) or {}
    if recorded.get("hash") == loaded.identity.hash:
        return
    from ..model.checkpoint import is_checkpoint, load_checkpoint

    recorded_path = recorded_model_path(handle)
    if is_checkpoint(recorded_path):
        if backbone_fingerprint(load_checkpoint(recorded_path).model) == backbone_fingerprint(loaded.model):
            log(f"{path} was made with {recorded.get('name')}; its backbone weights equal this model's")
            return
    raise StaleInputError(
        f"{path} was made with model {recorded.get('name')} ({recorded.get('hash')}), whose backbone is not "
        f"this model's ({loaded.identity.name}, {loaded.identity.hash}); rerun: pig extract VIDEOS -m "
        f"{loaded.path} -o feats.h5, or train from raw videos with --videos")


def backbone_fingerprint(pig) -> str:
    """sha256 of the video backbone's weights (vision tower, projection, proxies, temporal embedding)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(pig.backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


# --- raw videos -----------------------------------------------------------------------------------

class ClipDataset(torch.utils.data.Dataset):
    """Row, or (row, jitter seed), -> (row, frames [T, 3, S, S] or None, error). Picklable for
    spawned workers. With a jitter seed the frames are sampled with training's jitter, seeded by
    (seed..., row): the same epoch gives the same frames again (resume, several ranks)."""

    def __init__(self, paths: list[str], num_frames: int, image_size: int, decoder: str,
                 sampling: str = DEFAULT_SAMPLING, resize: str = DEFAULT_RESIZE):
        self.paths, self.num_frames, self.image_size, self.decoder = paths, num_frames, image_size, decoder
        self.sampling, self.resize = sampling, resize

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item):
        row, seed = item if isinstance(item, tuple) else (item, None)
        jitter = None if seed is None else (*seed, row)
        try:
            clip = read_clip(self.paths[row], self.num_frames, self.image_size, self.decoder, self.sampling, jitter,
                             resize=self.resize)
            return row, clip.frames, None
        except VideoError as err:
            return row, None, str(err)


@dataclass
class ClipCollate:
    """Stack clips; a failed video becomes zeros marked invalid, so batch shapes stay equal across ranks.
    dtype: the frames' (uint8, or float32 for squash's unrounded frames)."""

    num_frames: int
    image_size: int
    dtype: type = np.uint8

    def __call__(self, items) -> SourceBatch:
        shape = (self.num_frames, 3, self.image_size, self.image_size)
        pixels = torch.from_numpy(np.zeros((len(items),) + shape, dtype=self.dtype))
        valid = torch.zeros(len(items), dtype=torch.bool)
        errors = []
        for i, (row, frames, error) in enumerate(items):
            if frames is None:
                errors.append((row, error))
            else:
                pixels[i] = torch.from_numpy(frames)
                valid[i] = True
        return SourceBatch(np.array([item[0] for item in items]), valid, pixels=pixels, errors=errors)


class _PlanSampler(torch.utils.data.Sampler):
    """Yields the batches it was last given; lives in the main process, so it can change per epoch."""

    def __init__(self):
        self.batches: list[np.ndarray] = []

    def __iter__(self):
        return iter([b.tolist() if isinstance(b, np.ndarray) else list(b) for b in self.batches])

    def __len__(self) -> int:
        return len(self.batches)


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # one core per decoding worker; the model gets the rest
    # a job's SIGTERM reaches the workers too: they keep serving while the trainer saves its state
    # (a worker that died would fail the trainer's next read); they end with the trainer
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class _PixelSource:
    """A source of frames per planned batch (uint8, or float32 for squash decoded from videos): a torch
    DataLoader over a row -> frames dataset.

    Workers are spawned (never forked: the trainer holds torch threads and open files) and persist
    across epochs; each batch is a SourceBatch with `pixels`, so the training step runs the backbone.
    """

    frozen = False
    always_valid = False  # a video that cannot be decoded is a row marked invalid

    def _start_loader(self, dataset, num_frames: int, image_size: int, workers: int, pin_memory: bool,
                      seed: int, dtype: type = np.uint8) -> None:
        self.failures: dict[int, str] = {}
        self._sampler = _PlanSampler()
        spawn = workers > 0
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=self._sampler, num_workers=workers, collate_fn=ClipCollate(num_frames, image_size, dtype),
            pin_memory=pin_memory, worker_init_fn=_worker_init if spawn else None,
            multiprocessing_context="spawn" if spawn else None, persistent_workers=spawn,
            # its own generator: creating an iterator must not draw from the global RNG (dropout, resume)
            generator=torch.Generator().manual_seed(seed))

    def row_of(self, video_id: str) -> int:
        return self._row_of[video_id]

    def load(self, video_ids: list[str]) -> None:
        pass

    def iterate(self, batches: list[np.ndarray], jitter: tuple[int, ...] | None = None) -> Iterator[SourceBatch]:
        """The frames of each batch of rows. jitter: a seed (run seed, phase, epoch) for training's jittered
        sampling, where the source decodes (VideoSource); a frames file's frames are fixed."""
        self._sampler.batches = self._items(batches, jitter)
        for batch in self.loader:
            self.failures.update(batch.errors)
            yield batch

    def _items(self, batches: list[np.ndarray], jitter: tuple[int, ...] | None) -> list:
        return batches

    def failure_summary(self) -> str:
        from ..console import top_reasons

        listed, more, rows = top_reasons(Counter(self.failures.values()))
        return "; ".join([f"{n} x {message}" for message, n in listed] + ([f"{more} more reasons ({rows})"] if more else []))

    def close(self) -> None:
        # persistent workers end with the loader's iterator; dropping it shuts them down now
        self.loader = None


class VideoSource(_PixelSource):
    """Videos of a folder (or files / list files) decoded on the fly."""

    def __init__(self, inputs: str | Path | list, num_frames: int, image_size: int, decoder: str, workers: int,
                 pin_memory: bool = False, seed: int = 0, sampling: str = DEFAULT_SAMPLING,
                 resize: str = DEFAULT_RESIZE):
        entries = discover_videos(inputs if isinstance(inputs, list) else [inputs])
        self.ids = [e.id for e in entries]
        self._row_of = {e.id: i for i, e in enumerate(entries)}
        self.sampling, self.resize = sampling, resize
        dataset = ClipDataset([str(e.path) for e in entries], num_frames, image_size, decoder, sampling, resize)
        self._start_loader(dataset, num_frames, image_size, workers, pin_memory, seed, frames_dtype(resize))

    def _items(self, batches: list[np.ndarray], jitter: tuple[int, ...] | None) -> list:
        if jitter is None:
            return batches
        return [[(int(row), tuple(jitter)) for row in rows] for rows in batches]


# --- cached frames --------------------------------------------------------------------------------

class FrameDataset(torch.utils.data.Dataset):
    """Row -> (row, uint8 frames [T, 3, S, S], None) read from a `pig frames` file.

    Picklable for spawned workers: each process opens its own read-only handle on first use. /pixels is
    chunked by one video, so a read touches exactly that video's bytes.
    """

    def __init__(self, path: str | Path, file_rows: np.ndarray):
        self.path, self.file_rows = str(path), np.asarray(file_rows)
        self._handle = None

    def __len__(self) -> int:
        return len(self.file_rows)

    def __getitem__(self, row: int):
        if self._handle is None:
            import h5py

            self._handle = h5py.File(self.path, "r", rdcc_nbytes=0)  # whole chunks, read once: no cache
        return row, self._handle["pixels"][int(self.file_rows[row])], None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None}

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class FrameSource(_PixelSource):
    """The frames of a `pig frames` file: raw-video training without decoding every epoch.

    The file's T and S must be the model's num_frames and image size. Videos whose status is failed are
    left out (reported, and named as missing by the captions). Memory: nothing is held across batches;
    the DataLoader keeps about 2 batches per worker in flight (one in this process without workers),
    each B * T * 3 * S * S bytes (B = the batch per rank; 231 MB for B = 128, T = 12, S = 224).
    """

    always_valid = True  # only the file's ok rows are sources: every read succeeds

    def __init__(self, path: str | Path, loaded, workers: int, pin_memory: bool = False, seed: int = 0):
        self.path = Path(path)
        pig = loaded.model
        with open_stage(path, "frames") as handle:
            settings = recorded_settings(handle)
            self.num_frames, self.image_size = int(settings["num_frames"]), int(settings["image_size"])
            self.sampling = recorded_sampling(settings)
            self.resize = recorded_resize(settings)
            wanted = (pig.config.num_frames, pig.image_size)
            if (self.num_frames, self.image_size) != wanted:
                raise StaleInputError(
                    f"{path} holds {self.num_frames} frames of {self.image_size} px per video, but model "
                    f"{loaded.identity.name} takes {wanted[0]} frames of {wanted[1]} px; rerun: "
                    f"pig frames VIDEOS -m {loaded.path} -o frames.h5")
            rows = ok_rows(handle)
            ids = read_ids(handle)
        failed = len(ids) - len(rows)
        if failed:
            log(f"{path}: {failed} of {len(ids)} videos failed in pig frames (status failed) and are left out")
        self.ids = [ids[r] for r in rows]
        self._row_of = {vid: i for i, vid in enumerate(self.ids)}
        self._dataset = FrameDataset(self.path, rows)
        self._start_loader(self._dataset, self.num_frames, self.image_size, workers, pin_memory, seed)

    def close(self) -> None:
        super().close()
        self._dataset.close()
