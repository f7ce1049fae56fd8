"""One source for each rule: the option choices, the choice check, the thumbnail frames."""

from __future__ import annotations

import numpy as np
import pytest

from pigcli import choices
from pigcli.errors import PigError, UsageError


def test_check_choice_names_the_option_and_the_values():
    choices.check_choice("--format", "tsv", choices.FORMATS)  # accepted: no error
    with pytest.raises(UsageError) as err:
        choices.check_choice("--format", "csv", choices.FORMATS)
    assert str(err.value) == "--format must be one of tsv, jsonl, trec, html, not 'csv'"
    with pytest.raises(PigError, match="--type must be one of ivfpq, hnsw, flat, not 'lsh'"):
        choices.check_choice("--type", "lsh", choices.ANN_TYPES, PigError)


def test_the_library_refuses_what_the_cli_refuses():
    """The CLI enums and the library's checks take the same tuples: a value the library refuses is not
    offered by --help, and every value --help offers passes the library's check."""
    from pigcli.cli import options

    pairs = [(options.Precision, choices.PRECISIONS), (options.Selector, choices.SELECTORS),
             (options.Backbone, choices.BACKBONES), (options.Decoder, choices.DECODERS),
             (options.Sampling, choices.SAMPLINGS), (options.FuseMethod, choices.INDEX_METHODS),
             (options.ScoringMethod, choices.RANK_METHODS), (options.OutputFormat, choices.FORMATS),
             (options.AnnType, choices.ANN_TYPES), (options.TrainMethod, choices.METHODS),
             (options.Preset, choices.PRESETS)]
    for enum, values in pairs:
        assert tuple(member.value for member in enum) == values


def test_presets_are_the_sizes_the_factory_builds():
    from pigcli.model.factory import PRESETS

    assert tuple(PRESETS) == choices.PRESETS


def test_thumbnails_and_serve_strips_show_the_same_frames():
    from pigcli.query.media import thumbnail_frames
    from pigcli.serve.thumbs import frame_strip

    # segment centres of 12 frames in 4 parts: floor((i + 0.5) * 3)
    assert thumbnail_frames(12, 4).tolist() == [1, 4, 7, 10]
    assert thumbnail_frames(3, 8).tolist() == [0, 1, 2]  # fewer frames than asked: all of them
    frames = np.arange(12, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    strip = frame_strip(frames, 4)
    assert strip.shape == (2, 8, 3)
    assert strip[0, ::2, 0].tolist() == [1, 4, 7, 10]
