// The rows' top-k of `saesanity.sae.select` (its docstring has the definition and the cost); built on first
// use by torch.utils.cpp_extension. Exact: the k largest values of each row, ties broken by a per-row cyclic
// order of the indices, returned as indices in ascending order.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <tuple>
#include <utility>
#include <type_traits>
#include <climits>
#include <cstdint>
#include <atomic>
#include <cstring>
#include <vector>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

struct Cand { float v; int32_t i; int32_t r; };  // value, index, tie rank (index - offset mod F)
inline bool better(const Cand& a, const Cand& b) { return a.v > b.v || (a.v == b.v && a.r < b.r); }

constexpr int64_t BS = 32;  // block of a row whose maximum is taken in the first pass

// Row b's tie offset (select.py `tie_offsets`): Fibonacci hashing of the row number, spread over [0, F)
inline int64_t tie_offset(int64_t b, int64_t F) { return int64_t((uint64_t(b) * 2654435761ull) % uint64_t(F)); }

inline float bf16_to_f(uint16_t h) { uint32_t u = uint32_t(h) << 16; float f; std::memcpy(&f, &u, 4); return f; }

// Row r (F values, T float or uint16 bf16 bits) -> its K largest, ties to the first index at or after `off`
// cyclically; indices ascending.
template <typename T>
bool select_row(const T* r, int64_t F, int64_t K, int64_t off, float* row, float* bmax, std::vector<Cand>& cand, std::vector<float>& tmp, int64_t* out) {
  const int64_t nb = F / BS, tail = F - nb * BS;
  int nan = 0;
  for (int64_t j = 0; j < F; ++j) {
    if constexpr (std::is_same_v<T, float>) row[j] = r[j]; else row[j] = bf16_to_f(r[j]);
    nan |= row[j] != row[j];
  }
  if (nan) return false;
  for (int64_t b = 0; b < nb; ++b) {
    const float* p = row + b * BS;
    float acc[16];
    for (int i = 0; i < 16; ++i) acc[i] = p[i];
    for (int i = 0; i < 16; ++i) acc[i] = acc[i] > p[16 + i] ? acc[i] : p[16 + i];
    float m = acc[0];
    for (int i = 1; i < 16; ++i) m = acc[i] > m ? acc[i] : m;
    bmax[b] = m;
  }
  int64_t nblk = nb;
  if (tail) {
    float m = row[nb * BS];
    for (int64_t j = nb * BS + 1; j < F; ++j) m = row[j] > m ? row[j] : m;
    bmax[nblk++] = m;
  }
  // tau = K-th largest block maximum: at least K values are >= tau, so the K largest all are
  tmp.assign(bmax, bmax + nblk);
  std::nth_element(tmp.begin(), tmp.begin() + (K - 1), tmp.end(), std::greater<float>());
  const float tau = tmp[K - 1];
  int64_t n = 0;
  for (int64_t b = 0; b < nblk; ++b) {
    if (!(bmax[b] >= tau)) continue;
    const int64_t e = std::min(F, (b + 1) * BS);
    if (cand.size() < size_t(n + BS)) cand.resize(2 * (n + BS));
    for (int64_t j = b * BS; j < e; ++j) {
      cand[n] = {row[j], (int32_t)j, (int32_t)(j >= off ? j - off : j - off + F)};
      n += row[j] >= tau;
    }
  }
  if (n > K) std::nth_element(cand.begin(), cand.begin() + (K - 1), cand.begin() + n, better);
  for (int64_t j = 0; j < K; ++j) out[j] = cand[j].i;
  std::sort(out, out + K);
  return true;
}

