"""Hostile inputs: every truncated, bit-flipped, oversized-count or foreign file must give a clean
FormatError quickly (no crash, hang or huge allocation)."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from gscomp import FormatError
from gscomp.codec import decode_bytes, encode_gsz
from gscomp.codec.container import pack_gsz, unpack_gsz
from gscomp.commands.compress import compose_pipeline

TIME_LIMIT = 2.0  # seconds per hostile input (a valid decode of this file takes ~10 ms)


def _encoded(tmp_path_factory, overrides: list[str], n: int, k: int) -> bytes:
    from gscomp import Splats
    import torch

    g = torch.Generator().manual_seed(0)
    s = Splats(
        means=torch.randn(n, 3, generator=g),
        quats=torch.randn(n, 4, generator=g),
        scales=torch.randn(n, 3, generator=g) * 0.3 - 2,
        opacities=torch.randn(n, generator=g),
        sh0=torch.randn(n, 1, 3, generator=g),
        shN=torch.randn(n, k, 3, generator=g) * 0.1,
    )
    p = tmp_path_factory.mktemp("fuzz") / "v.gsz"
    encode_gsz(s, p, compose_pipeline(overrides))
    data = p.read_bytes()
    decode_bytes(data)  # sanity: the pristine file decodes
    return data


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    return _encoded(tmp_path_factory, ["pipeline=medium"], 300, 3)


def expect_format_error(data: bytes) -> None:
    t = time.perf_counter()
    with pytest.raises(FormatError) as ei:
        decode_bytes(data)
    assert time.perf_counter() - t < TIME_LIMIT
    msg = str(ei.value)
    assert msg and "\n" not in msg


def test_truncations(valid):
    rng = np.random.default_rng(0)
    cuts = sorted(set(range(0, 40)) | set(rng.integers(0, len(valid), 160).tolist()))
    for c in cuts:
        expect_format_error(valid[:c])


def test_bit_flips(valid):
    rng = np.random.default_rng(1)
    for _ in range(300):
        b = bytearray(valid)
        pos = int(rng.integers(0, len(b)))
        b[pos] ^= 1 << int(rng.integers(0, 8))
        expect_format_error(bytes(b))


def test_garbage_and_foreign(valid):
    rng = np.random.default_rng(2)
    for i in range(100):
        n = int(rng.integers(0, 3000))
        junk = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        expect_format_error(junk)
        expect_format_error(valid[:24] + junk)  # right magic, garbage after
    for foreign in (b"ply\nformat ascii 1.0\nend_header\n", b"NGSP" + bytes(100), b"\x1f\x8b" + bytes(50), b"{}"):
        expect_format_error(foreign)
    expect_format_error(valid + b"\x00")  # trailing bytes



def test_header_with_nan_tokens_is_not_json(valid, monkeypatch):
    """Python's json reads NaN and Infinity, which JSON has not: such a header was accepted, and
    `gscomp info --json` printed them back (invalid JSON for a strict reader)."""
    import gscomp.codec.container as C

    header, sections = unpack_gsz(valid)
    dumps = json.dumps
    monkeypatch.setattr(C.json, "dumps", lambda *a, **k: dumps(*a, **{**k, "allow_nan": True}))
    for bad in (float("nan"), float("inf"), -float("inf")):
        data = pack_gsz({**header, "stage_header": {"x": bad}}, sections)
        with pytest.raises(FormatError, match="header is not valid JSON"):
            decode_bytes(data)


def test_header_numbers_beyond_float64_are_not_json(valid, monkeypatch):
    """1e400 is a JSON number that Python reads as inf: `gscomp info --json` printed it back as
    Infinity (qa37_H M2)."""
    import gscomp.codec.container as C

    header, sections = unpack_gsz(valid)
    dumps = json.dumps
    monkeypatch.setattr(C.json, "dumps", lambda *a, **k: dumps(*a, **k).replace('"x":1.5', '"x":1e400'))
    data = pack_gsz({**header, "stage_header": {"x": 1.5}}, sections)
    assert b'"x":1e400' in data
    with pytest.raises(FormatError, match=r"^file: header number 1e400 is beyond float64's range$"):
        decode_bytes(data)


def test_a_count_beyond_this_machines_memory_is_refused_before_decoding(valid, monkeypatch):
    """A file of a few KB may declare millions of Gaussians (the payload rule allows 8 a byte; a
    padded file is valid): a count whose Splats alone cannot fit is one error, not the OOM killer."""
    import gscomp.memory as M
    from gscomp import GscompError

    monkeypatch.setattr(M, "DECODE_FACTOR", 10 ** 7)  # (so that this small file "needs" terabytes)
    with pytest.raises(GscompError, match=r"^scene\.gsz: 300 Gaussians of SH degree 1 need at least .* GB to decode, "
                                          r"more than the .* GB this machine has available .*GSCOMP_NO_MEMORY_CHECK=1"):
        decode_bytes(valid, "scene.gsz")
    monkeypatch.setenv("GSCOMP_NO_MEMORY_CHECK", "1")
    assert len(decode_bytes(valid)) == 300


def test_an_shN_section_with_sh_degree_0_is_refused(valid):
    """The spec: SH degree 0 has no shN section; one there was ignored."""
    header, sections = unpack_gsz(valid)
    assert header["sh_degree"] >= 1 and any(s.name == "attributes/shN" for s in sections)
    expect_format_error(pack_gsz({**header, "sh_degree": 0}, sections))


def test_decoded_values_must_be_finite(valid):
    """Steps far beyond float32 (valid JSON, valid CRCs) made scales and opacities decode to inf:
    the API returned them, and only the .ply writer refused them, naming "splats", not the file."""
    header, sections = unpack_gsz(valid)
    for key, field in (("scale_step", "scales"), ("opacity_step", "opacities")):
        st = json.loads(json.dumps(header["pipeline"]))
        st["stages"][1][key] = 1e300
        with pytest.raises(FormatError, match=f"decoded {field} has non-finite values"):
            decode_bytes(pack_gsz({**header, "pipeline": st}, sections))


def test_header_over_the_limit_says_so():
    """A header over 16 MiB in a file holding it was refused as exceeding the file size."""
    from gscomp.codec.container import MAGIC, MAX_HEADER, PREAMBLE

    data = PREAMBLE.pack(MAGIC, 1, 0, MAX_HEADER + 10, 0, 0) + b" " * (MAX_HEADER + 100)
    with pytest.raises(FormatError, match=f"header length {MAX_HEADER + 10} is over the limit of {MAX_HEADER} bytes"):
        decode_bytes(data)
    with pytest.raises(FormatError, match="exceeds the file size"):
        decode_bytes(data[: MAX_HEADER])

def test_hostile_headers_with_valid_checksums(valid):
    """CRCs only catch accidents: a crafted file with valid checksums but absurd contents must
    still fail cleanly, before allocating anything large."""
    header, sections = unpack_gsz(valid)
    variants = []
    for n in (2**40, 2**28, 10**8, -1, "7", 301, 299, 0):
        variants.append({**header, "n": n})
    for deg in (4, -1, None, 2):
        variants.append({**header, "sh_degree": deg})
    variants.append({**header, "pipeline": {"name": "x", "stages": [{"name": "p", "type": "nope"}]}})
    variants.append({**header, "pipeline": "junk"})
    st = json.loads(json.dumps(header["pipeline"]))
    st["stages"][0]["bits"] = 12  # disagrees with the payload
    variants.append({**header, "pipeline": st})
    st = json.loads(json.dumps(header["pipeline"]))
    st["stages"][1]["scale_step"] = -1
    variants.append({**header, "pipeline": st})
    for h in variants:
        expect_format_error(pack_gsz(h, sections))
    for kind in (["positions"], {"a": 1}):  # (said "unhashable type: 'list'")
        st = json.loads(json.dumps(header["pipeline"]))
        st["stages"][0]["type"] = kind
        with pytest.raises(FormatError, match="a stage's type must be a name, got"):
            decode_bytes(pack_gsz({**header, "pipeline": st}, sections))
    hostile_payloads(valid, 60, seed=3)


def hostile_payloads(valid: bytes, count: int, seed: int) -> None:
    """Payloads swapped between sections, edited, cut, spliced or random, under valid checksums:
    each file decodes or fails with a one-line FormatError, quickly."""
    header, sections = unpack_gsz(valid)
    rng = np.random.default_rng(seed)
    from gscomp.stages.base import Section

    for i in range(count):
        secs = [Section(s.name, s.codec, s.payload) for s in sections]
        j = int(rng.integers(0, len(secs)))
        p = bytearray(secs[j].payload)
        at = int(rng.integers(0, len(p))) if p else 0
        if i % 5 == 0:
            p = sections[int(rng.integers(0, len(secs)))].payload
        elif i % 5 == 1 and p:
            p[at] = int(rng.integers(0, 256))
        elif i % 5 == 2:
            p = p[:at]
        elif i % 5 == 3:
            p[at:at] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        else:
            p = rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8).tobytes()
        secs[j].payload = bytes(p)
        data = pack_gsz(header, secs)
        t = time.perf_counter()
        try:
            decode_bytes(data)  # a change can occasionally still decode (e.g. a swapped twin)
        except FormatError as e:
            assert "\n" not in str(e)
        assert time.perf_counter() - t < TIME_LIMIT


@pytest.mark.parametrize("overrides", [["pipeline=compact"], ["pipeline=high", "pipeline.stages.attributes.opacity_step=0",
                                                                "pipeline.stages.attributes.shN_step=0"]])
def test_hostile_payloads_of_other_codecs(tmp_path_factory, overrides):
    """The same for compact's importance-classed, trellis-coded and context-coded streams, and for
    exact float32 planes (step 0); medium's codecs are above."""
    hostile_payloads(_encoded(tmp_path_factory, overrides, 1500, 8), 150, seed=4)


