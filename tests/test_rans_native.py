"""Native rANS coder (cuda/rans_cpu.cpp): byte compatibility with constriction, batched entry points,
robustness against corrupt input, and the batched symbol-stream API on both back ends."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import shared

from gscomp import FormatError, GscompError
from gscomp.codec import entropy as E
from gscomp.codec import quant as Q


@pytest.fixture(scope="module")
def mod():
    try:
        from gscomp import native

        return native.load("rans")
    except GscompError as e:  # no compiler: constriction stays in use, nothing native to test
        pytest.skip(f"native rANS coder not built: {e}")


@pytest.fixture
def backend():
    """Switch the entropy layer's back end inside a test, restoring it afterwards."""
    prev = E.set_backend("auto")
    yield E.set_backend
    E.set_backend(prev)


def constriction_encode(groups) -> bytes:
    prev = E.set_backend("constriction")
    try:
        return E.ans_encode(groups)
    finally:
        E.set_backend(prev)


def words_of(data: bytes) -> np.ndarray:
    return np.frombuffer(data, "<u4").astype(np.uint32)


def random_table(rng, a: int, kind: str) -> np.ndarray:
    """24-bit weights (each >= 1, sum 2^24) of the kinds the codec uses plus extremes."""
    if kind == "hist":  # 16-bit table scaled by 2^8 (histogram streams)
        return E.to24(E.quantize_pmf(rng.integers(1, 1000, a) ** 3))
    if kind == "skewed":  # one symbol takes nearly everything, the rest weight 1
        w = np.ones(a, np.int64)
        w[rng.integers(a)] += (1 << 24) - a
        return w
    # arbitrary 24-bit weights: cumulative values with no common power-of-two factor
    w = rng.integers(1, 1 << 12, a).astype(np.int64)
    w = np.maximum(1, np.floor(w * ((1 << 24) - a) / w.sum())).astype(np.int64)
    w[np.argmax(w)] += (1 << 24) - int(w.sum())
    return w


def sample(rng, w: np.ndarray, n: int) -> np.ndarray:
    return rng.choice(len(w), n, p=w / w.sum()).astype(np.int32)


CASES = [  # (alphabet, count, table kind)
    (2, 0, "hist"), (2, 1, "hist"), (2, 2, "skewed"), (3, 1000, "raw"), (17, 5000, "hist"),
    (300, 2000, "skewed"), (1000, 3000, "raw"), (16384, 20000, "hist"), (65536, 5000, "raw"),
    (2, 100000, "skewed"), (64, 40000, "raw"),
]


@pytest.mark.parametrize("a,n,kind", CASES)
def test_bytes_match_constriction(mod, a, n, kind):
    rng = np.random.default_rng(a * 7919 + n)
    w = random_table(rng, a, kind)
    x = sample(rng, w, n)
    ref = constriction_encode([(x, w)])
    nat = E.ans_encode([(x, w)])
    assert nat == ref
    # each back end decodes the other's bytes (they are the same bytes, but decode both ways)
    out = np.empty(n, np.int32)
    assert mod.decode_many([(words_of(ref), [(w.astype(np.uint32), n)], out)]) == [""]
    assert np.array_equal(out, x)
    dec = mod.StreamDecoder(words_of(ref))
    assert np.array_equal(dec.decode(w.astype(np.uint32), n), x) and dec.finished()
    prev = E.set_backend("constriction")
    try:
        coder = E.ans_decoder(nat)
        assert np.array_equal(E.ans_decode_group(coder, w, n), x)
        E.ans_finish(coder)
    finally:
        E.set_backend(prev)


def test_multi_group_streams_match(mod):
    """Several tables in one stream (conditional models), incl. empty and one-entry groups."""
    rng = np.random.default_rng(11)
    for trial in range(40):
        groups = []
        for _ in range(int(rng.integers(1, 6))):
            a = int(rng.choice([1, 2, 5, 40, 700]))
            w = random_table(rng, a, str(rng.choice(["hist", "skewed", "raw"]))) if a > 1 else np.array([1 << 24])
            groups.append((sample(rng, w, int(rng.choice([0, 1, 3, 50, 2000]))), w))
        ref = constriction_encode(groups)
        assert E.ans_encode(groups) == ref
        got = E.ans_decode_many([(ref, [(w, len(x)) for x, w in groups])])[0]
        for (x, w), y in zip(groups, got):
            assert np.array_equal(y, x if len(w) > 1 else np.zeros(len(x)))


