"""One CVAT-shaped event through the CVAT function's handler, inside the function image (deploy/test-image.sh cvat).

The event travels as nuclio's processor hands it to the Python wrapper: a msgpack message with the JSON body as
bytes, decoded by nuclio_sdk's own deserializer (``msgpack_raw``, the wrapper's default); nuclio_sdk's test
platform then calls ``init_context`` once and ``handler`` with the event, as the wrapper does. Prints the answer's
status, mask size, its IoU with the ground truth and the time; exits 1 unless a mask of the frame's size came back.

    python cvat_event.py IMAGE X Y GROUND_TRUTH.bmp       # run with the function folder (/opt/nuclio) as cwd
"""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

import cv2
import msgpack
import nuclio_sdk
import numpy as np
from nuclio_sdk.test.mock_platform import Platform

sys.path.insert(0, str(Path.cwd()))
import main  # noqa: E402  (the function's main.py, from the function folder)


def event_message(body: dict) -> bytes:
    data = json.dumps(body).encode()
    return msgpack.packb(
        {
            "body": data,
            "content_type": "application/json",
            "trigger": {"kind": "http", "name": "myHttpTrigger"},
            "fields": {},
            "headers": {"Content-Type": "application/json"},
            "id": "image-tier-event",
            "method": "POST",
            "path": "/",
            "size": len(data),
            "timestamp": int(time.time()),
            "url": "",
            "shard_id": 0,
            "num_shards": 0,
            "type": "",
            "type_version": "",
            "version": "",
        }
    )


def run(image_path: str, x: int, y: int, gt_path: str) -> int:
    body = {
        "image": base64.b64encode(Path(image_path).read_bytes()).decode("ascii"),
        "pos_points": [[x, y]],
        "neg_points": [],
    }
    packed = event_message(body)
    event = nuclio_sdk.Event.deserialize(
        msgpack.unpackb(packed, raw=True), kind=nuclio_sdk.EventDeserializerKinds.msgpack_raw
    )
    if not isinstance(event.body, dict):
        print(f"FAIL: nuclio_sdk did not decode the JSON body ({type(event.body).__name__})")
        return 1
    platform = Platform()
    start = time.monotonic()
    response = platform.call_handler(main.handler, event)  # init_context first, as the wrapper does
    seconds = time.monotonic() - start
    if response.status_code != 200:
        print(f"FAIL: handler answered {response.status_code}: {str(response.body)[:500]}")
        return 1
    answer = json.loads(response.body)
    mask = np.asarray(answer["mask"], dtype=np.uint8)
    frame = cv2.imread(image_path)
    gt = cv2.imread(gt_path, cv2.IMREAD_GRAYSCALE)
    if mask.shape != frame.shape[:2] or not set(np.unique(mask)) <= {0, 255}:
        print(f"FAIL: mask of shape {mask.shape} with values {np.unique(mask)[:5]} for a {frame.shape[:2]} frame")
        return 1
    obj, valid = gt > 192, (gt < 64) | (gt > 192)
    pred = mask > 0
    union = ((pred | obj) & valid).sum()
    iou = float(((pred & obj) & valid).sum() / union) if union else 1.0
    print(
        f"handler: 200 in {seconds:.2f}s (init_context included), model {answer.get('model_version')}, "
        f"mask {mask.shape[1]}x{mask.shape[0]} with {int(pred.sum())} object pixels, IoU with ground truth "
        f"{iou:.4f}, {len(answer.get('polygons', []))} polygon(s), outline of {len(answer.get('points', []))} points"
    )
    if not pred.any():
        print("FAIL: empty mask")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
