"""`pig index`: extract -> select -> generate -> fuse in one command, with a staged cache.

Each stage's file sits next to the index (INDEX.feats.h5, INDEX.sel.h5, INDEX.gen.h5). A stage whose
file already holds the same inputs and settings is skipped; one whose inputs or settings changed is
recomputed, and so is everything after it (a changed input changes every later fingerprint).

The costly file is the exception: INDEX.feats.h5 (decoding and the backbone, the bulk of the time) made
from other videos, model or extract settings is refused unless --force, exactly as `pig extract` refuses
it. The later files (select, generate, fuse) are cheap and derived: they are replaced whenever their
inputs or settings changed (`pig index -k 8` after `pig index` reruns select..fuse only).
"""

from __future__ import annotations

from pathlib import Path

from ..console import log
from ..store import check_output_path
from .extract import ExtractSettings, extract
from .fuse import fuse
from .generate import generate
from .select import select


def stage_paths(output: str | Path) -> dict[str, Path]:
    output = Path(output)
    stem = output.with_suffix("") if output.suffix == ".h5" else output
    return {name: Path(f"{stem}.{name}.h5") for name in ("feats", "sel", "gen")}


def build_index(videos: list[str | Path], output: str | Path, model: str | None = None, *, k: int | None = None,
                method: str = "pig", settings: ExtractSettings | None = None, device: str = "auto",
                batch_size: int | None = None, workers: int | None = None, timeout: float = 120.0, relative_ids: bool = False,
                force: bool = False, selector: str = "its", ids_from: str | Path | None = None,
                segments: str | Path | None = None) -> dict:
    """Returns the StageSummary of every stage run, by stage name. ids_from, segments: as extract's
    (with segments the index has one row per shot)."""
    paths = stage_paths(output)
    for path in (*paths.values(), Path(output)):  # none of the files written may be one of the inputs
        check_output_path(path, [*videos, segments])
    common = dict(force=force, replace_stale=True)
    precision = (settings or ExtractSettings()).precision  # every model stage runs at the extract's precision
    summaries = {"extract": extract(videos, paths["feats"], model, settings=settings, device=device,
                                    batch_size=batch_size, workers=workers, timeout=timeout,
                                    relative_ids=relative_ids, ids_from=ids_from, force=force,
                                    replace_stale=False, segments=segments)}
    _say("extract", summaries["extract"])
    if method == "pig":
        summaries["select"] = select(paths["feats"], paths["sel"], k=k, selector=selector, **common)
        _say("select", summaries["select"])
        summaries["generate"] = generate(paths["sel"], paths["gen"], model, device=device, precision=precision,
                                       **common)
        _say("generate", summaries["generate"])
        source = paths["gen"]
    else:
        source = paths["feats"]
    summaries["fuse"] = fuse(source, output, model, method=method, device=device, precision=precision, **common)
    _say("fuse", summaries["fuse"])
    return summaries


def _say(stage: str, summary) -> None:
    state = "up to date" if summary.skipped else f"{summary.processed} rows in {summary.timings.get('wall', 0):.1f}s"
    log(f"{stage:<9} {summary.output}: {state}")