def test_encode_many_parallel_batch(mod):
    rng = np.random.default_rng(5)
    streams = []
    for i in range(9):
        w = random_table(rng, 50 + i, "hist")
        streams.append([(sample(rng, w, 10000 * (i % 3) + 7), w)])
    assert E.ans_encode_many(streams) == [constriction_encode(s) for s in streams]


def test_decode_hist_batches_mixed(mod):
    """decode_hist_many interleaves up to 4 streams of equal length per thread: mix lengths,
    exact / non-exact lookup tables (uniform 16-entry tables are 'exact' at 4 bits), delta and
    float outputs, and batch remainders of 1..3."""
    rng = np.random.default_rng(9)
    jobs, expect = [], []
    for i in range(11):
        n = [100000, 100000, 777, 100000][i % 4]
        kind = ["hist", "raw", "uniform"][i % 3]
        w = np.full(16, 1 << 20) if kind == "uniform" else random_table(rng, 30 + i, kind)
        x = sample(rng, w, n)
        values = rng.integers(-50, 50, len(w)).astype(np.int64)
        delta = bool(i % 2)
        v = values[x]
        v = np.cumsum(v) if delta else v
        words = words_of(E.ans_encode([(x, w)]))
        if i % 5 == 4:  # float32 column of a wider array, dequantized
            col = np.zeros((n, 3), np.float32)[:, 1]
            jobs.append((words, w.astype(np.uint32), values, delta, col, 0.03))
            expect.append((v.astype(np.float64) * 0.03).astype(np.float32))
        else:
            jobs.append((words, w.astype(np.uint32), values, delta, np.empty(n, np.int64), None))
            expect.append(v)
    assert mod.decode_hist_many(jobs) == [""] * len(jobs)
    for job, e in zip(jobs, expect):
        assert job[4].dtype == e.dtype and np.array_equal(job[4], e)


def test_native_rejects_bad_tables_and_symbols(mod):
    x = np.array([0, 1, 1], np.int32)
    big = np.ones(70000, np.int64)
    big[0] += (1 << 24) - big.sum()  # valid sum, but more entries than the native coder supports
    for w in ([0, 1 << 24], [5, 7], [1 << 23, (1 << 23) + 1], big):
        with pytest.raises(ValueError):
            mod.encode_many([[(x, np.asarray(w, np.uint32))]])
    with pytest.raises(ValueError):
        mod.StreamDecoder(np.zeros(0, np.uint32)).decode(np.array([1 << 23, 1 << 23], np.uint32), -1)
    w = np.array([1 << 23, 1 << 23], np.uint32)
    with pytest.raises(ValueError):
        mod.encode_many([[(np.array([0, 2], np.int32), w)]])
    with pytest.raises(ValueError):
        mod.encode_many([[(np.array([-1], np.int32), w)]])
    bad = np.array([0, 1 << 24], np.uint32)
    assert mod.decode_many([(np.array([5, 1], np.uint32), [(bad, 3)], np.empty(3, np.int32))])[0]
    with pytest.raises(TypeError):  # an output of the wrong dtype would be written into a copy
        mod.decode_many([(np.zeros(0, np.uint32), [(w, 3)], np.empty(3, np.int64))])


def test_corrupt_streams_fail_cleanly(mod):
    """Truncated, extended, zero-ended and random word arrays: a clear error, never a crash/hang."""
    rng = np.random.default_rng(2)
    w = random_table(rng, 200, "hist")
    x = sample(rng, w, 5000)
    good = E.ans_encode([(x, w)])
    assert len(good) > 16
    bad_streams = [good[:-4], good[4:], good + b"\x01\x00\x00\x00", good[:-4] + b"\x00\x00\x00\x00", b"\x07\x00\x00",
                   bytes(rng.integers(0, 256, 64, dtype=np.uint8)) + b"\x01\x00\x00\x00", b"\x01\x00\x00\x00"]
    # (an EMPTY word array is a valid stream: it decodes as symbol 0 repeated, in both back ends)
    for data in bad_streams:
        with pytest.raises(FormatError):
            E.ans_decode_many([(data, [(w, len(x))])])
        with pytest.raises(FormatError):
            coder = E.ans_decoder(data)
            E.ans_decode_group(coder, w, len(x))
            E.ans_finish(coder)