#if defined(__AVX512F__)
// The same selection with AVX-512, in three vector passes and no sort (≈ 2.5x the scalar row above on the AMD EPYC
// kind). The output is the scalar row's, index for index (tests/test_select.py checks both against a sort):
// - Groups: a chunk of 512 values is 32 vectors of 16 lanes, and lane l's 32 values (stride 16) are one group, so
//   the group maxima are vertical maxima; the values past the last whole chunk form groups of 32 consecutive ones.
//   Any grouping gives a bound tau = the K-th largest group maximum <= the K-th largest value.
// - The K-th largest of n floats is found by bisection on their order-preserving int32 keys, counting keys >= a
//   trial key 16 at a time (32 rounds at most), instead of a branchy nth_element.
// - The candidates (every value >= tau, in index order) give the K-th largest value v; the row keeps every value
//   > v and, of those equal to v, the first ones in its cyclic order from `off` (what `better` ranks first), and
//   writes them in index order: no sort.
constexpr int64_t CH = 512;

inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const uint16_t* p) {  // 16 bf16 -> fp32: the bits are the top half of the float's
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16));
}
inline float value(const float* r, int64_t j) { return r[j]; }
inline float value(const uint16_t* r, int64_t j) { return bf16_to_f(r[j]); }

// int32 keys in the floats' order (-0 just below +0; no NaN here): flip the magnitude bits of negative floats
inline __m512i key16(__m512 x) {
  const __m512i b = _mm512_castps_si512(x);
  return _mm512_xor_si512(b, _mm512_and_si512(_mm512_srai_epi32(b, 31), _mm512_set1_epi32(0x7fffffff)));
}
inline int32_t key1(float x) {
  uint32_t b; std::memcpy(&b, &x, 4);
  return int32_t(b) ^ ((int32_t(b) >> 31) & 0x7fffffff);
}
inline float unkey(int32_t k) {
  const uint32_t b = uint32_t(k ^ ((k >> 31) & 0x7fffffff));
  float f; std::memcpy(&f, &b, 4); return f;
}

// The K-th largest of keys[0, n) (n a multiple of 16, padding INT32_MIN; 1 <= K <= the real count)
int32_t kth_largest_key(const int32_t* keys, int64_t n, int64_t K) {
  __m512i lo_v = _mm512_set1_epi32(INT32_MAX), hi_v = _mm512_set1_epi32(INT32_MIN);
  for (int64_t i = 0; i < n; i += 16) {
    const __m512i k = _mm512_loadu_si512(keys + i);
    hi_v = _mm512_max_epi32(hi_v, k);
    lo_v = _mm512_min_epi32(lo_v, _mm512_mask_blend_epi32(_mm512_cmpeq_epi32_mask(k, _mm512_set1_epi32(INT32_MIN)), k, _mm512_set1_epi32(INT32_MAX)));
  }
  int64_t lo = _mm512_reduce_min_epi32(lo_v), hi = _mm512_reduce_max_epi32(hi_v);  // count(>= lo) >= K
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    const __m512i t = _mm512_set1_epi32(int32_t(mid));
    int64_t c = 0;
    for (int64_t i = 0; i < n; i += 16) c += __builtin_popcount(_mm512_cmpge_epi32_mask(_mm512_loadu_si512(keys + i), t));
    if (c >= K) lo = mid; else hi = mid - 1;
  }
  return int32_t(lo);
}

