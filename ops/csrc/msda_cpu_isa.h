// The CPU MSDA kernels (msda_cpu_kernel.h) compiled once per instruction set, and the choice among them at run time.
// Included once by each library that runs them (the torch operators, the OpenVINO custom op); it declares
// everything in an anonymous namespace, so each library has its own copy. The includer defines the 16-bit float
// types adaptiveclick_msda::bf16_t and half_t (c10's or OpenVINO's) first.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "msda_types.h"

// ---- the kernels, once per instruction set ------------------------------------------------------------------
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define MSDA_MULTI_ISA 1
#else
#define MSDA_MULTI_ISA 0
#endif

#define MSDA_ISA baseline
#define MSDA_VEC_BYTES 16
#include "msda_cpu_kernel.h"
#undef MSDA_ISA
#undef MSDA_VEC_BYTES

#if MSDA_MULTI_ISA
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#define MSDA_ISA avx2
#define MSDA_VEC_BYTES 32
#include "msda_cpu_kernel.h"
#undef MSDA_ISA
#undef MSDA_VEC_BYTES
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c")
#define MSDA_ISA avx512
#define MSDA_VEC_BYTES 64
#include "msda_cpu_kernel.h"
#undef MSDA_ISA
#undef MSDA_VEC_BYTES
#pragma GCC pop_options
#endif

namespace adaptiveclick_msda {
namespace {

std::vector<std::string> supported_instruction_sets() {
  std::vector<std::string> names;
#if MSDA_MULTI_ISA
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma"))
    names.emplace_back("avx512");
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
    names.emplace_back("avx2");
#endif
  names.emplace_back("baseline");
  return names;
}

// Index into supported_instruction_sets() order: 0 = avx512, 1 = avx2, 2 = baseline.
std::atomic<int> g_isa{-1};

int isa_index(const std::string& name) {
  if (name == "avx512") return 0;
  if (name == "avx2") return 1;
  if (name == "baseline") return 2;
  return -1;
}

int current_isa() {
  int isa = g_isa.load();
  if (isa < 0) {
    isa = isa_index(supported_instruction_sets().front());
    g_isa.store(isa);
  }
  return isa;
}

template <typename scalar_t>
KernelTable<scalar_t> kernels() {
#if MSDA_MULTI_ISA
  switch (current_isa()) {
    case 0: return avx512::kernel_table<scalar_t>();
    case 1: return avx2::kernel_table<scalar_t>();
    default: break;
  }
#endif
  return baseline::kernel_table<scalar_t>();
}

int width_slot(int64_t channels) {
  if (channels % 64 == 0) return 0;
  if (channels == 32) return 1;
  if (channels % 16 == 0) return 2;
  return 3;
}

}  // namespace
}  // namespace adaptiveclick_msda
