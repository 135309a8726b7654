"""The access port's map of golden-snapshot variables, which the protocol engine and host share."""

import pytest

from spikeloop import protocol
from spikeloop.hdl.accessmap import AccessMap, Location, Space
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


#: Configurations with a hidden layer, the feedback matrix, host errors, the regulariser and the
#: error_delay rings (odd sizes so every layer has a padded last column).
HIDDEN = [
    dict(n_in=37, n_hidden=13, n_out=11),
    dict(n_in=37, n_hidden=13, n_out=11, feedback="random", regulariser=True),
    dict(n_in=37, n_hidden=13, n_out=11, feedback="uniform", kernel="factorised",
         optimiser="fixed", error_source="host", error_delay=2),
    dict(n_in=37, n_out=11, kernel="single_exp", error_source="host", error_delay=3),
]


@pytest.mark.parametrize("cfg", HIDDEN)
@pytest.mark.parametrize("lanes,in_width", [(1, 8), (4, 8)])
def test_locate_covers_every_option(cfg, lanes, in_width):
    """Every snapshot variable (both layers) plus "fb" has one distinct location per word, in a
    space of this configuration, with the protocol's word format."""
    p = Params(**cfg)
    amap = AccessMap(p, lanes, in_width)
    snap = GoldenModel(p, seeds=3).snapshot()
    has_fb = p.n_hidden > 0 and p.feedback.value != "symmetric"
    assert set(amap.names()) == set(snap) | ({"fb"} if has_fb else set())
    assert {protocol.space(n).name for n in amap.names()} == \
        {s.name for s in protocol.spaces_for(p)}
    seen = set()
    for name in amap.names():
        sp = protocol.space(name)
        fmt = sp.word(p)
        depth = sp.depth(p)
        assert depth == amap.depth_of(name), name
        if name in snap:
            assert depth == snap[name][0].size, name
        for k in range(depth):
            loc = amap.locate(name, k)
            assert loc.signed == fmt.signed and loc.bits <= fmt.bits, name
            if sp.fmt_name is not None:
                assert loc.bits == fmt.bits, name
            assert loc.space in amap.depth, name
            assert 0 <= loc.index < amap.depth[loc.space], (name, k)
            assert loc.offset + loc.bits <= amap.width[loc.space], (name, k)
            key = (loc.space, loc.index, loc.offset) if name != "out.e" or "err.e2" not in snap \
                else None
            if key is not None:
                assert key not in seen, f"{name}[{k}] shares a location"
                seen.add(key)


def test_locate_hidden_layer_numbering():
    """Output layer first in every shared memory, then the hidden layer; B next to the output
    synapse it multiplies."""
    p = Params(n_in=37, n_hidden=13, n_out=11, feedback="random", regulariser=True)
    amap = AccessMap(p, 4, 8)
    Co, Ch = 4, 10                      # ⌈13/4⌉, ⌈37/4⌉ columns per lane
    assert amap.locate("out.w", 2 * 13 + 5).index == (2 * Co) * 4 + 5
    assert amap.locate("hid.w", 3 * 37 + 6).index == (11 * Co + 3 * Ch) * 4 + 6
    assert amap.locate("fb", 5 * 11 + 2).index == amap.locate("out.w", 2 * 13 + 5).index
    assert amap.locate("fb", 0).space is Space.FB
    assert amap.locate("hid.U", 4).index == 11 + 4
    assert amap.locate("hid.zh", 6).index == Co * 4 + 6
    loc = amap.locate("hid.S", 9)             # after the ⌈11/8⌉ = 2 output spike words
    assert (loc.space, loc.index, loc.offset, loc.bits) == (Space.SPIKE, 2 + 1, 1, 1)
    assert amap.locate("hid.e", 7).space is Space.HERR
    assert amap.locate("out.rate", 1).space is Space.RATE
    assert amap.depth[Space.HERR] == Co * 4
    assert amap.depth[Space.FB] == 11 * Co * 4


def test_host_errors_and_delay_rings_have_spaces():
    p = Params(n_in=9, n_out=3, error_source="host", error_delay=4)
    amap = AccessMap(p, 2, 8)
    assert Space.ERR not in amap.depth and Space.TBUF not in amap.depth
    assert amap.locate("out.e", 2) == Location(Space.EBUF, 2, 0, 16, True)
    assert amap.depth[Space.SDLY] == 5 * 3 and amap.depth[Space.ZDLY] == 5 * 5 * 2
    assert "err.e1" not in amap.names()
