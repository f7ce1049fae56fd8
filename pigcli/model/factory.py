"""Making pig models: from any CLIP checkpoint (`pig init --from`), or a small random CLIP of a
named size (`pig init --preset`) for tests, demos and CPU experiments.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..choices import check_choice
from ..errors import PigError
from ..safe_write import temporary_folder, write_errors
from .checkpoint import (BYTE_VOCAB_SIZE, check_model_target, is_checkpoint, load_checkpoint, load_tokenizer,
                         save_checkpoint)
from .clip_compat import write_byte_tokenizer
from .pig import PigConfig, PigModel

# Small random CLIPs for tests, demos and CPU experiments. 'toy' is the setting that trained best on
# 2 CPU cores (docs/toy_corpus.md); 'b32' has ViT-B/32's shape, for speed measurements.
PRESETS: dict[str, dict] = {
    "tiny": dict(image_size=32, patch_size=8, vision_width=32, vision_layers=2, vision_heads=2,
                 text_width=32, text_layers=2, text_heads=2, projection_dim=32),
    "toy": dict(image_size=64, patch_size=16, vision_width=128, vision_layers=2, vision_heads=4,
                text_width=128, text_layers=2, text_heads=4, projection_dim=128),
    "b32": dict(image_size=224, patch_size=32, vision_width=768, vision_layers=12, vision_heads=12,
                text_width=512, text_layers=12, text_heads=8, projection_dim=512),
}


def random_clip(preset: str = "tiny", seed: int = 0, vocab_size: int = BYTE_VOCAB_SIZE, **overrides):
    """A randomly initialised CLIPModel of a named size, for a byte-level tokenizer of `vocab_size`
    tokens (BOS and EOS are ids 512 and 513)."""
    from transformers import CLIPConfig, CLIPModel

    check_choice("--preset", preset, list(PRESETS), PigError)
    sizes = {**PRESETS[preset], **overrides}
    config = CLIPConfig(
        text_config=dict(
            vocab_size=vocab_size, hidden_size=sizes["text_width"], intermediate_size=4 * sizes["text_width"],
            num_hidden_layers=sizes["text_layers"], num_attention_heads=sizes["text_heads"],
            max_position_embeddings=77, bos_token_id=BYTE_VOCAB_SIZE - 2, eos_token_id=BYTE_VOCAB_SIZE - 1,
            pad_token_id=BYTE_VOCAB_SIZE - 1,
        ),
        vision_config=dict(
            image_size=sizes["image_size"], patch_size=sizes["patch_size"], hidden_size=sizes["vision_width"],
            intermediate_size=4 * sizes["vision_width"], num_hidden_layers=sizes["vision_layers"],
            num_attention_heads=sizes["vision_heads"],
        ),
        projection_dim=sizes["projection_dim"],
        # From scratch, CLIP's own initial temperature log(1/0.07) (what trained best on the toy corpus,
        # docs/toy_corpus.md). docs/method.md's log(100) is a pretrained CLIP's value, kept by `--from`.
        logit_scale_init_value=2.6592,
    )
    torch.manual_seed(seed)
    return CLIPModel(config).eval()


def init_random(output: Path, preset: str = "tiny", seed: int = 0, pig_config: PigConfig | None = None,
                vocab_texts: list[str] = (), force: bool = False, **overrides) -> Path:
    """`pig init --preset`: a random CLIP of a preset size made into a pig checkpoint.

    vocab_texts: texts to learn word tokens from (e.g. a corpus's captions); none: one token per byte.
    """
    output = Path(os.path.abspath(output))
    check_model_target(output, force)
    with write_errors(output), temporary_folder(output) as tokenizer_dir:
        vocab_size = write_byte_tokenizer(tokenizer_dir, texts=list(vocab_texts))
        tokenizer = load_tokenizer(tokenizer_dir)
    clip = random_clip(preset, seed, vocab_size=vocab_size, **overrides)
    config = pig_config or PigConfig()
    config.source = f"random:{preset}:seed{seed}"
    config.bos_token_id, config.eos_token_id = BYTE_VOCAB_SIZE - 2, BYTE_VOCAB_SIZE - 1
    torch.manual_seed(seed + 1)
    model = PigModel(clip, config)
    return save_checkpoint(model, tokenizer, output, name=output.name, force=force)


def init_from_clip(source: str, output: Path, pig_config: PigConfig | None = None, seed: int = 0,
                   force: bool = False) -> Path:
    """`pig init --from`: any CLIP that transformers.CLIPModel can load (hub id or folder), or the CLIP
    inside a pig model folder (init_from_pig)."""
    if is_checkpoint(source):
        return init_from_pig(source, output, pig_config, seed, force)
    clip = load_clip(source)
    tokenizer, config = clip_tokenizer_and_settings(source, pig_config or PigConfig())
    torch.manual_seed(seed)
    return save_checkpoint(PigModel(clip, config), tokenizer, output, name=source, force=force)


def load_clip(source: str):
    """A transformers CLIPModel (hub id or folder), in eval mode."""
    from transformers import CLIPModel

    return _from_hub(CLIPModel, source).eval()


def _from_hub(cls, source: str, **kwargs):
    """cls.from_pretrained(source) from a folder or the hub, offline-friendly, with pig's error message."""
    try:
        return cls.from_pretrained(source, **_hub_options(source), **kwargs)
    except OSError as err:
        raise PigError(
            f"cannot load CLIP {source!r} ({_first_line(err)}). Without network access, point -m at a local "
            "pig model folder, or make one offline: pig init --preset tiny -o models/tiny"
        ) from err


def clip_tokenizer_and_settings(source: str, config: PigConfig):
    """A CLIP's tokenizer (hub id or folder), and `config` with what pig takes from that CLIP: its start and
    end token ids and its image statistics."""
    from transformers import CLIPTokenizer

    tokenizer = _from_hub(CLIPTokenizer, source)
    config.source = source
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    config.image_mean, config.image_std = _image_statistics(source, _hub_options(source))
    return tokenizer, config


def _hub_options(source: str) -> dict:
    # Without a resolvable hub, the hub client retries for a long time before failing: use its cache only.
    return {} if Path(source).is_dir() or hub_resolvable() else {"local_files_only": True}


def clip_config(source: str) -> dict:
    """The CLIPConfig (as a dict) of a CLIP (hub id or folder) or of a pig model folder's CLIP."""
    from transformers import CLIPConfig

    if is_checkpoint(source):
        from .checkpoint import ModelFolder

        return ModelFolder.read(source).clip_config
    return _from_hub(CLIPConfig, source).to_dict()


def init_from_pig(source: str | Path, output: Path, pig_config: PigConfig | None = None, seed: int = 0,
                  force: bool = False) -> Path:
    """A new pig model on the CLIP of a trained pig model folder: the way the paper starts PIG and its
    baselines from a pretrained CLIP, when that CLIP was itself trained with pig (e.g. a two-tower
    pretrained on the toy corpus). Kept: CLIP's vision and text towers, projections and temperature,
    and the video backbone's own weights (proxies, frame CLS, temporal embedding) when the frame and
    proxy counts match. New: the generator is a fresh copy of the (trained) text encoder, and the
    mapper, fusioner and EERCF head start as for any CLIP.
    """
    trained = load_checkpoint(source)
    old = trained.model.config
    config = pig_config or PigConfig(num_frames=old.num_frames, num_proxies=old.num_proxies)
    config.source = f"pig:{trained.identity.name}:{trained.identity.hash}"
    config.bos_token_id, config.eos_token_id = old.bos_token_id, old.eos_token_id
    config.image_mean, config.image_std = old.image_mean, old.image_std
    torch.manual_seed(seed)
    model = PigModel(trained.model.clip, config)
    if (config.num_frames, config.num_proxies) == (old.num_frames, old.num_proxies):
        model.backbone.load_state_dict(trained.model.backbone.state_dict())
    return save_checkpoint(model, trained.tokenizer, output, name=Path(os.path.abspath(output)).name, force=force)


def hub_resolvable() -> bool:
    """Whether the model hub's host name resolves (offline machines fail this at once). Honours
    HF_HUB_OFFLINE and HF_ENDPOINT."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def _image_statistics(source: str, hub_options: dict) -> tuple[tuple, tuple]:
    try:
        from transformers import CLIPImageProcessor

        processor = CLIPImageProcessor.from_pretrained(source, **hub_options)
        return tuple(processor.image_mean), tuple(processor.image_std)
    except Exception:  # no preprocessor config in the folder: CLIP's own statistics
        config = PigConfig()
        return config.image_mean, config.image_std


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
