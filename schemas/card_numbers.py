"""Card numbers (PANs) and card security codes (CVVs) anywhere in a command.

The worker must never accept, store or log a primary account number or a card verification
value: producers send gateway tokens, and this scanner is the safety net (DESIGN.md §4). A
message that trips it is invalid and its body is withheld from the DLQ and the logs, so a
false positive costs one rejected command, while a miss leaks a card number. The rules below
are tuned for recall first; precision is measured by ``tests/unit/test_card_numbers.py`` and
``python -m bench.scanner_rates``.

Normalisation (``_normalised``)
    Non-ASCII text is mapped before anything is recognised, so that a number cannot hide
    behind the way it is written:

    * every Unicode decimal digit (category Nd: full-width, Arabic-Indic, Devanagari, Thai,
      mathematical...) becomes its ASCII digit, and Unicode NFKC folds the rest (superscripts,
      circled and parenthesised digits, full-width punctuation);
    * invisible characters are deleted: format characters (Cf: zero-width spaces and joiners
      U+200B-U+200D, word joiner U+2060, BOM U+FEFF, soft hyphen U+00AD, bidi controls) and
      combining marks (Mn, Me: variation selectors, the keycap of ``4️⃣``). Deleting rather
      than splitting is deliberate: they are inserted between digits precisely so that the
      text looks unchanged;
    * separators become a space: every space (Zs, Zl, Zp, so no-break, narrow no-break, thin,
      figure and ideographic spaces), every control character (Cc: tabs, line breaks, NUL),
      every dash (Pd: hyphen, en and em dashes...), the minus sign, middle dots and bullets,
      and U+FFFD (what an undecodable byte becomes).

    In ASCII the separators are the controls, space, ``-``, ``.``, ``_``, ``/``, ``\\`` and
    ``,``. The comma is a separator (``4111,1111,1111,1111``) because a list of numbers
    joined by commas rarely has card grouping and also has to pass the checks below; ``:``,
    ``#``, ``=``, ``+`` and brackets are plain boundaries, not separators.

Recognition (``_chain_holds_card``)
    Digits joined by runs of one to three separators form a *chain* of *groups*
    (``4111 - 1111`` is one chain; a longer run of separators ends it). A card number is a
    run of consecutive groups of a chain such that

    1. its digits have the issuer prefix and a length of a brand in ``BRANDS``, and pass
       Luhn;
    2. it is one group (``4111111111111111``), or it has card grouping: the first group has
       4-6 digits, the inner groups 3-6, the last 1-6 (4-4-4-4, 4-4-4-4-3, 4-6-5, 4-6-4,
       4-4-4-1...), or every group is a single digit (``4 1 1 1 ...``). A UUID is
       8-4-4-4-12: none of its all-digit runs of groups is card grouping (without this
       rule, 20 uuid4 strings in a million held a "card number", mostly 8-4-4);
    3. each end of it is a separator, the end of the text or a character that is not a
       letter; or it is *glued* to letters (``x4111-1111-1111-1111``, ``PAN4111111111111111``)
       and those letters are not all hex digits ``a-f``. Random hex (UUIDs, ``tok_<hex>``,
       hashes) is where digit runs glued to letters come from; a card number glued to
       ``x``, ``PAN`` or ``card`` is still found, one glued to ``cafe`` is not. Without
       this rule, per million: 230 ``tok_<uuid4 hex>``, 170 uuid4 strings and 290 hex
       strings held a "card number".

    Taking a run of groups rather than the whole chain finds a card number next to other
    numbers: ``4111 1111 1111 1111 12/27`` (with its expiry), ``Qty 2 4111111111111111``.
    A run of more than 19 digits is never looked into.

Brands (``BRANDS``): issuer identification number ranges and lengths. Maestro starts at 13
digits, not 12: 12-digit Maestro cards are rare, and at 12 digits a UUID would hold
candidates of its own (its last group alone, all digits once in 280 UUIDs, and its middle
groups 4-4-4). Maestro covers the whole ``67`` range rather than only 6759 and 6761-6763:
the Maestro test number 6799 9901 0000 0000 019 lies outside those, as do other Maestro
BINs.

Numbers (``_number_holds_card``): a JSON integer of 13-19 digits is checked like a digit
string; so is an integral JSON float (``4111111111111111.0``, ``4.111111111111111e15``).
Above 2**53 a float no longer holds every digit that was sent, so Luhn cannot be checked;
such a float is reported when its prefix and length are a brand's.

Field names (``sensitive_field_name``): a key names a security code or a card number when,
after NFKC and the deletions above, one of its words (split at camelCase, ``_``, ``-`` and
digits) is a code (``cvv``, ``cvc``, ``cid``, ``csc``, ``cvn``, ``cvd``, ``cav``, ``pan``:
``cardCvc``, ``cvv_number``, ``CVV2``), two words are ``card no``/``cc no``, or the key in
lower case without separators contains a phrase (``securitycode``, ``cardnumber``,
``accountnumber``, ``verificationvalue``...). Codes are matched as words only, never inside
other words (``company``, ``decide``). Such a field counts unless its value is null or "".

Measured (``tests/unit/test_card_numbers.py``; ``python -m bench.scanner_rates`` for more):

* recall 100 %: 48,138 documents (23 test numbers of every brand x ~94 written forms x
  every field of AddPaymentMethod and InitiatePayment, keys, nested lists, JSON numbers),
  4,418 bodies that do not parse, and the property test's random disguises;
* false positives: 0 in 1,000,000 each of uuid4 strings, ``tok_<uuid4 hex>``, hex strings
  of 16-64 characters and base62 tokens of 16-40; 0 in 200,000 each of numeric ids of
  13-19 digits starting with 0, 1, 7, 8 or 9, Snowflake ids of 2024-2030 and ids whose
  prefix and length are no brand's (never, by construction). A soak of 5,000,000 of each
  kind found 2 hex strings (0.4 per million, both all digits: 303702383208622042,
  64644724277734979) and nothing else.

What is left cannot be told from a card number. A hex string of 16 characters is all digits
once in 1,842; about a quarter of 16-digit values have a card prefix and one in ten of those
passes Luhn, so of hex strings of 16-64 characters ~0.3 per million are card numbers as
much as any. Likewise an all-digit id of card length that starts with a card prefix (the
Discord ids of 2020 have 18 digits and start with 6) passes Luhn one time in ten.

Cost: ``find_sensitive_data`` joins the strings of a document and looks for a run of 13
digits or separators with ``bytes.translate`` and ``bytes.find``; text without one (nearly
every command) goes no further. Non-ASCII text adds one NFKC pass and, only for scripts with
something to map, a translation. Per AddPaymentMethod command on the development machine:
~4.6 us (~7-8 us with an accented or Cyrillic name), against ~40 us for the regular
expressions this replaced. Hostile input stays linear: 64 KiB of one-digit groups
(``4 4 4 ...``), the worst case, takes ~0.1-0.2 s.
"""

