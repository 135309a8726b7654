"""The Board driver against the model backend: every method, bursts, retries, errors, logging."""

import dataclasses
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from spikeloop import protocol as P
from spikeloop.host import board as board_mod
from spikeloop.host.backends import DEFAULT_BOARD_BACKEND, parse_spec
from spikeloop.host.board import (TRACE, BackendError, Board, IdentityMismatch, LinkTimeout, NakError,
                                  RetriesExhausted)
from spikeloop.host.transport import Transport, loopback_pair
from spikeloop.host.virtual_board import ModelTransport
from spikeloop.params import Params
from spikeloop.protocol import Command, Nak, ResetMask
from spikeloop.sim.golden import GoldenModel, init_weights

from board_cases import net, stimulus, vboard

#: The committed conformance session (regenerate: spikeloop transcript --out tests/fixtures/link_transcript.json)
FIXTURE = Path(__file__).with_name("fixtures") / "link_transcript.json"


def model_board(p=None, **kw):
    vb = vboard(p, **{k: kw.pop(k) for k in ("max_payload", "max_steps") if k in kw})
    return Board(ModelTransport(vb), **kw), vb


def test_open_model_learns_identity():
    p = net()
    with Board.open("board-model", p, lanes=2, clock_hz=24_000_000, max_payload=512, max_steps=9) as b:
        assert b.params == p and b.lanes == 2
        assert b.identity.clock_hz == 24_000_000 and b.max_payload == 512
        assert b.steps_per_frame == 9
        again = b.identify()                    # a plain IDENTIFY: no nonce, the same session
        assert again.nonce == 0 and again == dataclasses.replace(b.identity, nonce=0)
        assert b.session == b.identity.session != 0
        assert repr(b) == "<Board 'board-model': 20-0-5, 2 lane(s)>"
    with pytest.raises(ConnectionError):
        b.read_reg("R0")                                        # closed with the context


@pytest.mark.parametrize("kw", [{}, {"error_source": "host"}, {"n_hidden": 6, "feedback": "random"}])
def test_load_run_state_match_the_golden_model(kw):
    p = net(**kw)
    b, vb = model_board(p, max_payload=128)                      # every burst and batch is split
    ws, fb = init_weights(p, [3])
    b.load_weights([w[0] for w in ws], feedback=None if fb is None else fb[0])
    T = 300
    x, y = stimulus(p, T)
    err = np.random.default_rng(2).integers(-400, 400, (T, p.n_out))
    host = p.error_source.value == "host"
    out = b.run(x, None if host else y, err if host else None)
    g = GoldenModel(p, 0, weights=ws, feedback=fb)
    want, _ = g.run(x, None if host else y, err if host else None)
    assert out.shape == (T, p.n_out) and out.any() and np.array_equal(out, want[0])
    st, gs = b.state(), g.snapshot()
    if fb is not None:
        gs["fb"] = g.fb
    assert set(st) == set(b.spaces) and set(st) <= set(gs)
    for k, v in st.items():
        assert v.shape == gs[k].shape and np.array_equal(v, gs[k]), k
    assert b.step_count == T and b.read_reg("CHUNK_COUNT") == T // p.chunk_steps
    assert b.stats["requests"] > T // b.steps_per_frame and b.stats["retries"] == 0