template <typename T>
bool select_row_avx512(const T* r, int64_t F, int64_t K, int64_t off, int32_t* gkey, std::vector<Cand>& cand, std::vector<int32_t>& ckey, int64_t* out) {
  const int64_t nc = F / CH;
  int64_t ng = 0;
  __mmask16 nan = 0;
  for (int64_t c = 0; c < nc; ++c) {
    const T* p = r + c * CH;
    __m512 m = load16(p);
    nan |= _mm512_cmp_ps_mask(m, m, _CMP_UNORD_Q);
    for (int v = 1; v < CH / 16; ++v) {
      const __m512 x = load16(p + 16 * v);
      nan |= _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
      m = _mm512_max_ps(m, x);
    }
    _mm512_storeu_si512(gkey + ng, key16(m));
    ng += 16;
  }
  for (int64_t s = nc * CH; s < F; s += BS) {
    const int64_t e = std::min(F, s + BS);
    float m = value(r, s);
    for (int64_t j = s; j < e; ++j) {
      const float x = value(r, j);
      if (x != x) return false;
      m = x > m ? x : m;
    }
    gkey[ng++] = key1(m);
  }
  if (nan) return false;
  for (int64_t g = ng; g % 16; ++g) gkey[g] = INT32_MIN;
  const float tau = unkey(kth_largest_key(gkey, (ng + 15) / 16 * 16, K));
  const __m512 t = _mm512_set1_ps(tau);
  int64_t n = 0;
  auto push = [&](int64_t j, float x) {
    if (cand.size() < size_t(n + 16)) { cand.resize(2 * (n + 16)); ckey.resize(2 * (n + 16)); }
    cand[n].v = x; cand[n].i = (int32_t)j;
    ckey[n++] = key1(x);
  };
  for (int64_t c = 0; c < nc; ++c) {
    const T* p = r + c * CH;
    for (int v = 0; v < CH / 16; ++v) {
      const __m512 x = load16(p + 16 * v);
      for (__mmask16 mk = _mm512_cmp_ps_mask(x, t, _CMP_GE_OQ); mk; mk &= mk - 1) {
        const int64_t j = c * CH + 16 * v + __builtin_ctz(mk);
        push(j, value(r, j));
      }
    }
  }
  for (int64_t s = nc * CH; s < F; ++s)
    if (value(r, s) >= tau) push(s, value(r, s));
  if (n == K) {  // the usual case with few ties: every candidate, already in index order
    for (int64_t j = 0; j < K; ++j) out[j] = cand[j].i;
    return true;
  }
  for (int64_t j = n; j % 16; ++j) ckey[j] = INT32_MIN;
  const float v = unkey(kth_largest_key(ckey.data(), (n + 15) / 16 * 16, K));
  int64_t above = 0, first = -1, nt = 0;  // #{> v}; the first tied candidate at or after `off`; #{== v}
  for (int64_t j = 0; j < n; ++j) {
    above += cand[j].v > v;
    if (cand[j].v == v) { if (first < 0 && cand[j].i >= off) first = nt; ++nt; }
  }
  const int64_t need = K - above;  // tied ones kept: cyclic positions first, first+1, ... (mod nt)
  if (first < 0) first = 0;
  int64_t o = 0, q = 0;
  for (int64_t j = 0; j < n; ++j) {
    if (cand[j].v > v) { out[o++] = cand[j].i; continue; }
    if (cand[j].v == v) {
      const int64_t pos = q >= first ? q - first : q - first + nt;
      if (pos < need) out[o++] = cand[j].i;
      ++q;
    }
  }
  return true;
}
#endif

at::Tensor topk_rows(const at::Tensor& pre, int64_t K) {
  TORCH_CHECK(pre.dim() == 2 && pre.is_contiguous() && pre.device().is_cpu(), "topk_rows: a contiguous 2-D CPU tensor");
  const int64_t B = pre.size(0), F = pre.size(1);
  TORCH_CHECK(K > 0 && K * BS <= F, "topk_rows: needs 0 < k <= F / 32");
  TORCH_CHECK(F < (int64_t(1) << 31), "topk_rows: F < 2^31");
  const bool bf = pre.scalar_type() == at::kBFloat16;
  TORCH_CHECK(bf || pre.scalar_type() == at::kFloat, "topk_rows: float32 or bfloat16");
  auto out = at::empty({B, K}, pre.options().dtype(at::kLong));
  int64_t* o = out.data_ptr<int64_t>();
  const void* base = pre.data_ptr();
  std::atomic<int64_t> bad{-1};
  at::parallel_for(0, B, 16, [&](int64_t b0, int64_t b1) {
    std::vector<float> row(F), bmax(F / BS + 1), tmp;  // group maxima: ceil(F / 32) in either row function
    std::vector<int32_t> gkey(F / BS + 17), ckey(4 * K + 64);  // the AVX-512 row's keys, padded to 16
    std::vector<Cand> cand; cand.resize(4 * K + 64);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t off = tie_offset(b, F);
#if defined(__AVX512F__)
      const bool ok = bf ? select_row_avx512(static_cast<const uint16_t*>(base) + b * F, F, K, off, gkey.data(), cand, ckey, o + b * K)
                         : select_row_avx512(static_cast<const float*>(base) + b * F, F, K, off, gkey.data(), cand, ckey, o + b * K);
#else
      const bool ok = bf ? select_row(static_cast<const uint16_t*>(base) + b * F, F, K, off, row.data(), bmax.data(), cand, tmp, o + b * K)
                         : select_row(static_cast<const float*>(base) + b * F, F, K, off, row.data(), bmax.data(), cand, tmp, o + b * K);
#endif
      if (!ok) bad.store(b);
    }
  });
  TORCH_CHECK(bad.load() < 0, "topk_rows: NaN in row ", bad.load(), " of the pre-activations");
  return out;
}

