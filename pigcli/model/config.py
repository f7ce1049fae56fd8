"""`PigConfig`: pig's own settings of a model (config.json's "pig" part).

Apart from the networks (pig.py) so that reading a model folder's settings imports no model code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class PigConfig:
    """pig's own settings, stored in a checkpoint's config.json next to the CLIP config."""

    num_frames: int = 12            # T, frames sampled per video
    num_proxies: int = 3            # P, video proxy tokens
    select_k: int = 16              # k, ITS tokens fed to the generator
    max_text_tokens: int = 50       # the PIG supplement's setting (CLIP allows 77)
    fusion_heads: int = 1
    fusion_dropout: float = 0.1
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    bos_token_id: int = 49406
    eos_token_id: int = 49407
    source: str = ""                # the CLIP this model was made from (hub id, folder, or 'random:<preset>')
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PigConfig":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("image_mean", "image_std"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)
