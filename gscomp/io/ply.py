"""INRIA 3DGS `.ply` reader and writer.

Layout (one ``vertex`` element, binary little-endian float32 when written by us):
``x y z nx ny nz f_dc_0..2 f_rest_0..f_rest_{3K-1} opacity scale_0..2 rot_0..3`` where
``f_rest`` is channel-major (all K red coefficients, then green, then blue: index c*K + k),
``opacity`` is a logit, ``scale_*`` are log scales and ``rot_*`` is a wxyz quaternion.

Reading goes through plyfile (binary of either endianness, or ASCII) and whole-column numpy
operations, so 1M Gaussians load in about a second. Extra properties are ignored, but for
Mip-Splatting's ``filter_3D``, which is fused into scales and opacities (and marks the scene
antialiased, as is a header comment ``gscomp: antialiased``, which the writer puts in for such
scenes: the format has no field for it). A PLY whose
header has a ``chunk`` element is a PlayCanvas compressed PLY and is decoded by
`gscomp.io.compressed_ply` instead.
"""
from __future__ import annotations

import os
import re
import warnings

import numpy as np
from plyfile import PlyData, PlyListProperty

from ..errors import DataWarning, FormatError, GscompError, Note, one_line
from ..splats import Splats
from .common import atomic_open, read_error, build_splats, degree_for_rest, note_degree4, splats_numpy

REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
            "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
_REST = re.compile(r"f_rest_(0|[1-9][0-9]*)$")  # canonical names only (no "f_rest_01")


def read_plydata(path: str | os.PathLike) -> PlyData:
    """Parse any PLY with plyfile; every failure becomes a one-line GscompError/FormatError."""
    try:
        with open(path, "rb") as f:
            magic = f.read(5)
    except OSError as e:
        raise read_error(path, e) from None
    if not (magic.startswith(b"ply\n") or magic == b"ply\r\n"):
        raise FormatError(f"{path}: not a PLY file (missing 'ply' magic line)")
    # plyfile reads a header a character at a time with no end: a file with no 'end_header' took
    # 45 s and 0.8 GB to refuse at 64 MB. One not ended in its first HEADER_SCAN bytes is refused here.
    hint = _header_problem(path)
    if hint:
        raise FormatError(f"{path}: malformed PLY header: {hint}")
    try:
        return _read_plydata(path)
    except (GscompError, MemoryError):
        raise
    except Exception as e:  # plyfile raises several exception types for malformed input
        raise FormatError(f"{path}: malformed PLY ({one_line(e)})") from None


HEADER_SCAN = 16 << 20  # a header is a few KB (long comments: a few MB); plyfile takes ~0.7 s a MB to read one
_END = re.compile(rb"(?:^|\n)end_header\r?(?:\n|$)")
_END_PADDED = re.compile(rb"(?:^|\n)[ \t]*end_header[ \t\r]*(?:\n|$)")


