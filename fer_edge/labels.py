"""The class list, in one place.

Index order is the sorted folder names of the FER2013 ImageFolder release, which is also the
order of every model's logits. The original Kaggle CSV numbers classes differently; its codes
are mapped here by name, never by position.
"""

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")

FER2013_CSV_CODES: dict[int, str] = {
    0: "angry",
    1: "disgust",
    2: "fear",
    3: "happy",
    4: "sad",
    5: "surprise",
    6: "neutral",
}

# The CSV's `Usage` column and the split names of the ImageFolder release.
FER2013_CSV_USAGE: dict[str, str] = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