def test_bursts_larger_than_max_payload():
    p = net(n_in=60, n_out=9)
    b, vb = model_board(p, max_payload=64)
    rng = np.random.default_rng(0)
    fmt = P.space("out.q").word(p)
    words = rng.integers(fmt.min, fmt.max + 1, 9 * 60)          # 540 words x 3 B = 1620 B
    assert "out.q" in b.spaces                                   # probed once, before counting
    before = b.stats["requests"]
    b.write_mem("out.q", words)
    assert b.stats["requests"] - before == -(-540 // ((64 - 7) // 3))
    assert np.array_equal(b.read_mem("out.q"), words)
    assert np.array_equal(vb.read_space("out.q"), words)
    assert np.array_equal(b.read_mem("out.q", 100, 77), words[100:177])
    b.write_mem("out.q", words[:5], start=535)
    assert np.array_equal(b.read_mem("out.q", 535), words[:5])
    # a driver-side limit below the device's
    b2 = Board(ModelTransport(vboard(p)), payload_limit=64)
    assert b2.max_payload == 64 and b2.steps_per_frame == (64 - 2) // (8 + 2)


def test_registers_by_name_and_address():
    b, vb = model_board()
    assert b.read_reg("MAGIC") == 0x4C4B5053
    assert b.read_reg(0x0C) == 0x4C4B5053
    assert b.read_reg("FRAMES_OK", 9)[0] >= 1 and len(b.read_reg(0x10, 9)) == 9
    b.write_reg("R0", 17)
    b.write_reg("STEP_COUNT", [5, ])
    b.write_reg(0x10, [0, 0, 0])
    assert b.read_reg("R0", 2) == [17, 5] and vb.model.r0_q == 17
    for bad, msg in ((("NOPE",), "register must be one of"), ((-1,), "register must be a name or an address"),
                     (("R0", 0), "count must be an integer in 1..")):
        with pytest.raises((KeyError, ValueError), match=msg):
            b.read_reg(*bad)
    with pytest.raises(ValueError, match="register values must be integers in 0..4294967295, not -1"):
        b.write_reg("R0", -1)


def test_command_level_nak_is_an_error_and_the_link_goes_on():
    b, vb = model_board()
    with pytest.raises(NakError, match="WRITE_REG seq .*: NAK BAD_ADDRESS") as e:
        b.write_reg("CYCLES", 1)
    assert e.value.reason is Nak.BAD_ADDRESS and e.value.command == Command.WRITE_REG
    with pytest.raises(NakError) as e:
        b.read_reg(0x05)
    assert e.value.reason is Nak.BAD_ADDRESS
    with pytest.raises(NakError) as e:
        b.write_reg("CHUNK_PHASE", 40)
    assert e.value.reason is Nak.BAD_VALUE
    assert b.read_reg("STEP_COUNT") == 0 and vb.reg("NAKS_SENT") == 3


def test_memory_arguments_are_checked_before_sending():
    b, vb = model_board()
    assert "hid.w" not in b.spaces
    sent = b.stats["bytes_sent"]
    with pytest.raises(KeyError, match="space must be one of out.U"):
        b.read_mem("hid.w")
    with pytest.raises(ValueError, match=r"words of out.w must be in -32768..32767, not 40000"):
        b.write_mem("out.w", [1, 40000])
    with pytest.raises(ValueError, match=r"count of out.w from 90 must be in 0..10, not 20"):
        b.write_mem("out.w", np.zeros(20, int), start=90)
    with pytest.raises(ValueError, match="words of out.w must be integers"):
        b.write_mem("out.w", [0.5])
    with pytest.raises(ValueError, match=r"out.w must have shape \(5, 20\)"):
        b.load_weights([np.zeros((20, 5), int)])
    with pytest.raises(ValueError, match="weights must be 1 array"):
        b.load_weights([])
    with pytest.raises(ValueError, match="feedback must be None"):
        b.load_weights([np.zeros((5, 20), int)], feedback=np.zeros((1, 5)))
    p = b.params
    with pytest.raises(ValueError, match=r"inputs must have shape \(T, 20\)"):
        b.run(np.zeros((3, 19), bool))
    with pytest.raises(ValueError, match=r"targets must have shape \(3, 5\)"):
        b.run(np.zeros((3, 20), bool), np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="errors must be None when error_source is 'target'"):
        b.run(np.zeros((3, 20), bool), errors=np.zeros((3, 5), int))
    with pytest.raises(ValueError, match="inputs must be bool or 0/1"):
        b.run(np.full((3, 20), 2))
    assert b.stats["bytes_sent"] == sent and p.n_in == 20
    bh, _ = model_board(net(error_source="host"))
    with pytest.raises(ValueError, match="errors must be in"):
        bh.run(np.zeros((2, 20), bool), errors=np.full((2, 5), 1 << 20))
    with pytest.raises(ValueError, match="targets must be None when error_source is 'host'"):
        bh.run(np.zeros((2, 20), bool), np.zeros((2, 5), bool))


def test_reset_masks_through_the_driver():
    p = net()
    b, vb = model_board(p)
    b.load_weights([np.full((5, 20), 500)])
    x, y = stimulus(p, 50)
    b.run(x, y)
    w = b.read_mem("out.w")
    b.reset(ResetMask.LEARNING)
    st = b.state()
    assert not st["out.m"].any() and st["out.zh"].any() and b.read_reg("STEP_COUNT") == 50
    b.reset()
    st = b.state()
    assert all(not v.any() for k, v in st.items() if k != "out.w") and np.array_equal(st["out.w"], w[None].reshape(1, 5, 20))
    assert b.step_count == 0 and b.read_reg("STEP_COUNT") == 0
    b.reset(P.RESET_ALL | ResetMask.LINK)                        # the device forgets the sequence
    assert b.read_reg("FRAMES_OK") == 1 and b.read_reg("DUPLICATES") == 0
    with pytest.raises(ValueError, match=r"mask must be a ResetMask \(0..15\), not 16"):
        b.reset(16)


def test_busy_is_retried():
    b, vb = model_board(timeout=0.01)
    vb.busy = 3
    assert b.read_reg("VERSION") == P.PROTOCOL_VERSION
    assert b.stats["retries"] == 3 and b.stats["naks"] == 3
    vb.busy = 10
    with pytest.raises(RetriesExhausted, match=r"READ_REG seq \d+: 9 attempts failed \(last: .*NAK BUSY\)") as e:
        b.read_reg("VERSION")
    assert e.value.attempts == 9 and isinstance(e.value.last, NakError)


def test_bad_sequence_is_resynchronised():
    b, vb = model_board()
    b.read_reg("R0")
    b._seq = (b._seq + 40) & 0xFF                              # host and device disagree
    assert b.read_reg("VERSION") == P.PROTOCOL_VERSION
    assert b.stats["resyncs"] == 1 and b.stats["retries"] == 1


class Silent(Transport):
    """Swallows every write; nothing ever comes back."""

    def __init__(self):
        self.writes = 0

    def write(self, data):
        self.writes += 1

    def read(self, n, timeout=0.0):
        return b""


def test_timeouts():
    t = Silent()
    with pytest.raises(LinkTimeout, match=r"IDENTIFY seq 0: no reply within 0.01 s"):
        Board(t, timeout=0.01, retries=0)
    assert t.writes == 1
    t = Silent()
    with pytest.raises(RetriesExhausted, match="3 attempts failed") as e:
        Board(t, timeout=0.01, retries=2, name="dead")
    assert t.writes == 3 and isinstance(e.value.last, LinkTimeout) and str(e.value).startswith("dead: ")
    a, _ = loopback_pair()                                       # a real wait on a quiet link
    with pytest.raises(RetriesExhausted):
        Board(a, timeout=0.02, retries=1)
    for bad, msg in (({"timeout": 0}, "timeout must be a positive number"),
                     ({"retries": -1}, "retries must be a non-negative integer"),
                     ({"payload_limit": 10}, "payload_limit must be an integer in 64..65535")):
        with pytest.raises(ValueError, match=msg):
            Board(Silent(), **bad)


class Replaying(ModelTransport):
    """Sends every reply twice, and slips a stale reply in before each one."""

    def write(self, data):
        before = len(self._rx)
        super().write(data)
        reply = bytes(self._rx[before:])
        stale = P.encode_frame(Command.ACK, 0x77, b"stale")
        self._rx[before:] = stale + reply + reply


def test_stale_and_duplicate_replies_are_discarded():
    p = net()
    b = Board(Replaying(vboard(p)))
    b.load_weights([np.full((5, 20), 300)])
    x, y = stimulus(p, 100)
    b.run(x, y)
    assert b.read_reg("STEP_COUNT") == 100
    assert b.stats["duplicate_replies"] > 0 and b.stats["stale_replies"] > 0 and b.stats["retries"] == 0


def test_identity_checks():
    p = net()
    with pytest.raises(IdentityMismatch, match=r"n_out: 5 \(expected 6\)"):
        Board(ModelTransport(vboard(p)), expect=net(n_out=6))
    with pytest.raises(IdentityMismatch, match="device has 1 lanes, expected 4"):
        Board(ModelTransport(vboard(p)), expect=p, expect_lanes=4)
    Board(ModelTransport(vboard(p)), expect=p, expect_lanes=1)

    class Impostor(Silent):
        def write(self, data):
            (f,) = P.FrameDecoder().feed(data)
            self.reply = P.encode_frame(Command.ACK, f.seq, bytes(6) + b"NOPE" + bytes(30), f.session)

        def read(self, n, timeout=0.0):
            r, self.reply = getattr(self, "reply", b""), b""
            return r

    with pytest.raises(IdentityMismatch, match="IDENTIFY reply is not a spikeloop identity: IDENTIFY magic"):
        Board(Impostor())


def test_open_specs_and_backend_errors(monkeypatch):
    def spec(s):
        b, port = parse_spec(s)
        return b.name, port
    assert DEFAULT_BOARD_BACKEND == "rtl" and spec(None) == ("rtl", None) == spec("")
    assert spec("serial:/dev/ttyUSB1") == ("serial", "/dev/ttyUSB1")
    assert spec("serial:COM5") == ("serial", "COM5")
    assert spec("serial:/dev/ttyACM0") == ("serial", "/dev/ttyACM0")
    # every name pyserial might open is passed on: the open itself says what is wrong
    assert spec("serial:/dev/serial/by-id/usb-FTDI_x-if01") == ("serial", "/dev/serial/by-id/usb-FTDI_x-if01")
    with pytest.raises(ValueError, match="backend must be rtl, board-model or serial:PORT, not 'fpga'"):
        Board.open("fpga")
    with pytest.raises(ValueError, match="backend must be rtl, board-model or serial:PORT, not 'model'"):
        Board.open("model")                     # the in-process golden model has no link
    with pytest.raises(ValueError, match="the serial backend needs a port: serial:PORT"):
        Board.open("serial:")
    with pytest.raises(TypeError, match="params must be a Params"):
        Board.open("board-model", {"n_in": 3})
    # the rtl backend missing from the installation
    import spikeloop.sim as sim_pkg
    monkeypatch.delattr(sim_pkg, "rtl", raising=False)
    monkeypatch.setitem(sys.modules, "spikeloop.sim.rtl", None)
    with pytest.raises(BackendError, match=r"rtl backend \(spikeloop.sim.rtl\) is not part"):
        Board.open()


def test_serial_backend_errors():
    pytest.importorskip("serial")
    with pytest.raises(BackendError, match="cannot open serial port /dev/ttyUSB97"):
        Board.open("serial:/dev/ttyUSB97")
    # loop:// echoes our own requests: never a reply, so the driver gives up
    with pytest.raises(RetriesExhausted, match="IDENTIFY"):
        Board.open("serial:loop://", timeout=0.02, retries=1)


def test_trace_logging_hex_dumps_frames(caplog):
    b, _ = model_board()
    with caplog.at_level(TRACE, logger="spikeloop.link"):
        b.read_reg("VERSION")
    sent = P.encode_frame(Command.READ_REG, b._seq - 1, P.pack_read_reg(0x0D, 1), b.session).hex(" ")
    text = [r.getMessage() for r in caplog.records if r.levelno == TRACE]
    assert any(sent in t and "> READ_REG" in t for t in text)
    assert any("< ACK" in t and "02 00 00 00" in t for t in text)
    assert logging.getLevelName(TRACE) == "TRACE" and board_mod.log.name == "spikeloop.link"


def test_steps_per_frame():
    p = net()
    b = Board(ModelTransport(vboard(p)), steps_per_frame=7)
    x, y = stimulus(p, 30)
    before = b.stats["requests"]
    b.run(x, y)
    assert b.stats["requests"] - before == 5 and b.read_reg("STEP_COUNT") == 30
    with pytest.raises(ValueError, match=r"steps_per_frame must be an integer in 1..255 for this device, not 0"):
        Board(ModelTransport(vboard(p)), steps_per_frame=0)


def test_bench_link_model_and_a_missing_backend(tmp_path):
    import json

    from spikeloop.host.bench_link import bench_link, format_table
    res = bench_link(backends=("board-model", "serial:/dev/ttyUSB97"), cases=(("20 in / 3 out", 20, 3),), k=10,
                     seconds=0.05, json_path=tmp_path / "link.json", out=False)
    (case,) = res["cases"]
    m = case["backends"]["board-model"]
    assert m["available"] and m["steps"] >= 10 and m["steps"] % 10 == 0 and m["steps_per_s"] > 0
    down, up = P.batch_bytes(Params(n_in=20, n_out=3), 10)
    assert 0 < m["down_bytes_per_step"] <= down / 10 and 0 < m["up_bytes_per_step"] <= up / 10
    assert m["retries"] == 0 and m["requests"] == m["steps"] // 10
    assert case["projected_steps_per_s"]["3000000"] == P.projected_steps_per_s(Params(n_in=20, n_out=3), 3e6, 10)
    s = case["backends"]["serial:/dev/ttyUSB97"]
    assert not s["available"] and "BackendError" in s["reason"]
    assert json.loads((tmp_path / "link.json").read_text())["cases"][0]["label"] == "20 in / 3 out"
    table = format_table(res)
    assert "20 in / 3 out" in table and "board-model" in table and "cannot open serial port" in table
    with pytest.raises(ValueError, match="k must be an integer in 1..65535, not 0"):
        bench_link(k=0)


@pytest.mark.slow
def test_rtl_backend_matches_the_reference():
    """The gateware (SoC in Verilator) answers the committed conformance transcript (recorded
    from VirtualBoard) byte for byte from power-up, then the driver trains on it across a chunk end exactly as on the model
    backend (~45 s with a warm build on a busy 2-core machine)."""
    pytest.importorskip("spikeloop.hdl.soc")

    from spikeloop.host.linklog import Transcript, describe_mismatch, replay
    from spikeloop.sim.rtl import open_rtl

    tr = Transcript.load(FIXTURE)                    # the committed reference session
    config = tr.soc_config()
    p = config.params                                # 8 in, 3 out: the build test_rtl_backend also uses
    with open_rtl(config, calibrate_s=0.2) as t:
        bad = replay(t, tr.exchanges)
        assert bad is None, describe_mismatch(tr, *bad)
        b = Board(t, timeout=30.0, expect=p)
        m = Board(ModelTransport(vboard(p)), expect=p)
        w = np.random.default_rng(2).integers(-1000, 4000, (3, 8))     # strong enough to spike
        x = np.random.default_rng(4).random((150, 8)) < 0.3
        y = np.random.default_rng(5).random((150, 3)) < 0.1
        outs = []
        for board in (b, m):
            board.reset()                                  # (weights and R0 are not reset: set them)
            board.write_reg("R0", p.r0_q)
            board.write_reg("CHUNK_PHASE", 490)                       # a chunk end after 10 steps
            board.load_weights([w])
            outs.append((board.run(x, y), board.state(), board.read_reg("STEP_COUNT", 4)))
    assert outs[0][0].any() and np.array_equal(outs[0][0], outs[1][0])
    assert set(outs[0][1]) == set(outs[1][1])
    for k in outs[0][1]:
        assert np.array_equal(outs[0][1][k], outs[1][1][k]), k
    assert outs[0][2] == outs[1][2] and outs[0][2][3] == 1


# ---------------------------------------------------------------------- sessions
def test_sessions_two_hosts_takeover_reset_and_close():
    """A second host is told the board is in use; after a takeover the first host's requests are
    refused (never executed) and it says so; after a device reset the driver opens a new session;
    a closed session frees the board."""
    from spikeloop.host.board import BoardInUse, SessionLost
    vb = vboard(net())
    a = Board(ModelTransport(vb), nonce=0xA)
    assert a.session == P.session_for(0xA, 0)[0] and vb.sessions.session == a.session
    a.write_reg("STEP_COUNT", 5)
    with pytest.raises(BoardInUse, match="the board is in use: another host holds its session"):
        Board(ModelTransport(vb), nonce=0xB)
    b = Board(ModelTransport(vb), nonce=0xB, takeover=True)
    assert b.session not in (0, a.session)
    with pytest.raises(SessionLost, match="was taken over by another host; nothing of this request was "
                                          "executed") as lost:
        a.write_reg("STEP_COUNT", 9)
    assert not lost.value.reopened and b.read_reg("STEP_COUNT") == 5          # a's 9 never applied
    vb.sessions = P.SessionState()                      # the device resets its session state
    with pytest.raises(SessionLost, match="it was reset or the session was closed") as lost:
        b.read_reg("STEP_COUNT")
    assert lost.value.reopened and b.session == vb.sessions.session != 0
    assert b.read_reg("STEP_COUNT") == 5               # the new session works
    b.close()
    assert vb.sessions.session == 0
    c = Board(ModelTransport(vb), nonce=0xC)             # free again: no takeover needed
    assert c.read_reg("STEP_COUNT") == 5
    raw = Board(ModelTransport(vboard(net())), session=False)
    assert raw.session == 0 and raw.read_reg("VERSION") == P.PROTOCOL_VERSION
