"""The text side of a pig model alone: what turns query text into e_t (docs/method.md s.5) for
`pig rank --query`, `pig embed-text` and a query server, without building the whole PigModel.

    encoder = load_text_encoder("models/pig-b32")          # -m, $PIG_MODEL or the default, as everywhere
    e_t, truncated = encoder.encode(["a man plays a guitar"])

What a one-off query used to pay for is mostly not the text: importing transformers took seconds and
building and reading the vision tower, generator, fusioner and EERCF head (a ViT-B/32 model: 660 MB)
more. Here:

  - weights: only `clip.text_model.*` and `clip.text_projection.weight` are read from
    model.safetensors (safetensors.safe_open, key by key);
  - network: `ClipTextTower`, CLIP's text transformer written in plain torch (token + position
    embeddings, pre-LN causal layers, final LayerNorm, the end token's state, the text projection),
    the computation of transformers' CLIPTextModel + text_projection (tested to match it) with the
    same parameter names, so the stored keys load as they are;
  - tokenizer: the folder's tokenizer.json through the `tokenizers` library, set up as transformers
    5's CLIPTokenizer sets it up (which is that same `tokenizers` pipeline; tested for equal ids).
    With older transformers (whose CLIPTokenizer is a Python BPE) or without tokenizer.json,
    transformers' own tokenizer is loaded instead.

Tokenising, truncation flags and the batch loop are core/text.py's, shared with the whole model.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import PigError
from .checkpoint import ModelFolder, ModelIdentity

TEXT_PREFIX = "clip.text_model."
PROJECTION_KEY = "clip.text_projection.weight"
# transformers' names of the activations CLIP text towers use
ACTIVATIONS = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
}
LEGACY_EOS_ID = 2  # CLIP configs from before transformers fixed eos_token_id: pool at the highest id instead


# --- the network ------------------------------------------------------------------------------------

class _NoInit:
    """Parameters left uninitialised: every one is assigned from the weights file right after (random
    init of a B/32 text tower cost more than reading it)."""

    def reset_parameters(self) -> None:
        pass


class _Linear(_NoInit, nn.Linear):
    pass


class _Embedding(_NoInit, nn.Embedding):
    pass


class _LayerNorm(_NoInit, nn.LayerNorm):
    pass


class _Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (_Linear(width, width) for _ in range(4))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        batch, length, width = hidden.shape

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, length, self.heads, -1).transpose(1, 2)

        q, k, v = split(self.q_proj(hidden)), split(self.k_proj(hidden)), split(self.v_proj(hidden))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                             scale=1 / math.sqrt(width // self.heads))
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))


class _Mlp(nn.Module):
    def __init__(self, width: int, inner: int, activation):
        super().__init__()
        self.fc1, self.fc2, self.activation = _Linear(width, inner), _Linear(inner, width), activation

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(hidden)))


class _Layer(nn.Module):
    """Pre-LN: x + attn(LN1(x)), then x + mlp(LN2(x))."""

    def __init__(self, width: int, heads: int, inner: int, eps: float, activation):
        super().__init__()
        self.layer_norm1, self.layer_norm2 = _LayerNorm(width, eps=eps), _LayerNorm(width, eps=eps)
        self.self_attn = _Attention(width, heads)
        self.mlp = _Mlp(width, inner, activation)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        hidden = hidden + self.self_attn(self.layer_norm1(hidden), mask)
        return hidden + self.mlp(self.layer_norm2(hidden))


class _Embeddings(nn.Module):
    def __init__(self, vocab: int, positions: int, width: int):
        super().__init__()
        self.token_embedding = _Embedding(vocab, width)
        self.position_embedding = _Embedding(positions, width)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(input_ids) + self.position_embedding.weight[: input_ids.shape[1]]


class _Encoder(nn.Module):
    def __init__(self, layers: list[_Layer]):
        super().__init__()
        self.layers = nn.ModuleList(layers)


class _TextModel(nn.Module):
    def __init__(self, embeddings: _Embeddings, encoder: _Encoder, final_layer_norm: nn.LayerNorm):
        super().__init__()
        self.embeddings, self.encoder, self.final_layer_norm = embeddings, encoder, final_layer_norm


class ClipTextTower(nn.Module):
    """CLIP's text encoder and text projection: token ids -> e_t. Parameter names are those of a
    PigModel's `clip.text_model` and `clip.text_projection` without the `clip.` prefix."""

    def __init__(self, text_config: dict, projection_dim: int):
        super().__init__()
        width, activation = text_config["hidden_size"], text_config.get("hidden_act", "quick_gelu")
        if activation not in ACTIVATIONS:
            raise PigError(f"the text encoder's activation {activation!r} is not supported by pig's text-only "
                           f"loader (supported: {', '.join(ACTIVATIONS)})")
        eps = text_config.get("layer_norm_eps", 1e-5)
        layers = [_Layer(width, text_config["num_attention_heads"], text_config["intermediate_size"], eps,
                         ACTIVATIONS[activation]) for _ in range(text_config["num_hidden_layers"])]
        self.text_model = _TextModel(
            _Embeddings(text_config["vocab_size"], text_config["max_position_embeddings"], width),
            _Encoder(layers), _LayerNorm(width, eps=eps))
        self.text_projection = _Linear(width, projection_dim, bias=False)
        self.eos_token_id = text_config.get("eos_token_id")

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Projected, unnormalised end-token features [B, D] (PigModel.text_features)."""
        model = self.text_model
        hidden = model.embeddings(input_ids)
        mask = _causal_padding_mask(attention_mask, hidden.shape[1])
        for layer in model.encoder.layers:
            hidden = layer(hidden, mask)
        hidden = model.final_layer_norm(hidden)
        rows = torch.arange(len(hidden), device=hidden.device)
        return self.text_projection(hidden[rows, self._end_positions(input_ids)])

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """e_t [B, D], normalised (PigModel.encode_text)."""
        return F.normalize(self.text_features(input_ids, attention_mask), dim=-1)

    def _end_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Where each text's end token is: its first end token, or with a legacy config (eos id 2)
        the highest id, which is CLIP's end token."""
        if self.eos_token_id == LEGACY_EOS_ID or self.eos_token_id is None:
            return input_ids.argmax(dim=-1)
        return (input_ids == self.eos_token_id).int().argmax(dim=-1)