from __future__ import annotations

import itertools
import math
import re
import unicodedata
from decimal import Decimal, InvalidOperation
from typing import Final

__all__ = [
    "BRANDS",
    "bytes_may_hold_card_number",
    "card_brand",
    "contains_card_number",
    "find_sensitive_data",
    "passes_luhn",
    "sensitive_field_name",
]

MIN_LENGTH: Final = 13
MAX_LENGTH: Final = 19

# brand -> (issuer prefix ranges as (first, last) digit strings of equal length, lengths)
BRANDS: Final[dict[str, tuple[tuple[tuple[str, str], ...], frozenset[int]]]] = {
    "visa": ((("4", "4"),), frozenset({13, 16, 19})),
    "mastercard": ((("51", "55"), ("2221", "2720")), frozenset({16})),
    "amex": ((("34", "34"), ("37", "37")), frozenset({15})),
    "discover": (
        (("6011", "6011"), ("644", "649"), ("65", "65"), ("622126", "622925")),
        frozenset(range(16, 20)),
    ),
    "jcb": ((("3528", "3589"),), frozenset(range(16, 20))),
    "diners": (
        (("300", "305"), ("36", "36"), ("38", "39")),
        frozenset(range(14, 20)),
    ),
    "unionpay": ((("62", "62"),), frozenset(range(16, 20))),
    "maestro": (
        (
            ("5018", "5018"),
            ("5020", "5020"),
            ("5038", "5038"),
            ("5893", "5893"),
            ("6304", "6304"),
            ("67", "67"),  # 6759, 6761-6763 and the rest of 67 (see above)
        ),
        frozenset(range(MIN_LENGTH, 20)),
    ),
}

