"""A page's words as plain text, so text models, rules and prompts run on it unchanged.

Words are joined by one space and lines by a newline; each word keeps its offsets, so a
chunk found in the text maps back to the words (and boxes) it covers.
"""

from bisect import bisect_right
from dataclasses import dataclass

from preannotate.annotators.documents import Page


@dataclass(frozen=True, slots=True)
class PageText:
    text: str
    offsets: tuple[tuple[int, int], ...]  # (start, end) in `text` of each word of the page

    def words_in(self, start: int, end: int) -> list[int]:
        """Indexes of the words that overlap the characters [start, end)."""
        first = max(bisect_right(self.offsets, (start, len(self.text) + 1)) - 1, 0)
        found = []
        for index in range(first, len(self.offsets)):
            word_start, word_end = self.offsets[index]
            if word_start >= end:
                break
            if word_end > start:
                found.append(index)
        return found


def page_text(page: Page) -> PageText:
    parts: list[str] = []
    offsets = []
    position = 0
    for index, word in enumerate(page.words):
        if index:
            parts.append("\n" if word.line != page.words[index - 1].line else " ")
            position += 1
        parts.append(word.text)
        offsets.append((position, position + len(word.text)))
        position += len(word.text)
    return PageText("".join(parts), tuple(offsets))
