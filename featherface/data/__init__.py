from featherface.data.wider import FaceRecord, read_retinaface_labels, read_wider_gt

__all__ = ["FaceRecord", "read_retinaface_labels", "read_wider_gt"]
