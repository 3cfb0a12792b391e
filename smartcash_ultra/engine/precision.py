"""Training precision, settled offline and said in one ``AMP:`` line.

Ultralytics' ``amp`` argument chooses: ``True``/``"fp16"`` (fp16 autocast with a GradScaler), ``"bf16"`` (bf16
autocast, no scaler) or ``False``/``"fp32"``. Ultralytics checks fp16 by downloading a reference model
(``check_amp`` loads ``yolo26n.pt``): offline that tries the network anyway, can stall on connect timeouts and
retries, and then turns AMP on unchecked. :class:`~smartcash_ultra.engine.trainer.SmartCashTrainer` puts
:func:`check_amp` in its place for the duration of its setup: it compares fp32 and fp16-autocast outputs of the
SmartCash model being trained, on its own device, and downloads nothing.

CPU and MPS always train in fp32, whatever is asked (Ultralytics' bf16 autocast raises there). A GPU without native
bf16 trains in fp32 when bf16 is asked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from ultralytics.utils import LOGGER, RANK, colorstr
from ultralytics.utils.torch_utils import autocast

PREFIX = colorstr("AMP: ")
FP32_DEVICES = {"cpu", "mps"}
"""Device types that train in fp32 whatever ``amp`` says (Ultralytics' own check says the same)."""
FP16_BLOCKLIST = re.compile(
    r"(nvidia|geforce|quadro|tesla).*?(1660|1650|1630|t400|t550|t600|t1000|t1200|t2000|k40m)", re.IGNORECASE
)
"""GPUs Ultralytics knows to give NaN losses or zero mAP under fp16 AMP.

A copy: Ultralytics compiles this pattern inside ``check_amp`` (``ultralytics/utils/checks.py``, local ``pattern``),
so no name imports it; ``tests/test_precision.py`` fails when Ultralytics' list changes."""
BOX_ATOL, BOX_RTOL = 0.5, 0.01
"""fp16-vs-fp32 box difference accepted: 0.5 px (Ultralytics' own tolerance) plus 1% of the coordinate."""
SCORE_ATOL = 0.05
"""Largest fp16-vs-fp32 class-score difference accepted (scores are 0..1)."""


def requested(amp: bool | str) -> str:
    """Name the precision ``amp`` asks for: ``fp16``, ``bf16`` or ``fp32`` (Ultralytics has already validated it)."""
    if isinstance(amp, str):
        return amp.lower()
    return "fp16" if amp else "fp32"


def settle(args, device: torch.device) -> None:
    """Log the precision of every choice but fp16 (decided later by :func:`check_amp`); turn an unusable bf16 to fp32.

    An unusable bf16 must leave ``args.amp``: Ultralytics autocasts with bf16 whenever ``args.amp == "bf16"``, and
    raises on a device without native bf16. The checkpoints' ``train_args`` then record the fp32 the run used.
    """
    wanted = requested(args.amp)
    if wanted == "fp16":
        return  # Ultralytics calls check_amp next (rank 0)
    if wanted == "bf16":
        if bf16_available(device):
            message = f"bf16 autocast on {device_name(device)} (amp=bf16; bf16 has fp32's range, no check needed)"
        else:
            args.amp = "fp32"
            needs = "a CUDA GPU" if device.type in FP32_DEVICES else "native bf16 support"
            message = f"amp=bf16 needs {needs}; {device_name(device)} trains in fp32"
    else:
        message = f"off (amp={args.amp}); training in fp32"
    if RANK in {-1, 0}:
        LOGGER.info(f"{PREFIX}{message}")


def check_amp(model: torch.nn.Module) -> bool:
    """Return whether to train ``model`` with fp16 AMP, checked on ``model`` itself and saying why in one line.

    A drop-in for Ultralytics' ``check_amp`` (same signature and meaning) that never downloads: CPU and MPS say no
    at once; a GPU must not be on Ultralytics' fp16 blocklist and must give the same detections under fp16 autocast
    as in fp32 (:func:`outputs_agree`).
    """
    device = next(model.parameters()).device
    name = device_name(device)
    if device.type in FP32_DEVICES:
        LOGGER.info(f"{PREFIX}{name} trains in fp32 (fp16 AMP applies to CUDA GPUs)")
        return False
    if device.type == "cuda" and FP16_BLOCKLIST.search(name):
        LOGGER.warning(f"{PREFIX}{name} is known to give NaN losses under fp16 AMP; training in fp32")
        return False
    try:
        agree, detail = outputs_agree(model, torch.float16)
    except Exception as e:  # a model or driver that cannot run fp16 autocast at all: the safe answer is fp32
        LOGGER.warning(f"{PREFIX}fp16 check could not run on {name} ({type(e).__name__}: {e}); training in fp32")
        return False
    if agree:
        LOGGER.info(f"{PREFIX}fp16 autocast on {name} (checked on this model, offline: {detail})")
    else:
        LOGGER.warning(f"{PREFIX}fp16 fails on {name} for this model ({detail}); training in fp32")
    return agree


def outputs_agree(model: torch.nn.Module, dtype: torch.dtype, imgsz: int | None = None) -> tuple[bool, str]:
    """Compare ``model``'s eval outputs in fp32 and under ``dtype`` autocast on a fixed input, on its own device.

    Every output tensor (the head's input features included, where an overflow in the backbone or neck shows first)
    must be finite, and the detections must agree (boxes within :data:`BOX_ATOL` px plus :data:`BOX_RTOL`, scores
    within :data:`SCORE_ATOL`). Features are not compared by value: in a freshly initialised network they are tiny
    and lose digits in fp16 harmlessly. Returns the verdict and what it saw. The model's train/eval mode is restored.
    """
    device = next(model.parameters()).device
    stride = int(model.stride.max()) if hasattr(model, "stride") else 32
    imgsz = imgsz or max(256, 4 * stride)
    im = torch.rand(2, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0)).to(device)
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            reference = list(floating_tensors(model(im)))
            with torch.autocast(device.type, dtype=dtype):
                mixed = [t.float() for t in floating_tensors(model(im))]
    finally:
        model.train(training)
    if not reference or [t.shape for t in reference] != [t.shape for t in mixed]:
        return False, "outputs differ in shape"
    if not all(torch.isfinite(t).all() for t in mixed):
        return False, "outputs not finite (overflow)"
    a, b = reference[0], mixed[0]  # detections: (batch, 4 box + nc score rows, anchors) for a Detect head
    nc = getattr(model, "nc", None)
    boxes = 4 if a.ndim == 3 and nc and a.shape[1] == 4 + nc else a.shape[1]
    boxes_agree = torch.allclose(b[:, :boxes], a[:, :boxes], rtol=BOX_RTOL, atol=BOX_ATOL)
    box_diff = (a[:, :boxes] - b[:, :boxes]).abs().max().item()
    score_diff = (a[:, boxes:] - b[:, boxes:]).abs().max().item() if boxes < a.shape[1] else 0.0
    detail = f"boxes within {box_diff:.2g} px, scores within {score_diff:.2g}"
    return boxes_agree and score_diff <= SCORE_ATOL, detail


def floating_tensors(output) -> Iterator[torch.Tensor]:
    """Yield every floating-point tensor inside a model output (nested tuples, lists and dicts)."""
    if isinstance(output, torch.Tensor):
        if output.is_floating_point():
            yield output
    elif isinstance(output, dict):
        for value in output.values():
            yield from floating_tensors(value)
    elif isinstance(output, (list, tuple)):
        for value in output:
            yield from floating_tensors(value)


def bf16_available(device: torch.device) -> bool:
    """Return True where Ultralytics' bf16 autocast runs (it raises elsewhere: CPU, MPS, GPUs without native bf16)."""
    try:
        autocast(torch.bfloat16, device=device.type)
    except RuntimeError:
        return False
    return True


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type.upper()


@contextmanager
def offline_check_amp() -> Iterator[None]:
    """Put :func:`check_amp` in place of Ultralytics' for a trainer's setup (``BaseTrainer._setup_train`` calls it).

    Scoped, so stock Ultralytics trainers keep their own check.
    """
    import ultralytics.engine.trainer as engine

    stock = engine.check_amp
    engine.check_amp = check_amp
    try:
        yield
    finally:
        engine.check_amp = stock
