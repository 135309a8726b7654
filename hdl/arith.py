"""Amaranth expression helpers that mirror :mod:`spikeloop.sim.fixed` operation for operation.

Each helper builds a combinational expression that computes, for every input value, exactly the
integer the numpy primitive of the same name computes, so a unit written with these helpers
matches the golden model bit for bit as long as no intermediate wraps. They guarantee that by
construction: every intermediate keeps Amaranth's natural width (an add grows by one bit, a
product by the width of the constant), and only :func:`sat` ever narrows a value, by clamping.

Widths of the results (``n`` = width of the argument, ``b(k)`` = ``k.bit_length()``):

- ``sat(x, fmt)``: ``x`` clamped to ``[fmt.min, fmt.max]``; exactly ``fmt.bits``, fmt's sign.
- ``shift_trunc(x, s)``: ``x / 2^s`` rounded toward zero; ``n + 1 − s`` (signed), ``n − s`` (unsigned).
- ``mul_const(x, k)``: ``x·k``; ``n + b(k)``, the sign of ``x``.
- ``decay(x, d)``: ``(x·M) >> K``, unsigned; ``n + b(M) − K`` (≤ ``n``).
- ``decay_signed(x, d)``: ``(x·M) >>₀ K``; ``n + b(M) + 1 − K``.
- ``lowpass(y, x, d)``: ``(M·y + A·x) >> K``, unsigned; ``max(ny + b(M), nx + b(A)) + 1 − K``.
- ``lowpass_signed(y, x, d)``: ``(M·y + A·x) >>₀ K``; one bit more than ``lowpass``.

The decay and low-pass results never need more bits than their inputs (``M < 2^K``; a low-pass
lies between its operands), but the helpers do not narrow them: the caller saturates or slices
where the model does, so the gateware and the model clamp at the same places.

Constant multiplies (:func:`mul_const`) are explicit shift-and-add trees over the constant's
canonical signed digits, so synthesis keeps them out of the DSP blocks.

:func:`pipe_reg` and :func:`pipe_delay` build the registers of the units' never-stalling pipelines.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Mux, Shape, Signal, Value, signed, unsigned

from spikeloop.params import Decay, Fmt

__all__ = [
    "fmt_shape", "sat", "shift_trunc", "decay", "decay_signed", "lowpass", "lowpass_signed",
    "resize", "csd_digits", "mul_const", "pipe_reg", "pipe_delay",
]


def fmt_shape(fmt: Fmt) -> Shape:
    """The Amaranth shape of a fixed-point format: ``signed(bits)`` or ``unsigned(bits)``."""
    return signed(fmt.bits) if fmt.signed else unsigned(fmt.bits)


def resize(value, shape) -> Value:
    """``value`` as ``shape``: sign- or zero-extended, or truncated to its low bits.

    Truncation keeps the low bits (it wraps), so use it only where the value is known to fit;
    :func:`sat` is the clamping form.
    """
    value = Value.cast(value)
    shape = Shape.cast(shape)
    n = len(value)
    if n >= shape.width:
        out = value[:shape.width]
    elif value.shape().signed:
        out = Cat(value, value[-1].replicate(shape.width - n))
    else:
        out = Cat(value, Const(0, shape.width - n))
    return out.as_signed() if shape.signed else out.as_unsigned()


def sat(value, fmt: Fmt) -> Value:
    """Clamp ``value`` to the range of ``fmt`` (:func:`spikeloop.sim.fixed.sat`).

    The model's one saturation rule: no add ever wraps. The comparisons are made at the full
    width of ``value``, and the result has exactly the shape of ``fmt``.

    Returns
    -------
    Value
        ``fmt.bits`` wide, signed if ``fmt.signed``.
    """
    value = Value.cast(value)
    shape = fmt_shape(fmt)
    lo, hi = fmt.min, fmt.max
    vs = value.shape()
    # Skip comparisons that cannot be true for this operand shape: keeps the netlist lean
    # without relying on the synthesiser to fold constant comparisons.
    v_min = -(1 << (vs.width - 1)) if vs.signed else 0
    v_max = (1 << (vs.width - 1)) - 1 if vs.signed else (1 << vs.width) - 1
    out = resize(value, shape)
    if v_min < lo:
        out = Mux(value < lo, Const(lo, shape), out)
    if v_max > hi:
        out = Mux(value > hi, Const(hi, shape), out)
    return resize(out, shape)


def shift_trunc(value, s: int) -> Value:
    """``value / 2^s`` rounded toward zero (:func:`spikeloop.sim.fixed.shift_trunc`).

    A signed value gets the bias ``2^s − 1`` added when it is negative before the arithmetic
    shift; an unsigned value is shifted plainly.
    """
    value = Value.cast(value)
    if s == 0:
        return value
    if not value.shape().signed:
        return value.shift_right(s)
    bias = Mux(value[-1], Const((1 << s) - 1, unsigned(s)), Const(0, unsigned(s)))
    return (value + bias).shift_right(s)


def csd_digits(k: int) -> list[int]:
    """Canonical signed digits of ``k ≥ 0`` (non-adjacent form), least significant first.

    ``k = Σ d_i 2^i`` with ``d_i ∈ {−1, 0, 1}`` and no two adjacent non-zero digits: the fewest
    add/subtract terms a constant multiply can be built from (463 = 2^9 − 2^6 + 2^4 − 1).
    """
    if k < 0:
        raise ValueError(f"csd_digits() takes k >= 0, not {k}")
    digits = []
    while k:
        d = (2 - (k & 3)) if k & 1 else 0
        digits.append(d)
        k = (k - d) >> 1
    return digits


def mul_const(value, k: int) -> Value:
    """``value · k`` for a constant ``k ≥ 0``, exact, as a sum of shifted copies of ``value``.

    Width ``len(value) + b(k)`` (same signedness as ``value``): ``|value · k|`` always fits.

    Written as shift-and-add over the canonical signed digits of ``k`` (:func:`csd_digits`)
    rather than as ``value * Const(k)``: with ``synth_ice40 -dsp`` Yosys maps even constant
    products to ``SB_MAC16`` blocks, of which the UP5K has only 8, all wanted by the synapse
    pipeline's true multiplies. The decay constants have 2 to 5 non-zero digits, so each
    product is a few adders in LUT carry chains.
    """
    value = Value.cast(value)
    shape = value.shape()
    out_shape = (signed if shape.signed else unsigned)(len(value) + max(1, k.bit_length()))
    terms = [(d, i) for i, d in enumerate(csd_digits(k)) if d]
    if not terms:
        return resize(Const(0, 1), out_shape)
    acc = None
    # The top digit of a non-adjacent form of k > 0 is +1: start there, so the running sum of
    # an unsigned value stays non-negative until a subtraction makes Amaranth go signed.
    for d, i in reversed(terms):
        t = value.shift_left(i)
        acc = t if acc is None else (acc + t if d > 0 else acc - t)
    return resize(acc, out_shape)


def decay(value, d: Decay) -> Value:
    """Unsigned decay ``(x·M) >> K`` (:func:`spikeloop.sim.fixed.decay`)."""
    value = Value.cast(value)
    if value.shape().signed:
        raise TypeError("decay() is for unsigned words; use decay_signed()")
    return mul_const(value, d.M).shift_right(d.K)


def decay_signed(value, d: Decay) -> Value:
    """Signed decay ``(x·M) >>₀ K``, truncated toward zero (:func:`spikeloop.sim.fixed.decay_signed`)."""
    value = Value.cast(value)
    return shift_trunc(mul_const(value.as_signed() if value.shape().signed else value, d.M), d.K)


def lowpass(y, x, d: Decay) -> Value:
    """Unsigned low-pass ``(M·y + A·x) >> K`` (:func:`spikeloop.sim.fixed.lowpass`)."""
    y, x = Value.cast(y), Value.cast(x)
    if y.shape().signed or x.shape().signed:
        raise TypeError("lowpass() is for unsigned words; use lowpass_signed()")
    return (mul_const(y, d.M) + mul_const(x, d.A)).shift_right(d.K)


def lowpass_signed(y, x, d: Decay) -> Value:
    """Signed low-pass ``(M·y + A·x) >>₀ K`` (:func:`spikeloop.sim.fixed.lowpass_signed`)."""
    y, x = Value.cast(y), Value.cast(x)
    return shift_trunc(mul_const(y, d.M) + mul_const(x, d.A), d.K)


# ---------------------------------------------------------------------------------- pipelines
def pipe_reg(m, value, name: str, shape=None) -> Signal:
    """A ``sync`` register holding ``value`` one cycle later (shape of ``value`` unless given).

    The units' pipelines never stall (a bubble is a stage whose valid bit is 0), so every
    pipeline register loads on every cycle and needs no enable.
    """
    value = Value.cast(value)
    reg = Signal(shape if shape is not None else value.shape(), name=name)
    m.d.sync += reg.eq(value)
    return reg


def pipe_delay(m, value, n: int, name: str) -> Value:
    """``value`` delayed by ``n`` cycles through a chain of :func:`pipe_reg` (``n = 0``: itself)."""
    out = Value.cast(value)
    for k in range(n):
        out = pipe_reg(m, out, f"{name}_d{k + 1}")
    return out
