// Native rANS coder for .gsz streams, byte-compatible with constriction's
// `constriction.stream.stack.AnsCoder` (u32 words, u64 state, 24-bit precision) on categorical
// models given as integer weight tables (W_i >= 1, sum == 2^24), plus batched entry points that
// code many independent streams at once on all cores (OpenMP, GIL released).
//
// The conventions, mirrored from constriction's stack coder (src/stream/stack.rs):
//   * an empty coder has state 0 and no words;
//   * encode(s): if (state >> 40) >= W_s, push the low 32 bits of state and shift it right by 32;
//                then state = (state / W_s) << 24 | (C_s + state % W_s);
//   * finishing appends the state's words low word first, dropping leading zero words (state 0
//     appends nothing, state < 2^32 one word), so the last word is never zero;
//   * a decoder reads words from the end: state = last word, then (if any) << 32 | next-to-last;
//   * decode: q = state mod 2^24, s with C_s <= q < C_{s+1}, state = (state >> 24) * W_s + q - C_s;
//                if state < 2^32 and words remain, state = state << 32 | next word (from the end);
//   * a stream is consumed exactly when the state is 0 (we also require every word to be read).
// Symbols are encoded in reverse order (groups last to first), so they decode in list order.
//
// Safety: tables are validated (every weight >= 1, sum == 2^24, alphabet >= 2) before use, symbol
// indices are range-checked when encoding, the decoder never reads outside the word array and
// decodes exactly the requested count, so corrupt input yields an error string, never a crash.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <memory>
#include <cmath>
#include <string_view>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

namespace {

constexpr int PRECISION = 24;
constexpr uint64_t TOTAL = uint64_t(1) << PRECISION;
constexpr uint64_t QMASK = TOTAL - 1;
constexpr uint64_t LOW = uint64_t(1) << 32;  // state >= LOW whenever words remain (invariant)
constexpr size_t HIST_K = 4;  // streams decoded side by side in one thread

// Jobs grouped into batches of up to HIST_K streams of equal length (sorted by length, stable), so a
// thread can code a batch's streams side by side in one loop.
template <class LengthOf>
static std::vector<std::vector<int64_t>> batch_by_length(int64_t nj, LengthOf length_of) {
  std::vector<int64_t> order(nj);
  for (int64_t j = 0; j < nj; ++j) order[j] = j;
  std::stable_sort(order.begin(), order.end(), [&](int64_t p, int64_t q) { return length_of(p) < length_of(q); });
  std::vector<std::vector<int64_t>> batches;
  for (int64_t j : order) {
    if (batches.empty() || (int64_t)batches.back().size() == (int64_t)HIST_K || length_of(batches.back()[0]) != length_of(j))
      batches.emplace_back();
    batches.back().push_back(j);
  }
  return batches;
}
constexpr int64_t MAX_ALPHABET = int64_t(1) << 16;  // symbol ids fit the uint16 bucket table

using i32arr = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
using u32arr = py::array_t<uint32_t, py::array::c_style | py::array::forcecast>;
using i64arr = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

// A caller-provided output array, written in place: it must already have the exact dtype, be
// contiguous and writable (a converting cast would silently write into a temporary copy).
template <typename T>
T* out_ptr(py::handle h, py::array* keep, const char* what) {
  if (!py::isinstance<py::array_t<T, 0>>(h)) throw py::type_error(std::string(what) + ": out has the wrong type");
  *keep = py::reinterpret_borrow<py::array>(h);
  if (!(keep->flags() & py::array::c_style) || !keep->writeable())
    throw py::value_error(std::string(what) + ": out must be contiguous and writable");
  return static_cast<T*>(keep->mutable_data());
}

// ----------------------------------------------------------------------------- models
// One categorical model: per-symbol (cumulative, weight) pairs and, for decoding, a bucket table
// that maps the top `bits` bits of a quantile to the first symbol that can hold it. When every
// cumulative value is a multiple of the bucket width (e.g. 16-bit tables scaled to 24 bits with a
// 2^16-entry table) the bucket IS the symbol and the decoder skips the forward search.
struct Sym {
  uint32_t cdf, freq;
};

struct Model {
  int64_t a = 0;
  std::vector<Sym> sym;       // a entries
  std::vector<uint32_t> cdf;  // a + 1 entries (cdf[a] = 2^24)
  std::vector<uint16_t> bucket;
  int shift = 0;
  bool exact = false;

  // Returns an error message, or "" when the table is usable.
  std::string build(const uint32_t* w, int64_t size) {
    a = size;
    if (a < 2 || a > MAX_ALPHABET) return "rANS table has " + std::to_string(a) + " entries (needs 2..65536)";
    sym.resize(a);
    cdf.resize(a + 1);
    uint64_t acc = 0;
    for (int64_t i = 0; i < a; ++i) {
      if (w[i] == 0 || w[i] > TOTAL) return "rANS table has an invalid weight";
      cdf[i] = (uint32_t)acc;
      sym[i] = {(uint32_t)acc, w[i]};
      acc += w[i];
      if (acc > TOTAL) return "rANS table does not sum to 2^24";
    }
    if (acc != TOTAL) return "rANS table does not sum to 2^24";
    cdf[a] = (uint32_t)TOTAL;
    return "";
  }

  // Bucket table sized to the work: 2^bits entries with bits ~ log2(count), at most 16, so small
  // groups do not pay for a large table.
  void build_lookup(int64_t count) {
    int tz = PRECISION;  // common trailing zero bits of all cumulative values
    for (int64_t i = 1; i < a; ++i) tz = std::min(tz, __builtin_ctz(cdf[i]));
    int exact_bits = PRECISION - tz;
    int bits = 4;
    while (bits < 16 && (int64_t(1) << bits) < count) ++bits;
    bits = std::min(bits, exact_bits);
    exact = bits == exact_bits;
    shift = PRECISION - bits;
    bucket.resize(size_t(1) << bits);
    int64_t s = 0;
    for (size_t b = 0; b < bucket.size(); ++b) {
      uint64_t q = uint64_t(b) << shift;
      while (cdf[s + 1] <= q) ++s;
      bucket[b] = (uint16_t)s;
    }
  }

  template <bool Exact>
  inline uint32_t find(uint32_t q) const {
    uint32_t s = bucket[q >> shift];
    if (!Exact)
      while (cdf[s + 1] <= q) ++s;
    return s;
  }
};

// ----------------------------------------------------------------------------- encoder
struct Encoder {
  std::vector<uint32_t> words;
  uint64_t state = 0;

  inline void put(uint32_t c, uint32_t p) {
    if ((state >> (64 - PRECISION)) >= p) {
      words.push_back((uint32_t)state);
      state >>= 32;
    }
    state = ((state / p) << PRECISION) | (c + state % p);
  }

  // Symbols idx[0..n) are pushed last to first, so they decode first to last.
  std::string encode_reverse(const int32_t* idx, int64_t n, const Model& m) {
    for (int64_t i = n - 1; i >= 0; --i) {
      int32_t s = idx[i];
      if (s < 0 || s >= m.a) return "symbol " + std::to_string(s) + " outside the rANS table";
      put(m.sym[s].cdf, m.sym[s].freq);
    }
    return "";
  }

  void finish() {
    if (state == 0) return;
    words.push_back((uint32_t)state);
    if (state >> 32) words.push_back((uint32_t)(state >> 32));
  }
};

// ----------------------------------------------------------------------------- decoder
struct Decoder {
  const uint32_t* words = nullptr;
  int64_t pos = 0;  // words[0..pos) are still unread (read from the end)
  uint64_t state = 0;

  std::string init(const uint32_t* w, int64_t n) {
    words = w;
    pos = n;
    state = 0;
    if (n == 0) return "";
    if (w[n - 1] == 0) return "rANS stream ends in a zero word";
    state = w[--pos];
    if (pos > 0) state = (state << 32) | w[--pos];
    return "";
  }

  template <bool Exact = false>
  inline uint32_t get(const Model& m) {
    uint32_t q = (uint32_t)(state & QMASK);
    uint32_t s = m.find<Exact>(q);
    const Sym e = m.sym[s];
    state = (state >> PRECISION) * e.freq + (q - e.cdf);
    if (state < LOW && pos > 0) state = (state << 32) | words[--pos];
    return s;
  }

