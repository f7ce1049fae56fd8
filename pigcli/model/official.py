"""Checkpoints of the official code as pig model folders, by key mapping (`pig init --from-official`).

Two kinds of file, told apart by their keys:

PIG (lbx73737373/PIG): `OUT/ckpt/model_best.pt`, which `BestModelSaver.save` (src/utils/load_save.py)
writes as the plain `model.state_dict()` of `PIG` (src/modeling/modeling_pig.py); Horovod does not wrap
the model, so keys have no `module.` prefix (stripped anyway, as are "model"/"state_dict" wrappers).
CLIP-ViP (microsoft/XPretrain, CLIP-ViP): the pretrained weights its configs load with
`e2e_weights_path` into `VidCLIP` (src/modeling/VidCLIP.py), i.e. VidCLIP's state dict (its CLIPModel's
keys alone, without the `clipmodel.` prefix, are taken too).

Keys and shapes relied on (W vision width, H text width, D projection dim, P proxies, T frames, V vocab);
CLIP is HF's CLIPModel layout (src/modeling/PIG.py, CLIP-ViP's src/modeling/CLIP_ViP.py), under
`encoder.clipmodel.` (PIG) or `clipmodel.` (CLIP-ViP):

    text_model.*, vision_model.{pre_layrnorm, encoder.layers.N, post_layernorm}.*,
    vision_model.embeddings.{class_embedding [W], patch_embedding.weight [W,3,p,p],
    position_embedding.weight [1+L, W]}, visual_projection.weight [D,W], text_projection.weight [D,H],
    logit_scale []                                            -> clip.*  (same names)
    vision_model.embeddings.added_cls [P, W]                  -> backbone.proxy_tokens
    vision_model.embeddings.cls_in_frames [W]                 -> backbone.frame_cls   (PIG, keep_frame_cls)
    vision_model.embeddings.temporal_embedding [1, T, W]      -> backbone.temporal_embedding [T, W]
    *.position_ids                                            ignored (index buffers)

PIG's generator, `generator.clip_reconstructor.` (CLIPFeatureReconstructor, video_mapper_type Linear):

    embeddings.position_embedding.weight [77, H]              -> generator.position_embedding.weight
    embeddings.token_embedding.weight [V, H]                  read, not used (see below)
    encoder.layers.N.*, final_layer_norm.*                    -> generator.layers.N.*, generator.final_layer_norm.*
    video_mapper.weight [H, H], video_mapper.bias [H]         -> generator.mapper.*

PIG's fusioner, `fusioner.` (XPoolCrossAttentionPooler, one head in the released config):

    cross_attn.{q,k,v,out}_proj.*  -> fusioner.{q,k,v,out}_proj.*    linear_proj.* -> fusioner.linear.*
    layer_norm{1,2,3}.*            -> fusioner.ln{1,2,3}.*

What pig fills in: the generator's BOS / EOS embeddings are the rows of the base CLIP's token table
(`--from`), not of the checkpoint's generator table: the official model embeds BOS and EOS with the
pretrained CLIP it is built from, so those rows of the saved table are not what it fed the generator
(docs/method.md, deviations). The generator's text projection is the identity (the official generator has none,
docs/method.md s.3; so H must equal D, as for B/32), the EERCF head its identity start. From CLIP-ViP
weights (no generator, fusioner or frame CLS) the rest starts as `pig init --from` starts it: the
generator a copy of the converted text encoder with a fresh mapper, an identity fusioner, and the frame
CLS equal to the class embedding (what the official PIG code does with cls_in_frames at set-up).

Shapes give T, P, widths, layers, patch and image size, vocabulary and projection dim; the rest of the
CLIP configuration (heads, activation, eps) and the tokenizer come from a base CLIP (`--from`,
default openai/clip-vit-base-patch32: what the official configs name as clip_config).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import PigError
from .pig import PigConfig

PIG_PREFIX = "encoder.clipmodel."
CLIPVIP_PREFIX = "clipmodel."
WRAPPERS = ("model_state_dict", "state_dict", "model")
SHOWN = 10  # keys listed in an error

EMBEDDINGS = "vision_model.embeddings."
BACKBONE = {EMBEDDINGS + "added_cls": "backbone.proxy_tokens", EMBEDDINGS + "cls_in_frames": "backbone.frame_cls",
            EMBEDDINGS + "temporal_embedding": "backbone.temporal_embedding"}
GENERATOR = "generator.clip_reconstructor."
# official sub-key (regex on what follows a prefix) -> pig key template
GENERATOR_RULES = ((r"embeddings\.position_embedding\.weight", "generator.position_embedding.weight"),
                   (r"encoder\.layers\.(.+)", "generator.layers.{0}"),
                   (r"final_layer_norm\.(.+)", "generator.final_layer_norm.{0}"),
                   (r"video_mapper\.(weight|bias)", "generator.mapper.{0}"))
FUSIONER_RULES = ((r"cross_attn\.([qkv]_proj|out_proj)\.(weight|bias)", "fusioner.{0}.{1}"),
                  (r"linear_proj\.(weight|bias)", "fusioner.linear.{0}"),
                  (r"layer_norm([123])\.(weight|bias)", "fusioner.ln{0}.{1}"))
TOKEN_EMBEDDING = GENERATOR + "embeddings.token_embedding.weight"


@dataclass
class Mapped:
    """An official state dict sorted into pig's parts."""

    kind: str                                  # 'pig' or 'clip-vip'
    clip: dict = field(default_factory=dict)   # CLIPModel keys
    pig: dict = field(default_factory=dict)    # PigModel keys outside the CLIP
    token_embedding: torch.Tensor | None = None  # the generator's copy (not used: BOS/EOS come from the base)
    unmatched: list = field(default_factory=list)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors: unwrapped from {'model': ...}-style dicts, 'module.' prefixes removed, fp32."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PigError(f"{path} not found") from None
    except Exception as err:  # pickle errors, not a torch file
        raise PigError(f"cannot read {path} as a torch checkpoint ({type(err).__name__}: {err})") from None
    while isinstance(state, dict) and not any(torch.is_tensor(v) for v in state.values()):
        inner = next((state[k] for k in WRAPPERS if isinstance(state.get(k), dict)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, dict) or not any(torch.is_tensor(v) for v in state.values()):
        raise PigError(f"{path} holds no state dict of tensors")
    return {re.sub(r"^(module\.)+", "", k): (v.float() if v.is_floating_point() else v)
            for k, v in state.items() if torch.is_tensor(v)}


def sort_keys(state: dict[str, torch.Tensor], path) -> Mapped:
    """Apply the module docstring's table: which official key becomes which pig key."""
    if any(k.startswith(PIG_PREFIX) for k in state):
        mapped, prefix = Mapped("pig"), PIG_PREFIX
    elif any(k.startswith(CLIPVIP_PREFIX) for k in state):
        mapped, prefix = Mapped("clip-vip"), CLIPVIP_PREFIX
    elif EMBEDDINGS + "added_cls" in state:  # the CLIPModel alone, saved without VidCLIP around it
        mapped, prefix = Mapped("clip-vip"), ""
    else:
        raise PigError(f"{path} is neither an official PIG checkpoint (keys under {PIG_PREFIX!r}) nor CLIP-ViP "
                       f"weights (keys under {CLIPVIP_PREFIX!r}); its first keys: {', '.join(list(state)[:5])}")
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        if key.startswith(prefix):
            name = key[len(prefix):]
            if name in BACKBONE:
                mapped.pig[BACKBONE[name]] = value[0] if name.endswith("temporal_embedding") else value
            else:
                mapped.clip[name] = value
        elif key == TOKEN_EMBEDDING:
            mapped.token_embedding = value
        elif not _apply_rules(mapped.pig, key, value):
            mapped.unmatched.append(key)
    return mapped


def _apply_rules(target: dict, key: str, value: torch.Tensor) -> bool:
    for prefix, rules in ((GENERATOR, GENERATOR_RULES), ("fusioner.", FUSIONER_RULES)):
        if key.startswith(prefix):
            for pattern, template in rules:
                match = re.fullmatch(pattern, key[len(prefix):])
                if match:
                    target[template.format(*match.groups())] = value
                    return True
    return False


def infer_clip_config(clip: dict[str, torch.Tensor], base: dict) -> dict:
    """The base CLIP's config with every size the weights' shapes determine."""
    def layers(tower: str) -> int:
        found = {int(m.group(1)) for k in clip if (m := re.match(rf"{tower}\.encoder\.layers\.(\d+)\.", k))}
        return max(found) + 1 if found else 0

    def need(key: str) -> torch.Tensor:
        if key not in clip:
            raise PigError(f"the checkpoint has no {key!r}, which a CLIP needs")
        return clip[key]

    patch = need("vision_model.embeddings.patch_embedding.weight")
    positions = need("vision_model.embeddings.position_embedding.weight").shape[0]
    vision = {"hidden_size": patch.shape[0], "patch_size": patch.shape[-1],
              "image_size": patch.shape[-1] * round((positions - 1) ** 0.5), "num_hidden_layers": layers("vision_model"),
              "intermediate_size": need("vision_model.encoder.layers.0.mlp.fc1.weight").shape[0]}
    tokens = need("text_model.embeddings.token_embedding.weight")
    text = {"hidden_size": tokens.shape[1], "vocab_size": tokens.shape[0], "num_hidden_layers": layers("text_model"),
            "max_position_embeddings": need("text_model.embeddings.position_embedding.weight").shape[0],
            "intermediate_size": need("text_model.encoder.layers.0.mlp.fc1.weight").shape[0]}
    config = {**base, "projection_dim": need("visual_projection.weight").shape[0],
              "vision_config": {**base["vision_config"], **vision}, "text_config": {**base["text_config"], **text}}
    for tower in ("vision_config", "text_config"):
        width, heads = config[tower]["hidden_size"], config[tower]["num_attention_heads"]
        if width % heads:
            raise PigError(f"the checkpoint's {tower.split('_')[0]} width {width} does not split into the base "
                           f"CLIP's {heads} heads: give the CLIP it was trained from with --from")
    return config


def pig_settings(mapped: Mapped, config: PigConfig) -> PigConfig:
    """T and P from the backbone's tables."""
    temporal, proxies = mapped.pig.get("backbone.temporal_embedding"), mapped.pig.get("backbone.proxy_tokens")
    if temporal is None or proxies is None:
        missing = [k for k, v in (("temporal_embedding", temporal), ("added_cls", proxies)) if v is None]
        raise PigError(f"the checkpoint has no vision_model.embeddings.{' or '.join(missing)}: pig needs CLIP-ViP's "
                       "video proxy tokens and temporal embedding (add_cls_num > 0, if_use_temporal_embed 1)")
    config.num_frames, config.num_proxies = temporal.shape[0], proxies.shape[0]
    return config


def build_model(mapped: Mapped, clip_config: dict, config: PigConfig, seed: int,
                bos_eos: tuple[torch.Tensor, torch.Tensor] | None = None):
    """A PigModel with the mapped weights; PigError listing what did not fit. bos_eos: the generator's
    BOS and EOS embeddings (the base CLIP's rows, `base_bos_eos`); None: the converted text encoder's."""
    from transformers import CLIPConfig, CLIPModel

    from .clip_compat import skip_weight_init
    from .pig import PigModel

    with skip_weight_init():
        clip = CLIPModel(CLIPConfig.from_dict(clip_config))
    problems = _load(clip, mapped.clip, "")
    torch.manual_seed(seed)
    model = PigModel(clip, config)  # CLIP-ViP: the generator copies the converted text encoder
    weights = dict(mapped.pig)
    if bos_eos is not None:
        weights["generator.bos_embedding"], weights["generator.eos_embedding"] = bos_eos
    if mapped.kind == "pig":
        weights.update(_generator_projection(model))
    else:
        weights.setdefault("backbone.frame_cls", clip.vision_model.embeddings.class_embedding.detach().clone())
    problems += _load(model, weights, "", required=_required(model, mapped.kind))
    if problems or mapped.unmatched:
        raise PigError(_problem_text(mapped.unmatched, problems))
    return model


def _generator_projection(model) -> dict:
    """The identity projection PIG's generator implies."""
    projection = model.generator.projection.weight
    if projection.shape[0] != projection.shape[1]:
        raise PigError(f"the official generator has no text projection, so pig can only take it when the text width "
                       f"equals the embedding width (here {projection.shape[1]} and {projection.shape[0]})")
    return {"generator.projection.weight": torch.eye(projection.shape[0])}


def base_bos_eos(base: str, config: PigConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The BOS and EOS rows of the token table of the base CLIP (hub id or folder), or of the CLIP in a
    pig model folder."""
    from .checkpoint import ModelFolder, is_checkpoint
    from .factory import load_clip

    clip = ModelFolder.read(base).load("cpu").model.clip if is_checkpoint(base) else load_clip(base)
    table = clip.text_model.embeddings.token_embedding.weight.detach()
    return table[config.bos_token_id].clone(), table[config.eos_token_id].clone()


def _required(model, kind: str) -> set[str]:
    """PigModel keys the checkpoint must provide (the CLIP is checked on its own)."""
    aliases = ("clip.", "backbone.vision.", "backbone.projection.", "frame_backbone.", "eercf.")
    keys = {k for k in model.state_dict() if not k.startswith(aliases)}
    return keys if kind == "pig" else {k for k in keys if k.startswith("backbone.") and k != "backbone.frame_cls"}


def _load(module, weights: dict, prefix: str, required: set[str] | None = None) -> list[str]:
    """Copy weights into module; returns problems: 'missing KEY', 'unexpected KEY', 'KEY shape A != B'."""
    own = module.state_dict()
    required = {k for k in own if not k.endswith("position_ids")} if required is None else required
    problems = [f"missing {prefix}{k}" for k in sorted(required - set(weights))]
    fitting = {}
    for key, value in weights.items():
        if key not in own:
            problems.append(f"unexpected {prefix}{key}")
        elif own[key].shape != value.shape:
            problems.append(f"{prefix}{key} shape {tuple(value.shape)} != {tuple(own[key].shape)}")
        else:
            fitting[key] = value
    module.load_state_dict(fitting, strict=False)
    return problems


def _problem_text(unmatched: list[str], problems: list[str]) -> str:
    parts = []
    if unmatched:
        parts.append(f"{len(unmatched)} checkpoint keys have no place in a pig model ({_first(unmatched)})")
    if problems:
        parts.append(f"{len(problems)} weights do not fit ({_first(problems)})")
    return ("the checkpoint does not convert: " + "; ".join(parts) + ". pig converts the released PIG configuration "
            "(CLIP-ViP backbone with frame CLS, Linear video mapper, XPool fusioner) and CLIP-ViP weights")


def _first(items: list[str]) -> str:
    return ", ".join(items[:SHOWN]) + (f", ... ({len(items) - SHOWN} more)" if len(items) > SHOWN else "")


def init_from_official(checkpoint: str | Path, output: Path, base: str, pig_config: PigConfig | None = None,
                       seed: int = 0, force: bool = False) -> Path:
    """`pig init --from-official CKPT --from BASE`: convert an official PIG checkpoint or CLIP-ViP weights
    into a pig model folder. BASE (hub id, CLIP folder or pig model folder) gives the tokenizer and the
    CLIP settings that shapes do not."""
    from .checkpoint import ModelFolder, is_checkpoint, load_tokenizer, save_checkpoint
    from .factory import clip_config, clip_tokenizer_and_settings

    mapped = sort_keys(read_state_dict(checkpoint), checkpoint)
    config = pig_config or PigConfig()
    if is_checkpoint(base):
        folder = ModelFolder.read(base)
        tokenizer = load_tokenizer(folder.path / "tokenizer")
        config.bos_token_id, config.eos_token_id = folder.config.bos_token_id, folder.config.eos_token_id
        config.image_mean, config.image_std = folder.config.image_mean, folder.config.image_std
    else:
        tokenizer, config = clip_tokenizer_and_settings(base, config)
    config = pig_settings(mapped, config)
    config.source = f"official-{mapped.kind}:{Path(checkpoint).name}"
    model = build_model(mapped, infer_clip_config(mapped.clip, clip_config(base)), config, seed,
                        base_bos_eos(base, config))
    return save_checkpoint(model.eval(), tokenizer, output, name=config.source, force=force)
