// adaptiveclick::MSDeformAttn: multi-scale deformable attention sampling as an OpenVINO custom operation.
//
// Inputs:    value [N, S, M, D], sampling_locations [N, Lq, M, L, P, 2] normalised (x, y), attention_weights
//            [N, Lq, M, L, P]; f32 or bf16.
// Output:    [N, Lq, M * D] in value's element type.
// Attribute: spatial_shapes, flat (H_0, W_0, H_1, W_1, ...) with S = sum H_l * W_l (serialised into the IR).
//
// The sampling is the torch CPU kernel's (msda_cpu_kernel.h, compiled for AVX-512, AVX2 and baseline and chosen at
// load time), split over output rows with ov::parallel_nt inside the CPU plugin's TBB arena, so the compiled
// model's INFERENCE_NUM_THREADS applies. Same-typed f32 or bf16 inputs run directly; mixed types are widened to
// f32 first. (The CPU plugin of openvino 2026.4 runs custom ops in the IR's precision: with
// INFERENCE_PRECISION_HINT=bf16 it still hands this op f32 tensors and converts around it.)
//
// The library also carries the PyTorch frontend's ConversionExtension for the torch.library operator
// adaptiveclick::msda_sample (ops/exportable.py), whose exported node is named "adaptiveclick.msda_sample.default":
// converting an exported program with this library as an extension puts one MSDeformAttn node in its place.
#include <openvino/core/extension.hpp>
#include <openvino/core/op_extension.hpp>
#include <openvino/core/parallel.hpp>
#include <openvino/core/type/bfloat16.hpp>
#include <openvino/core/type/float16.hpp>
#include <openvino/frontend/extension/conversion.hpp>
#include <openvino/frontend/node_context.hpp>
#include <openvino/op/constant.hpp>
#include <openvino/op/convert.hpp>
#include <openvino/op/op.hpp>

#include <cstdint>
#include <vector>

namespace adaptiveclick_msda {
using bf16_t = ov::bfloat16;
using half_t = ov::float16;
}  // namespace adaptiveclick_msda

#include "msda_cpu_isa.h"

namespace adaptiveclick_msda {
namespace {

template <typename T>
void run_forward(const Dims& d, const int64_t* shapes, const int64_t* starts, const T* value, const T* loc,
                 const T* attn, T* out) {
  const ForwardArgs<T> args{d, value, loc, attn, shapes, starts, out};
  const auto fn = kernels<T>().forward[width_slot(d.channels)];
  const int64_t rows = d.batch * d.queries;
  ov::parallel_nt(0, [&](const int ithr, const int nthr) {
    int64_t begin = 0, end = 0;
    ov::splitter(rows, nthr, ithr, begin, end);
    if (begin < end) fn(args, begin, end);
  });
}

std::vector<float> widened(const ov::Tensor& t) {
  std::vector<float> out(t.get_size());
  if (t.get_element_type() == ov::element::bf16) {
    const auto* p = static_cast<const ov::bfloat16*>(t.data());
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(p[i]);
  } else {
    const auto* p = static_cast<const float*>(t.data());
    for (size_t i = 0; i < out.size(); ++i) out[i] = p[i];
  }
  return out;
}

}  // namespace
}  // namespace adaptiveclick_msda

namespace adaptiveclick {

class MSDeformAttn : public ov::op::Op {
 public:
  OPENVINO_OP("MSDeformAttn", "adaptiveclick");

  MSDeformAttn() = default;
  MSDeformAttn(const ov::Output<ov::Node>& value, const ov::Output<ov::Node>& locations,
               const ov::Output<ov::Node>& weights, std::vector<int64_t> spatial_shapes)
      : Op({value, locations, weights}), m_spatial_shapes(std::move(spatial_shapes)) {
    constructor_validate_and_infer_types();
  }

  void validate_and_infer_types() override {
    const auto& vs = get_input_partial_shape(0);
    const auto& ls = get_input_partial_shape(1);
    OPENVINO_ASSERT(vs.rank().is_dynamic() || vs.rank().get_length() == 4, "MSDeformAttn: value must be 4-D");
    OPENVINO_ASSERT(ls.rank().is_dynamic() || ls.rank().get_length() == 6, "MSDeformAttn: locations must be 6-D");
    OPENVINO_ASSERT(!m_spatial_shapes.empty() && m_spatial_shapes.size() % 2 == 0,
                    "MSDeformAttn: spatial_shapes must hold (H, W) pairs");
    ov::PartialShape out = ov::PartialShape::dynamic(3);
    if (vs.rank().is_static() && ls.rank().is_static()) out = ov::PartialShape{ls[0], ls[1], vs[2] * vs[3]};
    set_output_type(0, get_input_element_type(0), out);
  }

  std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& args) const override {
    OPENVINO_ASSERT(args.size() == 3, "MSDeformAttn takes 3 inputs");
    return std::make_shared<MSDeformAttn>(args[0], args[1], args[2], m_spatial_shapes);
  }

  bool visit_attributes(ov::AttributeVisitor& visitor) override {
    visitor.on_attribute("spatial_shapes", m_spatial_shapes);
    return true;
  }

