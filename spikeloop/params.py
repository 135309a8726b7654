"""The one parameter object shared by the golden model, the float reference and the gateware.

Everything that fixes the arithmetic (sizes, time constants and their decay codes, Q-formats,
learning-rule options) lives here, is validated here, and is derived here (integer constants,
the surrogate ROM), so the numpy model and the Amaranth generator cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

__all__ = [
    "Fmt", "Kernel", "Optimiser", "Feedback", "ErrorSource", "Decay", "Params", "ParamError",
    "decay_code",
]


class ParamError(ValueError):
    """A parameter value is out of range or inconsistent; the message says what was expected."""


class Kernel(enum.Enum):
    """Eligibility kernel: how ``λ_ij`` (the factor multiplied by the error) is formed."""
    DOUBLE_EXP = "double_exp"   # el and el_flt per synapse (the published α kernel)
    SINGLE_EXP = "single_exp"   # el only; λ = el
    FACTORISED = "factorised"   # no per-synapse trace; λ = σ'_i · ẑ_j

    @property
    def traces(self) -> tuple[str, ...]:
        """The per-synapse trace words this kernel stores, in word order: the one definition
        that the layouts, the units, the models and the protocol's memory spaces read."""
        return {"double_exp": ("el", "elf"), "single_exp": ("el",), "factorised": ()}[self.value]


class Optimiser(enum.Enum):
    RMAXPROP = "rmaxprop"       # Δw = r0 · g / (q + ε), q = max(|g|, √γ q)
    FIXED = "fixed"             # Δw = g / 2^lr_shift


class Feedback(enum.Enum):
    """How output errors reach the hidden layer: e_k = Σ_i B_ki e_i."""
    SYMMETRIC = "symmetric"     # B = W_outᵀ
    RANDOM = "random"           # B fixed, N(0, 1)
    UNIFORM = "uniform"         # B = 1


class ErrorSource(enum.Enum):
    HOST = "host"               # the host streams e_i per step
    TARGET = "target"           # the host streams target spikes; the chip filters Ŝ − S


def int_range(bits: int, signed: bool) -> tuple[int, int]:
    """Smallest and largest integer of a ``bits``-wide word (two's complement if ``signed``)."""
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


@dataclass(frozen=True)
class Fmt:
    """A fixed-point word: ``bits`` wide, ``frac`` fractional bits, two's complement if ``signed``."""
    bits: int
    frac: int
    signed: bool

    def __post_init__(self):
        if not isinstance(self.bits, int) or not 2 <= self.bits <= 32:
            raise ParamError(f"Fmt.bits must be an integer in 2..32, not {self.bits!r}")
        if not isinstance(self.frac, int) or not 0 <= self.frac <= 31:
            raise ParamError(f"Fmt.frac must be an integer in 0..31, not {self.frac!r}")

    @property
    def min(self) -> int:
        return int_range(self.bits, self.signed)[0]

    @property
    def max(self) -> int:
        return int_range(self.bits, self.signed)[1]

    @property
    def one(self) -> int:
        return 1 << self.frac

    def quantise(self, x) -> np.ndarray | int:
        """Round a real value to this format, saturating."""
        q = np.clip(np.rint(np.asarray(x, dtype=np.float64) * self.one), self.min, self.max)
        return int(q) if np.ndim(q) == 0 else q.astype(np.int64)

    def real(self, q) -> np.ndarray:
        return np.asarray(q, dtype=np.float64) / self.one

    def __str__(self):
        whole = self.bits - self.frac - (1 if self.signed else 0)
        return f"{'S' if self.signed else 'U'}Q{whole}.{self.frac}"