  bool finished() const { return state == 0 && pos == 0; }
};

int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// The coded words of each encode job (a struct with `out` words and `err`), as uint32 arrays;
// raises the first job's error.
template <class Job>
py::list words_result(const std::vector<Job>& jobs) {
  py::list result;
  for (auto& job : jobs) {
    if (!job.err.empty()) throw py::value_error(job.err);
    u32arr a((py::ssize_t)job.out.size());
    std::copy(job.out.begin(), job.out.end(), a.mutable_data());
    result.append(a);
  }
  return result;
}

// ----------------------------------------------------------------------------- batched encode
// streams: list of streams; a stream is a list of (symbol indices int32, weights uint32) groups.
// Groups with no symbols or a one-entry table are skipped (they cost nothing, as in the Python
// layer). Returns one uint32 word array per stream.
py::list encode_many(py::list streams) {
  struct Job {
    std::vector<i32arr> idx;
    std::vector<u32arr> w;
    std::vector<uint32_t> out;
    std::string err;
  };
  std::vector<Job> jobs(py::len(streams));
  for (size_t j = 0; j < jobs.size(); ++j) {
    for (auto g : py::reinterpret_borrow<py::list>(streams[j])) {
      auto t = py::reinterpret_borrow<py::tuple>(g);
      if (t.size() != 2) throw py::value_error("encode_many: a group is (indices, weights)");
      i32arr idx = t[0].cast<i32arr>();
      u32arr w = t[1].cast<u32arr>();
      if (idx.size() == 0 || w.size() < 2) continue;
      jobs[j].idx.push_back(idx);
      jobs[j].w.push_back(w);
    }
  }
  {
    py::gil_scoped_release nogil;
    int64_t nj = (int64_t)jobs.size();
#pragma omp parallel for schedule(dynamic, 1) if (nj > 1)
    for (int64_t j = 0; j < nj; ++j) {
      Job& job = jobs[j];
      Encoder enc;
      int64_t total = 0;
      for (auto& a : job.idx) total += a.size();
      enc.words.reserve(size_t(total / 2 + 4));
      for (int64_t g = (int64_t)job.idx.size() - 1; g >= 0 && job.err.empty(); --g) {
        Model m;
        job.err = m.build(job.w[g].data(), job.w[g].size());
        if (job.err.empty()) job.err = enc.encode_reverse(job.idx[g].data(), job.idx[g].size(), m);
      }
      enc.finish();
      job.out.swap(enc.words);
    }
  }
  return words_result(jobs);
}

// ----------------------------------------------------------------------------- batched decode
// jobs: list of (words uint32, [(weights uint32, count)], out int32 of sum(count) entries).
// Groups are decoded in list order into consecutive slices of `out`; groups with a one-entry
// table decode as zeros without touching the stream. Returns one error string per job ("" = ok;
// the stream must be consumed exactly).
std::vector<std::string> decode_many(py::list jobs_in) {
  struct Job {
    u32arr words;
    std::vector<u32arr> w;
    std::vector<int64_t> count;
    py::array out;
    int32_t* dst = nullptr;
    std::string err;
  };
  std::vector<Job> jobs(py::len(jobs_in));
  for (size_t j = 0; j < jobs.size(); ++j) {
    auto t = py::reinterpret_borrow<py::tuple>(jobs_in[j]);
    if (t.size() != 3) throw py::value_error("decode_many: a job is (words, groups, out)");
    Job& job = jobs[j];
    job.words = t[0].cast<u32arr>();
    int64_t total = 0;
    for (auto g : py::reinterpret_borrow<py::list>(t[1])) {
      auto gt = py::reinterpret_borrow<py::tuple>(g);
      job.w.push_back(gt[0].cast<u32arr>());
      int64_t c = gt[1].cast<int64_t>();
      if (c < 0) throw py::value_error("decode_many: negative count");
      job.count.push_back(c);
      total += c;
    }
    job.dst = out_ptr<int32_t>(t[2], &job.out, "decode_many");
    if (job.out.size() != total) throw py::value_error("decode_many: out size differs from the total count");
  }
  {
    py::gil_scoped_release nogil;
    int64_t nj = (int64_t)jobs.size();
#pragma omp parallel for schedule(dynamic, 1) if (nj > 1)
    for (int64_t j = 0; j < nj; ++j) {
      Job& job = jobs[j];
      Decoder dec;
      job.err = dec.init(job.words.data(), job.words.size());
      int32_t* dst = job.dst;
      for (size_t g = 0; g < job.w.size() && job.err.empty(); ++g) {
        int64_t c = job.count[g];
        if (job.w[g].size() < 2) {
          std::fill(dst, dst + c, 0);
        } else if (c > 0) {
          Model m;
          job.err = m.build(job.w[g].data(), job.w[g].size());
          if (!job.err.empty()) break;
          m.build_lookup(c);
          if (m.exact)
            for (int64_t i = 0; i < c; ++i) dst[i] = (int32_t)dec.get<true>(m);
          else
            for (int64_t i = 0; i < c; ++i) dst[i] = (int32_t)dec.get<false>(m);
        }
        dst += c;
      }
      if (job.err.empty() && !dec.finished()) job.err = "rANS stream has trailing data (corrupt)";
    }
  }
  std::vector<std::string> errs;
  for (auto& job : jobs) errs.push_back(job.err);
  return errs;
}

// Where decoded histogram ranks go: values[rank], optionally prefix-summed, into int64 `dst` or,
// dequantized as float32(value * scale) (float64 product, one rounding), into a strided column.
struct HistOut {
  const int64_t* val;
  bool delta;
  int64_t* dst;
  char* fdst;
  py::ssize_t fstride;
  double scale;
};

template <bool Exact, int K>
void hist_multi(Decoder* const* dec, const Model* const* m, const HistOut* const* o, int64_t n) {
  Decoder d[K];  // local copies: the states stay in registers
  uint64_t acc[K] = {};  // unsigned prefix sums: wrap like numpy instead of undefined behaviour
  for (int k = 0; k < K; ++k) d[k] = *dec[k];
  for (int64_t i = 0; i < n; ++i) {
    for (int k = 0; k < K; ++k) {
      const HistOut& q = *o[k];
      int64_t v = q.val[d[k].template get<Exact>(*m[k])];
      if (q.delta) v = (int64_t)(acc[k] += (uint64_t)v);
      if (q.fdst)
        *reinterpret_cast<float*>(q.fdst + i * q.fstride) = (float)((double)v * q.scale);
      else
        q.dst[i] = v;
    }
  }
  for (int k = 0; k < K; ++k) *dec[k] = d[k];
}

// Histogram streams in one go: jobs are (words, weights, values int64, delta, out int64). Each
// decoded rank r becomes values[r]; with delta the outputs are then prefix-summed (wrapping int64
// arithmetic, like numpy's cumsum). Saves the int32 buffer, the gather and the cumsum passes.
std::vector<std::string> decode_hist_many(py::list jobs_in) {
  struct Job {
    u32arr words, w;
    i64arr values;
    bool delta = false;
    py::array out;
    int64_t* dst = nullptr;
    char* fdst = nullptr;  // float32 output (any stride) when dequantizing
    py::ssize_t fstride = 0;
    double scale = 0.0;
    int64_t n = 0;
    std::string err;
  };
  std::vector<Job> jobs(py::len(jobs_in));
  for (size_t j = 0; j < jobs.size(); ++j) {
    auto t = py::reinterpret_borrow<py::tuple>(jobs_in[j]);
    if (t.size() != 6) throw py::value_error("decode_hist_many: a job is (words, weights, values, delta, out, scale)");
    Job& job = jobs[j];
    job.words = t[0].cast<u32arr>();
    job.w = t[1].cast<u32arr>();
    job.values = t[2].cast<i64arr>();
    job.delta = t[3].cast<bool>();
    if (t[5].is_none()) {
      job.dst = out_ptr<int64_t>(t[4], &job.out, "decode_hist_many");
    } else {  // float32 column, possibly strided (a column of an (n, k) array)
      if (!py::isinstance<py::array_t<float, 0>>(t[4])) throw py::type_error("decode_hist_many: out must be float32");
      job.out = py::reinterpret_borrow<py::array>(t[4]);
      if (job.out.ndim() != 1 || !job.out.writeable()) throw py::value_error("decode_hist_many: out must be a writable 1-D array");
      job.fdst = static_cast<char*>(job.out.mutable_data());
      job.fstride = job.out.strides(0);
      job.scale = t[5].cast<double>();
    }
    if (job.values.size() != job.w.size()) throw py::value_error("decode_hist_many: values and weights differ in length");
    job.n = job.out.size();
  }
  {
    py::gil_scoped_release nogil;
    int64_t nj = (int64_t)jobs.size();
    // Batches of up to HIST_K streams with the same length are decoded interleaved in one thread:
    // each stream is one long dependency chain (table lookups), so running several side by side
    // keeps the core busy; batches are spread over the threads.
    auto batches = batch_by_length(nj, [&](int64_t j) { return jobs[j].n; });
    int64_t nb = (int64_t)batches.size();
#pragma omp parallel for schedule(dynamic, 1) if (nb > 1)
    for (int64_t b = 0; b < nb; ++b) {
      Decoder dec[HIST_K];
      Model m[HIST_K];
      HistOut o[HIST_K];
      int ok[HIST_K], nok = 0;
      for (size_t k = 0; k < batches[b].size(); ++k) {
        Job& job = jobs[batches[b][k]];
        job.err = dec[k].init(job.words.data(), job.words.size());
        if (job.err.empty()) job.err = m[k].build(job.w.data(), job.w.size());
        if (!job.err.empty()) continue;
        m[k].build_lookup(job.n);
        o[k] = HistOut{job.values.data(), job.delta, job.dst, job.fdst, job.fstride, job.scale};
        ok[nok++] = (int)k;
      }
      int64_t n = jobs[batches[b][0]].n;
      int done = 0;
      while (done < nok) {  // interleave 4, then 2, then 1 streams whose tables agree on exactness
        int k0 = ok[done];
        bool ex = m[k0].exact;
        int same = 1;
        while (done + same < nok && same < HIST_K && m[ok[done + same]].exact == ex) ++same;
        int take = same >= 4 ? 4 : same >= 2 ? 2 : 1;
        Decoder* d[4];
        const Model* mm[4];
        const HistOut* oo[4];
        for (int t = 0; t < take; ++t) {
          d[t] = &dec[ok[done + t]];
          mm[t] = &m[ok[done + t]];
          oo[t] = &o[ok[done + t]];
        }
        if (take == 4)
          ex ? hist_multi<true, 4>(d, mm, oo, n) : hist_multi<false, 4>(d, mm, oo, n);
        else if (take == 2)
          ex ? hist_multi<true, 2>(d, mm, oo, n) : hist_multi<false, 2>(d, mm, oo, n);
        else
          ex ? hist_multi<true, 1>(d, mm, oo, n) : hist_multi<false, 1>(d, mm, oo, n);
        done += take;
      }
      for (int t = 0; t < nok; ++t)
        if (!dec[ok[t]].finished()) jobs[batches[b][ok[t]]].err = "rANS stream has trailing data (corrupt)";
    }
  }
  std::vector<std::string> errs;
  for (auto& job : jobs) errs.push_back(job.err);
  return errs;
}

// Incremental decoder over one stream for callers that pick each group's table as they go
// (conditional models): mirrors constriction's AnsCoder(words).decode(model, n) / is_empty().
class StreamDecoder {
 public:
  explicit StreamDecoder(u32arr words) : words_(words) {
    std::string err = dec_.init(words_.data(), words_.size());
    if (!err.empty()) throw py::value_error(err);
  }

  py::array_t<int32_t> decode(u32arr w, int64_t n) {
    if (n < 0) throw py::value_error("negative count");
    py::array_t<int32_t> out((py::ssize_t)n);
    int32_t* dst = out.mutable_data();
    if (w.size() < 2) {
      std::fill(dst, dst + n, 0);
      return out;
    }
    Model m;
    std::string err = m.build(w.data(), w.size());
    if (!err.empty()) throw py::value_error(err);
    {
      py::gil_scoped_release nogil;
      m.build_lookup(n);
      if (m.exact)
        for (int64_t i = 0; i < n; ++i) dst[i] = (int32_t)dec_.get<true>(m);
      else
        for (int64_t i = 0; i < n; ++i) dst[i] = (int32_t)dec_.get<false>(m);
    }
    return out;
  }

  bool finished() const { return dec_.finished(); }

 private:
  u32arr words_;  // keeps the buffer alive
  Decoder dec_;
};

// ----------------------------------------------------------------------------- symbol analysis
// A 1-D int64 input read in place, any stride (e.g. a column of an (n, k) array: no copy); other
// inputs are converted once.
struct I64View {
  py::array keep;
  const int64_t* p = nullptr;
  int64_t stride = 1, n = 0;

