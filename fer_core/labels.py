"""Canonical label order and every dataset format's own codes mapped to it, in one place.

Canonical order: neutral, happy, sad, surprise, fear, disgust, anger (+ contempt for 8 classes).
"""

from __future__ import annotations

CLASS_NAMES_7: tuple[str, ...] = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger")
CLASS_NAMES_8: tuple[str, ...] = CLASS_NAMES_7 + ("contempt",)


def class_names(num_classes: int) -> tuple[str, ...]:
    """The canonical class names for a 7- or 8-class problem."""
    if num_classes == 7:
        return CLASS_NAMES_7
    if num_classes == 8:
        return CLASS_NAMES_8
    raise ValueError(f"num_classes must be 7 or 8, got {num_classes}")


def label_index(name: str, num_classes: int = 8) -> int:
    """Index of a canonical class name; raises KeyError naming the unknown label."""
    names = class_names(num_classes)
    try:
        return names.index(name)
    except ValueError:
        raise KeyError(f"unknown label {name!r}; expected one of {', '.join(names)}") from None


# RAF-DB basic (EmoLabel/list_patition_label.txt): 1..7 =
# Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral.
RAFDB_CODES: dict[int, str] = {
    1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "anger", 7: "neutral",
}

# AffectNet (training.csv / validation.csv, column expression): 0..7 =
# Neutral, Happy, Sad, Surprise, Fear, Disgust, Anger, Contempt; 8 None, 9 Uncertain, 10 No-Face.
AFFECTNET_CODES: dict[int, str] = {
    0: "neutral", 1: "happy", 2: "sad", 3: "surprise", 4: "fear", 5: "disgust", 6: "anger", 7: "contempt",
}
AFFECTNET_DROPPED_CODES: dict[int, str] = {8: "none", 9: "uncertain", 10: "no-face"}

# FER2013 (fer2013.csv, column emotion): 0..6 = Angry, Disgust, Fear, Happy, Sad, Surprise, Neutral.
FER2013_CODES: dict[int, str] = {
    0: "anger", 1: "disgust", 2: "fear", 3: "happy", 4: "sad", 5: "surprise", 6: "neutral",
}
# FER2013 Usage column -> split.
FER2013_USAGE: dict[str, str] = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}

# FERPlus (fer2013new.csv): vote columns after "Usage,Image name", in file order.
FERPLUS_VOTE_COLUMNS: tuple[str, ...] = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF",
)
FERPLUS_CODES: dict[str, str] = {
    "neutral": "neutral", "happiness": "happy", "surprise": "surprise", "sadness": "sad",
    "anger": "anger", "disgust": "disgust", "fear": "fear", "contempt": "contempt",
}

# ImageFolder trees: folder names accepted for each canonical class (case-insensitive).
FOLDER_ALIASES: dict[str, str] = {
    **{name: name for name in CLASS_NAMES_8},
    "happiness": "happy", "sadness": "sad", "surprised": "surprise", "fearful": "fear",
    "disgusted": "disgust", "angry": "anger",
}
