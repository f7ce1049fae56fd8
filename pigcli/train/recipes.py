"""Named training recipes: the official code's settings, written out once with where each value comes from.

`pig train --recipe msrvtt-b32` fills every option not given on the command line from the recipe
(`apply_recipe`); options given explicitly win. The model-side settings (frames, proxies, ITS tokens,
text length, temperature) belong to `pig init`; `check_model` compares a model folder with them.

Sources (public repositories read for these values):
    PIG   lbx73737373/PIG: src/configs/msrvtt_retrieval/msrvtt_retrieval_pig_base_32.json (config keys
          quoted below), scripts/train_pig_b32_msrvtt.sh (4 GPUs), src/tasks/run_video_retrieval_pig.py
          (training loop: loss = retrieval + generation, GradScaler, logit scale clamp)
    VIP   microsoft/XPretrain CLIP-ViP: src/optimization/utils.py (setup_e2e_optimizer: AdamW groups),
          src/optimization/sched.py (get_lr_sched: warm-up then cosine)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..choices import check_choice


@dataclass(frozen=True)
class Value:
    value: object
    source: str


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    train: dict[str, Value]            # TrainConfig field -> value
    model: dict[str, Value]            # PigConfig / CLIP setting -> value (made by pig init)
    notes: tuple[str, ...] = field(default_factory=tuple)  # where pig cannot or does not follow the recipe


MSRVTT_B32 = Recipe(
    name="msrvtt-b32",
    description="PIG on MSRVTT-9k with CLIP ViT-B/32, as the official release trains it",
    train={
        "method": Value("pig", "PIG config: generator_config + fusioner_config (XPoolCrossAttention)"),
        "phases": Value("2", "PIG config has no pretrained_generator_path: one joint stage from the start "
                             "(run_video_retrieval_pig.py setup_pig_model)"),
        "epochs": Value(100, "PIG config num_train_epochs"),
        "batch_size": Value(128, "PIG config train_batch_size 32 per GPU x 4 GPUs (train_pig_b32_msrvtt.sh: "
                                 "horovodrun -np 4), features gathered (loss_config.if_gather)"),
        "lr": Value(3e-6, "PIG config learning_rate, lr_mul 1: every parameter group"),
        "lr_clip": Value(3e-6, "PIG config learning_rate"),
        "weight_decay": Value(0.2, "PIG config weight_decay"),
        "warmup": Value(0.01, "PIG config warmup_ratio, decay 'cosine' (VIP sched.py warmup_cosine)"),
        "grad_clip": Value(1.0, "PIG config grad_norm (on gradients averaged over its 4 Horovod workers: "
                               "pig's exact gradient clipped at 4 matches it; docs/method.md deviations row 20)"),
        "alpha": Value(1.0, "PIG config generation_loss_config.generation_loss_scale (l2 on normalised EOT)"),
        "precision": Value("fp16", "PIG config fp16 1: torch.cuda.amp autocast + GradScaler (dynamic loss scaling)"),
        "seed": Value(42, "PIG config seed"),
    },
    model={
        "num_frames": Value(12, "PIG config train_num_frms, test_num_frms, temporal_size"),
        "num_proxies": Value(3, "PIG config clip_vision_additional_config.add_cls_num"),
        "select_k": Value(16, "PIG config fusioner_config.num_selected_tokens"),
        "max_text_tokens": Value(50, "PIG config max_txt_len"),
        "image_size": Value(224, "PIG config input_res"),
        "logit_scale": Value(4.60, "PIG config logit_scale_init_value (pig init --from keeps CLIP's 4.605)"),
        "clip": Value("openai/clip-vit-base-patch32", "PIG config clip_weights: no CLIP-ViP pretraining"),
    },
    notes=(
        "AdamW betas (0.9, 0.98) (PIG config betas) and eps 1e-6 (the HF-style AdamW that VIP utils.py "
        "imports; its default) equal pig's fixed values (train/optim.py).",
        "Weight decay: the official groups decay every weight whose name lacks 'bias' or 'logit_scale' "
        "(VIP utils.py no_decay; HF CLIP's layer norms are not named 'LayerNorm', so their gains decay); "
        "pig decays matrices only. At lr 3e-6 the difference is a 0.2 % pull on the gains over the run.",
        "Checkpoint choice: the official code keeps the best test1ka R@1 (model_best.pt, validated on "
        "the test split); pig picks OUT/best on --val-captions, which must not be the test split.",
        "Frames: the official loader samples linspace(0, n-1, 12), jittered in training (sample_jitter 1), "
        "and resizes each to 224 x 224 (bicubic, aspect squashed, floats): pig's --sampling uniform and "
        "--resize squash (the defaults), with the jitter when training from --videos; a frames file rounds "
        "the frames to uint8.",
        "Proxy tokens: the official code starts added_cls as torch.randn (std 1; HF's _init_weights does not "
        "touch it); pig starts them as CLIP's class embedding, as docs/method.md s.1 specifies.",
    ),
)

RECIPES = {recipe.name: recipe for recipe in (MSRVTT_B32,)}


def get_recipe(name: str) -> Recipe:
    check_choice("--recipe", name, list(RECIPES))
    return RECIPES[name]


def apply_recipe(name: str, values: dict, given: set[str]) -> tuple[dict, dict]:
    """TrainConfig values with the recipe's filled in wherever an option was not given.
    Returns (values, {field: value the recipe set})."""
    recipe = get_recipe(name)
    applied = {key: item.value for key, item in recipe.train.items() if key not in given}
    return {**values, **applied, "recipe": name}, applied


def check_model(name: str, pig_config: dict, clip_config: dict) -> list[str]:
    """Where a model folder's settings differ from the recipe's model settings (one line each)."""
    recipe = get_recipe(name)
    found = {**{k: pig_config.get(k) for k in ("num_frames", "num_proxies", "select_k", "max_text_tokens")},
             "image_size": clip_config.get("vision_config", {}).get("image_size")}
    return [f"{key} is {found[key]}, the recipe's {recipe.model[key].value} ({recipe.model[key].source})"
            for key in found if found[key] != recipe.model[key].value]
