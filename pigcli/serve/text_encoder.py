"""Stand-in for pigcli.model.text_encoder (branch `light`), with the same signature: the query encoder
`pig serve` loads once. It loads the whole model folder and embeds with pigcli.core.text.embed_texts,
exactly as `pig rank --query` does; `light`'s version loads the text side only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class TextEncoder:
    loaded: object      # LoadedModel
    device: object      # torch.device
    precision: str

    @property
    def identity(self):
        return self.loaded.identity

    @property
    def folder(self) -> Path:
        return self.loaded.path

    @property
    def max_tokens(self) -> int:
        return self.loaded.model.config.max_text_tokens

    @property
    def embed_dim(self) -> int:
        return self.loaded.model.embed_dim

    def encode(self, texts: list[str], batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """(e_t [Q, D] float32, truncated [Q] bool)."""
        from ..core.text import embed_texts

        return embed_texts(self.loaded, texts, batch_size=batch_size, device=self.device, precision=self.precision)


def load_text_encoder(model, device="cpu", precision: str = "fp32") -> TextEncoder:
    """model: a ModelFolder, a folder path, or what -m takes."""
    from ..core.device import resolve_device
    from ..model.checkpoint import ModelFolder
    from ..model.resolve import resolve_folder

    folder = model if isinstance(model, ModelFolder) else resolve_folder(str(model))
    torch_device, precision = resolve_device(device, precision)
    return TextEncoder(folder.load(torch_device), torch_device, precision)