// BatchTopK's selection (select.py `batch_topk_csr`): the n largest positive entries of the whole [B, F] and every
// entry equal to the n-th (ties at the threshold all kept), as a CSR pattern in row-major order. The threshold t is
// found by histograms of the positive values' bits, which order positive floats as unsigned integers: one pass of
// 2^16 bins for bf16; for fp32 one pass on the top 16 bits and one on the low 16 bits of the bucket that holds t.
// Then one pass counts each row's entries >= t and one writes their columns.
template <typename U>
inline uint32_t bits_of(U v) { return uint32_t(v); }

template <typename U>
std::vector<int64_t> histogram(const U* p, int64_t B, int64_t F, int shift, int64_t match_hi, std::atomic<int64_t>& bad) {
  const int nt = at::get_num_threads();
  std::vector<std::vector<int64_t>> part(nt, std::vector<int64_t>(1 << 16, 0));
  at::parallel_for(0, B, 64, [&](int64_t b0, int64_t b1) {
    auto& h = part[at::get_thread_num()];
    for (int64_t i = b0 * F; i < b1 * F; ++i) {
      const uint32_t u = bits_of(p[i]);
      if (sizeof(U) == 2 ? (u & 0x7fff) > 0x7f80 : (u & 0x7fffffff) > 0x7f800000) { bad.store(i / F); continue; }
      if (u == 0 || (sizeof(U) == 2 ? (u >> 15) : (u >> 31))) continue;  // not positive
      if (match_hi >= 0 && int64_t(u >> 16) != match_hi) continue;
      ++h[(u >> shift) & 0xffff];
    }
  });
  std::vector<int64_t> out(1 << 16, 0);
  for (auto& h : part) for (int i = 0; i < (1 << 16); ++i) out[i] += h[i];
  return out;
}

// the bin holding the n-th largest (counting down from the top bin), and how many lie above it; -1 if fewer than n
inline int64_t nth_bin(const std::vector<int64_t>& h, int64_t n, int64_t& above) {
  above = 0;
  for (int64_t b = (1 << 16) - 1; b >= 0; --b) {
    if (above + h[b] >= n) return b;
    above += h[b];
  }
  return -1;
}

// Rows as CSR (crow [B + 1], col [nnz]): row r has count(r) entries, which write(r, out) writes in index order
template <typename Count, typename Write>
std::pair<at::Tensor, at::Tensor> csr_of(int64_t B, const at::TensorOptions& opt, Count count, Write write) {
  std::vector<int64_t> ptr(B + 1, 0);
  at::parallel_for(0, B, 64, [&](int64_t r0, int64_t r1) { for (int64_t r = r0; r < r1; ++r) ptr[r + 1] = count(r); });
  for (int64_t r = 0; r < B; ++r) ptr[r + 1] += ptr[r];
  auto crow = at::empty({B + 1}, opt.dtype(at::kLong));
  auto col = at::empty({ptr[B]}, opt.dtype(at::kLong));
  std::memcpy(crow.data_ptr<int64_t>(), ptr.data(), sizeof(int64_t) * (B + 1));
  int64_t* c = col.data_ptr<int64_t>();
  at::parallel_for(0, B, 64, [&](int64_t r0, int64_t r1) { for (int64_t r = r0; r < r1; ++r) write(r, c + ptr[r]); });
  return {crow, col};
}

