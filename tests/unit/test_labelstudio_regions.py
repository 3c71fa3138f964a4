"""labelstudio.regions: brush, polygon and keypoint regions to masks; what cannot be decoded says why."""

from __future__ import annotations

import numpy as np
import pytest

from adaptiveclick.labelstudio.regions import region_mask

from ls_regions import H, W, brush_region, polygon_region


def test_region_mask_edge_cases():
    with pytest.raises(ValueError, match="rotation"):
        region_mask({**polygon_region([[0, 0], [50, 0], [50, 50]]), "image_rotation": 90}, H, W)
    with pytest.raises(ValueError, match="fewer than 3"):
        region_mask(polygon_region([[0, 0], [50, 50]]), H, W)
    with pytest.raises(ValueError, match="not RLE"):
        region_mask({"type": "brushlabels", "value": {"format": "png"}}, H, W)
    # a brush stored at half resolution (same aspect) is scaled to the image
    small = np.zeros((H // 2, W // 2), bool)
    small[5:10, 5:10] = True
    mask = region_mask(brush_region(small), H, W)
    assert mask.shape == (H, W) and mask.sum() == 100
    with pytest.raises(ValueError, match="but the image is"):
        region_mask(brush_region(np.zeros((H, H), bool)), H, W)
