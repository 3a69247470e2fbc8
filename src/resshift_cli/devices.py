"""Device selection (CUDA → MPS → CPU), precision policy and the seeded noise generator."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from resshift_cli.errors import DeviceError, UsageError
from resshift_cli.nets import winograd

DEVICE_ENV = "RESSHIFT_DEVICE"
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
"""Precision names ↔ torch dtypes: the one table every front end (CLI, API, trainer, benchmarks) reads."""
PRECISIONS = ("auto", *DTYPES)
"""What `resolve_precision` accepts: a name of `DTYPES`, or "auto" (chosen for the device)."""


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str | None = None) -> torch.device:
    """`auto` (None: `$RESSHIFT_DEVICE`, else auto) → CUDA, then MPS, then CPU; explicit names are checked."""
    name = (name or os.environ.get(DEVICE_ENV) or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    _check_available(device)
    return device


def _check_available(device: torch.device) -> None:
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                "CUDA was requested but is not available (no GPU, or a CPU-only torch); try --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"{device} does not exist: {torch.cuda.device_count()} CUDA device(s) found")
    elif device.type == "mps" and not mps_available():
        raise DeviceError("MPS was requested but is not available; try --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unsupported device {device}; use auto, cpu, cuda, cuda:N or mps")


ONEDNN_ISA_ENV = "ONEDNN_MAX_CPU_ISA"
"""oneDNN's cap on the instruction sets its convolutions and matmuls use (read once, at its first use)."""
ATEN_CAPABILITY_ENV = "ATEN_CPU_CAPABILITY"
"""ATen's cap on its vectorised kernels: default, avx2 or avx512 (read when torch is imported)."""
CPU_CLASSES = ("amx", "avx512-bf16", "avx512", "avx2", "other")
"""CPU classes from the fastest down: AMX tiles; AVX-512 with BF16 dot products; AVX-512; AVX2; anything else.
The first two compute bfloat16 natively."""
_NATIVE_BF16 = ("amx", "avx512-bf16")
_ONEDNN_CAPS = {
    "avx512-bf16": ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512"),
    "avx512": ("AVX512_CORE", "AVX512_CORE_VNNI"),
    "avx2": ("AVX2", "AVX2_VNNI", "AVX2_VNNI_2"),
    "other": ("SSE41", "AVX"),
}
"""oneDNN ISA names (its `dnnl_cpu_isa_t`, upper case as the variable takes them) → the class they cap at;
the AMX names, DEFAULT and names not listed here leave the class uncapped."""
_ATEN_CAPS = {"avx2": "avx2", "default": "other"}
"""ATEN_CPU_CAPABILITY values → the class they cap at; avx512 leaves it uncapped."""


CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str] | None:
    """The CPU feature flags of /proc/cpuinfo (Linux x86), or None where there is no such file."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    lines = (line.partition(":")[2] for line in text.splitlines() if line.startswith("flags"))
    return frozenset(flag for line in lines for flag in line.split())


def class_of_flags(flags: frozenset[str]) -> str:
    """The `CPU_CLASSES` entry a set of /proc/cpuinfo flags belongs to."""
    if {"amx_tile", "amx_bf16"} <= flags:
        return "amx"
    if {"avx512_bf16", "avx512f"} <= flags:
        return "avx512-bf16"
    if "avx512f" in flags:
        return "avx512"
    return "avx2" if "avx2" in flags else "other"


def _class_from_torch() -> str:
    """The class from torch's own CPU detection, for systems without /proc/cpuinfo."""
    capability = torch.backends.cpu.get_cpu_capability()
    if capability.startswith("AVX512"):
        if getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)():
            return "amx"
        bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
        return "avx512-bf16" if bf16 else "avx512"
    return "avx2" if capability == "AVX2" else "other"


def cpu_hardware_class() -> str:
    """What the CPU itself offers: /proc/cpuinfo flags on Linux, torch's detection elsewhere."""
    flags = cpu_flags()
    return _class_from_torch() if flags is None else class_of_flags(flags)


