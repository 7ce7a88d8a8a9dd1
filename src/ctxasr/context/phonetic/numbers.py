"""Numbers read as words: "1990" -> "nineteen ninety", "21st" -> "twenty first"."""

from __future__ import annotations

# fmt: off
_ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
    "eighteen", "nineteen",
)
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALES = ("", "thousand", "million", "billion", "trillion")
_ORDINALS = {"one": "first", "two": "second", "three": "third", "five": "fifth",
             "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}
# fmt: on


def _below_100(n: int) -> list[str]:
    tens, ones = divmod(n, 10)
    if n < 20:
        return [_ONES[n]]
    return [_TENS[tens]] + ([_ONES[ones]] if ones else [])


def _below_1000(n: int) -> list[str]:
    hundreds, rest = divmod(n, 100)
    words = [_ONES[hundreds], "hundred"] if hundreds else []
    return words + (_below_100(rest) if rest or not hundreds else [])


def _cardinal(n: int) -> list[str]:
    if n == 0:
        return ["zero"]
    words: list[str] = []
    for scale in range(len(_SCALES) - 1, -1, -1):
        chunk = n // 1000**scale % 1000
        if chunk:
            words += _below_1000(chunk) + ([_SCALES[scale]] if scale else [])
    return words


def _year(n: int) -> list[str] | None:
    """'nineteen ninety', 'eighteen oh five', 'twenty twenty six'; None if not read so."""
    if not 1000 <= n <= 2099 or 2000 <= n <= 2009 or n % 1000 == 0:
        return None
    century, rest = divmod(n, 100)
    if rest == 0:
        return _below_100(century) + ["hundred"]
    return _below_100(century) + (["oh", _ONES[rest]] if rest < 10 else _below_100(rest))


def _ordinal(words: list[str]) -> list[str]:
    last = words[-1]
    if last in _ORDINALS:
        last = _ORDINALS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return words[:-1] + [last]


def number_readings(token: str) -> list[list[str]]:
    """Ways to say a number token ("1990", "1,000", "3.5", "21st"), likeliest first."""
    token = token.lower().replace(",", "")
    ordinal = token[-2:] in ("st", "nd", "rd", "th")
    digits, _, decimals = token[: -2 if ordinal else None].partition(".")
    if len(digits) > 15 or (len(digits) > 1 and digits.startswith("0")):
        readings = [[_ONES[int(d)] for d in digits]]  # a code, not a quantity: "007"
    else:
        n = int(digits)
        readings = [r for r in (_year(n), _cardinal(n)) if r]
    if ordinal:
        readings = [_ordinal(r) for r in readings]
    if decimals:
        readings = [r + ["point"] + [_ONES[int(d)] for d in decimals] for r in readings]
    return readings
