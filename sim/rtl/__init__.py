"""The ``rtl`` backend: the gateware simulated by Verilator (through cocotb) behind a TCP socket.

The host's :class:`~spikeloop.host.board.Board` talks to it as to a board on a serial port:

* :mod:`.client` (host process) — :func:`open_rtl` (the ``SoC`` of a ``SoCConfig``),
  :func:`open_link` (any design with UART pins), :class:`RtlTransport`;
* :mod:`.server` (``python -m spikeloop.sim.rtl.server``) — builds the design inside the bridge
  and runs :mod:`.cocotb_link`, the cocotb test that connects back and serves the socket;
* :mod:`.bridge` — :class:`~.bridge.SimLinkBridge`, the simulation-only byte pump on the UART pins;
* :mod:`.wire` — the socket's messages and how the design is named on the command line.

See ``docs/host.md``, "rtl backend".
"""

from spikeloop.sim.rtl.client import RtlLaunchError, RtlSimError, RtlTransport, open_link, open_rtl

__all__ = ["open_rtl", "open_link", "RtlTransport", "RtlLaunchError", "RtlSimError"]
