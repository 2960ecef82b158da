"""Where a run computes and in what precision: the ``device`` and ``dtype`` settings, resolved once.

``auto`` means CUDA with bf16 (fp16 on GPUs without bf16) where a GPU is present, the CPU in fp32
otherwise. Asking for a GPU that is not there is one :class:`ConfigError` line, before any model
loads. The precision policy the trainers follow is in :class:`Precision`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pefthub.errors import ConfigError

if TYPE_CHECKING:  # torch is imported lazily: `pefthub --help` and the site build never need it
    import torch

AUTO = "auto"
DTYPES = (AUTO, "float32", "bfloat16", "float16")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
DEVICE_HELP = "where the run computes: auto (CUDA where present, else CPU), cpu, cuda or cuda:N"
DTYPE_HELP = ("compute precision of the model's frozen weights: auto (bf16 on a GPU, fp32 on the CPU), float32, "
              "bfloat16 or float16; trainable parameters, loss and log-probs stay fp32")


def check_device(value: Any, where: str = "device") -> str:
    """``value`` if it names a device setting (auto | cpu | cuda | cuda:N), else one error line."""
    if not isinstance(value, str) or not DEVICE_PATTERN.match(value):
        raise ConfigError(f"{where}: must be auto, cpu, cuda or cuda:N (got {value!r})")
    return value


def check_dtype(value: Any, where: str = "dtype") -> str:
    """``value`` if it names a precision setting, else one error line."""
    if value not in DTYPES:
        raise ConfigError(f"{where}: must be one of {', '.join(DTYPES)} (got {value!r})")
    return value


def cuda_count() -> int:
    """How many CUDA devices torch sees here (0 on a CPU-only build or machine)."""
    import torch

    try:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a CPU-only build, or a driver that fails to initialise
        return 0


@dataclass(frozen=True)
class Placement:
    """A resolved device and dtype, with the names results record."""

    device: str   # "cpu" or "cuda:N"
    dtype: str    # "float32", "bfloat16" or "float16"

    @property
    def torch_device(self) -> "torch.device":
        import torch

        return torch.device(self.device)

    @property
    def torch_dtype(self) -> "torch.dtype":
        import torch

        return getattr(torch, self.dtype)

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def record(self) -> dict[str, Any]:
        """What a result's ``environment.compute`` holds: device, dtype, and the GPUs' model and count."""
        out: dict[str, Any] = {"device": self.device, "dtype": self.dtype, "gpu": None}
        if self.is_cuda:
            import torch

            index = self.torch_device.index or 0
            out["gpu"] = {"name": torch.cuda.get_device_name(index), "count": cuda_count(),
                          "memory_gb": round(torch.cuda.get_device_properties(index).total_memory / 2**30, 1)}
        return out


def resolve(device: Any = AUTO, dtype: Any = AUTO, *, where: str = "") -> Placement:
    """The placement ``device``/``dtype`` stand for on this machine; asking for CUDA where there is
    none, or for a GPU index past the last one, is one :class:`ConfigError` line naming ``where``
    (``"config"``, a suite file, or ``"-"`` for command-line options)."""
    prefix = "--" if where == "-" else f"{where}." if where else ""
    device, dtype = check_device(device, f"{prefix}device"), check_dtype(dtype, f"{prefix}dtype")
    count = cuda_count()
    if device == AUTO:
        device = "cuda" if count else "cpu"
    if device.startswith("cuda"):
        if count == 0:
            raise ConfigError(f"{prefix}device: '{device}' asked for, but torch sees no CUDA GPU on this machine "
                              f"(use --device cpu, or install a CUDA build of torch where a GPU is present)")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= count:
            raise ConfigError(f"{prefix}device: '{device}' asked for, but torch sees {count} GPU(s) (cuda:0 to "
                              f"cuda:{count - 1})")
        device = f"cuda:{index}"
    if dtype == AUTO:
        dtype = "float32"
        if device.startswith("cuda"):
            import torch

            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return Placement(device, dtype)


def config_placement(config: dict) -> Placement:
    """The placement a run config asks for (``device``/``dtype`` keys, ``auto`` when absent)."""
    return resolve(config.get("device", AUTO), config.get("dtype", AUTO), where="config")


def placement_keys(device: str = AUTO, dtype: str = AUTO) -> dict[str, str]:
    """The config keys for a device/dtype choice: only non-default values enter a config, so runs that
    leave both at ``auto`` keep their committed run ids."""
    out = {}
    if check_device(device) != AUTO:
        out["device"] = device
    if check_dtype(dtype) != AUTO:
        out["dtype"] = dtype
    return out


@dataclass(frozen=True)
class Precision:
    """The mixed-precision policy: the frozen weights compute in ``compute`` (bf16/fp16 on a GPU),
    trainable parameters and optimizer state stay fp32, and losses and log-probs are taken in fp32."""

    compute: "torch.dtype"

    @property
    def mixed(self) -> bool:
        import torch

        return self.compute != torch.float32

    def autocast(self, device: "torch.device"):
        """The autocast context a forward runs under (a no-op in fp32)."""
        import contextlib

        import torch

        if not self.mixed:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.compute)


def keep_trainable_fp32(model):
    """Cast the trainable parameters of ``model`` to fp32 in place (the frozen weights keep their
    compute dtype): optimizer state and updates stay fp32, as the TinyLoRA paper found best even per
    byte. Returns ``model``."""
    import torch

    for param in model.parameters():
        if param.requires_grad and param.is_floating_point() and param.dtype != torch.float32:
            param.data = param.data.float()
    return model


def device_guard(expected: "torch.device | str | None" = None):
    """A dispatch mode that raises on any op whose tensor arguments (0-dim ones aside, as CUDA allows
    them) sit on different devices, or, with ``expected``, on a device other than it: what a GPU
    would refuse, made strict (indexing a CUDA tensor with CPU indices works there, but copies)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    want = None if expected is None else torch.device(expected).type

    class DeviceGuard(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            flat, _ = tree_flatten((args, kwargs))
            kinds = {t.device.type for t in flat if isinstance(t, torch.Tensor) and t.dim() > 0}
            if len(kinds) > 1 or (want is not None and kinds and kinds != {want}):
                raise RuntimeError(f"device guard: {func} got tensors on {', '.join(sorted(kinds))}"
                                   + (f" (expected {want})" if want else ""))
            return func(*args, **kwargs)

    return DeviceGuard()


def model_device(model) -> "torch.device":
    """The device of a model's first parameter (where every tensor handed to it must live)."""
    return next(model.parameters()).device


__all__ = ["AUTO", "DTYPES", "Placement", "Precision", "resolve", "config_placement", "placement_keys",
           "check_device", "check_dtype", "cuda_count", "model_device", "keep_trainable_fp32", "device_guard"]
