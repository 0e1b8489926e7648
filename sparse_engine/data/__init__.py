"""Datasets: generated (Mackey-Glass), bundled with a dependency (scikit-learn's digits),
and readers for standard files a user points to (MNIST idx, SMS Spam Collection, UCI
Gesture Phase Segmentation, one-float-a-line series). All return plain tensors."""
from .files import GESTURE_PHASES, load_gesture, load_mnist, load_series, load_sms_spam
from .generated import digits, mackey_glass, sequence_windows

__all__ = ["digits", "mackey_glass", "sequence_windows", "load_mnist", "load_sms_spam", "load_gesture",
           "load_series", "GESTURE_PHASES"]