  explicit I64View(py::handle h) {
    if (py::isinstance<py::array_t<int64_t, 0>>(h) && py::reinterpret_borrow<py::array>(h).ndim() == 1 &&
        py::reinterpret_borrow<py::array>(h).strides(0) % (py::ssize_t)sizeof(int64_t) == 0) {
      keep = py::reinterpret_borrow<py::array>(h);
      stride = keep.strides(0) / (py::ssize_t)sizeof(int64_t);
    } else {
      keep = i64arr::ensure(h);
      if (!keep) throw py::error_already_set();
      if (keep.ndim() != 1) keep = keep.attr("ravel")();
      stride = 1;
    }
    p = static_cast<const int64_t*>(keep.data());
    n = keep.size();
  }
  I64View() = default;
  inline int64_t operator[](int64_t i) const { return p[i * stride]; }
};

// For each int64 array x: (lo, hi, dlo, dhi, counts of x - lo, counts of d - dlo) where d is the
// first difference (d_0 = x_0); a count array is None when its range is >= `max_range` (the
// caller then uses its own estimate) and the d items are None unless `with_delta`. One pass for
// the ranges, one for both histograms, all arrays in parallel: this replaces numpy's min, max,
// diff and two bincounts per column.
py::list analyze_many(py::list arrays, bool with_delta, int64_t max_range) {
  struct Job {
    I64View x;
    int64_t lo = 0, hi = 0, dlo = 0, dhi = 0;
    std::vector<int64_t> cx, cd;
    bool has_cx = false, has_cd = false;
  };
  std::vector<Job> jobs(py::len(arrays));
  for (size_t j = 0; j < jobs.size(); ++j) jobs[j].x = I64View(arrays[j]);
  {
    py::gil_scoped_release nogil;
    int64_t nj = (int64_t)jobs.size();
#pragma omp parallel for schedule(dynamic, 1) if (nj > 1)
    for (int64_t j = 0; j < nj; ++j) {
      Job& job = jobs[j];
      const I64View& x = job.x;
      int64_t n = x.n;
      if (n == 0) continue;
      int64_t lo = x[0], hi = x[0], dlo = x[0], dhi = x[0];
      for (int64_t i = 1; i < n; ++i) {
        int64_t v = x[i], d = (int64_t)((uint64_t)v - (uint64_t)x[i - 1]);  // wraps, never UB
        lo = std::min(lo, v);
        hi = std::max(hi, v);
        dlo = std::min(dlo, d);
        dhi = std::max(dhi, d);
      }
      job.lo = lo, job.hi = hi, job.dlo = dlo, job.dhi = dhi;
      // ranges as unsigned: |x| < 2^40 is checked by the caller, but never overflow here
      job.has_cx = (uint64_t)hi - (uint64_t)lo < (uint64_t)max_range;
      job.has_cd = with_delta && (uint64_t)dhi - (uint64_t)dlo < (uint64_t)max_range;
      if (job.has_cx) job.cx.assign(size_t(hi - lo + 1), 0);
      if (job.has_cd) job.cd.assign(size_t(dhi - dlo + 1), 0);
      if (job.has_cx && job.has_cd) {
        int64_t prev = 0;
        for (int64_t i = 0; i < n; ++i) {
          ++job.cx[(uint64_t)x[i] - (uint64_t)lo];
          ++job.cd[(uint64_t)x[i] - (uint64_t)prev - (uint64_t)dlo];
          prev = x[i];
        }
      } else if (job.has_cx) {
        for (int64_t i = 0; i < n; ++i) ++job.cx[(uint64_t)x[i] - (uint64_t)lo];
      } else if (job.has_cd) {
        int64_t prev = 0;
        for (int64_t i = 0; i < n; ++i) {
          ++job.cd[(uint64_t)x[i] - (uint64_t)prev - (uint64_t)dlo];
          prev = x[i];
        }
      }
    }
  }
  auto to_np = [](const std::vector<int64_t>& v) {
    py::array_t<int64_t> a((py::ssize_t)v.size());
    std::copy(v.begin(), v.end(), a.mutable_data());
    return a;
  };
  py::list out;
  for (auto& job : jobs) {
    py::object cx = job.has_cx ? py::object(to_np(job.cx)) : py::object(py::none());
    py::object cd = job.has_cd ? py::object(to_np(job.cd)) : py::object(py::none());
    out.append(py::make_tuple(job.lo, job.hi, job.dlo, job.dhi, cx, cd));
  }
  return out;
}

// One histogram stream to encode: symbol i is rank[v_i - lo], v = x or its first differences.
struct HistEnc {
  const I64View* x;
  bool delta;
  int64_t lo;
  const int32_t* rank;
  uint64_t a;
  const Model* m;
};

// Encode K equal-length histogram streams side by side (last symbol first); false when a value
// has no table entry (the outputs are then meaningless).
template <int K>
bool hist_encode(const HistEnc* const* h, Encoder* const* enc, int64_t n) {
  uint64_t st[K];
  for (int k = 0; k < K; ++k) st[k] = enc[k]->state;
  bool good = true;
  for (int64_t i = n - 1; i >= 0 && good; --i) {
    for (int k = 0; k < K; ++k) {
      const HistEnc& e = *h[k];
      const I64View& x = *e.x;
      uint64_t v = e.delta ? (uint64_t)x[i] - (uint64_t)(i ? x[i - 1] : 0) : (uint64_t)x[i];
      uint64_t u = v - (uint64_t)e.lo;
      int32_t s = u < e.a ? e.rank[u] : -1;
      if (s < 0 || s >= e.m->a) {
        good = false;
        s = 0;
      }
      const Sym y = e.m->sym[s];
      if ((st[k] >> (64 - PRECISION)) >= y.freq) {
        enc[k]->words.push_back((uint32_t)st[k]);
        st[k] >>= 32;
      }
      st[k] = ((st[k] / y.freq) << PRECISION) | (y.cdf + st[k] % y.freq);
    }
  }
  for (int k = 0; k < K; ++k) enc[k]->state = st[k];
  return good;
}

// Histogram streams straight from the int64 values: jobs are (x, delta, lo, rank int32, weights):
// each symbol is rank[v - lo] with v = x_i (or x_i - x_{i-1} with delta), coded with the table.
// Same words as encode_many on the rank array, without building it.
py::list encode_hist_many(py::list jobs_in) {
  struct Job {
    I64View x;
    bool delta = false;
    int64_t lo = 0;
    i32arr rank;
    u32arr w;
    std::vector<uint32_t> out;
    std::string err;
  };
  std::vector<Job> jobs(py::len(jobs_in));
  for (size_t j = 0; j < jobs.size(); ++j) {
    auto t = py::reinterpret_borrow<py::tuple>(jobs_in[j]);
    if (t.size() != 5) throw py::value_error("encode_hist_many: a job is (x, delta, lo, rank, weights)");
    Job& job = jobs[j];
    job.x = I64View(t[0]);
    job.delta = t[1].cast<bool>();
    job.lo = t[2].cast<int64_t>();
    job.rank = t[3].cast<i32arr>();
    job.w = t[4].cast<u32arr>();
  }
  {
    py::gil_scoped_release nogil;
    int64_t nj = (int64_t)jobs.size();
    // As in decode_hist_many: batches of up to HIST_K equal-length streams are encoded side by
    // side in one thread (independent division chains overlap), batches spread over threads.
    auto batches = batch_by_length(nj, [&](int64_t j) { return jobs[j].x.n; });
    int64_t nb = (int64_t)batches.size();
#pragma omp parallel for schedule(dynamic, 1) if (nb > 1)
    for (int64_t b = 0; b < nb; ++b) {
      Model m[HIST_K];
      HistEnc h[HIST_K];
      Encoder enc[HIST_K];
      int ok[HIST_K], nok = 0;
      for (size_t k = 0; k < batches[b].size(); ++k) {
        Job& job = jobs[batches[b][k]];
        job.err = m[k].build(job.w.data(), job.w.size());
        if (!job.err.empty()) continue;
        h[k] = HistEnc{&job.x, job.delta, job.lo, job.rank.data(), (uint64_t)job.rank.size(), &m[k]};
        enc[k].words.reserve(size_t(job.x.n / 4 + 4));
        ok[nok++] = (int)k;
      }
      int64_t n = jobs[batches[b][0]].x.n;
      for (int done = 0; done < nok;) {
        int take = nok - done >= 4 ? 4 : nok - done >= 2 ? 2 : 1;
        const HistEnc* hh[4];
        Encoder* ee[4];
        for (int t = 0; t < take; ++t) {
          hh[t] = &h[ok[done + t]];
          ee[t] = &enc[ok[done + t]];
        }
        bool good = take == 4 ? hist_encode<4>(hh, ee, n) : take == 2 ? hist_encode<2>(hh, ee, n) : hist_encode<1>(hh, ee, n);
        for (int t = 0; t < take; ++t) {
          Job& job = jobs[batches[b][ok[done + t]]];
          if (!good) {  // some value is outside its table: find which, one stream at a time
            Encoder single;
            Encoder* one[1] = {&single};
            if (!hist_encode<1>(&hh[t], one, n)) job.err = "value outside the histogram table";
          }
          ee[t]->finish();
          job.out.swap(ee[t]->words);
        }
        done += take;
      }
    }
  }
  return words_result(jobs);
}

// (n, k) int64 -> (k, n) contiguous, in cache-sized row blocks on all cores: the columns of an
// attribute become contiguous streams without k strided passes over the whole array.
py::array_t<int64_t> transpose_i64(py::array_t<int64_t, py::array::c_style | py::array::forcecast> a) {
  if (a.ndim() != 2) throw py::value_error("transpose_i64: need a 2-D array");
  const int64_t n = a.shape(0), k = a.shape(1);
  py::array_t<int64_t> out({(py::ssize_t)k, (py::ssize_t)n});
  const int64_t* src = a.data();
  int64_t* dst = out.mutable_data();
  constexpr int64_t B = 512;  // rows per block: B * k * 8 bytes stay in cache while written out
  py::gil_scoped_release nogil;
#pragma omp parallel for schedule(static) if (n * k > 65536)
  for (int64_t r0 = 0; r0 < n; r0 += B) {
    int64_t r1 = std::min(n, r0 + B);
    for (int64_t c = 0; c < k; ++c)
      for (int64_t r = r0; r < r1; ++r) dst[c * n + r] = src[r * k + c];
  }
  return out;
}

// ----------------------------------------------------------------------------- quantizer helpers
// One-pass, multi-threaded versions of numpy code in gscomp/codec/quant.py and entropy.py (which
// stays the fallback and the reference: the tests check both give identical results). Float
// expressions are the same IEEE operations in the same order (no FMA contraction: strict ISO C++
// and no -march), so dequantized values are bit-identical.
constexpr double MAX_Q = 1099511627776.0;  // 2^40

// x (rows, cols) float32 -> int64 round-half-even(x / step[col]) (= np.rint in float64);
// ValueError when a value is not finite or |q| >= 2^40.
// columns=true writes the result transposed, (cols, rows): one contiguous array per column, what
// the per-column entropy coder reads (saves a separate transpose of the int64 symbols).
py::array_t<int64_t> quantize(py::array_t<float, py::array::c_style | py::array::forcecast> x,
                              py::array_t<double, py::array::c_style | py::array::forcecast> step,
                              bool columns) {
  if (x.ndim() != 2 || step.ndim() != 1 || step.shape(0) != x.shape(1)) throw py::value_error("quantize: bad shapes");
  const int64_t rows = x.shape(0), cols = x.shape(1);
  py::array_t<int64_t> out = columns ? py::array_t<int64_t>({(py::ssize_t)cols, (py::ssize_t)rows})
                                     : py::array_t<int64_t>({(py::ssize_t)rows, (py::ssize_t)cols});
  const int64_t rs = columns ? 1 : cols, cs = columns ? rows : 1;  // output strides of a row, a column
  const float* src = x.data();
  const double* st = step.data();
  int64_t* dst = out.mutable_data();
  int bad = 0;
  {
    py::gil_scoped_release nogil;
#pragma omp parallel for schedule(static) reduction(| : bad) if (rows * cols > 65536)
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        double q = std::nearbyint((double)src[r * cols + c] / st[c]);
        if (!(std::fabs(q) < MAX_Q)) {
          bad = 1;
          q = 0;
        }
        dst[r * rs + c * cs] = (int64_t)q;
      }
    }
  }
  if (bad) throw py::value_error("quantized value out of range");
  return out;
}

inline uint64_t spread3(uint64_t v) {
  uint64_t x = v & 0x1FFFFFull;
  x = (x | (x << 32)) & 0x1F00000000FFFFull;
  x = (x | (x << 16)) & 0x1F0000FF0000FFull;
  x = (x | (x << 8)) & 0x100F00F00F00F00Full;
  x = (x | (x << 4)) & 0x10C30C30C30C30C3ull;
  x = (x | (x << 2)) & 0x1249249249249249ull;
  return x;
}

inline int64_t compact3(uint64_t x) {
  x &= 0x1249249249249249ull;
  x = (x | (x >> 2)) & 0x10C30C30C30C30C3ull;
  x = (x | (x >> 4)) & 0x100F00F00F00F00Full;
  x = (x | (x >> 8)) & 0x1F0000FF0000FFull;
  x = (x | (x >> 16)) & 0x1F00000000FFFFull;
  x = (x | (x >> 32)) & 0x1FFFFFull;
  return (int64_t)x;
}

py::array_t<uint64_t> morton_encode(py::array_t<int64_t, py::array::c_style | py::array::forcecast> q) {
  if (q.ndim() != 2 || q.shape(1) != 3) throw py::value_error("morton_encode: need (N, 3)");
  const int64_t n = q.shape(0);
  py::array_t<uint64_t> out((py::ssize_t)n);
  const int64_t* src = q.data();
  uint64_t* dst = out.mutable_data();
  py::gil_scoped_release nogil;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i)
    dst[i] = spread3(src[3 * i]) | (spread3(src[3 * i + 1]) << 1) | (spread3(src[3 * i + 2]) << 2);
  return out;
}

py::array_t<int64_t> morton_decode(py::array_t<uint64_t, py::array::c_style | py::array::forcecast> codes) {
  const int64_t n = codes.size();
  py::array_t<int64_t> q({(py::ssize_t)n, (py::ssize_t)3});
  const uint64_t* c = codes.data();
  int64_t* qd = q.mutable_data();
  py::gil_scoped_release nogil;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i)
    for (int k = 0; k < 3; ++k) qd[3 * i + k] = compact3(c[i] >> k);
  return q;
}

// (N, 3) grid coordinates -> float32 origin + q * step (float64, one rounding).
py::array_t<float> dequantize_positions(py::array_t<int64_t, py::array::c_style | py::array::forcecast> q,
                                        py::array_t<double, py::array::c_style | py::array::forcecast> origin,
                                        py::array_t<double, py::array::c_style | py::array::forcecast> step) {
  if (q.ndim() != 2 || q.shape(1) != 3 || origin.size() != 3 || step.size() != 3)
    throw py::value_error("dequantize_positions: need (N, 3) and 3 origins / steps");
  const int64_t n = q.shape(0);
  py::array_t<float> pos({(py::ssize_t)n, (py::ssize_t)3});
  const int64_t* qd = q.data();
  float* pd = pos.mutable_data();
  const double o[3] = {origin.data()[0], origin.data()[1], origin.data()[2]};
  const double st[3] = {step.data()[0], step.data()[1], step.data()[2]};
  py::gil_scoped_release nogil;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i)
    for (int k = 0; k < 3; ++k) pd[3 * i + k] = (float)(o[k] + (double)qd[3 * i + k] * st[k]);
  return pos;
}

// MSB-first bit reader over exactly the bytes of a raw bit field (callers check the total first).
struct BitReader {
  const unsigned char* b;
  size_t pos = 0;
  uint64_t acc = 0;
  int have = 0;
  inline uint64_t get(int k) {  // k in [0, 56]
    while (have < k) {  // have + 8 <= 63 since k <= 56
      acc = (acc << 8) | b[pos++];
      have += 8;
    }
    have -= k;
    const uint64_t v = k ? (acc >> have) & ((uint64_t(1) << k) - 1) : 0;
    acc &= have ? (uint64_t(1) << have) - 1 : 0;
    return v;
  }
};

