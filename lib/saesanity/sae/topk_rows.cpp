// The rows' top-k of `saesanity.sae.select` (its docstring has the definition and the cost); built on first
// use by torch.utils.cpp_extension. Exact: the k largest values of each row, ties broken by a per-row cyclic
// order of the indices, returned as indices in ascending order.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

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
    std::vector<float> row(F), bmax(F / BS + 1), tmp;
    std::vector<Cand> cand; cand.resize(4 * K + 64);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t off = tie_offset(b, F);
      const bool ok = bf ? select_row(static_cast<const uint16_t*>(base) + b * F, F, K, off, row.data(), bmax.data(), cand, tmp, o + b * K)
                         : select_row(static_cast<const float*>(base) + b * F, F, K, off, row.data(), bmax.data(), cand, tmp, o + b * K);
      if (!ok) bad.store(b);
    }
  });
  TORCH_CHECK(bad.load() < 0, "topk_rows: NaN in row ", bad.load(), " of the pre-activations");
  return out;
}

}  // namespace

TORCH_LIBRARY(saesanity, m) { m.def("topk_rows(Tensor pre, int k) -> Tensor", &topk_rows); }