def _header_problem(path) -> str | None:
    """What is wrong with the header's end, found before plyfile reads it (plyfile reads a header
    a character at a time with no end, and on a bad end its message is about decoding body bytes
    as header text)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 20)  # (the first MB, then the rest of the scan only when needed)
            if _END.search(head):
                return None
            if len(head) == 1 << 20:
                head += f.read(HEADER_SCAN - len(head))
                if _END.search(head, (1 << 20) - 16):  # (from a little before the MB: a line cut there)
                    return None
    except OSError:
        return None
    if _END_PADDED.search(head):
        return "its 'end_header' line has more on it than 'end_header' (trailing spaces?)"
    return "no 'end_header' line" + (f" in its first {HEADER_SCAN >> 20} MB" if len(head) == HEADER_SCAN else "")


def _read_plydata(path) -> PlyData:
    """plyfile's header parser, then each binary element without list properties read into
    memory in one ``readinto`` (plyfile's own fast path memory-maps the file instead, and a file
    that another process truncates while the columns are copied out of the map kills the process
    with SIGBUS; without the map it parses vertex by vertex). Other elements, and ASCII files,
    go through plyfile's reader. The header's counts are checked against the file's size before
    anything is allocated."""
    with open(path, "rb") as f:
        ply = PlyData._parse_header(f)
        size = os.fstat(f.fileno()).st_size
        # Elements plyfile reads itself (ASCII, lists) get arrays of their declared count up front:
        # refuse counts the bytes left cannot hold, taking each record at its smallest (binary: its
        # scalars and list lengths, empty lists; ASCII: one character and one separator a value).
        least = 0
        for elt in ply:
            row = (2 * len(elt.properties) if ply.text else
                   sum(np.dtype(p.len_dtype if isinstance(p, PlyListProperty) else p.val_dtype).itemsize
                       for p in elt.properties))
            least += elt.count * row
            if least > size - f.tell():
                raise FormatError(f"{path}: truncated PLY: element '{elt.name}' declares {elt.count} records, "
                                  f"more than the {max(size - f.tell(), 0)} bytes left can hold")
        if ply.text:
            body = f.tell()
            f.seek(0)
            with warnings.catch_warnings():  # plyfile drops the text wrapper it puts around f unclosed
                warnings.simplefilter("ignore", ResourceWarning)
                ply = PlyData.read(f, mmap=False)
            # plyfile reads a record a line and stops at the last: count the lines with more after it
            # (on a file of our own: plyfile's text wrapper closes f)
            records = sum(elt.count for elt in ply)
            with open(path, "rb") as g:
                g.seek(body)
                extra = sum(1 for i, line in enumerate(g) if i >= records and line.strip())
            if extra:
                warnings.warn(_ignored(path, extra, "line"), DataWarning, stacklevel=5)
            return ply
        for elt in ply:
            if any(isinstance(p, PlyListProperty) for p in elt.properties):
                elt._read(f, False, ply.byte_order, False)
                continue
            dtype = elt.dtype(ply.byte_order)
            need = elt.count * dtype.itemsize
            if need > size - f.tell():
                raise FormatError(f"{path}: truncated PLY: element '{elt.name}' declares {elt.count} records "
                                  f"({need} bytes) but {max(size - f.tell(), 0)} bytes are left")
            data = np.empty(elt.count, dtype)
            if f.readinto(memoryview(data.view(np.uint8))) != need:  # shrunk after the size check
                raise FormatError(f"{path}: truncated PLY: the file ended inside element '{elt.name}'")
            elt.data = data
        extra = size - f.tell()
    if extra > 0:  # (the other readers say so too: a cut or edited file, e.g. a count lowered by hand)
        # (stacklevel: the caller of load_splats, past _read_plydata, read_plydata and read_ply)
        warnings.warn(_ignored(path, extra, "byte"), DataWarning, stacklevel=5)
    return ply


def _ignored(path, n: int, unit: str) -> str:
    """The warning for ``n`` lines or bytes after a .ply's last element."""
    return (f"{os.path.basename(path)}: {n:,} {unit}{'' if n == 1 else 's'} after the last element "
            f"{'is' if n == 1 else 'are'} ignored")


def read_ply(path: str | os.PathLike) -> Splats:
    """Read an INRIA 3DGS `.ply` (any SH degree 0..3, binary or ASCII) into float32 Splats.

    PlayCanvas compressed PLYs (with a ``chunk`` element) are detected and decoded too."""
    ply = read_plydata(path)
    names = [e.name for e in ply.elements]
    if "chunk" in names:
        from .compressed_ply import splats_from_plydata

        return splats_from_plydata(ply, path)
    return splats_from_inria_plydata(ply, path)


