// Plain C++ declarations of the CPU MSDA kernels (no torch or OpenVINO types), shared by the torch operator library
// (msda_cpu.cpp), the OpenVINO custom op (msda_openvino.cpp) and the input checks (msda_checks.h).
#pragma once

#include <cstdint>

namespace adaptiveclick_msda {

// Sizes read off the inputs: value [N, S, M, D], sampling_locations [N, Lq, M, L, P, 2].
struct Dims {
  int64_t batch, spatial, heads, channels, queries, levels, points;
};

// Largest channel chunk kept on the stack when D is not a multiple of 16.
constexpr int64_t kMaxRuntimeWidth = 64;

template <typename scalar_t> struct AccType { using type = float; };
template <> struct AccType<double> { using type = double; };

// One bilinear corner of one sampling point: where its value row starts and how much it weighs.
template <typename acc_t> struct Tap {
  int64_t offset;  // element offset of value[n, s, m, 0] from value[n, 0, 0, 0]
  acc_t weight;    // attention weight * bilinear weight
};
template <typename acc_t> struct GradTap {
  int64_t offset;
  acc_t weight, dwx, dwy;  // bilinear weight and its derivatives in pixel x and y
  int32_t point;           // l * P + p
};

template <typename scalar_t> struct ForwardArgs {
  Dims dims;
  const scalar_t *value, *loc, *attn;
  const int64_t *shapes, *starts;
  scalar_t* out;
};
template <typename scalar_t> struct BackwardArgs {
  Dims dims;
  const scalar_t *value, *loc, *attn, *grad_out;
  const int64_t *shapes, *starts;
  typename AccType<scalar_t>::type* grad_value;  // float32 accumulator for the reduced-precision types
  scalar_t *grad_loc, *grad_attn;
};

// Kernels for channel widths {64, 32, 16, any}.
template <typename scalar_t> struct KernelTable {
  void (*forward[4])(const ForwardArgs<scalar_t>&, int64_t, int64_t);
  void (*backward[4])(const BackwardArgs<scalar_t>&, int64_t, int64_t);
};

}  // namespace adaptiveclick_msda