// Concatenate values[i] as widths[i]-bit big-endian fields (MSB first), widths in [0, 56].
py::bytes pack_bits(py::array_t<uint64_t, py::array::c_style | py::array::forcecast> values,
                    py::array_t<int64_t, py::array::c_style | py::array::forcecast> widths) {
  const int64_t n = values.size();
  if (widths.size() != n) throw py::value_error("pack_bits: one width per value");
  const uint64_t* v = values.data();
  const int64_t* w = widths.data();
  uint64_t total = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (w[i] < 0 || w[i] > 56) throw py::value_error("pack_bits: width outside 0..56");
    total += (uint64_t)w[i];
  }
  std::string out((total + 7) / 8, '\0');
  {
    py::gil_scoped_release nogil;
    uint64_t acc = 0;  // pending bits, MSB-aligned count `have` (< 8 after each flush)
    int have = 0;
    size_t pos = 0;
    for (int64_t i = 0; i < n; ++i) {
      int k = (int)w[i];
      if (!k) continue;
      acc = (acc << k) | (v[i] & ((uint64_t(1) << k) - 1));
      have += k;
      while (have >= 8) {
        have -= 8;
        out[pos++] = (char)(acc >> have);
      }
      acc &= (uint64_t(1) << have) - 1;
    }
    if (have) out[pos++] = (char)(acc << (8 - have));
  }
  return py::bytes(out);
}

// Inverse of pack_bits; `data` must hold exactly ceil(sum(widths) / 8) bytes (checked by caller).
py::array_t<uint64_t> unpack_bits(py::bytes data, py::array_t<int64_t, py::array::c_style | py::array::forcecast> widths) {
  std::string_view buf(data);
  const int64_t n = widths.size();
  const int64_t* w = widths.data();
  uint64_t total = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (w[i] < 0 || w[i] > 56) throw py::value_error("unpack_bits: width outside 0..56");
    total += (uint64_t)w[i];
  }
  if (buf.size() != (total + 7) / 8) throw py::value_error("unpack_bits: wrong byte count");
  py::array_t<uint64_t> out((py::ssize_t)n);
  uint64_t* dst = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    BitReader r{reinterpret_cast<const unsigned char*>(buf.data())};
    for (int64_t i = 0; i < n; ++i) dst[i] = r.get((int)w[i]);
  }
  return out;
}


// Sorted Morton codes from their delta classes and raw bits (see posthoc._morton_delta_decode):
// delta = 0 for class 0, else 2^(c-1) + the c - 1 raw bits; codes = prefix sums. Errors (class
// above max_class, wrong byte count, code >= 2^code_bits) raise ValueError.
py::array_t<int64_t> morton_delta_codes(py::array_t<int64_t, py::array::c_style | py::array::forcecast> cls,
                                        py::bytes raw, int max_class, int code_bits) {
  if (max_class < 0 || max_class > 57 || code_bits < 1 || code_bits > 62) throw py::value_error("bad Morton code width");
  std::string_view buf(raw);
  const int64_t n = cls.size();
  const int64_t* c = cls.data();
  uint64_t total = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (c[i] < 0 || c[i] > max_class) throw py::value_error("Morton delta class out of range");
    total += c[i] > 1 ? (uint64_t)(c[i] - 1) : 0;
  }
  if (buf.size() != (total + 7) / 8) throw py::value_error("raw bit field has the wrong byte count");
  py::array_t<int64_t> out((py::ssize_t)n);
  int64_t* dst = out.mutable_data();
  uint64_t acc = 0;
  {
    py::gil_scoped_release nogil;
    BitReader r{reinterpret_cast<const unsigned char*>(buf.data())};
    const uint64_t limit = uint64_t(1) << code_bits;
    for (int64_t i = 0; i < n; ++i) {
      const int k = (int)c[i];
      if (k) acc += (uint64_t(1) << (k - 1)) | r.get(k - 1);
      if (acc >= limit) break;  // reported below (sums of < 2^57 terms cannot wrap before this)
      dst[i] = (int64_t)acc;
    }
  }
  if (acc >= (uint64_t(1) << code_bits)) throw py::value_error("Morton code out of range");
  return out;
}

// Adaptive positions (posthoc.Positions._decode_adaptive): Gaussian i of class c (< cmax) has the
// coarse Morton code codes[i] on the grid of bits - cmax bits and cmax - c refinement bits per axis
// (raw, MSB first, x y z); it is placed at the centre of its 2^c-wide cell of the full grid:
// float32(origin + (cell * 2^c + (2^c - 1) / 2) * step), all in float64 as in the numpy reference.
py::array_t<float> classed_means(py::array_t<int64_t, py::array::c_style | py::array::forcecast> codes,
                                 py::array_t<int64_t, py::array::c_style | py::array::forcecast> cls, py::bytes ref,
                                 int cmax, py::array_t<double, py::array::c_style | py::array::forcecast> origin,
                                 py::array_t<double, py::array::c_style | py::array::forcecast> step) {
  const int64_t n = codes.size();
  if (cls.size() != n || origin.size() != 3 || step.size() != 3 || cmax < 0 || cmax > 20)
    throw py::value_error("classed_means: bad arguments");
  const int64_t* c = cls.data();
  uint64_t total = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (c[i] < 0 || c[i] > cmax) throw py::value_error("classed_means: class out of range");
    total += 3 * (uint64_t)(cmax - c[i]);
  }
  std::string_view buf(ref);
  if (buf.size() != (total + 7) / 8) throw py::value_error("raw bit field has the wrong byte count");
  py::array_t<float> out({(py::ssize_t)n, (py::ssize_t)3});
  float* dst = out.mutable_data();
  const int64_t* code = codes.data();
  const double o[3] = {origin.data()[0], origin.data()[1], origin.data()[2]};
  const double st[3] = {step.data()[0], step.data()[1], step.data()[2]};
  py::gil_scoped_release nogil;
  BitReader r{reinterpret_cast<const unsigned char*>(buf.data())};
  for (int64_t i = 0; i < n; ++i) {
    const int ci = (int)c[i], k = cmax - ci;
    const double cell = (double)(int64_t(1) << ci), half = (double)((int64_t(1) << ci) - 1) / 2;
    for (int a = 0; a < 3; ++a) {
      const int64_t q = (compact3((uint64_t)code[i] >> a) << k) | (int64_t)r.get(k);
      dst[3 * i + a] = (float)(o[a] + ((double)q * cell + half) * st[a]);
    }
  }
  return out;
}

// The per-class row lists and column streams of scatter_rows and scatter_dequantize, checked: w
// columns per class, each as long as its rows, every row in 0..n-1 and in one class at most (so
// that writes to different rows may run in parallel). Taken with the GIL held.
struct ClassColumns {
  std::vector<i64arr> rows, cols;
};
static ClassColumns class_columns(py::list rows, py::list cols, int64_t n, int64_t w, const std::string& who) {
  const int64_t nc = (int64_t)py::len(rows);
  if ((int64_t)py::len(cols) != nc * w) throw py::value_error(who + ": need w columns per row list");
  ClassColumns out;
  std::vector<uint8_t> seen(n, 0);
  for (int64_t c = 0; c < nc; ++c) {
    out.rows.push_back(rows[c].cast<i64arr>());
    const int64_t len = out.rows.back().size();
    for (int64_t j = 0; j < w; ++j) {
      out.cols.push_back(cols[c * w + j].cast<i64arr>());
      if (out.cols.back().size() != len) throw py::value_error(who + ": a column differs from its rows");
    }
    const int64_t* rp = out.rows.back().data();
    for (int64_t i = 0; i < len; ++i) {
      if (rp[i] < 0 || rp[i] >= n || seen[rp[i]]) throw py::value_error(who + ": row out of range or repeated");
      seen[rp[i]] = 1;
    }
  }
  return out;
}

// out[rows[c][i], j] = cols[c * w + j][i] for an (n, w) int64 out: puts per-class column streams
// back in Gaussian order (rows and columns checked by class_columns).
void scatter_rows(py::array_t<int64_t, py::array::c_style> out, py::list rows, py::list cols) {
  if (out.ndim() != 2 || !out.writeable()) throw py::value_error("scatter_rows: out must be a writable (n, w) array");
  const int64_t n = out.shape(0), w = out.shape(1);
  const ClassColumns cc = class_columns(rows, cols, n, w, "scatter_rows");
  int64_t* dst = out.mutable_data();
  py::gil_scoped_release nogil;
  std::vector<const int64_t*> vp(w);
  for (size_t c = 0; c < cc.rows.size(); ++c) {
    const int64_t* rp = cc.rows[c].data();
    const int64_t len = cc.rows[c].size();
    for (int64_t j = 0; j < w; ++j) vp[j] = cc.cols[c * w + j].data();
    // row by row: each output row written whole (column by column touched a new cache line per value)
    for (int64_t i = 0; i < len; ++i) {
      int64_t* row = dst + rp[i] * w;
      for (int64_t j = 0; j < w; ++j) row[j] = vp[j][i];
    }
  }
}

// scatter_rows and dequantize_classed in one pass, into columns j0.. of a float32 (n, W) out:
// out[rows[c][i], j0 + j] = float32(cols[c * w + j][i] * ldexp(steps[j], c)), the rows of class c
// being rows[c]. The same floats as the two calls (the same double product), without their (n, w)
// int64 array in between. out must be C-contiguous float32 (another is refused: see the binding).
void scatter_dequantize(py::array_t<float, py::array::c_style> out, int64_t j0, py::list rows, py::list cols,
                        py::array_t<double, py::array::c_style | py::array::forcecast> steps) {
  if (out.ndim() != 2 || !out.writeable()) throw py::value_error("scatter_dequantize: out must be a writable (n, W) array");
  const int64_t n = out.shape(0), W = out.shape(1), w = steps.size();
  if (j0 < 0 || j0 > W || w > W - j0) throw py::value_error("scatter_dequantize: columns out of range");  // (j0 + w may overflow)
  if (py::len(rows) > 63) throw py::value_error("scatter_dequantize: more than 63 classes");
  const ClassColumns cc = class_columns(rows, cols, n, w, "scatter_dequantize");
  float* dst = out.mutable_data();
  py::gil_scoped_release nogil;
  std::vector<double> t(w);
  std::vector<const int64_t*> vp(w);
  for (size_t c = 0; c < cc.rows.size(); ++c) {
    for (int64_t j = 0; j < w; ++j) {
      t[j] = std::ldexp(steps.data()[j], (int)c);
      vp[j] = cc.cols[c * w + j].data();
    }
    const int64_t* rp = cc.rows[c].data();
    const int64_t len = cc.rows[c].size();
#pragma omp parallel for schedule(static) if (len * w > 262144)
    for (int64_t i = 0; i < len; ++i) {
      float* row = dst + rp[i] * W + j0;
      for (int64_t j = 0; j < w; ++j) row[j] = (float)((double)vp[j][i] * t[j]);
    }
  }
}

// float32(sym * ldexp(step, cls[row])) for an (n, w) int64 sym: classed dequantization (row i has
// 2^cls[i] times the step; a power-of-two scaling is exact, so this equals the numpy reference).
// steps: one float64 step per column (w values), or one for all columns
py::array_t<float> dequantize_classed(py::array_t<int64_t, py::array::c_style | py::array::forcecast> sym,
                                      py::array_t<int64_t, py::array::c_style | py::array::forcecast> cls,
                                      py::array_t<double, py::array::c_style | py::array::forcecast> steps) {
  if (sym.ndim() != 2 || cls.size() != sym.shape(0)) throw py::value_error("dequantize_classed: need (n, w) and n classes");
  const int64_t n = sym.shape(0), w = sym.shape(1);
  if (steps.size() != 1 && steps.size() != w) throw py::value_error("dequantize_classed: need 1 or w steps");
  const int64_t* c = cls.data();
  for (int64_t i = 0; i < n; ++i)
    if (c[i] < 0 || c[i] > 62) throw py::value_error("dequantize_classed: class out of range");
  py::array_t<float> out({(py::ssize_t)n, (py::ssize_t)w});
  float* dst = out.mutable_data();
  const int64_t* s = sym.data();
  // step_j * 2^c for each class c and column j, made once (ldexp per value was most of the time;
  // the same doubles, so the same floats)
  std::vector<double> tab(63 * w);
  for (int k = 0; k < 63; ++k)
    for (int64_t j = 0; j < w; ++j) tab[k * w + j] = std::ldexp(steps.data()[steps.size() == 1 ? 0 : j], k);
  py::gil_scoped_release nogil;
#pragma omp parallel for schedule(static) if (n * w > 262144)
  for (int64_t i = 0; i < n; ++i) {
    const double* t = tab.data() + c[i] * w;
    for (int64_t j = 0; j < w; ++j) dst[i * w + j] = (float)((double)s[i * w + j] * t[j]);
  }
  return out;
}

