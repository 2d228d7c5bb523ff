"""Link face boxes across sampled video frames into tracks, one per person.

Greedy matching on overlap: each new box joins the active track whose last box overlaps
it most (IoU), or whose centre is close when frames are sampled far apart and the
person moved; boxes left over start new tracks. A track not seen for ``max_gap``
sampled frames ends. Pure Python: no model, no image.
"""

from __future__ import annotations

from dataclasses import dataclass

from .faces.base import box_iou

Box = tuple[float, float, float, float]  # x, y, w, h


def _centre_distance(a: Box, b: Box) -> float:
    """Distance between box centres, in units of the larger box's size."""
    dx = (a[0] + a[2] / 2) - (b[0] + b[2] / 2)
    dy = (a[1] + a[3] / 2) - (b[1] + b[3] / 2)
    return (dx * dx + dy * dy) ** 0.5 / max(a[2], a[3], b[2], b[3], 1e-6)


@dataclass
class _Track:
    track_id: int
    box: Box
    last_seen: int


class FaceTracker:
    """Assigns a track id to each face box, frame after frame."""

    def __init__(self, iou_threshold: float = 0.3, max_centre_distance: float = 0.5, max_gap: int = 5) -> None:
        self.iou_threshold = iou_threshold
        self.max_centre_distance = max_centre_distance
        self.max_gap = max_gap
        self._tracks: list[_Track] = []
        self._frame = -1
        self._next_id = 0

    def update(self, boxes: list[Box]) -> list[int]:
        """Track ids for the boxes of the next sampled frame, in the order given."""
        self._frame += 1
        self._tracks = [t for t in self._tracks if self._frame - t.last_seen <= self.max_gap]
        pairs = []
        for i, box in enumerate(boxes):
            for j, track in enumerate(self._tracks):
                iou = box_iou(box, track.box)
                if iou >= self.iou_threshold or _centre_distance(box, track.box) <= self.max_centre_distance:
                    pairs.append((iou, -_centre_distance(box, track.box), i, j))
        ids: list[int | None] = [None] * len(boxes)
        taken: set[int] = set()
        for _, _, i, j in sorted(pairs, reverse=True):
            if ids[i] is None and j not in taken:
                ids[i] = self._tracks[j].track_id
                taken.add(j)
                self._tracks[j].box, self._tracks[j].last_seen = boxes[i], self._frame
        for i, box in enumerate(boxes):
            if ids[i] is None:
                ids[i] = self._next_id
                self._tracks.append(_Track(self._next_id, box, self._frame))
                self._next_id += 1
        return [int(t) for t in ids if t is not None]
