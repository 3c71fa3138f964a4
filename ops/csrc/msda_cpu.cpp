// CPU multi-scale deformable attention: the `adaptiveclick_msda_cpu` operator library.
//
// Registers torch.ops.adaptiveclick_msda_cpu.{forward, backward} and, to inspect or pin the kernel variant,
// {instruction_sets, instruction_set, select_instruction_set}.
// Work is split with at::parallel_for (PyTorch's OpenMP pool, so torch.set_num_threads applies): the forward over
// output rows (n, q), the backward over (n, head) pairs so that every thread owns a disjoint slice of grad_value.
// The kernels (msda_cpu_kernel.h) are compiled for AVX-512, AVX2 and the baseline ISA; the best one the running CPU
// supports is chosen at load time. Supported dtypes: float32, float64, bfloat16 and float16 (the reduced-precision
// types are computed and accumulated in float32).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/StringUtil.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "msda_checks.h"

namespace adaptiveclick_msda {
using bf16_t = c10::BFloat16;
using half_t = c10::Half;
}  // namespace adaptiveclick_msda

#include "msda_cpu_isa.h"

namespace adaptiveclick_msda {
namespace {

// Values of spatial_shapes and level_start_index must describe the value tensor exactly; on the CPU this is
// cheap to verify, and it rules out any out-of-bounds read in the kernels.
void check_levels(const at::Tensor& spatial_shapes, const at::Tensor& level_start_index, int64_t spatial) {
  const int64_t* shapes = spatial_shapes.data_ptr<int64_t>();
  const int64_t* starts = level_start_index.data_ptr<int64_t>();
  int64_t total = 0;
  for (int64_t l = 0; l < spatial_shapes.size(0); ++l) {
    TORCH_CHECK(shapes[2 * l] > 0 && shapes[2 * l + 1] > 0, "ms_deform_attn: spatial_shapes[", l,
                "] must be positive, got (", shapes[2 * l], ", ", shapes[2 * l + 1], ")");
    TORCH_CHECK(starts[l] == total, "ms_deform_attn: level_start_index[", l, "] must be ", total,
                " (the sum of H*W of the levels before it), got ", starts[l]);
    total += shapes[2 * l] * shapes[2 * l + 1];
  }
  TORCH_CHECK(total == spatial, "ms_deform_attn: spatial_shapes add up to ", total,
              " positions but value has S = ", spatial);
}

at::Tensor forward(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                   const at::Tensor& sampling_locations, const at::Tensor& attention_weights) {
  const Dims d = check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                              at::Tensor(), c10::DeviceType::CPU);
  check_levels(spatial_shapes, level_start_index, d.spatial);
  at::Tensor out = at::empty({d.batch, d.queries, d.heads * d.channels}, value.options());
  const int64_t rows = d.batch * d.queries;
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, value.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
    const ForwardArgs<scalar_t> args{d,
                                     value.data_ptr<scalar_t>(),
                                     sampling_locations.data_ptr<scalar_t>(),
                                     attention_weights.data_ptr<scalar_t>(),
                                     spatial_shapes.data_ptr<int64_t>(),
                                     level_start_index.data_ptr<int64_t>(),
                                     out.data_ptr<scalar_t>()};
    const auto fn = kernels<scalar_t>().forward[width_slot(d.channels)];
    // A grain of a few rows keeps scheduling overhead negligible next to rows * heads * L * P samples.
    const int64_t grain = std::max<int64_t>(1, 2048 / std::max<int64_t>(1, d.heads * d.levels * d.points));
    at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) { fn(args, begin, end); });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                        const at::Tensor& level_start_index,
                                                        const at::Tensor& sampling_locations,
                                                        const at::Tensor& attention_weights,
                                                        const at::Tensor& grad_output) {
  const Dims d = check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                              grad_output, c10::DeviceType::CPU);
  check_levels(spatial_shapes, level_start_index, d.spatial);
  const bool reduced = value.scalar_type() == at::kBFloat16 || value.scalar_type() == at::kHalf;
  const at::ScalarType acc_type = reduced ? at::kFloat : value.scalar_type();
  at::Tensor grad_value_acc = at::zeros(value.sizes(), value.options().dtype(acc_type));
  at::Tensor grad_loc = at::empty(sampling_locations.sizes(), sampling_locations.options());
  at::Tensor grad_attn = at::empty(attention_weights.sizes(), attention_weights.options());
  if (grad_loc.numel() > 0 && value.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
      using acc_t = typename AccType<scalar_t>::type;
      const BackwardArgs<scalar_t> args{d,
                                        value.data_ptr<scalar_t>(),
                                        sampling_locations.data_ptr<scalar_t>(),
                                        attention_weights.data_ptr<scalar_t>(),
                                        grad_output.data_ptr<scalar_t>(),
                                        spatial_shapes.data_ptr<int64_t>(),
                                        level_start_index.data_ptr<int64_t>(),
                                        grad_value_acc.data_ptr<acc_t>(),
                                        grad_loc.data_ptr<scalar_t>(),
                                        grad_attn.data_ptr<scalar_t>()};
      const auto fn = kernels<scalar_t>().backward[width_slot(d.channels)];
      at::parallel_for(0, d.batch * d.heads, 1, [&](int64_t begin, int64_t end) { fn(args, begin, end); });
    });
  } else {
    grad_loc.zero_();
    grad_attn.zero_();
  }
  at::Tensor grad_value = reduced ? grad_value_acc.to(value.scalar_type()) : grad_value_acc;
  return {grad_value, grad_loc, grad_attn};
}

std::vector<std::string> instruction_sets() { return supported_instruction_sets(); }

const char* const kIsaNames[] = {"avx512", "avx2", "baseline"};

std::string instruction_set() { return kIsaNames[current_isa()]; }

// Switches the kernels to one of instruction_sets() (for tests and benchmarks); returns the previous choice.
std::string select_instruction_set(const std::string& name) {
  const std::vector<std::string> supported = supported_instruction_sets();
  TORCH_CHECK(std::find(supported.begin(), supported.end(), name) != supported.end(),
              "ms_deform_attn: instruction set '", name, "' is not supported by this CPU/build; choose one of ",
              c10::Join(", ", supported));
  const std::string previous = kIsaNames[current_isa()];
  g_isa.store(isa_index(name));
  return previous;
}

}  // namespace
}  // namespace adaptiveclick_msda

TORCH_LIBRARY(adaptiveclick_msda_cpu, m) {
  m.def("forward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, Tensor sampling_locations, "
        "Tensor attention_weights) -> Tensor");
  m.def("backward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, Tensor sampling_locations, "
        "Tensor attention_weights, Tensor grad_output) -> (Tensor, Tensor, Tensor)");
  m.def("instruction_sets() -> str[]", &adaptiveclick_msda::instruction_sets);
  m.def("instruction_set() -> str", &adaptiveclick_msda::instruction_set);
  m.def("select_instruction_set(str name) -> str", &adaptiveclick_msda::select_instruction_set);
}

TORCH_LIBRARY_IMPL(adaptiveclick_msda_cpu, CPU, m) {
  m.impl("forward", &adaptiveclick_msda::forward);
  m.impl("backward", &adaptiveclick_msda::backward);
}
