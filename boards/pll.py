"""The SoC's clock from a board's oscillator: PLL settings and the primitive that makes the clock.

A board whose oscillator is slower than the SoC can run (the ULX3S's 25 MHz, against 45-63 MHz
Fmax) gets its ``sync`` clock from the FPGA's PLL. The settings are searched here, within the
limits the vendor data sheets give, and only an exact frequency is accepted: the UART divides the
clock into the baud rate, and IDENTIFY reports the clock the host then relies on.

ECP5 (EHXPLLL, Lattice TN1263 "ECP5 and ECP5-5G sysClock PLL/DLL Design and Usage Guide"):
input divider ``CLKI_DIV`` and feedback divider ``CLKFB_DIV`` 1..128, phase-detector input
3.125-400 MHz, VCO 400-800 MHz, output divider ``CLKOP_DIV`` 1..128; with the feedback taken
from CLKOP, f_out = f_in · CLKFB_DIV / CLKI_DIV and f_VCO = f_out · CLKOP_DIV.

iCE40 (SB_PLL40, Lattice TN1251 "iCE40 sysCLOCK PLL Design and Usage Guide"): ``DIVR`` 0..15,
``DIVF`` 0..127, ``DIVQ`` 1..6, phase-detector input 10-133 MHz, VCO 533-1066 MHz, output
16-275 MHz; in SIMPLE feedback f_out = f_in · (DIVF + 1) / ((DIVR + 1) · 2^DIVQ). The loop
filter range follows the phase-detector frequency.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from amaranth.hdl import ClockDomain, Instance, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

__all__ = ["PLLSetting", "PLLError", "pll_setting", "ecp5_pll", "ice40_pll", "pll_clock_domain"]

MHZ = 1_000_000


class PLLError(ValueError):
    """No PLL setting makes the requested clock exactly; the message names the nearest ones."""


@dataclass(frozen=True)
class PLLSetting:
    """One way to make ``f_out_hz`` from ``f_in_hz``: the primitive's parameters (``params``) and
    the frequencies inside the loop, for the report."""
    family: str
    f_in_hz: int
    f_out_hz: int
    params: dict[str, int] = field(compare=False)
    f_pfd_hz: float = 0.0
    f_vco_hz: float = 0.0

    def to_dict(self) -> dict:
        return {"family": self.family, "f_in_hz": self.f_in_hz, "f_out_hz": self.f_out_hz,
                "f_pfd_hz": self.f_pfd_hz, "f_vco_hz": self.f_vco_hz, "params": dict(self.params)}


def _exact(f_in: int, num: int, den: int) -> Fraction:
    return Fraction(f_in * num, den)


def _refuse(family: str, f_in: int, f_out: int, reachable: list[Fraction]) -> PLLError:
    near = sorted({float(f) for f in reachable}, key=lambda f: abs(f - f_out))[:3]
    hint = ", ".join(f"{f / MHZ:g}" for f in sorted(near))
    return PLLError(f"the {family} PLL cannot make {f_out / MHZ:g} MHz from the {f_in / MHZ:g} MHz "
                    f"oscillator exactly; nearest exact clocks: {hint} MHz")


def ecp5_pll(f_in_hz: int, f_out_hz: int) -> PLLSetting:
    """EHXPLLL settings for exactly ``f_out_hz``; of several, the highest phase-detector
    frequency (least jitter), then the VCO nearest the middle of its range."""
    best, reachable = None, []
    for clki in range(1, 129):
        pfd = f_in_hz / clki
        if pfd < 3.125 * MHZ:
            break
        if pfd > 400 * MHZ:
            continue
        for fb in range(1, 129):
            f = _exact(f_in_hz, fb, clki)
            ops = [op for op in range(1, 129) if 400 * MHZ <= f * op <= 800 * MHZ]
            if not 3.125 * MHZ <= f <= 400 * MHZ or not ops:
                continue
            reachable.append(f)
            if f == f_out_hz:
                op = min(ops, key=lambda o: abs(f * o - 600 * MHZ))
                key = (-pfd, abs(float(f * op) - 600 * MHZ))
                if best is None or key < best[0]:
                    best = (key, clki, fb, op, float(f * op))
    if best is None:
        raise _refuse("ECP5", f_in_hz, f_out_hz, reachable)
    _, clki, fb, op, vco = best
    return PLLSetting("ecp5", f_in_hz, f_out_hz,
                      {"CLKI_DIV": clki, "CLKFB_DIV": fb, "CLKOP_DIV": op,
                       "CLKOP_CPHASE": op - 1, "CLKOP_FPHASE": 0},
                      f_pfd_hz=f_in_hz / clki, f_vco_hz=vco)


#: iCE40 loop-filter range by phase-detector frequency: (upper bound in MHz, FILTER_RANGE).
_ICE40_FILTER = ((17, 1), (26, 2), (44, 3), (66, 4), (101, 5), (133, 6))


def ice40_pll(f_in_hz: int, f_out_hz: int) -> PLLSetting:
    """SB_PLL40 (SIMPLE feedback) settings for exactly ``f_out_hz``; of several, the highest
    phase-detector frequency, then the VCO nearest the middle of its range."""
    best, reachable = None, []
    for divr in range(16):
        pfd = f_in_hz / (divr + 1)
        if not 10 * MHZ <= pfd <= 133 * MHZ:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533 * MHZ <= vco <= 1066 * MHZ:
                continue
            for divq in range(1, 7):
                f = _exact(f_in_hz, divf + 1, (divr + 1) << divq)
                if not 16 * MHZ <= f <= 275 * MHZ:
                    continue
                reachable.append(f)
                if f == f_out_hz:
                    key = (-pfd, abs(vco - 800 * MHZ))
                    if best is None or key < best[0]:
                        best = (key, divr, divf, divq, vco)
    if best is None:
        raise _refuse("iCE40", f_in_hz, f_out_hz, reachable)
    _, divr, divf, divq, vco = best
    pfd = f_in_hz / (divr + 1)
    rng = next(r for top, r in _ICE40_FILTER if pfd < top * MHZ)
    return PLLSetting("ice40", f_in_hz, f_out_hz,
                      {"DIVR": divr, "DIVF": divf, "DIVQ": divq, "FILTER_RANGE": rng},
                      f_pfd_hz=pfd, f_vco_hz=vco)


_SEARCH = {"ecp5": ecp5_pll, "ice40": ice40_pll}


def pll_setting(family: str, f_in_hz: int, f_out_hz: int) -> PLLSetting:
    """The PLL setting of ``family`` for ``f_out_hz``; raises :class:`PLLError` if there is none
    (or the family has no PLL generator here)."""
    if family not in _SEARCH:
        raise PLLError(f"spikeloop generates no PLL for the {family} family yet; the SoC runs from "
                       f"the {f_in_hz / MHZ:g} MHz oscillator")
    return _SEARCH[family](int(f_in_hz), int(f_out_hz))


def pll_clock_domain(m: Module, platform, setting: PLLSetting) -> None:
    """Add the ``sync`` domain, clocked by the PLL from the platform's default clock pin and held
    in reset until the PLL locks. nextpnr derives the clock's constraint itself from the
    oscillator's and the dividers (the ULX3S build reports the 45 MHz target for it), so none is
    added here: Yosys renames the net, and a constraint on the Amaranth name would be dropped."""
    pin = platform.request(platform.default_clk, 0, dir="-")
    m.submodules.osc_buf = osc = io.Buffer("i", pin)
    m.domains.sync = cd = ClockDomain("sync")
    clk, lock = cd.clk, Signal(name="pll_lock")
    p = setting.params
    if setting.family == "ecp5":
        m.submodules.pll = Instance(
            "EHXPLLL",
            # loop settings the ECP5 tools use for these dividers (charge pump, filter)
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            a_FREQUENCY_PIN_CLKI=f"{setting.f_in_hz / MHZ:g}",
            a_FREQUENCY_PIN_CLKOP=f"{setting.f_out_hz / MHZ:g}",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
            p_FEEDBK_PATH="CLKOP",
            **{f"p_{k}": v for k, v in p.items()},
            i_CLKI=osc.i, i_CLKFB=clk, i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0,
            i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1, i_PLLWAKESYNC=0,
            o_CLKOP=clk, o_LOCK=lock)
    else:
        m.submodules.pll = Instance(
            "SB_PLL40_CORE", p_FEEDBACK_PATH="SIMPLE",
            **{f"p_{k}": v for k, v in p.items()},
            i_REFERENCECLK=osc.i, i_RESETB=1, i_BYPASS=0,
            o_PLLOUTGLOBAL=clk, o_LOCK=lock)
    m.submodules.pll_reset = ResetSynchronizer(~lock, domain="sync")