template <typename U>
std::tuple<at::Tensor, at::Tensor, double> batch_select(const U* p, int64_t B, int64_t F, int64_t n, const at::TensorOptions& opt) {
  std::atomic<int64_t> bad{-1};
  uint32_t tkey = 1;  // the smallest positive value: fewer than n positive entries keeps them all
  int64_t above = 0;
  auto h1 = histogram(p, B, F, sizeof(U) == 2 ? 0 : 16, -1, bad);
  TORCH_CHECK(bad.load() < 0, "batch_topk_csr: NaN in row ", bad.load(), " of the pre-activations");
  const int64_t b1 = nth_bin(h1, n, above);
  if (b1 >= 0) {
    tkey = uint32_t(b1);
    if (sizeof(U) == 4) {
      auto h2 = histogram(p, B, F, 0, b1, bad);
      int64_t above2 = 0;
      const int64_t b2 = nth_bin(h2, n - above, above2);
      tkey = (uint32_t(b1) << 16) | uint32_t(b2 < 0 ? 0 : b2);
    }
  }
  auto keep = [&](uint32_t u) { return !(sizeof(U) == 2 ? (u >> 15) : (u >> 31)) && u >= tkey; };
  auto [crow, col] = csr_of(B, opt,
      [&](int64_t r) { int64_t c = 0; for (int64_t j = 0; j < F; ++j) c += keep(bits_of(p[r * F + j])); return c; },
      [&](int64_t r, int64_t* out) { for (int64_t j = 0; j < F; ++j) if (keep(bits_of(p[r * F + j]))) *out++ = j; });
  float t;
  if (sizeof(U) == 2) { const uint32_t w = tkey << 16; std::memcpy(&t, &w, 4); } else std::memcpy(&t, &tkey, 4);
  return {crow, col, double(t)};
}

