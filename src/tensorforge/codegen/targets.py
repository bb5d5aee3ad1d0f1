"""Code-generation targets: what the lowering needs to know about a machine.

All performance knowledge that depends on the machine (vector width, register count, cache sizes) is
read from a ``Target``; lowering rules never test a CPU name.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, replace

from ..errors import TargetError
from ..ir.dtype import DType


@dataclass(frozen=True)
class Target:
    name: str
    triple: str
    cpu: str
    features: str
    vector_bits: int  # width of one SIMD register
    num_vregs: int  # architectural SIMD registers
    fma: bool = True
    is_gpu: bool = False
    is_host: bool = False
    l1d: int = 32 * 1024
    l2: int = 1024 * 1024
    l3: int = 32 * 1024 * 1024
    cores: int = 1
    data_layout: str = ""
    # FMA datapath: units per core and their width in bits (a 512-bit op on 256-bit units takes two)
    fma_units: int = 2
    fma_bits: int = 256
    masked_ops: bool = False  # cheap masked vector loads/stores (AVX-512): loop tails run as vectors
    schedules: str = "cpu"  # the family of kernel schedules lowering picks (lower/rules.py: schedule_rule)

    def lanes(self, dtype: DType) -> int:
        """How many elements of ``dtype`` fill one vector register (computing f16 as f32)."""
        if self.is_gpu:
            return 1
        bits = 8 if dtype is DType.BOOL else dtype.compute.bits
        return max(1, self.vector_bits // bits)

    @property
    def arch(self) -> str:
        return self.triple.split("-")[0]

    def has_feature(self, name: str) -> bool:
        """Whether the feature string enables ``name`` (LLVM's spelling: ``avx512vnni``, ``amx-int8``)."""
        return _feature_set(self.features).get(name, False)

    @property
    def int8_isa(self) -> str:
        """The int8 GEMM path the features allow (``lower/int8_gemm.py``): ``amx`` (AMX-INT8 tiles),
        ``vnni512`` (AVX-512 VNNI on zmm), ``vnni256`` (AVX-VNNI on ymm), ``avx2`` (``vpmaddwd`` on int16),
        else ``generic`` (int32 arithmetic)."""
        if self.is_gpu or self.arch != "x86_64":
            return "generic"
        if self.has_feature("amx-int8") and self.has_feature("amx-tile") and self.vector_bits >= 512:
            return "amx"
        if self.vector_bits >= 512 and self.has_feature("avx512vnni") and self.has_feature("avx512bw"):
            return "vnni512"
        if self.has_feature("avxvnni") or (self.has_feature("avx512vnni") and self.has_feature("avx512vl")):
            return "vnni256"
        if self.has_feature("avx2"):
            return "avx2"
        return "generic"

    def describe(self) -> str:
        return (
            f"{self.name}: {self.triple}, cpu={self.cpu}, {self.vector_bits}-bit vectors x "
            f"{self.num_vregs} registers, L1d={self.l1d // 1024}K L2={self.l2 // 1024}K "
            f"L3={self.l3 // (1024 * 1024)}M, {self.cores} cores"
        )


X86_64 = Target(
    "x86_64",
    "x86_64-unknown-linux-gnu",
    "haswell",
    "+avx2,+fma,+f16c,+bmi2",
    256,
    16,
)
X86_64_AVX512 = Target(
    "x86_64-avx512", "x86_64-unknown-linux-gnu", "skylake-avx512",
    "+avx512f,+avx512bw,+avx512dq,+avx512vl,+avx2,+fma,+f16c,+bmi2", 512, 32, fma_bits=512, masked_ops=True,
)  # fmt: skip
X86_64_AVX512VNNI = replace(
    X86_64_AVX512, name="x86_64-avx512vnni", cpu="cascadelake", features=X86_64_AVX512.features + ",+avx512vnni"
)
X86_64_AVXVNNI = replace(X86_64, name="x86_64-avxvnni", cpu="alderlake", features=X86_64.features + ",+avxvnni")
X86_64_AMX = replace(
    X86_64_AVX512, name="x86_64-amx", cpu="sapphirerapids",
    features=X86_64_AVX512.features + ",+avx512vnni,+avxvnni,+avx512bf16,+amx-tile,+amx-int8,+amx-bf16",
)  # fmt: skip
X86_64_AVX512BF16 = replace(  # AVX512-BF16 without AMX (Cooper Lake, AMD Zen 4): the vdpbf16ps bf16 kernels
    X86_64_AVX512, name="x86_64-avx512bf16", cpu="cooperlake",
    features=X86_64_AVX512.features + ",+avx512vnni,+avx512bf16",
)  # fmt: skip
AARCH64 = Target(
    "aarch64", "aarch64-unknown-linux-gnu", "neoverse-n1", "+neon,+fp-armv8", 128, 32,
    l1d=64 * 1024, l2=1024 * 1024, fma_bits=128,
)  # fmt: skip
NVPTX_SM90 = Target(
    "nvptx-sm90", "nvptx64-nvidia-cuda", "sm_90", "+ptx80", 32, 255, is_gpu=True, schedules="gpu",
)  # fmt: skip
NVPTX_SM80 = replace(NVPTX_SM90, name="nvptx-sm80", cpu="sm_80", features="+ptx70")

NAMED = {t.name: t for t in (X86_64, X86_64_AVX512, X86_64_AVX512VNNI, X86_64_AVXVNNI, X86_64_AMX, AARCH64,
                              NVPTX_SM90, NVPTX_SM80, X86_64_AVX512BF16)}  # fmt: skip
ALIASES = {"x86_64-avx2": "x86_64", "avx2": "x86_64", "avx512": "x86_64-avx512", "arm64": "aarch64",
           "sm_90": "nvptx-sm90", "sm90": "nvptx-sm90", "ptx": "nvptx-sm90", "nvptx": "nvptx-sm90",
           "sm_80": "nvptx-sm80"}  # fmt: skip


@functools.cache
def _feature_set(features: str) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for f in features.split(","):
        f = f.strip()
        if f[:1] in "+-" and len(f) > 1:
            out[f[1:]] = f[0] == "+"
    return out


def _cache_size(level_type: tuple[int, str], default: int) -> int:
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for idx in sorted(os.listdir(base)):
            d = os.path.join(base, idx)
            if not idx.startswith("index"):
                continue
            with open(os.path.join(d, "level")) as f:
                level = int(f.read())
            with open(os.path.join(d, "type")) as f:
                typ = f.read().strip()
            if level == level_type[0] and typ in (level_type[1], "Unified"):
                with open(os.path.join(d, "size")) as f:
                    s = f.read().strip()
                mult = {"K": 1024, "M": 1024 * 1024}.get(s[-1], 1)
                return int(s.rstrip("KM")) * mult
    except OSError:
        pass
    return default


AMX_FEATURES = ("amx-tile", "amx-int8", "amx-bf16", "amx-fp16", "amx-complex")

# FMA datapaths of CPUs whose width differs from their widest vector registers: (units, bits)
FMA_UNITS = {"znver1": (2, 128), "znver2": (2, 256), "znver3": (2, 256), "znver4": (2, 256), "znver5": (2, 512)}


@functools.cache
def host() -> Target:
    """The machine we run on, with its detected ISA extensions and cache sizes."""
    import llvmlite.binding as llvm

    triple = llvm.get_process_triple()
    cpu = llvm.get_host_cpu_name()
    feats = llvm.get_host_cpu_features()
    # pin the feature set to what was detected (never '+' something the CPU lacks)
    flags = ",".join(("+" if v else "-") + k for k, v in sorted(feats.items()))
    arch = triple.split("-")[0]
    if arch == "x86_64":
        if feats.get("avx512f") and feats.get("avx512vl") and feats.get("avx512bw"):
            base = X86_64_AVX512
        elif feats.get("avx2") and feats.get("fma"):
            base = X86_64
        else:
            base = replace(X86_64, vector_bits=128, num_vregs=16, fma=bool(feats.get("fma")))
    elif arch in ("aarch64", "arm64"):
        base = AARCH64
    else:
        base = replace(X86_64, vector_bits=128)
    if os.environ.get("TENSORFORGE_NO_AVX512") and base is X86_64_AVX512:
        base = X86_64
        flags += ",-avx512f"
    if feats.get("amx-tile"):
        from .amx import request_amx

        if not request_amx():  # Linux refused the tile state: no AMX code for this process
            flags = ",".join(f for f in flags.split(",") if f[1:] not in AMX_FEATURES)
            flags += "".join(f",-{f}" for f in AMX_FEATURES)
    units, bits = FMA_UNITS.get(cpu, (base.fma_units, min(base.fma_bits, base.vector_bits)))
    return replace(
        base,
        name="host",
        fma_units=units,
        fma_bits=bits,
        triple=triple,
        cpu=cpu,
        features=flags,
        is_host=True,
        l1d=_cache_size((1, "Data"), base.l1d),
        l2=_cache_size((2, "Unified"), base.l2),
        l3=_cache_size((3, "Unified"), base.l3),
        cores=os.cpu_count() or 1,
    )


def get_target(name: str | Target | None) -> Target:
    if isinstance(name, Target):
        return name
    if name is None or name in ("host", "native"):
        return host()
    key = ALIASES.get(name, name)
    if key in NAMED:
        return NAMED[key]
    known = ", ".join(["host", *NAMED])
    raise TargetError(f"unknown target {name!r}; known targets: {known}")
