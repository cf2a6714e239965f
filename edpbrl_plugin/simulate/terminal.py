"""A person answering in the terminal: each question is written as one side-by-side PNG and read back as a letter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..imaging import grid


class TerminalAsker:
    """Call with a question's options ``[K, H, W, 3]`` in 0..1; returns the answer typed (``q`` quits)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __call__(self, images: np.ndarray) -> str:
        Image.fromarray(grid(images, columns=len(images), scale=8, pad=2)).save(self.path)
        options = {"a": "0", "b": "1"} if len(images) == 2 else {str(i + 1): str(i) for i in range(len(images))}
        extra = {"t": "tie", "s": "skip", "x": "both_bad"} if len(images) == 2 else {"s": "skip", "x": "both_bad"}
        prompt = f"Which do you prefer? (left to right in {self.path}) [{'/'.join(options)}"
        prompt += ", t=tie" if "t" in extra else ""
        prompt += ", s=skip, x=both bad, q=quit] "
        while True:
            reply = input(prompt).strip().lower()
            if reply == "q":
                raise KeyboardInterrupt
            if reply in options or reply in extra:
                return options.get(reply) or extra[reply]
            print("please answer with one of the letters shown")