// wxyz quaternions -> smallest-three symbols (same float64 operations, in the same order, as
// quant.quats_to_s3: row norm summed left to right, division, sign flip, clip, rint(v / step)).
// Returns None when an input is not finite or a symbol reaches 2^40 (the caller then uses numpy).
py::object quats_to_s3(py::array_t<double, py::array::c_style | py::array::forcecast> quats, double step) {
  if (quats.ndim() != 2 || quats.shape(1) != 4) throw py::value_error("quats_to_s3: need (N, 4)");
  const int64_t n = quats.shape(0);
  py::array_t<int64_t> out({(py::ssize_t)n, (py::ssize_t)4});
  const double* src = quats.data();
  int64_t* dst = out.mutable_data();
  const double lim = 0.7071067811865476;  // quant.INV_SQRT2
  int bad = 0;
  {
    py::gil_scoped_release nogil;
#pragma omp parallel for schedule(static) reduction(| : bad) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) {
      double q[4];
      for (int j = 0; j < 4; ++j) {
        q[j] = src[4 * i + j];
        if (!std::isfinite(q[j])) bad = 1;
      }
      double norm = std::sqrt(((q[0] * q[0] + q[1] * q[1]) + q[2] * q[2]) + q[3] * q[3]);
      if (norm == 0) {
        q[0] = 1, q[1] = q[2] = q[3] = 0;
      } else {
        for (int j = 0; j < 4; ++j) q[j] = q[j] / norm;
      }
      int big = 0;
      for (int j = 1; j < 4; ++j)
        if (std::fabs(q[j]) > std::fabs(q[big])) big = j;
      double sign = q[big] < 0 ? -1.0 : 1.0;
      dst[4 * i] = big;
      for (int j = 0, k = 1; j < 4; ++j) {
        if (j == big) continue;
        double v = std::min(std::max(q[j] * sign, -lim), lim);
        double r = std::nearbyint(v / step);
        if (!(std::fabs(r) < MAX_Q)) bad = 1, r = 0;
        dst[4 * i + k++] = (int64_t)r;
      }
    }
  }
  if (bad) return py::none();
  return out;
}

// Unit quaternion of q (zero -> identity): the row norm summed left to right, as numpy's
// (q * q).sum(1) over four values, then one division per component.
static inline void unit_quat(double* q) {
  const double norm = std::sqrt(((q[0] * q[0] + q[1] * q[1]) + q[2] * q[2]) + q[3] * q[3]);
  if (norm > 0) {
    for (int j = 0; j < 4; ++j) q[j] = q[j] / norm;
  } else {
    q[0] = 1, q[1] = q[2] = q[3] = 0;
  }
}

// Row i of an (N, 4) quaternion array, made unit (unit_quat); false when a component is not
// finite. *big: the index of its largest |component| (the first on ties).
static inline bool unit_quat_row(const double* src, int64_t i, double* q, int* big) {
  bool finite = true;
  for (int j = 0; j < 4; ++j) {
    q[j] = src[4 * i + j];
    finite = finite && std::isfinite(q[j]);
  }
  unit_quat(q);
  *big = 0;
  for (int j = 1; j < 4; ++j)
    if (std::fabs(q[j]) > std::fabs(q[*big])) *big = j;
  return finite;
}

// axes.rotmat_to_quat (Shepperd): wxyz of a rotation matrix, dividing by the largest of 4|w|, 4|x|,
// 4|y|, 4|z| (the first on ties); the numpy code's float64 operations in its order.
inline void rotmat_to_quat(const double a[3][3], double* o) {
  const double tr = (a[0][0] + a[1][1]) + a[2][2];
  const double diag[4] = {tr, a[0][0], a[1][1], a[2][2]};
  int k = 0;
  for (int j = 1; j < 4; ++j)
    if (diag[j] > diag[k]) k = j;
  if (k == 0) {
    const double d = 2 * std::sqrt(std::max(1 + tr, 1e-300));
    o[0] = d / 4, o[1] = (a[2][1] - a[1][2]) / d, o[2] = (a[0][2] - a[2][0]) / d, o[3] = (a[1][0] - a[0][1]) / d;
  } else {
    const int ii = k - 1, j = k % 3, l = (k + 1) % 3;
    const double d = 2 * std::sqrt(std::max(((1 + a[ii][ii]) - a[j][j]) - a[l][l], 1e-300));
    o[0] = (a[l][j] - a[j][l]) / d;
    o[1 + ii] = d / 4;
    o[1 + j] = (a[j][ii] + a[ii][j]) / d;
    o[1 + l] = (a[l][ii] + a[ii][l]) / d;
  }
}

// posthoc.sort_axes in one pass: the same float64 operations, in the same order, as its numpy
// code (rotation matrix, its columns in the order of decreasing scale (stable), the last column's
// sign from det, axes.rotmat_to_quat). Returns (float64 (N, 4) quaternions, float32 (N, 3)
// sorted log-scales), or None when an input is not finite (the caller then runs numpy).
py::object sort_axes(py::array_t<float, py::array::c_style | py::array::forcecast> quats,
                     py::array_t<float, py::array::c_style | py::array::forcecast> scales) {
  if (quats.ndim() != 2 || quats.shape(1) != 4 || scales.ndim() != 2 || scales.shape(1) != 3 ||
      scales.shape(0) != quats.shape(0))
    throw py::value_error("sort_axes: need (N, 4) quaternions and (N, 3) scales");
  const int64_t n = quats.shape(0);
  py::array_t<double> qout({(py::ssize_t)n, (py::ssize_t)4});
  py::array_t<float> sout({(py::ssize_t)n, (py::ssize_t)3});
  const float* qs = quats.data();
  const float* ss = scales.data();
  double* qd = qout.mutable_data();
  float* sd = sout.mutable_data();
  int bad = 0;
  {
    py::gil_scoped_release nogil;
#pragma omp parallel for schedule(static) reduction(| : bad) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) {
      double q[4], sc[3];
      for (int j = 0; j < 4; ++j) q[j] = qs[4 * i + j];
      for (int j = 0; j < 3; ++j) sc[j] = ss[3 * i + j];
      if (!(std::isfinite(q[0]) && std::isfinite(q[1]) && std::isfinite(q[2]) && std::isfinite(q[3]) &&
            std::isfinite(sc[0]) && std::isfinite(sc[1]) && std::isfinite(sc[2]))) {
        bad = 1;
        continue;
      }
      unit_quat(q);
      // argsort(-s, kind="stable"): largest scale first, ties in axis order
      int order[3] = {0, 1, 2};
      for (int a = 1; a < 3; ++a)
        for (int b = a; b > 0 && -sc[order[b]] < -sc[order[b - 1]]; --b) std::swap(order[b], order[b - 1]);
      const double w = q[0], x = q[1], y = q[2], z = q[3];
      const double rot[3][3] = {{1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)},
                                {2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)},
                                {2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)}};
      double a[3][3];
      for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 3; ++c) a[r][c] = rot[r][order[c]];
      // np.sign(det): the columns of a rotation, permuted, have det +-1, far from 0, so a cofactor
      // expansion gives the sign numpy's LU factorisation does
      const double det = a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) -
                         a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0]) +
                         a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
      const double sg = (double)((det > 0) - (det < 0));
      for (int r = 0; r < 3; ++r) a[r][2] = a[r][2] * sg;
      rotmat_to_quat(a, qd + 4 * i);
      for (int j = 0; j < 3; ++j) sd[3 * i + j] = (float)sc[order[j]];
    }
  }
  if (bad) return py::none();
  return py::make_tuple(qout, sout);
}

// posthoc.canonical_quats: of q, q*i, q*j, q*k (unit, zero -> identity) the one whose w has the
// largest magnitude, i.e. a signed permutation picked by the largest |component| (first on ties).
// None when an input is not finite.
py::object canonical_quats(py::array_t<double, py::array::c_style | py::array::forcecast> quats) {
  if (quats.ndim() != 2 || quats.shape(1) != 4) throw py::value_error("canonical_quats: need (N, 4)");
  static const int PERM[4][4] = {{0, 1, 2, 3}, {1, 0, 3, 2}, {2, 3, 0, 1}, {3, 2, 1, 0}};
  static const double SIGN[4][4] = {{1, 1, 1, 1}, {-1, 1, 1, -1}, {-1, -1, 1, 1}, {-1, 1, -1, 1}};
  const int64_t n = quats.shape(0);
  py::array_t<double> out({(py::ssize_t)n, (py::ssize_t)4});
  const double* src = quats.data();
  double* dst = out.mutable_data();
  int bad = 0;
  {
    py::gil_scoped_release nogil;
#pragma omp parallel for schedule(static) reduction(| : bad) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) {
      double q[4];
      int p;
      if (!unit_quat_row(src, i, q, &p)) bad = 1;
      for (int j = 0; j < 4; ++j) dst[4 * i + j] = q[PERM[p][j]] * SIGN[p][j];
    }
  }
  if (bad) return py::none();
  return out;
}

// quant.quats_rest: (index of the largest |component|, the other three in index order, of the
// unit quaternion with that component made positive, clipped to +-1/sqrt2). None when not finite.
py::object quats_rest(py::array_t<double, py::array::c_style | py::array::forcecast> quats) {
  if (quats.ndim() != 2 || quats.shape(1) != 4) throw py::value_error("quats_rest: need (N, 4)");
  const int64_t n = quats.shape(0);
  py::array_t<int64_t> big_out((py::ssize_t)n);
  py::array_t<double> rest_out({(py::ssize_t)n, (py::ssize_t)3});
  const double* src = quats.data();
  int64_t* bd = big_out.mutable_data();
  double* rd = rest_out.mutable_data();
  const double lim = 0.7071067811865476;  // quant.INV_SQRT2
  int bad = 0;
  {
    py::gil_scoped_release nogil;
#pragma omp parallel for schedule(static) reduction(| : bad) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) {
      double q[4];
      int big;
      if (!unit_quat_row(src, i, q, &big)) bad = 1;
      const double sign = q[big] < 0 ? -1.0 : 1.0;
      bd[i] = big;
      for (int j = 0, k = 0; j < 4; ++j)
        if (j != big) rd[3 * i + k++] = std::min(std::max(q[j] * sign, -lim), lim);
    }
  }
  if (bad) return py::none();
  return py::make_tuple(big_out, rest_out);
}

// Smallest-three quaternions -> float32 wxyz (same float64 expressions as quant.s3_to_quats).
// Returns None when a largest-component index is outside 0..3.
// row_steps: optional (N,) float64, one step per row (then `step` is ignored).
py::object s3_to_quats(py::array_t<int64_t, py::array::c_style | py::array::forcecast> s3, double step,
                       py::object row_steps) {
  if (s3.ndim() != 2 || s3.shape(1) != 4) throw py::value_error("s3_to_quats: need (N, 4)");
  const int64_t n = s3.shape(0);
  py::array_t<double, py::array::c_style | py::array::forcecast> rs;
  const double* rsp = nullptr;
  if (!row_steps.is_none()) {
    rs = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(row_steps);
    if (!rs || rs.ndim() != 1 || rs.shape(0) != n) throw py::value_error("s3_to_quats: row_steps must be (N,)");
    rsp = rs.data();
  }
  py::array_t<float> out({(py::ssize_t)n, (py::ssize_t)4});
  const int64_t* src = s3.data();
  float* dst = out.mutable_data();
  int bad = 0;
  {
    py::gil_scoped_release nogil;
#pragma omp parallel for schedule(static) reduction(| : bad) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t* r = src + 4 * i;
      int64_t big = r[0];
      if (big < 0 || big > 3) {
        bad = 1;
        big = 0;
      }
      const double st = rsp ? rsp[i] : step;
      double a = (double)r[1] * st, b = (double)r[2] * st, c = (double)r[3] * st;
      double w = std::sqrt(std::max(0.0, 1.0 - ((a * a + b * b) + c * c)));
      const double rest[3] = {a, b, c};  // the other three components, in increasing index order
      for (int j = 0, k = 0; j < 4; ++j) dst[4 * i + j] = (float)(j == big ? w : rest[k++]);
    }
  }
  if (bad) return py::none();
  return out;
}