#if defined(__AVX512F__)
// The fast path (AVX-512): a bound L from a sample of rows (the sample's 2·n·m/B + 64-th largest positive value,
// m sampled rows), then one vector pass counts the entries >= L per row; if they are at least n, L is at most the
// n-th largest and every entry the selection keeps is among them (≈ 2n candidates), so the threshold is the n-th
// largest candidate and the CSR is the candidates >= it. If the sample misjudged (fewer than n), the exact
// histogram path runs instead: the same output either way.
template <typename U>
bool batch_select_fast(const U* p, int64_t B, int64_t F, int64_t n, const at::TensorOptions& opt,
                       std::tuple<at::Tensor, at::Tensor, double>& res) {
  using T = typename std::conditional<sizeof(U) == 2, uint16_t, float>::type;
  const T* q = reinterpret_cast<const T*>(p);
  const int64_t step = std::max<int64_t>(1, B / 128), m = (B + step - 1) / step;
  std::vector<float> sample;
  for (int64_t r = 0; r < B; r += step)
    for (int64_t j = 0; j < F; ++j) { const float x = value(q + r * F, j); if (x > 0) sample.push_back(x); }
  const int64_t want = std::min<int64_t>(int64_t(sample.size()), 2 * n * m / B + 64);
  if (want < 1 || int64_t(sample.size()) < want) return false;
  std::nth_element(sample.begin(), sample.begin() + (want - 1), sample.end(), std::greater<float>());
  const float L = sample[want - 1];
  if (!(L > 0)) return false;
  const __m512 lv = _mm512_set1_ps(L);
  std::vector<int64_t> counts(B + 1, 0);
  std::atomic<int64_t> bad{-1};
  const int64_t nv = F / 16;
  at::parallel_for(0, B, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* row = q + r * F;
      int64_t c = 0;
      __mmask16 nan = 0;
      for (int64_t v = 0; v < nv; ++v) {
        const __m512 x = load16(row + 16 * v);
        nan |= _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
        c += __builtin_popcount(_mm512_cmp_ps_mask(x, lv, _CMP_GE_OQ));
      }
      for (int64_t j = nv * 16; j < F; ++j) { const float x = value(row, j); if (x != x) nan = 1; c += x >= L; }
      if (nan) bad.store(r);
      counts[r + 1] = c;
    }
  });
  TORCH_CHECK(bad.load() < 0, "batch_topk_csr: NaN in row ", bad.load(), " of the pre-activations");
  for (int64_t r = 0; r < B; ++r) counts[r + 1] += counts[r];
  if (counts[B] < n) return false;
  std::vector<int32_t> ccol(counts[B] + 16);
  std::vector<float> cval(counts[B] + 16);
  at::parallel_for(0, B, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* row = q + r * F;
      int64_t o = counts[r];
      for (int64_t v = 0; v < nv; ++v) {
        const __m512 x = load16(row + 16 * v);
        const __mmask16 mk = _mm512_cmp_ps_mask(x, lv, _CMP_GE_OQ);
        if (!mk) continue;
        const __m512i idx = _mm512_add_epi32(_mm512_set1_epi32(int32_t(16 * v)), _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
        _mm512_mask_compressstoreu_epi32(ccol.data() + o, mk, idx);
        _mm512_mask_compressstoreu_ps(cval.data() + o, mk, x);
        o += __builtin_popcount(mk);
      }
      for (int64_t j = nv * 16; j < F; ++j) { const float x = value(row, j); if (x >= L) { ccol[o] = int32_t(j); cval[o++] = x; } }
    }
  });
  const int64_t nc = counts[B];
  std::vector<float> tmp(cval.begin(), cval.begin() + nc);
  std::nth_element(tmp.begin(), tmp.begin() + (n - 1), tmp.end(), std::greater<float>());
  const float t = tmp[n - 1];
  auto [crow, col] = csr_of(B, opt,
      [&](int64_t r) { int64_t c = 0; for (int64_t i = counts[r]; i < counts[r + 1]; ++i) c += cval[i] >= t; return c; },
      [&](int64_t r, int64_t* out) { for (int64_t i = counts[r]; i < counts[r + 1]; ++i) if (cval[i] >= t) *out++ = ccol[i]; });
  res = {crow, col, double(t)};
  return true;
}
#endif

std::tuple<at::Tensor, at::Tensor, double> batch_topk_csr(const at::Tensor& pre, int64_t n) {
  TORCH_CHECK(pre.dim() == 2 && pre.is_contiguous() && pre.device().is_cpu(), "batch_topk_csr: a contiguous 2-D CPU tensor");
  TORCH_CHECK(n > 0, "batch_topk_csr: n > 0");
  const int64_t B = pre.size(0), F = pre.size(1);
  const bool bf = pre.scalar_type() == at::kBFloat16;
  TORCH_CHECK(bf || pre.scalar_type() == at::kFloat, "batch_topk_csr: float32 or bfloat16");
#if defined(__AVX512F__)
  std::tuple<at::Tensor, at::Tensor, double> res;
  if (bf ? batch_select_fast(static_cast<const uint16_t*>(pre.data_ptr()), B, F, n, pre.options(), res)
         : batch_select_fast(static_cast<const uint32_t*>(pre.data_ptr()), B, F, n, pre.options(), res))
    return res;
#endif
  if (bf) return batch_select(static_cast<const uint16_t*>(pre.data_ptr()), B, F, n, pre.options());
  return batch_select(static_cast<const uint32_t*>(pre.data_ptr()), B, F, n, pre.options());
}

}  // namespace

TORCH_LIBRARY(saesanity, m) {
  m.def("topk_rows(Tensor pre, int k) -> Tensor", &topk_rows);
  m.def("batch_topk_csr(Tensor pre, int n) -> (Tensor, Tensor, float)", &batch_topk_csr);
}
