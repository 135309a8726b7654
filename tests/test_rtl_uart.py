"""UART (``hdl/uart.py``): divisor checks, and cocotb/Verilator tests of Rx and Tx.

``tests/cocotb_uart.py`` holds the cocotb tests (loopback and bit-banged Rx); each divisor
is one Verilator build of :class:`UARTTestTop`.
"""

from pathlib import Path

import pytest
from amaranth.hdl import Module, Mux
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from spikeloop.hdl.uart import UART, UARTRx, UARTTx, uart_divisor
from spikeloop.sim.rtl_runner import build_and_test, default_build_dir

HERE = Path(__file__).parent
TEST_MODULE = HERE / "cocotb_uart.py"
BUILD_DIR = default_build_dir()


class UARTTestTop(wiring.Component):
    """:class:`UART` at ``divisor`` clocks per bit; ``loopback`` feeds ``tx`` back into Rx."""

    loopback: In(1)
    rx: In(1, init=1)
    tx: Out(1, init=1)
    rx_data: Out(stream.Signature(8))
    tx_data: In(stream.Signature(8))
    tx_busy: Out(1)
    overrun: Out(16)
    frame_error: Out(16)

    def __init__(self, divisor):
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart = uart = UART(self.divisor * 1_000_000, 1_000_000)
        assert uart.divisor == self.divisor
        wiring.connect(m, uart.rx_data, wiring.flipped(self.rx_data))
        wiring.connect(m, wiring.flipped(self.tx_data), uart.tx_data)
        m.d.comb += [
            uart.rx.eq(Mux(self.loopback, uart.tx, self.rx)),
            self.tx.eq(uart.tx),
            self.tx_busy.eq(uart.tx_busy),
            self.overrun.eq(uart.overrun),
            self.frame_error.eq(uart.frame_error),
        ]
        return m


@pytest.mark.parametrize("divisor", [4, 5, 13, 104])
def test_uart_rtl(divisor):
    result = build_and_test(lambda: UARTTestTop(divisor), f"uart_d{divisor}", TEST_MODULE,
                            build_dir=BUILD_DIR, params={"divisor": divisor, "bytes": 2000},
                            seed=1000 + divisor)
    assert sorted(t.name for t in result.tests if t.status == "passed") == ["bitbang", "loopback"]


@pytest.mark.parametrize("clk_hz, baud, divisor", [
    (12_000_000, 3_000_000, 4),
    (48_000_000, 12_000_000, 4),
    (12_000_000, 115_200, 104),     # 115384.6 baud, +0.16 %
    (12_000_000, 1_000_000, 12),
    (12_000_000, 2_400_000, 5),
])
def test_divisor(clk_hz, baud, divisor):
    assert uart_divisor(clk_hz, baud) == divisor
    uart = UART(clk_hz, baud)
    uart._MustUse__silence = True
    assert uart.divisor == divisor


@pytest.mark.parametrize("clk_hz, baud", [
    (12_000_000, 4_000_000),        # 3 clocks per bit
    (12_000_000, 3_500_000),        # 3.43
    (12_000_000, 2_200_000),        # 5.45: 5 clocks is 9 % off
    (12_000_000, 1_150_000),        # 10.43: 10 clocks is 4 % off
])
def test_divisor_rejected(clk_hz, baud):
    with pytest.raises(ValueError, match=r"baud must divide the clock to within 2 % with at "
                                         r"least 4 clocks per bit; 12 MHz / \d+ = [\d.]+ clocks"):
        UART(clk_hz, baud)


@pytest.mark.parametrize("cls", [UARTRx, UARTTx])
@pytest.mark.parametrize("divisor", [3, 0, 4.0])
def test_bad_divisor(cls, divisor):
    with pytest.raises(ValueError, match="at least 4 clocks per bit"):
        cls(divisor)
