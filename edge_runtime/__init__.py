"""edge-runtime: the board side. Imports numpy and one inference engine, nothing heavier."""

import os as _os

__version__ = "0.1.0"

# OpenCV refuses to decode an image whose header claims more pixels than this (checked before it
# allocates anything); it reads the setting once, when it is loaded, so it is set before any import
# of cv2. 50 megapixels: a large phone photo; a forged header claiming 100,000 x 100,000 is refused.
MAX_IMAGE_PIXELS = 50_000_000
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))