def splats_from_inria_plydata(ply: PlyData, path) -> Splats:
    names = [e.name for e in ply.elements]
    if "vertex" not in names:
        raise FormatError(f"{path}: no 'vertex' element (found: {', '.join(names) or 'none'})")
    vertex = ply["vertex"]
    props = {p.name: p for p in vertex.properties}
    for name in REQUIRED:
        if name not in props:
            flat = name == "scale_2" and "scale_1" in props  # 2DGS: surfels, two scales
            raise FormatError(f"{path}: missing property '{name}' in element 'vertex'"
                              + (" (two scales: a 2D Gaussian Splatting file, which gscomp does not read)" if flat else ""))
    rest_idx = sorted(int(m.group(1)) for n in props if (m := _REST.match(n)))
    n_rest = len(rest_idx)
    if rest_idx != list(range(n_rest)):
        missing = next(i for i, j in enumerate(rest_idx) if i != j)  # (sorted and distinct)
        raise FormatError(f"{path}: f_rest properties are not contiguous (missing 'f_rest_{missing}')")
    if n_rest % 3:
        raise FormatError(f"{path}: {n_rest} f_rest properties is not a multiple of 3 (expected 0, 9, 24, 45 or 72)")
    k = n_rest // 3
    kk = k  # coefficients per channel kept
    if k == 24:
        note_degree4(path)
        kk = 15
    degree_for_rest(path, kk)
    wanted = list(REQUIRED) + [f"f_rest_{c * k + j}" for c in range(3) for j in range(kk)]
    for name in wanted:
        if isinstance(props[name], PlyListProperty):
            raise FormatError(f"{path}: property '{name}' in element 'vertex' is a list, expected a scalar")

    data = vertex.data
    n = len(data)
    dt = data.dtype
    if all(dt.fields[f][0] == np.dtype("<f4") for f in dt.names) and dt.itemsize == 4 * len(dt.names):
        # Fast path (every INRIA file): view the records as an (N, P) float32 matrix and gather each
        # field's columns in one pass (exact copies), straight into the arrays the Splats keep: one
        # matrix of all columns first, then the fields, took ~3x the file's size at the peak.
        flat = np.asarray(data).view("<f4").reshape(n, len(dt.names))

        def take(names: list[str]) -> np.ndarray:
            return np.take(flat, [dt.names.index(nm) for nm in names], axis=1)  # (C-contiguous, owns its data)
    else:
        def take(names: list[str]) -> np.ndarray:
            out = np.empty((n, len(names)), dtype=np.float32)
            with np.errstate(over="ignore", invalid="ignore"):
                for j, name in enumerate(names):
                    out[:, j] = data[name]
                    # a finite double past float32's range became inf: say so (not "non-finite")
                    over = np.isinf(out[:, j]) & np.isfinite(data[name])
                    if over.any():
                        i = int(np.flatnonzero(over)[0])
                        raise FormatError(f"{path}: property '{name}' of Gaussian {i} is {float(data[name][i]):g}, "
                                          "beyond float32's range")
            return out
    cols = take(list(REQUIRED))
    means = cols[:, 0:3]
    sh0 = cols[:, 3:6]
    opac = cols[:, 6]
    scales = cols[:, 7:10]
    # Mip-Splatting (whose files carry filter_3D) renders with its 2D filter's opacity factor: the
    # antialiased mode (whose 0.3 px^2 filter is gsplat's; Mip-Splatting's own is 0.1); gscomp's own
    # files say so in a comment (the format has no field for it), which plyfile files under the
    # element when it follows an element line
    aa = "filter_3D" in props or any(c.strip() == AA_COMMENT or c.strip().startswith(AA_COMMENT + " ")
                                     for c in [*ply.comments, *vertex.comments])
    if "filter_3D" in props:
        if isinstance(props["filter_3D"], PlyListProperty):
            raise FormatError(f"{path}: property 'filter_3D' in element 'vertex' is a list, expected a scalar")
        scales, opac = fuse_filter_3d(path, scales, opac, np.asarray(data["filter_3D"], np.float64))
    quats = cols[:, 10:14]
    # channel-major f_rest (c*K + k) gathered as (N, K, 3) (of degree 4's K = 24, the first 15 are kept)
    shN = take([f"f_rest_{c * k + j}" for j in range(kk) for c in range(3)]).reshape(n, kk, 3)
    return build_splats(path, means, quats, scales, opac, sh0, shN, antialiased=aa)


