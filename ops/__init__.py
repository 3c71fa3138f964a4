"""Multi-scale deformable attention (MSDA): compiled CUDA/CPU kernels with a pure-PyTorch fallback.

``ms_deform_attn`` picks the fastest implementation for the tensors' device (see :mod:`ops.dispatch`);
``python -m adaptiveclick.ops.build`` compiles the kernels ahead of time (see :mod:`ops.build`).
"""

from .dispatch import MSDAUnavailableError, implementation_for, ms_deform_attn
from .module import MSDeformAttn
from .reference import ms_deform_attn_pytorch

__all__ = ["MSDAUnavailableError", "MSDeformAttn", "implementation_for", "ms_deform_attn", "ms_deform_attn_pytorch"]