# (prefix length, first, last, lengths, brand), grouped by the first digit.
_PREFIXES: dict[str, list[tuple[int, int, int, frozenset[int], str]]] = {}
for _brand, (_ranges, _lengths) in BRANDS.items():
    for _first, _last in _ranges:
        _PREFIXES.setdefault(_first[0], []).append(
            (len(_first), int(_first), int(_last), _lengths, _brand)
        )


# Luhn doubles every second digit from the right and adds the digits of the product.
_DOUBLED: Final = bytes.maketrans(b"0123456789", b"0246813579")


def passes_luhn(digits: str) -> bool:
    """The Luhn checksum that every real card number satisfies (``digits``: ASCII digits).

    Computed on bytes (slices, a translation and ``sum``, all in C): it runs for every
    candidate of a long chain, where a loop over characters would dominate the cost.
    """
    data = digits.encode()
    doubled = data[-2::-2].translate(_DOUBLED)
    return (sum(data[-1::-2]) + sum(doubled) - 48 * len(data)) % 10 == 0


def card_brand(digits: str) -> str | None:
    """The brand whose issuer prefix and length ``digits`` has (Luhn is not checked)."""
    for prefix_length, first, last, lengths, brand in _PREFIXES.get(digits[:1], ()):
        if len(digits) in lengths and first <= int(digits[:prefix_length]) <= last:
            return brand
    return None


def _is_card_number(digits: str) -> bool:
    return card_brand(digits) is not None and passes_luhn(digits)


def _card_lengths(head: str) -> frozenset[int]:
    """The lengths of the brands whose prefix ``head`` (the first six digits) starts with."""
    lengths: frozenset[int] = frozenset()
    for prefix_length, first, last, brand_lengths, _ in _PREFIXES.get(head[:1], ()):
        if first <= int(head[:prefix_length]) <= last:
            lengths |= brand_lengths
    return lengths


# --- normalisation -------------------------------------------------------------------------

_SEPARATOR: Final = " "
_EXTRA_SEPARATORS: Final = "\u2212\u00b7\u2022\u2027\u2219\u22c5\u30fb\u2044\u2215\ufffd"


def _translation_table() -> dict[int, str | None]:
    """Non-ASCII digits to ASCII, separators to a space, invisible characters deleted.

    Planes 0-2 and 14 hold every decimal digit, space, dash, format character and combining
    mark (the others are ideographs and private use); scanning only them takes ~40 ms at
    import instead of ~350 ms.
    """
    table: dict[int, str | None] = {}
    for code in (*range(0x80, 0x30000), *range(0xE0000, 0xE1000)):
        character = chr(code)
        category = unicodedata.category(character)
        if category == "Nd":
            table[code] = str(unicodedata.decimal(character))
        elif category in ("Cf", "Mn", "Me"):
            table[code] = None
        elif category in ("Zs", "Zl", "Zp", "Cc", "Pd") or character in _EXTRA_SEPARATORS:
            table[code] = _SEPARATOR
    return table


_TRANSLATION: Final = _translation_table()


def _mapping_prefilter() -> bytes:
    """A ``bytes.translate`` table that marks (``M``) the UTF-8 lead bytes of mapped text.

    A lead byte stands for a block of code points (64 for two-byte characters, 4,096 for
    three); it is marked when any character of its block is in ``_TRANSLATION``. Text with
    no marked byte needs no translation, and telling takes two passes of C where
    translating takes a failed table lookup per character: accented Latin, Greek, most
    Cyrillic, Chinese and Hangul are unmarked; Arabic, Devanagari or kana are translated.
    """
    marked = {chr(code).encode("utf-8", "surrogatepass")[0] for code in _TRANSLATION}
    return bytes(ord("M") if byte in marked else ord(".") for byte in range(256))