// codec.axes.free_axis_levels: the free axis (0: e1, 2: e3) and angle level of each Gaussian from its
// sorted decoded log-scales, with posgrid.exp_det's operations (its constants passed in, as floats
// of the Python code). The same float64 operations, in the same order, as the numpy code.
py::tuple axes_levels(py::array_t<float, py::array::c_style | py::array::forcecast> log_scales,
                      std::vector<double> inv_fact, double ln2_hi, double ln2_lo, double inv_ln2, double clamp,
                      int max_level) {
  if (log_scales.ndim() != 2 || log_scales.shape(1) != 3 || inv_fact.empty() || max_level < 0 || max_level > 30)
    throw py::value_error("axes_levels: bad arguments");
  const int64_t n = log_scales.shape(0);
  py::array_t<int64_t> free_out(n), level_out(n);
  const float* src = log_scales.data();
  int64_t *pf = free_out.mutable_data(), *pm = level_out.mutable_data();
  const int terms = (int)inv_fact.size() - 1;
  if (!(clamp >= 0 && clamp <= 60)) throw py::value_error("axes_levels: clamp must be in [0, 60]");
  double thresholds[31];
  for (int k = 1; k <= max_level; ++k) thresholds[k] = std::ldexp(1.0, 2 * k - 1);
  // Blocks of AXES_BLOCK Gaussians: their 2 x AXES_BLOCK exp polynomials advance together (independent
  // chains the compiler vectorizes; one Horner chain at a time was latency-bound), each lane with
  // exactly posgrid.exp_det's operations.
  constexpr int BL = 8;
  {
    py::gil_scoped_release nogil;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i0 = 0; i0 < n; i0 += BL) {
      const int cnt = (int)std::min<int64_t>(BL, n - i0);
      double y[2 * BL], kk[2 * BL], r[2 * BL], p[2 * BL];
      for (int j = 0; j < BL; ++j) {
        const int64_t i = i0 + std::min(j, cnt - 1);  // (lanes past the end repeat the last one)
        const double l1 = src[3 * i], l2 = src[3 * i + 1], l3 = src[3 * i + 2];
        y[j] = std::max(std::min(l1 - l3, clamp), 0.0);
        y[BL + j] = std::max(std::min(l2 - l3, clamp), 0.0);
      }
      for (int j = 0; j < 2 * BL; ++j) {
        const double yy = std::min(y[j], 800.0);
        kk[j] = std::floor(yy * inv_ln2 + 0.5);
        r[j] = (yy - kk[j] * ln2_hi) - kk[j] * ln2_lo;
        p[j] = inv_fact[terms];
      }
      for (int t = terms - 1; t >= 0; --t) {
        const double c = inv_fact[t];
        for (int j = 0; j < 2 * BL; ++j) p[j] = p[j] * r[j] + c;
      }
      for (int j = 0; j < cnt; ++j) {
        double e[2];
        for (int h = 0; h < 2; ++h) {  // ldexp(p, k) for 0 <= k <= 87 (y <= clamp): times 2^k from its bits, exact
          const uint64_t bits = (uint64_t)(1023 + (int64_t)kk[h * BL + j]) << 52;
          double scale;
          std::memcpy(&scale, &bits, sizeof scale);
          e[h] = p[h * BL + j] * scale;
        }
        const double ea = e[0], eb = e[1];
        const double g23 = eb - 1.0, g12 = ea - eb;
        const bool first = g23 <= g12;
        const double big = first ? g12 : g23, small = first ? g23 : g12;
        const double big2 = big * big, small2 = small * small;
        const double r2 = small2 > 0 ? big2 / small2 : INFINITY;
        int64_t m = 0;
        for (int k = 1; k <= max_level; ++k) m += r2 >= thresholds[k];
        pf[i0 + j] = first ? 0 : 2;
        pm[i0 + j] = m;
      }
    }
  }
  return py::make_tuple(free_out, level_out);
}

// codec.axes decode (posthoc.Attributes._decode_axes): the free axis's direction from (u, v), the
// next axis at angle k pi / N about it, the third by a cross product, then axes.rotmat_to_quat
// (Shepperd), float32 wxyz. The same float64 operations, in the same order, as the numpy code.
constexpr int AXES_SIN_TERMS = 12;
py::tuple axes_to_quats(py::array_t<int64_t, py::array::c_style | py::array::forcecast> sym,
                        py::array_t<double, py::array::c_style | py::array::forcecast> step,
                        py::array_t<int64_t, py::array::c_style | py::array::forcecast> k,
                        py::array_t<int64_t, py::array::c_style | py::array::forcecast> level,
                        py::array_t<int64_t, py::array::c_style | py::array::forcecast> counts,
                        py::array_t<int64_t, py::array::c_style | py::array::forcecast> free,
                        std::vector<double> sin_c, std::vector<double> cos_c, double pi, double half_pi) {
  const int64_t n = sym.ndim() == 2 ? sym.shape(0) : -1;
  if (n < 0 || sym.shape(1) != 2 || step.ndim() != 1 || k.ndim() != 1 || level.ndim() != 1 || counts.ndim() != 1 ||
      free.ndim() != 1 || step.shape(0) != n || k.shape(0) != n || level.shape(0) != n || free.shape(0) != n ||
      (int)sin_c.size() != AXES_SIN_TERMS || (int)cos_c.size() != AXES_SIN_TERMS)
    throw py::value_error("axes_to_quats: bad shapes");
  const int64_t nl = counts.shape(0);
  py::array_t<float> out({(py::ssize_t)n, (py::ssize_t)4});
  const int64_t *ps = sym.data(), *pk = k.data(), *pl = level.data(), *pn = counts.data(), *pf = free.data();
  const double* pst = step.data();
  float* dst = out.mutable_data();
  // checked first (a file's values): |u|, |v| <= 2 (err 1), 0 <= level < nl and 0 <= k < N (err 2)
  int err = 0;
  for (int64_t i = 0; i < n && !err; ++i) {
    const double u = (double)ps[2 * i] * pst[i], v = (double)ps[2 * i + 1] * pst[i];
    if (!(std::fabs(u) <= 2.0 && std::fabs(v) <= 2.0)) err = 1;
    else if (pl[i] < 0 || pl[i] >= nl || pk[i] < 0 || pk[i] >= pn[pl[i]]) err = 2;
  }
  if (err) return py::make_tuple(py::none(), err);
  {
    py::gil_scoped_release nogil;
    // blocks of BL Gaussians: their sine and cosine polynomials advance together (see axes_levels)
    constexpr int BL = 8;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i0 = 0; i0 < n; i0 += BL) {
      const int cnt = (int)std::min<int64_t>(BL, n - i0);
      double xs[BL], x2s[BL], sps[BL], cps[BL];
      for (int jj = 0; jj < BL; ++jj) {
        const int64_t i = i0 + std::min(jj, cnt - 1);  // (lanes past the end repeat the last one)
        xs[jj] = (double)pk[i] * (pi / (double)pn[pl[i]]) - half_pi;
        x2s[jj] = xs[jj] * xs[jj];
        sps[jj] = sin_c[AXES_SIN_TERMS - 1];
        cps[jj] = cos_c[AXES_SIN_TERMS - 1];
      }
      for (int tt = AXES_SIN_TERMS - 2; tt >= 0; --tt) {
        const double sc = sin_c[tt], cc = cos_c[tt];
        for (int jj = 0; jj < BL; ++jj) {
          sps[jj] = sps[jj] * x2s[jj] + sc;
          cps[jj] = cps[jj] * x2s[jj] + cc;
        }
      }
      for (int jj = 0; jj < cnt; ++jj) {
        const int64_t i = i0 + jj;
        const double u = (double)ps[2 * i] * pst[i], v = (double)ps[2 * i + 1] * pst[i];
        const double z = std::max(0.0, (1.0 - std::fabs(u)) - std::fabs(v));
        const double len = std::sqrt((u * u + v * v) + z * z);
        const double d[3] = {u / len, v / len, z / len};
        const double a = -1.0 / (1.0 + d[2]);
        const double b = (d[0] * d[1]) * a;
        const double t1[3] = {1.0 + (d[0] * d[0]) * a, b, -d[0]}, t2[3] = {b, 1.0 + (d[1] * d[1]) * a, -d[1]};
        const double sn = cps[jj], cs = -(sps[jj] * xs[jj]);  // sin and cos of the angle
        double e[3], t[3];
        for (int j = 0; j < 3; ++j) e[j] = cs * t1[j] + sn * t2[j];
        t[0] = d[1] * e[2] - d[2] * e[1];
        t[1] = d[2] * e[0] - d[0] * e[2];
        t[2] = d[0] * e[1] - d[1] * e[0];
        const double *c0 = d, *c1 = e, *c2 = t;  // columns: (d, e, d x e), or (e, d x e, d) for e3
        if (pf[i] != 0) {
          c0 = e;
          c1 = t;
          c2 = d;
        }
        const double r[3][3] = {{c0[0], c1[0], c2[0]}, {c0[1], c1[1], c2[1]}, {c0[2], c1[2], c2[2]}};
        double q[4];
        rotmat_to_quat(r, q);
        for (int j = 0; j < 4; ++j) dst[4 * i + j] = (float)q[j];
      }
    }
  }
  return py::make_tuple(out, 0);
}

}  // namespace

// ----------------------------------------------------------------------------- dependent quantization
// Trellis-coded ("dependent") scalar quantization, the 4-state scheme of H.266/VVC: two quantizers
// on a grid of step d, Q0 = {2k d} and Q1 = {(2k - sgn k) d}; the state (h, l) moves to
// (l ^ parity(k), h) after each coded level k and h picks the quantizer of the next value. Their
// union is the d grid, so a Viterbi search over the sequence finds reconstructions with ~0.8x the
// squared error of a plain quantizer of step 2d at the same level entropy (quant.dq_unpack is the
// decoder). t: targets in units of d; nonneg: only reconstructions >= 0. Returns (k, r): coded
// levels and reconstruction indices (value = r d). Deterministic: fixed candidate order, strict <.
// Rate-aware when lam > 0: cost = error^2 + lam * bits(k), bits from a table over [klo, klo + nb)
// (levels outside it cost `far` bits), e.g. the level histogram of a first pass. With weights wt
// (else 1) the error of value i counts wt[i] times: an encoder-only choice, the decoder is the same.
// floor(v) as an integer for |v| < 2^62 (targets are < 2^40): the value of (int64_t)std::floor(v),
// computed without a branch (truncate, then one down for a negative non-integer). The branch that
// std::floor compiles to without SSE4.1 mispredicts on half the targets of a signed stream.
static inline int64_t floor_i64(double v) {
  const int64_t q = (int64_t)v;
  return q - (int64_t)((double)q > v);
}

// The candidate reconstructions of target x under quantizer h (0: even r around x; 1: odd r around
// x, and 0), in the order the search tries them; nonneg clamps them to >= 0. Returns their count.
static inline int dq_cands(double x, int h, bool nonneg, int64_t* r) {
  int nc = 0;
  if (h == 0) {
    const int64_t e = 2 * floor_i64(x / 2);
    r[nc++] = e, r[nc++] = e + 2;
  } else {
    const int64_t o = 2 * floor_i64((x - 1) / 2) + 1;
    r[nc++] = o, r[nc++] = o + 2, r[nc++] = 0;
  }
  if (nonneg)
    for (int c = 0; c < nc; ++c) r[c] = std::max<int64_t>(r[c], 0);
  return nc;
}

// Coded level of reconstruction index r under quantizer h.
static inline int64_t dq_level(int64_t r, int h) { return h == 0 ? r / 2 : (r + (r > 0) - (r < 0)) / 2; }

