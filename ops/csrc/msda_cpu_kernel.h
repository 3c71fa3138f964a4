// CPU multi-scale deformable attention kernels, written once and compiled once per instruction set.
//
// No include guard on purpose: msda_cpu_isa.h includes this file several times, each time inside a different
// `#pragma GCC target(...)` region and with MSDA_ISA naming the namespace, so one binary carries AVX-512, AVX2 and
// baseline versions and picks one at run time (an ahead-of-time build must not assume the build machine's CPU).
// Plain C++ apart from the 16-bit float types bf16_t and half_t, which the including library names (c10's for the
// torch operators, OpenVINO's for its custom op): one kernel source for both.
// The inner loops use 64-byte GCC/Clang vectors over a compile-time channel width, so accumulators stay in registers.
//
// Layouts (all contiguous): value [N, S, M, D], sampling_locations [N, Lq, M, L, P, 2] normalised (x, y),
// attention_weights [N, Lq, M, L, P], output / grad_output [N, Lq, M*D]. Sampling is bilinear with
// align_corners=False and zeros outside, i.e. pixel coordinate = location * size - 0.5.

namespace adaptiveclick_msda {
namespace MSDA_ISA {

// Scalars in the accumulation type (float32 for the reduced-precision types).
inline float to_acc(float x) { return x; }
inline double to_acc(double x) { return x; }
inline float to_acc(bf16_t x) { return static_cast<float>(x); }
#if defined(__FLT16_MAX__)
inline float to_acc(half_t x) { _Float16 h; __builtin_memcpy(&h, &x, sizeof h); return static_cast<float>(h); }
#else
inline float to_acc(half_t x) { return static_cast<float>(x); }
#endif

// Calls fn(row_offset, weight, d_weight/d_px, d_weight/d_py) for each in-bounds corner of a bilinear sample at
// normalised (x, y) on an h x w map; row_offset = y_i * w + x_i. Samples entirely outside contribute nothing
// (NaN and inf locations included: every comparison below is false for them).
template <typename acc_t, typename Fn>
inline void for_each_corner(acc_t x, acc_t y, int64_t h, int64_t w, Fn&& fn) {
  const acc_t px = x * static_cast<acc_t>(w) - acc_t(0.5);
  const acc_t py = y * static_cast<acc_t>(h) - acc_t(0.5);
  if (!(px > acc_t(-1) && py > acc_t(-1) && px < static_cast<acc_t>(w) && py < static_cast<acc_t>(h))) return;
  const acc_t fx = std::floor(px), fy = std::floor(py);
  const int64_t x0 = static_cast<int64_t>(fx), y0 = static_cast<int64_t>(fy);
  const acc_t lx = px - fx, ly = py - fy, hx = acc_t(1) - lx, hy = acc_t(1) - ly;
  if (y0 >= 0) {
    if (x0 >= 0) fn(y0 * w + x0, hy * hx, -hy, -hx);
    if (x0 + 1 < w) fn(y0 * w + x0 + 1, hy * lx, hy, -lx);
  }
  if (y0 + 1 < h) {
    if (x0 >= 0) fn((y0 + 1) * w + x0, ly * hx, -ly, hx);
    if (x0 + 1 < w) fn((y0 + 1) * w + x0 + 1, ly * lx, ly, lx);
  }
}

// ---- vectors: GCC/Clang vector extensions of the ISA's native width (MSDA_VEC_BYTES: 64 zmm, 32 ymm, 16 xmm) --
constexpr int kVecBytes = MSDA_VEC_BYTES;
typedef float VecF __attribute__((vector_size(MSDA_VEC_BYTES)));
typedef double VecD __attribute__((vector_size(MSDA_VEC_BYTES)));
typedef uint16_t VecU16 __attribute__((vector_size(MSDA_VEC_BYTES / 2)));
typedef uint32_t VecU32 __attribute__((vector_size(MSDA_VEC_BYTES)));

template <typename acc_t> struct VecOf;
template <> struct VecOf<float> { using type = VecF; static constexpr int kLanes = kVecBytes / 4; };
template <> struct VecOf<double> { using type = VecD; static constexpr int kLanes = kVecBytes / 8; };

inline VecF load_vec(const float* p) { VecF v; __builtin_memcpy(&v, p, sizeof v); return v; }
inline VecD load_vec(const double* p) { VecD v; __builtin_memcpy(&v, p, sizeof v); return v; }
inline VecF load_vec(const bf16_t* p) {
  // bfloat16 is the upper half of a float32: widen and shift.
  VecU16 raw; __builtin_memcpy(&raw, p, sizeof raw);
  const VecU32 bits = __builtin_convertvector(raw, VecU32) << 16;
  VecF v; __builtin_memcpy(&v, &bits, sizeof v); return v;
}
#if defined(__FLT16_MAX__)
// float16 through the compiler's _Float16 (F16C's vcvtph2ps / vcvtps2ph where the ISA has them).
typedef _Float16 VecH __attribute__((vector_size(MSDA_VEC_BYTES / 2)));
inline VecF load_vec(const half_t* p) {
  VecH raw; __builtin_memcpy(&raw, p, sizeof raw);
  return __builtin_convertvector(raw, VecF);
}
inline void store_vec(half_t* p, VecF v) {
  const VecH h = __builtin_convertvector(v, VecH);
  __builtin_memcpy(p, &h, sizeof h);
}
#else
inline VecF load_vec(const half_t* p) {
  float tmp[kVecBytes / 4];
  for (int i = 0; i < kVecBytes / 4; ++i) tmp[i] = static_cast<float>(p[i]);
  return load_vec(tmp);
}
#endif
inline void store_vec(float* p, VecF v) { __builtin_memcpy(p, &v, sizeof v); }
inline void store_vec(double* p, VecD v) { __builtin_memcpy(p, &v, sizeof v); }
template <typename scalar_t>  // bfloat16 (and float16 without _Float16): round each lane to nearest even
inline void store_vec(scalar_t* p, VecF v) {
  for (int i = 0; i < kVecBytes / 4; ++i) p[i] = static_cast<scalar_t>(v[i]);
}

// Sum of the lanes, by halving (log2 of the lanes vector adds, then 4 scalar ones).
template <typename V>
inline auto horizontal_sum(V v) -> std::remove_reference_t<decltype(v[0])> {
  using T = std::remove_reference_t<decltype(v[0])>;
  constexpr size_t kLanes = sizeof(V) / sizeof(T);
  if constexpr (kLanes > 4) {
    typedef T Half __attribute__((vector_size(sizeof(V) / 2)));
    Half lo, hi;
    __builtin_memcpy(&lo, &v, sizeof lo);
    __builtin_memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof lo, sizeof hi);
    return horizontal_sum(lo + hi);
  } else {
    T s = 0;
    for (size_t i = 0; i < kLanes; ++i) s += v[i];
    return s;
  }
}

// ---- taps -----------------------------------------------------------------------------------------------------
// The bilinear corners of all levels and points of one (row, head), with the attention weight folded in.
template <typename scalar_t, typename acc_t>
inline size_t gather_taps(const ForwardArgs<scalar_t>& a, int64_t row, int64_t m, Tap<acc_t>* taps) {
  const Dims& d = a.dims;
  const int64_t point0 = (row * d.heads + m) * d.levels * d.points;
  size_t n = 0;
  for (int64_t l = 0; l < d.levels; ++l) {
    const int64_t h = a.shapes[2 * l], w = a.shapes[2 * l + 1], start = a.starts[l];
    for (int64_t p = 0; p < d.points; ++p) {
      const int64_t i = point0 + l * d.points + p;
      const acc_t weight = to_acc(a.attn[i]);
      for_each_corner<acc_t>(to_acc(a.loc[2 * i]), to_acc(a.loc[2 * i + 1]), h, w,
                             [&](int64_t offset, acc_t cw, acc_t, acc_t) {
                               taps[n++] = {((start + offset) * d.heads + m) * d.channels, weight * cw};
                             });
    }
  }
  return n;
}

// The bilinear corners of one (row, head) with their derivatives, for the backward pass.
template <typename scalar_t, typename acc_t>
inline size_t gather_grad_taps(const BackwardArgs<scalar_t>& a, int64_t row, int64_t m, GradTap<acc_t>* taps) {
  const Dims& d = a.dims;
  const int64_t point0 = (row * d.heads + m) * d.levels * d.points;
  size_t n = 0;
  for (int64_t l = 0; l < d.levels; ++l) {
    const int64_t h = a.shapes[2 * l], w = a.shapes[2 * l + 1], start = a.starts[l];
    for (int64_t p = 0; p < d.points; ++p) {
      const int64_t i = point0 + l * d.points + p;
      const int32_t lp = static_cast<int32_t>(l * d.points + p);
      for_each_corner<acc_t>(to_acc(a.loc[2 * i]), to_acc(a.loc[2 * i + 1]), h, w,
                             [&](int64_t offset, acc_t cw, acc_t dwx, acc_t dwy) {
                               taps[n++] = {((start + offset) * d.heads + m) * d.channels, cw, dwx, dwy, lp};
                             });
    }
  }
  return n;
}

// ---- forward ----------------------------------------------------------------------------------------------------
// out[c0 : c0 + kWidth] = sum over taps of weight * value_row[c0 : c0 + kWidth], accumulators in registers.
template <int kWidth, typename scalar_t, typename acc_t>
inline void accumulate_chunk(const scalar_t* value_n, const Tap<acc_t>* taps, size_t n_taps, int64_t c0,
                             scalar_t* out) {
  using Vec = typename VecOf<acc_t>::type;
  constexpr int kLanes = VecOf<acc_t>::kLanes, kVecs = kWidth / kLanes;
  static_assert(kWidth % kLanes == 0, "channel chunk must be a whole number of vectors");
  Vec acc[kVecs] = {};
  for (size_t t = 0; t < n_taps; ++t) {
    const scalar_t* v = value_n + taps[t].offset + c0;
    const acc_t w = taps[t].weight;
    for (int k = 0; k < kVecs; ++k) acc[k] += w * load_vec(v + k * kLanes);
  }
  for (int k = 0; k < kVecs; ++k) store_vec(out + c0 + k * kLanes, acc[k]);
}

// Any channel count: plain loops over chunks of at most kMaxRuntimeWidth.
template <typename scalar_t, typename acc_t>
inline void accumulate_any(const scalar_t* value_n, const Tap<acc_t>* taps, size_t n_taps, int64_t channels,
                           scalar_t* out) {
  acc_t acc[kMaxRuntimeWidth];
  for (int64_t c0 = 0; c0 < channels; c0 += kMaxRuntimeWidth) {
    const int64_t width = std::min<int64_t>(kMaxRuntimeWidth, channels - c0);
    for (int64_t c = 0; c < width; ++c) acc[c] = acc_t(0);
    for (size_t t = 0; t < n_taps; ++t) {
      const scalar_t* v = value_n + taps[t].offset + c0;
      for (int64_t c = 0; c < width; ++c) acc[c] += taps[t].weight * to_acc(v[c]);
    }
    for (int64_t c = 0; c < width; ++c) out[c0 + c] = static_cast<scalar_t>(acc[c]);
  }
}

// Forward for output rows [begin, end) of the flattened (n, q) index. kWidth > 0: D is a multiple of kWidth
// (a compile-time trip count, so the accumulators stay in vector registers); kWidth == 0: any D.
template <typename scalar_t, int kWidth>
void forward_range(const ForwardArgs<scalar_t>& a, int64_t begin, int64_t end) {
  using acc_t = typename AccType<scalar_t>::type;
  const Dims& d = a.dims;
  std::vector<Tap<acc_t>> taps(static_cast<size_t>(d.levels * d.points * 4));
  for (int64_t row = begin; row < end; ++row) {
    const scalar_t* value_n = a.value + (row / d.queries) * d.spatial * d.heads * d.channels;
    for (int64_t m = 0; m < d.heads; ++m) {
      const size_t n_taps = gather_taps(a, row, m, taps.data());
      scalar_t* out = a.out + (row * d.heads + m) * d.channels;
      if constexpr (kWidth > 0) {
        for (int64_t c0 = 0; c0 < d.channels; c0 += kWidth)
          accumulate_chunk<kWidth>(value_n, taps.data(), n_taps, c0, out);
      } else {
        accumulate_any(value_n, taps.data(), n_taps, d.channels, out);
      }
    }
  }
}

// ---- backward ---------------------------------------------------------------------------------------------------
// For channels [c0, c0 + kWidth): grad_value rows += attention * bilinear weight * grad_output, and
// dots[t] += <grad_output, value row of tap t>.
template <int kWidth, typename scalar_t, typename acc_t>
inline void backward_chunk(const scalar_t* value_n, acc_t* grad_value_n, const scalar_t* g,
                           const GradTap<acc_t>* taps, const acc_t* scales, size_t n_taps, int64_t c0, acc_t* dots) {
  using Vec = typename VecOf<acc_t>::type;
  constexpr int kLanes = VecOf<acc_t>::kLanes, kVecs = kWidth / kLanes;
  static_assert(kWidth % kLanes == 0, "channel chunk must be a whole number of vectors");
  Vec gv[kVecs];
  for (int k = 0; k < kVecs; ++k) gv[k] = load_vec(g + c0 + k * kLanes);
  for (size_t t = 0; t < n_taps; ++t) {
    const scalar_t* v = value_n + taps[t].offset + c0;
    acc_t* gval = grad_value_n + taps[t].offset + c0;
    Vec dot = {};
    for (int k = 0; k < kVecs; ++k) {
      dot += gv[k] * load_vec(v + k * kLanes);
      store_vec(gval + k * kLanes, load_vec(gval + k * kLanes) + scales[t] * gv[k]);
    }
    dots[t] += horizontal_sum(dot);
  }
}

template <typename scalar_t, typename acc_t>
inline void backward_any(const scalar_t* value_n, acc_t* grad_value_n, const scalar_t* g, const GradTap<acc_t>* taps,
                         const acc_t* scales, size_t n_taps, int64_t channels, acc_t* dots) {
  for (size_t t = 0; t < n_taps; ++t) {
    const scalar_t* v = value_n + taps[t].offset;
    acc_t* gval = grad_value_n + taps[t].offset;
    acc_t dot = acc_t(0);
    for (int64_t c = 0; c < channels; ++c) {
      const acc_t gc = to_acc(g[c]);
      dot += gc * to_acc(v[c]);
      gval[c] += scales[t] * gc;
    }
    dots[t] += dot;
  }
}

// Scratch space of one thread for backward_head.
template <typename acc_t>
struct BackwardScratch {
  explicit BackwardScratch(const Dims& d)
      : taps(static_cast<size_t>(d.levels * d.points * 4)), scales(taps.size()), dots(taps.size()),
        point_grads(static_cast<size_t>(d.levels * d.points * 3)) {}
  std::vector<GradTap<acc_t>> taps;
  std::vector<acc_t> scales, dots, point_grads;
};

// Gradients of one (row = n * Lq + q, head m): scatter into grad_value, write grad_loc and grad_attn.
template <typename scalar_t, int kWidth, typename acc_t>
inline void backward_head(const BackwardArgs<scalar_t>& a, int64_t n, int64_t row, int64_t m,
                          BackwardScratch<acc_t>& scratch) {
  const Dims& d = a.dims;
  const scalar_t* value_n = a.value + n * d.spatial * d.heads * d.channels;
  acc_t* grad_value_n = a.grad_value + n * d.spatial * d.heads * d.channels;
  const int64_t point0 = (row * d.heads + m) * d.levels * d.points;
  const scalar_t* g = a.grad_out + (row * d.heads + m) * d.channels;
  GradTap<acc_t>* taps = scratch.taps.data();
  acc_t *scales = scratch.scales.data(), *dots = scratch.dots.data(), *point_grads = scratch.point_grads.data();
  const size_t n_taps = gather_grad_taps(a, row, m, taps);
  for (size_t t = 0; t < n_taps; ++t) {
    scales[t] = to_acc(a.attn[point0 + taps[t].point]) * taps[t].weight;
    dots[t] = acc_t(0);
  }
  if constexpr (kWidth > 0) {
    for (int64_t c0 = 0; c0 < d.channels; c0 += kWidth)
      backward_chunk<kWidth>(value_n, grad_value_n, g, taps, scales, n_taps, c0, dots);
  } else {
    backward_any(value_n, grad_value_n, g, taps, scales, n_taps, d.channels, dots);
  }
  // Per point: sum over its taps of (bilinear weight, d/dx, d/dy) * <grad_output, value row>.
  std::fill(scratch.point_grads.begin(), scratch.point_grads.end(), acc_t(0));
  for (size_t t = 0; t < n_taps; ++t) {
    acc_t* pg = point_grads + 3 * static_cast<size_t>(taps[t].point);
    pg[0] += taps[t].weight * dots[t];
    pg[1] += taps[t].dwx * dots[t];
    pg[2] += taps[t].dwy * dots[t];
  }
  for (int64_t l = 0; l < d.levels; ++l) {
    const acc_t h = static_cast<acc_t>(a.shapes[2 * l]), w = static_cast<acc_t>(a.shapes[2 * l + 1]);
    for (int64_t p = 0; p < d.points; ++p) {
      const int64_t lp = l * d.points + p, i = point0 + lp;
      const acc_t weight = to_acc(a.attn[i]);
      const acc_t* pg = point_grads + 3 * lp;
      a.grad_attn[i] = static_cast<scalar_t>(pg[0]);
      a.grad_loc[2 * i] = static_cast<scalar_t>(weight * w * pg[1]);
      a.grad_loc[2 * i + 1] = static_cast<scalar_t>(weight * h * pg[2]);
    }
  }
}

// Backward for work items [begin, end) of the flattened (n, m) index. Each (n, m) owns the disjoint slice
// grad_value[n, :, m, :], so threads never write the same memory and no atomics are needed. Queries are the outer
// loop and this range's heads the inner one, so locations, weights and grad_output are read sequentially.
template <typename scalar_t, int kWidth>
void backward_range(const BackwardArgs<scalar_t>& a, int64_t begin, int64_t end) {
  using acc_t = typename AccType<scalar_t>::type;
  const Dims& d = a.dims;
  BackwardScratch<acc_t> scratch(d);
  for (int64_t n = begin / d.heads; n * d.heads < end; ++n) {
    const int64_t m_begin = std::max<int64_t>(begin - n * d.heads, 0);
    const int64_t m_end = std::min<int64_t>(end - n * d.heads, d.heads);
    for (int64_t q = 0; q < d.queries; ++q) {
      for (int64_t m = m_begin; m < m_end; ++m) backward_head<scalar_t, kWidth>(a, n, n * d.queries + q, m, scratch);
    }
  }
}

// The kernels of this instruction set for one dtype, by channel width.
template <typename scalar_t>
KernelTable<scalar_t> kernel_table() {
  return {{&forward_range<scalar_t, 64>, &forward_range<scalar_t, 32>, &forward_range<scalar_t, 16>,
           &forward_range<scalar_t, 0>},
          {&backward_range<scalar_t, 64>, &backward_range<scalar_t, 32>, &backward_range<scalar_t, 16>,
           &backward_range<scalar_t, 0>}};
}

}  // namespace MSDA_ISA
}  // namespace adaptiveclick_msda