@dataclass(frozen=True)
class Decay:
    """A decay factor ``f = M / 2^K`` (0 < M < 2^K), applied as ``trunc(x · M / 2^K)``.

    M is a small constant, so ``x · M`` is a handful of shifts and adds in gateware.
    """
    M: int
    K: int

    def __post_init__(self):
        if not isinstance(self.K, int) or not 1 <= self.K <= 20:
            raise ParamError(f"a decay code's K must be an integer in 1..20, not {self.K!r}")
        if not isinstance(self.M, int) or not 0 < self.M < (1 << self.K):
            raise ParamError(f"a decay code's M must be an integer in 1..2^K-1 = {(1 << self.K) - 1}, "
                             f"not {self.M!r}")

    @property
    def A(self) -> int:
        """``2^K − M``: the weight of the new input in a low-pass filter."""
        return (1 << self.K) - self.M

    @property
    def factor(self) -> float:
        return self.M / (1 << self.K)

    def tau(self, dt: float = 1.0) -> float:
        """The time constant this code actually realises, in the unit of ``dt``."""
        return -dt / math.log(self.factor)


def decay_code(factor: float, tol: float = 0.01, max_k: int = 16) -> Decay:
    """The code with the fewest bits K whose time constant is within ``tol`` (relative) of ``factor``'s."""
    if not 0.0 < factor < 1.0:
        raise ParamError(f"a decay factor must be in (0, 1), not {factor!r}")
    tau = -1.0 / math.log(factor)
    best = None
    for k in range(1, max_k + 1):
        m = min(max(int(round(factor * (1 << k))), 1), (1 << k) - 1)
        err = abs(-1.0 / math.log(m / (1 << k)) - tau) / tau
        if best is None or err < best[0]:
            best = (err, Decay(m, k))
        if err <= tol:
            break
    return best[1]


def _default_formats() -> dict[str, Fmt]:
    return {
        "u": Fmt(20, 10, True),       # membrane potential, mV above rest
        "i": Fmt(20, 10, True),       # synaptic current, mV
        "w": Fmt(16, 10, True),       # weight, mV added to I per presynaptic spike
        "z": Fmt(16, 12, False),      # presynaptic trace, spikes
        "zh": Fmt(16, 12, False),     # filtered presynaptic trace ẑ, spikes
        "sigma": Fmt(8, 8, False),    # surrogate derivative σ' (1.0 saturates to 255/256)
        "el": Fmt(16, 12, False),     # eligibility trace
        "elf": Fmt(16, 12, False),    # filtered eligibility trace
        "err": Fmt(16, 12, True),     # error e_i (also the host-streamed word)
        "m": Fmt(24, 14, True),       # gradient accumulator over a chunk
        "q": Fmt(24, 14, False),      # RMaxProp normaliser √g2, same scale as |m|
        "fb": Fmt(16, 10, True),      # random/uniform feedback weights B
        "rate": Fmt(16, 12, False),   # postsynaptic rate trace for the regulariser
    }


#: Names of the decays a time constant becomes.
DECAY_NAMES = ("mem", "syn", "rate", "q")

#: Names of the formats, in the order docs list them.
FORMAT_NAMES = tuple(_default_formats())

_ENUMS = {"kernel": Kernel, "optimiser": Optimiser, "feedback": Feedback, "error_source": ErrorSource}