static void dq_trellis(const double* t, int64_t n, bool nonneg, int64_t* kout, int64_t* rout, double lam,
                       int64_t klo, const double* bits, int64_t nb, double far, const double* wt) {
  const double INF = 1e300;
  double cost[4] = {0, INF, INF, INF};
  // Per value and next state, the survivor: previous state (bits 0-1) and its candidate (bits 2-3);
  // the backtrack recomputes the level from the target (4 bytes per value instead of 36). UNSET:
  // no survivor, where every path costs >= INF (lam = inf, or costs beyond 1e300); the backtrack
  // then gives level 0 from state 0, as the former zero-filled tables (and the numpy reference) did.
  constexpr uint8_t UNSET = 0xFF;  // (candidate 3: there are at most 3)
  std::unique_ptr<uint8_t[]> back(new uint8_t[size_t(n) * 4 + 4]);
  std::fill(back.get(), back.get() + size_t(n) * 4 + 4, UNSET);
  for (int64_t i = 0; i < n; ++i) {
    const double x = t[i], wi = wt ? wt[i] : 1.0;
    // The candidates of each quantizer, worked out once for its two states (h, 0) and (h, 1):
    // level parity, error term and rate term (the same operations as a per-state loop; a state's
    // cost is still cost + error, then + rate, in that order).
    int64_t r[2][3];
    int nc_[2], par[2][3];
    double err[2][3], rate[2][3];
    for (int h = 0; h < 2; ++h) {
      nc_[h] = dq_cands(x, h, nonneg, r[h]);
      for (int c = 0; c < nc_[h]; ++c) {
        const int64_t k = dq_level(r[h][c], h);
        const double d = x - (double)r[h][c];
        par[h][c] = (int)(k & 1);
        err[h][c] = wi * (d * d);
        rate[h][c] = lam > 0 ? lam * (k >= klo && k < klo + nb ? bits[k - klo] : far) : 0.0;
      }
    }
    double nc[4] = {INF, INF, INF, INF};
    uint8_t* bk = &back[size_t(i) * 4];
    for (int s = 0; s < 4; ++s) {
      if (!(cost[s] < INF)) continue;
      const int h = s >> 1, l = s & 1;
      for (int c = 0; c < nc_[h]; ++c) {
        double v = cost[s] + err[h][c];
        if (lam > 0) v += rate[h][c];
        const int ns = ((l ^ par[h][c]) << 1) | h;
        if (v < nc[ns]) nc[ns] = v, bk[ns] = (uint8_t)(s | (c << 2));
      }
    }
    for (int s = 0; s < 4; ++s) cost[s] = nc[s];
  }
  int s = 0;
  for (int j = 1; j < 4; ++j)
    if (cost[j] < cost[s]) s = j;
  for (int64_t i = n - 1; i >= 0; --i) {
    const int b = back[size_t(i) * 4 + s];
    if (b == UNSET) {
      kout[i] = rout[i] = 0;
      s = 0;
      continue;
    }
    const int ps = b & 3, h = ps >> 1;
    int64_t r[3];
    dq_cands(t[i], h, nonneg, r);
    const int64_t k = dq_level(r[b >> 2], h);
    kout[i] = k;
    rout[i] = h == 0 ? 2 * k : 2 * k - (k > 0) + (k < 0);
    s = ps;
  }
}

// Many independent sequences (one per stream) on all cores: list of float64 arrays -> list of (k, r).
py::list dq_quantize_many(py::list targets, bool nonneg, double lam, py::list rates, py::list weights) {
  const int64_t m = (int64_t)targets.size();
  std::vector<py::array_t<double, py::array::c_style | py::array::forcecast>> in;
  std::vector<py::array_t<int64_t>> ks, rs;
  for (int64_t j = 0; j < m; ++j) {
    in.push_back(py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(targets[j]));
    if (!in.back() || in.back().ndim() != 1) throw py::value_error("dq_quantize_many: need 1-D float arrays");
    const double* p = in.back().data();
    for (py::ssize_t i = 0; i < in.back().shape(0); ++i)
      if (!(std::fabs(p[i]) < MAX_Q)) throw py::value_error("dq_quantize_many: non-finite or huge target");
    ks.emplace_back(in.back().shape(0));
    rs.emplace_back(in.back().shape(0));
  }
  if (lam > 0 && (int64_t)rates.size() != m) throw py::value_error("dq_quantize_many: one rate table per sequence");
  if (!weights.empty() && (int64_t)weights.size() != m) throw py::value_error("dq_quantize_many: one weight array per sequence");
  std::vector<py::array_t<double, py::array::c_style | py::array::forcecast>> wts;
  for (int64_t j = 0; j < (int64_t)weights.size(); ++j) {
    wts.push_back(py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(weights[j]));
    if (!wts.back() || wts.back().ndim() != 1 || wts.back().shape(0) != in[j].shape(0))
      throw py::value_error("dq_quantize_many: weights must match their sequence");
    const double* w = wts.back().data();
    for (py::ssize_t i = 0; i < wts.back().shape(0); ++i)
      if (!(w[i] >= 0 && w[i] < MAX_Q)) throw py::value_error("dq_quantize_many: weights must be finite and >= 0");
  }
  std::vector<py::array_t<double, py::array::c_style | py::array::forcecast>> tabs;
  std::vector<int64_t> klo(m, 0);
  std::vector<double> far(m, 0);
  for (int64_t j = 0; lam > 0 && j < m; ++j) {
    py::tuple tr = rates[j].cast<py::tuple>();
    klo[j] = tr[0].cast<int64_t>();
    tabs.push_back(py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(tr[1]));
    far[j] = tr[2].cast<double>();
    if (!tabs.back() || tabs.back().ndim() != 1) throw py::value_error("dq_quantize_many: bad rate table");
  }
  std::vector<const double*> src(m);
  std::vector<int64_t*> kd(m), rd(m);
  std::vector<int64_t> len(m);
  for (int64_t j = 0; j < m; ++j) src[j] = in[j].data(), kd[j] = ks[j].mutable_data(), rd[j] = rs[j].mutable_data(), len[j] = in[j].shape(0);
  // longest sequences first: the streams of a field's classes differ in length by 10x or more, and
  // a long one taken last would leave the other cores idle (each sequence is one task)
  std::vector<int64_t> order(m);
  for (int64_t j = 0; j < m; ++j) order[j] = j;
  std::stable_sort(order.begin(), order.end(), [&](int64_t p, int64_t q) { return len[p] > len[q]; });
  {
    py::gil_scoped_release nogil;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t o = 0; o < m; ++o) {
      const int64_t j = order[o];
      dq_trellis(src[j], len[j], nonneg, kd[j], rd[j], lam, klo[j], lam > 0 ? tabs[j].data() : nullptr,
                 lam > 0 ? tabs[j].shape(0) : 0, far[j], wts.empty() ? nullptr : wts[j].data());
    }
  }
  py::list out;
  for (int64_t j = 0; j < m; ++j) out.append(py::make_tuple(ks[j], rs[j]));
  return out;
}

// ----------------------------------------------------------------------------- context streams
// Mode-7 symbol streams (gscomp.codec.entropy): value i is coded with the table of its context, a
// function of the previous value p of the same stream (p = m before the first one):
//   ctx = B + sgn(p - m) * min(bitlen(|p - m|), B),  so 2B + 1 contexts around the centre m.
// Integer-only, so encoder and every decoder agree exactly.
inline int ctx_of(int64_t p, int64_t m, int B) {
  const int64_t d = p - m;  // |values|, |m| < 2^40: no overflow
  const uint64_t u = d < 0 ? (uint64_t)(-d) : (uint64_t)d;
  int b = 0;
  while (b < B && (u >> b) != 0) ++b;
  return d < 0 ? B - b : B + b;
}

struct CtxTable {  // encoder side of one context
  int64_t lo = 0;      // value of rank-table entry 0
  i32arr rank;         // value - lo -> symbol (-1: absent)
  u32arr w;            // 24-bit weights of the present symbols (< 2 entries: no rANS symbol)
  Model m;
  bool coded = false;
};

constexpr int MAX_CTX_B = 6;

static void parse_ctx_header(py::tuple t, int64_t* m, int* B, const char* what) {
  *m = t[1].cast<int64_t>();
  *B = t[2].cast<int>();
  if (*B < 1 || *B > MAX_CTX_B) throw py::value_error(std::string(what) + ": context radius out of range");
}

// The encoder's search for a context stream's radius (entropy._ctx_plan): counts[c][x_i - lo] with
// c = ctx_of(x_{i-1}, m, B) (x_{-1} = m), a (2B + 1, a) int64 table; every radius b <= B is then a
// merge of its rows (min(bitlen, b) = min(min(bitlen, B), b)), so one pass replaces B numpy passes.
// Values must lie in [lo, lo + a) (the caller's range; checked).
py::array_t<int64_t> ctx_hist(py::handle x_in, int64_t m, int64_t lo, int64_t a, int B) {
  if (B < 1 || B > MAX_CTX_B || a < 1 || a > MAX_ALPHABET) throw py::value_error("ctx_hist: bad radius or alphabet");
  I64View x(x_in);
  py::array_t<int64_t> out({(py::ssize_t)(2 * B + 1), (py::ssize_t)a});
  int64_t* c = out.mutable_data();
  std::fill(c, c + (2 * B + 1) * a, int64_t(0));
  bool bad = false;
  {
    py::gil_scoped_release nogil;
    int64_t prev = m;
    for (int64_t i = 0; i < x.n; ++i) {
      const int64_t v = x[i];
      const uint64_t u = (uint64_t)v - (uint64_t)lo;
      if (u >= (uint64_t)a) {
        bad = true;
        break;
      }
      ++c[ctx_of(prev, m, B) * a + (int64_t)u];
      prev = v;
    }
  }
  if (bad) throw py::value_error("ctx_hist: value outside [lo, lo + a)");
  return out;
}

// jobs: (x int64, m, B, [(lo, rank int32, weights uint32)] * (2B + 1)); one word array each.
py::list encode_ctx_many(py::list jobs_in) {
  struct Job {
    I64View x;
    int64_t m = 0;
    int B = 1;
    std::vector<CtxTable> ctx;
    std::vector<uint32_t> out;
    std::string err;
  };
  std::vector<Job> jobs(py::len(jobs_in));
  for (size_t j = 0; j < jobs.size(); ++j) {
    auto t = py::reinterpret_borrow<py::tuple>(jobs_in[j]);
    if (t.size() != 4) throw py::value_error("encode_ctx_many: a job is (x, m, B, tables)");
    Job& job = jobs[j];
    job.x = I64View(t[0]);
    parse_ctx_header(t, &job.m, &job.B, "encode_ctx_many");
    auto tabs = py::reinterpret_borrow<py::list>(t[3]);
    if ((int)py::len(tabs) != 2 * job.B + 1) throw py::value_error("encode_ctx_many: need 2B + 1 tables");
    job.ctx.resize(2 * job.B + 1);
    for (int c = 0; c <= 2 * job.B; ++c) {
      auto tt = py::reinterpret_borrow<py::tuple>(tabs[c]);
      job.ctx[c].lo = tt[0].cast<int64_t>();
      job.ctx[c].rank = tt[1].cast<i32arr>();
      job.ctx[c].w = tt[2].cast<u32arr>();
    }
  }
  {
    py::gil_scoped_release nogil;
    int64_t nj = (int64_t)jobs.size();
#pragma omp parallel for schedule(dynamic, 1) if (nj > 1)
    for (int64_t j = 0; j < nj; ++j) {
      Job& job = jobs[j];
      for (auto& c : job.ctx) {
        c.coded = c.w.size() >= 2;
        if (c.coded && job.err.empty()) job.err = c.m.build(c.w.data(), c.w.size());
      }
      if (!job.err.empty()) continue;
      Encoder enc;
      enc.words.reserve(size_t(job.x.n / 4 + 4));
      for (int64_t i = job.x.n - 1; i >= 0; --i) {
        const CtxTable& c = job.ctx[ctx_of(i ? job.x[i - 1] : job.m, job.m, job.B)];
        const uint64_t u = (uint64_t)job.x[i] - (uint64_t)c.lo;
        const int32_t s = u < (uint64_t)c.rank.size() ? c.rank.data()[u] : -1;
        if (s < 0 || s >= (c.coded ? c.m.a : 1)) {
          job.err = "value outside its context table";
          break;
        }
        if (c.coded) enc.put(c.m.sym[s].cdf, c.m.sym[s].freq);
      }
      enc.finish();
      job.out.swap(enc.words);
    }
  }
  return words_result(jobs);
}

// Bytes of a context block (docs/gsz-format.md, integer stream mode 7, after the mode byte).
struct ByteReader {
  const uint8_t* p;
  size_t n, pos = 0;
  bool varint(uint64_t* v) {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos >= n) return false;
      const uint8_t b = p[pos++];
      value |= uint64_t(b & 0x7F) << shift;
      if (b < 0x80) {
        *v = value;
        return true;
      }
    }
    return false;  // too long
  }
  bool svarint(int64_t* v) {
    uint64_t u;
    if (!varint(&u)) return false;
    *v = (u & 1) ? -(int64_t)(u >> 1) - 1 : (int64_t)(u >> 1);
    return true;
  }
};

constexpr int CTX_TABLE_BITS = 12;
constexpr int64_t MAX_ABS_VALUE = int64_t(1) << 40;

// Decoder-side table of one context: per symbol its (cdf, freq), value and the context of the next
// value (ctx_of(value)), so the decode loop never recomputes contexts. A context with one value
// codes as a single symbol of weight 2^24 (the rANS state passes through unchanged, exactly as
// the encoder skips it); next = NO_CTX marks a value whose context has no table (corrupt input).
constexpr int32_t NO_CTX = -1;
struct CtxEntry {
  uint32_t cdf, freq;
  int64_t value;
  int32_t next;
};
struct CtxDecTable {
  std::vector<CtxEntry> ent;
  std::vector<uint16_t> bucket;  // top CTX_TABLE_BITS bits of the quantile -> symbol (exact tables)
};