_MAPPING_PREFILTER: Final = _mapping_prefilter()


def _may_need_mapping(text: str) -> bool:
    return b"M" in text.encode("utf-8", "surrogatepass").translate(_MAPPING_PREFILTER)


def _normalised(text: str) -> str:
    """``text`` in NFKC, with ASCII digits, spaces for separators, no invisible characters."""
    if text.isascii():
        return text
    text = unicodedata.normalize("NFKC", text)
    return text.translate(_TRANSLATION) if _may_need_mapping(text) else text


# --- card numbers in text ------------------------------------------------------------------

# ASCII separators; everything non-ASCII that separates was mapped to a space above.
_SEP: Final = r"\x00-\x20\x7f,\-./\\_"
# A chain: digit groups joined by one to three separators.
_CHAIN = re.compile(rf"[0-9]+(?:[{_SEP}]{{1,3}}[0-9]+)*")
# The fast path. A chain of MIN_LENGTH digits is a run of at least MIN_LENGTH characters
# that are digits or separators. Mapping those bytes to "d" and every other byte to "x"
# (bytes.translate) and looking for "ddddddddddddd" (bytes.find) is one pass of C each,
# about four times faster than the cheapest regular expression that does the same.
_CHAIN_BYTES: Final = b"0123456789" + bytes(range(0x21)) + b"\x7f,-./\\_"
_PREFILTER: Final = bytes(ord("d") if byte in _CHAIN_BYTES else ord("x") for byte in range(256))
_PREFILTER_NEEDLE: Final = b"d" * MIN_LENGTH
_GROUP = re.compile(r"[0-9]+")
_HEX_LETTERS: Final = frozenset("abcdefABCDEF")


def _glue_allows_card(text: str, index: int, step: int) -> bool:
    """Whether the chain end next to ``index`` may end a card number (rule 3)."""
    if not 0 <= index < len(text) or not text[index].isalpha():
        return True
    while 0 <= index < len(text) and text[index].isalpha():
        if text[index] not in _HEX_LETTERS:
            return True
        index += step
    return False


_ISSUER_FIRST_DIGITS: Final = frozenset(_PREFIXES)


def _runs(lengths: list[int], low: int, high: int) -> list[int]:
    """For each group, the last index of the run of groups from it with low-high digits.

    ``index - 1`` when the group itself does not fit, so a run i..j fits iff
    ``runs[i] >= j``.
    """
    runs = [0] * len(lengths)
    following = len(lengths) - 1
    for index in range(len(lengths) - 1, -1, -1):
        following = following if low <= lengths[index] <= high else index - 1
        runs[index] = following
    return runs


def _chain_holds_card(groups: list[str], left_open: bool, right_open: bool) -> bool:
    """Whether a run of consecutive groups of a chain is a card number (rules 1-3).

    ``left_open``/``right_open``: whether the chain's own ends may end a card number (rule
    3; the ends of a run inside the chain are separators). For each starting group only
    the lengths of the brands its first six digits belong to are tried, each run's end is
    found by its digit count and its grouping (rule 2) read from precomputed runs, and a
    run of digits is checked once: a long chain (64 KiB of "4 4 4 ...") stays cheap.
    """
    digits = "".join(groups)
    lengths = [len(group) for group in groups]
    offsets: list[int] = []  # where each group starts in ``digits``
    ends: dict[int, int] = {}  # digits up to the end of a group -> that group
    position = 0
    for index, length in enumerate(lengths):
        offsets.append(position)
        position += length
        ends[position] = index
    singles = _runs(lengths, 1, 1)
    fitting = _runs(lengths, 3, 6)
    last = len(groups) - 1
    brand_lengths: dict[str, frozenset[int]] = {}
    checked: set[str] = set()
    for start, offset in enumerate(offsets):
        head = digits[offset : offset + 6]
        if (start == 0 and not left_open) or len(head) < 6 or head[0] not in _ISSUER_FIRST_DIGITS:
            continue
        if head not in brand_lengths:
            brand_lengths[head] = _card_lengths(head)
        for length in brand_lengths[head]:
            end = ends.get(offset + length)
            if end is None or (end == last and not right_open):
                continue
            if end > start and not (
                singles[start] >= end
                or (
                    4 <= lengths[start] <= 6
                    and lengths[end] <= 6
                    and (end == start + 1 or fitting[start + 1] >= end - 1)
                )
            ):
                continue
            candidate = digits[offset : offset + length]
            if candidate in checked:
                continue
            checked.add(candidate)
            # The prefix and the length are a brand's (brand_lengths): Luhn is what is left.
            if passes_luhn(candidate):
                return True
    return False