def test_hostile_stage_params_with_valid_checksums(tmp_path_factory):
    """Every stage param of a c3dgs file (masking, R-VQ, hash-grid colour field, ...) set to absurd
    values under valid checksums: the decoder rebuilds its stages from these params, so each must
    be bounded before it sizes anything (a hash grid of 2^40 rows, 10^9 codebooks)."""
    valid = _encoded(tmp_path_factory, ["pipeline=c3dgs", "+pipeline.stages.colorfield.fit_steps=20"], 300, 3)
    header, sections = unpack_gsz(valid)
    stages = header["pipeline"]["stages"]
    assert {"masking", "rvq", "colorfield"} <= {s["type"] for s in stages}
    for i, st in enumerate(stages):
        for key in st:
            if key in ("name", "type"):
                continue
            for bad in (0, -1, 10**9, 2**40, 1e30, "x", None, True, [1]):
                h = json.loads(json.dumps(header))
                h["pipeline"]["stages"][i][key] = bad
                t = time.perf_counter()
                try:
                    decode_bytes(pack_gsz(h, sections))  # some values are valid (e.g. start 0)
                except FormatError as e:
                    assert "\n" not in str(e)
                assert time.perf_counter() - t < TIME_LIMIT, (st["type"], key, bad)


def test_encoder_params_out_of_todays_range_still_decode(tmp_path_factory):
    """A file an older gscomp wrote with, e.g., `rvq.lr=2.0` (its range then was wider) was refused
    ("rvq.lr must be a number in (0, 1]") though decoding reads no such param: it decodes, to the
    same scene; a decoder param out of range (rvq.n_stages) is still a format error."""
    from gscomp.stages.base import STAGES

    valid = _encoded(tmp_path_factory, ["pipeline=c3dgs", "+pipeline.stages.colorfield.fit_steps=20"], 300, 3)
    header, sections = unpack_gsz(valid)
    ref = decode_bytes(valid)
    bad = {"lr": 2.0, "commitment": 150.0, "kmeans_iters": 5000, "lambda_mask": 1e4, "init": 1e3, "grid_lr": 50.0,
           "mlp_lr": 50.0, "lr_final": 2.0, "bits": 20, "fit_steps": -1, "backend": "cuda", "start": -1}
    tried = 0
    for i, st in enumerate(header["pipeline"]["stages"]):
        for key in STAGES[st["type"]].encoder_params:
            if key in bad and key in st:
                h = json.loads(json.dumps(header))
                h["pipeline"]["stages"][i][key] = bad[key]
                got = decode_bytes(pack_gsz(h, sections))
                assert all(np.array_equal(getattr(got, f).numpy(), getattr(ref, f).numpy()) for f in
                           ("means", "quats", "scales", "opacities", "sh0", "shN")), (st["type"], key)
                tried += 1
    assert tried >= 10
    h = json.loads(json.dumps(header))
    rvq = next(s for s in h["pipeline"]["stages"] if s["type"] == "rvq")
    rvq.update(n_stages=99, lr=2.0)
    expect_format_error(pack_gsz(h, sections))


