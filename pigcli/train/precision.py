"""Mixed precision for `pig train`: which precision a run uses, and the loss scaling that fp16 needs.

fp16 gradients underflow without scaling: the loss is multiplied by a scale S before backward, the
gradients are divided by S before clipping and the optimiser step, and a step whose gradients hold an
inf or NaN is skipped while S halves (S doubles again after 2000 clean steps). That is
torch.amp.GradScaler; the official PIG entry point trains the same way (run_video_retrieval_pig.py:
torch.cuda.amp autocast and GradScaler; the `amp_level` O1 in its configs is not read there).
bf16 has fp32's exponent range and needs no scaling; fp32 none either.

`LossScaler` runs every step through one code path: disabled (bf16, fp32) its scale is 1 and nothing
is skipped. A forced initial scale (TrainConfig.loss_scale) turns it on at any precision, which is
how the CPU tests check the fp16 path without fp16 hardware.
"""

from __future__ import annotations

import torch

FP16_INITIAL_SCALE = 2.0**16  # GradScaler's default start, as the official run's GradScaler()


class LossScaler:
    """torch.amp.GradScaler for one run, and what each step reports (scale, skipped)."""

    def __init__(self, device: torch.device, precision: str, initial_scale: float | None = None):
        enabled = precision == "fp16" or initial_scale is not None
        self.scaler = torch.amp.GradScaler(device.type, init_scale=initial_scale or FP16_INITIAL_SCALE,
                                           enabled=enabled)

    @property
    def enabled(self) -> bool:
        return self.scaler.is_enabled()

    def step(self, loss: torch.Tensor, optimizer, grad_clip: float) -> dict:
        """backward(S loss), unscale, clip the global norm, step unless a gradient is inf/NaN, update S.
        Returns {'loss_scale': S used, 'skipped': bool} as 0-d tensors on the device, read when the step
        is logged (reading them now would make the host wait); empty when scaling is off."""
        scaler = self.scaler
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
        if not self.enabled:
            optimizer.step()
            return {}
        scale = scaler._scale.detach().clone()  # get_scale() would wait for the device
        scaler.step(optimizer)  # skips the step when unscale_ found an inf/NaN (fused AdamW: on the device)
        scaler.update()
        return {"loss_scale": scale[0] if scale.dim() else scale, "skipped": (scaler._scale < scale).reshape(())}

    def state_dict(self) -> dict:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        if state:  # empty for a disabled scaler
            self.scaler.load_state_dict(state)