SYMBOL_ARRAYS = [
    np.zeros(0, np.int64),
    np.array([3]),
    np.full(100, -7),
    np.array([0, 1] * 50),
    np.round(np.random.default_rng(0).laplace(0, 3, 50000)).astype(np.int64),
    np.cumsum(np.random.default_rng(1).integers(-2, 3, 60000)),  # delta mode
    np.random.default_rng(2).integers(-(2**39), 2**39, 5000),  # split high/low bits
    np.cumsum(np.random.default_rng(3).integers(0, 2**22, 8000)),  # wide differences
    np.round(np.random.default_rng(4).normal(0, 3000, 30000)).astype(np.int64),  # 16384-wide alphabet limit
]


def regimes(seed: int, n: int) -> np.ndarray:
    """Runs of values around changing levels: the previous value predicts the next (context streams)."""
    rng = np.random.default_rng(seed)
    x = np.repeat(rng.integers(-20, 20, n // 4 + 1), 4)[:n] + rng.integers(-1, 2, n)
    x[rng.random(n) < 0.4] = 0
    return x


SYMBOL_ARRAYS += [regimes(5, 40000), regimes(6, 70), np.round(np.random.default_rng(7).laplace(0, 2, 500)).astype(np.int64)]


@pytest.mark.parametrize("kw", [{}, {"allow_delta": False}, {"allow_zstd": True}, {"allow_ctx": True}])
def test_symbols_many_same_bytes_both_backends(mod, backend, kw):
    backend("constriction")
    ref = [E.encode_symbols(x, **kw) for x in SYMBOL_ARRAYS]
    backend("native")
    assert E.encode_symbols_many(SYMBOL_ARRAYS, **kw) == ref
    assert [E.encode_symbols(x, **kw) for x in SYMBOL_ARRAYS] == ref
    for name in ("native", "constriction"):
        backend(name)
        for x, data in zip(SYMBOL_ARRAYS, ref):
            assert np.array_equal(E.decode_symbols(data, len(x)), x)


@pytest.mark.parametrize("name", ["native", "constriction"])
def test_decode_symbols_many_dequantizes_exactly(mod, backend, name):
    backend(name)
    rng = np.random.default_rng(8)
    n = 20000
    cols = [np.round(rng.laplace(0, s, n)).astype(np.int64) for s in (0.5, 4, 40)]
    cols += [np.cumsum(rng.integers(-1, 2, n)), np.full(n, 5), rng.integers(-(2**30), 2**30, n)]
    streams = E.encode_symbols_many(cols)
    streams[1] = E.encode_symbols(cols[1], allow_zstd=True)
    ints = E.decode_symbols_many(streams, n)
    assert all(np.array_equal(a, b) for a, b in zip(ints, cols))
    steps = np.array([0.004, 0.02, 0.0301, 1e-3, 0.5, 1e-7])
    out = E.decode_symbols_many(streams, n, scales=steps)
    ref = np.stack([Q.dequantize(c, s) for c, s in zip(cols, steps)], 1)
    assert out.dtype == np.float32 and np.array_equal(out.view(np.uint32), ref.view(np.uint32))
    with pytest.raises(GscompError):
        E.decode_symbols_many(streams, n, scales=steps, out=np.empty((n, 2), np.float32))
    # constant and empty streams (decoded inline, not on the worker threads) still check their counts
    empty = E.encode_symbols(np.zeros(0, np.int64))
    assert [len(v) for v in E.decode_symbols_many([empty, streams[4]], [0, 7])] == [0, 7]
    for counts in ([3, 7], [0, 0]):
        with pytest.raises(FormatError, match="stream for"):
            E.decode_symbols_many([empty, streams[4]], counts)


def test_context_streams(mod, backend):
    """Context streams (one table per context of the previous value) are picked only where they are
    smaller, decode on both back ends (also dequantized and in batches with other kinds), match
    the integer context rule, and small tables take the 12-bit kind."""
    x, iid = regimes(9, 30000), np.random.default_rng(9).integers(-40, 41, 3000)
    backend("native")
    cx, ci = E.encode_symbols(x, allow_ctx=True), E.encode_symbols(iid, allow_ctx=True)
    assert cx[0] == E.M_CTX_ANS and len(cx) < 0.95 * len(E.encode_symbols(x))
    assert ci[0] == E.M_ANS and ci[1] == 2 and len(ci) < len(E.encode_symbols(iid))  # 12-bit table
    assert E.decode_symbols(ci, len(iid)).tolist() == iid.tolist()
    for name in ("native", "constriction"):
        backend(name)
        got = E.decode_symbols_many([cx, E.encode_symbols(iid), cx], [len(x), len(iid), len(x)])
        assert np.array_equal(got[0], x) and np.array_equal(got[1], iid) and np.array_equal(got[2], x)
        out = E.decode_symbols_many([cx, cx], len(x), scales=[0.5, 0.01])
        assert np.array_equal(out[:, 1].view(np.uint32), Q.dequantize(x, 0.01).view(np.uint32))
    prev = np.array([-100, -9, -8, -7, -2, -1, 0, 1, 2, 3, 4, 7, 8, 100]) + 5
    assert E.ctx_index(prev, 5, 3).tolist() == [0, 0, 0, 0, 1, 2, 3, 4, 5, 5, 6, 6, 6, 6]
    with pytest.raises(FormatError):  # truncated, or a stream reaching a context without a table
        E.decode_symbols(cx[:-5], len(x))
    # more distinct values than a context table holds, in a stream whose deltas are few: no
    # context stream (the search raised "too many symbols for the table precision")
    for many in (np.arange(10000), np.arange(6000) * 3 - 7000):
        assert E.decode_symbols(E.encode_symbols(many, allow_ctx=True), len(many)).tolist() == many.tolist()


def test_symbol_stream_fuzz(mod, backend):
    """Byte flips / truncations of whole symbol streams: FormatError or a decode, never a crash."""
    backend("native")
    rng = np.random.default_rng(4)
    x = np.round(rng.laplace(0, 5, 3000)).astype(np.int64)
    for data in (bytearray(E.encode_symbols(x)), bytearray(E.encode_symbols(regimes(3, 3000), allow_ctx=True))):
        assert data[0] in (E.M_ANS, E.M_CTX_ANS)
        _fuzz_one(rng, data, len(x))


def _fuzz_one(rng, data: bytearray, n: int) -> None:
    for i in range(300):
        d = bytearray(data)
        if i % 3 == 0:
            d = d[: int(rng.integers(0, len(d)))]
        else:
            d[int(rng.integers(0, len(d)))] ^= 1 << int(rng.integers(0, 8))
        try:
            y = E.decode_symbols_many([bytes(d)], n)[0]
            assert y.shape == (n,)
        except FormatError:
            pass


def test_gaussian_and_categorical_streams_same_bytes(mod, backend):
    rng = np.random.default_rng(6)
    n = 4000
    means = rng.normal(0, 3, n).astype(np.float32)
    scales = np.exp(rng.uniform(-2, 3, n)).astype(np.float32)
    x = np.round(means + scales * rng.standard_normal(n)).astype(np.int64)
    probs = rng.dirichlet(np.ones(5), n)
    c = np.array([rng.choice(5, p=p) for p in probs])
    out = {}
    for name in ("constriction", "native"):
        backend(name)
        out[name] = (E.encode_gaussian(x, means, scales), E.encode_categorical(c, probs))
    assert out["native"] == out["constriction"]
    for name in ("constriction", "native"):
        backend(name)
        assert np.array_equal(E.decode_gaussian(out["native"][0], means, scales), x)
        assert np.array_equal(E.decode_categorical(out["native"][1], probs, n), c)


def test_biker_gsz_same_bytes_both_backends(mod, backend, tmp_path):
    from gscomp.codec import decode_gsz, encode_gsz
    from gscomp.io import load_splats
    from gscomp.stages.pipeline import Pipeline

    splats = load_splats(shared("splats/biker.compressed.ply"))
    cfg = {"name": "t", "sh_degree": None, "stages": {
        "positions": {"type": "positions", "bits": 16},
        "attributes": {"type": "attributes", "quat_step": 0.004, "scale_step": 0.02, "opacity_step": 0.03,
                       "sh0_step": 0.01, "shN_step": 0.02}}}
    files = {}
    for name in ("constriction", "native"):
        backend(name)
        encode_gsz(splats, tmp_path / f"{name}.gsz", Pipeline.from_config(cfg))
        files[name] = (tmp_path / f"{name}.gsz").read_bytes()
    assert files["native"] == files["constriction"]
    a = decode_gsz(tmp_path / "native.gsz")
    backend("constriction")
    b = decode_gsz(tmp_path / "native.gsz")
    for f in ("means", "quats", "scales", "opacities", "sh0"):
        assert np.array_equal(getattr(a, f).numpy().view(np.uint32), getattr(b, f).numpy().view(np.uint32))


def _same(a, b) -> bool:
    if isinstance(a, bytes):
        return a == b
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a.view(np.uint8), b.view(np.uint8))


def test_native_quant_helpers_match_numpy(mod, backend):
    """quantize, Morton codes, position dequantization, bit packing and quaternion decoding give
    bit-identical results on the native helpers and on the numpy reference code."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((5000, 45)) * 0.3).astype(np.float32)
    x[0, 0], x[1, 1], x[2, 2] = 0.005, -0.015, 0.025  # ties at .5 steps: round half to even
    q = rng.integers(0, 1 << 19, (5000, 3))
    lo, hi = np.array([-1, -2, -3], np.float32), np.array([1, 2.5, 3], np.float32)
    v = rng.integers(0, 1 << 62, 5000, dtype=np.int64).astype(np.uint64)
    w = rng.integers(0, 57, 5000)
    mask = (np.uint64(1) << w.astype(np.uint64)) - np.uint64(1)
    v13 = v & np.uint64((1 << 13) - 1)
    v &= mask  # (a value wider than its width is an error: tested below)
    quats = rng.standard_normal((5000, 4)).astype(np.float32)
    quats[:6] = [[0, 0, 0, 0], [0.5, 0.5, 0.5, 0.5], [-0.5, 0.5, -0.5, 0.5], [0, -1, 0, 0], [0.6, 0, -0.8, 0], [0.2, 0.004, -0.006, 0.01]]
    s3 = Q.quats_to_s3(quats, 0.004)
    row_steps = np.exp2(rng.integers(0, 4, 5000)).astype(np.float64)[:, None] * 0.004
    calls = [
        lambda: Q.quantize(x, np.linspace(0.01, 0.05, 45)[None]),
        lambda: Q.quantize(x, 0.01),
        lambda: Q.quantize(x[:, 0], 0.02),
        lambda: Q.quantize(x[:, 0], np.full(5000, 0.1)),  # per-element steps: numpy on both
        lambda: Q.quantize(x, np.linspace(0.01, 0.05, 45)[None], columns=True),
        lambda: Q.quantize(x[:0], 0.01, columns=True),
        lambda: Q.morton_encode(q),
        lambda: Q.morton_decode(Q.morton_encode(q)),
        lambda: Q.dequantize_positions(q, lo, hi, 19),
        lambda: E.pack_bits(v, w),
        lambda: E.pack_bits(v13, 13),
        lambda: E.unpack_bits(E.pack_bits(v, w), w, len(w)),
        lambda: Q.s3_to_quats(s3, 0.004),
        lambda: Q.s3_to_quats(s3, row_steps),  # one step per row
        lambda: Q.quats_to_s3(quats, 0.004),
        lambda: Q.quats_to_s3(quats.astype(np.float64), 0.002),
    ]
    for fn in calls:
        backend("native")
        a = fn()
        backend("constriction")
        assert _same(a, fn())
    assert np.array_equal(Q.morton_decode(Q.morton_encode(q)), q)
    for name in ("native", "constriction"):  # columns=True is the transposed result, contiguous
        backend(name)
        cols = Q.quantize(x, 0.02, columns=True)
        assert cols.shape == (45, 5000) and cols.flags.c_contiguous and np.array_equal(cols, Q.quantize(x, 0.02).T)
    assert np.array_equal(E.unpack_bits(E.pack_bits(v, w), w, len(w)), v)
    for name in ("native", "constriction"):
        backend(name)
        for bad in (np.array([8], np.uint64), np.array([-1], np.int64), np.array([1.0])):
            with pytest.raises(ValueError):  # a value wider than its width (or not a bit field) was cut to its low bits
                E.pack_bits(bad, 3)
        with pytest.raises(GscompError):
            Q.quantize(np.array([1e12], np.float32), 0.01)
        with pytest.raises(FormatError):
            Q.s3_to_quats(np.array([[4, 0, 0, 0]]), 0.01)
        with pytest.raises(FormatError):
            E.unpack_bits(b"\x00", [9], 1)


def test_encode_columns_of_2d_array(mod, backend):
    """An (n, k) array codes its k columns (interleaved batches of equal-length streams natively)
    with the same bytes as per-column coding on constriction."""
    rng = np.random.default_rng(12)
    sym = np.round(rng.laplace(0, 3, (30000, 7))).astype(np.int64)
    sym[:, 2] = np.cumsum(sym[:, 2])  # a delta-coded column inside a batch
    sym[:, 5] = 4  # a constant column
    backend("constriction")
    ref = [E.encode_symbols(sym[:, j]) for j in range(7)]
    assert E.encode_symbols_many(sym) == ref
    backend("native")
    assert E.encode_symbols_many(sym) == ref
    assert E.encode_symbols_many([sym[:, j] for j in range(7)]) == ref
    out = E.decode_symbols_many(ref, len(sym))
    assert all(np.array_equal(o, sym[:, j]) for j, o in enumerate(out))


def test_encode_hist_rejects_values_outside_table(mod):
    w = np.array([1 << 23, 1 << 23], np.uint32)
    rank = np.array([0, 1], np.int32)
    good = np.array([0, 1, 1, 0] * 10, np.int64)
    bad = good.copy()
    bad[7] = 2
    jobs = [(good, False, 0, rank, w)] * 3
    assert len(mod.encode_hist_many(jobs)) == 3
    for pos in range(4):  # the bad stream anywhere in an interleaved batch of four
        with pytest.raises(ValueError, match="outside"):
            mod.encode_hist_many(jobs[:pos] + [(bad, False, 0, rank, w)] + jobs[pos:])


def test_falls_back_to_constriction_when_native_cannot_build(mod, backend, monkeypatch, capsys):
    from gscomp import native

    def broken(kind="raster"):
        raise GscompError("could not build the native rANS coder (no compiler)")

    monkeypatch.setattr(native, "load", broken)
    monkeypatch.setattr(E, "_native_state", {})
    backend("auto")
    assert E.rans_backend() == "constriction"
    assert "using constriction" in capsys.readouterr().err
    x = np.round(np.random.default_rng(0).laplace(0, 2, 5000)).astype(np.int64)
    data = E.encode_symbols(x)
    assert np.array_equal(E.decode_symbols_many([data], len(x))[0], x)
    assert np.array_equal(Q.morton_decode(Q.morton_encode(np.ones((3, 3), np.int64))), np.ones((3, 3)))
    backend("native")  # an explicit request for the native coder reports the build failure
    with pytest.raises(GscompError):
        E.encode_symbols(x)


def test_position_and_class_helpers_match_numpy(mod, backend):
    """The native decode helpers of the adaptive layout (Morton-delta codes, classed positions,
    per-class scatter and dequantization) give the numpy reference's exact results, and both
    refuse the same malformed input with a FormatError."""
    from gscomp.stages.posthoc import _scatter_rows

    rng = np.random.default_rng(7)
    n, bits, cmax = 3000, 9, 3
    cls = rng.integers(0, 41, n)  # deltas below 2^40 on a 57-bit grid (19 bits per axis)
    cls[rng.random(n) < 0.2] = 0

    def random_bits(widths):
        full = rng.integers(0, np.iinfo(np.uint64).max, len(widths), np.uint64, endpoint=True)
        return E.pack_bits(full >> (64 - widths).astype(np.uint64), widths)  # a shift by 64 gives 0

    raw = random_bits(np.maximum(cls - 1, 0))
    c = rng.integers(0, cmax + 1, n)
    ref = random_bits(np.repeat(cmax - c, 3))
    small_raw = random_bits(np.maximum(cls % 4 - 1, 0))  # codes on a 27-bit grid
    lo, hi = np.array([-1.5, 0.0, 2.0], np.float32), np.array([3.0, 0.25, 9.0], np.float32)
    sym = rng.integers(-500, 500, (n, 3))
    rows = [np.flatnonzero(c == k) for k in range(cmax + 1)]
    cols = [rng.integers(-9, 9, len(i)) for i in rows for _ in range(2)]
    results = {}
    for name in ("auto", "constriction"):
        backend(name)
        codes = Q.morton_delta_codes(cls, raw, 19)
        small = Q.morton_delta_codes(cls % 4, small_raw, bits)
        results[name] = (codes, Q.classed_means(small >> (3 * cmax), c, ref, cmax, lo, hi, bits),
                         _scatter_rows(n, 2, rows, cols), Q.dequantize_classed(sym, c, 0.037),
                         Q.dequantize_classed(sym, c, np.array([0.037, 0.05, 0.0625])))  # a step per column
        for bad in (raw[:-1], raw + b"\0"):
            with pytest.raises(FormatError):
                Q.morton_delta_codes(cls, bad, 19)
        with pytest.raises(FormatError):  # codes past 3 * bits bits
            Q.morton_delta_codes(np.full(4, 3 * bits), E.pack_bits(np.zeros(4, np.uint64), np.full(4, 3 * bits - 1)), bits)
        with pytest.raises(FormatError):
            Q.classed_means(small >> (3 * cmax), c, ref[:-1], cmax, lo, hi, bits)
    for a, b in zip(results["auto"], results["constriction"]):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    low = E.unpack_bits(raw, np.maximum(cls - 1, 0), n).astype(np.int64)
    assert np.array_equal(results["auto"][0], np.cumsum(np.where(cls > 0, np.int64(1) << np.maximum(cls - 1, 0), 0) + low))
    assert np.array_equal(results["auto"][3], (sym * (0.037 * 2.0 ** c)[:, None]).astype(np.float32))


def test_scatter_dequantize_is_the_two_calls_it_replaces(mod):
    """shN's decoder scatters and dequantizes in one native pass: the same float32 bits as
    scatter_rows then dequantize_classed (its numpy fallback), into columns j0.. of a wider
    array, in the threaded path too; and it refuses rows that would make its writes meet."""
    from gscomp.stages.posthoc import _scatter_rows

    rng = np.random.default_rng(3)
    for n, w, k, j0, wide in ((3000, 3, 4, 0, 3), (120_000, 9, 2, 5, 15)):  # (the second: 60k x 9 per class, threaded)
        c = rng.integers(0, k, n)
        rows = [np.flatnonzero(c == i) for i in range(k)]
        cols = [rng.integers(-3000, 3000, len(r)) for r in rows for _ in range(w)]
        steps = rng.uniform(0.01, 0.2, w)
        out = np.full((n, wide), np.nan, np.float32)
        mod.scatter_dequantize(out, j0, rows, cols, steps)
        ref = Q.dequantize(_scatter_rows(n, w, rows, cols), np.ldexp(steps[None], c[:, None]))
        assert np.array_equal(out[:, j0:j0 + w].view(np.int32), ref.astype(np.float32).view(np.int32))
        assert np.isnan(out[:, :j0]).all() and np.isnan(out[:, j0 + w:]).all()  # the other columns untouched
    out = np.zeros((4, 2), np.float32)
    one = [np.zeros(2, np.int64)]
    for rows, cols, j0 in (([np.array([0, 0])], one * 2, 0), ([np.array([0, 1]), np.array([1])], one * 2 + [one[0][:1]] * 2, 0),
                           ([np.array([0, 4])], one * 2, 0), ([np.array([0, 1])], one * 2, 1), ([np.array([0, 1])], one, 0),
                           ([np.array([0, 1])], one * 2, 2 ** 63 - 1)):  # (j0 + w overflowed past the check)
        with pytest.raises(ValueError):
            mod.scatter_dequantize(out, j0, rows, cols, np.ones(2))
    wide = np.zeros((4, 4), np.float32)  # (a view of every other column, or float64: pybind11 wrote into a copy)
    for bad in (wide[:, ::2], np.zeros((4, 2))):
        with pytest.raises(TypeError):
            mod.scatter_dequantize(bad, 0, [np.arange(4)], [np.ones(4, np.int64)] * 2, np.ones(2))
    with pytest.raises(TypeError):
        mod.scatter_rows(np.zeros((8, 2), np.int64)[::2], [np.arange(4)], [np.ones(4, np.int64)] * 2)


def test_loading_modules_leaves_the_build_flags_alone():
    """torch's extension loader appends its own flags to the lists it is given; gscomp must pass
    copies, or every module loaded after the first in a process gets a new build tag and is
    compiled again (seen on a GPU machine: two or three cached builds of each module)."""
    from gscomp import native

    tags = {k: native._build_tag(native.ROOT / f) for k, (f, _, _) in native.SOURCES.items()}
    flags = (list(native.CFLAGS), list(native.LDFLAGS))
    for kind in native.SOURCES:
        try:
            native.load(kind)
        except GscompError as e:
            pytest.skip(f"native {kind} not built: {e}")
    assert (native.CFLAGS, native.LDFLAGS) == flags
    assert {k: native._build_tag(native.ROOT / f) for k, (f, _, _) in native.SOURCES.items()} == tags


def test_native_axis_helpers_and_trellis_match_numpy(mod, backend):
    """sort_axes, canonical_quats, quats_rest and the trellis search (with weights, ties and the
    rate term) give bit-identical results natively and in the numpy reference code."""
    from gscomp.stages import posthoc as P

    rng = np.random.default_rng(3)
    quats = rng.standard_normal((3000, 4)).astype(np.float32)
    quats[:8] = [[0, 0, 0, 0], [1, 0, 0, 0], [0, -1, 0, 0], [0.5, 0.5, -0.5, 0.5], [0, 0, 0, -2],
                 [1e-30, 0, 0, 0], [0.6, 0, -0.8, 0], [0.7071, 0.7071, 0, 0]]
    scales = rng.standard_normal((3000, 3)).astype(np.float32)
    scales[:8] = [[0, 0, 0], [-0.0, 0.0, -0.0], [1, 1, 0], [0, 1, 1], [2, 1, 2], [-1, -1, -1], [3, 2, 1], [1, 2, 3]]
    scales[8:100] = np.round(scales[8:100])  # ties between axes: stable order
    t = np.round(rng.laplace(0, 4, 400) * 2) / 2  # half-grid targets: ties between candidates
    wts = rng.uniform(0, 4, 400)
    calls = [
        lambda: P.sort_axes(quats, scales),
        lambda: P.canonical_quats(P.sort_axes(quats, scales)[0]),
        lambda: P.canonical_quats(quats.astype(np.float64)),
        lambda: Q.quats_rest(quats.astype(np.float64)),
        lambda: Q.quats_rest(P.canonical_quats(quats.astype(np.float64))),
    ] + [lambda nn=nn, lam=lam: [a for kr in Q.dq_quantize([t, -t, t * 7], nn, lam, weights=[wts, wts, np.ones(400)])
                                 for a in kr] for nn in (False, True) for lam in (0.0, None, float("inf"))]  # inf: no path under INF, all 0
    for fn in calls:
        backend("native")
        a = fn()
        backend("constriction")
        b = fn()
        assert all(_same(x, y) for x, y in zip(a, b)) if isinstance(a, (tuple, list)) else _same(a, b)
    big_q = rng.standard_normal((70000, 4)).astype(np.float32)  # over 65536 rows: the OpenMP branch
    big_s = rng.standard_normal((70000, 3)).astype(np.float32)
    backend("native")
    a = P.sort_axes(big_q, big_s), Q.quats_rest(P.canonical_quats(big_q.astype(np.float64)))
    backend("constriction")
    b = P.sort_axes(big_q, big_s), Q.quats_rest(P.canonical_quats(big_q.astype(np.float64)))
    assert all(_same(x, y) for pa, pb in zip(a, b) for x, y in zip(pa, pb))
    bad = quats.copy()
    bad[5, 2] = np.nan  # not finite: the native helpers decline, numpy takes it
    assert mod.sort_axes(bad, scales) is None and mod.canonical_quats(bad.astype(np.float64)) is None
    assert mod.quats_rest(bad.astype(np.float64)) is None


def test_batched_table_costs_match_row_by_row(mod):
    """The context search costs its tables in one batch (`_table_costs`): the same costs, offsets
    and weights as `_table_cost` on each row's non-empty part, including rows whose rounding
    overshoots (quantize_pmf's remainder loop) and empty rows; the native joint histogram of
    (context, value) matches numpy's."""
    rng = np.random.default_rng(4)
    rows = rng.integers(0, 50, (12, 300)) * (rng.random((12, 300)) < 0.3)
    rows[2] = 0  # empty
    rows[3, :] = 1  # one big count and many ones: max(1, .) overshoots the table total
    rows[3, 7] = 10**6
    rows[4, 100] = 7  # a single value
    rows[5] = rng.integers(0, 3000, 300)
    assert np.maximum(1, np.floor(rows[3] * 4096 / rows[3].sum())).sum() > 4096
    for bits in (E.CTX_TABLE_BITS, E.TABLE_BITS):
        got = E._table_costs(rows, bits)
        for r, g in zip(rows, got):
            nz = np.flatnonzero(r)
            if not nz.size:
                assert g is None
                continue
            cost, w = E._table_cost(r[nz[0]:nz[-1] + 1], bits)
            assert g[0] == cost and g[1] == nz[0] and np.array_equal(g[2], w)
    x = regimes(11, 5000)
    m, lo = int(np.median(x)), int(x.min())
    prev = np.concatenate([[m], x[:-1]])
    ref = np.bincount(E.ctx_index(prev, m, 5) * (x.max() - lo + 1) + (x - lo), minlength=11 * (x.max() - lo + 1))
    assert np.array_equal(mod.ctx_hist(x, m, lo, int(x.max()) - lo + 1, 5).ravel(), ref)
    with pytest.raises(ValueError):
        mod.ctx_hist(x, m, lo + 1, int(x.max()) - lo + 1, 5)