def _causal_padding_mask(attention_mask: torch.Tensor | None, length: int) -> torch.Tensor | None:
    """Boolean [B, 1, S, S] (query attends to key): causal and not padding; None when nothing is
    padded (the attention is then just causal)."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    causal = torch.ones(length, length, dtype=torch.bool, device=attention_mask.device).tril()
    return causal[None, None] & attention_mask.bool()[:, None, None, :]


def read_text_weights(weights: Path) -> dict[str, torch.Tensor]:
    """The text tower's tensors of a pig model.safetensors, named as ClipTextTower's parameters
    (float32, as the whole model loads them). Nothing else is read from the file."""
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as handle:
        stored = set(handle.keys())
        aliases = handle.metadata() or {}  # names safetensors dropped for tensors shared with another name
        wanted = sorted(k for k in stored | set(aliases) if k.startswith(TEXT_PREFIX) or k == PROJECTION_KEY)
        tensors = {key.removeprefix("clip."): handle.get_tensor(key if key in stored else aliases[key])
                   for key in wanted if key in stored or aliases.get(key) in stored}
    return {name: t.float() if t.is_floating_point() else t for name, t in tensors.items()}


def load_text_tower(folder: ModelFolder, device="cpu") -> ClipTextTower:
    """ClipTextTower with the folder's weights, in eval mode on `device`."""
    tensors = read_text_weights(folder.require_weights())
    tower = ClipTextTower(folder.clip_config["text_config"], folder.embed_dim)
    expected = set(tower.state_dict())
    if set(tensors) != expected:
        missing = sorted(expected - set(tensors)) or sorted(set(tensors) - expected)
        raise PigError(f"{folder.weights} does not hold the text encoder this model's config.json describes "
                       f"({', '.join(missing[:3])}, ...); make the model again with pig init or pig train")
    tower.load_state_dict(tensors, assign=True)
    return tower.to(device).eval()


# --- the tokenizer ----------------------------------------------------------------------------------

