"""Hostile inputs: every truncated, bit-flipped, oversized-count or foreign file must give a clean
FormatError quickly (no crash, hang or huge allocation)."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import yaml

from conftest import ROOT
from gscomp import FormatError
from gscomp.codec import decode_bytes, encode_gsz
from gscomp.codec.container import pack_gsz, unpack_gsz

TIME_LIMIT = 2.0  # seconds per hostile input (a valid decode of this file takes ~10 ms)


@pytest.fixture(scope="module")
def valid(tmp_path_factory, request):
    from gscomp import Splats
    import torch

    g = torch.Generator().manual_seed(0)
    n = 300
    s = Splats(
        means=torch.randn(n, 3, generator=g),
        quats=torch.randn(n, 4, generator=g),
        scales=torch.randn(n, 3, generator=g) * 0.3 - 2,
        opacities=torch.randn(n, generator=g),
        sh0=torch.randn(n, 1, 3, generator=g),
        shN=torch.randn(n, 3, 3, generator=g) * 0.1,
    )
    cfg = yaml.safe_load((ROOT / "configs" / "pipeline" / "medium.yaml").read_text())
    p = tmp_path_factory.mktemp("fuzz") / "v.gsz"
    encode_gsz(s, p, cfg)
    data = p.read_bytes()
    decode_bytes(data)  # sanity: the pristine file decodes
    return data


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
    # payloads swapped between sections, or with random bytes, under valid checksums
    rng = np.random.default_rng(3)
    from gscomp.stages.base import Section

    for i in range(60):
        secs = [Section(s.name, s.codec, s.payload) for s in sections]
        j = int(rng.integers(0, len(secs)))
        if i % 3 == 0:
            k = int(rng.integers(0, len(secs)))
            secs[j].payload = sections[k].payload
        elif i % 3 == 1:
            p = bytearray(secs[j].payload)
            if p:
                p[int(rng.integers(0, len(p)))] = int(rng.integers(0, 256))
            secs[j].payload = bytes(p)
        else:
            secs[j].payload = rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8).tobytes()
        data = pack_gsz(header, secs)
        t = time.perf_counter()
        try:
            decode_bytes(data)  # a change can occasionally still decode (e.g. a swapped twin)
        except FormatError as e:
            assert "\n" not in str(e)
        assert time.perf_counter() - t < TIME_LIMIT