def fuse_filter_3d(path, log_scales: np.ndarray, opac: np.ndarray, filt: np.ndarray):
    """Mip-Splatting's PLYs (and Gaussian Opacity Fields') carry a 3D smoothing filter per Gaussian,
    ``filter_3D`` (a standard deviation f), that its renderer applies to every Gaussian: scales
    sqrt(s^2 + f^2) and opacity alpha * sqrt(prod s^2 / prod (s^2 + f^2)). Its ``save_fused_ply``
    bakes that in for ordinary viewers; so does this (rows with f = 0 stay bit-exact), with a note,
    since read as they are the Gaussians would render up to many times too thin and too opaque."""
    hit = filt != 0
    if not np.isfinite(filt).all():
        i = int(np.flatnonzero(~np.isfinite(filt))[0])
        raise FormatError(f"{path}: property 'filter_3D' of Gaussian {i} is {filt[i]:g}")
    if not hit.any():
        return log_scales, opac
    ls = log_scales[hit].astype(np.float64)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):  # (non-finite inputs: refused later)
        fused = 0.5 * np.logaddexp(2 * ls, 2 * np.log(np.abs(filt[hit]))[:, None])  # log sqrt(s^2 + f^2)
        log_coef = (ls - fused).sum(1)  # log sqrt(prod s^2 / prod (s^2 + f^2)) <= 0
        o = opac[hit].astype(np.float64)
        log_a = -np.logaddexp(0.0, -o) + log_coef  # log alpha
        logit = log_a - np.log(-np.expm1(log_a))
    log_scales, opac = log_scales.copy(), opac.copy()
    log_scales[hit] = fused
    opac[hit] = logit  # (a NaN logit stays NaN: refused by build_splats)
    k = int(hit.sum())
    warnings.warn(f"{path}: Mip-Splatting's 3D filter (filter_3D) of {k:,} Gaussian{'' if k == 1 else 's'} is fused into "
                  "scales and opacities, as its save_fused_ply does (and, as its 2D filter asks, the scene renders "
                  "antialiased)", Note, stacklevel=4)
    return log_scales, opac


def ply_property_names(sh_degree: int) -> list[str]:
    k = (sh_degree + 1) ** 2 - 1
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(3 * k)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def write_ply(path: str | os.PathLike, splats: Splats) -> None:
    """Write the standard INRIA binary little-endian float32 `.ply` atomically."""
    a = splats_numpy(splats)
    n, k = a["shN"].shape[0], a["shN"].shape[1]
    names = ply_property_names(splats.sh_degree)
    header = ["ply", "format binary_little_endian 1.0"]
    if splats.antialiased:
        header.append(f"comment {AA_COMMENT} (render with gsplat's rasterize_mode=\"antialiased\")")
    header.append(f"element vertex {n}")
    header += [f"property float {name}" for name in names]
    header.append("end_header\n")
    # Rows go out in blocks through one reused buffer: a (n, 62) float32 copy of a 3M-Gaussian
    # scene is 0.7 GB of fresh pages, whose first touch cost more than the copying itself.
    rows = max(1, WRITE_BLOCK // (4 * len(names)))
    buf = np.empty((min(n, rows), len(names)), dtype="<f4")
    buf[:, 3:6] = 0  # nx ny nz: unused by 3DGS, kept for compatibility with INRIA tools
    o = 9 + 3 * k
    with atomic_open(path) as f:
        f.write("\n".join(header).encode("ascii"))
        for i in range(0, n, rows):
            j = min(n, i + rows)
            b = buf[:j - i]
            b[:, 0:3] = a["means"][i:j]
            b[:, 6:9] = a["sh0"][i:j, 0, :]
            for c in range(3):  # channel-major f_rest (c*K + k)
                b[:, 9 + c * k:9 + (c + 1) * k] = a["shN"][i:j, :, c]
            b[:, o] = a["opacities"][i:j]
            b[:, o + 1:o + 4] = a["scales"][i:j]
            b[:, o + 4:o + 8] = a["quats"][i:j]
            f.write(memoryview(b.reshape(-1)).cast("B"))


WRITE_BLOCK = 32 << 20  # bytes of rows per write (see write_ply)
AA_COMMENT = "gscomp: antialiased"  # the header comment that marks a scene made for the antialiased mode


__all__ = ["read_ply", "write_ply", "read_plydata", "ply_property_names"]