def cpu_class_caps() -> dict[str, str]:
    """The environment caps in force, `{variable=value: class it caps at}` (empty when uncapped)."""
    caps = {}
    isa = os.environ.get(ONEDNN_ISA_ENV, "").strip().upper()
    for cls, names in _ONEDNN_CAPS.items():
        if isa in names:
            caps[f"{ONEDNN_ISA_ENV}={isa}"] = cls
    aten = os.environ.get(ATEN_CAPABILITY_ENV, "").strip().lower()
    if aten in _ATEN_CAPS:
        caps[f"{ATEN_CAPABILITY_ENV}={aten}"] = _ATEN_CAPS[aten]
    return caps


def cpu_class() -> str:
    """The CPU class torch really computes at: the hardware's (`cpu_hardware_class`) lowered by the caps of
    `$ONEDNN_MAX_CPU_ISA` and `$ATEN_CPU_CAPABILITY`; one of `CPU_CLASSES`."""
    return max([cpu_hardware_class(), *cpu_class_caps().values()], key=CPU_CLASSES.index)


def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX) under the environment's caps."""
    return cpu_class() in _NATIVE_BF16


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """`auto` → bf16 on CUDA with bf16 support, else fp16 on CUDA; bf16 on CPUs that compute it natively
    under the instruction-set caps (`cpu_has_native_bf16`; measured 3.1–4.2× faster than fp32 at 48–50 dB
    PSNR against it); fp32 on MPS and other CPUs."""
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return DTYPES[precision]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def resolve_winograd(precision: str | torch.dtype, device: torch.device) -> bool:
    """Whether `precision` on `device` runs 3×3 convolutions through Winograd's transform
    (`pipeline.UpscaleOptions.winograd`): "auto" on a CPU whose PyTorch has NNPACK (`nets.winograd`),
    except the AMX class. NNPACK's float32 kernels measured 2.0–2.9× faster than oneDNN's direct float32
    convolutions and up to 1.4× faster than its bfloat16 ones on the AVX2 and AVX-512 classes (a whole
    image 2.0–2.2× faster than float32). On an AMX machine bf16 made a whole image 3.4–3.8× faster than
    float32 (README, "Performance"), more than Winograd saves, so AMX keeps bf16 everywhere. Explicit
    precisions keep the direct convolutions: "fp32" is the exact path."""
    return precision == "auto" and device.type == "cpu" and cpu_class() != "amx" and winograd.available()


def precision_label(dtype: torch.dtype, uses_winograd: bool) -> str:
    """What a run computes in, for people: "fp32", "bf16", … with "+winograd" when the autoencoder (and
    a float32 denoiser) used Winograd convolutions."""
    return precision_name(dtype) + ("+winograd" if uses_winograd else "")


def precision_name(dtype: torch.dtype) -> str:
    """ "fp32" | "fp16" | "bf16" for a dtype of `DTYPES`; torch's own name for any other."""
    names = {value: name for name, value in DTYPES.items()}
    return names.get(dtype, str(dtype).removeprefix("torch."))


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Mixed precision for matmuls and convolutions when `dtype` is not float32; a no-op otherwise."""
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def available_cpus() -> int:
    """CPUs this process may really use: its affinity mask, capped by a cgroup v2 CPU quota."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return count
    return count if quota == "max" else max(1, min(count, int(quota) // int(period)))


def configure_threads() -> int:
    """Match torch's intra-op threads to the usable CPUs unless the user set OMP_NUM_THREADS."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(available_cpus())
    return torch.get_num_threads()


def memory_format(device: torch.device, dtype: torch.dtype) -> torch.memory_format:
    """Channels-last for reduced precision on CPU and CUDA (oneDNN/cuDNN fast paths: 2× for bf16 on CPU);
    the exact float32 path keeps the contiguous layout, whose rounding matches the official code."""
    if dtype == torch.float32 or device.type not in ("cpu", "cuda"):
        return torch.contiguous_format
    return torch.channels_last


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed`; noise is drawn on the CPU, then moved (one image everywhere)."""
    return torch.Generator(device="cpu").manual_seed(seed)


def release_freed_memory() -> None:
    """Hand memory freed inside the C heap back to the system (glibc's `malloc_trim`; a no-op elsewhere).

    Re-casting the weights frees their float32 storage while smaller casts and temporaries are allocated in
    its place; glibc keeps those freed pages mapped (realsr-v3 to bf16: 0.23 GiB of resident memory).
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None)
    if trim is not None:
        trim(0)
