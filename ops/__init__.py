"""Multi-scale deformable attention (MSDA): compiled CUDA/CPU kernels with a pure-PyTorch fallback."""
from .module import MSDeformAttn
from .ms_deform_attn import ms_deform_attn
from .reference import ms_deform_attn_pytorch

__all__ = ["MSDeformAttn", "ms_deform_attn", "ms_deform_attn_pytorch"]
