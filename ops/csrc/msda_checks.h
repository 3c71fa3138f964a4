// Input validation shared by the CPU and CUDA multi-scale deformable attention operators.
//
// Every check raises a c10::Error (a Python RuntimeError) naming the offending argument, so a caller sees
// "sampling_locations must be contiguous" rather than a crash or silently wrong numbers.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "msda_types.h"

namespace adaptiveclick_msda {

inline void check_contiguous(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_contiguous(), "ms_deform_attn: ", name, " must be contiguous (call .contiguous() first)");
}

// Checks ranks, sizes, dtypes, devices and contiguity; returns the sizes. `grad_output` may be undefined.
inline Dims check_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes,
                         const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                         const at::Tensor& attention_weights, const at::Tensor& grad_output,
                         c10::DeviceType device_type) {
  TORCH_CHECK(value.dim() == 4, "ms_deform_attn: value must be [N, S, M, D], got ", value.sizes());
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2,
              "ms_deform_attn: spatial_shapes must be [L, 2], got ", spatial_shapes.sizes());
  TORCH_CHECK(level_start_index.dim() == 1 && level_start_index.size(0) == spatial_shapes.size(0),
              "ms_deform_attn: level_start_index must be [L] with L = ", spatial_shapes.size(0), ", got ",
              level_start_index.sizes());
  TORCH_CHECK(sampling_locations.dim() == 6 && sampling_locations.size(5) == 2,
              "ms_deform_attn: sampling_locations must be [N, Lq, M, L, P, 2], got ", sampling_locations.sizes());
  TORCH_CHECK(attention_weights.dim() == 5, "ms_deform_attn: attention_weights must be [N, Lq, M, L, P], got ",
              attention_weights.sizes());

  const Dims d{value.size(0), value.size(1), value.size(2), value.size(3),
               sampling_locations.size(1), sampling_locations.size(3), sampling_locations.size(4)};
  TORCH_CHECK(sampling_locations.size(0) == d.batch && sampling_locations.size(2) == d.heads &&
                  sampling_locations.size(3) == spatial_shapes.size(0),
              "ms_deform_attn: sampling_locations ", sampling_locations.sizes(), " does not match value ",
              value.sizes(), " and L = ", spatial_shapes.size(0), " levels");
  TORCH_CHECK(attention_weights.sizes() == sampling_locations.sizes().slice(0, 5),
              "ms_deform_attn: attention_weights ", attention_weights.sizes(),
              " must match sampling_locations[..., 0] ", sampling_locations.sizes().slice(0, 5));
  if (grad_output.defined()) {
    TORCH_CHECK(grad_output.dim() == 3 && grad_output.size(0) == d.batch && grad_output.size(1) == d.queries &&
                    grad_output.size(2) == d.heads * d.channels,
                "ms_deform_attn: grad_output must be [N, Lq, M*D] = [", d.batch, ", ", d.queries, ", ",
                d.heads * d.channels, "], got ", grad_output.sizes());
  }

  TORCH_CHECK(at::isFloatingType(value.scalar_type()), "ms_deform_attn: value must be floating point, got ",
              value.scalar_type());
  TORCH_CHECK(sampling_locations.scalar_type() == value.scalar_type() &&
                  attention_weights.scalar_type() == value.scalar_type() &&
                  (!grad_output.defined() || grad_output.scalar_type() == value.scalar_type()),
              "ms_deform_attn: value, sampling_locations, attention_weights (and grad_output) must share one "
              "dtype, got ", value.scalar_type(), ", ", sampling_locations.scalar_type(), ", ",
              attention_weights.scalar_type());
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong && level_start_index.scalar_type() == at::kLong,
              "ms_deform_attn: spatial_shapes and level_start_index must be int64");

  const at::Tensor* all[] = {&value, &spatial_shapes, &level_start_index, &sampling_locations,
                             &attention_weights, &grad_output};
  const char* names[] = {"value", "spatial_shapes", "level_start_index", "sampling_locations",
                         "attention_weights", "grad_output"};
  for (int i = 0; i < 6; ++i) {
    if (!all[i]->defined()) continue;
    TORCH_CHECK(all[i]->device().type() == device_type, "ms_deform_attn: ", names[i], " must be a ",
                c10::DeviceTypeName(device_type), " tensor, got ", all[i]->device());
    TORCH_CHECK(all[i]->device() == value.device(), "ms_deform_attn: ", names[i], " is on ", all[i]->device(),
                " but value is on ", value.device());
    check_contiguous(*all[i], names[i]);
  }
  return d;
}

}  // namespace adaptiveclick_msda
