// The rows' top-k of `saesanity.sae.select` (its docstring has the definition and the cost); built on first
// use by torch.utils.cpp_extension. Exact: the k largest values of each row, ties broken by a per-row cyclic
// order of the indices, returned as indices in ascending order.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <algorithm>
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
    uint32_t b; std::memcpy(&b, &m, 4);
    gkey[ng++] = int32_t(b) ^ ((int32_t(b) >> 31) & 0x7fffffff);
  }
  if (nan) return false;
  for (int64_t g = ng; g % 16; ++g) gkey[g] = INT32_MIN;
  const float tau = unkey(kth_largest_key(gkey, (ng + 15) / 16 * 16, K));
  const __m512 t = _mm512_set1_ps(tau);
  int64_t n = 0;
  auto push = [&](int64_t j, float x) {
    if (cand.size() < size_t(n + 16)) { cand.resize(2 * (n + 16)); ckey.resize(2 * (n + 16)); }
    cand[n].v = x; cand[n].i = (int32_t)j;
    uint32_t b; std::memcpy(&b, &x, 4);
    ckey[n++] = int32_t(b) ^ ((int32_t(b) >> 31) & 0x7fffffff);
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

}  // namespace

TORCH_LIBRARY(saesanity, m) { m.def("topk_rows(Tensor pre, int k) -> Tensor", &topk_rows); }
