"""The access port's map of golden-snapshot variables, which the protocol engine and host share."""

import pytest

from spikeloop import protocol
from spikeloop.hdl.core import AccessMap, Space
from spikeloop.params import Params
from spikeloop.sim.golden import GoldenModel


@pytest.mark.parametrize("lanes,in_width", [(1, 8), (2, 8), (4, 16)])
def test_locate_covers_the_snapshot_with_protocol_formats(lanes, in_width):
    p = Params(n_in=37, n_out=11)
    amap = AccessMap(p, lanes, in_width)
    snap = GoldenModel(p, seeds=3).snapshot()
    assert set(amap.names()) == set(snap)
    for name in amap.names():
        fmt = protocol.space(name).word(p)
        depth = protocol.space(name).depth(p) if name.startswith("out.") else p.n_out
        assert depth == snap[name][0].size, name
        seen = set()
        for k in range(depth):
            loc = amap.locate(name, k)
            assert loc.signed == fmt.signed and loc.bits <= fmt.bits, name
            if protocol.space(name).fmt_name is not None:   # 'ref' is stored narrower
                assert loc.bits == fmt.bits, name
            assert 0 <= loc.index < amap.depth[loc.space], (name, k)
            assert loc.offset + loc.bits <= amap.width[loc.space], (name, k)
            seen.add((loc.space, loc.index, loc.offset))
        assert len(seen) == depth, f"{name}: two words share a location"


def test_locate_numbers_like_the_core_memories():
    p = Params(n_in=37, n_out=11)
    amap = AccessMap(p, 4, 8)
    loc = amap.locate("out.w", 2 * 37 + 5)
    assert (loc.space, loc.index) == (Space.SYN, 2 * amap.n_in_pad + 5)
    loc = amap.locate("out.S", 10)
    assert (loc.space, loc.index, loc.offset, loc.bits) == (Space.SPIKE, 1, 2, 1)
    assert amap.locate("out.e", 3) == amap.locate("err.e2", 3)


def test_locate_insert_extract_roundtrip():
    p = Params(n_in=5, n_out=2)
    amap = AccessMap(p, 1, 8)
    word = 0
    locs = [(amap.locate(n, 1), v) for n, v in (("out.U", -7), ("out.I", 300), ("out.ref", 1))]
    for loc, v in locs:
        word = loc.insert(word, v)
    assert [loc.extract(word) for loc, _ in locs] == [-7, 300, 1]


def test_locate_refuses_unknown_names_and_indices():
    amap = AccessMap(Params(n_in=5, n_out=2))
    with pytest.raises(KeyError, match="name must be one of"):
        amap.locate("hid.w", 0)
    with pytest.raises(IndexError, match=r"out.w index must be in 0..9, not 10"):
        amap.locate("out.w", 10)