def _normalised_text_holds_card(text: str) -> bool:
    # surrogatepass: JSON escapes decoded from raw bytes may leave lone surrogates.
    start = text.encode("utf-8", "surrogatepass").translate(_PREFILTER).find(_PREFILTER_NEEDLE)
    if start < 0:
        return False
    # No chain before the first long run can hold a card; its offset counts bytes, which
    # are characters only in ASCII text.
    for chain in _CHAIN.finditer(text, start if text.isascii() else 0):
        groups = _GROUP.findall(chain.group())
        if sum(map(len, groups)) < MIN_LENGTH:
            continue
        if _chain_holds_card(
            groups,
            _glue_allows_card(text, chain.start() - 1, -1),
            _glue_allows_card(text, chain.end(), 1),
        ):
            return True
    return False


def contains_card_number(text: str) -> bool:
    """Whether ``text`` holds a card number in any written form (see the module docstring)."""
    return _normalised_text_holds_card(_normalised(text))


# --- card numbers as JSON numbers ----------------------------------------------------------

_EXACT_FLOAT_LIMIT: Final = 2**53


def _number_holds_card(value: int | float) -> bool:
    """A JSON integer or an integral float whose digits are a card number."""
    if isinstance(value, int):
        magnitude = abs(value)
        return 10 ** (MIN_LENGTH - 1) <= magnitude < 10**MAX_LENGTH and _is_card_number(
            str(magnitude)
        )
    if not math.isfinite(value) or not value.is_integer():
        return False
    magnitude_float = abs(value)
    if not 10.0 ** (MIN_LENGTH - 1) <= magnitude_float < 10.0**MAX_LENGTH:
        return False
    digits = str(int(magnitude_float))
    if magnitude_float < _EXACT_FLOAT_LIMIT:
        return _is_card_number(digits)
    # Rounded: the digits sent are lost, so Luhn cannot be checked; withhold it anyway.
    return card_brand(digits) is not None


# --- field names ---------------------------------------------------------------------------

# Codes that name a card security code (or a PAN) when they are a word of a field name.
_CODE_WORDS: Final = {
    "cvv": "cvv",
    "cvc": "cvc",
    "cid": "cid",
    "csc": "csc",
    "cvn": "cvn",
    "cvd": "cvd",
    "cav": "cav",
    "pan": "pan",
}
# Phrases that name one anywhere in the field name once it is lower case without separators.
_PHRASES: Final = (
    "cvv",
    "cvc",
    "securitycode",
    "verificationvalue",
    "verificationcode",
    "verificationnumber",
    "primaryaccountnumber",
    "accountnumber",
    "cardnumber",
    "cardnum",
    "ccnumber",
    "ccnum",
)
# Pairs of consecutive words (too short to look for inside other words).
_WORD_PAIRS: Final = {("card", "no"): "cardno", ("cc", "no"): "ccno"}
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_PAN_NAMES: Final = frozenset(
    {
        "pan",
        "primaryaccountnumber",
        "accountnumber",
        "cardnumber",
        "cardnum",
        "ccnumber",
        "ccnum",
        "cardno",
        "ccno",
    }
)
_CACHED_KEY_LENGTH: Final = 64


