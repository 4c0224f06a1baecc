"""Slice-wise SAM inference with cached embeddings.

Slices come from the one slice engine (:class:`medsegsuite.volume.SliceEngine`): ``engine.slice(a, k)``
has shape (rows, columns); SAM's ``x`` is the column and ``y`` the row. Boxes are ``(x0, y0, x1, y1)``
and points ``(x, y)`` in slice pixels; they are scaled to the model's square input here and nowhere else.
"""
from __future__ import annotations

import numpy as np

from .backbones import SamBackbone, preprocess_slice


class SlicePredictor:
    """Encodes slices once (cache keyed by image id, plane, frame, slice, window) and decodes prompts."""

    def __init__(self, backbone: SamBackbone, device: str = "cpu", cache=None, batch_size: int = 4):
        self.backbone = backbone
        self.device = device
        self.cache = cache if cache is not None else {}
        self.batch_size = batch_size
        self.encoder_calls = 0

    def _key(self, image_id, engine, index, window):
        return (self.backbone.name, image_id, engine.plane, engine.frame, int(index),
                tuple(window) if window else None)

    def _cache_get(self, key):
        return self.cache.get(key) if hasattr(self.cache, "get") else None

    def _cache_put(self, key, value):
        if hasattr(self.cache, "put"):
            self.cache.put(key, value)
        else:
            self.cache[key] = value

    def embeddings(self, array: np.ndarray, image_id: str, engine, indices, window=None, progress=None):
        """Embeddings (1, C, h, w) of slices ``indices`` of ``engine`` (a SliceEngine of ``array``'s
        volume); only uncached slices are encoded, in batches."""
        import torch

        out, todo = {}, []
        for i in indices:
            e = self._cache_get(self._key(image_id, engine, i, window))
            if e is None:
                todo.append(i)
            else:
                out[i] = e
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            x = np.stack([preprocess_slice(s, self.backbone.image_size, window) for s in engine.stack(array, chunk)])
            with torch.inference_mode():
                emb = self.backbone.image_encoder(torch.from_numpy(x).to(self.device))
            self.encoder_calls += len(chunk)
            for i, e in zip(chunk, emb):
                e = e[None].contiguous()
                self._cache_put(self._key(image_id, engine, i, window), e)
                out[i] = e
            if progress is not None:
                progress(start + len(chunk), len(todo))
        return out

    def decode(self, embedding, shape_hw, boxes=None, points=None, point_labels=None, mask_logits=None,
               multimask: bool = False):
        """Logits at slice resolution (H, W) for one prompt set; several boxes give several masks
        (N, H, W). ``mask_logits`` is a low-res (S/4 x S/4 ... as SAM expects) dense prompt."""
        import torch
        import torch.nn.functional as F

        S = self.backbone.image_size
        H, W = shape_hw
        scale = np.array([S / W, S / H], dtype=np.float32)
        b = p = None
        if boxes is not None and len(boxes):
            bx = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
            bx = bx * np.tile(scale, 2)
            b = torch.from_numpy(bx).to(self.device)[:, None, :]
        if points is not None and len(points):
            pt = np.asarray(points, dtype=np.float32).reshape(1, -1, 2) * scale
            lab = np.asarray(point_labels, dtype=np.int64).reshape(1, -1)
            p = (torch.from_numpy(pt).to(self.device), torch.from_numpy(lab).to(self.device))
        with torch.inference_mode():
            sparse, dense = self.backbone.prompt_encoder(points=p, boxes=b, masks=mask_logits)
            low, iou = self.backbone.mask_decoder(
                image_embeddings=embedding, image_pe=self.backbone.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask)
            if multimask:
                low = low[torch.arange(low.shape[0]), iou.argmax(1)][:, None]
            logits = F.interpolate(low, size=(H, W), mode="bilinear", align_corners=False)[:, 0]
        return logits.cpu().numpy()


def component_boxes(mask2d: np.ndarray, min_pixels: int = 4, margin: int = 1) -> list[tuple[int, int, int, int]]:
    """One box (x0, y0, x1, y1) per 8-connected component of a 2D mask ("oracle" prompts)."""
    from scipy import ndimage

    lab, n = ndimage.label(mask2d, structure=np.ones((3, 3)))
    H, W = mask2d.shape
    boxes = []
    for sl, in zip(ndimage.find_objects(lab)):
        if sl is None:
            continue
        rows, cols = sl
        if np.count_nonzero(mask2d[sl]) < min_pixels:
            continue
        boxes.append((max(cols.start - margin, 0), max(rows.start - margin, 0),
                      min(cols.stop - 1 + margin, W - 1), min(rows.stop - 1 + margin, H - 1)))
    return boxes


class EmbeddingStream:
    """Embeddings of a volume's slices batch by batch, in the order a pipeline consumes them.

    ``stream[i]`` gives slice ``i``'s embedding (encoding its batch if needed). With ``overlap``, once
    a batch is handed out the next one is encoded on a background thread while the caller works on
    this one (the encoder's ONNX Runtime / torch kernels release the GIL), and only those two batches
    are held here; the predictor's cache keeps what it keeps. ``seconds``: encoder time (on whichever
    thread); ``waited``: time the caller spent blocked on the encoder."""

    def __init__(self, predictor: SlicePredictor, array, image_id, engine, window, order, overlap: bool = True):
        self.pred, self.args = predictor, (array, image_id, engine)
        self.window, self.order = window, [list(c) for c in order]
        self.where = {i: n for n, c in enumerate(self.order) for i in c}
        self.overlap = overlap and len(self.order) > 1
        self.ready: dict = {}  # batch number -> {slice: embedding} or a Future
        self.seconds = self.waited = 0.0
        self._pool = None

    def _encode(self, n):
        import time

        t = time.perf_counter()
        a, image_id, engine = self.args
        out = self.pred.embeddings(a, image_id, engine, self.order[n], self.window)
        self.seconds += time.perf_counter() - t
        return out

    def _submit(self, n):
        if n >= len(self.order) or n in self.ready:
            return
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(1, thread_name_prefix="medsegsuite-encoder")
        self.ready[n] = self._pool.submit(self._encode, n)

    def __getitem__(self, i):
        import time

        n = self.where[i]
        got = self.ready.get(n)
        if got is None:
            t = time.perf_counter()
            got = self.ready[n] = self._encode(n)
            self.waited += time.perf_counter() - t
        elif not isinstance(got, dict):
            t = time.perf_counter()
            got = self.ready[n] = got.result()
            self.waited += time.perf_counter() - t
        for old in [k for k in self.ready if k < n]:
            del self.ready[old]
        if self.overlap:
            self._submit(n + 1)
        return got[i]

    def close(self, wait: bool = True):
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool = None
        self.ready.clear()

    def __del__(self):  # a cancelled job drops its stream without closing it
        self.close(wait=False)
