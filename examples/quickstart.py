"""Recognise the expression of every face crop in a folder with the packaged default model.

    python examples/quickstart.py path/to/crops/
"""

import sys
from pathlib import Path

import fer_edge
from fer_edge.data import read_image

folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(fer_edge.__file__).parent / "samples"
rec = fer_edge.Recognizer()  # packaged default, best backend available here
print(rec.describe()["backend"], rec.describe()["precision"], "-", rec.describe()["reason"])
for path in sorted(folder.glob("*.jpg")):
    pred = rec.predict(read_image(path))
    print(f"{path.name:40s} {pred.label:9s} {pred.score:.2f}")