def _field_name_uncached(name: str) -> str | None:
    words = [word.lower() for word in _WORD.findall(_normalised(name))]
    for word in words:
        if word in _CODE_WORDS:
            return _CODE_WORDS[word]
    for pair in itertools.pairwise(words):
        if pair in _WORD_PAIRS:
            return _WORD_PAIRS[pair]
    joined = "".join(words)
    for phrase in _PHRASES:
        if phrase in joined:
            return phrase
    return None


# Names known not to be card data. Keys repeat in every command, so the answer for a name
# is kept, but only for names of at most 64 characters, and the set is emptied when it
# holds 4096 of them: about 1 MiB at most, whatever the input.
_CLEAN_NAMES: set[str] = set()
_CLEAN_NAMES_LIMIT: Final = 4096


def sensitive_field_name(name: str) -> str | None:
    """The fixed name of the card data a field name stands for (``cvv``...), or ``None``.

    ``cardCvc``, ``card_cvv``, ``CVV2``, ``cvvCode``, ``securityCode2`` and ``cardNumber``
    match; ``card``, ``last4``, ``fingerprint`` and ``correlationId`` do not. The answer is
    always an entry of the fixed lists above, never text of ``name``, so it is safe to log.
    """
    if name in _CLEAN_NAMES:
        return None
    answer = _field_name_uncached(name)
    if answer is None and len(name) <= _CACHED_KEY_LENGTH:
        if len(_CLEAN_NAMES) >= _CLEAN_NAMES_LIMIT:
            _CLEAN_NAMES.clear()
        _CLEAN_NAMES.add(name)
    return answer


def remembered_clean_names() -> int:
    """How many field names the scanner remembers as clean (at most 4096)."""
    return len(_CLEAN_NAMES)


def _field_description(name: str) -> str:
    if name in _PAN_NAMES:
        return f"a card number field ({name})"
    return f"a card security code field ({name})"


# --- documents -----------------------------------------------------------------------------

# Joins the strings of a document: a boundary, not a separator, so no chain or glue spans
# two strings.
_JOINER: Final = '"'
_SMALLEST_CARD_NUMBER: Final = 10 ** (MIN_LENGTH - 1)


def find_sensitive_data(document: object) -> str | None:
    """Name the kind of card data in a parsed JSON document, or ``None``.

    Every key, string and number is checked, nested and unknown fields included. The
    answer is a fixed description and never echoes the input, so it is safe to log.

    This runs for every command, so the walk dispatches on the exact types ``json.loads``
    makes (anything else takes ``_walk_other``), numbers shorter than a card number are
    skipped by one comparison, and the strings are joined and searched in one pass when
    they are all ASCII (nearly always).
    """
    strings: list[str] = []
    numbers: list[int | float] = []
    stack: list[object] = [document]
    clean_names = _CLEAN_NAMES
    smallest = _SMALLEST_CARD_NUMBER
    while stack:
        node = stack.pop()
        if type(node) is not dict:
            _walk_other(node, stack, strings, numbers)
            continue
        if clean_names.issuperset(node):  # one pass of C for the keys seen before
            strings.extend(node)
        else:
            found = _check_names(node, strings)
            if found is not None:
                return found
        for value in node.values():
            value_type = type(value)
            if value_type is str:
                strings.append(value)
            elif value_type is int or value_type is float:
                if not -smallest < value < smallest:
                    numbers.append(value)
            elif value is not None and value_type is not bool:
                stack.append(value)
    if any(_number_holds_card(number) for number in numbers):
        return "a card number (a JSON number)"
    if _strings_hold_card(strings):
        return "a card number"
    return None


def _check_names(node: dict[object, object], strings: list[str]) -> str | None:
    """Check the keys of an object, some new; a named field counts only with a value."""
    for key, value in node.items():
        name = key if type(key) is str else str(key)
        field = sensitive_field_name(name)
        if field is not None and value is not None and value != "":
            return _field_description(field)
        strings.append(name)
    return None