// Parses a context block (every size checked against the bytes present) into decoder tables and words.
static std::string parse_ctx_dec(const uint8_t* data, size_t size, int64_t* m, int* B, std::vector<CtxDecTable>* ctx,
                                 std::vector<uint32_t>* words) {
  ByteReader r{data, size};
  if (!r.svarint(m) || *m <= -MAX_ABS_VALUE || *m >= MAX_ABS_VALUE || r.pos >= r.n) return "bad context stream header";
  *B = r.p[r.pos++];
  if (*B < 1 || *B > MAX_CTX_B) return "bad context stream header";
  ctx->assign(2 * *B + 1, CtxDecTable());
  for (auto& c : *ctx) {
    uint64_t a;
    if (!r.varint(&a) || a > (uint64_t)MAX_ALPHABET / 4) return "bad context table";
    if (a == 0) continue;
    int64_t lo;
    if (!r.svarint(&lo) || lo <= -MAX_ABS_VALUE || lo >= MAX_ABS_VALUE) return "bad context table";
    uint64_t sum = 0;
    for (uint64_t i = 0; i < a; ++i) {
      uint64_t wi;
      if (!r.varint(&wi) || wi > (uint64_t(1) << CTX_TABLE_BITS)) return "bad context table";
      if (wi) c.ent.push_back({(uint32_t)(sum << (PRECISION - CTX_TABLE_BITS)),
                               (uint32_t)(wi << (PRECISION - CTX_TABLE_BITS)), lo + (int64_t)i, 0});
      sum += wi;
    }
    if (sum != (uint64_t(1) << CTX_TABLE_BITS)) return "bad context table";
  }
  uint64_t len;
  if (!r.varint(&len) || len > r.n - r.pos || len % 4) return "bad context stream words";
  if (r.pos + len != r.n) return "context stream has trailing bytes";
  words->resize(len / 4);
  for (size_t i = 0; i < len / 4; ++i) {
    const uint8_t* q = r.p + r.pos + 4 * i;
    (*words)[i] = uint32_t(q[0]) | uint32_t(q[1]) << 8 | uint32_t(q[2]) << 16 | uint32_t(q[3]) << 24;
  }
  for (auto& c : *ctx) {
    if (c.ent.empty()) continue;
    c.bucket.assign(size_t(1) << CTX_TABLE_BITS, 0);
    for (size_t s = 0; s < c.ent.size(); ++s) {
      CtxEntry& e = c.ent[s];
      const int t = ctx_of(e.value, *m, *B);
      e.next = (*ctx)[t].ent.empty() ? NO_CTX : t;
      const uint32_t b0 = e.cdf >> (PRECISION - CTX_TABLE_BITS), b1 = b0 + (e.freq >> (PRECISION - CTX_TABLE_BITS));
      for (uint32_t b = b0; b < b1; ++b) c.bucket[b] = (uint16_t)s;
    }
  }
  return "";
}

// One stream being decoded: its tables, rANS state, current context and output.
struct CtxLane {
  const CtxDecTable* tab;
  Decoder dec;
  int32_t c;
  int64_t* dst;
  bool bad = false;
};

// K lanes of equal length side by side in one loop: each stream is one long dependency chain
// (state -> symbol -> next context), so interleaving keeps the core busy.
template <int K>
static void ctx_lanes(CtxLane* const* lane, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    for (int k = 0; k < K; ++k) {
      CtxLane& l = *lane[k];
      const CtxDecTable& t = l.tab[l.c];
      const uint32_t q = (uint32_t)(l.dec.state & QMASK);
      const CtxEntry& e = t.ent[t.bucket[q >> (PRECISION - CTX_TABLE_BITS)]];
      l.dec.state = (l.dec.state >> PRECISION) * e.freq + (q - e.cdf);
      if (l.dec.state < LOW && l.dec.pos > 0) l.dec.state = (l.dec.state << 32) | l.dec.words[--l.dec.pos];
      l.dst[i] = e.value;
      if (e.next < 0)
        l.bad = true;  // reported by the caller; the lane goes on in its last (valid) context
      else
        l.c = e.next;
    }
  }
}

// jobs: (block bytes (a context block, after the mode byte), out int64 (n)); returns one error
// string per job ("" = ok). A context whose table is empty must never occur.
std::vector<std::string> decode_ctx_many(py::list jobs_in) {
  struct Job {
    py::buffer_info block;
    std::vector<uint32_t> words;
    int64_t m = 0;
    int B = 1;
    std::vector<CtxDecTable> ctx;
    py::array out;
    int64_t* dst = nullptr;
    int64_t n = 0;
    std::string err;
  };
  std::vector<Job> jobs(py::len(jobs_in));
  for (size_t j = 0; j < jobs.size(); ++j) {
    auto t = py::reinterpret_borrow<py::tuple>(jobs_in[j]);
    if (t.size() != 2) throw py::value_error("decode_ctx_many: a job is (block, out)");
    Job& job = jobs[j];
    job.block = py::buffer(t[0]).request();
    if (job.block.ndim != 1 || job.block.itemsize != 1) throw py::value_error("decode_ctx_many: block must be bytes");
    job.dst = out_ptr<int64_t>(t[1], &job.out, "decode_ctx_many");
    job.n = job.out.size();
  }
  {
    py::gil_scoped_release nogil;
    const int64_t nj = (int64_t)jobs.size();
    auto batches = batch_by_length(nj, [&](int64_t j) { return jobs[j].n; });
    const int64_t nb = (int64_t)batches.size();
#pragma omp parallel for schedule(dynamic, 1) if (nb > 1)
    for (int64_t b = 0; b < nb; ++b) {
      CtxLane lanes[HIST_K];
      CtxLane* ok[HIST_K];
      int64_t okj[HIST_K];
      int nok = 0;
      for (size_t k = 0; k < batches[b].size(); ++k) {
        Job& job = jobs[batches[b][k]];
        job.err = parse_ctx_dec(static_cast<const uint8_t*>(job.block.ptr), (size_t)job.block.size, &job.m, &job.B,
                                &job.ctx, &job.words);
        if (job.err.empty()) job.err = lanes[k].dec.init(job.words.data(), (int64_t)job.words.size());
        if (job.err.empty() && job.n > 0 && job.ctx[job.B].ent.empty())
          job.err = "context stream reaches a context it has no table for (corrupt)";
        if (!job.err.empty()) continue;
        lanes[k].tab = job.ctx.data();
        lanes[k].c = job.B;  // the context of p = m
        lanes[k].dst = job.dst;
        okj[nok] = batches[b][k];
        ok[nok++] = &lanes[k];
      }
      const int64_t n = jobs[batches[b][0]].n;
      for (int done = 0; done < nok;) {
        const int take = nok - done >= 4 ? 4 : nok - done >= 2 ? 2 : 1;
        if (take == 4)
          ctx_lanes<4>(ok + done, n);
        else if (take == 2)
          ctx_lanes<2>(ok + done, n);
        else
          ctx_lanes<1>(ok + done, n);
        done += take;
      }
      for (int t = 0; t < nok; ++t) {
        if (ok[t]->bad)
          jobs[okj[t]].err = "context stream reaches a context it has no table for (corrupt)";
        else if (!ok[t]->dec.finished())
          jobs[okj[t]].err = "rANS stream has trailing data (corrupt)";
      }
    }
  }
  std::vector<std::string> errs;
  for (auto& job : jobs) errs.push_back(job.err);
  return errs;
}

// Decoder side of dq_quantize_many, many sequences at once (quant.dq_unpack is the numpy reference):
// r_j = 2 k_j - h_j sgn(k_j), h_j = parity of k_{j-1} + k_{j-3} + ...; in place on int64 arrays.
void dq_unpack_many(py::list seqs) {
  std::vector<py::array_t<int64_t>> arr;
  for (auto o : seqs) {
    auto a = o.cast<py::array_t<int64_t>>();
    if (a.ndim() != 1 || !(a.flags() & py::array::c_style) || !a.writeable())
      throw py::value_error("dq_unpack_many: need writable contiguous 1-D int64 arrays");
    arr.push_back(a);
  }
  std::vector<int64_t*> ptr;
  std::vector<int64_t> len;
  for (auto& a : arr) ptr.push_back(a.mutable_data()), len.push_back(a.shape(0));
  const int64_t m = (int64_t)arr.size();
  py::gil_scoped_release nogil;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t j = 0; j < m; ++j) {
    int64_t* k = ptr[j];
    int h = 0, l = 0;  // state (h, l) -> (l ^ parity(k), h)
    for (int64_t i = 0; i < len[j]; ++i) {
      const int64_t v = k[i];
      const int p = (int)(v & 1);
      k[i] = 2 * v - (h ? (v > 0) - (v < 0) : 0);
      const int nh = l ^ p;
      l = h, h = nh;
    }
  }
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "rANS coder byte-compatible with constriction's AnsCoder (u32 words, u64 state, 24-bit tables)";
  m.def("encode_many", &encode_many, "encode independent streams (lists of (indices, weights) groups) in parallel");
  m.def("decode_many", &decode_many, "decode independent multi-group streams in parallel into int32 outputs");
  m.def("decode_hist_many", &decode_hist_many, "decode histogram streams in parallel: rank -> value (+ prefix sum)");
  m.def("analyze_many", &analyze_many, "ranges and histograms of int64 arrays and their first differences");
  m.def("encode_hist_many", &encode_hist_many, "histogram streams from int64 values (rank table + weights)");
  m.def("encode_ctx_many", &encode_ctx_many, "context streams (table by the previous value) from int64 values");
  m.def("ctx_hist", &ctx_hist, "counts of (context of the previous value, value - lo) of one int64 array");
  m.def("decode_ctx_many", &decode_ctx_many, "decode context streams in parallel into int64 outputs");
  m.def("max_threads", &max_threads);
  m.def("quantize", &quantize, py::arg("x"), py::arg("step"), py::arg("columns") = false);
  m.def("transpose_i64", &transpose_i64);
  m.def("morton_encode", &morton_encode);
  m.def("morton_decode", &morton_decode);
  m.def("dequantize_positions", &dequantize_positions);
  m.def("pack_bits", &pack_bits);
  m.def("unpack_bits", &unpack_bits);
  m.def("morton_delta_codes", &morton_delta_codes, "sorted Morton codes from delta classes and raw bits");
  m.def("classed_means", &classed_means, "adaptive positions: coarse codes + refinement bits -> float32 (n, 3)");
  // (out: noconvert, so that an array of another layout or dtype is refused, not copied and written there)
  m.def("scatter_rows", &scatter_rows, "per-class column streams back into an (n, w) array", py::arg("out").noconvert(),
        py::arg("rows"), py::arg("cols"));
  m.def("scatter_dequantize", &scatter_dequantize, "scatter_rows then dequantize_classed, into float32 columns",
        py::arg("out").noconvert(), py::arg("j0"), py::arg("rows"), py::arg("cols"), py::arg("steps"));
  m.def("dequantize_classed", &dequantize_classed, "float32(sym * ldexp(step of the column, class of the row))");
  m.def("s3_to_quats", &s3_to_quats, py::arg("s3"), py::arg("step"), py::arg("row_steps") = py::none());
  m.def("quats_to_s3", &quats_to_s3);
  m.def("sort_axes", &sort_axes, "posthoc.sort_axes: axes relabelled by decreasing scale (None: not finite)");
  m.def("axes_levels", &axes_levels, "codec.axes.free_axis_levels: (free axis, level)");
  m.def("axes_to_quats", &axes_to_quats, "codec.axes decode: (float32 wxyz quaternions, 0) or (None, error code)");
  m.def("canonical_quats", &canonical_quats, "posthoc.canonical_quats (None: not finite)");
  m.def("quats_rest", &quats_rest, "quant.quats_rest: (largest index, other three) (None: not finite)");
  m.def("dq_unpack_many", &dq_unpack_many, "coded levels -> reconstruction indices, in place, many sequences");
  m.def("dq_quantize_many", &dq_quantize_many, "trellis (dependent) quantization of independent sequences");
  py::class_<StreamDecoder>(m, "StreamDecoder")
      .def(py::init<u32arr>())
      .def("decode", &StreamDecoder::decode)
      .def("finished", &StreamDecoder::finished);
}