def test_trained_stage_sections_end_where_the_spec_says(tmp_path_factory):
    """Bytes after rvq.indices' last stream, or a colorfield.meta longer than 28 + 8 L, decoded
    without complaint (the spec, and its decoder, refuse both)."""
    from gscomp.stages.base import Section

    valid = _encoded(tmp_path_factory, ["pipeline=c3dgs", "+pipeline.stages.colorfield.fit_steps=20"], 300, 3)
    header, sections = unpack_gsz(valid)
    names = [s.name for s in sections]
    for name in ("rvq/rvq.indices", "colorfield/colorfield.meta"):
        assert name in names, names
        longer = [Section(s.name, s.codec, bytes(s.payload) + b"\0\0") if s.name == name else s for s in sections]
        expect_format_error(pack_gsz(header, longer))


def test_params_the_decoder_does_not_read_are_ignored(valid):
    """The spec: a decoder reads its own params and ignores the others. positions.core,
    attributes.shN_zstd / size_quantile (encoder-only) and params unknown to a stage type made a
    file undecodable; a decoder param out of range still fails."""
    header, sections = unpack_gsz(valid)
    ref = decode_bytes(valid)
    for stage, key, value in (("positions", "core", 0.4), ("positions", "future", 1), ("attributes", "shN_zstd", "x"),
                              ("attributes", "size_quantile", 2), ("attributes", "future_option", [1, 2])):
        h = json.loads(json.dumps(header))
        next(st for st in h["pipeline"]["stages"] if st["type"] == stage)[key] = value
        got = decode_bytes(pack_gsz(h, sections))
        assert all(np.array_equal(getattr(got, f).numpy(), getattr(ref, f).numpy()) for f in
                   ("means", "quats", "scales", "opacities", "sh0", "shN")), (stage, key)
    h = json.loads(json.dumps(header))
    next(st for st in h["pipeline"]["stages"] if st["type"] == "attributes").update(future_option=1, scale_step=-1)
    expect_format_error(pack_gsz(h, sections))