def _walk_other(
    node: object, stack: list[object], strings: list[str], numbers: list[int | float]
) -> None:
    """A node that is not a ``dict``: lists, and the top-level value or list items."""
    if isinstance(node, bool) or node is None:
        return
    if isinstance(node, str):
        strings.append(node)
    elif isinstance(node, int | float):
        numbers.append(node)
    elif isinstance(node, dict):
        stack.append(dict(node))
    elif isinstance(node, list | tuple):
        stack.extend(node)


def _strings_hold_card(strings: list[str]) -> bool:
    # The joiner is a boundary in NFKC too: normalising the joined text is normalising each
    # string, and one call on the whole is cheaper than one per string.
    joined = _JOINER.join(strings)
    if not joined.isascii():
        joined = unicodedata.normalize("NFKC", joined)
        if _may_need_mapping(joined):
            # Translate only the strings that need it: translating text that has nothing to
            # map costs a failed table lookup per character.
            joined = _JOINER.join(
                [text if text.isascii() else _normalised(text) for text in strings]
            )
    return _normalised_text_holds_card(joined)


# --- raw bytes -----------------------------------------------------------------------------

_JSON_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|([\"\\/bfnrt]))")
_SIMPLE_ESCAPES: Final = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
# A number in exponent notation (4.111111111111111e15); other spellings are digit chains.
# Starts only where a run of digits starts and never backtracks, so it is linear.
_EXPONENT_NUMBER = re.compile(r"(?<![0-9])[0-9]++(?:\.[0-9]++)?[eE][+-]?[0-9]{1,4}")
# A name (quoted, or bare from where an identifier starts) followed by ``:`` or ``=`` and
# something other than null or "". Names are at most 64 characters and escapes in quoted
# names are left to the decoded reading, so each attempt is bounded and the scan linear.
_NAMED_VALUE = re.compile(
    r"""(?:"([^"\n]{1,64})"|'([^'\n]{1,64})'|(?<![\w$-])([A-Za-z_$][\w$-]{0,63}))"""
    r"""\s{0,16}[:=](?!\s*(?:null\b|""|''|[,}\]]|$))"""
)


def _unescape_json(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            return chr(int(match.group(1), 16))
        escaped = match.group(2)
        return _SIMPLE_ESCAPES.get(escaped, escaped)

    unescaped = _JSON_ESCAPE.sub(replace, text)
    # Characters beyond U+FFFF are escaped as two surrogates: UTF-16 joins each pair back.
    return unescaped.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def _exponent_numbers_hold_card(text: str) -> bool:
    for match in _EXPONENT_NUMBER.finditer(text):
        try:
            value = Decimal(match.group())
        except InvalidOperation:  # pragma: no cover - the pattern is always a number
            continue
        if (
            MIN_LENGTH - 1 <= value.adjusted() <= MAX_LENGTH - 1
            and value == value.to_integral()
            and _is_card_number(str(int(value)))
        ):
            return True
    return False


def _named_values_hold_card_data(text: str) -> bool:
    for match in _NAMED_VALUE.finditer(text):
        name = next(group for group in match.groups() if group is not None)
        if sensitive_field_name(name) is not None:
            return True
    return False


def bytes_may_hold_card_number(raw: bytes) -> bool:
    """Whether a body that did not parse may hold a card number or a security code.

    For the DLQ: such a body cannot be walked like a document, so its text is searched
    as a whole, in every reading that could hide a number: invalid bytes as separators
    and deleted, JSON escapes (``\\u0034``) as written and decoded, numbers in exponent
    notation, and fields named like a card number or security code that have a value. It
    errs on the side of withholding: a false positive only withholds a DLQ body.
    """
    replaced = raw.decode("utf-8", errors="replace")
    readings = {replaced, raw.decode("utf-8", errors="ignore")}
    readings |= {_unescape_json(text) for text in readings if "\\" in text}
    return any(
        contains_card_number(text)
        or _exponent_numbers_hold_card(text)
        or _named_values_hold_card_data(text)
        for text in readings
    )
