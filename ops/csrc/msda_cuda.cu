// CUDA multi-scale deformable attention: the `adaptiveclick_msda_cuda` operator library.
//
// Registers torch.ops.adaptiveclick_msda_cuda.{forward, backward} for float32, float64, float16 and bfloat16
// (the reduced-precision types are computed and accumulated in float32).
//
// One thread per output element (n, q, m, c): the threads of one (n, q, m) are consecutive, so the sampling
// location and weight loads are warp broadcasts and each bilinear corner read is one coalesced D-wide row.
// Backward: grad_value is scattered with float atomics (into a float32 buffer for half/bfloat16, so no precision
// is lost in the accumulation); the per-point gradients (a sum over the D channels) are reduced with warp shuffles
// across the lanes of one (n, q, m) and added once per group.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "msda_checks.h"

namespace adaptiveclick_msda {
namespace {

constexpr int kThreads = 256;
constexpr unsigned kFullMask = 0xffffffffu;

template <typename scalar_t> struct AccType { using type = float; };
template <> struct AccType<double> { using type = double; };

struct KernelDims {
  int64_t spatial, heads, channels, queries, levels, points;
};

inline KernelDims kernel_dims(const Dims& d) {
  return {d.spatial, d.heads, d.channels, d.queries, d.levels, d.points};
}

// Bilinear sample of channel c at normalised (x, y) on level (h, w) starting at `start`; optionally the
// derivatives of the sample in pixel x and y, and a callback per in-bounds corner (value row, bilinear weight).
// Corners outside the map, or (with inconsistent spatial_shapes) outside value, count as zero.
template <typename acc_t, typename scalar_t, typename CornerFn>
__device__ __forceinline__ acc_t bilinear(const scalar_t* __restrict__ value_nm, acc_t x, acc_t y, int64_t h,
                                          int64_t w, int64_t start, const KernelDims& d, acc_t* dx, acc_t* dy,
                                          CornerFn&& corner) {
  const acc_t px = x * static_cast<acc_t>(w) - acc_t(0.5);
  const acc_t py = y * static_cast<acc_t>(h) - acc_t(0.5);
  *dx = acc_t(0);
  *dy = acc_t(0);
  if (!(px > acc_t(-1) && py > acc_t(-1) && px < static_cast<acc_t>(w) && py < static_cast<acc_t>(h))) {
    return acc_t(0);
  }
  const acc_t fx = floor(px), fy = floor(py);
  const int64_t x0 = static_cast<int64_t>(fx), y0 = static_cast<int64_t>(fy);
  const acc_t lx = px - fx, ly = py - fy, hx = acc_t(1) - lx, hy = acc_t(1) - ly;
  const int64_t row_stride = d.heads * d.channels;
  acc_t v00 = 0, v01 = 0, v10 = 0, v11 = 0;
  auto fetch = [&](int64_t yy, int64_t xx, acc_t weight, acc_t& v) {
    const int64_t s = start + yy * w + xx;
    if (s < 0 || s >= d.spatial) return;
    v = static_cast<acc_t>(value_nm[s * row_stride]);
    corner(s * row_stride, weight);
  };
  if (y0 >= 0 && x0 >= 0) fetch(y0, x0, hy * hx, v00);
  if (y0 >= 0 && x0 + 1 < w) fetch(y0, x0 + 1, hy * lx, v01);
  if (y0 + 1 < h && x0 >= 0) fetch(y0 + 1, x0, ly * hx, v10);
  if (y0 + 1 < h && x0 + 1 < w) fetch(y0 + 1, x0 + 1, ly * lx, v11);
  *dx = hy * (v01 - v00) + ly * (v11 - v10);
  *dy = hx * (v10 - v00) + lx * (v11 - v01);
  return hy * (hx * v00 + lx * v01) + ly * (hx * v10 + lx * v11);
}

template <typename scalar_t>
__global__ void forward_kernel(int64_t total, KernelDims d, const scalar_t* __restrict__ value,
                               const int64_t* __restrict__ shapes, const int64_t* __restrict__ starts,
                               const scalar_t* __restrict__ loc, const scalar_t* __restrict__ attn,
                               scalar_t* __restrict__ out) {
  using acc_t = typename AccType<scalar_t>::type;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= total) return;
  const int64_t c = idx % d.channels, head_row = idx / d.channels;  // head_row = (n * Lq + q) * M + m
  const int64_t m = head_row % d.heads, n = head_row / d.heads / d.queries;
  const scalar_t* value_nm = value + (n * d.spatial * d.heads + m) * d.channels + c;
  const int64_t point0 = head_row * d.levels * d.points;
  acc_t acc = 0, dx, dy;
  for (int64_t l = 0; l < d.levels; ++l) {
    const int64_t h = shapes[2 * l], w = shapes[2 * l + 1], start = starts[l];
    for (int64_t p = 0; p < d.points; ++p) {
      const int64_t i = point0 + l * d.points + p;
      const acc_t sample = bilinear<acc_t>(value_nm, static_cast<acc_t>(loc[2 * i]),
                                           static_cast<acc_t>(loc[2 * i + 1]), h, w, start, d, &dx, &dy,
                                           [](int64_t, acc_t) {});
      acc += static_cast<acc_t>(attn[i]) * sample;
    }
  }
  out[idx] = static_cast<scalar_t>(acc);
}

// Sum over the `width` consecutive lanes of one group (width is 1, or a power of two up to 32).
template <typename acc_t>
__device__ __forceinline__ acc_t group_sum(acc_t v, int width) {
  for (int offset = width / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset, width);
  return v;
}

// Every thread of a launched warp runs the same loop (out-of-range threads contribute zeros) so that the
// shuffles see all 32 lanes.
template <typename scalar_t, typename acc_t>
__global__ void backward_kernel(int64_t total, KernelDims d, int group_width, const scalar_t* __restrict__ value,
                                const int64_t* __restrict__ shapes, const int64_t* __restrict__ starts,
                                const scalar_t* __restrict__ loc, const scalar_t* __restrict__ attn,
                                const scalar_t* __restrict__ grad_out, acc_t* __restrict__ grad_value,
                                acc_t* __restrict__ grad_loc, acc_t* __restrict__ grad_attn) {
  const int64_t raw = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool valid = raw < total;
  const int64_t idx = valid ? raw : 0;
  const int64_t c = idx % d.channels, head_row = idx / d.channels;
  const int64_t m = head_row % d.heads, n = head_row / d.heads / d.queries;
  const int64_t nm_offset = (n * d.spatial * d.heads + m) * d.channels + c;
  const scalar_t* value_nm = value + nm_offset;
  acc_t* grad_value_nm = grad_value + nm_offset;
  const int64_t point0 = head_row * d.levels * d.points;
  const acc_t g = valid ? static_cast<acc_t>(grad_out[idx]) : acc_t(0);
  const bool leader = valid && (c % group_width == 0);
  for (int64_t l = 0; l < d.levels; ++l) {
    const int64_t h = shapes[2 * l], w = shapes[2 * l + 1], start = starts[l];
    for (int64_t p = 0; p < d.points; ++p) {
      const int64_t i = point0 + l * d.points + p;
      const acc_t weight = static_cast<acc_t>(attn[i]);
      const acc_t scaled_g = weight * g;
      acc_t dx, dy;
      const acc_t sample = bilinear<acc_t>(value_nm, static_cast<acc_t>(loc[2 * i]),
                                           static_cast<acc_t>(loc[2 * i + 1]), h, w, start, d, &dx, &dy,
                                           [&](int64_t offset, acc_t cw) {
                                             if (valid) atomicAdd(grad_value_nm + offset, cw * scaled_g);
                                           });
      const acc_t g_attn = group_sum(g * sample, group_width);
      const acc_t g_x = group_sum(g * dx, group_width);
      const acc_t g_y = group_sum(g * dy, group_width);
      if (leader) {
        atomicAdd(grad_attn + i, g_attn);
        atomicAdd(grad_loc + 2 * i, weight * static_cast<acc_t>(w) * g_x);
        atomicAdd(grad_loc + 2 * i + 1, weight * static_cast<acc_t>(h) * g_y);
      }
    }
  }
}

// Lanes per reduction group: the D lanes of one (n, q, m) when they tile a warp, whole warps when D is a
// multiple of 32, otherwise every lane adds its own share.
int group_width(int64_t channels) {
  if (channels <= 32 && 32 % channels == 0) return static_cast<int>(channels);
  if (channels % 32 == 0) return 32;
  return 1;
}

unsigned blocks_for(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  TORCH_CHECK(blocks <= 0x7fffffff, "ms_deform_attn: input too large for one CUDA launch (", total, " threads)");
  return static_cast<unsigned>(blocks);
}

at::Tensor forward(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                   const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  const Dims d = check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                              at::Tensor(), c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(value.device());
  at::Tensor out = at::empty({d.batch, d.queries, d.heads * d.channels}, value.options());
  const int64_t total = out.numel();
  if (total == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_forward_cuda", [&] {
    forward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
        total, kernel_dims(d), value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(),
        level_start_index.data_ptr<int64_t>(), sampling_locations.data_ptr<scalar_t>(),
        attention_weights.data_ptr<scalar_t>(), out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                        const at::Tensor& level_start_index,
                                                        const at::Tensor& sampling_locations,
                                                        const at::Tensor& attention_weights,
                                                        const at::Tensor& grad_output) {
  const Dims d = check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                              grad_output, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(value.device());
  // Accumulate in float32 (float64 for double) whatever the input dtype; cast back at the end.
  const at::ScalarType acc_type = value.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto acc_options = value.options().dtype(acc_type);
  at::Tensor grad_value = at::zeros(value.sizes(), acc_options);
  at::Tensor grad_loc = at::zeros(sampling_locations.sizes(), acc_options);
  at::Tensor grad_attn = at::zeros(attention_weights.sizes(), acc_options);
  const int64_t total = d.batch * d.queries * d.heads * d.channels;
  if (total > 0 && d.spatial > 0) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
      using acc_t = typename AccType<scalar_t>::type;
      backward_kernel<scalar_t, acc_t><<<blocks_for(total), kThreads, 0, stream>>>(
          total, kernel_dims(d), group_width(d.channels), value.data_ptr<scalar_t>(),
          spatial_shapes.data_ptr<int64_t>(), level_start_index.data_ptr<int64_t>(),
          sampling_locations.data_ptr<scalar_t>(), attention_weights.data_ptr<scalar_t>(),
          grad_output.data_ptr<scalar_t>(), grad_value.data_ptr<acc_t>(), grad_loc.data_ptr<acc_t>(),
          grad_attn.data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  const at::ScalarType dtype = value.scalar_type();
  return {grad_value.to(dtype), grad_loc.to(dtype), grad_attn.to(dtype)};
}

}  // namespace
}  // namespace adaptiveclick_msda

TORCH_LIBRARY(adaptiveclick_msda_cuda, m) {
  m.def("forward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, Tensor sampling_locations, "
        "Tensor attention_weights) -> Tensor");
  m.def("backward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, Tensor sampling_locations, "
        "Tensor attention_weights, Tensor grad_output) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(adaptiveclick_msda_cuda, CUDA, m) {
  m.impl("forward", &adaptiveclick_msda::forward);
  m.impl("backward", &adaptiveclick_msda::backward);
}