@dataclass(frozen=True)
class Params:
    """Network size, time constants, learning rule and number formats.

    Units: time in ms, membrane potential, current and weights in mV (rest = 0 mV).
    Every time constant becomes a decay code ``1 − Σ 2^-k`` (see :class:`Decay`); the float
    reference uses either the exact exponentials or the codes' factors.

    Raises
    ------
    ParamError
        On construction, if any value is out of range; the message says what was expected.
    """
    n_in: int = 100
    n_hidden: int = 0
    n_out: int = 1
    dt_ms: float = 1.0
    tau_mem_ms: float = 10.0
    tau_syn_ms: float = 5.0
    tau_ref_ms: float = 5.0
    tau_rate_ms: float = 100.0       # regulariser's postsynaptic rate trace
    tau_rms_s: float = 30.0          # RMaxProp memory: γ = exp(−chunk / tau_rms)
    threshold_mv: float = 10.0
    beta_per_mv: float = 1.0         # surrogate steepness β
    sigma_addr_bits: int = 6         # σ' ROM has 2^a entries indexed by |V − ϑ|
    sigma_shift: int = 8             # ... in bins of 2^s LSBs of V
    kernel: Kernel = Kernel.DOUBLE_EXP
    optimiser: Optimiser = Optimiser.RMAXPROP
    feedback: Feedback = Feedback.SYMMETRIC
    error_source: ErrorSource = ErrorSource.TARGET
    error_delay: int = 0             # steps σ' and ẑ are delayed to meet a late error
    chunk_steps: int = 500
    r0_mv: float = 0.1               # RMaxProp step: |Δw| ≤ r0 per chunk
    eps: float = 1e-3                # RMaxProp ε, in the unit of |m|
    ratio_bits: int = 8              # precision of g / q
    lr_shift: int = 10               # fixed optimiser: Δw = trunc(m / 2^lr_shift) in LSBs
    w_max_mv: float = 8.0
    w_init_mean_mv: float = 0.0
    w_init_std_mv: float = 0.5
    regulariser: bool = False
    rho: float = 1e-3
    reg_exponent: int = 4
    decay_codes: dict = field(default_factory=dict)   # {"mem"|"syn"|"rate"|"q": [M, K]} overrides
    formats: dict = field(default_factory=_default_formats)

    # ------------------------------------------------------------------ validation
    def __post_init__(self):
        def positive_int(name, lo=1, hi=1 << 16):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ParamError(f"{name} must be an integer in {lo}..{hi}, not {v!r}")

        def positive_real(name):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
                raise ParamError(f"{name} must be a positive finite number, not {v!r}")

        positive_int("n_in")
        positive_int("n_hidden", lo=0)
        positive_int("n_out")
        for name in ("dt_ms", "tau_mem_ms", "tau_syn_ms", "tau_rate_ms", "tau_rms_s",
                     "threshold_mv", "beta_per_mv", "r0_mv", "w_max_mv", "eps", "rho"):
            positive_real(name)
        if isinstance(self.tau_ref_ms, bool) or not isinstance(self.tau_ref_ms, (int, float)) \
                or not (0 <= self.tau_ref_ms < 1e6):
            raise ParamError(f"tau_ref_ms must be a non-negative number, not {self.tau_ref_ms!r}")
        for name in ("w_init_mean_mv", "w_init_std_mv"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ParamError(f"{name} must be a finite number, not {v!r}")
        if self.w_init_std_mv < 0:
            raise ParamError(f"w_init_std_mv must be >= 0, not {self.w_init_std_mv!r}")
        positive_int("sigma_addr_bits", 1, 12)
        positive_int("sigma_shift", 0, 24)
        positive_int("error_delay", 0, 64)
        positive_int("chunk_steps", 1, 1 << 20)
        positive_int("ratio_bits", 1, 16)
        positive_int("lr_shift", 0, 31)
        positive_int("reg_exponent", 1, 8)
        if not isinstance(self.regulariser, bool):
            raise ParamError(f"regulariser must be true or false, not {self.regulariser!r}")
        for name, cls in _ENUMS.items():
            v = getattr(self, name)
            if not isinstance(v, cls):
                try:
                    object.__setattr__(self, name, cls(v))
                except ValueError:
                    choices = ", ".join(repr(m.value) for m in cls)
                    raise ParamError(f"{name} must be one of {choices}, not {v!r}") from None
        fmts = _default_formats()
        if not isinstance(self.formats, dict):
            raise ParamError(f"formats must be a mapping of word name to format, not {self.formats!r}")
        for name, f in self.formats.items():
            if name not in fmts:
                raise ParamError(f"formats has no word {name!r}; expected one of {', '.join(fmts)}")
            if isinstance(f, dict):
                f = Fmt(**f)
            elif isinstance(f, (list, tuple)):
                f = Fmt(*f)
            if not isinstance(f, Fmt):
                raise ParamError(f"formats[{name!r}] must be a Fmt or {{bits, frac, signed}}, not {f!r}")
            if f.signed != fmts[name].signed:
                raise ParamError(f"formats[{name!r}] must be {'signed' if fmts[name].signed else 'unsigned'}")
            fmts[name] = f
        object.__setattr__(self, "formats", fmts)
        if not isinstance(self.decay_codes, dict):
            raise ParamError(f"decay_codes must be a mapping, not {self.decay_codes!r}")
        codes = {}
        for name, c in self.decay_codes.items():
            if name not in DECAY_NAMES:
                raise ParamError(f"decay_codes has no decay {name!r}; expected one of {', '.join(DECAY_NAMES)}")
            if isinstance(c, dict):
                c = Decay(**c)
            elif isinstance(c, (list, tuple)) and len(c) == 2:
                c = Decay(*c)
            if not isinstance(c, Decay):
                raise ParamError(f"decay_codes[{name!r}] must be [M, K], not {c!r}")
            codes[name] = c
        object.__setattr__(self, "decay_codes", codes)
        self._check_consistency()

    def _check_consistency(self):
        F = self.formats
        if self.threshold_q > F["u"].max // 2:
            raise ParamError(f"threshold_mv must fit half the range of the 'u' format ({F['u']}), "
                             f"not {self.threshold_mv!r}")
        if self.w_max_q > F["w"].max or self.w_max_q < 1:
            raise ParamError(f"w_max_mv must be within the 'w' format ({F['w']}: at most "
                             f"{F['w'].real(F['w'].max):g}), not {self.w_max_mv!r}")
        if self.optimiser is Optimiser.RMAXPROP and not 1 <= self.r0_q <= self.w_max_q:
            raise ParamError(f"r0_mv must be between one LSB of 'w' ({1 / F['w'].one:g} mV) and "
                             f"w_max_mv, not {self.r0_mv!r}")
        if F["u"].frac != F["i"].frac or F["u"].frac != F["w"].frac:
            raise ParamError("formats 'u', 'i' and 'w' must have the same frac (all in mV)")
        if F["zh"].frac != F["z"].frac or F["zh"].bits < F["z"].bits:
            raise ParamError("format 'zh' must have the frac of 'z' and at least its bits "
                             "(ẑ is a low-pass of z and is never saturated)")
        if F["rate"].bits > 23:
            raise ParamError(f"format 'rate' must be at most 23 bits (its powers are formed in 64 bits), "
                             f"not {F['rate'].bits}")
        if F["el"].frac != F["elf"].frac:
            raise ParamError("formats 'el' and 'elf' must have the same frac")
        if self.el_shift < 0:
            raise ParamError("formats: frac of 'zh' + 'sigma' must be >= frac of 'el'")
        if self.m_shift < 0:
            raise ParamError("formats: frac of 'elf' + 'err' must be >= frac of 'm'")
        if F["q"].frac != F["m"].frac or F["q"].bits < F["m"].bits - 1:
            raise ParamError("format 'q' must have the frac of 'm' and hold |m| (bits >= m.bits - 1)")
        if F["z"].one > F["z"].max or F["rate"].one > F["rate"].max or F["err"].one > F["err"].max:
            raise ParamError("formats 'z', 'rate' and 'err' must hold 1.0 (one spike)")
        if self.rho > 1.0:
            raise ParamError(f"rho must be in (0, 1] (per step; racc·ρ is formed in 64 bits), not {self.rho!r}")
        if self.regulariser and not self.n_hidden:
            raise ParamError("regulariser acts on the hidden layer: it needs n_hidden > 0")
        if self.refractory_steps >= 256:
            raise ParamError(f"tau_ref_ms must be below 256 steps, not {self.tau_ref_ms!r}")

    # ------------------------------------------------------------------ derived integer constants
    @property
    def layers(self) -> tuple[tuple[int, int], ...]:
        """(n_pre, n_post) of each weight layer, input side first."""
        if self.n_hidden:
            return ((self.n_in, self.n_hidden), (self.n_hidden, self.n_out))
        return ((self.n_in, self.n_out),)

    @property
    def synapse_words(self) -> tuple[str, ...]:
        """The words of one synapse's state word, in order: ``w``, the kernel's traces, ``m``."""
        return ("w", *self.kernel.traces, "m")

    @property
    def n_synapses(self) -> int:
        return sum(a * b for a, b in self.layers)

    def exact_factor(self, name: str) -> float:
        """The exponential a decay code approximates: ``exp(−step / τ)``."""
        if name == "q":   # √γ per chunk: q forgets with time constant 2 τ_rms
            return math.exp(-self.chunk_steps * self.dt_ms / (2000.0 * self.tau_rms_s))
        tau = {"mem": self.tau_mem_ms, "syn": self.tau_syn_ms, "rate": self.tau_rate_ms}[name]
        return math.exp(-self.dt_ms / tau)

    def _decay(self, name) -> Decay:
        return self.decay_codes.get(name) or decay_code(self.exact_factor(name))

    @cached_property
    def decay_mem(self) -> Decay:
        return self._decay("mem")

    @cached_property
    def decay_syn(self) -> Decay:
        return self._decay("syn")

    @cached_property
    def decay_rate(self) -> Decay:
        return self._decay("rate")

    @cached_property
    def decay_q(self) -> Decay:
        return self._decay("q")

    @cached_property
    def refractory_steps(self) -> int:
        return int(round(self.tau_ref_ms / self.dt_ms))

    @cached_property
    def ref_bits(self) -> int:
        """Width of the refractory counter: holds ``refractory_steps`` (at least one bit)."""
        return max(1, self.refractory_steps.bit_length())

    @cached_property
    def r0_bits(self) -> int:
        """Width of the RMaxProp step register: a non-negative weight step."""
        return self.formats["w"].bits - 1

    @cached_property
    def threshold_q(self) -> int:
        return self.formats["u"].quantise(self.threshold_mv)

    @cached_property
    def w_max_q(self) -> int:
        return int(round(self.w_max_mv * self.formats["w"].one))

    @cached_property
    def r0_q(self) -> int:
        return int(round(self.r0_mv * self.formats["w"].one))

    @cached_property
    def eps_q(self) -> int:
        return max(1, int(round(self.eps * self.formats["q"].one)))

    @cached_property
    def rho_q(self) -> int:
        """ρ in UQ0.16 (per step, per unit of rate^a)."""
        return max(1, int(round(self.rho * (1 << 16))))

    @cached_property
    def el_shift(self) -> int:
        """ẑ·σ' is shifted right by this to land in the 'el' format."""
        F = self.formats
        return F["zh"].frac + F["sigma"].frac - F["el"].frac

    @cached_property
    def m_shift(self) -> int:
        """λ·|e| is shifted right by this to land in the 'm' format."""
        F = self.formats
        return F["elf"].frac + F["err"].frac - F["m"].frac

    @cached_property
    def sigma_table(self) -> np.ndarray:
        """σ'(V) = 1/(1 + β|V − ϑ|)² sampled at bin centres, UQ0.sigma.frac, saturating."""
        F = self.formats
        n = 1 << self.sigma_addr_bits
        centre_mv = (np.arange(n) + 0.5) * (1 << self.sigma_shift) / F["u"].one
        s = 1.0 / (1.0 + self.beta_per_mv * centre_mv) ** 2
        return np.asarray(F["sigma"].quantise(s), dtype=np.int64)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        d = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, enum.Enum):
                v = v.value
            elif f.name == "formats":
                v = {k: dataclasses.asdict(x) for k, x in v.items()}
            elif f.name == "decay_codes":
                v = {k: [x.M, x.K] for k, x in v.items()}
            d[f.name] = v
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Params":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ParamError(f"unknown parameter(s) {', '.join(sorted(unknown))}; "
                             f"expected some of {', '.join(sorted(names))}")
        return cls(**d)

    def replace(self, **changes) -> "Params":
        d = self.to_dict()
        d.update(changes)
        return Params.from_dict(d)

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path) -> "Params":
        """Read parameters from a ``.json`` or ``.toml`` file (missing keys take defaults)."""
        path = Path(path)
        text = path.read_text()
        try:
            d = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
            raise ParamError(f"{path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {e}") from None
        d = d.get("params", d)
        return cls.from_dict(d)