  bool has_evaluate() const override {
    for (size_t i = 0; i < 3; ++i) {
      const auto t = get_input_element_type(i);
      if (t != ov::element::f32 && t != ov::element::bf16) return false;
    }
    return true;
  }

  bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
    using adaptiveclick_msda::Dims;
    const ov::Tensor &value = inputs[0], &loc = inputs[1], &attn = inputs[2];
    const auto vs = value.get_shape(), ls = loc.get_shape();
    const Dims d{static_cast<int64_t>(vs[0]),  static_cast<int64_t>(vs[1]), static_cast<int64_t>(vs[2]),
                 static_cast<int64_t>(vs[3]),  static_cast<int64_t>(ls[1]), static_cast<int64_t>(ls[3]),
                 static_cast<int64_t>(ls[4])};
    const int64_t levels = static_cast<int64_t>(m_spatial_shapes.size() / 2);
    OPENVINO_ASSERT(levels == d.levels, "MSDeformAttn: ", levels, " spatial shapes for ", d.levels, " levels");
    OPENVINO_ASSERT(ls[0] == vs[0] && ls[2] == vs[2] && attn.get_size() == loc.get_size() / 2,
                    "MSDeformAttn: locations ", ls, " and weights do not match value ", vs);
    // the level offsets, and the check that the shapes describe value exactly (no out-of-bounds reads)
    std::vector<int64_t> starts(static_cast<size_t>(levels));
    int64_t total = 0;
    for (int64_t l = 0; l < levels; ++l) {
      OPENVINO_ASSERT(m_spatial_shapes[2 * l] > 0 && m_spatial_shapes[2 * l + 1] > 0,
                      "MSDeformAttn: spatial shapes must be positive");
      starts[l] = total;
      total += m_spatial_shapes[2 * l] * m_spatial_shapes[2 * l + 1];
    }
    OPENVINO_ASSERT(total == d.spatial, "MSDeformAttn: spatial shapes add up to ", total, ", value has ", d.spatial);
    ov::Tensor& out = outputs[0];
    out.set_shape({vs[0], ls[1], vs[2] * vs[3]});
    if (out.get_size() == 0) return true;
    const int64_t* shapes = m_spatial_shapes.data();
    const auto type = value.get_element_type();
    const bool same = loc.get_element_type() == type && attn.get_element_type() == type;
    if (same && type == ov::element::f32) {
      adaptiveclick_msda::run_forward(d, shapes, starts.data(), static_cast<const float*>(value.data()),
                                      static_cast<const float*>(loc.data()), static_cast<const float*>(attn.data()),
                                      static_cast<float*>(out.data()));
    } else if (same && type == ov::element::bf16) {
      adaptiveclick_msda::run_forward(
          d, shapes, starts.data(), static_cast<const ov::bfloat16*>(value.data()),
          static_cast<const ov::bfloat16*>(loc.data()), static_cast<const ov::bfloat16*>(attn.data()),
          static_cast<ov::bfloat16*>(out.data()));
    } else {  // mixed element types: compute in f32, write value's type
      const auto v = adaptiveclick_msda::widened(value), l = adaptiveclick_msda::widened(loc),
                 a = adaptiveclick_msda::widened(attn);
      std::vector<float> result(out.get_size());
      adaptiveclick_msda::run_forward(d, shapes, starts.data(), v.data(), l.data(), a.data(), result.data());
      if (type == ov::element::bf16) {
        auto* o = static_cast<ov::bfloat16*>(out.data());
        for (size_t i = 0; i < result.size(); ++i) o[i] = ov::bfloat16(result[i]);
      } else {
        std::copy(result.begin(), result.end(), static_cast<float*>(out.data()));
      }
    }
    return true;
  }

  const std::vector<int64_t>& spatial_shapes() const { return m_spatial_shapes; }

 private:
  std::vector<int64_t> m_spatial_shapes;
};

}  // namespace adaptiveclick

namespace {

// adaptiveclick.msda_sample.default(value, locations, weights, int[] shapes) -> adaptiveclick::MSDeformAttn.
ov::OutputVector convert_msda_sample(const ov::frontend::NodeContext& context) {
  std::vector<int64_t> shapes;
  auto source = context.get_input(3).get_node_shared_ptr();
  while (ov::is_type<ov::op::v0::Convert>(source)) source = source->get_input_node_shared_ptr(0);
  if (auto constant = ov::as_type_ptr<ov::op::v0::Constant>(source)) {
    shapes = constant->cast_vector<int64_t>();
  } else {  // an int[] argument the frontend did not fold into a Constant
    shapes = context.get_values_from_const_input(3).as<std::vector<int64_t>>();
  }
  return {std::make_shared<adaptiveclick::MSDeformAttn>(context.get_input(0), context.get_input(1),
                                                        context.get_input(2), shapes)};
}

}  // namespace

OPENVINO_CREATE_EXTENSIONS(std::vector<ov::Extension::Ptr>(
    {std::make_shared<ov::OpExtension<adaptiveclick::MSDeformAttn>>(),
     std::make_shared<ov::frontend::ConversionExtension>("adaptiveclick.msda_sample.default", convert_msda_sample)}));