class ClipTokenizer:
    """A `tokenizers` CLIP tokenizer answering the calls core/text.py makes of transformers'
    CLIPTokenizer: `tok(texts, padding="longest", truncation=True, max_length=N, return_tensors="pt")`
    and `tok(texts, add_special_tokens=True)`, with the same ids. Thread-safe (truncation and padding
    are settings of the underlying tokenizer, set per call)."""

    def __init__(self, backend, pad_id: int, pad_token: str):
        self.backend, self.pad_id, self.pad_token = backend, pad_id, pad_token
        self._lock = threading.Lock()

    @classmethod
    def from_folder(cls, folder: Path) -> "ClipTokenizer":
        """The CLIP pipeline transformers 5's CLIPTokenizer builds on tokenizer.json's vocabulary,
        merges and added tokens: CLIP normalisation and word splitting, byte-level BPE with the
        '</w>' word suffix, start and end tokens around every text."""
        import json

        from tokenizers import Tokenizer, processors

        from .clip_compat import BOS_TOKEN, EOS_TOKEN, clip_normalizer, clip_pre_tokenizer

        backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
        settings = json.loads((folder / "tokenizer_config.json").read_text()) \
            if (folder / "tokenizer_config.json").is_file() else {}
        defaults = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "pad_token": EOS_TOKEN}
        bos, eos, pad = (_token_text(settings.get(name, default)) for name, default in defaults.items())
        ids = {token: backend.token_to_id(token) for token in (bos, eos, pad)}
        if None in ids.values() or not _is_clip_bpe(backend.model):
            raise PigError(f"{folder} does not hold a CLIP BPE tokenizer with {bos} and {eos}")
        backend.normalizer, backend.pre_tokenizer = clip_normalizer(), clip_pre_tokenizer()
        backend.post_processor = processors.RobertaProcessing((eos, ids[eos]), (bos, ids[bos]), trim_offsets=False,
                                                              add_prefix_space=False)
        backend.no_truncation()
        backend.no_padding()
        return cls(backend, ids[pad], pad)

    def __call__(self, texts: list[str], *, padding: bool | str = False, truncation: bool = False,
                 max_length: int | None = None, return_tensors: str | None = None, add_special_tokens: bool = True,
                 verbose: bool = True) -> dict:
        if padding not in (False, "longest") or return_tensors not in (None, "pt") or (truncation and not max_length):
            raise ValueError("ClipTokenizer supports padding='longest', truncation with max_length and "
                             "return_tensors='pt'")
        with self._lock:
            try:
                if truncation:
                    self.backend.enable_truncation(max_length)
                if padding:
                    self.backend.enable_padding(pad_id=self.pad_id, pad_token=self.pad_token)
                encodings = self.backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)
            finally:
                self.backend.no_truncation()
                self.backend.no_padding()
        batch = {"input_ids": [e.ids for e in encodings], "attention_mask": [e.attention_mask for e in encodings]}
        if return_tensors == "pt":
            batch = {name: torch.tensor(rows, dtype=torch.long) for name, rows in batch.items()}
        return batch


def _token_text(token) -> str:
    """A special token as tokenizer_config.json writes it: a string, or an AddedToken's fields."""
    return token["content"] if isinstance(token, dict) else str(token)


def _is_clip_bpe(model) -> bool:
    return (type(model).__name__ == "BPE" and model.end_of_word_suffix == "</w>" and not model.continuing_subword_prefix
            and model.dropout is None and not model.fuse_unk)


def load_text_tokenizer(folder: Path):
    """The tokenizer of a model folder's tokenizer/ for core/text.py: a ClipTokenizer where it gives
    transformers' ids (transformers 5 and a tokenizer.json), else transformers' own CLIPTokenizer."""
    if (folder / "tokenizer.json").is_file() and _transformers_major() >= 5:
        return ClipTokenizer.from_folder(folder)
    from .checkpoint import load_tokenizer

    return load_tokenizer(folder)


def _transformers_major() -> int:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return int(version("transformers").split(".")[0])
    except (PackageNotFoundError, ValueError):
        return 0


# --- the encoder ------------------------------------------------------------------------------------

@dataclass
class TextEncoder:
    """A model's text side, ready to embed queries. `folder` is the ModelFolder (its .path, .config);
    `identity` the model's name and hash as checkpoint.json records them (what stage files record,
    so an index can be checked against it)."""

    folder: ModelFolder
    tower: ClipTextTower
    tokenizer: object
    device: torch.device
    precision: str

    @property
    def identity(self) -> ModelIdentity:
        return self.folder.identity

    @property
    def path(self) -> Path:
        return self.folder.path

    @property
    def max_tokens(self) -> int:
        return self.folder.config.max_text_tokens

    @property
    def embed_dim(self) -> int:
        return self.folder.embed_dim

    def encode(self, texts: list[str], batch_size: int = 256, *,
               max_tokens: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Texts -> (e_t [Q, D] float32, truncated [Q] bool): equal to core.text.embed_texts with the
        whole model. max_tokens: cut texts there instead of at the model's max_text_tokens."""
        from ..core.text import encode_texts

        return encode_texts(self.tower.encode_text, self.tokenizer, list(texts), max_tokens or self.max_tokens,
                            self.embed_dim, self.device, batch_size=batch_size, precision=self.precision)


def load_text_encoder(model: str | Path | None, device="cpu", precision: str = "fp32") -> TextEncoder:
    """The text side of model `model` (resolved as -m is: a pig model folder, a CLIP converted once
    into the cache, None for $PIG_MODEL or the default) on `device` ('auto', 'cpu', 'cuda[:n]' or a
    torch.device), encoding at `precision` ('auto', 'fp32', 'bf16', 'fp16')."""
    from ..core.device import resolve_device
    from .resolve import resolve_folder

    torch_device, precision = resolve_device(str(device), precision)
    folder = resolve_folder(str(model) if model is not None else None)
    tower = load_text_tower(folder, torch_device)
    return TextEncoder(folder, tower, load_text_tokenizer(folder.path / "tokenizer"), torch_device, precision)
