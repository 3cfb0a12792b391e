"""``SmartCashPredictor``: Ultralytics' detection predictor that also reads SmartCash ``.npy`` arrays.

Sources that hold ``.npy`` files (a path, a folder or a list, images beside them included) or float arrays are
converted to uint8 BGR, the format of ``cv2.imread``, and keep their file names in results and in the log. Arrays are
read as the data the model was trained on declared them (``channel_order``, ``value_range``; see
:mod:`smartcash_ultra.engine.declarations`), or as a data YAML given as ``data=`` declares them, and verified as
training verifies them. In-memory float arrays are SmartCash's only for a model trained on arrays; a stock model keeps
Ultralytics' reading of them (float BGR 0..255), whichever source it was given before. Every other source goes to
Ultralytics unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ultralytics.data.loaders import LoadPilAndNumpy, SourceTypes
from ultralytics.models.yolo.detect import DetectionPredictor
from ultralytics.utils import LOGGER
from ultralytics.utils.patches import imread

from smartcash_ultra.data.arrays import (
    DEFAULT_VALUE_RANGE,
    IMAGE_SUFFIXES,
    ArrayFormatError,
    check_array,
    check_values,
    is_array_file,
    open_array,
    to_bgr_uint8,
)
from smartcash_ultra.data.image_dataset import list_images
from smartcash_ultra.engine.declarations import for_prediction, trained_on_arrays

IN_MEMORY = "in-memory array source"
"""How problems name an array handed over in memory."""


class SmartCashPredictor(DetectionPredictor):
    """Detection predictor accepting SmartCash arrays as well as every stock Ultralytics source."""

    def setup_source(self, source, stride: int | None = None):
        """Wrap array sources in an :class:`ArraySource` reading them as declared; pass any other source through."""
        declared = for_prediction(self.model, self.args.data)
        arrays = array_source(
            source,
            max(int(self.args.batch), 1),
            declared.channel_order,
            declared.value_range,
            in_memory=trained_on_arrays(self.model),
        )
        return super().setup_source(arrays if arrays is not None else source, stride)


class ArraySource(LoadPilAndNumpy):
    """Batches of SmartCash arrays (and images beside them) read lazily from files or given in memory, named by path.

    A ``LoadPilAndNumpy`` subclass because Ultralytics passes an instance of its own loader classes (``LOADERS``)
    through as a ready loader, and then reads only its loader protocol (batches of paths, images and log lines;
    ``source_type``, ``mode``, ``count``, ``len``); its file loader lists only ``IMG_FORMATS`` and decodes through
    ``imread``, with no hook for another format.
    """

    def __init__(
        self,
        items: list[str | np.ndarray],
        batch: int = 1,
        channel_order: str = "RGB",
        value_range: tuple[float, float] = DEFAULT_VALUE_RANGE,
        skip_bad: bool = True,
    ):
        """``items``: ``.npy`` or image paths, or in-memory HWC arrays; each is converted when its batch loads.

        ``skip_bad``: a bad item is named and skipped (a folder or a list of files), else an error (a file given alone,
        arrays handed over in memory).
        """
        self.items, self.bs, self.channel_order, self.value_range = items, batch, channel_order, value_range
        self.skip_bad = skip_bad
        files = all(isinstance(x, (str, Path)) for x in items)  # array_source gives files or in-memory arrays
        self.paths = [str(x) for x in items] if files else [f"array{i}.npy" for i in range(len(items))]
        # files are logged as Ultralytics logs image files ("image 1/4 <path>: "), in-memory arrays as it logs those
        self.info = [f"image {i}/{len(items)} {p}: " if files else "" for i, p in enumerate(self.paths, 1)]
        self.source_type = SourceTypes(from_img=not files)
        self.mode, self.count = "image", 0

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        self.count = 0
        return self

    def __next__(self) -> tuple[list[str], list[np.ndarray], list[str]]:
        """Return the next (paths, uint8 BGR images, info strings) batch, without the files that cannot be read.

        A bad file is named in a warning and skipped, as training leaves it out (and as Ultralytics' own image loader
        skips an unreadable image): one bad array does not end a prediction over a folder. A file given alone, or an
        array handed over in memory, is the caller's one input: its problem is the error.
        """
        while self.count < len(self.items):
            i, self.count = self.count, min(self.count + self.bs, len(self.items))
            paths, ims, infos = [], [], []
            for path, info, item in zip(*(x[i : self.count] for x in (self.paths, self.info, self.items)), strict=True):
                try:
                    ims.append(self._convert(item))
                except (ArrayFormatError, FileNotFoundError) as e:
                    if not self.skip_bad:
                        raise
                    LOGGER.warning(f"skipping {e}")
                    continue
                paths.append(path)
                infos.append(info)
            if ims:
                return paths, ims, infos
        raise StopIteration

    def _convert(self, item: str | np.ndarray) -> np.ndarray:
        """Return one item as uint8 BGR, with an error naming it when training would refuse it."""
        if isinstance(item, np.ndarray):
            arr, name = check_array(item, IN_MEMORY), IN_MEMORY
        elif is_array_file(item):
            arr, name = open_array(item), item
        else:
            im = imread(item)
            if im is None:
                raise FileNotFoundError(f"image source {item} could not be read")
            return im
        check_values(arr, name, self.value_range)
        return to_bgr_uint8(arr, self.channel_order, self.value_range)


def array_source(
    source,
    batch: int = 1,
    channel_order: str = "RGB",
    value_range: tuple[float, float] = DEFAULT_VALUE_RANGE,
    in_memory: bool = True,
) -> ArraySource | None:
    """Return an :class:`ArraySource` when ``source`` is SmartCash arrays, else None.

    That is: a ``.npy`` path, a folder or list of paths holding at least one ``.npy`` (its images come along), or,
    when ``in_memory``, a float HWC array (or list of them). Image-only sources and uint8 arrays stay stock sources.
    """
    items = source if isinstance(source, (list, tuple)) else [source]
    if not items:
        return None
    if float_arrays(source):
        return ArraySource(list(items), batch, channel_order, value_range, skip_bad=False) if in_memory else None
    if all(isinstance(x, (str, Path)) for x in items):
        folder = len(items) == 1 and Path(items[0]).is_dir()
        if folder:  # as training lists it
            items = sorted(list_images(Path(items[0]), IMAGE_SUFFIXES))
        files = [str(x) for x in items]
        if any(is_array_file(f) for f in files) and all(Path(f).suffix[1:].lower() in IMAGE_SUFFIXES for f in files):
            for f in files:
                if not Path(f).is_file():
                    problem = (
                        "is a folder: pass it alone to predict on its files" if Path(f).is_dir() else "does not exist"
                    )
                    raise FileNotFoundError(f"array source {f} {problem}")
            return ArraySource(files, batch, channel_order, value_range, skip_bad=folder or len(files) > 1)
    return None


def float_arrays(source) -> bool:
    """Return True when ``source`` is a float array in memory, or a non-empty list of them."""
    items = source if isinstance(source, (list, tuple)) else [source]
    return bool(items) and all(isinstance(x, np.ndarray) and x.dtype.kind == "f" for x in items)
