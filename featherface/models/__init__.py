"""One detector per file; importing this package registers them all."""
from featherface.models import featherface_v1, featherface_v2, retinaface  # noqa: F401
