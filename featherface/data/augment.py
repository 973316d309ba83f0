"""Training augmentation of the RetinaFace family: face-keeping random square crop, photometric distortion,
mirror with landmark swap, pad-to-square, resize, mean subtraction. Boxes are corners in pixels on input,
normalised to [0, 1] on output; landmarks are (F, 10) with -1 where absent."""
import cv2
import numpy as np

from featherface.preprocess import MEAN_BGR

CROP_SCALES = (0.3, 0.45, 0.6, 0.8, 1.0)
CROP_TRIALS = 250
# After a horizontal flip the left eye becomes the right eye and the mouth corners swap too.
MIRROR_ORDER = (1, 0, 2, 4, 3)
INTERPOLATIONS = (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA, cv2.INTER_NEAREST, cv2.INTER_LANCZOS4)


def random_crop(image, boxes, landmarks, labels, size: int, rng: np.random.Generator):
    """A square crop (a random fraction of the short side) keeping the faces whose centre falls inside it.

    Faces smaller than one pixel at the training size are dropped; after ``CROP_TRIALS`` failed draws the
    image is returned whole and flagged for padding.
    """
    height, width = image.shape[:2]
    for _ in range(CROP_TRIALS):
        side = int(rng.choice(CROP_SCALES) * min(height, width))
        left = int(rng.integers(0, width - side + 1))
        top = int(rng.integers(0, height - side + 1))
        roi = np.array([left, top, left + side, top + side], np.float32)
        centers = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = np.all((centers > roi[:2]) & (centers < roi[2:]), axis=1)
        if not inside.any():
            continue
        kept = boxes[inside].copy()
        kept[:, :2] = np.maximum(kept[:, :2], roi[:2]) - roi[:2]
        kept[:, 2:] = np.minimum(kept[:, 2:], roi[2:]) - roi[:2]
        points = landmarks[inside].copy()
        has = points[:, 0] >= 0
        points[has] = (points[has].reshape(-1, 5, 2) - roi[:2]).reshape(-1, 10)
        visible = np.minimum(kept[:, 2] - kept[:, 0], kept[:, 3] - kept[:, 1]) / side * size > 1.0
        if not visible.any():
            continue
        return (image[top:top + side, left:left + side], kept[visible], points[visible], labels[inside][visible],
                False)
    return image, boxes, landmarks, labels, True


def distort(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast, saturation and hue, each applied with probability ½."""
    out = image.astype(np.float32)
    if rng.random() < 0.5:
        out += rng.uniform(-32, 32)
    contrast_first = rng.random() < 0.5
    if contrast_first and rng.random() < 0.5:
        out *= rng.uniform(0.5, 1.5)
    hsv = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_BGR2HSV).astype(np.float32)
    if rng.random() < 0.5:
        hsv[..., 1] *= rng.uniform(0.5, 1.5)
    if rng.random() < 0.5:
        hsv[..., 0] = (hsv[..., 0] + rng.integers(-18, 19)) % 180
    out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR).astype(np.float32)
    if not contrast_first and rng.random() < 0.5:
        out *= rng.uniform(0.5, 1.5)
    return np.clip(out, 0, 255).astype(np.uint8)


def mirror(image, boxes, landmarks, rng: np.random.Generator):
    if rng.random() >= 0.5:
        return image, boxes, landmarks
    width = image.shape[1]
    boxes = boxes.copy()
    boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
    points = landmarks.copy().reshape(-1, 5, 2)
    has = points[:, 0, 0] >= 0
    points[has, :, 0] = width - points[has, :, 0]
    points[has] = points[has][:, MIRROR_ORDER]
    return image[:, ::-1], boxes, points.reshape(-1, 10)


def pad_to_square(image: np.ndarray, pad: bool) -> np.ndarray:
    height, width = image.shape[:2]
    if not pad or height == width:
        return image
    side = max(height, width)
    out = np.empty((side, side, 3), image.dtype)
    out[:] = np.asarray(MEAN_BGR, np.uint8)
    out[:height, :width] = image
    return out


def train_transform(image, boxes, landmarks, labels, size: int, rng: np.random.Generator):
    """→ (3, size, size) float32 input and (F, 15) targets: corners (4) and points (10) normalised, label."""
    image, boxes, landmarks, labels, pad = random_crop(image, boxes, landmarks, labels, size, rng)
    image = distort(image, rng)
    image = pad_to_square(image, pad)
    image, boxes, landmarks = mirror(image, boxes, landmarks, rng)
    side_h, side_w = image.shape[:2]
    image = cv2.resize(np.ascontiguousarray(image), (size, size),
                       interpolation=INTERPOLATIONS[int(rng.integers(len(INTERPOLATIONS)))])
    scale = np.array([side_w, side_h], np.float32)
    points = landmarks.reshape(-1, 5, 2).copy()
    has = points[:, 0, 0] >= 0
    points[has] = points[has] / scale
    corners = (boxes.reshape(-1, 2, 2) / scale).reshape(-1, 4)
    targets = np.concatenate([corners, points.reshape(-1, 10), labels[:, None].astype(np.float32)], axis=1)
    x = image.astype(np.float32) - np.asarray(MEAN_BGR, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)), targets.astype(np.float32)
